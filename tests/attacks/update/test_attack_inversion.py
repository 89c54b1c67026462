"""Gradient inversion on target (a), the DLG LeNet on 32x32 images: plain vs SecAgg.

Both directions: one client's plain gradient gives its image back far above the grey
baseline (the published reference: breaching's DLG on a random LeNet, batch 1, 36.9 dB
against 11.1 dB for grey); the same attack on the aggregate the server decodes from a
real in-process SecAgg+ round of 10 clients is no better than grey for any client.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from fedveil.attacks.targets.lenet import lenet_target
from fedveil.attacks.targets.shapes import shape_images
from fedveil.attacks.update.base import (
    InversionTarget,
    LocalTraining,
    ObservedUpdate,
    ParameterLayout,
    Truth,
    UpdateKind,
)
from fedveil.attacks.update.dlg import DLG, DLGConfig
from fedveil.attacks.update.gradient_matching import Distance, MatchingProblem, torch_threads
from fedveil.attacks.update.inverting_gradients import InvertingGradients, InvertingGradientsConfig
from fedveil.attacks.update.local_training import client_update
from fedveil.attacks.update.metrics import grey_image, psnr
from fedveil.attacks.update.run import run_attack
from fedveil.attacks.views import aggregate_view, plain_view
from fedveil.runners.simulation import secure_mean


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """Tiny models: extra OpenMP threads only spin-wait on a shared machine."""
    with torch_threads(1):
        yield


FAST_DLG = DLGConfig(iterations=60, num_examples=1)
"""The fast tests' attack: a fifth of the reference budget, already ~35 dB on a plain
gradient; the reference budget (300 steps) runs in the slow test."""


@pytest.fixture(scope="module")
def lenet() -> InversionTarget:
    return lenet_target()


def test_dlg_recovers_one_image_from_its_plain_gradient(lenet: InversionTarget) -> None:
    x, y = shape_images(1, seed=1)
    observed = plain_view(client_update(lenet, x, y), lenet.layout)
    result = run_attack(DLG(FAST_DLG), observed, lenet, truth=Truth(inputs=x, labels=y))
    m = result.metrics
    assert m["psnr"] > m["psnr_baseline"] + 10, m
    assert m["ssim"] > m["ssim_baseline"] + 0.5, m
    assert m["label_acc"] == 1.0


def test_dlg_on_the_secure_aggregate_of_10_is_no_better_than_grey(
    lenet: InversionTarget,
) -> None:
    x, y = shape_images(10, seed=2)
    updates = [client_update(lenet, x[i : i + 1], y[i : i + 1]).numpy() for i in range(10)]
    observed = aggregate_view(updates, [1] * 10, lenet.layout, secure_mean)
    assert observed.n_clients == 10 and observed.examples == 10
    assert np.abs(observed.vector.numpy() - np.mean(updates, axis=0)).max() < 1e-4
    # The same attack as on a plain update: one image, L2 matching, analytic label.
    result = run_attack(DLG(FAST_DLG), observed, lenet)
    assert result.inputs is not None
    attacked = psnr(result.inputs.expand_as(x), x)
    grey = psnr(grey_image(x), x)
    assert bool((attacked < grey + 3).all()), (attacked, grey)


def test_a_tiny_cohort_of_one_example_clients_is_a_batch_and_leaks_structure(
    lenet: InversionTarget,
) -> None:
    """The limit of SecAgg alone, pinned down: with one example per client and one local
    step, the mean of 3 gradients *is* a batch-3 gradient, and the server learns the
    total weight (3). Batch DLG then recovers outlines (SSIM well above grey) and the
    label histogram exactly; DP or larger local batches are what stop this."""
    x, y = shape_images(3, seed=203)
    updates = [client_update(lenet, x[i : i + 1], y[i : i + 1]).numpy() for i in range(3)]
    observed = aggregate_view(updates, [1] * 3, lenet.layout, secure_mean)
    batch = DLG(DLGConfig(iterations=60))  # num_examples from the revealed total weight
    result = run_attack(batch, observed, lenet, truth=Truth(inputs=x, labels=y))
    m = result.metrics
    assert m["ssim"] > m["ssim_baseline"] + 0.1, m
    assert m["label_acc"] == 1.0


def test_inverting_gradients_unrolls_a_multi_step_fedavg_delta() -> None:
    target = lenet_target(size=16)
    x, y = shape_images(1, seed=1, size=16)
    training = LocalTraining(steps=3, lr=0.1)
    observed = plain_view(
        client_update(target, x, y, UpdateKind.DELTA, training),
        target.layout,
        kind=UpdateKind.DELTA,
        training=training,
    )
    attack = InvertingGradients(InvertingGradientsConfig(iterations=150))
    result = run_attack(attack, observed, target, truth=Truth(inputs=x, labels=y))
    m = result.metrics
    assert m["psnr"] > m["psnr_baseline"] + 8, m
    assert m["label_acc"] == 1.0


def test_the_attackers_unroll_reproduces_the_clients_delta(lenet: InversionTarget) -> None:
    x, y = shape_images(2, seed=3)
    training = LocalTraining(steps=4, lr=2.0, batch_size=1)
    # flattened in sorted-name order, as the client SDK does, not in the model's order
    pairs = sorted(zip(lenet.layout.names, lenet.layout.shapes, strict=True))
    layout = ParameterLayout(tuple(n for n, _ in pairs), tuple(s for _, s in pairs))
    assert layout != lenet.layout and layout.same_parameters(lenet.layout)
    d = client_update(lenet, x, y, UpdateKind.DELTA, training, layout=layout)
    observed = ObservedUpdate(d, layout, kind=UpdateKind.DELTA, training=training, examples=2)
    lenet.check(observed)
    problem = MatchingProblem(lenet, observed, Distance.L2)
    at_truth = float(problem.loss(x, y).detach())
    elsewhere = float(problem.loss(grey_image(x), y).detach())
    assert at_truth < 1e-9 * elsewhere
    # and unrolling matters: with a large step the delta is not lr * steps * gradient
    g = client_update(lenet, x, y, layout=layout)
    cosine = torch.nn.functional.cosine_similarity(-g, d, dim=0)
    assert float(cosine) < 0.99


@pytest.mark.slow
def test_dlg_reference_budget_matches_published_single_image_figure(
    lenet: InversionTarget,
) -> None:
    """The reference set-up's budget (300 L-BFGS steps): >= 30 dB on every image."""
    x, y = shape_images(3, seed=1)
    for i in range(3):
        observed = plain_view(client_update(lenet, x[i : i + 1], y[i : i + 1]), lenet.layout)
        result = run_attack(
            DLG(DLGConfig(iterations=300)), observed, lenet, truth=Truth(inputs=x[i : i + 1])
        )
        assert result.metrics["psnr"] > 30, result.metrics


@pytest.mark.slow
def test_batch_dlg_on_the_secure_aggregate_of_10_stays_below_grey(
    lenet: InversionTarget,
) -> None:
    """The stronger reading of an aggregate: reconstruct all 10 examples it reveals."""
    x, y = shape_images(10, seed=2)
    updates = [client_update(lenet, x[i : i + 1], y[i : i + 1]).numpy() for i in range(10)]
    observed = aggregate_view(updates, [1] * 10, lenet.layout, secure_mean)
    result = run_attack(
        DLG(DLGConfig(iterations=300)), observed, lenet, truth=Truth(inputs=x, labels=y)
    )
    m = result.metrics
    assert m["psnr"] < m["psnr_baseline"] + 3, m
