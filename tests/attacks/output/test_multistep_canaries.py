"""Multi-step white-box canary audits: the canary is in (or out of) every one of T real
DP-SGD steps (client-DP rounds), the auditor sums every step's canary coordinate, and
the bound is compared with the accountant's composition of the T steps. They hold with
the real noise, refute the composed claim with the noise off, and are inconclusive when
the trial budget cannot reach the composed claim (the quick profile's, at z = 1).

Each mechanism is the real one (a make_private DP-SGD session, the injected SecAgg+
client-DP round); the only stand-in is the deliberately broken noise function."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fedveil.learner.dp_randomness as dp_randomness
import fedveil.secagg.dp.stages as dp_stages
from fedveil.attacks.audit.canary_job import METRIC, TARGET
from fedveil.attacks.audit.cells import INCONCLUSIVE, Cell
from fedveil.attacks.audit.mechanism_cells import epsilon_cell
from fedveil.attacks.families import Family
from fedveil.attacks.measure.records import LeakRecord
from fedveil.attacks.output.gradient_canaries import (
    FULL_MULTISTEP_STEPS,
    FULL_MULTISTEP_TRIALS,
    QUICK_CLIENT_DP_TRIALS,
    QUICK_DP_SGD_TRIALS,
    CanaryVerdict,
    _dp_sgd_release,
    certifiable_for,
    client_dp_canary_audit,
    client_dp_claim,
    dp_sgd_canary_audit,
    dp_sgd_claim,
    trials_to_refute,
)
from fedveil.attacks.protections import Aggregators, DPSettings, Protection
from fedveil.errors import ConfigError
from fedveil.runners.aggregators import real_aggregators

STEPS = 2
Z = 2.0
"""At z = 2 two steps claim 3.19, which a few hundred trials can refute (trials_to_refute:
252); the audit's own z = 1 needs about 12,000 (the full profile's budget)."""
SETTINGS = DPSettings(1.0, Z, 1e-5)
TRIALS = 300


@pytest.fixture(scope="module")
def aggregators() -> Aggregators:
    return real_aggregators()


@pytest.fixture
def dp_sgd_noise_off(monkeypatch: pytest.MonkeyPatch) -> None:
    def zeros(std: float, reference: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(reference)

    monkeypatch.setattr(dp_randomness, "gaussian_noise", zeros)


@pytest.fixture
def client_dp_noise_off(monkeypatch: pytest.MonkeyPatch) -> None:
    def zeros(variance: object, count: int, rng: object) -> np.ndarray:
        return np.zeros(count, dtype=np.int64)

    monkeypatch.setattr(dp_stages, "sample_discrete_gaussian", zeros)


# --- the statistic and the claim --------------------------------------------------------


def test_the_statistic_sums_every_steps_fresh_noise() -> None:
    """Over T real steps the canary's mean shift stays C while the noise of the mean
    falls to z / sqrt(T): the auditor reads every step, not only the last."""
    steps, trials = 4, 400
    release = _dp_sgd_release(SETTINGS, 8, 4, steps)
    inside = np.array([release(True) for _ in range(trials)])
    outside = np.array([release(False) for _ in range(trials)])
    noise = Z / np.sqrt(steps)
    assert np.std(outside, ddof=1) == pytest.approx(noise, rel=0.3)
    assert np.std(inside, ddof=1) == pytest.approx(noise, rel=0.3)
    assert inside.mean() - outside.mean() == pytest.approx(1.0, abs=0.5)


def test_the_claim_is_the_accountants_composition_of_the_steps() -> None:
    one, two = dp_sgd_claim(SETTINGS, 1), dp_sgd_claim(SETTINGS, STEPS)
    assert two == pytest.approx(SETTINGS.epsilon(steps=STEPS, sampling_prob=1.0))
    assert one < two < STEPS * one  # composition: more than one step, less than linear
    client = client_dp_claim(SETTINGS.client_dp_config(4, 3), SETTINGS.delta, STEPS)
    assert client == pytest.approx(two, rel=1e-3)  # discrete Gaussian ~ Gaussian here
    with pytest.raises(ConfigError):
        dp_sgd_claim(SETTINGS, 0)


# --- DP-SGD -----------------------------------------------------------------------------


def test_dp_sgd_multistep_audit_holds_with_the_real_noise() -> None:
    audit = dp_sgd_canary_audit(SETTINGS, trials=TRIALS, steps=STEPS)
    assert audit.steps == STEPS
    assert audit.claim == pytest.approx(dp_sgd_claim(SETTINGS, STEPS))
    assert audit.certifiable > audit.claim
    assert audit.lower_bound < audit.claim
    assert audit.verdict is CanaryVerdict.CONSISTENT
    assert audit.tpr < 1.0
    assert f"over {STEPS} steps" in audit.summary()


@pytest.mark.usefixtures("dp_sgd_noise_off")
def test_dp_sgd_multistep_audit_refutes_the_composed_claim_with_the_noise_off() -> None:
    audit = dp_sgd_canary_audit(SETTINGS, trials=TRIALS, steps=STEPS)
    assert (audit.tpr, audit.fpr) == (1.0, 0.0)
    assert audit.lower_bound > audit.claim == pytest.approx(dp_sgd_claim(SETTINGS, STEPS))
    assert audit.verdict is CanaryVerdict.REFUTED


@pytest.mark.usefixtures("dp_sgd_noise_off")
def test_a_budget_below_the_composed_claim_is_inconclusive_even_with_the_noise_off() -> None:
    trials = trials_to_refute(dp_sgd_claim(SETTINGS, STEPS), delta=1e-5, alpha=0.05) - 52
    audit = dp_sgd_canary_audit(SETTINGS, trials=trials, steps=STEPS)
    assert (audit.tpr, audit.fpr) == (1.0, 0.0)  # a perfect attack, and still
    assert audit.lower_bound <= audit.claim
    assert audit.verdict is CanaryVerdict.INCONCLUSIVE


# --- client DP --------------------------------------------------------------------------


def test_client_dp_multistep_audit_holds_with_the_real_noise(aggregators: Aggregators) -> None:
    audit = client_dp_canary_audit(SETTINGS, aggregators, trials=TRIALS, steps=STEPS)
    assert audit.certifiable > audit.claim
    assert audit.lower_bound < audit.claim
    assert audit.verdict is CanaryVerdict.CONSISTENT


@pytest.mark.usefixtures("client_dp_noise_off")
def test_client_dp_multistep_audit_refutes_the_composed_claim_with_the_noise_off(
    aggregators: Aggregators,
) -> None:
    audit = client_dp_canary_audit(SETTINGS, aggregators, trials=TRIALS, steps=STEPS)
    assert (audit.tpr, audit.fpr) == (1.0, 0.0)
    assert audit.lower_bound > audit.claim
    assert audit.verdict is CanaryVerdict.REFUTED


# --- budgets: why the full profile only -------------------------------------------------


def test_trials_to_refute_is_the_smallest_budget_that_can() -> None:
    claim = dp_sgd_claim(SETTINGS, STEPS)
    need = trials_to_refute(claim, delta=1e-5, alpha=0.05)
    assert certifiable_for(need, delta=1e-5, alpha=0.05) > claim
    assert certifiable_for(need - 2, delta=1e-5, alpha=0.05) <= claim
    with pytest.raises(ConfigError):
        trials_to_refute(60.0, delta=1e-5, alpha=0.05)


def test_at_the_audits_z_the_quick_budgets_cannot_refute_two_steps_the_full_one_can() -> None:
    audit_dp = DPSettings()  # benchmarks/audit.toml's [dp]: C = 1, z = 1, delta 1e-5
    claim = dp_sgd_claim(audit_dp, FULL_MULTISTEP_STEPS)
    client = client_dp_claim(audit_dp.client_dp_config(4, 3), audit_dp.delta, FULL_MULTISTEP_STEPS)
    for quick in (QUICK_DP_SGD_TRIALS, QUICK_CLIENT_DP_TRIALS):
        assert certifiable_for(quick, delta=audit_dp.delta, alpha=0.05) <= min(claim, client)
    full = certifiable_for(FULL_MULTISTEP_TRIALS, delta=audit_dp.delta, alpha=0.05)
    assert full > max(claim, client)


def test_the_epsilon_cell_names_the_composition_it_could_not_refute() -> None:
    record = LeakRecord(
        TARGET,
        Protection.DP_SGD.value,
        1,
        METRIC,
        1.2,
        0.0,
        1.0,
        {"claim": 7.08, "certifiable": 5.98, "trials": 4000, "steps": 2, "tpr": 0.3, "fpr": 0.01},
    )
    cell = Cell(Protection.DP_SGD, Family.EPSILON, claimed=True)
    epsilon_cell(cell, [record])
    (check,) = cell.checks
    assert check.outcome == INCONCLUSIVE
    assert check.inconclusive is not None and "composed over 2 steps" in check.inconclusive
    assert cell.metrics["steps"] == 2.0
