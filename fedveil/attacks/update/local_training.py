"""The client's local update, written once, differentiably: what gradient matching inverts.

Why one function for both sides: the victim's update (in tests and benchmarks) and the
attacker's simulated update must follow the same public recipe, or a failed attack
would only measure a mismatch. For a multi-step FedAvg delta the attacker unrolls the
local SGD steps with `create_graph=True`, so the distance between simulated and
observed delta can be differentiated with respect to the dummy inputs (as in Geiping et
al.'s "Inverting Gradients", section 5). Only trainable parameters move or are
compared: with LoRA, the adapters.

The DP-SGD client (`dp_sgd_update`) lives here for the same reason: its per-example
gradients are the same forward pass and loss, taken one example at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call

from fedveil.attacks.update.base import (
    AttackError,
    LocalTraining,
    ParameterLayout,
    Target,
    UpdateKind,
)
from fedveil.errors import ConfigError


def _split_parameters(target: Target) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(trainable parameters, everything else the forward pass needs: frozen + buffers)."""
    trainable: dict[str, Tensor] = {}
    frozen: dict[str, Tensor] = {}
    for name, p in target.model.named_parameters():
        (trainable if p.requires_grad else frozen)[name] = p
    frozen.update(dict(target.model.named_buffers()))
    if not trainable:
        raise AttackError(f"target {target.name!r} has no trainable parameters")
    return trainable, frozen


def _model_call(
    target: Target, params: dict[str, Tensor], frozen: dict[str, Tensor]
) -> Callable[..., Any]:
    merged = {**frozen, **params}

    def call(*args: Any, **kwargs: Any) -> Any:
        return functional_call(target.model, merged, args, kwargs)

    return call


def _step_batch(
    inputs: Tensor, labels: Tensor, training: LocalTraining, step: int
) -> tuple[Tensor, Tensor]:
    """The slice of the local data used at `step`: consecutive batches, wrapping around."""
    n = inputs.shape[0]
    size = training.batch_size
    if size is None or size >= n:
        return inputs, labels
    index = torch.arange(step * size, (step + 1) * size) % n
    return inputs[index], labels[index]


def simulate_update(
    target: Target,
    inputs: Tensor,
    labels: Tensor,
    kind: UpdateKind,
    training: LocalTraining | None = None,
    *,
    create_graph: bool,
    layout: ParameterLayout | None = None,
) -> Tensor:
    """The flat update a client with this data would send, in `layout`'s order.

    GRADIENT: d loss / d theta at the global model. DELTA: theta_K - theta_0 after K
    local SGD steps (so roughly -lr * K * gradient). layout: the order the observed
    update uses (default: the model's own parameter order).
    """
    trainable, frozen = _split_parameters(target)
    names = list(trainable) if layout is None else list(layout.names)
    if set(names) != set(trainable):
        raise AttackError(
            f"layout names do not match target {target.name!r}'s trainable parameters"
        )
    if kind is UpdateKind.GRADIENT:
        loss = target.loss(_model_call(target, trainable, frozen), inputs, labels)
        grads = torch.autograd.grad(loss, [trainable[n] for n in names], create_graph=create_graph)
        return ParameterLayout.flatten(grads)
    if training is None:
        raise AttackError("simulating a DELTA needs the local training recipe (steps, lr)")
    current = dict(trainable)
    for step in range(training.steps):
        x, y = _step_batch(inputs, labels, training, step)
        loss = target.loss(_model_call(target, current, frozen), x, y)
        grads = torch.autograd.grad(loss, [current[n] for n in names], create_graph=create_graph)
        current = {n: current[n] - training.lr * g for n, g in zip(names, grads, strict=True)}
    return ParameterLayout.flatten([current[n] - trainable[n] for n in names])


def client_update(
    target: Target,
    inputs: Tensor,
    labels: Tensor,
    kind: UpdateKind = UpdateKind.GRADIENT,
    training: LocalTraining | None = None,
    layout: ParameterLayout | None = None,
) -> Tensor:
    """The victim's real update (no graph kept), as a float64 flat vector."""
    return (
        simulate_update(target, inputs, labels, kind, training, create_graph=False, layout=layout)
        .detach()
        .to(torch.float64)
    )


def _per_example(
    target: Target,
    current: dict[str, Tensor],
    frozen: dict[str, Tensor],
    names: list[str],
    inputs: Tensor,
    labels: Tensor,
) -> Tensor:
    """(B, d) gradients, row i the loss gradient of example i alone at `current`."""
    rows = []
    for i in range(inputs.shape[0]):
        loss = target.loss(
            _model_call(target, current, frozen), inputs[i : i + 1], labels[i : i + 1]
        )
        grads = torch.autograd.grad(loss, [current[n] for n in names])
        rows.append(ParameterLayout.flatten(grads).detach().to(torch.float64))
    return torch.stack(rows)


