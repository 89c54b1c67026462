"""Records -> cells: each cell's headline metrics, baselines and threshold checks.

Why "the strongest attack": a cell is as leaky as the best attack run on it, so each
metric is the maximum over the records of that cell (every attack, target and cohort
the suite ran), with the baseline of the record that reached it. Claimed cells pass or
breach; unclaimed cells are labelled "leaks" (expected, e.g. a plain update) or
"no leak measured", never a breach.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from fedveil.attacks.audit.config import AuditConfig, Thresholds
from fedveil.attacks.audit.matrix import check_attack
from fedveil.attacks.families import Family
from fedveil.attacks.measure.records import (
    FederationInfo,
    JobResult,
    JSONObject,
    LeakRecord,
    OutputRecord,
    Roc,
    finite_json,
)
from fedveil.attacks.protections import Protection, parse_protection

PASS, BREACH, LEAKS, CLEAN, NOT_RUN = "pass", "breach", "leaks", "no leak measured", "not run"


@dataclass
class Check:
    """One metric of a cell against its threshold. inconclusive (with why): the check
    could not have failed here (e.g. an epsilon claim above what the canaries can ever
    certify); it is reported as such, never as evidence that the protection held."""

    metric: str
    value: float
    threshold: float
    passed: bool
    baseline: float | None = None
    inconclusive: str | None = None

    def to_dict(self) -> JSONObject:
        out: JSONObject = {
            "metric": self.metric,
            "value": _finite(self.value),
            "threshold": _finite(self.threshold),
            "baseline": None if self.baseline is None else _finite(self.baseline),
            "passed": self.passed,
        }
        if self.inconclusive is not None:
            out["verdict"] = "inconclusive"
            out["why"] = self.inconclusive
        return out


@dataclass
class StrongestRun:
    """Which run reached a cell's headline metric (an update attack's record)."""

    target: str
    n_clients: int
    params: JSONObject

    def to_json(self) -> JSONObject:
        return {"target": self.target, "n_clients": self.n_clients, "params": self.params}


@dataclass
class CellDetails:
    """What a cell's metrics came from, by cell kind (None: not part of this cell).

    Update cells: strongest (per metric, the run that reached it), figures
    (the inversion column's reconstruction PNGs). Membership cells: strongest_attack,
    federation (None outside the audit), roc (per attack), auc_ci. Filtered extraction:
    filters (per stack). Any cell: why (a job ran but measured nothing), error (a job
    failed).
    """

    strongest: dict[str, StrongestRun] | None = None
    figures: list[str] | None = None
    strongest_attack: str | None = None
    federation: FederationInfo | None = None
    roc: dict[str, Roc] | None = None
    auc_ci: tuple[float, float] | None = None
    filters: JSONObject | None = None
    why: str | None = None
    error: str | None = None

    def to_json(self) -> JSONObject:
        out: JSONObject = {}
        if self.strongest is not None:
            out["strongest"] = {m: r.to_json() for m, r in self.strongest.items()}
        if self.figures is not None:
            out["figures"] = list(self.figures)
        if self.strongest_attack is not None:  # a membership cell: all four, federation too
            out["strongest_attack"] = self.strongest_attack
            out["federation"] = None if self.federation is None else self.federation.to_json()
            out["roc"] = {a: r.to_json() for a, r in (self.roc or {}).items()}
            out["auc_ci"] = None if self.auc_ci is None else list(self.auc_ci)
        if self.filters is not None:
            out["filters"] = self.filters
        if self.why is not None:
            out["why"] = self.why
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass
class Cell:
    protection: Protection
    attack: Family
    claimed: bool
    status: str = NOT_RUN
    metrics: dict[str, float] = field(default_factory=dict)
    baselines: dict[str, float] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    details: CellDetails = field(default_factory=CellDetails)
    seconds: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.protection}/{self.attack}"

    def breaches(self) -> list[Check]:
        return [c for c in self.checks if not c.passed] if self.claimed else []

    def to_dict(self) -> JSONObject:
        return {
            "protection": self.protection.value,
            "attack": self.attack.value,
            "claimed_protected": self.claimed,
            "status": self.status,
            "metrics": {k: _finite(v) for k, v in self.metrics.items()},
            "baselines": {k: _finite(v) for k, v in self.baselines.items()},
            "checks": [c.to_dict() for c in self.checks],
            "seconds": round(self.seconds, 3),
            "details": self.details.to_json(),
        }


def _finite(x: float) -> float | str:
    return finite_json(round(float(x), 6))


def _strongest(records: Iterable[LeakRecord], metric: str) -> tuple[float, LeakRecord] | None:
    """(value - baseline, record) of the record with the largest excess."""
    best: tuple[float, LeakRecord] | None = None
    for r in records:
        if r.metric != metric:
            continue
        if best is None or r.value - r.baseline_value > best[0]:
            best = (r.value - r.baseline_value, r)
    return best


def _over_baseline(cell: Cell, records: list[LeakRecord], metric: str, limit: float) -> None:
    found = _strongest(records, metric)
    if found is None:
        return
    excess, record = found
    cell.metrics[metric] = record.value
    cell.baselines[metric] = record.baseline_value
    cell.checks.append(
        Check(f"{metric}_over_baseline", excess, limit, excess <= limit, record.baseline_value)
    )
    if cell.details.strongest is None:
        cell.details.strongest = {}
    cell.details.strongest[metric] = StrongestRun(
        record.target, record.n_clients, dict(record.params)
    )


def _update_cell(cell: Cell, records: list[LeakRecord], t: Thresholds) -> None:
    if cell.attack is Family.INVERSION:
        _over_baseline(cell, records, "psnr", t.max_psnr_over_baseline_db)
        _over_baseline(cell, records, "ssim", t.max_ssim_over_baseline)
        figures = {r.figure for r in records if r.metric == "psnr"}
        cell.details.figures = sorted(f for f in figures if f)
    elif cell.attack is Family.LABELS:
        # who had which label; the cohort's label counts are the aggregate's own content
        _over_baseline(cell, records, "label_attribution_acc", t.max_label_acc_over_chance)
        multiset = _strongest(records, "label_multiset_acc")
        if multiset is not None:  # reported, not judged: the aggregate's own content
            cell.metrics["label_multiset_acc"] = multiset[1].value
    elif cell.attack is Family.TEXT:
        _over_baseline(cell, records, "token_f1", t.max_token_f1_over_baseline)
        best = _strongest(records, "token_f1")
        if best is not None:  # precision, recall, exact sequences of that same attack run
            run = best[1].run_key()
            wanted = ("token_precision", "token_recall", "exact_seq")
            for r in records:
                if r.metric in wanted and r.run_key() == run:
                    cell.metrics[r.metric] = r.value
                    cell.baselines[r.metric] = r.baseline_value


def _mia_cell(cell: Cell, records: list[OutputRecord], t: Thresholds) -> None:
    family = cell.attack
    mine = [r for r in records if r.attack_family == family]
    if not mine:
        return
    best_auc = max(mine, key=lambda r: r.auc)
    best_tpr = max(mine, key=lambda r: r.tpr_at_1pct_fpr)
    auc, tpr = best_auc.auc, best_tpr.tpr_at_1pct_fpr
    cell.metrics.update(
        auc=auc,
        tpr_at_1pct_fpr=tpr,
        tpr_at_01pct_fpr=max(r.tpr_at_01pct_fpr for r in mine),
    )
    cell.baselines.update(auc=0.5, tpr_at_1pct_fpr=0.01)
    cell.checks.append(Check("auc", auc, t.max_auc, auc <= t.max_auc, 0.5))
    cell.checks.append(
        Check("tpr_at_1pct_fpr", tpr, t.max_tpr_at_1pct_fpr, tpr <= t.max_tpr_at_1pct_fpr, 0.01)
    )
    claimed = mine[0].epsilon_claimed
    lower = max(r.epsilon_lower_bound for r in mine)
    cell.metrics.update(epsilon_claimed=claimed, epsilon_lower_bound=lower)
    certifiable = mine[0].epsilon_certifiable
    if certifiable is not None:
        cell.metrics["epsilon_certifiable"] = certifiable
    if t.empirical_epsilon_within_claimed:
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


def _extraction_cell(cell: Cell, records: list[OutputRecord], t: Thresholds) -> None:
    if not records:
        return
    first = records[0]
    filtered = cell.attack is Family.EXTRACTION_FILTERED
    key = "extraction_rate_filtered" if filtered else "extraction_rate"
    value = first.extraction_rate_filtered if filtered else first.extraction_rate
    if value is None:  # the filters were not measured: nothing to judge this cell on
        return
    cell.metrics[key] = value
    cell.baselines[key] = 0.0
    cell.checks.append(Check(key, value, t.max_extraction_rate, value <= t.max_extraction_rate))
    if filtered:
        if first.filter_fpr is not None:
            cell.metrics["filter_fpr"] = first.filter_fpr
        cell.metrics["extraction_rate"] = first.extraction_rate
        filters = first.details.filters
        if filters:
            cell.details.filters = dict(filters)


_OUTPUT: dict[Family, Callable[[Cell, list[OutputRecord], Thresholds], None]] = {
    Family.LIKELIHOOD: _mia_cell,
    Family.GENERATION: _mia_cell,
    Family.EXTRACTION: _extraction_cell,
    Family.EXTRACTION_FILTERED: _extraction_cell,
}


def evaluate_cell(
    config: AuditConfig,
    protection: Protection | str,
    attack: Family | str,
    job: JobResult | None,
) -> Cell:
    """Judge one cell from its job's stored result (None: not run)."""
    protection, attack = parse_protection(protection), check_attack(attack)
    cell = Cell(protection, attack, config.claimed(protection, attack))
    if job is None:
        return cell
    cell.seconds = job.seconds
    if attack in _OUTPUT:
        _OUTPUT[attack](cell, job.output_records(), config.thresholds)
    else:
        _update_cell(cell, job.leak_records(), config.thresholds)
    if not cell.checks:
        # A job that ran but measured nothing must not read as a pass.
        cell.checks.append(Check("records_judged", 0.0, 1.0, False))
        cell.details.why = "the job produced no record this cell is judged on"
    if not cell.claimed and cell.details.why:
        cell.status = NOT_RUN
    elif cell.claimed:
        cell.status = PASS if not cell.breaches() else BREACH
    else:
        cell.status = CLEAN if all(c.passed for c in cell.checks) else LEAKS
    return cell


def breach_lines(cells: Iterable[Cell]) -> list[str]:
    """One line per breached check of a claimed cell: cell, metric, value, threshold."""
    lines = []
    for cell in cells:
        for check in cell.breaches():
            lines.append(
                f"BREACH {cell.name}: {check.metric} = {check.value:.4g} exceeds the "
                f"threshold {check.threshold:.4g}"
            )
    return lines
