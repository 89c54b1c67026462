"""Protection views: turn client updates into exactly what an observer gets to see.

Why here and why so thin: the claim "secure aggregation stops this attack" is only
meaningful if the attack runs on the vector the server really decodes. attacks/ must
not import fedveil/, so the real SecAgg round is injected as an `Aggregator` by the
composition root (tests, benchmarks): it takes the clients' flat float updates and
weights and returns what the server learns, the weighted mean and the total weight.
The real DP protections reuse these two views: secagg+client-dp is `aggregate_view`
over the DP round (attacks.protections), dp-sgd is `plain_view` of the noisy update
`attacks.update.local_training.dp_sgd_update` makes; `notes` carries their sigma, C and SNR.
The Gaussian view is an explicit, mechanism-free probe ("how much noise would stop
this attack?") kept for the attack tests; it reports sigma and signal-to-noise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from fedveil.attacks.protections import Aggregator, Protection
from fedveil.attacks.update.base import LocalTraining, ObservedUpdate, ParameterLayout, UpdateKind
from fedveil.errors import ConfigError


def _as_tensor(update: np.ndarray | Tensor) -> Tensor:
    if isinstance(update, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(update, dtype=np.float64))
    return update.detach().to(torch.float64)


def plain_view(
    update: np.ndarray | Tensor,
    layout: ParameterLayout,
    *,
    kind: UpdateKind = UpdateKind.GRADIENT,
    training: LocalTraining | None = None,
    examples: int = 1,
    protection: Protection = Protection.NONE,
    notes: Mapping[str, float] | None = None,
) -> ObservedUpdate:
    """One client's update as it leaves the client: unprotected, or already privatised on
    the client (protection=DP_SGD, with the mechanism's sigma and C in `notes`)."""
    return ObservedUpdate(
        _as_tensor(update),
        layout,
        kind=kind,
        protection=protection,
        examples=examples,
        training=training,
        notes=dict(notes or {}),
    )


def aggregate_view(
    updates: Sequence[np.ndarray | Tensor],
    weights: Sequence[int],
    layout: ParameterLayout,
    aggregator: Aggregator,
    *,
    kind: UpdateKind = UpdateKind.GRADIENT,
    training: LocalTraining | None = None,
    protection: Protection = Protection.SECAGG,
    notes: Mapping[str, float] | None = None,
) -> ObservedUpdate:
    """What the server decodes from a (secure) aggregation round over these updates."""
    if len(updates) != len(weights) or not updates:
        raise ConfigError(f"need one weight per update, got {len(updates)} and {len(weights)}")
    arrays = [_as_tensor(u).numpy() for u in updates]
    mean, total_weight = aggregator(arrays, [int(w) for w in weights])
    return ObservedUpdate(
        _as_tensor(mean),
        layout,
        kind=kind,
        protection=protection,
        n_clients=len(arrays),
        examples=int(total_weight),
        training=training,
        notes=dict(notes or {}),
    )


def gaussian_view(observed: ObservedUpdate, sigma: float, *, seed: int = 0) -> ObservedUpdate:
    """`observed` plus N(0, sigma^2) per element; notes carry sigma and the SNR. The
    protection stays the observed view's: this probe is no protection of its own.

    snr = ||update|| / (sigma * sqrt(d)), the ratio of the update's norm to the noise's
    expected norm; below ~1 an observer sees mostly noise.
    """
    if not math.isfinite(sigma) or sigma < 0:
        raise ConfigError(f"sigma must be a finite number >= 0, got {sigma!r}")
    vector = observed.vector
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(vector.shape, generator=generator, dtype=torch.float64) * sigma
    norm = float(vector.norm())
    noise_norm = sigma * math.sqrt(vector.numel())
    snr = math.inf if noise_norm == 0 else norm / noise_norm
    return ObservedUpdate(
        vector + noise,
        observed.layout,
        kind=observed.kind,
        protection=observed.protection,
        n_clients=observed.n_clients,
        examples=observed.examples,
        training=observed.training,
        notes={**observed.notes, "sigma": sigma, "snr": snr},
    )


def sigma_for_snr(observed: ObservedUpdate, snr: float) -> float:
    """The per-element sigma at which the noise's expected norm is ||update|| / snr."""
    if not math.isfinite(snr) or snr <= 0:
        raise ConfigError(f"snr must be a finite number > 0, got {snr!r}")
    return float(observed.vector.norm()) / (snr * math.sqrt(observed.vector.numel()))
