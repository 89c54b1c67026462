"""Sybils against the real SecAgg round, both ways: enrolled Sybils isolate the victim;
invented identities, forged advertisements and a cohort below the floor are refused."""

from __future__ import annotations

import numpy as np

from fedveil.attacks.active.secagg_round import Enrolment, round_config, run_round
from fedveil.attacks.active.sybil import (
    roster_refusals,
    run_sybil_round,
    subtract_sybils,
    sybil_view,
)


def test_n_minus_one_enrolled_sybils_recover_the_victims_update() -> None:
    rng = np.random.default_rng(1)
    victim = rng.uniform(-1.5, 1.5, 24)  # partly beyond the clip: recovered clipped
    result = run_sybil_round(victim, victim_weight=7, cohort=4)
    assert result.sybils == 3
    assert result.recovered_exactly
    assert round(result.recovered_weight) == 7
    assert np.allclose(result.recovered, np.clip(victim, -1, 1), atol=1e-6)


def test_without_the_sybils_inputs_the_mean_is_not_the_victims_update() -> None:
    """Where the others are honest (their inputs unknown), the same mean hides the victim."""
    rng = np.random.default_rng(2)
    ids = ["victim", "client-1", "client-2", "client-3"]
    inputs = {c: rng.uniform(-1, 1, 16) for c in ids}
    weights = dict.fromkeys(ids, 1)
    result = run_round(round_config(ids, dimension=16), Enrolment.of(ids), inputs, weights)
    mean = result.estimate.weighted_mean
    assert np.max(np.abs(mean - inputs["victim"])) > 0.3
    # a guess at the others' inputs (zeros) does not subtract them away
    guess, _ = subtract_sybils(mean, result.estimate.total_weight, [np.zeros(16)] * 3, [1] * 3)
    assert np.max(np.abs(guess - inputs["victim"])) > 0.3


def test_sybil_view_through_an_injected_aggregator() -> None:
    def plain_mean(updates, weights):  # type: ignore[no-untyped-def]
        w = np.asarray(weights, dtype=np.float64)
        x = np.stack([np.clip(u, -1, 1) for u in updates])
        return (w[:, None] * x).sum(0) / w.sum(), int(w.sum())

    rng = np.random.default_rng(3)
    victim = rng.uniform(-1, 1, 8)
    sybils = [rng.uniform(-1, 1, 8) for _ in range(2)]
    assert np.allclose(sybil_view(plain_mean, victim, sybils, 3, [2, 5]), victim)


def test_the_roster_refuses_invented_clients_but_not_enrolled_sybils() -> None:
    refusals = roster_refusals(cohort=4)
    assert refusals.invented_identity == "ConfigError"
    assert refusals.forged_advertisement == "KeySubstitutionError"
    assert refusals.cohort_below_floor == "CohortTooSmallError"
    assert refusals.enrolled_sybils is None  # open: enrolment is the operator's act
