"""The utility floor: a DP model that learned nothing cannot pass.

Why: noise large enough to destroy learning also destroys leakage, so "no attack
succeeded" on such a model says nothing about the protection at a useful setting. A DP
row's output cell whose released model does not beat the base model's held-out loss
(canary-free data) by UTILITY_MARGIN is `vacuous`, not `pass`. The margin is a module
constant, not a threshold of audit.toml, because it is a property of the measurement
(what "learned something" means for the built-in loss), not of a claim.
"""

from __future__ import annotations

from fedveil.attacks.audit.cells import INCONCLUSIVE, PASS, VACUOUS, Cell, Utility
from fedveil.attacks.measure.records import OutputRecord
from fedveil.secagg.modes import DPKind

UTILITY_MARGIN = 0.01
"""Nats per token the released model must gain on held-out data over the base model."""


def utility_of(record: OutputRecord) -> Utility:
    details = record.details
    return Utility(details.heldout_loss, details.base_heldout_loss, UTILITY_MARGIN)


def apply_utility_floor(cell: Cell) -> None:
    """A DP row's output cell on a model that learned nothing: vacuous (a breach stays a
    breach: a leak is a leak even from a useless model)."""
    if cell.utility is None or cell.protection.spec.dp is DPKind.NONE:
        return
    if cell.utility.learned or cell.status not in (PASS, INCONCLUSIVE):
        return
    u = cell.utility
    cell.status = VACUOUS
    cell.reason = (
        f"the released model did not learn: held-out loss {u.heldout_loss:.4g} vs the base "
        f"model's {u.base_heldout_loss:.4g} (needs an improvement of at least {u.margin:.3g})"
    )
