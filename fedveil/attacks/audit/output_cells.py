"""Output cells (membership, extraction) from one released model's records.

Why one release: training a protection's model is most of the audit's time, so the
intervals come from the records themselves: each membership attack's bootstrap
intervals of AUC and TPR at 1% FPR, widened to the Bonferroni level of the attacks x
metrics the cell maximises over, and the largest empirical-epsilon lower bound of its
attacks, each bounded at alpha / k; extraction, Clopper-Pearson on the count of member
canaries emitted (with too few members even zero emitted cannot pass: the check says
inconclusive with the number of members it needs, confidence.trials_to_certify). The
utility floor (utility.py) is applied here too: every output cell shows what its model
learned.

Per-record risk: an AUC says how well an attack separates members from non-members on
average, not which records are exposed. When the released model's records carry each
canary's scores (`details.params["per_record"]`, see PER_RECORD_KEY), each membership
and extraction cell also lists the canaries ranked by the strongest attack's score
(membership) or by extraction and exposure (extraction), each with how many non-member
canaries (records the model never saw: the data-free reference) score below it, so a
team sees which of its records are most exposed (`ExposedDetails`, report.json
`cells[].details.exposed_records`; the report shows the top N).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields

from fedveil.attacks.audit.cells import Cell, CellDetails, Check
from fedveil.attacks.audit.confidence import (
    CONFIDENCE,
    clopper_pearson,
    corrected_level,
    trials_to_certify,
    widen,
)
from fedveil.attacks.audit.config import Thresholds
from fedveil.attacks.audit.utility import utility_of
from fedveil.attacks.families import Family
from fedveil.attacks.measure.records import JSONObject, JSONValue, OutputRecord

PER_RECORD_KEY = "per_record"
"""Where a released model's records carry each canary's scores, in OutputDetails.params:

    {"canaries": [{"text": str, "member": bool, "extracted": bool, "exposure": float}, ...],
     "scores": {attack name: [one float per canary, higher = more member-like], ...}}

in registry order (attacks.measure.output_leakage writes it next to the AUC it computes
from the same scores). Records without it (stored before it existed) list no records."""


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
        # exact: each attack's one-run lower bound is already a confidence bound, at
        # alpha / k over the k attacks maximised here (measure.output_leakage.
        # epsilon_verdicts), so the maximum holds at the family-wise level
        k = len(mine)
        check = Check(
            "epsilon_lower_bound", lower, claimed, lower <= claimed, level=corrected_level(k)
        )
        if certifiable is not None and certifiable <= claimed and check.passed:
            check.inconclusive = (
                f"{mine[0].details.n_canaries} canaries in one run certify at most "
                f"{certifiable:.3g} even for a perfect attack (the best of {k} attacks, "
                f"each bounded at alpha {(1 - CONFIDENCE) / k:.3g}), below the claimed "
                f"{claimed:.3g}: this check cannot refute the claim"
            )
        cell.checks.append(check)
    cell.details.strongest_attack = best_auc.attack
    cell.details.federation = best_auc.federation
    cell.details.roc = {r.attack: r.roc for r in mine if r.roc.fpr}
    cell.details.auc_ci = (best_auc.auc_low, best_auc.auc_high)
    cell.utility = utility_of(mine[0])
    ranked = membership_exposure(best_auc)
    if ranked is not None:
        attach_exposure(cell, ranked)


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
    check = Check(key, value, limit, value <= limit, ci_low=low, ci_high=high, level=CONFIDENCE)
    needed = trials_to_certify(limit) if 0 < limit < 1 else 0
    if check.passed and members < needed:
        zero_high = clopper_pearson(0, members, CONFIDENCE)[1]
        check.inconclusive = (
            f"{members} member canaries bound the rate at {zero_high:.3g} even when none is "
            f"extracted, above the threshold {limit:.3g}: this check cannot pass with fewer "
            f"than {needed} members (about {2 * needed} canaries, each planted by a fair "
            "coin; [target] canaries)"
        )
    cell.checks.append(check)
    cell.utility = utility_of(first)
    if not filtered:
        ranked = extraction_exposure(first)
        if ranked is not None:
            attach_exposure(cell, ranked)
    if filtered:
        if first.filter_fpr is not None:
            cell.metrics["filter_fpr"] = first.filter_fpr
        cell.metrics["extraction_rate"] = first.extraction_rate
        filters = first.details.filters
        if filters:
            cell.details.filters = dict(filters)


# --- per-record risk ----------------------------------------------------------------


@dataclass(frozen=True)
class Exposure:
    """A cell's records ranked most exposed first, and the reference they are read against.

    ranked_by: what orders them ("<attack> score", or "extracted, then exposure");
    records: {rank, text, member, score, extracted, exposure, above_non_members} each,
      above_non_members the share of non-member canaries scoring below this one (1.0:
      above every record the model never saw);
    baseline: the non-member canaries' scores (count, median, max) or rates.
    """

    ranked_by: str
    records: list[JSONObject]
    baseline: JSONObject

    def to_json(self, top: int | None = None) -> JSONObject:
        shown = self.records[:top] if top else self.records
        return {
            "ranked_by": self.ranked_by,
            "records_total": len(self.records),
            "records": list(shown),
            "baseline": self.baseline,
        }


@dataclass
class ExposedDetails(CellDetails):
    """CellDetails with the cell's per-record ranking (report.json: "exposed_records")."""

    exposure: Exposure | None = field(default=None)

    def to_json(self) -> JSONObject:
        out = super().to_json()
        if self.exposure is not None:
            out["exposed_records"] = self.exposure.to_json()
        return out


