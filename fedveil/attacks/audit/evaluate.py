"""Records -> cells: each cell's headline metrics, baselines and threshold checks.

Why "the strongest attack": a cell is as leaky as the best attack run on it, so each
metric is the maximum over the records of that cell (every attack, target and cohort
the suite ran), with the baseline of the record that reached it. Claimed cells pass or
breach; unclaimed cells are labelled "leaks" (expected, e.g. a plain update) or
"no leak measured", never a breach.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from fedveil.attacks.audit.config import AuditConfig, Thresholds

PASS, BREACH, LEAKS, CLEAN, NOT_RUN = "pass", "breach", "leaks", "no leak measured", "not run"


@dataclass
class Check:
    metric: str
    value: float
    threshold: float
    passed: bool
    baseline: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "value": _finite(self.value),
            "threshold": _finite(self.threshold),
            "baseline": None if self.baseline is None else _finite(self.baseline),
            "passed": self.passed,
        }


@dataclass
class Cell:
    protection: str
    attack: str
    claimed: bool
    status: str = NOT_RUN
    metrics: dict[str, float] = field(default_factory=dict)
    baselines: dict[str, float] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.protection}/{self.attack}"

    def breaches(self) -> list[Check]:
        return [c for c in self.checks if not c.passed] if self.claimed else []

    def to_dict(self) -> dict[str, Any]:
        return {
            "protection": self.protection,
            "attack": self.attack,
            "claimed_protected": self.claimed,
            "status": self.status,
            "metrics": {k: _finite(v) for k, v in self.metrics.items()},
            "baselines": {k: _finite(v) for k, v in self.baselines.items()},
            "checks": [c.to_dict() for c in self.checks],
            "seconds": round(self.seconds, 3),
            "details": self.details,
        }


def _finite(x: float) -> float | str:
    return round(float(x), 6) if math.isfinite(x) else ("inf" if x > 0 else "-inf")


def _number(value: Any) -> float:
    """A record's number; float() also reads the "inf" the suites write into JSON."""
    return float(value)


def _strongest(
    records: Iterable[dict[str, Any]], metric: str
) -> tuple[float, float, dict[str, Any]] | None:
    """(value - baseline, value, record) of the record with the largest excess."""
    best: tuple[float, float, dict[str, Any]] | None = None
    for r in records:
        if r.get("metric") != metric:
            continue
        value, base = _number(r["value"]), _number(r["baseline_value"])
        if best is None or value - base > best[0]:
            best = (value - base, value, r)
    return best


def _run_key(record: dict[str, Any]) -> str:
    """Which attack run a record belongs to (its metric aside)."""
    keys = ("target", "protection", "n_clients", "params")
    return json.dumps({k: record.get(k) for k in keys}, sort_keys=True, default=str)


def _over_baseline(cell: Cell, records: list[dict[str, Any]], metric: str, limit: float) -> None:
    found = _strongest(records, metric)
    if found is None:
        return
    excess, value, record = found
    cell.metrics[metric] = value
    cell.baselines[metric] = _number(record["baseline_value"])
    cell.checks.append(
        Check(f"{metric}_over_baseline", excess, limit, excess <= limit, record["baseline_value"])
    )
    cell.details.setdefault("strongest", {})[metric] = {
        k: record.get(k) for k in ("target", "n_clients", "params") if k in record
    }


def _figure(record: dict[str, Any]) -> str | None:
    figure = record.get("figure") or record.get("params", {}).get("figure")
    return str(figure) if figure else None


def _update_cell(cell: Cell, records: list[dict[str, Any]], t: Thresholds) -> None:
    if cell.attack == "gradient_inversion":
        _over_baseline(cell, records, "psnr", t.max_psnr_over_baseline_db)
        _over_baseline(cell, records, "ssim", t.max_ssim_over_baseline)
        figures = {_figure(r) for r in records if r.get("metric") == "psnr"}
        cell.details["figures"] = sorted(f for f in figures if f)
    elif cell.attack == "label_leak":
        # who had which label; the cohort's label counts are the aggregate's own content
        _over_baseline(cell, records, "label_attribution_acc", t.max_label_acc_over_chance)
        multiset = _strongest(records, "label_multiset_acc")
        if multiset is not None:  # reported, not judged: the aggregate's own content
            cell.metrics["label_multiset_acc"] = multiset[1]
    elif cell.attack == "text_recovery":
        _over_baseline(cell, records, "token_f1", t.max_token_f1_over_baseline)
        best = _strongest(records, "token_f1")
        if best is not None:  # precision, recall, exact sequences of that same attack run
            run = _run_key(best[2])
            wanted = ("token_precision", "token_recall", "exact_seq")
            for r in records:
                if r.get("metric") in wanted and _run_key(r) == run:
                    cell.metrics[r["metric"]] = _number(r["value"])
                    cell.baselines[r["metric"]] = _number(r["baseline_value"])


