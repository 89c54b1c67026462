"""Weight modes (clients.weights): what the round's total weight reveals across rounds.

The attack: the server sees each round's survivors and total weight. Two rounds whose
survivors differ by one client give that client's weight by subtraction; with exact
weights that is its example count, to the example.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from fedveil.cli import main
from fedveil.clients.weights import WeightMode, bucket, effective_weight
from fedveil.commands import client as client_command
from fedveil.errors import ConfigError
from tests.helpers.service_harness import client_for, make_keys, running_server, settings_for


def _total(counts: dict[str, int], mode: WeightMode) -> int:
    return sum(effective_weight(c, mode) for c in counts.values())


def test_differencing_two_rounds_reveals_an_exact_count_but_not_a_bucketed_one() -> None:
    round_1 = {"a": 100, "b": 37, "victim": 213}
    round_2 = {"a": 100, "b": 37}  # the victim dropped (or was dropped by the server)
    leaked = _total(round_1, WeightMode.EXACT) - _total(round_2, WeightMode.EXACT)
    assert leaked == 213  # the attack works on exact weights
    bucketed = _total(round_1, WeightMode.BUCKETED) - _total(round_2, WeightMode.BUCKETED)
    assert bucketed == 256  # only "between 129 and 256 examples"
    assert _total(round_1, WeightMode.FIXED) - _total(round_2, WeightMode.FIXED) == 1


def test_small_changes_in_data_size_do_not_move_a_bucketed_total() -> None:
    before = {"a": 100, "b": 37, "c": 213}
    after = {"a": 120, "b": 40, "c": 250}  # each client gained data, none crossed 2^k
    assert _total(before, WeightMode.EXACT) != _total(after, WeightMode.EXACT)
    assert _total(before, WeightMode.BUCKETED) == _total(after, WeightMode.BUCKETED)


@pytest.mark.parametrize(
    ("count", "expected"),
    [(0, 0), (1, 1), (2, 2), (3, 4), (4, 4), (5, 8), (100, 128), (128, 128), (129, 256)],
)
def test_buckets_are_the_next_power_of_two(count: int, expected: int) -> None:
    assert bucket(count) == expected
    assert effective_weight(count, "bucketed") == expected


def test_a_bucket_never_more_than_doubles_a_count() -> None:
    for count in range(1, 5000):
        assert count <= bucket(count) < 2 * count


def test_buckets_are_capped_at_the_rounds_max_weight() -> None:
    assert effective_weight(600, WeightMode.BUCKETED, max_weight=1000) == 1000
    assert effective_weight(1000, WeightMode.BUCKETED, max_weight=1000) == 1000
    assert effective_weight(500, WeightMode.BUCKETED, max_weight=1000) == 512
    # above the cap: unchanged, so the round refuses it with its own error
    assert effective_weight(1500, WeightMode.BUCKETED, max_weight=1000) == 1500


def test_fixed_counts_every_client_with_data_once() -> None:
    assert [effective_weight(c, "fixed") for c in (0, 1, 2, 10**6)] == [0, 1, 1, 1]


def test_exact_is_unchanged_even_for_values_the_round_will_refuse() -> None:
    assert effective_weight(np.int64(7), "exact") == 7  # type: ignore[arg-type]
    assert effective_weight(-1, WeightMode.EXACT) == -1  # the SDK's own check refuses it


@pytest.mark.parametrize("count", [-1, 1.5, True, "3"])
def test_bad_counts_are_refused(count: object) -> None:
    with pytest.raises(ConfigError, match="non-negative example count"):
        effective_weight(count, "bucketed")  # type: ignore[arg-type]


def test_an_unknown_mode_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="exact, fixed, bucketed"):
        WeightMode.parse("log2")
    assert WeightMode.parse("FIXED") is WeightMode.FIXED


@pytest.mark.parametrize(("mode", "total"), [("exact", 18), ("fixed", 3), ("bucketed", 24)])
def test_the_sdk_sends_the_modes_weight_over_grpc(tmp_path: Path, mode: str, total: int) -> None:
    async def run() -> list[int]:
        keys, ids = make_keys(tmp_path, 3)
        settings = settings_for(tmp_path, keys, dimension=20, rounds=1)
        counts = dict(zip(ids, (5, 6, 7), strict=True))
        async with running_server(settings) as server:
            clients = [client_for(keys, c, server.port) for c in ids]
            results = await asyncio.gather(
                *(
                    cl.run_round(
                        np.full(20, 0.1, np.float32), counts[cl.client_id], weight_mode=mode
                    )
                    for cl in clients
                )
            )
            for cl in clients:
                await cl.close()
        return [r.total_weight for r in results]

    assert asyncio.run(run()) == [total] * 3


def test_the_cli_takes_a_weight_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = {
        "server": "localhost:1",
        "credentials": tmp_path,
        "roster": tmp_path / "r.json",
        "update": tmp_path / "u.npy",
        "weight": 1,
    }
    assert client_command.load_client_settings(None, base).weight_mode == "exact"
    assert client_command.load_client_settings(None, {**base, "weight_mode": "bucketed"})
    argv = ["client", "--server", "localhost:1", "--credentials", str(tmp_path)]
    argv += ["--roster", "r.json", "--update", "u.npy", "--weight", "1", "--weight-mode", "log"]
    argv += ["--model-hash", "ab" * 32]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: weight mode must be one of") and "\n" not in err