def attach_exposure(cell: Cell, exposure: Exposure) -> None:
    """Give `cell` its per-record ranking, keeping every detail it already holds."""
    kept = {f.name: getattr(cell.details, f.name) for f in fields(CellDetails)}
    cell.details = ExposedDetails(**kept, exposure=exposure)


def exposure_of(cell: Cell) -> Exposure | None:
    """The cell's per-record ranking, if it has one."""
    details = cell.details
    return details.exposure if isinstance(details, ExposedDetails) else None


def _per_record(record: OutputRecord) -> tuple[list[Mapping[str, JSONValue]], JSONObject] | None:
    data = record.details.params.get(PER_RECORD_KEY)
    if not isinstance(data, Mapping):
        return None
    canaries, scores = data.get("canaries"), data.get("scores")
    if not isinstance(canaries, list) or not isinstance(scores, Mapping):
        return None
    rows = [c for c in canaries if isinstance(c, Mapping)]
    if len(rows) != len(canaries) or not rows:
        return None
    return rows, dict(scores)


def _share_below(value: float, reference: Sequence[float]) -> float:
    return sum(r < value for r in reference) / len(reference) if reference else 0.0


def _row(rank: int, canary: Mapping[str, JSONValue], score: float | None) -> JSONObject:
    row: JSONObject = {
        "rank": rank,
        "text": str(canary.get("text", "")),
        "member": bool(canary.get("member")),
        "extracted": bool(canary.get("extracted")),
        "exposure": _number(canary.get("exposure")),
    }
    if score is not None:
        row["score"] = score
    return row


def _number(value: JSONValue | None) -> float:
    """A JSON number, or report.json's spelling of a non-finite one ("inf", "-inf")."""
    if isinstance(value, int | float):
        return float(value)
    if value in ("inf", "-inf", "nan"):
        return float(str(value))
    return float("nan")


def membership_exposure(record: OutputRecord) -> Exposure | None:
    """The canaries ranked by `record`'s attack score, most member-like first."""
    parsed = _per_record(record)
    if parsed is None:
        return None
    canaries, scores = parsed
    values = scores.get(record.attack)
    if not isinstance(values, list) or len(values) != len(canaries):
        return None
    numbers = [_number(v) for v in values]
    non_members = [v for v, c in zip(numbers, canaries, strict=True) if not c.get("member")]
    order = sorted(range(len(numbers)), key=lambda i: (-numbers[i], i))
    rows = []
    for rank, i in enumerate(order, start=1):
        row = _row(rank, canaries[i], numbers[i])
        row["above_non_members"] = _share_below(numbers[i], non_members)
        rows.append(row)
    ordered = sorted(non_members)
    baseline: JSONObject = {
        "non_members": len(non_members),
        "median": ordered[len(ordered) // 2] if ordered else float("nan"),
        "max": ordered[-1] if ordered else float("nan"),
    }
    return Exposure(f"{record.attack} score", rows, baseline)


def extraction_exposure(record: OutputRecord) -> Exposure | None:
    """The canaries ranked by greedy extraction, then by exposure (log2 rank gain)."""
    parsed = _per_record(record)
    if parsed is None:
        return None
    canaries, _ = parsed
    exposures = [_number(c.get("exposure")) for c in canaries]
    non_members = [e for e, c in zip(exposures, canaries, strict=True) if not c.get("member")]
    order = sorted(
        range(len(canaries)),
        key=lambda i: (not canaries[i].get("extracted"), -exposures[i], i),
    )
    rows = []
    for rank, i in enumerate(order, start=1):
        row = _row(rank, canaries[i], None)
        row["above_non_members"] = _share_below(exposures[i], non_members)
        rows.append(row)
    baseline: JSONObject = {
        "non_members": len(non_members),
        "extraction_rate_non_members": record.details.extraction_rate_non_members,
        "mean_exposure_non_members": record.details.mean_exposure_non_members,
    }
    return Exposure("extracted, then exposure", rows, baseline)


OUTPUT_CELLS: dict[Family, Callable[[Cell, list[OutputRecord], Thresholds], None]] = {
    Family.LIKELIHOOD: mia_cell,
    Family.GENERATION: mia_cell,
    Family.EXTRACTION: extraction_cell,
    Family.EXTRACTION_FILTERED: extraction_cell,
}