def per_example_gradients(
    target: Target, inputs: Tensor, labels: Tensor, layout: ParameterLayout | None = None
) -> Tensor:
    """(B, d) per-example gradients at the global model, in `layout`'s order.

    The quantity Opacus' hooks compute (grad_sample), here by one backward per example:
    the batches of an attack are a handful of examples, and a loop works for any model,
    peft's LoRA wrappers and cross-attention included, with no per-layer rules.
    """
    trainable, frozen = _split_parameters(target)
    names = list(trainable) if layout is None else list(layout.names)
    return _per_example(target, trainable, frozen, names, inputs, labels)


@dataclass(frozen=True)
class DPSGDReport:
    """What a DP-SGD client's update was made of, stated as sigma and C (not only epsilon).

    sigma: std of the Gaussian noise on each step's clipped sum (noise_multiplier x C);
    snr: ||mean clipped gradient|| / (sigma / B * sqrt(d)), the update's norm against
    the noise's expected norm, averaged over the steps; clipped: share of per-example
    gradients the clip shortened.
    """

    clip_norm: float
    noise_multiplier: float
    sigma: float
    snr: float
    clipped: float
    steps: int
    batch_size: int


def _check_dp(clip_norm: float, noise_multiplier: float) -> None:
    if not (math.isfinite(clip_norm) and clip_norm > 0):
        raise ConfigError(f"clip_norm must be a finite number > 0, got {clip_norm!r}")
    if not (math.isfinite(noise_multiplier) and noise_multiplier >= 0):
        raise ConfigError(
            f"noise_multiplier must be a finite number >= 0, got {noise_multiplier!r}"
        )


def dp_sgd_update(
    target: Target,
    inputs: Tensor,
    labels: Tensor,
    *,
    clip_norm: float,
    noise_multiplier: float,
    kind: UpdateKind = UpdateKind.GRADIENT,
    training: LocalTraining | None = None,
    layout: ParameterLayout | None = None,
    seed: int = 0,
) -> tuple[Tensor, DPSGDReport]:
    """One client's update under DP-SGD (Abadi et al. 2016, as Opacus computes it).

    Each step: per-example gradients, each clipped to L2 <= clip_norm, summed, plus
    N(0, (noise_multiplier clip_norm)^2) per coordinate, divided by the batch size.
    GRADIENT: that noisy gradient at the global model; DELTA: theta_K - theta_0 after
    `training.steps` such SGD steps. The noise comes from a seeded torch generator, as
    Opacus' does outside secure_mode: this simulates the mechanism for an attack
    measurement, it is not a production noise source.
    """
    _check_dp(clip_norm, noise_multiplier)
    trainable, frozen = _split_parameters(target)
    names = list(trainable) if layout is None else list(layout.names)
    if set(names) != set(trainable):
        raise AttackError(
            f"layout names do not match target {target.name!r}'s trainable parameters"
        )
    steps = 1
    if kind is UpdateKind.DELTA:
        if training is None:
            raise AttackError("a DP-SGD DELTA needs the local training recipe (steps, lr)")
        steps = training.steps
    generator = torch.Generator().manual_seed(seed)
    sigma = noise_multiplier * clip_norm
    current = {n: trainable[n].detach().clone().requires_grad_(True) for n in names}
    start = ParameterLayout.flatten([current[n].detach() for n in names]).to(torch.float64)
    snrs, clipped, batch = [], 0.0, 0
    noisy = torch.zeros(0)
    for step in range(steps):
        if training is not None and kind is UpdateKind.DELTA:
            x, y = _step_batch(inputs, labels, training, step)
        else:
            x, y = inputs, labels
        grads = _per_example(target, current, frozen, names, x, y)
        norms = grads.norm(dim=1)
        factor = (clip_norm / norms.clamp_min(1e-30)).clamp(max=1.0)
        clipped += float((factor < 1.0).to(torch.float64).mean())
        summed = (grads * factor[:, None]).sum(dim=0)
        batch = grads.shape[0]
        noise = torch.randn(summed.shape, generator=generator, dtype=torch.float64) * sigma
        noisy = (summed + noise) / batch
        noise_norm = sigma / batch * math.sqrt(summed.numel())
        snrs.append(math.inf if noise_norm == 0 else float(summed.norm()) / batch / noise_norm)
        if kind is UpdateKind.DELTA:
            assert training is not None
            with torch.no_grad():
                for n, part in zip(
                    names, torch.split(noisy, [current[n].numel() for n in names]), strict=True
                ):
                    current[n] = (
                        current[n] - training.lr * part.view_as(current[n]).to(current[n].dtype)
                    ).requires_grad_(True)
    report = DPSGDReport(
        clip_norm=float(clip_norm),
        noise_multiplier=float(noise_multiplier),
        sigma=float(sigma),
        snr=float(sum(snrs) / len(snrs)),
        clipped=clipped / steps,
        steps=steps,
        batch_size=batch,
    )
    if kind is UpdateKind.GRADIENT:
        return noisy, report
    end = ParameterLayout.flatten([current[n].detach() for n in names]).to(torch.float64)
    return end - start, report
