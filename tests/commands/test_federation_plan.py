"""The federation plan: `fedveil plan` writes it from the base model, `fedveil server` serves
it, and `fedveil train` parties adopt it, or are refused naming what differs.

The attack: a server that shows a divergent party a plan matching what that party holds
(here a LoRA alpha the others do not use, same dimension, so nothing else would notice).
The field-by-field comparison then passes; what stops the party from being averaged in is
that its model chain is rooted in the digest of its *own* plan, so it derives another
model hash than the one announced and refuses before sending anything. The control: the
same divergent party in a federation without a plan (the chain rooted in the bare base
model hash) is averaged in without anyone noticing.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file

from fedveil.cli import main
from fedveil.errors import ConfigError
from fedveil.learner.lora import adapter_layout, apply_lora, base_model_hash
from fedveil.learner.models import load_model
from fedveil.proto import aggregation_pb2 as pb
from fedveil.server.keys_store import client_dir
from fedveil.server.settings import ServerSettings, load_settings
from tests.commands.test_train_command import LORA, _texts
from tests.helpers.party_toml import TEXT_RECIPE, texts_data, write_party_toml
from tests.helpers.service_harness import make_keys, running_server, settings_for
from tests.helpers.tiny_gpt2 import save_tiny_gpt2

ROUNDS = 2


def _party_toml(
    tmp_path: Path,
    keys: Path,
    cid: str,
    model_dir: Path,
    texts: Path,
    port: int,
    lora: str = "",
    rounds: int | None = None,
) -> Path:
    """A party.toml with no [lora] and no rounds unless given: both come from the plan."""
    return write_party_toml(
        tmp_path,
        cid,
        credentials=client_dir(keys, cid),
        roster=keys / "roster.json",
        port=port,
        model_dir=model_dir,
        data=texts_data(texts),
        rounds=rounds,
        sections=TEXT_RECIPE + lora,
    )


def _write_plan(tmp_path: Path, model_dir: Path) -> Path:
    path = tmp_path / "federation.toml"
    code = main(
        [
            "plan",
            "--model-dir",
            str(model_dir),
            "--out",
            str(path),
            "--name",
            "gate-watch",
            "--rounds",
            str(ROUNDS),
            "--rank",
            "2",
            "--alpha",
            "4",
            "--target-modules",
            "c_attn",
        ]
    )
    assert code == 0
    return path


@pytest.fixture
def planned(tmp_path: Path) -> tuple[Path, Path, list[str], list[Path], ServerSettings]:
    model_dir = save_tiny_gpt2(tmp_path / "gpt2-tiny")
    keys, ids = make_keys(tmp_path, 3)
    texts = [_texts(tmp_path, i) for i in range(3)]
    plan_file = _write_plan(tmp_path, model_dir)
    settings = load_settings(
        plan_file,
        {"keys_dir": keys, "state_dir": tmp_path / "state", "port": 0, "stage_timeout_s": 20.0},
    )
    return model_dir, keys, ids, texts, settings


def _federate(
    settings: ServerSettings, configs: list[Path], patch: Any = None
) -> tuple[list[int], list[pb.RoundInfo]]:
    async def run() -> tuple[list[int], list[pb.RoundInfo]]:
        async with running_server(settings) as server:
            if patch is not None:
                patch(server)
            runs = [asyncio.to_thread(main, ["train", "--config", str(c)]) for c in configs]
            codes = list(await asyncio.gather(*runs))
            rounds = [server.coordinator.rounds[r] for r in sorted(server.coordinator.rounds)]
            return codes, [r.server.result for r in rounds]  # type: ignore[misc]

    return asyncio.run(run())


def test_the_plan_fixes_the_dimension_and_the_model_hash_root(
    tmp_path: Path, planned: tuple
) -> None:
    model_dir, _, _, _, settings = planned
    model = load_model(model_dir).model
    base = base_model_hash(model)
    layout = adapter_layout(apply_lora(model, LORA), base, LORA.variant)
    plan = settings.round.federation.plan()
    assert settings.round.dimension == layout.size == plan.dimension
    assert plan.base_model_hash == base and plan.layout_sha256 == layout.fingerprint()
    assert settings.round.model_hash == plan.digest() != base
    assert settings.round.rounds == ROUNDS and plan.lora.target_modules == ("c_attn",)
    text = (tmp_path / "federation.toml").read_text()
    broken = tmp_path / "broken.toml"
    broken.write_text(text + "\ndimension = 7\n")  # [round] dimension against the plan
    with pytest.raises(ConfigError, match="leave round.dimension out"):
        load_settings(broken, {"keys_dir": tmp_path})
    assert (
        main(["plan", "--model-dir", str(model_dir), "--out", str(tmp_path / "federation.toml")])
        == 2
    )


def test_parties_without_lora_or_rounds_adopt_the_served_plan(
    tmp_path: Path, planned: tuple
) -> None:
    model_dir, keys, ids, texts, settings = planned
    configs = [
        _party_toml(tmp_path, keys, cid, model_dir, texts[i], 0) for i, cid in enumerate(ids)
    ]

    def with_port(server: Any) -> None:
        for path in configs:
            path.write_text(path.read_text().replace("localhost:0", f"localhost:{server.port}"))

    codes, results = _federate(settings, configs, with_port)
    assert codes == [0, 0, 0]
    assert len(results) == ROUNDS and all(len(r.survivors) == 3 for r in results)
    adapters = [
        load_file(str(tmp_path / "out" / cid / "adapter" / "adapter_model.safetensors"))
        for cid in ids
    ]
    for other in adapters[1:]:
        assert all(np.array_equal(other[k], adapters[0][k]) for k in adapters[0])


def test_a_party_with_another_adapter_or_base_model_is_refused_naming_it(
    tmp_path: Path, planned: tuple, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir, keys, ids, texts, settings = planned
    other_model = save_tiny_gpt2(tmp_path / "gpt2-other", seed=1)  # other weights
    alpha = '[lora]\nrank = 2\nalpha = 8.0\ntarget_modules = ["c_attn"]\n'

    async def run() -> list[str]:
        errors = []
        async with running_server(settings) as server:
            for model, lora in ((model_dir, alpha), (other_model, "")):
                config = _party_toml(tmp_path, keys, ids[0], model, texts[0], server.port, lora)
                capsys.readouterr()
                assert await asyncio.to_thread(main, ["train", "--config", str(config)]) == 2
                errors.append(capsys.readouterr().err.strip())
        return errors

    wrong_alpha, wrong_base = asyncio.run(run())
    assert "Traceback" not in wrong_alpha + wrong_base
    assert "lora.alpha: this party 8.0, the federation 4.0" in wrong_alpha
    assert "gate-watch" in wrong_alpha
    assert "base_model_hash: this party" in wrong_base


def test_a_server_that_shows_a_divergent_party_its_own_plan_cannot_average_it_in(
    tmp_path: Path,
    planned: tuple,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model_dir, keys, ids, texts, settings = planned
    victim = ids[2]
    divergent = '[lora]\nrank = 2\nalpha = 8.0\ntarget_modules = ["c_attn"]\n'
    from fedveil.server import servicer as servicer_module

    original = servicer_module.AggregationServicer.GetRound

    async def lying_get_round(self: Any, request: pb.GetRoundRequest, context: Any) -> Any:
        info = await original(self, request, context)
        if request.client_id == victim and info.spec.HasField("plan"):
            info = pb.RoundInfo.FromString(info.SerializeToString())
            info.spec.plan.lora.alpha = 8.0  # what the victim holds: the comparison passes
        return info

    monkeypatch.setattr(servicer_module.AggregationServicer, "GetRound", lying_get_round)
    configs = [
        _party_toml(tmp_path, keys, cid, model_dir, texts[i], 0, divergent if cid == victim else "")
        for i, cid in enumerate(ids)
    ]

    def with_port(server: Any) -> None:
        for path in configs:
            path.write_text(path.read_text().replace("localhost:0", f"localhost:{server.port}"))

    codes, results = _federate(settings, configs, with_port)
    assert codes[2] != 0, "the victim refuses: its chain root is its own plan's digest"
    assert "refusing before sending anything" in capsys.readouterr().err
    # With a roster of three the advertise quorum is three: the round fails closed for all.
    assert all(r is None or victim not in r.survivors for r in results)

    # Control: without a plan the chain root is the bare base model hash, which the
    # divergent party shares, so it is averaged in with an adapter the others do not use.
    model = load_model(model_dir).model
    base = base_model_hash(model)
    layout = adapter_layout(apply_lora(model, LORA), base, LORA.variant)
    monkeypatch.setattr(servicer_module.AggregationServicer, "GetRound", original)
    plain = settings_for(
        tmp_path / "plain", keys, dimension=layout.size, model_hash=base, stage_timeout_s=20.0
    )
    rounds = 1
    lora = '[lora]\nrank = 2\nalpha = 4.0\ntarget_modules = ["c_attn"]\n'
    configs = [
        _party_toml(
            tmp_path,
            keys,
            cid,
            model_dir,
            texts[i],
            0,
            divergent if cid == victim else lora,
            rounds,
        )
        for i, cid in enumerate(ids)
    ]
    for cid in ids:
        for leftover in (tmp_path / "out" / cid).glob("*"):
            if leftover.is_file():
                leftover.unlink()
    codes, results = _federate(plain, configs, with_port)
    assert codes == [0, 0, 0]
    assert victim in results[0].survivors, "without the plan the divergent party is averaged in"
