"""DP-SGD randomness nobody can replay (issue 15), tried as an attacker would first.

The attacker knows everything in the configuration, the seed included, and reruns or
re-derives a party's DP-SGD round. If the Gaussian noise or the Poisson batches come from
torch's seeded generator, they regenerate them and subtract the noise: the reported
epsilon does not hold against them. Non-private training must stay reproducible.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from peft import LoraConfig
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from transformers import GPT2Config, GPT2LMHeadModel

from fedveil.errors import ConfigError
from fedveil.learner.data.concepts import DOMAINS
from fedveil.learner.data.datasets import CityDataConfig, make_party_datasets
from fedveil.learner.dp_randomness import gaussian_noise
from fedveil.learner.dp_sgd import (
    DPSGDConfig,
    DPSGDSession,
    make_private,
    prepare_lora_model,
    trainable_parameters,
)
from fedveil.learner.federated_local import CaptionerRecipe, make_parties
from fedveil.learner.training.dp_loop import DPTrainConfig
from fedveil.learner.training.party import Party
from tests.helpers.captioner_fixtures import tiny_base

VOCAB, SEQ, N = 48, 8, 48
CONFIG_SEED = 1234


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _session() -> DPSGDSession:
    torch.manual_seed(0)
    base = GPT2LMHeadModel(
        GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=VOCAB, n_positions=16)
    )
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], lora_dropout=0.0)
    model = prepare_lora_model(base, lora, "cpu")
    optimizer = torch.optim.SGD(trainable_parameters(model), lr=0.05)
    loader = DataLoader(TensorDataset(torch.arange(N)), batch_size=8)  # rows by index
    config = DPSGDConfig(max_grad_norm=0.5, noise_multiplier=1.0)
    return make_private(model, optimizer, loader, config)


def _noise_only_step(session: DPSGDSession) -> list[torch.Tensor]:
    """The gradients of an empty Poisson batch: Opacus' noise, scaled, and nothing else."""
    assert session.train_step([torch.zeros((0, SEQ), dtype=torch.long)], _no_loss) is None
    return [p.grad.detach().clone() for p in session.optimizer.params]


def _no_loss(model: nn.Module, batch: object) -> torch.Tensor:
    raise AssertionError("an empty batch takes a noise-only step")


def _attacker_regenerates(session: DPSGDSession, seed: int) -> list[torch.Tensor]:
    """What Opacus outside secure_mode draws after torch.manual_seed(seed)."""
    optimizer = session.optimizer
    std = optimizer.noise_multiplier * optimizer.max_grad_norm
    torch.manual_seed(seed)
    return [
        torch.normal(0, std, size=p.shape, dtype=p.dtype) / optimizer.expected_batch_size
        for p in optimizer.params
    ]


def test_replay_attack_cannot_regenerate_the_noise_from_the_config_seed() -> None:
    session = _session()
    torch.manual_seed(CONFIG_SEED)
    rng_before = torch.get_rng_state()
    observed = _noise_only_step(session)
    # The noise did not come from torch's global generator at all...
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert all(g.abs().sum() > 0 for g in observed)
    # ...so the attacker's regeneration from the seed misses every tensor.
    predicted = _attacker_regenerates(session, CONFIG_SEED)
    for seen, guess in zip(observed, predicted, strict=True):
        assert not torch.allclose(seen, guess)
    # Rerunning the same step with the same seed gives fresh noise.
    again = _session()
    torch.manual_seed(CONFIG_SEED)
    for first, second in zip(observed, _noise_only_step(again), strict=True):
        assert not torch.allclose(first, second)


def test_poisson_batches_are_not_replayed_from_the_config_seed() -> None:
    def batches(session: DPSGDSession) -> list[list[int]]:
        torch.manual_seed(CONFIG_SEED)
        return [index.tolist() for (index,) in session.data_loader]

    first, second = _session(), _session()
    assert len(first.data_loader) == 6  # 48 rows at expected batch 8
    assert batches(first) != batches(second)
    # Still Poisson at the accounted rate: each row in each batch with probability 1/6.
    draws = [len(b) for _ in range(50) for b in batches(first)]
    assert abs(np.mean(draws) / N - first.sample_rate) < 0.02  # ~6 standard errors


def test_noise_is_gaussian_at_the_given_scale_and_leaves_torch_rng_alone() -> None:
    reference = torch.zeros(200_000, dtype=torch.float32)
    torch.manual_seed(CONFIG_SEED)
    rng_before = torch.get_rng_state()
    noise = gaussian_noise(2.0, reference)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert noise.dtype == torch.float32 and noise.shape == reference.shape
    assert bool(torch.isfinite(noise).all())
    values = noise.double()
    assert abs(float(values.mean())) < 0.03  # standard error 0.0045
    assert float(values.std()) == pytest.approx(2.0, abs=0.02)  # standard error 0.0032
    beyond = float((values.abs() > 4.0).double().mean())  # P(|Z| > 2) = 0.0455
    assert beyond == pytest.approx(0.0455, abs=0.003)
    assert not torch.equal(noise, gaussian_noise(2.0, reference))
    assert torch.equal(gaussian_noise(0.0, reference), reference)


def _party(dp: bool) -> Party:
    recipe = CaptionerRecipe(
        rounds=1,
        data=CityDataConfig(samples_per_party=24),
        dp=DPTrainConfig(clip_norm=0.5, epsilon=8.0, rounds=1) if dp else None,
    )
    recipe = dataclasses.replace(
        recipe,
        train=dataclasses.replace(recipe.train, batch_size=8, progress=False, seed=CONFIG_SEED),
    )
    datasets = make_party_datasets(recipe.data, DOMAINS[:1])
    return make_parties(tiny_base(), datasets, recipe)[0]


def test_a_dp_round_rerun_with_the_same_config_seed_is_fresh_and_plain_rounds_repeat() -> None:
    first, second = _party(dp=True).train_round(0), _party(dp=True).train_round(0)
    assert first.stats.steps == second.stats.steps == 3
    assert not np.allclose(first.vector, second.vector)
    # Without DP the same seed still reproduces the round bit for bit.
    plain = _party(dp=False).train_round(0)
    np.testing.assert_array_equal(plain.vector, _party(dp=False).train_round(0).vector)
    assert np.linalg.norm(plain.vector) > 0


def test_opacus_warnings_are_not_silenced() -> None:
    party = _party(dp=True)
    with pytest.warns(UserWarning, match="Secure RNG turned off"):
        assert party.dp_trainer is not None


@pytest.mark.parametrize("accountant", ["prv", "rdp", "gdp"])
def test_fixed_batches_are_refused_with_a_poisson_accountant(accountant: str) -> None:
    with pytest.raises(ConfigError, match="Poisson sampling"):
        DPSGDConfig(
            max_grad_norm=1.0, noise_multiplier=1.0, accountant=accountant, poisson_sampling=False
        )
