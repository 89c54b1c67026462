"""Batch gradient inversion of an aggregate: one dummy image per client, scored per client.

Why a batch attack for secure aggregation: SecAgg reveals the weighted mean of the
clients' updates and the total weight W. When every client's gradient is the mean loss
gradient over its own examples, the weighted mean is exactly the gradient of the mean
loss over all W examples, i.e. one client's gradient on a batch of W. So the attacker
optimises W dummy inputs jointly (labels from the head gradient's counts, or given) so
that their batch gradient matches the aggregate. A one-image attack on an n-client mean
reconstructs a blend; this one separates the clients' images.

Why L2 by default and not IG's cosine: the revealed weight fixes the aggregate's scale,
so the L2 distance is well posed, and on sigmoid networks L-BFGS on it converges much
further than signed Adam on the cosine; `distance=COSINE` is kept for scale-free views.
The total-variation prior of Inverting Gradients (Geiping et al. 2020) keeps the batch
image-like, and restarts keep the run with the lowest objective (never chosen by truth).

Why a per-client scorer (`best_client_metrics`): a breach of SecAgg means that one
client's private image is recovered, not that the cohort's average PSNR rises. So each
reconstruction is assigned to a client (optimal assignment on PSNR) and the client with
the largest gain over its own grey-image baseline is reported with that baseline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from fedveil.attacks.update.base import (
    Attack,
    AttackError,
    InversionTarget,
    ObservedUpdate,
    Reconstruction,
    Target,
    Truth,
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
from fedveil.attacks.update.inverting_gradients import InvertingGradientsConfig
from fedveil.attacks.update.metrics import grey_image, match_images, psnr, score, ssim
from fedveil.errors import ConfigError

_INITS = ("randn", "rand", "grey")

FULL_INVERTING_GRADIENTS = InvertingGradientsConfig(iterations=2000, restarts=4)
"""Inverting Gradients as the full audit profile should run it: one restart of a
non-convex run is a lottery, so keep the best of four by matching loss."""


@dataclass(frozen=True)
class BatchInversionConfig:
    """iterations: outer L-BFGS steps per restart, each up to `inner_iterations`
    evaluations; restarts: independent starts, the lowest objective is kept;
    tv_weight: weight of the total-variation prior; distance: L2 (the revealed weight
    fixes the scale) or COSINE; num_examples: dummy inputs (None: the total weight the
    view reveals, one per example); label_strategy: ANALYTIC (head-gradient counts) or
    GIVEN (labels= side information); min_progress: a restart stops once one outer step
    lowers its best objective by less than this fraction (L-BFGS has stalled: its line
    search no longer finds a decrease, so further steps only cost time)."""

    iterations: int = 60
    inner_iterations: int = 20
    restarts: int = 2
    tv_weight: float = 1e-3
    distance: Distance = Distance.L2
    label_strategy: LabelStrategy = LabelStrategy.ANALYTIC
    num_examples: int | None = None
    init: str = "rand"
    seed: int = 0
    threads: int | None = 1
    min_progress: float = 1e-6

    def __post_init__(self) -> None:
        check_threads("BatchInversionConfig", self.threads)
        for name in ("iterations", "inner_iterations", "restarts"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"BatchInversionConfig.{name} must be an int >= 1, got {value!r}")
        if not math.isfinite(self.tv_weight) or self.tv_weight < 0:
            raise ConfigError(
                f"BatchInversionConfig.tv_weight must be a finite number >= 0, "
                f"got {self.tv_weight!r}"
            )
        if not isinstance(self.distance, Distance):
            raise ConfigError(
                f"BatchInversionConfig.distance must be a Distance, got {self.distance!r}"
            )
        if self.label_strategy not in (LabelStrategy.ANALYTIC, LabelStrategy.GIVEN):
            raise ConfigError(
                "BatchInversionConfig.label_strategy must be ANALYTIC or GIVEN (a batch "
                f"needs fixed labels), got {self.label_strategy!r}"
            )
        if self.num_examples is not None and (
            not isinstance(self.num_examples, int)
            or isinstance(self.num_examples, bool)
            or self.num_examples < 1
        ):
            raise ConfigError(
                f"BatchInversionConfig.num_examples must be None or >= 1, got {self.num_examples!r}"
            )
        if self.init not in _INITS:
            raise ConfigError(
                f"BatchInversionConfig.init must be one of {_INITS}, got {self.init!r}"
            )
        if not math.isfinite(self.min_progress) or not 0 <= self.min_progress < 1:
            raise ConfigError(
                f"BatchInversionConfig.min_progress must be in [0, 1), got {self.min_progress!r}"
            )


class BatchInversion(Attack[BatchInversionConfig]):
    """Reconstruct one input per example of an aggregate by matching its batch gradient."""

    name = "batch_inversion"
    config_type = BatchInversionConfig

    def reconstruct(self, observed: ObservedUpdate, target: Target, **side: Any) -> Reconstruction:
        cfg = self.config
        t = inversion_target(target)
        count = number_of_examples(observed, cfg.num_examples)
        labels = resolve_labels(cfg.label_strategy, observed, t, count, side)
        if labels is None:  # pragma: no cover - the config admits fixed-label strategies only
            raise AttackError("batch inversion needs fixed labels")
        problem = MatchingProblem(t, observed, cfg.distance, tv_weight=cfg.tv_weight)
        best_loss, best = math.inf, None
        with torch_threads(cfg.threads):
            for restart in range(cfg.restarts):
                loss, x = self._run_once(problem, t, count, labels, cfg.seed + restart)
                if loss < best_loss:  # NaN compares False and is never kept
                    best_loss, best = loss, x
        lo, hi = t.input_bounds
        if best is None:  # every restart diverged: return the grey guess
            best = initial_inputs(
                (count, *t.input_shape), t.input_bounds, "grey", torch.Generator()
            )
        return Reconstruction(
            attack=self.name,
            inputs=best.clamp(lo, hi),
            labels=labels,
            scores={"matching_loss": best_loss, "examples": float(count)},
        )

    def _run_once(
        self,
        problem: MatchingProblem,
        t: InversionTarget,
        count: int,
        labels: Tensor,
        seed: int,
    ) -> tuple[float, Tensor]:
        """One restart: (lowest objective any evaluation saw, its inputs)."""
        cfg = self.config
        generator = torch.Generator().manual_seed(seed)
        x = initial_inputs((count, *t.input_shape), t.input_bounds, cfg.init, generator)
        x.requires_grad_(True)
        optimizer = torch.optim.LBFGS(
            [x],
            lr=1.0,
            max_iter=cfg.inner_iterations,
            history_size=100,
            line_search_fn="strong_wolfe",
            tolerance_grad=1e-14,
            tolerance_change=1e-16,
        )
        best_loss, best = math.inf, x.detach().clone()

        def closure() -> Tensor:
            nonlocal best_loss, best
            optimizer.zero_grad()
            loss = problem.loss(x, labels)
            loss.backward()
            value = float(loss.detach())
            if value < best_loss:  # L-BFGS may end on a worse point than it visited
                best_loss, best = value, x.detach().clone()
            return loss

        for _ in range(cfg.iterations):
            before = best_loss
            if not math.isfinite(float(optimizer.step(closure).detach())):
                break
            if math.isfinite(before) and best_loss > before * (1.0 - cfg.min_progress):
                break  # stalled
        return best_loss, best


def best_client_metrics(result: Reconstruction, truth: Truth) -> dict[str, float]:
    """`metrics.score`, plus the best-recovered client next to its own grey baseline.

    Each reconstruction is assigned to a client image (optimal assignment on PSNR); the
    best client is the one with the largest PSNR gain over a grey image of the same
    client, so a client that grey already fits well cannot pass for a breach.
    """
    metrics = score(result, truth)
    x, original = result.inputs, truth.inputs
    if x is None or original is None or original.ndim != 4:
        return metrics
    matched = match_images(x, original)
    grey = grey_image(original)
    p, p0 = psnr(matched, original), psnr(grey, original)
    s, s0 = ssim(matched, original), ssim(grey, original)
    best = int(torch.argmax(p - p0))
    metrics.update(
        psnr_best=float(p[best]),
        psnr_best_baseline=float(p0[best]),
        ssim_best=float(s[best]),
        ssim_best_baseline=float(s0[best]),
        best_client=float(best),
    )
    return metrics
