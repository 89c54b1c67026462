"""Deep Leakage from Gradients (Zhu et al., NeurIPS 2019): L2 gradient matching with L-BFGS.

Why keep this weak-looking attack next to Inverting Gradients: on small, twice
differentiable networks (the sigmoid LeNet) it is the fastest and most precise
reconstruction there is, so it is the sanity check for a plain update and the cheapest
"does a protected view still leak?" probe. Its L2 distance needs the update's scale to
be right, which is exactly what an aggregate or a noised view breaks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from fedveil.attacks.update.base import (
    Attack,
    InversionTarget,
    ObservedUpdate,
    Reconstruction,
    Target,
)
from fedveil.attacks.update.gradient_matching import (
    Distance,
    LabelStrategy,
    MatchingProblem,
    check_threads,
    initial_inputs,
    inversion_target,
    number_of_examples,
    resolve_labels,
    torch_threads,
)
from fedveil.errors import ConfigError

_INITS = ("randn", "rand", "grey")


@dataclass(frozen=True)
class DLGConfig:
    """iterations: outer L-BFGS steps, each up to `inner_iterations` evaluations;
    num_examples: inputs to reconstruct (None: the example count the view reveals);
    restarts: independent starts, the one with the lowest matching loss is kept;
    stop_loss: stop early once the matching loss is below it."""

    iterations: int = 50
    inner_iterations: int = 20
    lr: float = 1.0
    line_search: bool = True
    history: int = 100
    label_strategy: LabelStrategy = LabelStrategy.ANALYTIC
    num_examples: int | None = None
    init: str = "rand"
    restarts: int = 1
    stop_loss: float = 1e-12
    seed: int = 0
    threads: int | None = 1

    def __post_init__(self) -> None:
        check_threads("DLGConfig", self.threads)
        for name in ("iterations", "inner_iterations", "history", "restarts"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"DLGConfig.{name} must be an int >= 1, got {value!r}")
        if not math.isfinite(self.lr) or self.lr <= 0:
            raise ConfigError(f"DLGConfig.lr must be a finite number > 0, got {self.lr!r}")
        if not isinstance(self.label_strategy, LabelStrategy):
            raise ConfigError(
                f"DLGConfig.label_strategy must be a LabelStrategy, got {self.label_strategy!r}"
            )
        if self.num_examples is not None and (
            not isinstance(self.num_examples, int) or self.num_examples < 1
        ):
            raise ConfigError(
                f"DLGConfig.num_examples must be None or >= 1, got {self.num_examples!r}"
            )
        if self.init not in _INITS:
            raise ConfigError(f"DLGConfig.init must be one of {_INITS}, got {self.init!r}")
        if self.stop_loss < 0:
            raise ConfigError(f"DLGConfig.stop_loss must be >= 0, got {self.stop_loss!r}")


@dataclass
class _Best:
    """The lowest-loss point any closure evaluation saw (L-BFGS may end on a worse one)."""

    loss: float = math.inf
    inputs: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    evaluations: int = 0


class DLG(Attack[DLGConfig]):
    """Reconstruct inputs (and labels) whose simulated update is L2-closest to the observed."""

    name = "dlg"
    config_type = DLGConfig

    def reconstruct(self, observed: ObservedUpdate, target: Target, **side: Any) -> Reconstruction:
        cfg = self.config
        t = inversion_target(target)
        count = number_of_examples(observed, cfg.num_examples)
        labels = resolve_labels(cfg.label_strategy, observed, t, count, side)
        problem = MatchingProblem(t, observed, Distance.L2)
        best = _Best()
        with torch_threads(cfg.threads):
            for restart in range(cfg.restarts):
                self._run_once(problem, t, count, labels, cfg.seed + restart, best)
        lo, hi = t.input_bounds
        if best.inputs is None:  # every evaluation diverged: return the grey guess
            best.inputs = initial_inputs(
                (count, *t.input_shape), t.input_bounds, "grey", torch.Generator()
            )
        return Reconstruction(
            attack=self.name,
            inputs=best.inputs.clamp(lo, hi),
            labels=labels if best.labels is None else best.labels,
            scores={"matching_loss": best.loss, "evaluations": float(best.evaluations)},
        )

    def _run_once(
        self,
        problem: MatchingProblem,
        t: InversionTarget,
        count: int,
        labels: torch.Tensor | None,
        seed: int,
        best: _Best,
    ) -> None:
        cfg = self.config
        generator = torch.Generator().manual_seed(seed)
        x = initial_inputs((count, *t.input_shape), t.input_bounds, cfg.init, generator)
        x.requires_grad_(True)
        soft: torch.Tensor | None = None
        if labels is None:
            assert t.num_classes is not None
            soft = torch.randn((count, t.num_classes), generator=generator).requires_grad_(True)
        optimizer = torch.optim.LBFGS(
            [x] if soft is None else [x, soft],
            lr=cfg.lr,
            max_iter=cfg.inner_iterations,
            history_size=cfg.history,
            line_search_fn="strong_wolfe" if cfg.line_search else None,
            tolerance_grad=1e-14,
            tolerance_change=1e-16,
        )

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            y = labels if soft is None else torch.softmax(soft, dim=-1)
            assert y is not None
            loss = problem.loss(x, y)
            loss.backward()
            value = float(loss.detach())
            best.evaluations += 1
            if value < best.loss:  # NaN compares False and is never kept
                best.loss = value
                best.inputs = x.detach().clone()
                best.labels = None if soft is None else soft.detach().argmax(dim=-1)
            return loss

        for _ in range(cfg.iterations):
            loss = float(optimizer.step(closure).detach())
            if not math.isfinite(loss) or best.loss < cfg.stop_loss:
                break
