"""White-box canary audits that can refute a DP claim: Dirac gradient canaries for DP-SGD
and Dirac canary clients for client-level DP.

Why: a one-run audit on a few dozen text canaries certifies at most an epsilon of 1-3
even when the attack is perfect, below every claim, so switching the noise off cannot
turn it red. A white-box auditor does better by attacking the mechanism where it is
defined: it writes the worst-case contribution itself (a vector of norm C on a single
coordinate, exactly a clipped per-example gradient or a clipped client update), includes
it by a fair coin, lets the real mechanism noise the sum, and guesses "in" when the
released canary coordinate exceeds a threshold (Nasr et al. 2023, "Tight auditing of
differentially private machine learning"; Andrew et al. 2024, "One-shot empirical privacy
estimation for federated learning", for canary clients). Each trial is one independent
release of the mechanism, so Clopper-Pearson over trials is valid (no one-run caveat).

The claim is computed for exactly the relation tested: one release of the mechanism with
sensitivity C (one example's, or one client's, contribution present or replaced by a
zero contribution), at sampling probability 1. A noise-free mechanism separates the two
cases perfectly, so with enough trials its lower bound exceeds any finite claim; the
certifiable bound (a perfect attack's) is computed first and a budget whose certifiable
bound is at or under the claim is reported inconclusive, never as a pass.

Multi-step (Nasr et al. 2023's white-box, all-steps threat model): the canary is in (or
out of) every one of T real steps (rounds) of a trial, the auditor reads the canary
coordinate of every step's update and sums them, and the claim is the accountant's
composition of the T steps at sampling probability 1 for one example (client) present in
all of them. Summing is the optimal test for this composition (T Gaussian releases of the
same shift are one Gaussian release with sqrt(T) times the signal-to-noise), so the
audit measures the composed claim, not a single step's. Its price: the claim grows with
T while a perfect attack certifies only about log(trials), so refuting T steps needs
many more trials (`trials_to_refute`).

The coins are the auditor's, not the mechanism's: fair bits from an AES-CTR keystream
keyed by the OS (secagg.dp.CryptoRandom), or from a given 32-byte seed for reproducible
runs. Which trials hold the canary must stay unknown to the mechanism, not to the reader.
"""

from __future__ import annotations

import enum
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from fedveil.attacks.output.empirical_epsilon import (
    certifiable_clopper_pearson,
    threshold_grid_clopper_pearson,
)
from fedveil.attacks.protections import Aggregators, DPSettings
from fedveil.errors import ConfigError
from fedveil.secagg.dp import ClientDPConfig, CryptoRandom, PrivacyAccountant

THRESHOLDS = (0.5, 1.0, 2.0, 3.0)
"""Guess "in" when the canary coordinate, in units of C, is at least t. Fixed in advance
(Bonferroni over these four): 0.5 splits a noise-free release exactly; the higher ones
trade TPR for the low FPR a large epsilon needs when some noise remains."""

QUICK_DP_SGD_TRIALS = 4000
"""DP-SGD steps on a tiny linear model cost well under a millisecond each: a few seconds,
and a perfect attack then certifies more than the one-step claim at z = 1."""

QUICK_CLIENT_DP_TRIALS = 2000
"""A real in-process SecAgg+ round with client DP costs a few milliseconds: about ten
seconds, still certifying more than the one-round claim at z = 1."""

FULL_MULTISTEP_STEPS = 2
"""The full profile's epsilon column audits this many composed steps (rounds) per trial.

Why 2 and not the federation's hundreds: the composed claim grows with T while a perfect
attack's bound grows only with log(trials); at the audit's z = 1 two steps already need
about 12,000 trials to be refutable (`trials_to_refute`), four need about 460,000."""

