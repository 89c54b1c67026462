"""The shared half of the update-leakage measurements: settings, records, protected views.

Why one `observe` for every target: "protection P stops attack A" is only a claim about
the vector P really leaves, so each (target, protection) pair must build its view the
same way: one client's plain update (none), the mean a real SecAgg+ or CKKS round
decodes (secagg, ckks), the mean of a real SecAgg+ round with client-level distributed
DP (secagg+client-dp), or one client's DP-SGD update (dp-sgd). The rounds are injected
(`Aggregators`), since attacks/ does not import fedveil/. The DP views carry their
mechanism as sigma and C, the signal-to-noise ratio an observer faces, and epsilon,
because epsilon alone does not say how much noise an attack had to fight.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fedveil.attacks.measure.records import JSONObject, JSONValue, LeakRecord
from fedveil.attacks.protections import Aggregators, DPSettings, Protection, parse_protection
from fedveil.attacks.update.base import LocalTraining, ObservedUpdate, Target, UpdateKind
from fedveil.attacks.update.local_training import client_update, dp_sgd_update
from fedveil.attacks.views import aggregate_view, plain_view
from fedveil.errors import ConfigError
from fedveil.secagg.modes import DPKind


@dataclass(frozen=True)
class UpdateLeakageSettings:
    """How hard and on what cohort the leakage of an update is measured.

    quick: short attacks and few clients (the audit's quick profile: every protection
    and function in about two minutes on one core); n_clients: the cohort of the
    aggregate views (secagg, ckks, secagg+client-dp), at least 2 (a "secure" mean of one
    update is that update); dp: sigma and C of the DP protections; figures: a directory
    for original-vs-reconstruction PNGs (None: no figures); seed: which draw of the
    private data (images, texts, captions) the measurement attacks — the audit repeats a
    measurement over several seeds for its confidence intervals; 0 is the historical draw.
    """

    quick: bool = True
    n_clients: int = 10
    dp: DPSettings = field(default_factory=DPSettings)
    figures: Path | None = None
    seed: int = 0

    def data_seed(self, base: int) -> int:
        """The seed of a private-data draw: `base` for seed 0, a disjoint draw otherwise."""
        return base + 1_000_003 * self.seed

    def __post_init__(self) -> None:
        if not isinstance(self.quick, bool):
            raise ConfigError(f"UpdateLeakageSettings.quick must be a bool, got {self.quick!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"UpdateLeakageSettings.seed must be an int >= 0, got {self.seed!r}")
        n = self.n_clients
        if isinstance(n, bool) or not isinstance(n, int) or not 2 <= n <= 1000:
            raise ConfigError(
                f"UpdateLeakageSettings.n_clients must be an int in [2, 1000] (the cohort of "
                f"an aggregate view), got {n!r}"
            )
        if not isinstance(self.dp, DPSettings):
            raise ConfigError(
                f"UpdateLeakageSettings.dp must be a DPSettings, got {type(self.dp).__name__}"
            )
        if self.figures is not None and not isinstance(self.figures, Path):
            raise ConfigError(
                f"UpdateLeakageSettings.figures must be a pathlib.Path or None, "
                f"got {self.figures!r}"
            )


def cohort_size(protection: Protection | str, settings: UpdateLeakageSettings) -> int:
    """How many clients' data one view of this protection mixes."""
    return 1 if parse_protection(protection).spec.observed_alone else settings.n_clients


def leak_record(
    target: str,
    protection: str,
    n_clients: int,
    metric: str,
    value: float,
    baseline: float,
    seconds: float,
    **params: JSONValue,
) -> LeakRecord:
    """One row: the attack's score on the view next to a data-free guess's score."""
    return LeakRecord.measured(
        target, protection, n_clients, metric, value, baseline, seconds, params
    )


@dataclass(frozen=True, eq=False)
class View:
    """A protected view and what the records say about its mechanism (sigma, C, SNR...)."""

    observed: ObservedUpdate
    params: JSONObject


def _clip(update: Tensor, clip_norm: float) -> Tensor:
    return update * min(1.0, clip_norm / max(float(update.norm()), 1e-30))


