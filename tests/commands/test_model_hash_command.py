"""`fedveil model-hash DIR` prints the base-model hash the training code binds rounds to."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from fedveil.attacks.targets.canary_lm import build_tokenizer, vocabulary_words
from fedveil.cli import main
from fedveil.learner.lora.hashing import base_model_hash


def _save_tiny_lm(directory: Path, seed: int) -> LlamaForCausalLM:
    tokenizer = build_tokenizer(vocabulary_words())
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=32,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return model


def test_prints_the_hash_of_the_weights_in_the_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = _save_tiny_lm(tmp_path / "a", seed=0)
    _save_tiny_lm(tmp_path / "b", seed=1)
    assert main(["model-hash", str(tmp_path / "a")]) == 0
    printed_a = capsys.readouterr().out.strip()
    assert printed_a == base_model_hash(first).hex()
    assert main(["model-hash", str(tmp_path / "b")]) == 0
    assert capsys.readouterr().out.strip() != printed_a  # other weights, other hash


def test_a_directory_without_a_model_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["model-hash", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
