"""A membership cell's empirical-epsilon check takes the best of k attacks' lower bounds:
uncorrected, that maximum refutes a true claim more often than alpha; with each attack
bounded at alpha / k (measure.output_leakage.epsilon_verdicts) it stays within alpha.

The null is exact: the scores are drawn independently of the canaries' coins, so the
"mechanism" is 0-DP and any lower bound above 0 is a false refutation. The draws are the
test's simulation (seeded for a reproducible rate), not a privacy claim."""

from __future__ import annotations

import numpy as np
import pytest

from fedveil.attacks.audit.cells import Cell
from fedveil.attacks.audit.confidence import MULTIPLICITY, corrected_level
from fedveil.attacks.audit.config import Thresholds
from fedveil.attacks.audit.output_cells import mia_cell
from fedveil.attacks.families import Family
from fedveil.attacks.measure.output_leakage import EPSILON_ALPHA, epsilon_verdicts
from fedveil.attacks.measure.records import OutputDetails, OutputRecord, Roc
from fedveil.attacks.output.empirical_epsilon import (
    best_clopper_pearson,
    certifiable_epsilon,
    clopper_pearson,
    clopper_pearson_epsilon,
)
from fedveil.attacks.protections import Protection

CANARIES = 48  # the quick profile's text canaries
ATTACKS = 7  # the likelihood family with reference models (5 base-model attacks + RMIA + LiRA)
DRAWS = 300
CLAIM = 0.0  # true under the null: the scores carry nothing about the coins
DELTA = 1e-5


def _null_maxima(corrected: bool) -> np.ndarray:
    """Over DRAWS null draws: the largest one-run bound of ATTACKS uninformative attacks,
    each audited at alpha / ATTACKS (corrected) or at alpha (each in its own family)."""
    rng = np.random.default_rng(20261203)
    maxima = np.empty(DRAWS)
    for i in range(DRAWS):
        labels = rng.random(CANARIES) < 0.5
        if labels.all() or not labels.any():
            labels[0] = not labels[0]
        scores = {f"attack{j}": rng.standard_normal(CANARIES) for j in range(ATTACKS)}
        families = {name: ("likelihood" if corrected else name) for name in scores}
        verdicts = epsilon_verdicts(scores, families, labels, epsilon_claimed=CLAIM, delta=DELTA)
        maxima[i] = max(v.epsilon_lower_bound for v in verdicts.values())
    return maxima


@pytest.fixture(scope="module")
def uncorrected() -> np.ndarray:
    return _null_maxima(corrected=False)


@pytest.fixture(scope="module")
def corrected() -> np.ndarray:
    return _null_maxima(corrected=True)


def test_the_uncorrected_maximum_refutes_a_true_claim_more_often_than_alpha(
    uncorrected: np.ndarray,
) -> None:
    false_refutations = int((uncorrected > CLAIM).sum())
    low, _ = clopper_pearson(false_refutations, DRAWS, 0.05)  # one-sided 95% lower bound
    assert low > EPSILON_ALPHA, f"{false_refutations}/{DRAWS} false refutations"


def test_the_corrected_maximum_stays_within_alpha(corrected: np.ndarray) -> None:
    false_refutations = int((corrected > CLAIM).sum())
    assert false_refutations / DRAWS <= EPSILON_ALPHA, f"{false_refutations}/{DRAWS}"


def test_the_correction_divides_alpha_by_the_attacks_of_each_family() -> None:
    rng = np.random.default_rng(1)
    labels = np.arange(CANARIES) % 2 == 0
    scores = {name: rng.standard_normal(CANARIES) for name in ("a", "b", "c", "samia")}
    families = {"a": "likelihood", "b": "likelihood", "c": "likelihood", "samia": "generation"}
    verdicts = epsilon_verdicts(scores, families, labels, epsilon_claimed=4.0, delta=DELTA)
    assert verdicts["a"].alpha == pytest.approx(EPSILON_ALPHA / 3)
    assert verdicts["samia"].alpha == pytest.approx(EPSILON_ALPHA)
    # the certifiable bound is computed at the same corrected level: lower with more attacks
    assert verdicts["a"].certifiable == pytest.approx(
        certifiable_epsilon(CANARIES, delta=DELTA, alpha=EPSILON_ALPHA / 3)
    )
    assert verdicts["a"].certifiable < verdicts["samia"].certifiable


