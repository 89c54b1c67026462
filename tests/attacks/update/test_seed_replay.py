"""The DP-SGD seed-replay attack, both ways: it strips the noise off a DP-SGD step whose
noise comes from torch's seeded generator (Opacus outside secure mode, as a naive recipe
runs it), and removes nothing from fedveil's DP-SGD, whose noise comes from the OS CSPRNG.

The step is the real one: a tiny GPT-2 with LoRA, a real batch, Opacus' own per-sample
clipping (clip_and_accumulate), noise (add_noise) and scaling (scale_grad). The attacker
knows the configuration but not the seed: it tries 2,000 guesses, the configured one among
them, and keeps the one that leaves the smallest remainder.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from opacus import PrivacyEngine
from opacus.optimizers import DPOptimizer
from peft import LoraConfig
from torch.utils.data import DataLoader, TensorDataset
from transformers import GPT2Config, GPT2LMHeadModel

from fedveil.attacks.update.seed_replay import seed_replay_attack
from fedveil.learner.dp_sgd import (
    DPSGDConfig,
    make_private,
    prepare_lora_model,
    trainable_parameters,
)

VOCAB, SEQ, ROWS, BATCH = 48, 8, 32, 8
CONFIG_SEED = 1234  # what the recipe's configuration fixes
CLIP, NOISE = 0.5, 1.0
GUESSES = range(2000)


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _parts() -> tuple[torch.nn.Module, torch.optim.Optimizer, DataLoader]:
    torch.manual_seed(0)
    base = GPT2LMHeadModel(
        GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=VOCAB, n_positions=16)
    )
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], lora_dropout=0.0)
    model = prepare_lora_model(base, lora, "cpu")
    optimizer = torch.optim.SGD(trainable_parameters(model), lr=0.05)
    tokens = torch.randint(0, VOCAB, (ROWS, SEQ), generator=torch.Generator().manual_seed(1))
    return model, optimizer, DataLoader(TensorDataset(tokens), batch_size=BATCH)


def _observe_one_step(
    model: torch.nn.Module, optimizer: DPOptimizer
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(observed noised gradient, clean clipped gradient), both scaled as Opacus releases
    them, for one real batch; the recipe seeds torch's generator first."""
    tokens = torch.randint(0, VOCAB, (BATCH, SEQ), generator=torch.Generator().manual_seed(2))
    optimizer.zero_grad()
    model(input_ids=tokens, labels=tokens).loss.backward()
    optimizer.clip_and_accumulate()
    scale = optimizer.expected_batch_size * optimizer.accumulated_iterations
    clean = [p.summed_grad.detach().clone() / scale for p in optimizer.params]
    torch.manual_seed(CONFIG_SEED)
    optimizer.add_noise()
    optimizer.scale_grad()
    return [p.grad.detach().clone() for p in optimizer.params], clean


def _attack(optimizer: DPOptimizer, observed: list[torch.Tensor], clean: list[torch.Tensor]):
    return seed_replay_attack(
        observed,
        clean,
        std=optimizer.noise_multiplier * optimizer.max_grad_norm,
        scale=optimizer.expected_batch_size * optimizer.accumulated_iterations,
        seed_guesses=GUESSES,
    )


def test_replay_strips_the_noise_from_a_seeded_generator() -> None:
    model, optimizer, loader = _parts()
    engine = PrivacyEngine(secure_mode=False)  # Opacus' default: torch's generator
    model, dp_optimizer, _ = engine.make_private(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=NOISE,
        max_grad_norm=CLIP,
    )
    observed, clean = _observe_one_step(model, dp_optimizer)
    result = _attack(dp_optimizer, observed, clean)
    assert result.seed == CONFIG_SEED and result.guesses == len(GUESSES)
    assert result.leaked and result.noise_removed > 0.999999  # the un-noised gradient


def test_replay_removes_nothing_from_fedveils_dp_sgd() -> None:
    model, optimizer, loader = _parts()
    session = make_private(
        model,
        optimizer,
        loader,
        DPSGDConfig(max_grad_norm=CLIP, noise_multiplier=NOISE),
    )
    observed, clean = _observe_one_step(session.model, session.optimizer)
    result = _attack(session.optimizer, observed, clean)
    # The best of 2,000 guesses, the configured seed among them, is independent of the
    # noise: subtracting it adds energy instead of removing it (about -1 in expectation).
    assert not result.leaked and result.noise_removed < 0
