"""The local training loop: seeded, reproducible, with a progress bar.

Why fork the torch RNG: dropout (LoRA dropout included) draws from torch's global
generator. Seeding a forked copy makes a run a pure function of (model, data, config)
without disturbing the caller's random state, so two parties trained in one process, in
any order, get the same result as in two processes.

Why one loop for both model kinds: a captioner batch and a causal-LM batch differ only in
how the loss lines logits up with labels (captions are pre-shifted, see
`learner.training.batches`; causal-LM labels are the inputs, shifted here).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from fedveil.errors import ConfigError
from fedveil.learner.training.batches import IGNORE_INDEX, EncodedCaptions, EncodedText

DEFAULT_THREADS = 1
"""One intra-op thread: the tiny model's matmuls are too small to split well, and on a
shared two-core machine a second OpenMP thread that gets preempted stalls every
barrier, so two threads are slower than one under load."""


SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    """How one party trains locally (per round, or once for a local-only baseline)."""

    epochs: int = 1
    max_steps: int | None = None
    """Stop after this many optimiser steps (None: run all epochs)."""
    batch_size: int = 32
    learning_rate: float = 5e-3
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    schedule: str = "constant"
    """"constant", or "cosine": 5% linear warm-up, then cosine decay to zero."""
    seed: int = 0
    threads: int | None = DEFAULT_THREADS
    """torch intra-op threads while training (None: leave torch's setting alone)."""
    progress: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ConfigError(f"epochs must be a positive int, got {self.epochs!r}")
        if self.max_steps is not None and (
            not isinstance(self.max_steps, int) or self.max_steps < 1
        ):
            raise ConfigError(f"max_steps must be a positive int or None, got {self.max_steps!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"batch_size must be a positive int, got {self.batch_size!r}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError(
                f"learning_rate must be positive and finite, got {self.learning_rate}"
            )
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ConfigError(f"max_grad_norm must be positive or None, got {self.max_grad_norm}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative int, got {self.seed!r}")
        if self.threads is not None and not 1 <= self.threads <= (os.cpu_count() or 1) * 4:
            raise ConfigError(f"threads must be None or in [1, 4 x cores], got {self.threads}")


@dataclass(frozen=True)
class TrainStats:
    """What a local run did: steps taken, examples seen, mean and final loss, seconds."""

    steps: int
    examples: int
    mean_loss: float
    last_loss: float
    seconds: float


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run a block with `threads` intra-op threads, restoring the previous setting."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _lr_factor(schedule: str, total: int) -> Callable[[int], float]:
    if schedule == "constant":
        return lambda step: 1.0
    warmup = max(1, total // 20)

    def cosine(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return cosine


def batch_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean token cross-entropy; labels of -100 (prompt, padding) carry no loss."""
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs).logits
    if "input_ids" in batch:  # causal LM: position t predicts token t + 1
        logits, labels = logits[:, :-1], labels[:, 1:]
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
    )


def train(
    model: torch.nn.Module,
    data: EncodedCaptions | EncodedText,
    config: TrainConfig,
    desc: str = "train",
) -> TrainStats:
    """Train the parameters of `model` that require grad, in place; return the stats."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the model has no trainable parameters; apply LoRA (or unfreeze) first")
    if len(data) == 0:
        raise ConfigError("cannot train on an empty dataset")
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    per_epoch = math.ceil(len(data) / config.batch_size)
    total = per_epoch * config.epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    losses: list[float] = []
    started = time.perf_counter()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(config.schedule, total))
    was_training = model.training
    model.train()
    with torch_threads(config.threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        order = torch.Generator().manual_seed(config.seed)
        with tqdm(total=total, desc=desc, disable=not config.progress, leave=False) as bar:
            for _ in range(config.epochs):
                perm = torch.randperm(len(data), generator=order)
                for start in range(0, len(data), config.batch_size):
                    if len(losses) == total:
                        break
                    loss = batch_loss(model, data.rows(perm[start : start + config.batch_size]))
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if config.max_grad_norm is not None:
                        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    losses.append(float(loss.detach()))
                    bar.update(1)
                    bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.train(was_training)
    return TrainStats(
        steps=len(losses),
        examples=len(data) * config.epochs,
        mean_loss=sum(losses) / len(losses),
        last_loss=losses[-1],
        seconds=time.perf_counter() - started,
    )
