"""A cell's outcome for CI: pass, fail, error, skip, or report (unclaimed).

Why one function: the JUnit file, the Markdown summary and anything else that gates on a
cell must agree on what "held" means. Today that follows from `Cell.status` (pass /
breach / leaks / no leak measured / not run), a failed job (`details.error`) and checks
marked inconclusive; cells with a `verdict` ("pass", "breach", "inconclusive",
"vacuous") are read from it instead, so switching to verdicts happens here only.

Kinds: "pass" (a claimed cell held), "fail" (a claimed cell breached: its BREACH
lines), "error" (a claimed cell's job failed: the audit exits 1, so it must not read as
skipped), "skip" (a claimed cell that could not be judged: not run, inconclusive,
vacuous), "report" (an unclaimed cell: shown, never gates).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fedveil.attacks.audit.evaluate import BREACH, NOT_RUN, PASS, Cell, breach_lines

Kind = Literal["pass", "fail", "error", "skip", "report"]


@dataclass(frozen=True)
class Outcome:
    """kind: how CI counts the cell; label: the word shown for it (its verdict or status);
    message: the BREACH lines of a failure, else why it was skipped or errored ("" for a
    pass)."""

    kind: Kind
    label: str
    message: str = ""


def cell_outcome(cell: Cell) -> Outcome:
    """How CI counts `cell` (see the module docstring)."""
    if not cell.claimed:
        return Outcome("report", getattr(cell, "verdict", None) or cell.status)
    if cell.details.error is not None:
        return Outcome("error", "error", f"the job failed: {cell.details.error}")
    verdict = getattr(cell, "verdict", None)
    if verdict is not None:
        return _from_verdict(cell, str(verdict))
    if cell.status == BREACH:
        return Outcome("fail", BREACH, "\n".join(breach_lines([cell])))
    if cell.status == PASS:
        reasons = _reasons(cell)
        if reasons:  # a check that could not have failed is no evidence the claim held
            return Outcome("skip", "inconclusive", reasons)
        return Outcome("pass", PASS)
    if cell.status == NOT_RUN:
        return Outcome("skip", NOT_RUN, cell.details.why or "the cell was not run")
    return Outcome("skip", cell.status, f"status {cell.status!r} of a claimed cell")


def _from_verdict(cell: Cell, verdict: str) -> Outcome:
    if verdict == "pass":
        return Outcome("pass", verdict)
    if verdict == "breach":
        lines = breach_lines([cell]) or [f"BREACH {cell.name}: verdict breach"]
        return Outcome("fail", verdict, "\n".join(lines))
    if verdict == NOT_RUN:
        return Outcome("skip", verdict, _reasons(cell) or "the cell was not run")
    return Outcome("skip", verdict, _reasons(cell) or f"verdict {verdict}, no reason recorded")


def _reasons(cell: Cell) -> str:
    """Why a cell could not be judged: its inconclusive checks' reasons, then its own."""
    found = [str(c.inconclusive) for c in cell.checks if getattr(c, "inconclusive", None)]
    for name in ("why", "reason"):
        own = getattr(cell, name, None) or getattr(cell.details, name, None)
        if own and str(own) not in found:
            found.append(str(own))
    return "; ".join(found)