FULL_MULTISTEP_TRIALS = 16000
"""Trials of the full profile's multi-step audits (each `FULL_MULTISTEP_STEPS` real steps
or rounds): a perfect attack then certifies more than the two-step claim at z = 1. Not
in the quick profile: its one-step budgets (4000 and 2000 releases) would have to grow
to at least 24,000 releases to refute two steps at z = 1."""

Scorer = Callable[[bool], float]
"""One independent release with (True) or without the canary -> canary coordinate / C
(multi-step: the mean over its T steps of each step's canary coordinate / C)."""


class CanaryVerdict(enum.StrEnum):
    REFUTED = "refuted"
    CONSISTENT = "consistent"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class CanaryAudit:
    """One canary audit: the claim for the relation tested, the lower bound at confidence
    1 - alpha, and the bound a perfect attack could certify with this budget."""

    mechanism: str
    claim: float
    delta: float
    alpha: float
    lower_bound: float
    certifiable: float
    trials: int
    threshold: float
    tp: int
    fn: int
    fp: int
    tn: int
    steps: int = 1

    @property
    def tpr(self) -> float:
        return self.tp / max(self.tp + self.fn, 1)

    @property
    def fpr(self) -> float:
        return self.fp / max(self.fp + self.tn, 1)

    @property
    def verdict(self) -> CanaryVerdict:
        """Refuted whenever the bound exceeds the claim (valid whatever the budget);
        otherwise inconclusive if even a perfect attack could not have refuted it."""
        if self.lower_bound > self.claim:
            return CanaryVerdict.REFUTED
        if self.certifiable <= self.claim:
            return CanaryVerdict.INCONCLUSIVE
        return CanaryVerdict.CONSISTENT

    def summary(self) -> str:
        steps = f" over {self.steps} steps" if self.steps > 1 else ""
        return (
            f"{self.mechanism} canary audit{steps}: epsilon claimed {self.claim:.3f} (delta "
            f"{self.delta:g}), lower bound {self.lower_bound:.3f} at {1 - self.alpha:.0%}, "
            f"certifiable {self.certifiable:.3f} with {self.trials} trials (TPR "
            f"{self.tpr:.3f}, FPR {self.fpr:.4f} at {self.threshold:g} C): {self.verdict}"
        )


def canary_coins(trials: int, seed: bytes | None = None) -> np.ndarray:
    """`trials` fair coins (True: the canary is in), from the OS-keyed CSPRNG or a seed."""
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 2:
        raise ConfigError(f"trials must be an integer >= 2, got {trials!r}")
    return CryptoRandom(seed).bits(trials)


def certifiable_for(trials: int, *, delta: float, alpha: float) -> float:
    """A perfect attack's bound for a budget, before running: half the trials each way."""
    return certifiable_clopper_pearson(
        trials // 2, trials - trials // 2, tests=len(THRESHOLDS), delta=delta, alpha=alpha
    )


def trials_to_refute(claim: float, *, delta: float, alpha: float, limit: int = 1 << 24) -> int:
    """The fewest trials (even) whose perfect attack certifies more than `claim`: the
    budget below which an audit of this claim can only be inconclusive."""
    if certifiable_for(limit, delta=delta, alpha=alpha) <= claim:
        raise ConfigError(
            f"no budget up to {limit} trials can refute epsilon {claim:.3g}: audit fewer steps"
        )
    low, high = 2, limit  # certifiable(low) may already exceed the claim
    if certifiable_for(low, delta=delta, alpha=alpha) > claim:
        return low
    while high - low > 2:
        mid = (low + high) // 4 * 2
        if certifiable_for(mid, delta=delta, alpha=alpha) > claim:
            high = mid
        else:
            low = mid
    return high


