"""Models: the built-in tiny captioner (the open general model) and local model loading."""

from fedveil.learner.models.base import (
    MARKER,
    BaseModelConfig,
    build_base_model,
    default_model_dir,
    is_built,
    load_base_model,
)
from fedveil.learner.models.captioner import CaptionerConfig, build_captioner, build_image_processor
from fedveil.learner.models.loading import (
    LoadedModel,
    ModelKind,
    ModelLoadError,
    load_model,
    model_kind,
)
from fedveil.learner.models.tokenizer import build_word_tokenizer

__all__ = [
    "MARKER",
    "BaseModelConfig",
    "CaptionerConfig",
    "LoadedModel",
    "ModelKind",
    "ModelLoadError",
    "build_base_model",
    "build_captioner",
    "build_image_processor",
    "build_word_tokenizer",
    "default_model_dir",
    "is_built",
    "load_base_model",
    "load_model",
    "model_kind",
]
