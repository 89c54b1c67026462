"""Generating captions and scoring them on the full-caption test set."""

from fedveil.learner.evaluation.generation import greedy_captions
from fedveil.learner.evaluation.report import (
    EvaluationReport,
    caption_loss_by_domain,
    evaluate_captioner,
    full_captions,
)

__all__ = [
    "EvaluationReport",
    "caption_loss_by_domain",
    "evaluate_captioner",
    "full_captions",
    "greedy_captions",
]
