"""Membership metrics against hand computations: AUC, TPR at low FPR, bootstrap, exposure."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedveil.attacks.output.metrics import (
    BootstrapConfig,
    exposure_exact,
    exposure_sampled,
    mia_metrics,
    roc_auc,
    roc_curve,
    scores_by_label,
    tpr_at_fpr,
)
from fedveil.errors import ConfigError


def test_auc_hand_computed() -> None:
    # pairs: 0.9 beats both, 0.8 beats both, 0.3 beats 0.2 only -> 5 of 6
    assert roc_auc([0.9, 0.8, 0.3], [0.7, 0.2]) == pytest.approx(5 / 6)
    assert roc_auc([3, 4], [1, 2]) == 1.0
    assert roc_auc([1, 2], [3, 4]) == 0.0


def test_auc_counts_ties_as_half() -> None:
    # (1 vs 1) = 1/2 twice, (1 vs 0) = 1 twice -> 3 of 4
    assert roc_auc([1, 1], [1, 0]) == pytest.approx(0.75)
    assert roc_auc([5, 5, 5], [5, 5]) == pytest.approx(0.5)


def test_tpr_at_fpr_takes_no_more_false_positives_than_allowed() -> None:
    members, others = [5, 4, 3, 2], [4.5, 1, 0, -1]
    # No false positive allowed: threshold at 4.5, only the 5 is above it.
    assert tpr_at_fpr(members, others, 0.0) == 0.25
    assert tpr_at_fpr(members, others, 0.01) == 0.25  # 1% of 4 non-members is 0
    # One false positive allowed (25%): threshold at 1, every member is above it.
    assert tpr_at_fpr(members, others, 0.25) == 1.0
    assert tpr_at_fpr(members, others, 1.0) == 1.0


def test_tpr_at_fpr_counts_member_ties_with_the_threshold_as_negatives() -> None:
    assert tpr_at_fpr([2, 2, 3], [2, 0], 0.0) == pytest.approx(1 / 3)


def test_roc_curve_runs_from_origin_to_one_one() -> None:
    fpr, tpr = roc_curve([0.9, 0.4], [0.5, 0.1])
    assert (fpr[0], tpr[0]) == (0.0, 0.0)
    assert (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)


def test_metrics_intervals_bracket_the_estimate_both_ways() -> None:
    rng = np.random.default_rng(0)
    separated = mia_metrics(rng.normal(3, 1, 200), rng.normal(0, 1, 200), BootstrapConfig(200))
    assert separated.auc.low <= separated.auc.value <= separated.auc.high
    assert separated.auc.low > 0.9
    chance = mia_metrics(rng.normal(0, 1, 200), rng.normal(0, 1, 200), BootstrapConfig(200))
    assert chance.auc.low < 0.5 < chance.auc.high
    assert chance.tpr_at_1pct_fpr.value < 0.2
    assert separated.tpr_at_1pct_fpr.value > 0.5
    assert separated.min_fpr == pytest.approx(1 / 200)
    row = separated.to_dict()
    assert row["auc"] == separated.auc.value and row["auc_low"] == separated.auc.low


def test_scores_by_label_and_input_validation() -> None:
    members, others = scores_by_label([1.0, 2.0, 3.0], [True, False, True])
    assert members.tolist() == [1.0, 3.0] and others.tolist() == [2.0]
    with pytest.raises(ConfigError):
        roc_auc([], [1.0])
    with pytest.raises(ConfigError):
        roc_auc([float("nan")], [1.0])
    with pytest.raises(ConfigError):
        tpr_at_fpr([1.0], [0.0], 1.5)
    with pytest.raises(ConfigError):
        BootstrapConfig(n_resamples=1)


# --- exposure --------------------------------------------------------------------------


def test_exposure_exact_on_a_toy_space() -> None:
    # |R| = 16 values with likelihood -index: the most likely has rank 1.
    scores = -np.arange(16.0)
    top = exposure_exact(scores[0], scores[1:])
    assert top.rank == 1 and top.exposure == pytest.approx(4.0)
    bottom = exposure_exact(scores[15], scores[:15])
    assert bottom.rank == 16 and bottom.exposure == pytest.approx(0.0)
    middle = exposure_exact(scores[3], np.delete(scores, 3))
    assert middle.exposure == pytest.approx(4 - math.log2(4))
    tied = exposure_exact(0.0, [0.0, -1.0, -2.0])  # one tie: mid-rank 1.5
    assert tied.rank == pytest.approx(1.5)


def test_exposure_sampled_estimates_the_rank_of_a_known_distribution() -> None:
    # Candidates' scores are U(0, 1), so a secret scoring s has a true fraction 1 - s above.
    rng = np.random.default_rng(1)
    log2_space = 30.0
    samples = rng.random(20_000)
    est = exposure_sampled(0.99, samples, log2_space)
    truth = log2_space - math.log2(1 + (2**log2_space - 1) * 0.01)
    assert est.exposure == pytest.approx(truth, abs=0.2)
    assert est.exposure_low <= est.exposure
    # A secret above every sample: the point estimate says rank 1, the bound only about
    # log2(n / 3) bits -- the resolution n samples buy.
    top = exposure_sampled(2.0, samples, log2_space)
    assert top.exposure == pytest.approx(log2_space)
    assert top.exposure_low < math.log2(samples.size)


def test_exposure_extrapolation_follows_a_normal_tail() -> None:
    rng = np.random.default_rng(2)
    samples = rng.normal(0, 1, 4000)
    est = exposure_sampled(5.0, samples, 40.0)
    # P[N(0,1) > 5] = 2.87e-7 -> 21.7 bits; the skew-normal fit should land near it.
    assert est.extrapolated == pytest.approx(21.7, abs=2.5)
    with pytest.raises(ConfigError):
        exposure_sampled(0.0, [1.0], 10.0)
