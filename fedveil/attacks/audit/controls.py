"""Positive controls: a protected cell's pass counts only if the attack works at all.

Why: an attack that fails everywhere turns every protected cell green. So a claimed cell
on a protected row is a `pass` only if, at the same budget, the same attack family
leaked on the unprotected row (`none`): that cell's interval low end crossed the
threshold. Otherwise the cell is `inconclusive` with positive_control False. When the
reference cell was not audited, positive_control is None (not checked) and a pass is
inconclusive too; a breach stands either way (a measured leak needs no control).

The reference of the filtered extraction is the unfiltered extraction on `none`: the
control shows that the attack extracts from an unprotected, unfiltered model, so it also
controls the `none` row's own filtered cell.
"""

from __future__ import annotations

from collections.abc import Iterable

from fedveil.attacks.audit.cells import INCONCLUSIVE, NOT_RUN, PASS, Cell
from fedveil.attacks.families import Family
from fedveil.attacks.protections import Protection

REFERENCE_ROW = Protection.NONE


def reference_of(cell: Cell) -> tuple[Protection, Family] | None:
    """The cell that must leak for `cell` to count; None when `cell` is its own reference."""
    if cell.attack is Family.EPSILON:  # controlled by its certifiable bound
        return None
    family = Family.EXTRACTION if cell.attack is Family.EXTRACTION_FILTERED else cell.attack
    key = (REFERENCE_ROW, family)
    return None if key == (cell.protection, cell.attack) else key


def leaked(reference: Cell) -> bool:
    """Whether the reference cell leaked conclusively (an interval check crossed)."""
    return reference.details.error is None and any(c.leaked for c in reference.checks)


def apply_controls(cells: Iterable[Cell]) -> None:
    """Second pass over judged cells: set positive_control and demote unsupported passes."""
    cells = list(cells)
    by_key = {(c.protection, c.attack): c for c in cells}
    for cell in cells:
        key = reference_of(cell)
        if not cell.claimed or cell.status == NOT_RUN or key is None:
            continue
        reference = by_key.get(key)
        name = f"{key[0]}/{key[1]}"
        if reference is None or reference.status == NOT_RUN:
            cell.positive_control = None
            why = f"the unprotected reference cell {name} was not run: no positive control"
        else:
            cell.positive_control = leaked(reference)
            why = (
                f"the attack did not leak on the unprotected cell {name} at the same budget"
                " (positive control failed)"
            )
            if cell.positive_control:
                continue
        if cell.status == PASS:
            cell.status = INCONCLUSIVE
            cell.reason = why
        elif cell.status == INCONCLUSIVE:
            cell.reason = why if cell.reason is None else f"{cell.reason}; {why}"
