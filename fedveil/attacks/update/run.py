"""Run an attack on one observed update: time it, then score it against the truth.

Why apart from `base`: the interface (`base`) is what an attack sees, and scoring needs
the truth, which no attack may see; `metrics` scores a `Reconstruction` against a
`Truth`, so it imports the interface, and running an attack with scoring composes both.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from fedveil.attacks.update.base import Attack, ObservedUpdate, Reconstruction, Target, Truth
from fedveil.attacks.update.metrics import score

Scorer = Callable[[Reconstruction, Truth], dict[str, float]]


def run_attack(
    attack: Attack[Any],
    observed: ObservedUpdate,
    target: Target,
    *,
    truth: Truth | None = None,
    scorer: Scorer | None = None,
    **side: Any,
) -> Reconstruction:
    """Time the attack, then (if given a truth) score it; the attack never sees the truth."""
    target.check(observed)
    start = time.perf_counter()
    result = attack.reconstruct(observed, target, **side)
    result = replace(result, seconds=time.perf_counter() - start)
    if truth is not None:
        result.metrics.update((scorer or score)(result, truth))
    return result
