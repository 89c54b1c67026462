"""Empirical epsilon bounds against hand computations, and the audit's verdict."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedveil.attacks.output.empirical_epsilon import (
    audit,
    best_clopper_pearson,
    best_one_run_audit,
    certifiable_epsilon,
    clopper_pearson,
    clopper_pearson_epsilon,
    group_privacy,
    one_run_audit,
    one_run_epsilon,
    one_run_p_value,
)
from fedveil.errors import ConfigError


def test_one_run_p_value_without_delta_is_a_binomial_tail() -> None:
    assert one_run_p_value(100, 10, 10, 0.0, 0.0) == pytest.approx(0.5**10)
    q = math.exp(1) / (1 + math.exp(1))
    assert one_run_p_value(50, 3, 2, 1.0, 0.0) == pytest.approx(3 * q**2 * (1 - q) + q**3)


def test_one_run_p_value_delta_term_by_hand() -> None:
    # m=4, r=2, v=2, eps=0: beta = P[Bin(2,1/2) >= 2] = 1/4; the max over i of
    # (P[Bin >= 2 - i] - beta) / i is max(0.5/1, 0.75/2) = 0.5; p = 1/4 + 2*4*0.01*0.5.
    assert one_run_p_value(4, 2, 2, 0.0, 0.01) == pytest.approx(0.29)


def test_one_run_epsilon_of_all_correct_guesses_by_hand() -> None:
    # delta = 0, v = r: p = q^r <= alpha  <=>  q >= alpha^(1/r); eps = logit(alpha^(1/r)).
    q = 0.05 ** (1 / 100)
    assert one_run_epsilon(100, 100, 100, delta=0.0) == pytest.approx(
        math.log(q / (1 - q)), abs=1e-4
    )
    assert one_run_epsilon(100, 100, 50, delta=0.0) == 0.0  # half right is chance


def test_perfect_guesses_give_a_bound_that_grows_with_m() -> None:
    bounds = []
    for m in (16, 64, 256, 1024):
        labels = np.arange(m) % 2 == 0
        scores = labels.astype(float)
        bounds.append(one_run_audit(scores, labels, k_pos=m // 2, k_neg=m // 2, delta=1e-5).epsilon)
    assert bounds[0] > 0
    assert all(a < b for a, b in zip(bounds, bounds[1:], strict=False))


def test_random_guesses_rarely_give_a_positive_bound() -> None:
    # Scores independent of the coins are a 0-DP "model": at 95% confidence, a positive
    # bound may occur in at most ~5% of runs. 40 runs: expect ~2, allow 6.
    positives = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        labels = rng.random(200) < 0.5
        result = best_one_run_audit(rng.normal(size=200), labels, delta=1e-5)
        positives += result.epsilon > 0
    assert positives <= 6


def test_clopper_pearson_interval_by_hand() -> None:
    assert clopper_pearson(0, 10, 0.05) == pytest.approx((0.0, 1 - 0.05 ** (1 / 10)))
    assert clopper_pearson(10, 10, 0.05) == pytest.approx((0.05 ** (1 / 10), 1.0))
    low, high = clopper_pearson(5, 10, 0.05)
    assert low < 0.5 < high


def test_clopper_pearson_epsilon_by_hand() -> None:
    # 10/10 members and 0/10 non-members flagged; each rate bounded at alpha/2 = 0.025:
    # TPR_low = 0.025^(1/10), FPR_high = 1 - 0.025^(1/10).
    t = 0.025 ** (1 / 10)
    assert clopper_pearson_epsilon(10, 0, 0, 10, delta=0.0) == pytest.approx(math.log(t / (1 - t)))
    assert clopper_pearson_epsilon(5, 5, 5, 5, delta=0.0) == 0.0
    # delta eats into the TPR: with delta >= TPR_low nothing is left
    assert clopper_pearson_epsilon(10, 0, 0, 10, delta=0.9) == 0.0


def test_threshold_search_pays_for_looking() -> None:
    labels = np.arange(100) % 2 == 0
    scores = labels.astype(float) + np.arange(100) * 1e-3  # separable, 100 thresholds
    searched = best_clopper_pearson(scores, labels, delta=0.0)
    single = clopper_pearson_epsilon(50, 0, 0, 50, delta=0.0)
    assert 0 < searched.epsilon < single  # Bonferroni over the thresholds costs something
    assert (searched.tp, searched.fp) == (50, 0)


def test_audit_verdict_both_ways() -> None:
    labels = np.arange(512) % 2 == 0
    perfect = labels.astype(float)
    refuted = audit(perfect, labels, epsilon_claimed=0.5, delta=1e-5)
    assert refuted.epsilon_lower_bound > 0.5
    assert not refuted.passed and "FAIL" in refuted.summary()
    rng = np.random.default_rng(3)
    upheld = audit(rng.normal(size=512), labels, epsilon_claimed=1.0, delta=1e-5)
    assert upheld.passed and "PASS" in upheld.summary()
    assert audit(perfect, labels, epsilon_claimed=math.inf, delta=1e-5).passed


def test_group_privacy_and_validation() -> None:
    assert group_privacy(1.0, 1e-6, 1) == (1.0, 1e-6)
    eps, delta = group_privacy(1.0, 1e-6, 3)
    assert eps == 3.0 and delta == pytest.approx(3 * math.exp(2) * 1e-6)
    with pytest.raises(ConfigError):
        one_run_epsilon(10, 5, 6, delta=0.0)
    with pytest.raises(ConfigError):
        one_run_epsilon(10, 5, 5, delta=0.0, alpha=1.5)
    with pytest.raises(ConfigError):
        one_run_audit([1.0, 0.0], [True, False], k_pos=0, k_neg=0, delta=0.0)
    with pytest.raises(ConfigError):
        audit([1.0, 0.0], [True, False], epsilon_claimed=-1.0, delta=1e-5)


def test_certifiable_epsilon_is_the_perfect_attacks_bound() -> None:
    # The figures the audit's epsilon checks rest on: 48 canaries certify at most ~1.71,
    # 128 at most ~3.09 (delta 1e-5, 95%, the default grid's Bonferroni correction).
    assert certifiable_epsilon(48, delta=1e-5) == pytest.approx(1.709, abs=2e-3)
    assert certifiable_epsilon(128, delta=1e-5) == pytest.approx(3.086, abs=2e-3)
    labels = np.arange(128) % 2 == 0
    perfect = best_one_run_audit(labels.astype(float), labels, delta=1e-5)
    assert perfect.epsilon == pytest.approx(certifiable_epsilon(128, delta=1e-5), abs=1e-6)


def test_a_claim_above_what_the_canaries_can_certify_is_inconclusive() -> None:
    labels = np.arange(48) % 2 == 0
    perfect = labels.astype(float)  # the strongest possible attack, noise switched off
    false_claim = audit(perfect, labels, epsilon_claimed=7.5, delta=1e-5)
    # Even a perfect attack cannot refute 7.5 with 48 canaries: not a pass, inconclusive.
    assert false_claim.passed and not false_claim.conclusive
    assert "INCONCLUSIVE" in false_claim.summary() and "PASS" not in false_claim.summary()
    small_claim = audit(perfect, labels, epsilon_claimed=1.0, delta=1e-5)
    assert small_claim.conclusive and not small_claim.passed  # refuted: it could be
