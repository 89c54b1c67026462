"""Token recovery from an FFA-LoRA update (B only), and the Adam recipe it really faces.

Why a B-factor variant: under FFA-LoRA (the project's default, learner.lora.config) A is
frozen at a value every party derives from the shared seed, so it is public and never
in the update. For a layer y = W x + s B A x the gradient of B is s G^T (X A^T): its rows
combine the *projected* inputs A x_i. A candidate token t at position p is therefore
"in" when A x_(t,p) lies in the row space of the observed B block (the span check) or
near its top-k singular subspace (the ranking). That space is r-dimensional, so the
check can only tell tokens apart while the layer read fewer tokens than the rank r:
with n >= r tokens the span is all of R^r and every candidate is in it.

What the real recipe changes: clients train B with AdamW for several steps
(learner.training.loop, CaptionerRecipe: lr 1e-2, 8 steps a round, gradients clipped
to norm 1). Adam divides each coordinate by its own running RMS, close to a sign
function on the first steps, which fills every direction of R^r: the exact span check
then keeps every candidate or none. But the sign of a low-rank matrix is still
correlated with it, so the top singular directions of an Adam delta stay near the true
span; ranking against a subspace whose dimension is read off the spectral elbow
("gap") recovers part of the caption. The records in attacks.measure.text_leakage
measure both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call

from fedveil.attacks.update.base import LocalTraining, ParameterLayout, Target
from fedveil.attacks.update.text_recovery import (
    SpanCheck,
    SubspaceRanking,
    TextRankingConfig,
    TextRecoveryConfig,
)
from fedveil.errors import ConfigError


def _b_only(config: TextRecoveryConfig) -> None:
    if config.factor == "A":
        raise ConfigError(
            "the B-factor attacks read the B block only (A is frozen under FFA-LoRA); "
            "set factor to 'B' or 'auto', or use dager_span / dager_rank for A rows"
        )


@dataclass(frozen=True)
class BRecoveryConfig(TextRecoveryConfig):
    """TextRecoveryConfig reading the B block (factor "B"; "A" is refused)."""

    factor: str = "B"

    def __post_init__(self) -> None:
        super().__post_init__()
        _b_only(self)


@dataclass(frozen=True)
class BRankingConfig(TextRankingConfig):
    """TextRankingConfig reading the B block, k from the spectral elbow by default: under
    Adam the numerical rank is r, and a k of r would keep every candidate."""

    factor: str = "B"
    subspace_dim: int | str | None = "gap"

    def __post_init__(self) -> None:
        super().__post_init__()
        _b_only(self)


class BSpanCheck(SpanCheck):
    """Span check in the rank-r space: keep (token, position) whose A-projected input lies
    in the span of the B block's rows. Exact for SGD updates with fewer tokens than r."""

    name = "dager_b_span"
    config_type = BRecoveryConfig


class BSubspaceRanking(SubspaceRanking):
    """Ranking in the rank-r space, the subspace dimension from the spectral elbow by
    default: what survives of the span structure after Adam's normalisation."""

    name = "dager_b_rank"
    config_type = BRankingConfig


# --- the victim's real local recipe: AdamW steps on B ----------------------------------


@dataclass(frozen=True)
class AdamTraining:
    """The party's local optimiser, as learner.training.loop runs it: AdamW, constant lr,
    global gradient-norm clipping before each step. steps counts optimiser steps on the
    client's data (all of it each step, as a one-example client has)."""

    steps: int = 8
    lr: float = 1e-2
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 1:
            raise ConfigError(f"AdamTraining.steps must be an int >= 1, got {self.steps!r}")
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"AdamTraining.lr must be a finite number > 0, got {self.lr!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"AdamTraining.weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.max_grad_norm is not None and not (
            math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0
        ):
            raise ConfigError(
                f"AdamTraining.max_grad_norm must be > 0 or None, got {self.max_grad_norm!r}"
            )

    @classmethod
    def of_recipe(cls, recipe: Any | None = None) -> AdamTraining:
        """The optimiser of a CaptionerRecipe (default: the shipped one): its lr, weight
        decay and clip, and as many steps as one round takes over a party's data."""
        from fedveil.learner.federated_local import CaptionerRecipe  # heavy; only when asked

        recipe = CaptionerRecipe() if recipe is None else recipe
        train = recipe.train
        steps = math.ceil(recipe.data.samples_per_party / train.batch_size) * train.epochs
        if train.max_steps is not None:
            steps = min(steps, train.max_steps)
        return cls(
            steps=steps,
            lr=float(train.learning_rate),
            weight_decay=float(train.weight_decay),
            max_grad_norm=train.max_grad_norm,
        )

    def as_local_training(self) -> LocalTraining:
        """The (steps, lr) label a DELTA view needs; the optimiser itself is Adam."""
        return LocalTraining(steps=self.steps, lr=self.lr)


def adam_delta(target: Target, inputs: Tensor, labels: Tensor, training: AdamTraining) -> Tensor:
    """theta_K - theta_0 of the trainable parameters after `training.steps` AdamW steps on
    (inputs, labels), flat float64 in the model's trainable order (its layout)."""
    layout = ParameterLayout.of(target.model)
    named = dict(target.model.named_parameters())
    frozen: dict[str, Tensor] = {n: p for n, p in named.items() if not p.requires_grad}
    frozen.update(dict(target.model.named_buffers()))
    params = {n: named[n].detach().clone().requires_grad_(True) for n in layout.names}
    start = [p.detach().clone() for p in params.values()]
    optimizer = torch.optim.AdamW(
        list(params.values()), lr=training.lr, weight_decay=training.weight_decay
    )
    merged = {**frozen, **params}

    def call(*args: Any, **kwargs: Any) -> Any:
        return functional_call(target.model, merged, args, kwargs)

    for _ in range(training.steps):
        loss = target.loss(call, inputs, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if training.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(list(params.values()), training.max_grad_norm)
        optimizer.step()
    moved = [p.detach() - s for p, s in zip(params.values(), start, strict=True)]
    return ParameterLayout.flatten(moved).to(torch.float64)


__all__ = [
    "AdamTraining",
    "BRankingConfig",
    "BRecoveryConfig",
    "BSpanCheck",
    "BSubspaceRanking",
    "adam_delta",
]
