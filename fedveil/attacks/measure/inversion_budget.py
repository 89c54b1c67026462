"""The image-inversion attacks each audit profile runs, at one budget for every protection.

Why one list for every cell: a protected cell's pass counts only if the same attack, at
the same budget, leaks on the unprotected cell (attacks.audit.controls), so the budget
is a property of the profile, never of the view.

Why batch inversion is the quick profile's attack: on a one-example view (none, dp-sgd,
a colluder's decryption) it is DLG (L2 matching, L-BFGS, analytic labels) plus the
total-variation prior, restarts kept by the matching objective and a stop once L-BFGS
stalls; on an aggregate it reconstructs one image per example the round reveals instead
of one blend, and is judged on the best-recovered client. The short DLG the quick profile
ran before stopped short of convergence on images whose border pixels the strided first
layer barely sees, and that seed-to-seed spread failed the positive control.

Why DLG and Inverting Gradients only in the full profile: at a quick budget Inverting
Gradients (signed Adam on the cosine) does not recover a plain update's image, so it
would only spend the quick profile's time; its cosine distance is scale-free, the attack
of record for clipped or multi-step updates, so the full profile runs it with restarts
(batch_inversion.FULL_INVERTING_GRADIENTS), next to DLG.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fedveil.attacks.measure.records import JSONObject
from fedveil.attacks.update.base import Attack
from fedveil.attacks.update.batch_inversion import (
    FULL_INVERTING_GRADIENTS,
    BatchInversion,
    BatchInversionConfig,
)
from fedveil.attacks.update.dlg import DLG, DLGConfig
from fedveil.attacks.update.inverting_gradients import InvertingGradients

QUICK_BATCH_INVERSION = BatchInversionConfig(iterations=80, restarts=1)
"""Quick: one start (on a one-example view, other random starts end at the same
objective), enough L-BFGS steps that every seed's image is recovered in structure."""

FULL_BATCH_INVERSION = BatchInversionConfig(iterations=300, restarts=4)
"""Full: the same attack with four starts, the lowest objective kept."""

FULL_DLG = DLGConfig(iterations=300, num_examples=1)


def inversion_attacks(quick: bool) -> list[tuple[Attack[Any], JSONObject]]:
    """Each attack of the profile with the params its records carry (name and budget)."""
    bi = QUICK_BATCH_INVERSION if quick else FULL_BATCH_INVERSION
    batch = BatchInversion(bi)
    attacks: list[tuple[Attack[Any], JSONObject]] = [
        (batch, {"attack": batch.name, "iterations": bi.iterations, "restarts": bi.restarts})
    ]
    if quick:
        return attacks
    ig = replace(FULL_INVERTING_GRADIENTS, num_examples=1)
    dlg, inverting = DLG(FULL_DLG), InvertingGradients(ig)
    return [
        *attacks,
        (dlg, {"attack": dlg.name, "iterations": FULL_DLG.iterations, "restarts": 1}),
        (
            inverting,
            {"attack": inverting.name, "iterations": ig.iterations, "restarts": ig.restarts},
        ),
    ]


__all__ = [
    "FULL_BATCH_INVERSION",
    "FULL_DLG",
    "QUICK_BATCH_INVERSION",
    "inversion_attacks",
]
