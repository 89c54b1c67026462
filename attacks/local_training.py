"""The client's local update, written once, differentiably: what gradient matching inverts.

Why one function for both sides: the victim's update (in tests and benchmarks) and the
attacker's simulated update must follow the same public recipe, or a failed attack
would only measure a mismatch. For a multi-step FedAvg delta the attacker unrolls the
local SGD steps with `create_graph=True`, so the distance between simulated and
observed delta can be differentiated with respect to the dummy inputs (as in Geiping et
al.'s "Inverting Gradients", section 5). Only trainable parameters move or are
compared: with LoRA, the adapters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call

from attacks.base import (
    AttackError,
    LocalTraining,
    ParameterLayout,
    Target,
    UpdateKind,
)


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
