"""Records -> cells: each cell's headline metrics, their confidence intervals and verdict.

Why "the strongest attack": a cell is as leaky as the best attack run on it, so each
metric is the maximum over the records of that cell (every attack, target and cohort
the suite ran), with an interval corrected for that maximum (confidence.py). A claimed
cell is a breach when an interval's low end crosses its threshold, a pass when every
high end stays under, inconclusive otherwise; a DP row's output cell on a model that
learned nothing is vacuous (utility.py). Unclaimed cells are labelled "leaks" (expected,
e.g. a plain update) or "no leak measured", never a breach. Positive controls need every
cell, so they are a second pass (controls.apply_controls, run by `evaluate_cells`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from fedveil.attacks.audit.cells import (
    BREACH,
    CLEAN,
    INCONCLUSIVE,
    LEAKS,
    NOT_RUN,
    PASS,
    VACUOUS,
    Cell,
    CellDetails,
    Check,
    StrongestRun,
    Utility,
)
from fedveil.attacks.audit.config import AuditConfig
from fedveil.attacks.audit.controls import apply_controls
from fedveil.attacks.audit.matrix import check_attack
from fedveil.attacks.audit.mechanism_cells import epsilon_cell
from fedveil.attacks.audit.output_cells import OUTPUT_CELLS
from fedveil.attacks.audit.update_cells import update_cell
from fedveil.attacks.audit.utility import apply_utility_floor
from fedveil.attacks.families import Family
from fedveil.attacks.measure.records import JobResult
from fedveil.attacks.protections import Protection, parse_protection

__all__ = [
    "BREACH",
    "CLEAN",
    "INCONCLUSIVE",
    "LEAKS",
    "NOT_RUN",
    "PASS",
    "VACUOUS",
    "Cell",
    "CellDetails",
    "Check",
    "StrongestRun",
    "Utility",
    "breach_lines",
    "evaluate_cell",
    "evaluate_cells",
    "note_lines",
]

Seeds = JobResult | Sequence[JobResult] | None


def _seeds(job: Seeds) -> list[JobResult] | None:
    if job is None:
        return None
    return [job] if isinstance(job, JobResult) else list(job)


def _verdict(cell: Cell) -> None:
    if not cell.claimed and cell.details.why:
        cell.status = NOT_RUN
    elif not cell.claimed:
        cell.status = CLEAN if all(c.passed for c in cell.checks) else LEAKS
    else:
        outcomes = [c.outcome for c in cell.checks]
        if BREACH in outcomes:
            cell.status = BREACH
        elif all(o == PASS for o in outcomes):
            cell.status = PASS
        else:
            cell.status = INCONCLUSIVE
            cell.reason = "; ".join(_straddles(cell))


def _straddles(cell: Cell) -> list[str]:
    reasons = []
    for c in cell.checks:
        if c.inconclusive:
            reasons.append(c.inconclusive)
        elif c.outcome == INCONCLUSIVE and c.ci_low is not None and c.ci_high is not None:
            reasons.append(
                f"{c.metric}: the {c.level:.4g} interval {c.ci_low:.4g} to {c.ci_high:.4g} "
                f"contains the threshold {c.threshold:.4g}"
                + (
                    f" ({cell.seeds} seed)"
                    if cell.seeds == 1
                    and not cell.attack.membership
                    and cell.attack not in OUTPUT_CELLS
                    else ""
                )
            )
    return reasons


def evaluate_cell(
    config: AuditConfig,
    protection: Protection | str,
    attack: Family | str,
    job: Seeds,
) -> Cell:
    """Judge one cell from its jobs' stored results, one JobResult per seed (None: not
    run). Positive controls are not applied here (see evaluate_cells)."""
    protection, attack = parse_protection(protection), check_attack(attack)
    cell = Cell(protection, attack, config.claimed(protection, attack))
    seeds = _seeds(job)
    if seeds is None:
        return cell
    cell.seconds = sum(s.seconds for s in seeds)
    cell.seeds = len(seeds)
    if attack is Family.EPSILON:
        epsilon_cell(cell, [r for s in seeds for r in s.leak_records()])
    elif attack in OUTPUT_CELLS:
        OUTPUT_CELLS[attack](
            cell, [r for s in seeds for r in s.output_records()], config.thresholds
        )
    else:
        update_cell(cell, [s.leak_records() for s in seeds], config.thresholds)
    if not cell.checks:
        # A job that ran but measured nothing must not read as a pass.
        cell.checks.append(Check("records_judged", 0.0, 1.0, False))
        cell.details.why = "the job produced no record this cell is judged on"
    _verdict(cell)
    apply_utility_floor(cell)
    return cell


def evaluate_cells(
    config: AuditConfig, jobs: Iterable[tuple[Protection, Family, Seeds]]
) -> list[Cell]:
    """Judge every cell, then apply the positive controls across them."""
    cells = [evaluate_cell(config, p, a, job) for p, a, job in jobs]
    apply_controls(cells)
    return cells


def _ci(check: Check) -> str:
    if check.ci_low is None or check.ci_high is None or check.level is None:
        return ""
    return f" ({check.level:.4g} CI {check.ci_low:.4g} to {check.ci_high:.4g})"


def breach_lines(cells: Iterable[Cell]) -> list[str]:
    """One line per conclusively breached check of a claimed cell: cell, metric, value,
    threshold, and the interval that crossed it."""
    lines = []
    for cell in cells:
        for check in cell.breaches():
            lines.append(
                f"BREACH {cell.name}: {check.metric} = {check.value:.4g} exceeds the "
                f"threshold {check.threshold:.4g}{_ci(check)}"
            )
    return lines


def note_lines(cells: Iterable[Cell]) -> list[str]:
    """INCONCLUSIVE / VACUOUS lines of claimed cells that could not be judged a pass."""
    lines = []
    for cell in cells:
        if cell.claimed and cell.status in (INCONCLUSIVE, VACUOUS):
            reason = cell.reason or "no reason recorded"
            lines.append(f"{cell.status.upper()} {cell.name}: {reason}")
    return lines
