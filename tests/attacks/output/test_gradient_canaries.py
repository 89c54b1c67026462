"""Dirac canary audits against the real mechanisms: they hold with the noise on, refute the
claim with the noise off, and say inconclusive when the budget cannot refute it.

Each mechanism is the real one (a make_private DP-SGD session, the injected SecAgg+
client-DP round); the only stand-in is the deliberately broken noise function."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fedveil.learner.dp_randomness as dp_randomness
import fedveil.secagg.dp.stages as dp_stages
from fedveil.attacks.output.empirical_epsilon import (
    certifiable_clopper_pearson,
    clopper_pearson_epsilon,
    threshold_grid_clopper_pearson,
)
from fedveil.attacks.output.gradient_canaries import (
    QUICK_CLIENT_DP_TRIALS,
    QUICK_DP_SGD_TRIALS,
    THRESHOLDS,
    CanaryAudit,
    CanaryVerdict,
    canary_coins,
    certifiable_for,
    client_dp_canary_audit,
    client_dp_claim,
    dp_sgd_canary_audit,
)
from fedveil.attacks.protections import Aggregators, DPSettings
from fedveil.errors import ConfigError
from fedveil.runners.aggregators import real_aggregators

SMALL_CLIENT_TRIALS = 300
"""Enough real client-DP rounds to refute the z = 2 claim (certifiable ~3.4 > 2.17) in a
few seconds; the quick budget (z = 1) runs in the slow tests."""


@pytest.fixture(scope="module")
def aggregators() -> Aggregators:
    return real_aggregators()


@pytest.fixture
def dp_sgd_noise_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bug the audit must catch: DP-SGD releases the clipped sum without noise."""

    def zeros(std: float, reference: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(reference)

    monkeypatch.setattr(dp_randomness, "gaussian_noise", zeros)


@pytest.fixture
def client_dp_noise_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every client's discrete Gaussian share is zero: the round releases the plain mean."""

    def zeros(variance: object, count: int, rng: object) -> np.ndarray:
        return np.zeros(count, dtype=np.int64)

    monkeypatch.setattr(dp_stages, "sample_discrete_gaussian", zeros)


# --- DP-SGD ----------------------------------------------------------------------------


@pytest.mark.parametrize("z", [1.0, 2.0])
def test_dp_sgd_audit_holds_with_the_real_noise(z: float) -> None:
    audit = dp_sgd_canary_audit(DPSettings(1.0, z, 1e-5))
    assert audit.claim == pytest.approx(DPSettings(1.0, z, 1e-5).epsilon(1, 1.0))
    assert audit.certifiable > audit.claim
    assert 0 < audit.lower_bound < audit.claim
    assert audit.verdict is CanaryVerdict.CONSISTENT
    assert audit.tpr < 1.0  # the noise really blurs the canary


@pytest.mark.usefixtures("dp_sgd_noise_off")
def test_dp_sgd_audit_refutes_the_claim_with_the_noise_off() -> None:
    audit = dp_sgd_canary_audit(DPSettings(1.0, 1.0, 1e-5))
    assert (audit.tpr, audit.fpr) == (1.0, 0.0)
    assert audit.lower_bound > audit.claim
    assert audit.verdict is CanaryVerdict.REFUTED


@pytest.mark.usefixtures("dp_sgd_noise_off")
def test_a_budget_too_small_is_inconclusive_even_with_the_noise_off() -> None:
    audit = dp_sgd_canary_audit(DPSettings(1.0, 1.0, 1e-5), trials=200)
    assert audit.certifiable < audit.claim
    assert (audit.tpr, audit.fpr) == (1.0, 0.0)  # a perfect attack, and still
    assert audit.lower_bound <= audit.claim
    assert audit.verdict is CanaryVerdict.INCONCLUSIVE


# --- client DP -------------------------------------------------------------------------


def test_client_dp_audit_holds_with_the_real_noise(aggregators: Aggregators) -> None:
    settings = DPSettings(1.0, 2.0, 1e-5)
    audit = client_dp_canary_audit(settings, aggregators, trials=SMALL_CLIENT_TRIALS)
    assert audit.certifiable > audit.claim
    assert audit.lower_bound < audit.claim
    assert audit.verdict is CanaryVerdict.CONSISTENT


@pytest.mark.usefixtures("client_dp_noise_off")
def test_client_dp_audit_refutes_the_claim_with_the_noise_off(aggregators: Aggregators) -> None:
    settings = DPSettings(1.0, 2.0, 1e-5)
    audit = client_dp_canary_audit(settings, aggregators, trials=SMALL_CLIENT_TRIALS)
    assert (audit.tpr, audit.fpr) == (1.0, 0.0)
    assert audit.lower_bound > audit.claim
    assert audit.verdict is CanaryVerdict.REFUTED


@pytest.mark.slow
@pytest.mark.parametrize("noise", ["on", "off"])
def test_client_dp_audit_at_the_quick_budget(
    noise: str, aggregators: Aggregators, monkeypatch: pytest.MonkeyPatch
) -> None:
    if noise == "off":
        monkeypatch.setattr(
            dp_stages,
            "sample_discrete_gaussian",
            lambda variance, count, rng: np.zeros(count, dtype=np.int64),
        )
    audit = client_dp_canary_audit(DPSettings(1.0, 1.0, 1e-5), aggregators)
    assert audit.certifiable > audit.claim
    if noise == "on":
        assert audit.lower_bound < audit.claim
        assert audit.verdict is CanaryVerdict.CONSISTENT
    else:
        assert audit.lower_bound > audit.claim
        assert audit.verdict is CanaryVerdict.REFUTED


def test_client_dp_claim_is_the_rounds_own_epsilon() -> None:
    settings = DPSettings(1.0, 1.0, 1e-5)
    claim = client_dp_claim(settings.client_dp_config(4, 3), settings.delta)
    # The distributed discrete Gaussian at this scale is the Gaussian to within rounding.
    assert claim == pytest.approx(settings.epsilon(1, 1.0), rel=1e-3)


# --- budgets and bounds ----------------------------------------------------------------


@pytest.mark.parametrize("z", [1.0, 2.0])
def test_the_quick_budgets_can_refute_the_claims_they_test(z: float) -> None:
    settings = DPSettings(1.0, z, 1e-5)
    claim = client_dp_claim(settings.client_dp_config(4, 3), settings.delta)
    assert certifiable_for(QUICK_DP_SGD_TRIALS, delta=1e-5, alpha=0.05) > settings.epsilon(1, 1.0)
    assert certifiable_for(QUICK_CLIENT_DP_TRIALS, delta=1e-5, alpha=0.05) > claim
    assert certifiable_for(200, delta=1e-5, alpha=0.05) < DPSettings(1.0, 1.0, 1e-5).epsilon()


def test_certifiable_grows_with_the_trials_and_shrinks_with_the_tests() -> None:
    small = certifiable_clopper_pearson(100, 100, delta=1e-5)
    assert certifiable_clopper_pearson(1000, 1000, delta=1e-5) > small
    assert certifiable_clopper_pearson(100, 100, tests=10, delta=1e-5) < small
    with pytest.raises(ConfigError):
        certifiable_clopper_pearson(0, 10, delta=1e-5)


def test_threshold_grid_pays_bonferroni_for_its_thresholds() -> None:
    labels = np.array([True] * 50 + [False] * 50)
    scores = labels.astype(float)
    result = threshold_grid_clopper_pearson(scores, labels, THRESHOLDS, delta=1e-5)
    expected = clopper_pearson_epsilon(50, 0, 0, 50, delta=1e-5, alpha=0.05 / len(THRESHOLDS))
    assert result.epsilon == pytest.approx(expected)
    assert result.threshold == THRESHOLDS[0]
    unseparated = threshold_grid_clopper_pearson(np.zeros(100), labels, THRESHOLDS, delta=1e-5)
    assert unseparated.epsilon == 0.0


def test_coins_are_fair_and_reproducible_only_with_a_seed() -> None:
    seed = bytes(range(32))
    coins = canary_coins(4000, seed)
    assert np.array_equal(coins, canary_coins(4000, seed))
    assert abs(coins.mean() - 0.5) < 0.05
    assert not np.array_equal(canary_coins(4000), canary_coins(4000))
    with pytest.raises(ConfigError):
        canary_coins(1)


def test_verdict_refutes_first_then_asks_whether_the_budget_could() -> None:
    def audit(lower: float, certifiable: float) -> CanaryAudit:
        return CanaryAudit("dp-sgd", 4.0, 1e-5, 0.05, lower, certifiable, 100, 0.5, 1, 0, 0, 1)

    assert audit(4.5, 4.2).verdict is CanaryVerdict.REFUTED
    assert audit(3.0, 4.2).verdict is CanaryVerdict.CONSISTENT
    assert audit(3.0, 3.5).verdict is CanaryVerdict.INCONCLUSIVE
    assert "inconclusive" in audit(3.0, 3.5).summary()
