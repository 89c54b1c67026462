"""An extraction cell is judged on the Clopper-Pearson high end of the share of member
canaries emitted: with too few members even zero emitted cannot pass. The cell says so
with the number it needs, and the shipped audit.toml plants enough for its threshold."""

from __future__ import annotations

import pytest

from fedveil.attacks.audit.cells import INCONCLUSIVE, PASS, Cell
from fedveil.attacks.audit.confidence import CONFIDENCE, clopper_pearson, trials_to_certify
from fedveil.attacks.audit.config import Thresholds
from fedveil.attacks.audit.output_cells import extraction_cell
from fedveil.attacks.families import Family
from fedveil.attacks.measure.records import OutputDetails, OutputRecord, Roc
from fedveil.attacks.protections import Protection


def _record(members: int, extracted: int) -> OutputRecord:
    details = OutputDetails(
        n_canaries=2 * members,
        n_members=members,
        delta=1e-5,
        mean_exposure_members=0.0,
        mean_exposure_non_members=0.0,
        exposure_log2_space=[],
        heldout_loss=2.0,
        base_heldout_loss=2.5,
        train_loss=1.0,
        extraction_rate_non_members=0.0,
    )
    rate = extracted / members
    return OutputRecord(
        protection=Protection.DP_SGD.value,
        attack="loss",
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
        min_fpr=1 / members,
        epsilon_claimed=6.6,
        epsilon_lower_bound=0.0,
        epsilon_lower_bound_cp=0.0,
        audit_passed=True,
        extraction_rate=rate,
        extraction_rate_filtered=rate,
        filter_fpr=0.0,
        seconds=0.0,
        train_seconds=0.0,
        roc=Roc([], []),
        details=details,
    )


def _judged(members: int, extracted: int, threshold: float = 0.05) -> Cell:
    cell = Cell(Protection.DP_SGD, Family.EXTRACTION, claimed=True)
    extraction_cell(cell, [_record(members, extracted)], Thresholds(max_extraction_rate=threshold))
    return cell


@pytest.mark.parametrize("threshold", [0.02, 0.05, 0.1, 0.3])
def test_trials_to_certify_is_the_fewest_members_zero_of_which_passes(threshold: float) -> None:
    need = trials_to_certify(threshold)
    assert clopper_pearson(0, need, CONFIDENCE)[1] <= threshold
    assert clopper_pearson(0, need - 1, CONFIDENCE)[1] > threshold


def test_the_quick_default_of_25_members_cannot_pass_and_says_why() -> None:
    (check,) = _judged(25, 0).checks
    assert check.value == 0.0 and check.ci_high is not None and check.ci_high > 0.05
    assert check.outcome == INCONCLUSIVE
    assert check.inconclusive is not None
    assert f"fewer than {trials_to_certify(0.05)} members" in check.inconclusive


def test_enough_members_with_none_extracted_pass() -> None:
    need = trials_to_certify(0.05)
    (check,) = _judged(need, 0).checks
    assert check.outcome == PASS and check.inconclusive is None


def test_enough_members_still_breach_when_the_model_emits_them() -> None:
    need = trials_to_certify(0.05)
    (check,) = _judged(need, need // 2).checks
    assert check.ci_low is not None and check.ci_low > 0.05
    assert check.leaked and check.inconclusive is None


def test_one_extraction_of_the_minimum_is_a_straddle_not_a_budget_problem() -> None:
    (check,) = _judged(trials_to_certify(0.05), 1).checks
    assert check.outcome == INCONCLUSIVE and check.inconclusive is None
