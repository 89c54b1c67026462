"""A transformers.TrainerCallback that federates the adapter while the Trainer trains.

Why a callback: teams that already fine-tune with `transformers.Trainer` keep their loop,
optimiser and data; the callback only interrupts it at round boundaries (every N
optimiser steps, or each epoch end), sends the adapter's delta through the service and
continues from the aggregate. The parameters are overwritten in place, so the optimiser
keeps its state and the next steps train the aggregate.

Why the weight is counted from steps: the Trainer reports optimiser steps, not examples;
steps x (per-device batch x accumulation x processes) is the examples seen, up to a
shorter last batch of an epoch. Pass `examples_per_step` when that product is not right
(e.g. packed sequences).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from fedveil.clients.transport import DEFAULT_JOIN_TIMEOUT_S, AggregationClient
from fedveil.errors import ConfigError
from fedveil.learner.federation.secure_round import SecureRound, SecureRoundResult
from fedveil.learner.lora.codec import AdapterLayout


class SecureRoundCallback(TrainerCallback):
    """Run a SecureRound for the Trainer's model every `every_steps` optimiser steps
    and/or at each epoch end (`every_epoch`); `results` lists the rounds run so far.

    `client` is the blocking AggregationClient: the Trainer calls back synchronously.
    """

    def __init__(
        self,
        client: AggregationClient,
        *,
        every_steps: int | None = None,
        every_epoch: bool = False,
        layout: AdapterLayout | None = None,
        examples_per_step: int | None = None,
        join_timeout_s: float = DEFAULT_JOIN_TIMEOUT_S,
    ) -> None:
        if not isinstance(client, AggregationClient):
            raise ConfigError(
                "SecureRoundCallback needs the blocking AggregationClient (the Trainer "
                "calls back synchronously), not the async one"
            )
        if every_steps is not None and (isinstance(every_steps, bool) or every_steps < 1):
            raise ConfigError(f"every_steps must be a positive int or None, got {every_steps!r}")
        if every_steps is None and not every_epoch:
            raise ConfigError("say when to run a round: every_steps=N and/or every_epoch=True")
        if examples_per_step is not None and examples_per_step < 1:
            raise ConfigError(f"examples_per_step must be positive, got {examples_per_step!r}")
        self.client = client
        self.every_steps = every_steps
        self.every_epoch = every_epoch
        self.layout = layout
        self.examples_per_step = examples_per_step
        self.join_timeout_s = join_timeout_s
        self.results: list[SecureRoundResult] = []
        self._round: SecureRound | None = None
        self._steps_since_round = 0

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        model = kwargs.get("model")
        if not isinstance(model, torch.nn.Module):
            raise ConfigError("the Trainer passed no model to the callback")
        self._round = SecureRound(model, self.client, self.layout)
        self._steps_since_round = 0

    def on_step_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        self._steps_since_round += 1
        if self.every_steps is not None and state.global_step % self.every_steps == 0:
            self._run(args)

    def on_epoch_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        if self.every_epoch and self._steps_since_round > 0:
            self._run(args)

    def _run(self, args: TrainingArguments) -> None:
        if self._round is None:
            raise ConfigError("the callback ran before on_train_begin; add it to a Trainer")
        per_step = self.examples_per_step or (
            args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        )
        weight = max(1, self._steps_since_round * per_step)
        self.results.append(self._round.run_sync(weight, join_timeout_s=self.join_timeout_s))
        self._steps_since_round = 0
