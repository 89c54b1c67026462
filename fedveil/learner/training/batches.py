"""Turning examples into tensors once, so training epochs only index and slice.

Why up front: on two CPU cores, running the image processor and the tokenizer inside
every step would cost as much as the tiny model's forward pass. Encoding a few hundred
examples once costs milliseconds.

Decoder layout (the one convention every caption in fedveil follows):

    input   <bos> <prompt> w1 ... wn
    labels  -100  w1       w2 ... <eos>

The prompt is given, never predicted, so its position carries no loss; padding is on the
right and carries no loss either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from fedveil.errors import ConfigError

IGNORE_INDEX = -100


@dataclass(frozen=True, eq=False)
class EncodedCaptions:
    """A whole captioning dataset as tensors (row i is example i)."""

    pixel_values: torch.Tensor = field(repr=False)
    input_ids: torch.Tensor = field(repr=False)
    attention_mask: torch.Tensor = field(repr=False)
    labels: torch.Tensor = field(repr=False)

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def rows(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """The model inputs of a batch, trimmed to the batch's longest caption."""
        mask = self.attention_mask[index]
        width = int(mask.sum(dim=1).max())
        return {
            "pixel_values": self.pixel_values[index],
            "decoder_input_ids": self.input_ids[index, :width],
            "decoder_attention_mask": mask[:, :width],
            "labels": self.labels[index, :width],
        }


@dataclass(frozen=True, eq=False)
class EncodedText:
    """A causal-LM dataset as tensors; labels are the inputs, padding ignored."""

    input_ids: torch.Tensor = field(repr=False)
    attention_mask: torch.Tensor = field(repr=False)
    labels: torch.Tensor = field(repr=False)

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def rows(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        mask = self.attention_mask[index]
        width = int(mask.sum(dim=1).max())
        return {
            "input_ids": self.input_ids[index, :width],
            "attention_mask": mask[:, :width],
            "labels": self.labels[index, :width],
        }


def encode_images(image_processor: object, images: Sequence[np.ndarray]) -> torch.Tensor:
    """Pixel values exactly as the saved image processor makes them."""
    if not images:
        raise ConfigError("no images to encode")
    out = image_processor(list(images), return_tensors="pt")  # type: ignore[operator]
    return torch.as_tensor(out["pixel_values"], dtype=torch.float32)


def prompt_ids(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """The decoder's start: bos, then the prompt's tokens (none for an empty prompt)."""
    bos = tokenizer.bos_token_id
    if bos is None:
        raise ConfigError("the tokenizer has no bos token; a captioner needs one to start")
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
    if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids:
        raise ConfigError(f"prompt {prompt!r} is not in the tokenizer's vocabulary")
    return [int(bos), *map(int, ids)]


def encode_captions(
    tokenizer: PreTrainedTokenizerBase,
    image_processor: object,
    images: Sequence[np.ndarray],
    prompts: Sequence[str],
    captions: Sequence[str],
    max_length: int = 48,
    pixel_values: torch.Tensor | None = None,
) -> EncodedCaptions:
    """Images, prompts and captions as one set of tensors (see the module docstring).

    `pixel_values` (already encoded `images`) skips the image processor.
    """
    if not len(images) == len(prompts) == len(captions):
        raise ConfigError(
            f"{len(images)} images, {len(prompts)} prompts and {len(captions)} captions differ"
        )
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    if eos is None or pad is None:
        raise ConfigError("the tokenizer needs eos and pad tokens for caption training")
    rows_in, rows_out = [], []
    for prompt, caption in zip(prompts, captions, strict=True):
        start = prompt_ids(tokenizer, prompt)
        words = [int(i) for i in tokenizer(caption, add_special_tokens=False)["input_ids"]]
        sequence = (start + words)[:max_length]
        target = ([IGNORE_INDEX] * (len(start) - 1) + words + [int(eos)])[:max_length]
        rows_in.append(sequence)
        rows_out.append(target)
    width = max(len(r) for r in rows_in)
    input_ids = torch.full((len(rows_in), width), int(pad), dtype=torch.long)
    labels = torch.full((len(rows_in), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows_in), width), dtype=torch.long)
    for i, (seq, tgt) in enumerate(zip(rows_in, rows_out, strict=True)):
        input_ids[i, : len(seq)] = torch.tensor(seq)
        labels[i, : len(tgt)] = torch.tensor(tgt)
        mask[i, : len(seq)] = 1
    if pixel_values is None:
        pixel_values = encode_images(image_processor, images)
    elif pixel_values.shape[0] != len(images):
        raise ConfigError(f"{pixel_values.shape[0]} pixel rows for {len(images)} images")
    return EncodedCaptions(pixel_values, input_ids, mask, labels)


def encode_texts(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int = 128
) -> EncodedText:
    """Causal-LM rows: the text (with the tokenizer's own specials), padded on the right."""
    if not texts:
        raise ConfigError("no texts to encode")
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id
    if pad is None:
        raise ConfigError("the tokenizer has neither a pad nor an eos token to pad with")
    rows = [
        [int(i) for i in tokenizer(t, truncation=True, max_length=max_length)["input_ids"]]
        for t in texts
    ]
    rows = [r for r in rows if r]
    if not rows:
        raise ConfigError("every text encoded to zero tokens")
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), int(pad), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    labels = input_ids.masked_fill(mask == 0, IGNORE_INDEX)
    return EncodedText(input_ids, mask, labels)
