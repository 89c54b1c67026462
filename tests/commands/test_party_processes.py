"""Parties as real processes: `fedveil plan`, `fedveil server` and four `fedveil train`
processes on a saved tiny GPT-2 with JSONL texts, as an operator and four organisations
run them; one party is SIGKILLed while it trains, the federation goes on without it, and
the same command, re-run, catches up on the round it missed and takes part in the next.

Why four parties: the service needs `min_cohort` (three) live parties to run a round, so
with four the round a party misses still produces a result, which is what the restarted
party must fetch and apply (clients.catch_up) before its next delta makes sense.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file

from fedveil.cli import main
from tests.helpers.party_toml import TEXT_RECIPE, texts_data, write_party_toml
from tests.helpers.service_harness import enrol_federation, enrolled_client_dir
from tests.helpers.tiny_gpt2 import WORDS, save_tiny_gpt2
from tests.server.test_service_processes import ProcessGroup

pytestmark = pytest.mark.slow

ROUNDS = 3
PARTIES = 4


def _texts(tmp_path: Path, index: int) -> Path:
    rng = np.random.default_rng(index)
    path = tmp_path / f"texts-{index}.jsonl"
    lines = [" ".join(rng.choice(WORDS, size=4)) for _ in range(6)]
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in lines))
    return path


def _party_toml(tmp_path: Path, keys: Path, cid: str, model: Path, texts: Path, port: int) -> Path:
    return write_party_toml(
        tmp_path,
        cid,
        credentials=enrolled_client_dir(keys, cid),
        roster=keys / "roster.json",
        port=port,
        model_dir=model,
        data=texts_data(texts),
        join_timeout_s=120,
        sections=TEXT_RECIPE,
    )


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_party_killed_mid_federation_rejoins_with_the_global_adapter(tmp_path: Path) -> None:
    model = save_tiny_gpt2(tmp_path / "gpt2-tiny")
    ids = [f"org-{i:02d}" for i in range(PARTIES)]
    keys = enrol_federation(tmp_path / "pki", ids)  # each party's keys from its own request
    plan = tmp_path / "federation.toml"
    assert (
        main(
            ["plan", "--model-dir", str(model), "--out", str(plan), "--rounds", str(ROUNDS)]
            + ["--rank", "2", "--alpha", "4", "--target-modules", "c_attn", "--name", "texts"]
        )
        == 0
    )
    # The round a party misses waits for it until the stage deadline; long enough for a
    # restarted party to load its model and catch up before the next round's deadline.
    plan.write_text(plan.read_text() + "stage_timeout_s = 25.0\n")
    port = _free_port()
    configs = [
        _party_toml(tmp_path, keys, cid, model, _texts(tmp_path, i), port)
        for i, cid in enumerate(ids)
    ]
    victim = ids[-1]
    with ProcessGroup(tmp_path / "procs") as group:
        server = group.start(
            "server",
            ["server", "--config", str(plan), "--keys-dir", str(keys), "--port", str(port)]
            + ["--state-dir", str(tmp_path / "state")],
        )
        server.wait_for("listening on", 60, stream="stdout")
        parties = {
            cid: group.start(cid, ["train", "--config", str(c)])
            for cid, c in zip(ids, configs, strict=True)
        }
        parties[victim].wait_for(rf"{victim} round 2/{ROUNDS}: training on", 120)
        parties[victim].popen.kill()  # SIGKILL while it trains round 2
        parties[victim].popen.wait(timeout=10)
        parties[ids[0]].wait_for(rf"round 2/{ROUNDS}: aggregate applied: 3 survivors", 120)
        restarted = group.start(f"{victim}-again", ["train", "--config", str(configs[-1])])
        for cid in ids[:-1]:
            assert parties[cid].wait(180) == 0, parties[cid].describe()
        assert restarted.wait(180) == 0, restarted.describe()
        log = restarted.stderr()
        assert "resuming from" in log and "after round 1" in log
        # (service round ids may run ahead of the party's count: a round that failed, e.g.
        # while the parties were still loading their models, is retried)
        assert re.search(r"caught up on 1 missed round\(s\) \(service rounds \d+\)", log)
        assert f"round 3/{ROUNDS}: aggregate applied: 4 survivors" in log
    adapters = [
        load_file(str(tmp_path / "out" / cid / "adapter" / "adapter_model.safetensors"))
        for cid in ids
    ]
    for other in adapters[1:]:
        assert all(np.array_equal(other[k], adapters[0][k]) for k in adapters[0])
    with safe_open(str(tmp_path / "out" / victim / "checkpoint.safetensors"), "np") as f:
        assert f.metadata()["rounds_done"] == str(ROUNDS)
        assert f.metadata()["chain_round_id"] == str(ROUNDS)


def test_the_federation_resumes_after_the_server_is_killed_and_restarted(
    tmp_path: Path,
) -> None:
    """SIGKILL the server once the parties have applied round 1; the same command restarts
    it on its journal, and the parties (retrying, then waiting for the next round) finish
    the plan's rounds with the same adapter."""
    model = save_tiny_gpt2(tmp_path / "gpt2-tiny")
    ids = [f"org-{i:02d}" for i in range(3)]
    keys = enrol_federation(tmp_path / "pki", ids)
    plan = tmp_path / "federation.toml"
    args = ["plan", "--model-dir", str(model), "--out", str(plan), "--rounds", str(ROUNDS)]
    assert main(args + ["--rank", "2", "--alpha", "4", "--target-modules", "c_attn"]) == 0
    plan.write_text(plan.read_text() + "stage_timeout_s = 25.0\n")
    port = _free_port()
    configs = [
        _party_toml(tmp_path, keys, cid, model, _texts(tmp_path, i), port)
        for i, cid in enumerate(ids)
    ]
    server_args = ["server", "--config", str(plan), "--keys-dir", str(keys)]
    server_args += ["--port", str(port), "--state-dir", str(tmp_path / "state")]
    with ProcessGroup(tmp_path / "procs") as group:
        server = group.start("server", server_args)
        server.wait_for("listening on", 60, stream="stdout")
        parties = [
            group.start(cid, ["train", "--config", str(c)])
            for cid, c in zip(ids, configs, strict=True)
        ]
        parties[0].wait_for(rf"round 1/{ROUNDS}: checkpoint written", 120)
        server.popen.kill()
        server.popen.wait(timeout=10)
        again = group.start("server-again", server_args)
        again.wait_for("listening on", 60, stream="stdout")
        for party in parties:
            assert party.wait(240) == 0, party.describe() + again.describe()
    adapters = [
        load_file(str(tmp_path / "out" / cid / "adapter" / "adapter_model.safetensors"))
        for cid in ids
    ]
    for other in adapters[1:]:
        assert all(np.array_equal(other[k], adapters[0][k]) for k in adapters[0])
    for cid in ids:
        with safe_open(str(tmp_path / "out" / cid / "checkpoint.safetensors"), "np") as f:
            assert f.metadata()["rounds_done"] == str(ROUNDS)
