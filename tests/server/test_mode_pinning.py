"""Mode downgrade: a server that announces plaintext or CKKS to default clients gets nothing.

Why over real gRPC: the attack is the server's own spec, so only a real server (mutual
TLS on loopback, the coordinator's own round objects) shows that no upload, key request
or plaintext byte reached it. Attack first: without the check in the SDK, the plaintext
server below receives every raw update and weight and finishes the round.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from fedveil.cli import main
from fedveil.clients.mode_policy import allowed_modes_from_flags, require_allowed_mode
from fedveil.commands import client as client_command
from fedveil.errors import ConfigError, MaliciousServerError, ModeDowngradeError
from fedveil.proto import aggregation_pb2 as pb
from fedveil.secagg.ckks.server_round import CkksServerRound
from fedveil.secagg.protocol.config import ClientPolicy
from fedveil.server.plaintext import PlaintextRound
from tests.helpers.service_harness import client_for, make_keys, running_server, settings_for

D = 40


def _updates(ids: list[str]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    return {c: rng.uniform(-0.5, 0.5, D).astype(np.float32) for c in ids}


async def _one_round(
    tmp_path: Path, mode: str, allowed: tuple[str, ...] | None
) -> tuple[list[Any], Any]:
    """Every client joins the one round of a `mode` server; what they got, and its round."""
    keys, ids = make_keys(tmp_path, 3)
    settings = settings_for(tmp_path, keys, dimension=D, mode=mode, rounds=1, stage_timeout_s=3.0)
    updates = _updates(ids)
    async with running_server(settings) as server:
        extra = {} if allowed is None else {"allowed_modes": allowed}
        clients = [client_for(keys, c, server.port, **extra) for c in ids]
        outcomes = await asyncio.wait_for(
            asyncio.gather(
                *(cl.run_round(updates[cl.client_id], 7) for cl in clients), return_exceptions=True
            ),
            timeout=60,
        )
        for cl in clients:
            await cl.close()
        round_server = server.coordinator.rounds[1].server
    return list(outcomes), round_server


# --- the attack over gRPC ----------------------------------------------------------------


def test_a_plaintext_server_receives_nothing_from_default_clients(tmp_path: Path) -> None:
    outcomes, round_server = asyncio.run(_one_round(tmp_path, "plaintext", None))
    assert isinstance(round_server, PlaintextRound)
    for outcome in outcomes:
        assert isinstance(outcome, ModeDowngradeError), outcome
        assert "plaintext" in str(outcome) and "nothing of the update was sent" in str(outcome)
    # the server's side: no upload begun or finished, no weight, no value, no result
    assert round_server.uploaded == frozenset()
    assert round_server.uploads_in_flight() == frozenset()
    assert round_server.uploads.weights == {}
    assert round_server.result is None


def test_a_ckks_server_receives_no_key_request_or_ciphertext(tmp_path: Path) -> None:
    outcomes, round_server = asyncio.run(_one_round(tmp_path, "ckks", None))
    assert isinstance(round_server, CkksServerRound)
    for outcome in outcomes:
        assert isinstance(outcome, ModeDowngradeError), outcome
        assert "ckks mode" in str(outcome) and "--allow-mode ckks" in str(outcome)
    assert round_server.advertisements == {}  # not even a key advertisement
    assert round_server.publication is None
    assert round_server.uploaded == frozenset()
    assert round_server.result is None


@pytest.mark.parametrize("mode", ["plaintext", "ckks"])
def test_clients_that_opt_in_take_part(tmp_path: Path, mode: str) -> None:
    outcomes, round_server = asyncio.run(_one_round(tmp_path, mode, ("secagg", mode)))
    assert all(not isinstance(o, BaseException) for o in outcomes), outcomes
    assert round_server.result is not None
    assert {len(o.survivors) for o in outcomes} == {3}
    assert {o.total_weight for o in outcomes} == {21}


# --- the SDK check ---------------------------------------------------------------------------


def test_the_default_policy_allows_secagg_only() -> None:
    assert require_allowed_mode(1, pb.AGGREGATION_MODE_SECAGG, None) == "secagg"
    for mode in (pb.AGGREGATION_MODE_CKKS, pb.AGGREGATION_MODE_PLAINTEXT, 0, 99):
        with pytest.raises(ModeDowngradeError) as info:
            require_allowed_mode(4, mode, None)
        assert "round 4" in str(info.value) and "\n" not in str(info.value)
    assert issubclass(ModeDowngradeError, MaliciousServerError)
    assert ModeDowngradeError.grpc_status == "PERMISSION_DENIED"
    ckks = ClientPolicy(allowed_modes=frozenset({"secagg", "ckks"}))
    assert require_allowed_mode(1, pb.AGGREGATION_MODE_CKKS, ckks) == "ckks"
    with pytest.raises(ModeDowngradeError, match="benchmarks only"):
        require_allowed_mode(1, pb.AGGREGATION_MODE_PLAINTEXT, ckks)


# --- fedveil client's flags ------------------------------------------------------------------


def test_flags_build_the_pin() -> None:
    assert allowed_modes_from_flags((), False) == {"secagg"}
    assert allowed_modes_from_flags(("ckks", "ckks"), False) == {"secagg", "ckks"}
    assert allowed_modes_from_flags((), True) == {"secagg", "plaintext"}
    with pytest.raises(ConfigError, match="--allow-plaintext-for-benchmarks"):
        allowed_modes_from_flags(("plaintext",), False)


def _client_argv(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "client",
        "--server",
        "localhost:1",
        "--credentials",
        str(tmp_path / "nowhere"),
        "--roster",
        str(tmp_path / "roster.json"),
        "--update",
        str(tmp_path / "update.npy"),
        "--weight",
        "1",
        "--model-hash",
        "ab" * 32,
        *extra,
    ]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--allow-mode", "rot13"], "--allow-mode takes ckks"),
        (["--allow-mode", "plaintext"], "--allow-plaintext-for-benchmarks"),
        (["--allow-mode", "ckks", "--allow-mode", "bogus"], "'bogus'"),
    ],
)
def test_a_bad_mode_flag_exits_2_with_one_line(
    tmp_path: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_client_argv(tmp_path, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("error: ") and "\n" not in err


def test_settings_carry_the_mode_flags_into_the_policy(tmp_path: Path) -> None:
    base = {
        "server": "localhost:1",
        "credentials": tmp_path,
        "roster": tmp_path / "r.json",
        "update": tmp_path / "u.npy",
        "weight": 1,
    }
    default = client_command.load_client_settings(None, base)
    assert default.policy().allowed_modes == {"secagg"}
    ckks = client_command.load_client_settings(None, {**base, "allow_mode": ["ckks"]})
    assert ckks.policy().allowed_modes == {"secagg", "ckks"}
    config = tmp_path / "client.toml"
    config.write_text('[client]\nallow-mode = ["ckks"]\nallow_plaintext_for_benchmarks = true\n')
    both = client_command.load_client_settings(config, base)
    assert both.policy().allowed_modes == {"secagg", "ckks", "plaintext"}
    config.write_text('[client]\nallow_plaintext_for_benchmarks = "yes"\n')
    with pytest.raises(ConfigError, match="true or false"):
        client_command.load_client_settings(config, base)


def test_a_downgrade_is_one_line_and_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A prepared run without a server: only what run_client touches after the rounds.
    prepared = SimpleNamespace(client=SimpleNamespace(privacy_ledger=None))
    monkeypatch.setattr(client_command, "prepare", lambda settings, stop_before=None: prepared)

    async def refused(prepared: object) -> list[object]:
        require_allowed_mode(3, pb.AGGREGATION_MODE_PLAINTEXT, None)
        return []

    monkeypatch.setattr(client_command, "run_rounds", refused)
    assert main(_client_argv(tmp_path)) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: round 3 announces plaintext mode") and "\n" not in err
