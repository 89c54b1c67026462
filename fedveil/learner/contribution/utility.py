"""How good a candidate global adapter is: minus its caption loss on validation scenes,
and that utility's gradient at the global adapter (what the validator broadcasts for
projected contribution scores, learner.contribution.projected_scores).

Why the teacher-forced loss and not concept recall: a contribution run scores many
candidates (or differentiates the utility) every round, and the loss needs no generation
(one forward pass per domain over the scenes) and moves smoothly with small updates,
where recall only moves once a concept's word wins the argmax
(learner.evaluation.report.caption_loss_by_domain).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from fedveil.learner.data.concepts import DOMAIN_PROMPTS, DOMAINS
from fedveil.learner.data.datasets import SceneExample
from fedveil.learner.evaluation.report import caption_loss_by_domain
from fedveil.learner.lora.adapter import canonical_name
from fedveil.learner.lora.codec import load_adapter_vector
from fedveil.learner.training.batches import encode_captions
from fedveil.learner.training.loop import batch_loss
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


def validation_gradient(
    party: Party, scenes: Sequence[SceneExample], pixels: torch.Tensor
) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    """gradient(vector) = (utility, d utility / d adapter) at `vector`, the utility being
    validation_utility's (the same batches, in eval mode), the gradient in the adapter
    layout's order (float64). Uses `party`'s model as validation_utility does."""
    model, layout, loaded = party.model, party.layout, party.loaded
    batches = []
    for domain in DOMAINS:
        encoded = encode_captions(
            loaded.tokenizer,
            loaded.image_processor,
            [s.image for s in scenes],
            [DOMAIN_PROMPTS[domain]] * len(scenes),
            [s.captions[domain] for s in scenes],
            pixel_values=pixels,
        )
        batches.append(encoded.rows(torch.arange(len(encoded))))
    params = {
        canonical_name(name): p
        for name, p in model.named_parameters()
        if p.requires_grad and "lora_" in name
    }

    def gradient(vector: np.ndarray) -> tuple[float, np.ndarray]:
        load_adapter_vector(model, layout, vector)
        was_training = model.training
        model.eval()
        for p in params.values():
            p.grad = None
        loss = torch.stack([batch_loss(model, b) for b in batches]).mean()
        loss.backward()
        flat = np.zeros(layout.size, dtype=np.float64)
        for slot in layout.tensors.slots:
            grad = params[slot.name].grad
            if grad is not None:  # minus: the gradient of the utility, -loss
                flat[slot.offset : slot.offset + slot.size] = -grad.reshape(-1).double().numpy()
        for p in params.values():
            p.grad = None
        model.train(was_training)
        return -float(loss.detach()), flat

    return gradient
