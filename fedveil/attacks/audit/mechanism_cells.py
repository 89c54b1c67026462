"""The `epsilon` cell: the canary audit's lower bound against the claim it tested (one
step, or the composition of the `steps` the record states: attacks.audit.canary_job).

Why an exact check: the lower bound is already a one-sided confidence bound (Clopper-Pearson
over independent trials, Bonferroni over the audit's fixed thresholds), so it needs no
interval of its own. A bound above the claim refutes it (breach); a claim above what a
perfect attack could certify with this budget cannot be refuted here (inconclusive, with
the numbers); otherwise the claim held against an audit that could have refuted it (pass).
The check is its own positive control: the certifiable bound says the design can fail.
"""

from __future__ import annotations

import math

from fedveil.attacks.audit.canary_job import METRIC
from fedveil.attacks.audit.cells import Cell, Check
from fedveil.attacks.measure.records import LeakRecord


def _number(record: LeakRecord, key: str) -> float:
    value = record.params.get(key)
    return float(value) if isinstance(value, int | float) else float("nan")


def epsilon_cell(cell: Cell, records: list[LeakRecord]) -> None:
    """Fill `cell` from the canary audit's record (one; the first if several)."""
    mine = [r for r in records if r.metric == METRIC]
    if not mine:
        return
    record = mine[0]
    lower, claim = float(record.value), _number(record, "claim")
    certifiable, trials = _number(record, "certifiable"), int(_number(record, "trials"))
    stated = _number(record, "steps")  # nan in records from before multi-step audits: one
    steps = int(stated) if math.isfinite(stated) else 1
    cell.metrics.update(
        epsilon_lower_bound=lower,
        epsilon_claimed=claim,
        epsilon_certifiable=certifiable,
        tpr=_number(record, "tpr"),
        fpr=_number(record, "fpr"),
        steps=float(steps),
    )
    check = Check("epsilon_lower_bound", lower, claim, lower <= claim)
    if check.passed and certifiable <= claim:
        composed = f" (the claim composed over {steps} steps)" if steps > 1 else ""
        check.inconclusive = (
            f"{trials} canary trials certify at most {certifiable:.3g} even for a perfect "
            f"attack, below the claimed {claim:.3g}{composed}: this check cannot refute "
            "the claim"
        )
    cell.checks.append(check)
