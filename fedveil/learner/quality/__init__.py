"""Data quality at each party: score its own examples with the current global model and
drop the outliers locally, before training (arXiv 2308.11217, II.C).

Why at the party: the examples, their scores and which of them were dropped never leave
it; the update it sends has the same shape and weight as without cleaning. Modules:
corruption (deterministic label corruption for experiments, with the corrupted indices),
scoring (per-example caption loss under the current global adapter), cleaning (the
keep/drop policy) and federation (a Party that cleans before every round).
"""

from fedveil.learner.quality.cleaning import CleaningMethod, CleaningPolicy
from fedveil.learner.quality.corruption import CorruptedDataset, CorruptionKind, corrupt_dataset
from fedveil.learner.quality.federation import CleaningParty, CleaningRecord
from fedveil.learner.quality.scoring import (
    Scorer,
    example_losses,
    party_disagreement,
    party_losses,
    party_prompt_contrast,
    score_examples,
    separation_auc,
)

__all__ = [
    "CleaningMethod",
    "CleaningParty",
    "CleaningPolicy",
    "CleaningRecord",
    "CorruptedDataset",
    "CorruptionKind",
    "corrupt_dataset",
    "Scorer",
    "example_losses",
    "party_disagreement",
    "party_losses",
    "party_prompt_contrast",
    "score_examples",
    "separation_auc",
]
