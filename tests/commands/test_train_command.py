"""`fedveil train`: three parties, each its own `fedveil train --config party.toml`, over a
real in-process server (mutual TLS, SecAgg) on a saved tiny GPT-2 with JSONL texts.

The parties run concurrently in threads through the real entry point (`fedveil.cli.main`):
all must end with the same adapter, saved so that peft loads it; a re-run with more rounds
resumes from the checkpoint; bad settings and bad data are refused with exit 2 and one line.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import PeftModel
from safetensors.numpy import load_file
from transformers import AutoModelForCausalLM

from fedveil.cli import main
from fedveil.learner.federation.checkpoint import CHECKPOINT_FILE
from fedveil.learner.lora import LoraSettings, adapter_layout, apply_lora, base_model_hash
from fedveil.learner.lora.config import AggregationVariant
from fedveil.learner.models import load_model
from fedveil.server.keys_store import client_dir
from tests.helpers.party_toml import TEXT_RECIPE, TINY_GPT2_LORA, texts_data, write_party_toml
from tests.helpers.service_harness import make_keys, running_server, settings_for
from tests.helpers.tiny_gpt2 import save_tiny_gpt2

TEXTS = (
    ["the gate is open", "the gate is closed", "the gate is open"],
    ["the meter reads high", "the meter reads low"],
    ["the pipe is open", "the pipe is closed", "the pipe reads low", "the meter is low"],
)
LORA = LoraSettings(rank=2, alpha=4.0, target_modules=("c_attn",), variant=AggregationVariant.FFA)


def _federation_plan(model_dir: Path) -> tuple[int, bytes]:
    """The server's dimension and base model hash, from the same model and LoRA."""
    model = load_model(model_dir).model
    base = base_model_hash(model)
    peft_model = apply_lora(model, LORA)
    return adapter_layout(peft_model, base, LORA.variant).size, base


def _party_toml(
    tmp_path: Path,
    keys: Path,
    cid: str,
    model_dir: Path,
    texts: Path,
    port: int,
    rounds: int,
    extra: str = "",
) -> Path:
    return write_party_toml(
        tmp_path,
        cid,
        credentials=client_dir(keys, cid),
        roster=keys / "roster.json",
        port=port,
        model_dir=model_dir,
        data=texts_data(texts),
        rounds=rounds,
        sections=TINY_GPT2_LORA + TEXT_RECIPE + extra,
    )


def _texts(tmp_path: Path, index: int) -> Path:
    path = tmp_path / f"texts-{index}.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS[index]))
    return path


@pytest.fixture
def federation(tmp_path: Path) -> tuple[Path, Path, list[str], list[Path], int, bytes]:
    model_dir = save_tiny_gpt2(tmp_path / "gpt2-tiny")
    keys, ids = make_keys(tmp_path, 3)
    texts = [_texts(tmp_path, i) for i in range(3)]
    dimension, base = _federation_plan(model_dir)
    return model_dir, keys, ids, texts, dimension, base


def _run_parties(
    tmp_path: Path, federation: tuple, phases: list[int], extra: str = ""
) -> list[list[int]]:
    """Each phase: the three parties' `fedveil train` with that many rounds, at once."""
    model_dir, keys, ids, texts, dimension, base = federation
    settings = settings_for(
        tmp_path, keys, dimension=dimension, model_hash=base, stage_timeout_s=20.0
    )

    async def federate() -> list[list[int]]:
        codes = []
        async with running_server(settings) as server:
            for rounds in phases:
                configs = [
                    _party_toml(
                        tmp_path, keys, cid, model_dir, texts[i], server.port, rounds, extra
                    )
                    for i, cid in enumerate(ids)
                ]
                runs = [asyncio.to_thread(main, ["train", "--config", str(c)]) for c in configs]
                codes.append(list(await asyncio.gather(*runs)))
        return codes

    return asyncio.run(federate())


def _adapter(tmp_path: Path, cid: str) -> dict[str, np.ndarray]:
    return load_file(str(tmp_path / "out" / cid / "adapter" / "adapter_model.safetensors"))


