"""What DLG and Inverting Gradients share: the objective, the label strategy, the bookkeeping.

Why a shared objective object: both attacks differ only in the distance (L2 vs cosine),
the regulariser (none vs total variation) and the optimiser (L-BFGS vs signed Adam with
restarts). The expensive and subtle part, simulating the client's update on dummy data
(one gradient, or K unrolled local steps for a FedAvg delta) over the trainable
parameters only, lives in `attacks.update.local_training` and is the same for both.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from fedveil.attacks.update.base import AttackError, InversionTarget, ObservedUpdate, Target
from fedveil.attacks.update.label_leakage import LabelLeakage, LabelLeakageConfig
from fedveil.attacks.update.local_training import simulate_update
from fedveil.errors import ConfigError


class Distance(enum.Enum):
    """How far a simulated update is from the observed one."""

    L2 = "l2"  # DLG: sum of squared differences, sensitive to scale
    COSINE = "cosine"  # IG: 1 - cosine similarity, invariant to the update's magnitude


class LabelStrategy(enum.Enum):
    """Where the labels of the dummy data come from.

    ANALYTIC: from the head gradient (iDLG for one example, counts for a batch) —
    what breaching does by default, and strictly stronger than optimising them.
    OPTIMIZE: soft labels optimised jointly with the inputs (the original DLG).
    GIVEN: passed in as side information (`labels=`), e.g. recovered caption tokens.
    """

    ANALYTIC = "analytic"
    OPTIMIZE = "optimize"
    GIVEN = "given"


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the optimisation on `count` intra-op threads, restoring the setting after.

    Why: gradient matching on small models is thousands of tiny kernels; extra OpenMP
    threads add nothing there, and on a shared or oversubscribed machine their
    spin-waiting makes a DLG run many times slower. None leaves
    torch's setting alone (for large targets that do benefit).
    """
    if count is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def check_threads(owner: str, value: int | None) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ConfigError(f"{owner}.threads must be None or an int >= 1, got {value!r}")


def total_variation(x: Tensor) -> Tensor:
    """Mean absolute difference of neighbouring pixels (the IG image prior)."""
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().mean()
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().mean()
    return dx + dy


def update_distance(simulated: Tensor, observed: Tensor, distance: Distance) -> Tensor:
    if distance is Distance.L2:
        return (simulated - observed).pow(2).sum()
    cos = torch.dot(simulated, observed) / (simulated.norm() * observed.norm() + 1e-12)
    return 1.0 - cos


def inversion_target(target: Target) -> InversionTarget:
    if not isinstance(target, InversionTarget):
        raise AttackError(
            f"gradient matching needs an InversionTarget (an input space to optimise), "
            f"got {type(target).__name__} {target.name!r}"
        )
    return target


def number_of_examples(observed: ObservedUpdate, configured: int | None) -> int:
    """How many inputs to reconstruct: the config's choice, else what the protocol reveals."""
    return observed.examples if configured is None else configured


def analytic_labels(observed: ObservedUpdate, target: InversionTarget, count: int) -> Tensor:
    """Labels from the head gradient: iDLG for one example, per-class counts for more."""
    if target.head_weight is None:
        raise AttackError(
            f"target {target.name!r} has no trained classification head, so labels cannot "
            f"be recovered analytically; pass labels= (strategy 'given') or use 'optimize'"
        )
    result = LabelLeakage(LabelLeakageConfig(num_examples=count)).reconstruct(observed, target)
    assert result.labels is not None
    return result.labels


@dataclass
class MatchingProblem:
    """The objective of one attack run: simulated update vs observed, plus a prior."""

    target: InversionTarget
    observed: ObservedUpdate
    distance: Distance
    tv_weight: float = 0.0

    def __post_init__(self) -> None:
        self.reference = self.observed.vector.to(torch.float32)

    def loss(self, inputs: Tensor, labels: Tensor) -> Tensor:
        """Distance of the update these dummy inputs would produce, plus the TV prior."""
        simulated = simulate_update(
            self.target,
            inputs,
            labels,
            self.observed.kind,
            self.observed.training,
            create_graph=True,
            layout=self.observed.layout,
        )
        value = update_distance(simulated, self.reference, self.distance)
        if self.tv_weight > 0:
            value = value + self.tv_weight * total_variation(inputs)
        return value


def initial_inputs(
    shape: tuple[int, ...], bounds: tuple[float, float], init: str, generator: torch.Generator
) -> Tensor:
    """A dummy batch: standard normal (DLG, IG), uniform in the bounds, or mid-grey."""
    lo, hi = bounds
    if init == "randn":
        return torch.randn(shape, generator=generator)
    if init == "rand":
        return lo + (hi - lo) * torch.rand(shape, generator=generator)
    if init == "grey":
        return torch.full(shape, (lo + hi) / 2)
    raise AttackError(f"unknown init {init!r}")


def resolve_labels(
    strategy: LabelStrategy,
    observed: ObservedUpdate,
    target: InversionTarget,
    count: int,
    side: Mapping[str, object],
) -> Tensor | None:
    """Fixed labels for the run, or None when they are optimised jointly."""
    given = side.get("labels")
    if strategy is LabelStrategy.GIVEN:
        if given is None:
            raise AttackError("label strategy 'given' needs labels= side information")
        labels = torch.as_tensor(given)
        if labels.shape[0] != count:
            raise AttackError(f"got {labels.shape[0]} labels for {count} examples")
        return labels
    if strategy is LabelStrategy.ANALYTIC:
        return analytic_labels(observed, target, count)
    if target.num_classes is None:
        raise AttackError("optimising labels needs a classification target (num_classes)")
    return None