def observe(
    protection: Protection | str,
    target: Target,
    clients: Sequence[tuple[Tensor, Tensor]],
    settings: UpdateLeakageSettings,
    aggregators: Aggregators,
    *,
    kind: UpdateKind = UpdateKind.GRADIENT,
    training: LocalTraining | None = None,
    seed: int = 0,
) -> View:
    """What an observer sees of these clients' (inputs, labels) under `protection`.

    Single-client protections (none, dp-sgd) take exactly one client. A client's weight
    is its example count. dp-sgd: the client's batch is all its data, one DP-SGD step
    (GRADIENT) or `training.steps` of them (DELTA); epsilon is for those steps without
    subsampling amplification. secagg+client-dp: each update clipped to C, discrete
    Gaussian noise of std z*C on the sum (about z*C/n on the mean), epsilon of one round.
    """
    protection = parse_protection(protection)
    spec = protection.spec
    if not clients:
        raise ConfigError("observe needs at least one client's data")
    if spec.observed_alone and len(clients) != 1:
        raise ConfigError(
            f"protection {protection.value!r} is one client's view, got {len(clients)}"
        )
    if not spec.observed_alone and len(clients) < 2:
        raise ConfigError(
            f"protection {protection.value!r} aggregates >= 2 clients, got {len(clients)}"
        )
    layout = target.layout
    dp = settings.dp
    if spec.dp is DPKind.SAMPLE:
        x, y = clients[0]
        update, report = dp_sgd_update(
            target,
            x,
            y,
            clip_norm=dp.clip_norm,
            noise_multiplier=dp.noise_multiplier,
            kind=kind,
            training=training,
            seed=seed,
        )
        params = _dp_params(dp, report.sigma, report.snr, dp.epsilon(report.steps, 1.0))
        observed = plain_view(
            update,
            layout,
            kind=kind,
            training=training,
            examples=int(x.shape[0]),
            protection=protection,
            notes={"sigma": report.sigma, "snr": report.snr},
        )
        return View(observed, params)
    updates = [client_update(target, x, y, kind, training) for x, y in clients]
    if spec.observed_alone:  # a plain upload, no DP
        update = _colluder_decrypts(updates[0]) if spec.colluding else updates[0]
        observed = plain_view(
            update, layout, kind=kind, training=training, examples=int(clients[0][0].shape[0])
        )
        return View(observed, {"colluding": True} if spec.colluding else {})
    weights = [int(x.shape[0]) for x, _ in clients]
    if spec.dp is DPKind.NONE:
        observed = aggregate_view(
            updates,
            weights,
            layout,
            aggregators.secure(spec.aggregation),
            kind=kind,
            training=training,
            protection=protection,
        )
        return View(observed, {})
    if spec.dp is not DPKind.CLIENT:
        raise ConfigError(f"protection {protection.value!r} has no view for {spec.dp.value} DP")
    n = len(updates)
    sigma = dp.noise_multiplier * dp.clip_norm
    clipped_mean = torch.stack([_clip(u, dp.clip_norm) for u in updates]).mean(dim=0)
    noise_norm = sigma / n * math.sqrt(clipped_mean.numel())
    snr = float(clipped_mean.norm()) / noise_norm
    round_ = aggregators.client_dp(dp.client_dp_config(layout.size, n))
    observed = aggregate_view(
        updates,
        weights,
        layout,
        round_,
        kind=kind,
        training=training,
        protection=protection,
        notes={"sigma": sigma, "snr": snr},
    )
    return View(observed, _dp_params(dp, sigma, snr, dp.epsilon(1, 1.0)))


def _colluder_decrypts(update: Tensor) -> Tensor:
    """The client's update as a server colluding with another enrolled client sees it: the
    real CKKS round encrypts both clients' uploads, and the colluder's secret key opens the
    victim's own ciphertext (attacks.active.ckks_colluder)."""
    from fedveil.attacks.active.ckks_colluder import colluder_view

    victim = update.detach().cpu().double().numpy()
    recovered = colluder_view([victim, np.zeros_like(victim)], victim=0, colluder=1)
    return torch.from_numpy(np.asarray(recovered)).to(dtype=update.dtype, device=update.device)


def _dp_params(dp: DPSettings, sigma: float, snr: float, epsilon: float) -> JSONObject:
    return {
        "sigma": round(sigma, 6),
        "clip_norm": dp.clip_norm,
        "noise_multiplier": dp.noise_multiplier,
        "snr": float(f"{snr:.4g}"),
        "epsilon": round(epsilon, 4),
        "delta": dp.delta,
    }


def chance_multiset_accuracy(guesses: int, truth: Sequence[int], classes: int) -> float:
    """Expected multiset accuracy (attacks.update.metrics.label_accuracy) of `guesses` labels
    drawn uniformly from `classes`, against `truth`: sum_c E[min(G_c, T_c)] / |truth|,
    with G_c ~ Binomial(guesses, 1/classes). Exact, so baselines carry no sampling noise."""
    if classes < 1 or not truth:
        raise ConfigError("chance accuracy needs >= 1 class and a non-empty truth")
    counts = np.bincount(np.asarray(truth, dtype=np.int64), minlength=classes)
    p = 1.0 / classes
    pmf = [math.comb(guesses, g) * p**g * (1 - p) ** (guesses - g) for g in range(guesses + 1)]
    expected = sum(sum(q * min(g, int(t)) for g, q in enumerate(pmf)) for t in counts)
    return float(expected / len(truth))


__all__ = [
    "UpdateLeakageSettings",
    "View",
    "chance_multiset_accuracy",
    "cohort_size",
    "leak_record",
    "observe",
]
