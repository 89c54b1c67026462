"""The inversion attacks of each audit profile, and batch inversion's stall stop.

One budget per profile for every protection (what the positive control compares), the
full profile with restarts (Inverting Gradients as batch_inversion.FULL_INVERTING_GRADIENTS),
and the stop once L-BFGS no longer lowers the objective, checked both ways: a demanding
progress floor ends a run early (a higher objective), none lets it run its steps.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest

from fedveil.attacks.measure.inversion_budget import (
    QUICK_BATCH_INVERSION,
    inversion_attacks,
)
from fedveil.attacks.targets.lenet import lenet_target
from fedveil.attacks.targets.shapes import shape_images
from fedveil.attacks.update.batch_inversion import (
    FULL_INVERTING_GRADIENTS,
    BatchInversion,
    BatchInversionConfig,
)
from fedveil.attacks.update.gradient_matching import torch_threads
from fedveil.attacks.update.local_training import client_update
from fedveil.attacks.views import plain_view
from fedveil.errors import ConfigError


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    with torch_threads(1):
        yield


def test_each_profile_runs_one_budget_with_restarts_in_the_full_one() -> None:
    quick = inversion_attacks(quick=True)
    assert [a.name for a, _ in quick] == ["batch_inversion"]
    assert quick[0][0].config == QUICK_BATCH_INVERSION
    assert quick[0][1]["iterations"] == QUICK_BATCH_INVERSION.iterations
    full = {a.name: (a, params) for a, params in inversion_attacks(quick=False)}
    assert set(full) == {"batch_inversion", "dlg", "inverting_gradients"}
    ig, params = full["inverting_gradients"]
    assert ig.config.iterations == FULL_INVERTING_GRADIENTS.iterations
    assert ig.config.restarts == params["restarts"] == FULL_INVERTING_GRADIENTS.restarts >= 4
    bi = full["batch_inversion"][0].config
    assert bi.restarts >= 4 and bi.iterations > QUICK_BATCH_INVERSION.iterations


def test_a_stalled_run_stops_and_no_floor_runs_on() -> None:
    target = lenet_target()
    x, y = shape_images(1, seed=1)
    observed = plain_view(client_update(target, x, y), target.layout)

    def loss(min_progress: float) -> float:
        config = BatchInversionConfig(
            iterations=6, inner_iterations=5, restarts=1, min_progress=min_progress
        )
        return BatchInversion(config).reconstruct(observed, target).scores["matching_loss"]

    demanding, patient = loss(0.99), loss(0.0)
    assert math.isfinite(demanding) and math.isfinite(patient)
    assert patient < demanding


@pytest.mark.parametrize("bad", [-0.1, 1.0, float("nan")])
def test_min_progress_must_be_a_fraction(bad: float) -> None:
    with pytest.raises(ConfigError, match="min_progress"):
        BatchInversionConfig(min_progress=bad)
