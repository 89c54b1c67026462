"""A party's own held-out evaluation after each applied round, and its metrics file.

Why the existing scores: a causal LM is scored by the training loss itself
(learner.training.loop.batch_loss, mean token cross-entropy) over held-out texts, reported
with its perplexity; the built-in captioner by the demo's evaluation
(learner.evaluation.evaluate_captioner: mean concept recall and BLEU on full-caption test
scenes). So a party's per-round figure is the same number `fedveil demo` reports.

Why the global adapter: after a round every party holds the identical aggregate, so the
figure measures the federation's model on this party's own data, never a local one.

Why append + fsync: OUT/metrics.jsonl gets one JSON object per applied round, written
after the checkpoint (which keeps the latest round's figures in its metadata too). A run
killed between the two loses at most that round's line; a round applied twice after a
crash appears twice, and a reader keeps the last line of each round.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from fedveil.errors import ConfigError
from fedveil.learner.data.datasets import SceneExample
from fedveil.learner.lora.codec import load_adapter_vector
from fedveil.learner.training.batches import IGNORE_INDEX, EncodedText, encode_images, encode_texts
from fedveil.learner.training.loop import batch_loss
from fedveil.learner.training.party import Party

METRICS_FILE = "metrics.jsonl"


@dataclass(frozen=True)
class HeldOutResult:
    """One evaluation of the global adapter: `values` are JSON-ready figures."""

    data: str
    """"texts" (causal LM) or "captions" (captioner test scenes)."""
    examples: int
    values: Mapping[str, object]

    def summary(self) -> str:
        """The figures for the round's log line."""
        v = self.values
        if self.data == "texts":
            return (
                f"held-out perplexity {v['perplexity']:.4g} (mean token loss "
                f"{v['mean_token_loss']:.4f}) on {self.examples} texts"
            )
        return (
            f"held-out mean concept recall {v['mean_recall']:.3f}, BLEU {v['bleu']:.3f} "
            f"on {self.examples} scenes"
        )

    def as_dict(self) -> dict[str, object]:
        return {"data": self.data, "examples": self.examples, **self.values}


class HeldOut(Protocol):
    """A party's held-out data, ready to score its global adapter."""

    def evaluate(self, party: Party) -> HeldOutResult: ...


@dataclass(frozen=True, eq=False)
class TextHeldOut:
    """Held-out texts for a causal LM: mean token loss over all their tokens."""

    encoded: EncodedText
    batch_size: int

    @classmethod
    def from_texts(
        cls, party: Party, texts: Sequence[str], max_length: int, batch_size: int
    ) -> TextHeldOut:
        """Encoded as the training texts are (same tokenizer, same max_length)."""
        return cls(encode_texts(party.loaded.tokenizer, texts, max_length), batch_size)

    @torch.no_grad()
    def evaluate(self, party: Party) -> HeldOutResult:
        model = party.model
        load_adapter_vector(model, party.layout, party.global_vector)
        was_training = model.training
        model.eval()
        total, tokens = 0.0, 0
        try:
            for start in range(0, len(self.encoded), self.batch_size):
                index = torch.arange(start, min(start + self.batch_size, len(self.encoded)))
                batch = self.encoded.rows(index)
                count = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
                if count:  # batch_loss is the mean over these tokens
                    total += float(batch_loss(model, batch)) * count
                    tokens += count
        finally:
            model.train(was_training)
        if not tokens:
            raise ConfigError("the held-out texts hold no token to predict (each is one token)")
        loss = total / tokens
        values = {"mean_token_loss": loss, "perplexity": math.exp(min(loss, 700.0))}
        return HeldOutResult("texts", len(self.encoded), values)


@dataclass(frozen=True, eq=False)
class CaptionHeldOut:
    """Held-out captioner scenes, scored as `fedveil demo` scores its models."""

    test_set: tuple[SceneExample, ...]
    pixel_values: torch.Tensor

    @classmethod
    def from_scenes(cls, party: Party, test_set: Sequence[SceneExample]) -> CaptionHeldOut:
        """The test images are encoded once, for every round."""
        scenes = tuple(test_set)
        pixels = encode_images(party.loaded.image_processor, [s.image for s in scenes])
        return cls(scenes, pixels)

    def evaluate(self, party: Party) -> HeldOutResult:
        report = party.evaluate(self.test_set, self.pixel_values)
        return HeldOutResult("captions", len(self.test_set), report.as_dict())


def append_metrics(path: Path, record: Mapping[str, object]) -> None:
    """Append one JSON line to `path` and make it durable (flush + fsync)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(dict(record), sort_keys=True) + "\n"
    with path.open("a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())
