"""Local training: examples encoded once as tensors, and a seeded loop with progress bars.

The party learner (`learner.training.party`) is imported from its module: it depends on
the evaluation package, which depends on this one.
"""

from fedveil.learner.training.batches import (
    IGNORE_INDEX,
    EncodedCaptions,
    EncodedText,
    encode_captions,
    encode_images,
    encode_texts,
    prompt_ids,
)
from fedveil.learner.training.loop import TrainConfig, TrainStats, batch_loss, torch_threads, train

__all__ = [
    "IGNORE_INDEX",
    "EncodedCaptions",
    "EncodedText",
    "TrainConfig",
    "TrainStats",
    "batch_loss",
    "encode_captions",
    "encode_images",
    "encode_texts",
    "prompt_ids",
    "torch_threads",
    "train",
]