def _mia_cell(cell: Cell, records: list[dict[str, Any]], t: Thresholds, family: str) -> None:
    mine = [r for r in records if r.get("attack_family") == family]
    if not mine:
        return
    best_auc = max(mine, key=lambda r: _number(r["auc"]))
    best_tpr = max(mine, key=lambda r: _number(r["tpr_at_1pct_fpr"]))
    auc, tpr = _number(best_auc["auc"]), _number(best_tpr["tpr_at_1pct_fpr"])
    cell.metrics.update(
        auc=auc,
        tpr_at_1pct_fpr=tpr,
        tpr_at_01pct_fpr=max(_number(r["tpr_at_0.1pct_fpr"]) for r in mine),
    )
    cell.baselines.update(auc=0.5, tpr_at_1pct_fpr=0.01)
    cell.checks.append(Check("auc", auc, t.max_auc, auc <= t.max_auc, 0.5))
    cell.checks.append(
        Check("tpr_at_1pct_fpr", tpr, t.max_tpr_at_1pct_fpr, tpr <= t.max_tpr_at_1pct_fpr, 0.01)
    )
    claimed = _number(mine[0]["epsilon_claimed"])
    lower = max(_number(r["epsilon_lower_bound"]) for r in mine)
    cell.metrics.update(epsilon_claimed=claimed, epsilon_lower_bound=lower)
    if t.empirical_epsilon_within_claimed:
        cell.checks.append(Check("epsilon_lower_bound", lower, claimed, lower <= claimed))
    cell.details["strongest_attack"] = best_auc["attack"]
    cell.details["federation"] = best_auc.get("federation")
    cell.details["roc"] = {r["attack"]: r.get("roc") for r in mine if r.get("roc")}
    cell.details["auc_ci"] = [best_auc.get("auc_low"), best_auc.get("auc_high")]


def _extraction_cell(cell: Cell, records: list[dict[str, Any]], t: Thresholds) -> None:
    if not records:
        return
    first = records[0]
    key = "extraction_rate_filtered" if cell.attack.endswith("_filtered") else "extraction_rate"
    value = _number(first[key])
    cell.metrics[key] = value
    cell.baselines[key] = 0.0
    cell.checks.append(Check(key, value, t.max_extraction_rate, value <= t.max_extraction_rate))
    if key == "extraction_rate_filtered":
        cell.metrics["filter_fpr"] = _number(first["filter_fpr"])
        cell.metrics["extraction_rate"] = _number(first["extraction_rate"])
        filters = first.get("details", {}).get("filters")
        if filters:
            cell.details["filters"] = filters


_OUTPUT: dict[str, Callable[[Cell, list[dict[str, Any]], Thresholds], None]] = {
    "likelihood_mia": lambda c, r, t: _mia_cell(c, r, t, "likelihood"),
    "generation_mia": lambda c, r, t: _mia_cell(c, r, t, "generation"),
    "canary_extraction": _extraction_cell,
    "canary_extraction_filtered": _extraction_cell,
}


def evaluate_cell(
    config: AuditConfig, protection: str, attack: str, job: dict[str, Any] | None
) -> Cell:
    """Judge one cell from its job's stored result (None: not run)."""
    cell = Cell(protection, attack, config.claimed(protection, attack))
    if job is None:
        return cell
    records: list[dict[str, Any]] = job["records"]
    cell.seconds = float(job.get("seconds", 0.0))
    if attack in _OUTPUT:
        _OUTPUT[attack](cell, records, config.thresholds)
    else:
        _update_cell(cell, records, config.thresholds)
    if not cell.checks:
        # A job that ran but measured nothing must not read as a pass.
        cell.checks.append(Check("records_judged", 0.0, 1.0, False))
        cell.details["why"] = "the job produced no record this cell is judged on"
    if not cell.claimed and cell.details.get("why"):
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