def run_canary_audit(
    mechanism: str,
    release: Scorer,
    *,
    claim: float,
    trials: int,
    delta: float,
    alpha: float,
    seed: bytes | None = None,
    steps: int = 1,
) -> CanaryAudit:
    """Draw the coins, run one release per trial, bound epsilon over the trials.
    `steps`: how many mechanism steps each release spans (the claim's composition)."""
    coins = canary_coins(trials, seed)
    scores = np.array([release(bool(coin)) for coin in coins], dtype=np.float64)
    certifiable = certifiable_for(trials, delta=delta, alpha=alpha)
    if coins.all() or not coins.any():  # one-sided coins (p = 2^(1 - trials)): no evidence
        n_in = int(coins.sum())
        return CanaryAudit(
            mechanism,
            claim,
            delta,
            alpha,
            0.0,
            certifiable,
            trials,
            float("inf"),
            0,
            n_in,
            0,
            trials - n_in,
            steps,
        )
    best = threshold_grid_clopper_pearson(scores, coins, THRESHOLDS, delta=delta, alpha=alpha)
    return CanaryAudit(
        mechanism,
        claim,
        delta,
        alpha,
        best.epsilon,
        certifiable,
        trials,
        best.threshold,
        best.tp,
        best.fn,
        best.fp,
        best.tn,
        steps,
    )


# --- DP-SGD: a Dirac gradient canary in a real Opacus step --------------------------------


