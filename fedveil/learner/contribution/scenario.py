"""Four organisations of deliberately different value on the city-safety task, and the
parties that train on them, named by their data's content.

The organisations (issue 21): one domain held twice (an organisation and its exact
duplicate), one with half its data, one with 30% of its captions in another domain's
words. Which domain plays which part is a setting, so the benchmark can vary it.

Why parties are named by content: a party's round seed is derived from its name
(learner.training.party), so a duplicate named after its organisation would train
differently from its twin and exact Shapley would not give the two equal values; named
by a digest of its data, a duplicate trains bit for bit like its twin, and the truth is
symmetric as Shapley's axioms assume. Secure-aggregation client ids stay the
organisation-office names (they must be unique); only the seeds follow the data.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from fedveil.errors import ConfigError
from fedveil.learner.data.concepts import Domain
from fedveil.learner.data.datasets import (
    CityDataConfig,
    PartyDataset,
    make_party_datasets,
    split_party_dataset,
)
from fedveil.learner.federated_local import CaptionerRecipe, make_client_parties
from fedveil.learner.models.loading import LoadedModel
from fedveil.learner.quality import corrupt_dataset
from fedveil.learner.training.party import Party

NOISY_FRACTION = 0.3


@dataclass(frozen=True)
class ValueScenario:
    """Which domain is held twice, which is halved, which is noisy (all different)."""

    duplicate: Domain = Domain.ENERGY
    halved: Domain = Domain.RESIDENTIAL
    noisy: Domain = Domain.URBAN

    def __post_init__(self) -> None:
        parts = [Domain(self.duplicate), Domain(self.halved), Domain(self.noisy)]
        if len(set(parts)) != 3:
            raise ConfigError(f"duplicate, halved and noisy must be three domains, got {parts}")

    @property
    def names(self) -> tuple[str, str, str, str]:
        """The organisations, in order: the original, its duplicate, halved, noisy."""
        d = Domain(self.duplicate).value
        return (
            d,
            f"{d}-dup",
            f"{Domain(self.halved).value}-half",
            f"{Domain(self.noisy).value}-noisy",
        )


def organisations(config: CityDataConfig, scenario: ValueScenario) -> dict[str, PartyDataset]:
    """The four organisations' data (see the module docstring)."""
    base = make_party_datasets(config)
    original, dup, half, noisy = scenario.names
    held = base[Domain(scenario.duplicate).value]
    halved = base[Domain(scenario.halved).value]
    corrupted = corrupt_dataset(
        base[Domain(scenario.noisy).value], NOISY_FRACTION, "wrong-domain", seed=config.seed
    ).dataset
    return {
        original: PartyDataset(original, held.domain, held.examples),
        dup: PartyDataset(dup, held.domain, held.examples),
        half: PartyDataset(half, halved.domain, halved.examples[: len(halved) // 2]),
        noisy: PartyDataset(noisy, corrupted.domain, corrupted.examples),
    }


def content_name(dataset: PartyDataset) -> str:
    """`data-<digest>`: a name that depends only on the examples (images, prompts,
    captions), so equal data gets equal round seeds."""
    hasher = hashlib.sha256(b"fedveil-contribution-data-v1")
    for example in dataset.examples:
        hasher.update(example.image.tobytes())
        hasher.update(f"{example.image.shape}|{example.prompt}|{example.caption};".encode())
    return f"data-{hasher.hexdigest()[:16]}"


def content_named(dataset: PartyDataset) -> PartyDataset:
    """The same data under its content name."""
    return PartyDataset(content_name(dataset), dataset.domain, dataset.examples)


def office_parties(
    loaded: LoadedModel, orgs: dict[str, PartyDataset], offices: int, recipe: CaptionerRecipe
) -> dict[str, dict[str, Party]]:
    """organisation -> office client id -> party: each organisation split into `offices`
    clients (datasets.split_party_dataset), all sharing one model
    (federated_local.make_client_parties), each party named by its data's content."""
    split = {org: split_party_dataset(data, offices) for org, data in orgs.items()}
    flat = {cid: content_named(data) for part in split.values() for cid, data in part.items()}
    made = make_client_parties(loaded, flat, recipe)
    parties = dict(zip(flat, made, strict=True))
    return {org: {cid: parties[cid] for cid in part} for org, part in split.items()}
