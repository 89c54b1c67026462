"""Analytic label recovery from a trained classification head's gradient.

Why it works: with softmax cross-entropy the head's bias gradient is (p - y), averaged
over the batch, and its weight gradient is (p - y) h^T with h the head's input. For one
example only the true class has p - y < 0, so its sign gives the label exactly (iDLG,
Zhao et al. 2020); without a bias the row sums carry the same sign when h >= 0 (after
a sigmoid or ReLU). For a batch, the mean of (p - y) over the batch is p_bar - counts/B,
so counts = B * (p_bar - g): p_bar (and the mean feature mass, for the weight variant)
is estimated by running the public model on dummy inputs (LLG+, Wainakh et al. 2022).
It only applies where a head is trained, i.e. not to LoRA-only text models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fedveil.attacks.update.base import (
    Attack,
    AttackError,
    InversionTarget,
    ObservedUpdate,
    Reconstruction,
    Target,
    UpdateKind,
)
from fedveil.errors import ConfigError


def idlg_label(
    weight_grad: Tensor, bias_grad: Tensor | None = None, *, descent: bool = False
) -> int:
    """The one example's class: the only head row whose gradient is negative.

    descent: the observed block is a parameter delta (-lr * gradient), so signs flip.
    """
    sign = -1.0 if descent else 1.0
    if bias_grad is not None:
        return int(torch.argmin(sign * bias_grad).item())
    return int(torch.argmin(sign * weight_grad.sum(dim=1)).item())


def _largest_remainder(estimate: np.ndarray, total: int) -> np.ndarray:
    """Non-negative integers summing to `total`, as close as possible to `estimate`."""
    clipped = np.clip(estimate, 0.0, None)
    if clipped.sum() <= 0:
        clipped = np.ones_like(clipped)
    scaled = clipped * total / clipped.sum()
    counts = np.floor(scaled).astype(np.int64)
    remainder = scaled - counts
    for index in np.argsort(-remainder)[: total - int(counts.sum())]:
        counts[index] += 1
    return counts


def _dummy_statistics(target: InversionTarget, samples: int, seed: int) -> tuple[Tensor, float]:
    """Mean softmax over classes and mean head-input mass on random in-bounds inputs."""
    assert target.head_weight is not None
    head = target.model.get_submodule(target.head_weight.rsplit(".", 1)[0])
    captured: list[Tensor] = []
    hook = head.register_forward_hook(lambda _m, args, _out: captured.append(args[0].detach()))
    generator = torch.Generator().manual_seed(seed)
    lo, hi = target.input_bounds
    x = lo + (hi - lo) * torch.rand((samples, *target.input_shape), generator=generator)
    try:
        with torch.no_grad():
            probs = torch.softmax(target.model(x), dim=-1).mean(dim=0)
    finally:
        hook.remove()
    mass = float(captured[0].flatten(1).sum(dim=1).mean()) if captured else 1.0
    return probs.to(torch.float64), mass


def count_labels(
    observed: ObservedUpdate,
    target: InversionTarget,
    count: int,
    *,
    samples: int = 64,
    seed: int = 0,
) -> Tensor:
    """Per-class example counts (length num_classes, summing to `count`) of the batch."""
    if target.head_weight is None:
        raise AttackError(f"target {target.name!r} has no trained head to read labels from")
    p_bar, mass = _dummy_statistics(target, samples, seed)
    scale = 1.0
    if observed.kind is UpdateKind.DELTA:
        assert observed.training is not None
        scale = -1.0 / (observed.training.lr * observed.training.steps)
    if target.head_bias is not None:
        g = observed.parameter(target.head_bias) * scale
    else:
        g = observed.parameter(target.head_weight).sum(dim=1) * scale / mass
    estimate = count * (p_bar - g)
    return torch.from_numpy(_largest_remainder(estimate.numpy(), count))


@dataclass(frozen=True)
class LabelLeakageConfig:
    """num_examples: labels to recover (None: the example count the protocol reveals);
    dummy_samples / seed: the random inputs used to estimate the batch statistics."""

    num_examples: int | None = None
    dummy_samples: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_examples is not None and (
            not isinstance(self.num_examples, int) or self.num_examples < 1
        ):
            raise ConfigError(
                f"num_examples must be None or an int >= 1, got {self.num_examples!r}"
            )
        if not isinstance(self.dummy_samples, int) or self.dummy_samples < 1:
            raise ConfigError(f"dummy_samples must be an int >= 1, got {self.dummy_samples!r}")


class LabelLeakage(Attack[LabelLeakageConfig]):
    """iDLG for a single example, count-based recovery for a batch (sorted class ids)."""

    name = "label_leakage"
    config_type = LabelLeakageConfig

    def reconstruct(self, observed: ObservedUpdate, target: Target, **side: Any) -> Reconstruction:
        if not isinstance(target, InversionTarget) or target.head_weight is None:
            raise AttackError(
                f"label leakage needs a target with a trained head, got {target.name!r}"
            )
        count = observed.examples if self.config.num_examples is None else self.config.num_examples
        if count == 1:
            weight = observed.parameter(target.head_weight)
            bias = None if target.head_bias is None else observed.parameter(target.head_bias)
            labels = torch.tensor(
                [idlg_label(weight, bias, descent=observed.kind is UpdateKind.DELTA)]
            )
        else:
            counts = count_labels(
                observed, target, count, samples=self.config.dummy_samples, seed=self.config.seed
            )
            labels = torch.repeat_interleave(torch.arange(counts.shape[0]), counts)
        return Reconstruction(attack=self.name, labels=labels)
