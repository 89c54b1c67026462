"""How good a candidate global adapter is: minus its caption loss on validation scenes.

Why the teacher-forced loss and not concept recall: a contribution run scores 2^m - 1
candidates a round, and the loss needs no generation (one forward pass per domain over
the scenes) and moves smoothly with small updates, where recall only moves once a
concept's word wins the argmax (learner.evaluation.report.caption_loss_by_domain).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from fedveil.learner.data.datasets import SceneExample
from fedveil.learner.evaluation.report import caption_loss_by_domain
from fedveil.learner.lora.codec import load_adapter_vector
from fedveil.learner.training.party import Party


def validation_utility(
    party: Party, scenes: Sequence[SceneExample], pixels: torch.Tensor
) -> Callable[[np.ndarray], float]:
    """utility(vector) = -(mean over domains of the caption loss) with `vector` loaded
    into `party`'s model (the party reloads its own adapter before it next trains)."""

    def utility(vector: np.ndarray) -> float:
        load_adapter_vector(party.model, party.layout, vector)
        losses = caption_loss_by_domain(
            party.model,
            party.loaded.tokenizer,
            party.loaded.image_processor,
            scenes,
            pixel_values=pixels,
        )
        return -float(np.mean(list(losses.values())))

    return utility
