"""Loading any local model directory with `from_pretrained`, never from the Hub.

Why refuse anything that is not a directory: `from_pretrained("gpt2")` would silently
download. fedveil's rule is that models arrive on disk first (built, or copied in), so a
name that is not a local directory is an error that says so, and every load passes
`local_files_only=True` as a second guard.

Two kinds are supported: vision-encoder-decoder captioners (model, tokenizer, image
processor) and causal language models (model, tokenizer).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import torch
from transformers import (
    AutoImageProcessor,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedTokenizerBase,
    VisionEncoderDecoderModel,
)

from fedveil.errors import ConfigError


class ModelKind(StrEnum):
    CAPTIONER = "captioner"
    CAUSAL_LM = "causal-lm"


class ModelLoadError(ConfigError):
    """A model directory is missing, incomplete or of a kind fedveil cannot train."""


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A model with what it needs to read its inputs; `image_processor` only for captioners."""

    kind: ModelKind
    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    image_processor: object | None
    path: Path


def model_kind(path: str | Path) -> ModelKind:
    """What the directory's config.json describes."""
    directory = Path(path)
    config_file = directory / "config.json"
    if not directory.is_dir():
        raise ModelLoadError(
            f"{str(path)!r} is not a local model directory; fedveil never downloads models, "
            "build the default with `build_base_model()` or copy a model directory in"
        )
    if not config_file.is_file():
        raise ModelLoadError(f"{directory} has no config.json; it is not a saved model")
    config = json.loads(config_file.read_text())
    if config.get("model_type") == "vision-encoder-decoder":
        return ModelKind.CAPTIONER
    if any(
        a.endswith("ForCausalLM") or a.endswith("LMHeadModel")
        for a in config.get("architectures") or []
    ):
        return ModelKind.CAUSAL_LM
    raise ModelLoadError(
        f"{directory} holds a {config.get('model_type')!r} model; fedveil trains "
        "vision-encoder-decoder captioners and causal language models"
    )


def load_model(path: str | Path) -> LoadedModel:
    """Load a captioner or a causal LM from a local directory, in float32, in eval mode."""
    directory = Path(path)
    kind = model_kind(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    processor: object | None = None
    model: torch.nn.Module
    if kind is ModelKind.CAPTIONER:
        model = VisionEncoderDecoderModel.from_pretrained(
            directory, local_files_only=True, dtype=torch.float32
        )
        processor = AutoImageProcessor.from_pretrained(directory, local_files_only=True)
    else:
        model = AutoModelForCausalLM.from_pretrained(
            directory, local_files_only=True, dtype=torch.float32
        )
        if tokenizer.pad_token_id is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return LoadedModel(kind, model, tokenizer, processor, directory)