def _record(attack: str, lower: float, certifiable: float, claim: float) -> OutputRecord:
    details = OutputDetails(
        n_canaries=CANARIES,
        n_members=24,
        delta=DELTA,
        mean_exposure_members=0.0,
        mean_exposure_non_members=0.0,
        exposure_log2_space=[],
        heldout_loss=2.0,
        base_heldout_loss=2.5,
        train_loss=1.0,
        extraction_rate_non_members=0.0,
    )
    return OutputRecord(
        protection=Protection.DP_SGD.value,
        attack=attack,
        attack_family=Family.LIKELIHOOD.value,
        auc=0.5,
        auc_low=0.4,
        auc_high=0.6,
        tpr_at_1pct_fpr=0.0,
        tpr_at_1pct_fpr_low=0.0,
        tpr_at_1pct_fpr_high=0.1,
        tpr_at_01pct_fpr=0.0,
        tpr_at_01pct_fpr_low=0.0,
        tpr_at_01pct_fpr_high=0.1,
        min_fpr=1 / 24,
        epsilon_claimed=claim,
        epsilon_lower_bound=lower,
        epsilon_lower_bound_cp=0.0,
        audit_passed=lower <= claim,
        extraction_rate=0.0,
        extraction_rate_filtered=None,
        filter_fpr=None,
        seconds=0.0,
        train_seconds=0.0,
        roc=Roc([], []),
        details=details,
        epsilon_certifiable=certifiable,
    )


def test_the_cell_states_its_k_and_the_level_of_its_epsilon_check() -> None:
    records = [_record(f"a{i}", 0.1 * i, 1.5, 6.6) for i in range(ATTACKS)]
    cell = Cell(Protection.DP_SGD, Family.LIKELIHOOD, claimed=True)
    mia_cell(cell, records, Thresholds())
    (check,) = [c for c in cell.checks if c.metric == "epsilon_lower_bound"]
    assert check.value == pytest.approx(0.1 * (ATTACKS - 1))
    assert check.level == pytest.approx(corrected_level(ATTACKS))
    assert check.inconclusive is not None and f"best of {ATTACKS} attacks" in check.inconclusive
    assert "alpha / k" in MULTIPLICITY


@pytest.mark.parametrize("delta", [0.0, DELTA, 0.1])
def test_the_vectorised_threshold_search_matches_each_thresholds_own_bound(delta: float) -> None:
    """best_clopper_pearson (one array pass, which makes the simulations above cheap) is
    the best of clopper_pearson_epsilon over every observed threshold at alpha / count."""
    rng = np.random.default_rng(7)
    for shift in (0.0, 1.0, 4.0):
        labels = np.arange(60) % 3 == 0
        scores = np.round(rng.standard_normal(60) + shift * labels, 1)
        thresholds = np.unique(scores)
        expected = max(
            clopper_pearson_epsilon(
                int((scores[labels] >= t).sum()),
                int((scores[labels] < t).sum()),
                int((scores[~labels] >= t).sum()),
                int((scores[~labels] < t).sum()),
                delta=delta,
                alpha=EPSILON_ALPHA / thresholds.size,
            )
            for t in thresholds
        )
        got = best_clopper_pearson(scores, labels, delta=delta, alpha=EPSILON_ALPHA)
        assert got.epsilon == pytest.approx(expected, abs=1e-12)
        if expected > 0:
            assert got.tp + got.fn == int(labels.sum())
