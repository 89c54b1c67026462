"""A small federation of organisations for the contribution-score tests: energy, an
exact duplicate of it, and urban, two offices each, on the tiny captioner."""

from __future__ import annotations

import torch

from fedveil.learner.contribution.scenario import office_parties
from fedveil.learner.data import CityDataConfig, Domain, make_party_dataset
from fedveil.learner.data.datasets import PartyDataset, SceneExample, make_test_set
from fedveil.learner.federated_local import CaptionerRecipe
from fedveil.learner.lora import LoraSettings
from fedveil.learner.training import TrainConfig, encode_images
from fedveil.learner.training.party import Party
from tests.helpers.captioner_fixtures import tiny_base

SMALL = CaptionerRecipe(
    rounds=2,
    lora=LoraSettings(rank=2, alpha=4),
    train=TrainConfig(epochs=1, batch_size=4, learning_rate=1e-2, progress=False),
    data=CityDataConfig(samples_per_party=8, test_samples=2, image_size=32),
)
Grouped = dict[str, dict[str, Party]]


def small_federation() -> tuple[Grouped, Party, list[SceneExample], torch.Tensor]:
    """(organisation -> office id -> party, the first office, scenes to score on, their
    pixels)."""
    energy = make_party_dataset(SMALL.data, Domain.ENERGY)
    orgs = {
        "energy": energy,
        "energy-dup": PartyDataset("energy-dup", Domain.ENERGY, energy.examples),
        "urban": make_party_dataset(SMALL.data, Domain.URBAN),
    }
    grouped = office_parties(tiny_base(), orgs, 2, SMALL)
    first = grouped["energy"]["energy-0"]
    scenes = list(make_test_set(SMALL.data))
    pixels = encode_images(first.loaded.image_processor, [s.image for s in scenes])
    return grouped, first, scenes, pixels


def ids_of(grouped: Grouped) -> list[str]:
    return [cid for clients in grouped.values() for cid in clients]
