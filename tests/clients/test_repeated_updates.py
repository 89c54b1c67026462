"""Cross-round differencing: one update sent in two rounds without DP noise is refused.

The attack: rounds 1 and 2 carry the same update x of a victim; the server drops the
victim from round 2 (or it drops out). Then W1 * mean1 - W2 * mean2 = w * x: secure
aggregation hid x within each round, but not across them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedveil.cli import main
from fedveil.clients.update_guard import RepeatedUpdateGuard, update_digest
from fedveil.commands import client as client_command
from fedveil.errors import RepeatedUpdateError
from fedveil.server.keys_store import client_dir
from tests.helpers.service_harness import make_keys

MODEL_HASH = "ab" * 32


def test_the_difference_of_two_exact_aggregates_is_the_repeated_update() -> None:
    rng = np.random.default_rng(0)
    x, a, b = (rng.uniform(-1, 1, 8) for _ in range(3))
    w = {"victim": 30, "a": 10, "b": 20}
    mean_1 = (w["victim"] * x + w["a"] * a + w["b"] * b) / 60
    mean_2 = (w["a"] * a + w["b"] * b) / 30
    recovered = (60 * mean_1 - 30 * mean_2) / (60 - 30)
    np.testing.assert_allclose(recovered, x)  # why the guard exists


def test_the_guard_admits_an_update_once_without_dp() -> None:
    update = np.arange(6, dtype=np.float32)
    guard = RepeatedUpdateGuard(dp_protected=False)
    guard.admit(update)
    guard.admit(update + 1)  # a fresh update is fine
    with pytest.raises(RepeatedUpdateError, match="enable DP") as info:
        guard.admit(update.copy())
    assert "\n" not in str(info.value)


def test_the_same_values_under_other_names_are_the_same_update() -> None:
    flat = np.arange(6, dtype=np.float32)
    named = {"a": flat[:2], "b": flat[2:]}
    assert update_digest(named) == update_digest(flat)
    assert update_digest(flat) != update_digest(flat.astype(np.float64))


def test_with_dp_noise_in_every_round_a_repeat_is_allowed() -> None:
    update = np.ones(4, dtype=np.float32)
    guard = RepeatedUpdateGuard(dp_protected=True)
    guard.check_plan(update, rounds=5)
    assert guard.admit(update) == guard.admit(update)


def test_a_plan_of_several_rounds_is_refused_before_anything_is_sent() -> None:
    update = np.ones(4, dtype=np.float32)
    RepeatedUpdateGuard(dp_protected=False).check_plan(update, rounds=1)
    with pytest.raises(RepeatedUpdateError, match="3 rounds would send the same update"):
        RepeatedUpdateGuard(dp_protected=False).check_plan(update, rounds=3)


def _argv(keys: Path, update: Path, *extra: str) -> list[str]:
    return [
        "client",
        "--server",
        "localhost:1",
        "--credentials",
        str(client_dir(keys, "org-00")),
        "--roster",
        str(keys / "roster.json"),
        "--update",
        str(update),
        "--weight",
        "3",
        "--model-hash",
        MODEL_HASH,
        *extra,
    ]


def test_fedveil_client_refuses_rounds_2_without_dp_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys, _ = make_keys(tmp_path, 3)
    update = tmp_path / "update.npy"
    np.save(update, np.ones(10, dtype=np.float32))
    assert main(_argv(keys, update, "--rounds", "2")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: 2 rounds would send the same update") and "\n" not in err
    assert "--privacy-epsilon" in err
    # with a privacy budget every round it joins carries DP noise: prepared, not refused
    settings = client_command.load_client_settings(
        None,
        {
            "server": "localhost:1",
            "credentials": client_dir(keys, "org-00"),
            "roster": keys / "roster.json",
            "update": update,
            "weight": 3,
            "rounds": 2,
            "privacy_epsilon": 8.0,
            "privacy_ledger": tmp_path / "privacy-ledger.json",
            "model_hash": MODEL_HASH,
        },
    )
    prepared = client_command.prepare(settings)
    assert prepared.guard.dp_protected