def test_three_parties_end_with_the_same_adapter_that_peft_loads(
    tmp_path: Path, federation: tuple
) -> None:
    assert _run_parties(tmp_path, federation, [2]) == [[0, 0, 0]]
    model_dir, _, ids, _, _, _ = federation
    adapters = [_adapter(tmp_path, cid) for cid in ids]
    assert adapters[0], "the saved adapter holds tensors"
    for other in adapters[1:]:
        assert other.keys() == adapters[0].keys()
        assert all(np.array_equal(other[k], adapters[0][k]) for k in other)
    lora_b = [v for k, v in adapters[0].items() if "lora_B" in k]
    assert any(np.any(b != 0) for b in lora_b), "two rounds must move the adapter"
    base = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True)
    loaded = PeftModel.from_pretrained(base, str(tmp_path / "out" / ids[0] / "adapter"))
    generated = loaded.generate(input_ids=torch.tensor([[1, 5]]), max_new_tokens=3)
    assert generated.shape == (1, 5)


def test_a_rerun_with_more_rounds_resumes_from_the_checkpoint(
    tmp_path: Path,
    federation: tuple,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level("INFO", logger="fedveil.train")
    assert _run_parties(tmp_path, federation, [1, 2]) == [[0, 0, 0], [0, 0, 0]]
    _, _, ids, _, _, _ = federation
    resumed = [r.getMessage() for r in caplog.records if "resuming" in r.getMessage()]
    assert len(resumed) == 3 and all("after round 1" in m for m in resumed)
    trained = [r.getMessage() for r in caplog.records if ": training on" in r.getMessage()]
    assert sum("round 1/" in m for m in trained) == 3, "round 1 is not trained again"
    assert sum("round 2/2" in m for m in trained) == 3
    from safetensors import safe_open

    with safe_open(str(tmp_path / "out" / ids[0] / CHECKPOINT_FILE), framework="np") as f:
        assert f.metadata()["rounds_done"] == "2"
        assert f.metadata()["chain_round_id"] == "2"
    config = tmp_path / f"{ids[0]}.toml"  # another recipe may not resume this checkpoint
    config.write_text(config.read_text().replace("learning_rate = 0.02", "learning_rate = 0.1"))
    capsys.readouterr()
    assert main(["train", "--config", str(config), "--rounds", "3"]) == 2
    assert "other settings (recipe differ)" in _one_error_line(capsys.readouterr().err)


# --- refusals (no server needed: they happen before anything is sent) -----------------------


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_a_malformed_jsonl_line_is_refused_naming_the_line(
    tmp_path: Path, federation: tuple, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir, keys, ids, _, _, _ = federation
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "the gate is open"}\n\n{"text": "the meter\n')
    config = _party_toml(tmp_path, keys, ids[0], model_dir, bad, 9, 1)
    assert main(["train", "--config", str(config)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"{bad}:3" in line and "not valid JSON" in line


def test_an_unknown_party_key_is_refused_in_one_line(
    tmp_path: Path, federation: tuple, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir, keys, ids, texts, _, _ = federation
    config = _party_toml(tmp_path, keys, ids[0], model_dir, texts[0], 9, 1)
    config.write_text(config.read_text().replace("rounds = 1", "rounds = 1\nround = 2"))
    assert main(["train", "--config", str(config)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "party.round: unknown key" in line and "rounds" in line


def test_the_held_out_loss_of_a_causal_lm_is_written_for_each_round(
    tmp_path: Path, federation: tuple, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="fedveil.train")
    held_out = tmp_path / "held-out.jsonl"
    held_out.write_text(
        "".join(json.dumps({"text": t}) + "\n" for t in ["the gate reads high", "the pipe is"])
    )
    extra = f'\n[eval]\ntexts = "{held_out}"\n'
    assert _run_parties(tmp_path, federation, [1, 2], extra) == [[0, 0, 0], [0, 0, 0]]
    _, _, ids, _, _, _ = federation
    per_party = []
    for cid in ids:
        lines = (tmp_path / "out" / cid / "metrics.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        # round 0: the starting adapter (the base model), before any training
        assert [r["round"] for r in records] == [0, 1, 2], "one record per round, resumes append"
        assert [r["service_round"] for r in records] == [None, 1, 2]
        for r in records:
            assert r["client_id"] == cid and r["data"] == "texts" and r["examples"] == 2
            assert r["perplexity"] == pytest.approx(np.exp(r["mean_token_loss"]))
        per_party.append([r["mean_token_loss"] for r in records])
        from safetensors import safe_open

        with safe_open(str(tmp_path / "out" / cid / CHECKPOINT_FILE), framework="np") as f:
            assert json.loads(f.metadata()["metrics"]) == records[-1]
    for other in per_party[1:]:  # the same global adapter on the same held-out texts
        assert other == pytest.approx(per_party[0], rel=1e-5)
    assert per_party[0][1] != per_party[0][2], "round 2 moves the adapter, so the loss"
    assert per_party[0][0] != per_party[0][1], "round 1 moves it from the base model"
    logged = [r.getMessage() for r in caplog.records if "held-out perplexity" in r.getMessage()]
    assert len(logged) == 9 and sum("round 2/2" in m for m in logged) == 3


def _captioner_toml(
    tmp_path: Path, keys: Path, cid: str, model_dir: Path, domain: str, port: int
) -> Path:
    config = tmp_path / f"{cid}.toml"
    config.write_text(
        f"""
[party]
credentials = "{client_dir(keys, cid)}"
roster = "{keys / "roster.json"}"
server = "localhost:{port}"
model_dir = "{model_dir}"
out = "{tmp_path / "out" / cid}"
rounds = 1
join_timeout_s = 30

[data]
city_domain = "{domain}"
city_samples = 8

[lora]
rank = 2
alpha = 4.0

[recipe]
batch_size = 8
learning_rate = 0.01

[eval]
city_test_samples = 4
"""
    )
    return config


def test_three_captioner_parties_federate_and_evaluate_on_held_out_scenes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.helpers.captioner_fixtures import tiny_base_dir

    caplog.set_level("INFO", logger="fedveil.train")
    model_dir = tiny_base_dir()
    lora = LoraSettings(rank=2, alpha=4.0, variant=AggregationVariant.FFA)
    model = load_model(model_dir).model
    base = base_model_hash(model)
    dimension = adapter_layout(apply_lora(model, lora), base, lora.variant).size
    keys, ids = make_keys(tmp_path, 3)
    settings = settings_for(
        tmp_path, keys, dimension=dimension, model_hash=base, stage_timeout_s=20.0
    )

    async def federate() -> list[int]:
        async with running_server(settings) as server:
            configs = [
                _captioner_toml(tmp_path, keys, cid, model_dir, domain, server.port)
                for cid, domain in zip(ids, ("energy", "residential", "urban"), strict=True)
            ]
            runs = [asyncio.to_thread(main, ["train", "--config", str(c)]) for c in configs]
            return list(await asyncio.gather(*runs))

    assert asyncio.run(federate()) == [0, 0, 0]
    adapters = [_adapter(tmp_path, cid) for cid in ids]
    for other in adapters[1:]:
        assert other.keys() == adapters[0].keys()
        assert all(np.array_equal(other[k], adapters[0][k]) for k in other)
    records = []
    for cid in ids:
        lines = (tmp_path / "out" / cid / "metrics.jsonl").read_text().splitlines()
        assert len(lines) == 2, "round 0 (the base model), then round 1"
        assert json.loads(lines[0])["round"] == 0
        record = json.loads(lines[1])
        assert record["round"] == 1 and record["data"] == "captions" and record["examples"] == 4
        assert 0.0 <= record["mean_recall"] <= 1.0 and 0.0 <= record["bleu"] <= 1.0
        assert set(record["recall_by_domain"]) == {"energy", "residential", "urban"}
        records.append({k: v for k, v in record.items() if k != "client_id"})
    assert records[1] == records[0] and records[2] == records[0], "same adapter, same scenes"
    logged = [
        r.getMessage() for r in caplog.records if "held-out mean concept recall" in r.getMessage()
    ]
    assert len(logged) == 6 and sum("round 1/1" in m and "on 4 scenes" in m for m in logged) == 3


def test_held_out_settings_that_do_not_fit_the_data_are_refused(
    tmp_path: Path, federation: tuple, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir, keys, ids, texts, _, _ = federation
    config = _party_toml(
        tmp_path, keys, ids[0], model_dir, texts[0], 9, 1, "\n[eval]\ncity_test_samples = 4\n"
    )
    assert main(["train", "--config", str(config)]) == 2
    assert "eval.city_test_samples is for city_domain data" in _one_error_line(
        capsys.readouterr().err
    )
    bad = tmp_path / "bad-held-out.jsonl"
    bad.write_text('{"text": "the gate is open"}\n{"txt": "the meter"}\n')
    config = _party_toml(
        tmp_path, keys, ids[0], model_dir, texts[0], 9, 1, f'\n[eval]\ntexts = "{bad}"\n'
    )
    assert main(["train", "--config", str(config)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"{bad}:2" in line and 'expected an object with a string "text"' in line
