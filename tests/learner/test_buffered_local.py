"""Buffered (FedBuff) federation in process: a slow party does not stall the others.

Each buffer is one real SecAgg+ round (runners.aggregators.InProcessSecAgg) among the K
parties it holds; the tests check, buffer by buffer, that the secure result is the
staleness-weighted mean of exactly what the buffer held, and that the global adapter is
the start plus the sum of every buffer's result.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from fedveil.errors import ConfigError
from fedveil.learner.data import CityDataConfig, make_party_datasets
from fedveil.learner.federated_local import CaptionerRecipe, make_parties
from fedveil.learner.federation.buffered_local import (
    BufferedConfig,
    BufferRecord,
    run_buffered,
    synchronous_config,
)
from fedveil.learner.federation.staleness import (
    FEDBUFF,
    NO_STALENESS,
    StalenessKind,
    StalenessWeight,
)
from fedveil.learner.lora import LoraSettings, WeightedUpdate, weighted_mean
from fedveil.learner.lora.aggregation import Aggregator
from fedveil.learner.training import TrainConfig
from fedveil.learner.training.party import Party
from fedveil.runners.aggregators import InProcessSecAgg
from tests.helpers.captioner_fixtures import tiny_base

SMALL = CaptionerRecipe(
    rounds=1,
    lora=LoraSettings(rank=2, alpha=4),
    train=TrainConfig(epochs=1, batch_size=8, learning_rate=1e-2, progress=False),
    data=CityDataConfig(samples_per_party=8, test_samples=4),
)
SLOW = {"energy": 1.0, "residential": 1.0, "urban": 5.0}  # urban is 5x slower


def _parties() -> list[Party]:
    return make_parties(tiny_base(), make_party_datasets(SMALL.data), SMALL)


class SecureSpy:
    """Builds one real secure round per buffer and keeps what each buffer held."""

    def __init__(self, dimension: int) -> None:
        self.dimension = dimension
        self.held: list[tuple[tuple[str, ...], list[WeightedUpdate], np.ndarray]] = []

    def __call__(self, members: tuple[str, ...]) -> Aggregator:
        secure = InProcessSecAgg(list(members), self.dimension, rounds=1)

        def aggregate(updates: Sequence[WeightedUpdate]) -> np.ndarray:
            mean = secure(updates)
            self.held.append((members, list(updates), mean))
            return mean

        return aggregate


def test_a_slow_party_does_not_stall_the_buffers_and_each_is_the_mean_it_held() -> None:
    parties = _parties()
    start = parties[0].global_vector.astype(np.float64)
    counts = {p.name: p.weight for p in parties}
    spy = SecureSpy(parties[0].layout.size)
    run = run_buffered(parties, BufferedConfig(2, SLOW, buffers=6), spy)

    assert len(run.records) == 6 and all(len(r.members) == 2 for r in run.records)
    # The fast pair fills a buffer every simulated second; urban's first update (trained
    # from the base adapter) lands in a later buffer, discounted by its staleness.
    assert [r.time for r in run.records[:4]] == [1.0, 2.0, 3.0, 4.0]
    late = [r for r in run.records if "urban" in r.members]
    assert late and late[0].staleness["urban"] >= 4 and late[0].time >= 5.0
    assert all(set(r.members) == {"energy", "residential"} for r in run.records[:4])
    for record, (members, updates, mean) in zip(run.records, spy.held, strict=True):
        assert members == record.members
        for name, (_, weight) in zip(members, updates, strict=True):
            tau = record.staleness[name]
            assert weight == record.weights[name] == max(1, round(counts[name] / np.sqrt(1 + tau)))
        assert np.allclose(mean, weighted_mean(updates), atol=1e-6)
        assert np.array_equal(mean, record.mean)
    total = start + sum(r.mean for r in run.records)
    assert np.allclose(run.global_vector, total, atol=1e-5)
    # a fresh update is not discounted, a stale one is
    assert late[0].weights["urban"] < counts["urban"]
    fresh = [r for r in run.records if r.staleness.get("energy") == 0]
    assert fresh and all(r.weights["energy"] == counts["energy"] for r in fresh)


def test_the_synchronous_baseline_waits_for_the_slow_party_every_round() -> None:
    parties = _parties()
    run = run_buffered(parties, synchronous_config(SLOW, 2), lambda names: weighted_mean)
    assert [r.time for r in run.records] == [5.0, 10.0]
    assert all(set(r.staleness.values()) == {0} for r in run.records)
    assert all(len(r.members) == 3 for r in run.records)


def test_constant_staleness_sends_the_example_counts() -> None:
    parties = _parties()
    config = BufferedConfig(2, SLOW, buffers=6, staleness=NO_STALENESS)
    run = run_buffered(parties, config, lambda names: weighted_mean)
    assert any(max(r.staleness.values()) > 0 for r in run.records)
    assert all(r.weights == {n: 8 for n in r.members} for r in run.records)


def test_staleness_function_and_its_refusals() -> None:
    assert FEDBUFF.factor(0) == 1.0 and FEDBUFF.factor(3) == pytest.approx(0.5)
    assert StalenessWeight(StalenessKind.POLYNOMIAL, 1.0).weight(100, 3) == 25
    assert FEDBUFF.weight(1, 1000) == 1  # never below 1
    assert NO_STALENESS.for_dp() is NO_STALENESS
    with pytest.raises(ConfigError, match="no effect under client-level DP"):
        FEDBUFF.for_dp()
    with pytest.raises(ConfigError, match="staleness must be one of"):
        StalenessWeight("linear")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="exponent"):
        StalenessWeight(exponent=-1.0)
    with pytest.raises(ConfigError, match="non-negative"):
        FEDBUFF.factor(-1)


def test_impossible_buffer_configurations_are_refused() -> None:
    with pytest.raises(ConfigError, match="exceeds the 3 parties"):
        BufferedConfig(4, SLOW, buffers=1)
    with pytest.raises(ConfigError, match="> 0 s"):
        BufferedConfig(2, {**SLOW, "urban": 0.0}, buffers=1)
    with pytest.raises(ConfigError, match="buffers"):
        BufferedConfig(2, SLOW, buffers=0)
    with pytest.raises(ConfigError, match="durations name"):
        run_buffered(_parties(), BufferedConfig(2, {"a": 1, "b": 1}, 1), lambda n: weighted_mean)


def test_a_run_ends_at_its_horizon_or_when_the_caller_says() -> None:
    parties = _parties()
    config = BufferedConfig(2, SLOW, buffers=100, until=2.5)
    run = run_buffered(parties, config, lambda names: weighted_mean)
    assert [r.time for r in run.records] == [1.0, 2.0]
    seen: list[float] = []

    def stop_after_first(record: BufferRecord, vector: np.ndarray) -> bool:
        seen.append(record.time)
        return True

    again = run_buffered(
        _parties(), BufferedConfig(2, SLOW, buffers=100), lambda n: weighted_mean, stop_after_first
    )
    assert seen == [1.0] and len(again.records) == 1
