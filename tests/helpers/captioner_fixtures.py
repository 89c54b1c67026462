"""Small captioner builds shared by the model, LoRA and learning tests (built once per run).

Why not pytest fixtures: the same build serves several test modules; a module-level cache
builds it once per process, in a temporary directory removed at exit.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from fedveil.learner.models import BaseModelConfig, CaptionerConfig, LoadedModel, build_base_model
from fedveil.learner.models.loading import load_model
from fedveil.learner.training import TrainConfig

_ROOT = Path(tempfile.mkdtemp(prefix="fedveil-test-models-"))
atexit.register(shutil.rmtree, _ROOT, True)

TINY = BaseModelConfig(
    captioner=CaptionerConfig(
        encoder_hidden=32,
        encoder_layers=1,
        encoder_heads=2,
        decoder_hidden=32,
        decoder_layers=1,
        decoder_heads=2,
    ),
    samples=16,
    train=TrainConfig(epochs=1, batch_size=16, learning_rate=1e-3, progress=False),
)
"""Seconds to build; enough for save/load, LoRA layout and round-trip tests."""

FAST = BaseModelConfig(
    samples=300,
    train=TrainConfig(
        epochs=3, batch_size=32, learning_rate=3e-3, schedule="cosine", progress=False
    ),
)
"""About 75 pretraining steps: a weak open model, enough for the fast learning test."""


@functools.cache
def tiny_base_dir() -> Path:
    return build_base_model(_ROOT / "tiny", TINY, progress=False)


@functools.cache
def fast_base_dir() -> Path:
    return build_base_model(_ROOT / "fast", FAST, progress=False)


def tiny_base() -> LoadedModel:
    """A fresh load of the tiny base model (each caller gets its own weights)."""
    return load_model(tiny_base_dir())
