"""Output cells (membership, extraction) from one released model's records.

Why one release: training a protection's model is most of the audit's time, so the
intervals come from the records themselves: each membership attack's bootstrap
intervals of AUC and TPR at 1% FPR, widened to the Bonferroni level of the attacks x
metrics the cell maximises over; extraction, Clopper-Pearson on the count of member
canaries emitted. The utility floor (utility.py) is applied here too: every output
cell shows what its model learned.
"""

from __future__ import annotations

from collections.abc import Callable

from fedveil.attacks.audit.cells import Cell, Check
from fedveil.attacks.audit.confidence import (
    CONFIDENCE,
    clopper_pearson,
    corrected_level,
    widen,
)
from fedveil.attacks.audit.config import Thresholds
from fedveil.attacks.audit.utility import utility_of
from fedveil.attacks.families import Family
from fedveil.attacks.measure.records import OutputRecord


def _maximum_check(
    metric: str,
    records: list[OutputRecord],
    threshold: float,
    baseline: float,
    level: float,
) -> Check:
    """The strongest attack's `metric` against `threshold`, with the interval of the
    maximum over the attacks at `level`."""
    values = [float(getattr(r, metric)) for r in records]
    intervals = [
        widen(v, getattr(r, f"{metric}_low"), getattr(r, f"{metric}_high"), level)
        for v, r in zip(values, records, strict=True)
    ]
    value = max(values)
    return Check(
        metric,
        value,
        threshold,
        value <= threshold,
        baseline,
        ci_low=max(low for low, _ in intervals),
        ci_high=max(high for _, high in intervals),
        level=level,
    )


def mia_cell(cell: Cell, records: list[OutputRecord], t: Thresholds) -> None:
    family = cell.attack
    mine = [r for r in records if r.attack_family == family]
    if not mine:
        return
    cell.comparisons = 2 * len(mine)  # AUC and TPR of every attack
    level = corrected_level(cell.comparisons)
    best_auc = max(mine, key=lambda r: r.auc)
    cell.metrics.update(
        auc=best_auc.auc,
        tpr_at_1pct_fpr=max(r.tpr_at_1pct_fpr for r in mine),
        tpr_at_01pct_fpr=max(r.tpr_at_01pct_fpr for r in mine),
    )
    cell.baselines.update(auc=0.5, tpr_at_1pct_fpr=0.01)
    cell.checks.append(_maximum_check("auc", mine, t.max_auc, 0.5, level))
    cell.checks.append(_maximum_check("tpr_at_1pct_fpr", mine, t.max_tpr_at_1pct_fpr, 0.01, level))
    claimed = mine[0].epsilon_claimed
    lower = max(r.epsilon_lower_bound for r in mine)
    cell.metrics.update(epsilon_claimed=claimed, epsilon_lower_bound=lower)
    certifiable = mine[0].epsilon_certifiable
    if certifiable is not None:
        cell.metrics["epsilon_certifiable"] = certifiable
    if t.empirical_epsilon_within_claimed:
        # exact: the one-run lower bound is already a confidence bound
        check = Check("epsilon_lower_bound", lower, claimed, lower <= claimed)
        if certifiable is not None and certifiable <= claimed and check.passed:
            check.inconclusive = (
                f"{mine[0].details.n_canaries} canaries in one run certify at most "
                f"{certifiable:.3g} even for a perfect attack, below the claimed "
                f"{claimed:.3g}: this check cannot refute the claim"
            )
        cell.checks.append(check)
    cell.details.strongest_attack = best_auc.attack
    cell.details.federation = best_auc.federation
    cell.details.roc = {r.attack: r.roc for r in mine if r.roc.fpr}
    cell.details.auc_ci = (best_auc.auc_low, best_auc.auc_high)
    cell.utility = utility_of(mine[0])


def extraction_cell(cell: Cell, records: list[OutputRecord], t: Thresholds) -> None:
    if not records:
        return
    first = records[0]
    filtered = cell.attack is Family.EXTRACTION_FILTERED
    key = "extraction_rate_filtered" if filtered else "extraction_rate"
    value = first.extraction_rate_filtered if filtered else first.extraction_rate
    if value is None:  # the filters were not measured: nothing to judge this cell on
        return
    cell.comparisons = 1
    members = first.details.n_members
    low, high = clopper_pearson(round(value * members), members, CONFIDENCE)
    cell.metrics[key] = value
    cell.baselines[key] = 0.0
    limit = t.max_extraction_rate
    cell.checks.append(
        Check(key, value, limit, value <= limit, ci_low=low, ci_high=high, level=CONFIDENCE)
    )
    cell.utility = utility_of(first)
    if filtered:
        if first.filter_fpr is not None:
            cell.metrics["filter_fpr"] = first.filter_fpr
        cell.metrics["extraction_rate"] = first.extraction_rate
        filters = first.details.filters
        if filters:
            cell.details.filters = dict(filters)


OUTPUT_CELLS: dict[Family, Callable[[Cell, list[OutputRecord], Thresholds], None]] = {
    Family.LIKELIHOOD: mia_cell,
    Family.GENERATION: mia_cell,
    Family.EXTRACTION: extraction_cell,
    Family.EXTRACTION_FILTERED: extraction_cell,
}
