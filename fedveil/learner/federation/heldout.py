"""A party's own held-out evaluation after each applied round, and its metrics file.

Why the existing scores: a causal LM is scored by the training loss itself
(learner.training.loop.batch_loss, mean token cross-entropy) over held-out texts, reported
with its perplexity; the built-in captioner by the demo's evaluation
(learner.evaluation.evaluate_captioner: mean concept recall and BLEU on full-caption test
scenes), so a party's per-round figure is the same number `fedveil demo` reports; a
captioner on an organisation's own images by the training loss over its held-out
captions (ImageCaptionHeldOut says why not recall).

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

import numpy as np
import torch

from fedveil.errors import ConfigError
from fedveil.learner.data.datasets import SceneExample
from fedveil.learner.lora.codec import load_adapter_vector
from fedveil.learner.training.batches import (
    IGNORE_INDEX,
    EncodedCaptions,
    EncodedText,
    encode_images,
    encode_texts,
)
from fedveil.learner.training.loop import batch_loss
from fedveil.learner.training.party import Party, encode_image_captions

METRICS_FILE = "metrics.jsonl"


@dataclass(frozen=True)
class HeldOutResult:
    """One evaluation of the global adapter: `values` are JSON-ready figures."""

    data: str
    """"texts" (causal LM), "captions" (the built-in captioner's test scenes) or
    "image-captions" (an organisation's own held-out images and captions)."""
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
        if self.data == "image-captions":
            return (
                f"held-out caption perplexity {v['perplexity']:.4g} (mean token loss "
                f"{v['mean_token_loss']:.4f}) on {self.examples} image captions"
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

    def evaluate(self, party: Party) -> HeldOutResult:
        loss = mean_token_loss(party, self.encoded, self.batch_size)
        if loss is None:
            raise ConfigError("the held-out texts hold no token to predict (each is one token)")
        return HeldOutResult("texts", len(self.encoded), _loss_values(loss))


def _loss_values(loss: float) -> dict[str, object]:
    return {"mean_token_loss": loss, "perplexity": math.exp(min(loss, 700.0))}


@torch.no_grad()
def mean_token_loss(
    party: Party, encoded: EncodedText | EncodedCaptions, batch_size: int
) -> float | None:
    """The global adapter's cross-entropy per predicted token over all of `encoded`
    (batch_loss weighted by each batch's token count; None when nothing is predicted)."""
    model = party.model
    load_adapter_vector(model, party.layout, party.global_vector)
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    try:
        for start in range(0, len(encoded), batch_size):
            batch = encoded.rows(torch.arange(start, min(start + batch_size, len(encoded))))
            labels = batch["labels"]
            if "input_ids" in batch:  # causal LM: as batch_loss, position t predicts t + 1
                labels = labels[:, 1:]
            count = int((labels != IGNORE_INDEX).sum())
            if count:  # batch_loss is the mean over these tokens
                total += float(batch_loss(model, batch)) * count
                tokens += count
    finally:
        model.train(was_training)
    return total / tokens if tokens else None


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


@dataclass(frozen=True, eq=False)
class ImageCaptionHeldOut:
    """An organisation's held-out (image, caption) pairs: the captioner's mean token
    loss over their captions, and its perplexity, as TextHeldOut scores a causal LM.

    Why not the demo's concept recall and BLEU: recall counts the built-in scenes'
    annotated concepts in a generated caption, and an organisation's own captions carry
    no such annotation; the token loss needs nothing but the reference caption, and it is
    the very loss the party trains on (the same encoding, learner.training.party)."""

    encoded: EncodedCaptions
    batch_size: int

    @classmethod
    def from_pairs(
        cls, party: Party, images: Sequence[np.ndarray], captions: Sequence[str], batch_size: int
    ) -> ImageCaptionHeldOut:
        """Encoded once, for every round, as the party's training pairs are."""
        return cls(encode_image_captions(party.loaded, images, captions), batch_size)

    def evaluate(self, party: Party) -> HeldOutResult:
        loss = mean_token_loss(party, self.encoded, self.batch_size)
        if loss is None:  # every row predicts its eos at least, unless truncated away
            raise ConfigError("the held-out captions hold no token to predict")
        return HeldOutResult("image-captions", len(self.encoded), _loss_values(loss))


def append_metrics(path: Path, record: Mapping[str, object]) -> None:
    """Append one JSON line to `path` and make it durable (flush + fsync)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(dict(record), sort_keys=True) + "\n"
    with path.open("a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())
