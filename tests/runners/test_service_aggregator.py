"""The service as a FedAvg aggregate function: every mode returns the weighted mean.

Why: `fedveil demo` trusts this adapter to put the real service (mTLS, SecAgg+/CKKS)
between the parties' updates and the mean they apply; each mode is checked against the
plain weighted mean over two consecutive rounds, as the demo runs them.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from fedveil.runners.service_aggregator import ServiceAggregator

BASE = hashlib.sha256(b"fedveil-test-base-model").digest()


@pytest.mark.parametrize("mode", ["secagg", "ckks", "plaintext"])
def test_two_rounds_return_the_weighted_mean_of_small_updates(mode: str) -> None:
    rng = np.random.default_rng(4)
    parties = ["energy", "residential", "urban"]
    d = 2000
    with ServiceAggregator(
        parties, d, base_model_hash=BASE, mode=mode, rounds=2, progress=False
    ) as aggregate:
        for _ in range(2):
            updates = [(rng.normal(0, 1e-3, d).astype(np.float32), int(w)) for w in (240, 180, 90)]
            mean = aggregate(updates)
            expected = sum(w * u.astype(np.float64) for u, w in updates) / sum(
                w for _, w in updates
            )
            # LoRA-sized deltas (~1e-3) keep 7 significant digits or better in every mode
            assert np.max(np.abs(mean - expected)) <= 1e-9 + 1e-6 * np.max(np.abs(expected))
        assert [r.round_id for r in aggregate.results] == [1, 2]
        assert all(r.survivors == tuple(sorted(parties)) for r in aggregate.results)


def test_client_level_dp_reports_epsilon_within_budget_and_noises_the_mean() -> None:
    rng = np.random.default_rng(8)
    parties = ["energy", "residential", "urban"]
    d = 1000
    with ServiceAggregator(
        parties,
        d,
        base_model_hash=BASE,
        rounds=2,
        progress=False,
        dp_epsilon=8.0,
        dp_delta=1e-5,
        dp_clip_norm=1.0,
    ) as aggregate:
        means, expected = [], []
        for _ in range(2):
            updates = [(rng.normal(0, 1e-3, d).astype(np.float32), 100) for _ in parties]
            means.append(aggregate(updates))
            expected.append(np.mean([u.astype(np.float64) for u, _ in updates], axis=0))
        reports = [r.privacy for r in aggregate.results]
    assert all(p is not None for p in reports)
    epsilons = [p.epsilon for p in reports if p is not None]
    assert 0 < epsilons[0] < epsilons[1] <= 8.0 + 1e-6
    # the released mean carries the reported noise: far from the exact mean, as it must be
    noise = means[1] - expected[1]
    std = reports[1].noise_std if reports[1] is not None else 0.0
    assert 0.5 * std < float(np.std(noise)) < 2.0 * std