def _steps(steps: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps must be an integer >= 1, got {steps!r}")
    return steps


def _dp_sgd_release(settings: DPSettings, dim: int, batch: int, steps: int = 1) -> Scorer:
    """A real make_private session (Opacus hooks, per-example clipping, the OS-CSPRNG
    Gaussian noise) on a bias-free linear model whose per-example gradient is its input.

    Why a linear model: the gradient of w.x is x whatever w is, so the auditor writes
    each example's gradient exactly. Row 0 is the canary slot (C e_0 in, zero out: a zero
    gradient adds nothing to the clipped sum, so the sums differ by exactly the canary,
    the add/remove relation); the other rows are background examples of norm 2C off
    coordinate 0, clipped by the real clipper. Sampling rate 1 (the whole batch). Weights
    are zeroed at the start of each trial, then the trial takes `steps` real steps of
    the same session (the weights move from step to step as in training; the gradient of
    a linear model does not depend on them); the auditor reads each step's update of
    coordinate 0 (white-box, every step) and returns their mean, in units of C."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from fedveil.learner.dp_sgd import DPSGDConfig, make_private

    c = settings.clip_norm
    rows = torch.zeros(batch, dim, dtype=torch.float64)
    background = torch.randn(batch - 1, dim - 1, generator=torch.Generator().manual_seed(0))
    rows[1:, 1:] = 2 * c * background / background.norm(dim=1, keepdim=True)
    model = nn.Linear(dim, 1, bias=False).to(torch.float64)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    loader = DataLoader(TensorDataset(rows), batch_size=batch)
    config = DPSGDConfig(max_grad_norm=c, noise_multiplier=settings.noise_multiplier)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        session = make_private(model, optimizer, loader, config)
    weight = next(p for p in session.model.parameters() if p.requires_grad)
    scale = float(session.optimizer.expected_batch_size) / c

    def loss(module: nn.Module, data: Sequence[torch.Tensor]) -> torch.Tensor:
        return module(data[0]).sum(dim=1)

    def release(canary_in: bool) -> float:
        rows[0, 0] = c if canary_in else 0.0
        with torch.no_grad():
            weight.zero_()
        total = 0.0
        for _ in range(steps):
            before = float(weight.detach()[0, 0])
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=UserWarning)
                for step in session.data_loader:
                    session.train_step(step, loss)
            # SGD with lr 1: the step moved w by -(clipped sum + noise) / expected batch.
            total += (before - float(weight.detach()[0, 0])) * scale
        return total / steps

    return release


def dp_sgd_claim(settings: DPSettings, steps: int = 1) -> float:
    """The accountant's epsilon for `steps` Gaussian steps at sampling probability 1: one
    example present in every step (add/remove), sensitivity C, noise z C each."""
    return settings.epsilon(steps=_steps(steps), sampling_prob=1.0)


def dp_sgd_canary_audit(
    settings: DPSettings,
    trials: int = QUICK_DP_SGD_TRIALS,
    alpha: float = 0.05,
    *,
    dim: int = 8,
    batch: int = 4,
    seed: bytes | None = None,
    steps: int = 1,
) -> CanaryAudit:
    """Audit `steps` DP-SGD steps (Gaussian mechanism, sensitivity C, add/remove one
    example present in every step) against their composed claim, `dp_sgd_claim`."""
    if dim < 2 or batch < 2:
        raise ConfigError(f"need dim >= 2 and batch >= 2, got dim={dim}, batch={batch}")
    claim = dp_sgd_claim(settings, steps)
    release = _dp_sgd_release(settings, dim, batch, steps)
    return run_canary_audit(
        "dp-sgd",
        release,
        claim=claim,
        trials=trials,
        delta=settings.delta,
        alpha=alpha,
        seed=seed,
        steps=steps,
    )


# --- client-level DP: a Dirac canary client in a real SecAgg+ round -----------------------


def client_dp_claim(config: ClientDPConfig, delta: float, steps: int = 1) -> float:
    """`steps` rounds' epsilon as the protocol reports it: their events (the distributed
    discrete Gaussian with the rounded L2 sensitivity) in the federation's default
    accountant, which accounts discrete noise with RDP."""
    accountant = PrivacyAccountant()
    for event in config.events(sampling_prob=1.0, steps=_steps(steps)):
        accountant.compose(event)
    return float(accountant.epsilon(delta))


def _client_dp_release(config: ClientDPConfig, aggregators: Aggregators, steps: int = 1) -> Scorer:
    """The injected client-DP round over a fixed cohort: slot 0 holds the canary client
    (C e_0) or a client with a zero update, the others background updates of norm 2C off
    coordinate 0. Why replace and not remove: the cohort, hence the noise (sized for
    min_clients = n), stays the same, and the sums differ by exactly one client's clipped
    contribution, the sensitivity the accountant's event is stated for. A trial runs
    `steps` real rounds (each its own SecAgg+ run and noise) with the same canary choice;
    the auditor reads every round's mean and returns the mean of the canary coordinate."""
    c, n, dim = config.clip_norm, config.max_cohort, config.dim
    background = np.random.default_rng(0).standard_normal((n - 1, dim))
    background[:, 0] = 0.0
    background *= 2 * c / np.linalg.norm(background, axis=1, keepdims=True)
    aggregate = aggregators.client_dp(config)
    canary = np.zeros(dim)
    canary[0] = c

    def release(canary_in: bool) -> float:
        updates = [canary if canary_in else np.zeros(dim), *background]
        total = 0.0
        for _ in range(steps):
            mean, contributors = aggregate(updates, [1] * n)
            total += float(mean[0]) * contributors / c
        return total / steps

    return release


def client_dp_canary_audit(
    settings: DPSettings,
    aggregators: Aggregators,
    trials: int = QUICK_CLIENT_DP_TRIALS,
    alpha: float = 0.05,
    *,
    clients: int = 3,
    dim: int = 4,
    seed: bytes | None = None,
    steps: int = 1,
) -> CanaryAudit:
    """Audit `steps` client-DP SecAgg+ rounds (one client's update present in every
    round or replaced by a zero update) against their composed epsilon."""
    if clients < 2 or dim < 2:
        raise ConfigError(f"need clients >= 2 and dim >= 2, got clients={clients}, dim={dim}")
    config = settings.client_dp_config(dim, clients)
    claim = client_dp_claim(config, settings.delta, steps)
    release = _client_dp_release(config, aggregators, steps)
    return run_canary_audit(
        "client-dp",
        release,
        claim=claim,
        trials=trials,
        delta=settings.delta,
        alpha=alpha,
        seed=seed,
        steps=steps,
    )
