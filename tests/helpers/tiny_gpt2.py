"""A saved two-layer GPT-2 with a ten-word tokenizer: the causal LM the `fedveil train`
tests federate (built in well under a second, loaded with from_pretrained, offline)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from fedveil.learner.models import build_word_tokenizer

WORDS = ["the", "gate", "is", "open", "closed", "meter", "reads", "high", "low", "pipe"]


def save_tiny_gpt2(path: Path, seed: int = 0) -> Path:
    """Write the model and its tokenizer to `path`; returns `path`.

    The weights are drawn from `seed` (the global RNG left as it was), so a test sees the
    same model whichever tests ran before it in the process."""
    tokenizer = build_word_tokenizer(WORDS, [])
    config = GPT2Config(
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=32,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
