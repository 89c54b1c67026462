"""The DP-SGD seed-replay attack, both ways: it strips the noise off a DP-SGD step whose
noise comes from torch's seeded generator (Opacus outside secure mode, as a naive recipe
runs it), and removes nothing from fedveil's DP-SGD, whose noise comes from the OS CSPRNG.

The step is the real one (attacks.active.seed_replay_step, which the audit's seed-replay
row runs too): a tiny GPT-2 with LoRA, a real batch, Opacus' own per-sample clipping,
noise and scaling. The attacker knows the configuration but not the seed: it tries 2,000
guesses, the configured one among them, and keeps the one that leaves the smallest
remainder.
"""

from __future__ import annotations

import pytest
import torch

from fedveil.attacks.active.seed_replay_step import CONFIG_SEED, run_seed_replay
from fedveil.attacks.update.seed_replay import seed_replay_attack
from fedveil.errors import ConfigError

GUESSES = 2000


def test_replay_strips_the_seeded_noise_and_removes_nothing_from_fedveils_dp_sgd() -> None:
    outcome = run_seed_replay(GUESSES)
    control, ours = outcome.control, outcome.fedveil
    assert control.seed == CONFIG_SEED and control.guesses == GUESSES
    assert control.leaked and control.noise_removed > 0.999999  # the un-noised gradient
    # The best of 2,000 guesses, the configured seed among them, is independent of the
    # noise: subtracting it adds energy instead of removing it (about -1 in expectation).
    assert ours.guesses == GUESSES
    assert not ours.leaked and ours.noise_removed < 0


def test_the_attack_refuses_inputs_it_cannot_judge() -> None:
    grad = [torch.zeros(3)]
    with pytest.raises(ConfigError, match="carries no noise"):
        seed_replay_attack(grad, grad, std=1.0, scale=1.0, seed_guesses=[1])
    with pytest.raises(ConfigError, match="seed_guesses is empty"):
        seed_replay_attack([torch.ones(3)], grad, std=1.0, scale=1.0, seed_guesses=[])
