"""Scoring a captioner on the full-caption test set.

Why prompt per domain: the built-in captioner writes one domain's view after that
domain's prompt token, so a scene's full description is the three generations joined;
the concepts of every domain are then looked for in that one full caption. A captioner
without the prompt tokens (any other local model) is asked once, without a prompt, and
scored on that single caption the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from transformers import PreTrainedTokenizerBase

from fedveil.errors import ConfigError
from fedveil.learner.data.concepts import DOMAIN_PROMPTS, DOMAINS, Domain
from fedveil.learner.data.datasets import SceneExample
from fedveil.learner.evaluation.generation import greedy_captions
from fedveil.learner.metrics import concept_scores, corpus_bleu
from fedveil.learner.training.batches import encode_captions, encode_images
from fedveil.learner.training.loop import batch_loss

FULL_CAPTION_SEPARATOR = " ; "


@dataclass(frozen=True)
class EvaluationReport:
    """The demo's per-model figures (the JSON report's `base`/`local`/`federated` rows)."""

    recall_by_domain: dict[str, float]
    precision_by_domain: dict[str, float]
    mean_recall: float
    bleu: float
    captions: tuple[str, ...] = field(default=(), repr=False)
    """The generated full captions, in test-set order (kept out of `as_dict`)."""

    def as_dict(self) -> dict[str, object]:
        """The four reported fields, JSON-ready."""
        data = asdict(self)
        data.pop("captions")
        return data


def _has_token(tokenizer: PreTrainedTokenizerBase, token: str) -> bool:
    return token in tokenizer.get_vocab()


def full_captions(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    pixel_values: torch.Tensor,
    domains: Sequence[Domain] = DOMAINS,
    max_new_tokens: int = 40,
) -> list[str]:
    """One full caption per image: the domain views joined, or one unprompted caption."""
    prompts = [DOMAIN_PROMPTS[d] for d in domains]
    if not all(_has_token(tokenizer, p) for p in prompts):
        return greedy_captions(model, tokenizer, pixel_values, "", max_new_tokens)
    views = [greedy_captions(model, tokenizer, pixel_values, p, max_new_tokens) for p in prompts]
    return [FULL_CAPTION_SEPARATOR.join(parts) for parts in zip(*views, strict=True)]


def evaluate_captioner(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    image_processor: object,
    test_set: Sequence[SceneExample],
    domains: Sequence[Domain] = DOMAINS,
    pixel_values: torch.Tensor | None = None,
    max_new_tokens: int = 40,
) -> EvaluationReport:
    """Generate full captions for the test scenes and score them.

    `pixel_values` may be passed to skip re-encoding the same test images per model.
    """
    if not test_set:
        raise ConfigError("the test set is empty")
    if pixel_values is None:
        pixel_values = encode_images(image_processor, [s.image for s in test_set])
    captions = full_captions(model, tokenizer, pixel_values, domains, max_new_tokens)
    scores = concept_scores(captions, [s.concepts for s in test_set], domains)
    references = [s.full_caption for s in test_set]
    return EvaluationReport(
        recall_by_domain=scores.recall_by_domain,
        precision_by_domain=scores.precision_by_domain,
        mean_recall=scores.mean_recall,
        bleu=corpus_bleu(captions, references),
        captions=tuple(captions),
    )


@torch.no_grad()
def caption_loss_by_domain(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    image_processor: object,
    test_set: Sequence[SceneExample],
    domains: Sequence[Domain] = DOMAINS,
    pixel_values: torch.Tensor | None = None,
) -> dict[str, float]:
    """Mean token cross-entropy of each domain's reference captions after its prompt.

    Why next to recall: it needs no generation and moves smoothly with training, so a
    short run already shows whether a model learnt a domain; greedy captions only change
    once a concept's word wins the argmax.
    """
    if not test_set:
        raise ConfigError("the test set is empty")
    if pixel_values is None:
        pixel_values = encode_images(image_processor, [s.image for s in test_set])
    was_training = model.training
    model.eval()
    losses: dict[str, float] = {}
    for domain in domains:
        encoded = encode_captions(
            tokenizer,
            image_processor,
            [s.image for s in test_set],
            [DOMAIN_PROMPTS[domain]] * len(test_set),
            [s.captions[domain] for s in test_set],
            pixel_values=pixel_values,
        )
        batch = encoded.rows(torch.arange(len(encoded)))
        losses[Domain(domain).value] = float(batch_loss(model, batch))
    model.train(was_training)
    return losses
