"""Synthetic city-safety data: procedurally drawn street scenes and their captions."""

from fedveil.learner.data.captions import domain_caption, generic_caption
from fedveil.learner.data.concepts import (
    DOMAIN_CONCEPTS,
    DOMAIN_PROMPTS,
    DOMAINS,
    SCENE_PROMPT,
    Domain,
    all_concepts,
    vocabulary_words,
)
from fedveil.learner.data.datasets import (
    CaptionExample,
    CityDataConfig,
    PartyDataset,
    SceneExample,
    make_generic_dataset,
    make_party_dataset,
    make_party_datasets,
    make_test_set,
)

__all__ = [
    "DOMAINS",
    "DOMAIN_CONCEPTS",
    "DOMAIN_PROMPTS",
    "SCENE_PROMPT",
    "CaptionExample",
    "CityDataConfig",
    "Domain",
    "PartyDataset",
    "SceneExample",
    "all_concepts",
    "domain_caption",
    "generic_caption",
    "make_generic_dataset",
    "make_party_dataset",
    "make_party_datasets",
    "make_test_set",
    "vocabulary_words",
]
