"""Several FedAvg rounds of one cohort, as the server records them: the multi-round view.

Why a federation loop among the attacks: the one-round views (attacks.views) answer
"what does the server learn from this round?"; an honest-but-curious server keeps every
round. What it keeps is the sequence of decoded aggregates, round after round, while the
global model moves by each of them (server step 1: the new adapter is the old one plus
the mean delta) and every client trains its own fixed data again from the new adapter.
The rounds run through an injected `Aggregator` (the real in-process SecAgg+ round in
tests and benchmarks; attacks/ does not import fedveil/), so each recorded vector is
exactly what that protocol decodes.

Why the two variants: under FedAvg-LoRA both factors train, so every round's A update
holds new combinations of the same layer-0 inputs (attacks.update.multi_round_observer
stacks them). Under FFA-LoRA (fedveil's default) A is frozen at a public value and
absent from the updates; `ffa_variant` builds that adapter from the same model.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import Tensor

from fedveil.attacks.protections import Aggregator, Protection
from fedveil.attacks.update.base import LocalTraining, ObservedUpdate, TokenTarget, UpdateKind
from fedveil.attacks.update.local_training import client_update
from fedveil.attacks.views import aggregate_view
from fedveil.errors import ConfigError

Client = tuple[Tensor, Tensor]
"""One client's fixed local data: (inputs, labels)."""


def private_copy(target: TokenTarget) -> TokenTarget:
    """A copy whose model the rounds may move, leaving `target` (the round-0 global
    model the observer starts from) as it was."""
    return replace(target, model=copy.deepcopy(target.model))


def ffa_variant(target: TokenTarget) -> TokenTarget:
    """The same adapter under FFA-LoRA: every lora_A frozen (public, never uploaded), only
    the B factors train; the layout then holds no A block."""
    frozen = private_copy(target)
    moved = 0
    for name, parameter in frozen.model.named_parameters():
        if "lora_A" in name:
            parameter.requires_grad_(False)
            moved += 1
    if moved == 0:
        raise ConfigError(f"target {target.name!r} has no lora_A parameter to freeze")
    frozen.name = f"{target.name}-ffa"
    return frozen


def fedavg_rounds(
    target: TokenTarget,
    clients: Sequence[Client],
    rounds: int,
    aggregate: Aggregator,
    training: LocalTraining,
    *,
    weights: Sequence[int] | None = None,
    protection: Protection = Protection.SECAGG,
) -> list[ObservedUpdate]:
    """The `rounds` aggregates a server decodes from this cohort, in order.

    Each round every client sends its local SGD delta from the current global adapter
    (`training`, on its own data), `aggregate` decodes the weighted mean, and the global
    adapter moves by it. `target` itself is left unchanged (the rounds run on a copy).
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ConfigError(f"rounds must be an int >= 1, got {rounds!r}")
    if len(clients) < 2:
        raise ConfigError(f"a cohort needs at least 2 clients, got {len(clients)}")
    counts = [int(x.shape[0]) for x, _ in clients] if weights is None else list(weights)
    if len(counts) != len(clients):
        raise ConfigError(f"need one weight per client, got {len(counts)} for {len(clients)}")
    moving = private_copy(target)
    layout = moving.layout
    trainable = {n: p for n, p in moving.model.named_parameters() if p.requires_grad}
    views: list[ObservedUpdate] = []
    for _ in range(rounds):
        updates = [client_update(moving, x, y, UpdateKind.DELTA, training) for x, y in clients]
        view = aggregate_view(
            updates,
            counts,
            layout,
            aggregate,
            kind=UpdateKind.DELTA,
            training=training,
            protection=protection,
        )
        views.append(view)
        with torch.no_grad():
            for name, step in layout.split(view.vector).items():
                trainable[name].add_(step.to(trainable[name].dtype))
    return views


__all__ = ["Client", "fedavg_rounds", "ffa_variant", "private_copy"]
