"""`fedveil train --alone`: one party's own baseline, no service, on a saved tiny GPT-2.

Why compared with the in-process driver: the alone rows of `fedveil demo` come from
learner.federated_local.run_federated with a cohort of one; a party that runs the
baseline itself must get exactly that adapter (same round seeds, same optimiser resets),
or the deployment's table would compare different things.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import PeftModel
from safetensors.numpy import load_file
from transformers import AutoModelForCausalLM

from fedveil.cli import main
from fedveil.learner.federated_local import run_federated
from fedveil.learner.lora.config import AggregationVariant, LoraSettings
from fedveil.learner.models import load_model
from fedveil.learner.training.loop import TrainConfig
from fedveil.learner.training.party import text_party
from tests.helpers.service_harness import enrol_federation, enrolled_client_dir
from tests.helpers.tiny_gpt2 import save_tiny_gpt2

TEXTS = ["the gate is open", "the gate is closed", "the meter reads high", "the pipe is low"]
HELD_OUT = ["the gate reads high", "the pipe is"]


def _jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_gpt2(tmp_path_factory.mktemp("model") / "gpt2-tiny")


def _party_toml(tmp_path: Path, model_dir: Path, out: Path, credentials: Path) -> Path:
    texts = _jsonl(tmp_path / "texts.jsonl", TEXTS)
    held_out = _jsonl(tmp_path / "held-out.jsonl", HELD_OUT)
    config = tmp_path / "party.toml"
    config.write_text(
        f"""
[party]
credentials = "{credentials}"
roster = "{tmp_path / "nowhere" / "roster.json"}"
server = "localhost:9"
model_dir = "{model_dir}"
out = "{out}"
rounds = 2

[data]
texts = "{texts}"
max_length = 16

[lora]
rank = 2
alpha = 4.0
target_modules = ["c_attn"]

[recipe]
batch_size = 2
learning_rate = 0.02

[eval]
texts = "{held_out}"
"""
    )
    return config


def _records(out: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_alone_trains_like_the_in_process_local_baseline(tmp_path: Path, model_dir: Path) -> None:
    out = tmp_path / "energy-alone"
    config = _party_toml(tmp_path, model_dir, out, tmp_path / "not-enrolled")
    assert main(["train", "--config", str(config), "--alone"]) == 0
    records = _records(out)
    assert [r["round"] for r in records] == [0, 1, 2], "the base model, then every round"
    assert all(r["alone"] is True and r["client_id"] == "energy-alone" for r in records)
    assert all(r["data"] == "texts" and r["examples"] == 2 for r in records)
    assert records[0]["mean_token_loss"] != records[2]["mean_token_loss"]

    lora = LoraSettings(rank=2, alpha=4.0, target_modules=("c_attn",))
    recipe = TrainConfig(batch_size=2, learning_rate=0.02, progress=False)
    party = text_party("energy-alone", TEXTS, load_model(model_dir), lora, recipe, max_length=16)
    run_federated([party], 2, progress=False)
    saved = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    reference = load_file(
        str(party.save_adapter(tmp_path / "reference") / "adapter_model.safetensors")
    )
    assert saved.keys() == reference.keys()
    assert all(np.array_equal(saved[k], reference[k]) for k in saved), "bit for bit"
    assert any("lora_B" in k and np.any(v != 0) for k, v in saved.items()), "rounds moved B"
    base = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True)
    loaded = PeftModel.from_pretrained(base, str(out / "adapter"))
    generated = loaded.generate(input_ids=torch.tensor([[1, 5]]), max_new_tokens=3)
    assert generated.shape == (1, 5)
    assert party.layout.variant is AggregationVariant.FFA


def test_alone_names_itself_after_its_enrolment_and_starts_afresh(
    tmp_path: Path, model_dir: Path
) -> None:
    server_dir = enrol_federation(tmp_path / "federation", ["org-07"])
    out = tmp_path / "out"
    config = _party_toml(tmp_path, model_dir, out, enrolled_client_dir(server_dir, "org-07"))
    assert main(["train", "--config", str(config), "--alone", "--rounds", "1"]) == 0
    assert main(["train", "--config", str(config), "--alone", "--rounds", "1"]) == 0
    records = _records(out)
    assert [r["round"] for r in records] == [0, 1], "a second run replaces the first's lines"
    assert {r["client_id"] for r in records} == {"org-07"}


def test_alone_refuses_bad_settings_in_one_line(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _party_toml(tmp_path, model_dir, tmp_path / "out", tmp_path / "none")
    config.write_text(config.read_text().replace('model_dir = "', 'model_dir = "/missing'))
    assert main(["train", "--config", str(config), "--alone"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0]


def test_alone_needs_the_adapter_and_rounds_it_cannot_adopt_from_a_plan(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _party_toml(tmp_path, model_dir, tmp_path / "out", tmp_path / "none")
    text = config.read_text().replace("rounds = 2\n", "")
    config.write_text(
        text.replace('[lora]\nrank = 2\nalpha = 4.0\ntarget_modules = ["c_attn"]', "")
    )
    assert main(["train", "--config", str(config), "--alone"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot adopt the served plan" in err[0]
    assert "[lora]" in err[0] and "rounds" in err[0]


def test_alone_refuses_a_dp_table(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The alone run is the non-private reference; training it with DP silently off (or
    on) would misstate what the comparison measures."""
    config = _party_toml(tmp_path, model_dir, tmp_path / "out", tmp_path / "none")
    config.write_text(config.read_text() + '\n[dp]\nkind = "sample"\nepsilon = 8.0\n')
    assert main(["train", "--config", str(config), "--alone"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "non-private baseline" in err[0]
