"""One real DP-SGD step observed by a party's peer, for the audit's seed-replay row.

Why in the audit: DP-SGD's epsilon holds only if nobody can predict the noise. A recipe
that fixes torch's seed for reproducible data order, with Opacus outside secure mode,
lets an observer replay the noise and strip it (attacks.update.seed_replay). The row runs
the attack on both generators at the same budget: Opacus' default (the positive control:
it must leak, or the row proves nothing) and fedveil's DP-SGD (noise from the OS CSPRNG,
learner.dp_randomness), which must leave the noise in place.

The step is a real one: a two-layer GPT-2 with LoRA on c_attn, Opacus' per-sample
clipping, noise and scaling, on one batch of random tokens. The attacker knows the
configuration but not the seed and tries `guesses` seeds, the configured one among them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedveil.attacks.update.seed_replay import SeedReplayResult, seed_replay_attack

VOCAB, SEQ, ROWS, BATCH = 48, 8, 32, 8
CONFIG_SEED = 1234
"""The seed a naive recipe's configuration fixes (for reproducible data order)."""
CLIP, NOISE = 0.5, 1.0


@dataclass(frozen=True)
class SeedReplayOutcome:
    """The attack on the seeded control and on fedveil's DP-SGD, same step and guesses."""

    control: SeedReplayResult
    fedveil: SeedReplayResult


def _parts() -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.utils.data.DataLoader]:
    from peft import LoraConfig
    from transformers import GPT2Config, GPT2LMHeadModel

    from fedveil.learner.dp_sgd import prepare_lora_model, trainable_parameters

    torch.manual_seed(0)  # the model's initialisation only; the DP noise is drawn later
    base = GPT2LMHeadModel(
        GPT2Config(
            n_embd=32,
            n_layer=2,
            n_head=2,
            vocab_size=VOCAB,
            n_positions=16,
            bos_token_id=0,
            eos_token_id=0,
        )
    )
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], lora_dropout=0.0)
    model = prepare_lora_model(base, lora, "cpu")
    optimizer = torch.optim.SGD(trainable_parameters(model), lr=0.05)
    tokens = torch.randint(0, VOCAB, (ROWS, SEQ), generator=torch.Generator().manual_seed(1))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(tokens), batch_size=BATCH)
    return model, optimizer, loader


def _step_and_attack(model: torch.nn.Module, optimizer: object, guesses: int) -> SeedReplayResult:
    """One step as the recipe runs it (torch seeded with CONFIG_SEED before the noise),
    then the attack with the noised gradient and, for judging only, the clean one."""
    from opacus.optimizers import DPOptimizer

    if not isinstance(optimizer, DPOptimizer):
        raise TypeError(f"expected Opacus' DPOptimizer, got {type(optimizer).__name__}")
    tokens = torch.randint(0, VOCAB, (BATCH, SEQ), generator=torch.Generator().manual_seed(2))
    optimizer.zero_grad()
    model(input_ids=tokens, labels=tokens).loss.backward()
    optimizer.clip_and_accumulate()
    scale = optimizer.expected_batch_size * optimizer.accumulated_iterations
    clean = [p.summed_grad.detach().clone() / scale for p in optimizer.params]
    state = torch.get_rng_state()
    try:
        torch.manual_seed(CONFIG_SEED)
        optimizer.add_noise()
    finally:
        torch.set_rng_state(state)
    optimizer.scale_grad()
    observed = [p.grad.detach().clone() for p in optimizer.params]
    if all(torch.equal(o, c) for o, c in zip(observed, clean, strict=True)):
        # no noise was added at all: the observer already holds the clean gradient
        return SeedReplayResult(seed=CONFIG_SEED, noise_removed=1.0, guesses=0)
    return seed_replay_attack(
        observed,
        clean,
        std=optimizer.noise_multiplier * optimizer.max_grad_norm,
        scale=scale,
        seed_guesses=range(CONFIG_SEED - guesses // 2, CONFIG_SEED + guesses - guesses // 2),
    )


def run_seed_replay(guesses: int = 512) -> SeedReplayOutcome:
    """The attack on Opacus' default generator and on fedveil's DP-SGD (one thread)."""
    from opacus import PrivacyEngine

    from fedveil.learner.dp_sgd import DPSGDConfig, make_private

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, optimizer, loader = _parts()
        control_model, control_optimizer, _ = PrivacyEngine(secure_mode=False).make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=NOISE,
            max_grad_norm=CLIP,
        )
        control = _step_and_attack(control_model, control_optimizer, guesses)
        model, optimizer, loader = _parts()
        session = make_private(
            model, optimizer, loader, DPSGDConfig(max_grad_norm=CLIP, noise_multiplier=NOISE)
        )
        ours = _step_and_attack(session.model, session.optimizer, guesses)
    finally:
        torch.set_num_threads(threads)
    return SeedReplayOutcome(control, ours)
