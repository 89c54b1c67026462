"""DP-SGD seed replay: regenerate a party's Gaussian noise from a seed the attacker can guess.

Why this attack: DP-SGD's guarantee holds only against someone who cannot predict the noise.
Opacus draws it with `torch.normal` from torch's generator unless secure mode is on, and a
training recipe usually fixes that generator's seed in its configuration (for reproducible
data order). An observer of the party's noised gradient who knows or guesses the seed
replays the same draws, subtracts them, and holds the clipped gradient sum with no noise at
all: every epsilon the accountant reports is void. Against fedveil's DP-SGD the noise comes
from the OS CSPRNG (fedveil.learner.dp_randomness), so no seed reproduces it.

How the attacker picks the seed without knowing the data: the clipped sum of a batch has
norm at most (batch size) x C, far below the noise's norm sqrt(d) z C in the dimensions of
an adapter, so the right guess is the one that leaves the smallest remainder.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from fedveil.errors import ConfigError


@dataclass(frozen=True)
class SeedReplayResult:
    """The best guess and what it removed.

    seed: the guess whose replayed noise left the smallest remainder. noise_removed: the
    share of the noise's energy that subtracting the replay removed, against the true clipped
    gradient (1: all of it, the attack recovered the un-noised gradient; <= 0: none, the
    replay was independent of the noise, and subtracting it adds energy). guesses: how many
    seeds were tried.
    """

    seed: int
    noise_removed: float
    guesses: int

    @property
    def leaked(self) -> bool:
        """Nearly all noise removed: the observer holds the un-noised clipped gradient."""
        return self.noise_removed > 0.99


def replayed_noise(
    shapes: Sequence[torch.Size], std: float, scale: float, seed: int, dtype: torch.dtype
) -> list[torch.Tensor]:
    """What Opacus' DPOptimizer outside secure mode adds after `torch.manual_seed(seed)`:
    one `torch.normal(0, std)` draw per parameter, in parameter order, divided by `scale`
    (the expected batch size, for mean reduction). torch's global generator is restored."""
    state = torch.get_rng_state()
    try:
        torch.manual_seed(seed)
        return [torch.normal(0.0, std, size=tuple(s), dtype=dtype) / scale for s in shapes]
    finally:
        torch.set_rng_state(state)


def seed_replay_attack(
    observed: Sequence[torch.Tensor],
    clean: Sequence[torch.Tensor],
    *,
    std: float,
    scale: float,
    seed_guesses: Iterable[int],
) -> SeedReplayResult:
    """Try every guess, keep the one leaving the smallest remainder ||observed - replay||
    (chosen without the clean gradient), then judge it against `clean` (the clipped, scaled
    gradient before noise, which only the evaluation knows)."""
    if len(observed) != len(clean) or not observed:
        raise ConfigError("observed and clean must list the same parameters, at least one")
    shapes = [o.shape for o in observed]
    dtype = observed[0].dtype
    best: tuple[float, int, list[torch.Tensor]] | None = None
    tried = 0
    for seed in seed_guesses:
        tried += 1
        replay = replayed_noise(shapes, std, scale, seed, dtype)
        left = sum(
            float((o - r).double().pow(2).sum()) for o, r in zip(observed, replay, strict=True)
        )
        if best is None or left < best[0]:
            best = (left, seed, replay)
    if best is None:
        raise ConfigError("seed_guesses is empty: give the seeds to try")
    _, seed, replay = best
    noise_energy = sum(
        float((o - c).double().pow(2).sum()) for o, c in zip(observed, clean, strict=True)
    )
    if noise_energy == 0:
        raise ConfigError("the observed gradient carries no noise: nothing to replay")
    remainder = sum(
        float((o - r - c).double().pow(2).sum())
        for o, r, c in zip(observed, replay, clean, strict=True)
    )
    return SeedReplayResult(seed, 1.0 - remainder / noise_energy, tried)
