"""Adapter deltas as a party of the built-in captioner would send them, for the tests of
`fedveil attack`: one SGD step of the real peft adapter (learner.lora) on real examples
of the city generator, saved keyed by canonical names (learner.lora.codec)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import save_file

from fedveil.learner.data.concepts import DOMAINS
from fedveil.learner.data.datasets import CityDataConfig, make_party_dataset
from fedveil.learner.lora import LoraSettings, apply_lora, canonical_name
from fedveil.learner.models.loading import load_model
from fedveil.learner.training.batches import encode_captions


@dataclass(frozen=True)
class Example:
    prompt: str
    caption: str
    image: np.ndarray


def city_examples(count: int, seed: int) -> list[Example]:
    """`count` examples of the public city generator, one domain each, distinct captions."""
    out: list[Example] = []
    s = seed
    while len(out) < count:
        config = CityDataConfig(seed=s, image_size=64, samples_per_party=1)
        example = make_party_dataset(config, DOMAINS[s % len(DOMAINS)]).examples[0]
        s += 1
        if all(e.caption != example.caption for e in out):
            out.append(Example(example.prompt, example.caption, example.image))
    return out


def sgd_deltas(
    model_dir: Path, settings: LoraSettings, examples: list[Example], lr: float = 0.5
) -> list[dict[str, np.ndarray]]:
    """One plain SGD step per example, each from the same round-start adapter."""
    loaded = load_model(model_dir)
    model = apply_lora(loaded.model, settings)
    model.train()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    start = {n: p.detach().clone() for n, p in trainable.items()}
    deltas = []
    for example in examples:
        encoded = encode_captions(
            loaded.tokenizer,
            loaded.image_processor,
            [example.image],
            [example.prompt],
            [example.caption],
        )
        model.zero_grad(set_to_none=True)
        loss = model(**encoded.rows(torch.arange(1))).loss
        loss.backward()
        grads = {n: p.grad for n, p in trainable.items()}
        assert all(g is not None for g in grads.values())
        deltas.append(
            {
                canonical_name(n): (-lr * g).detach().numpy().astype(np.float32)
                for n, g in grads.items()
                if g is not None
            }
        )
        with torch.no_grad():
            for n, p in trainable.items():
                p.copy_(start[n])
    return deltas


def save_delta(path: Path, delta: dict[str, np.ndarray]) -> Path:
    if path.suffix == ".npz":
        arrays: Any = delta
        np.savez(path, **arrays)
    else:
        save_file(delta, str(path))
    return path


def mean_delta(deltas: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {n: np.mean([d[n] for d in deltas], axis=0).astype(np.float32) for n in deltas[0]}


def stacked(deltas: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {n: np.stack([d[n] for d in deltas]) for n in deltas[0]}
