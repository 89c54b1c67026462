"""Label leakage from a trained head: exact for one example, counts for a batch.

Both directions: the labels come out of a plain update, and a wrong-signed reading
(treating a delta as a gradient) or a head-less target does not silently "work".
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from fedveil.attacks.targets.lenet import lenet_target
from fedveil.attacks.targets.shapes import shape_images
from fedveil.attacks.targets.tiny_lm import tiny_lm_target
from fedveil.attacks.update.base import (
    AttackError,
    LocalTraining,
    ObservedUpdate,
    Truth,
    UpdateKind,
)
from fedveil.attacks.update.gradient_matching import torch_threads
from fedveil.attacks.update.label_leakage import LabelLeakage, LabelLeakageConfig, idlg_label
from fedveil.attacks.update.local_training import client_update
from fedveil.attacks.update.run import run_attack


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """Tiny models: extra OpenMP threads only spin-wait on a shared machine."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    return shape_images(40, seed=4)


def test_idlg_recovers_every_single_label(data: tuple[torch.Tensor, torch.Tensor]) -> None:
    target = lenet_target()
    x, y = data
    recovered = []
    for i in range(20):
        g = client_update(target, x[i : i + 1], y[i : i + 1])
        result = run_attack(
            LabelLeakage(),
            ObservedUpdate(g, target.layout),
            target,
            truth=Truth(labels=y[i : i + 1]),
        )
        recovered.append(result.metrics["label_acc"])
    assert sum(recovered) == 20


def test_idlg_reads_a_delta_with_the_opposite_sign(data: tuple[torch.Tensor, torch.Tensor]) -> None:
    target = lenet_target(seed=1)
    x, y = data
    training = LocalTraining(steps=1, lr=0.5)
    for i in range(10):
        d = client_update(target, x[i : i + 1], y[i : i + 1], UpdateKind.DELTA, training)
        observed = ObservedUpdate(d, target.layout, kind=UpdateKind.DELTA, training=training)
        labels = LabelLeakage().reconstruct(observed, target).labels
        assert labels is not None and labels.tolist() == [int(y[i])]
        # read as if it were a gradient, the sign flips and the answer is wrong
        weight, bias = observed.parameter("fc.weight"), observed.parameter("fc.bias")
        assert idlg_label(weight, bias) != int(y[i])


def test_idlg_without_bias_uses_the_weight_rows(data: tuple[torch.Tensor, torch.Tensor]) -> None:
    target = lenet_target(seed=2)
    x, y = data
    for i in range(10):
        observed = ObservedUpdate(client_update(target, x[i : i + 1], y[i : i + 1]), target.layout)
        assert idlg_label(observed.parameter("fc.weight")) == int(y[i])


def test_counts_recover_a_batch_label_histogram(data: tuple[torch.Tensor, torch.Tensor]) -> None:
    target = lenet_target()
    x, y = data
    accuracies = []
    for start in (0, 16):
        xb, yb = x[start : start + 16], y[start : start + 16]
        observed = ObservedUpdate(client_update(target, xb, yb), target.layout, examples=16)
        result = run_attack(LabelLeakage(), observed, target, truth=Truth(labels=yb))
        accuracies.append(result.metrics["label_acc"])
    assert min(accuracies) >= 0.9, accuracies
    # Guessing the commonest class for everything is far worse: the counts are real signal.
    commonest = torch.full_like(yb, int(torch.bincount(yb).argmax()))
    assert float((commonest == yb).float().mean()) < 0.5


def test_label_leakage_needs_a_trained_head() -> None:
    target, _ = tiny_lm_target(rank=4)
    observed = ObservedUpdate(torch.zeros(target.layout.size), target.layout)
    with pytest.raises(AttackError, match="head"):
        LabelLeakage(LabelLeakageConfig()).reconstruct(observed, target)
