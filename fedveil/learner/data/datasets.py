"""The city-safety data sets: generic pretraining scenes, the parties' data, the test set.

Why this split: every party photographs the same kind of street (all three domains'
elements appear in its images) but annotates only its own domain, after its own prompt
token. The test set carries the full caption, all three domains, so a model is scored
on describing a scene from every viewpoint: a party's model alone only learned its own.

Determinism: sample i of a split is drawn from a generator seeded with (seed, split,
i), so it does not depend on how many samples were asked for, and two calls with the same
config give identical data.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from fedveil.errors import ConfigError
from fedveil.learner.data.captions import (
    domain_caption,
    generic_caption,
    generic_part,
    noisy_concepts,
)
from fedveil.learner.data.concepts import (
    DOMAIN_PROMPTS,
    DOMAINS,
    GENERIC_PROMPTS,
    SCENE_PROMPT,
    Domain,
)
from fedveil.learner.data.scenes import render, sample_scene

_STREAMS = {"generic": 0, "test": 1, Domain.ENERGY: 2, Domain.RESIDENTIAL: 3, Domain.URBAN: 4}


@dataclass(frozen=True)
class CityDataConfig:
    """How much data, of what difficulty, from which seed.

    presence: probability that each concept is in a scene (states: 1/2 given a pipeline).
    noise_rate: share of each party's samples whose caption is wrong (a bad annotator).
    generic_clutter: probability of each domain element in a generic pretraining scene;
    the generic caption names only the everyday object behind it (see GENERIC_OBJECTS).
    """

    seed: int = 0
    image_size: int = 64
    samples_per_party: int = 240
    test_samples: int = 90
    presence: float = 0.45
    noise_rate: float = 0.0
    generic_clutter: float = 0.45

    def __post_init__(self) -> None:
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative int, got {self.seed!r}")
        if not 16 <= self.image_size <= 512:
            raise ConfigError(f"image_size must be in [16, 512], got {self.image_size}")
        for name in ("samples_per_party", "test_samples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("presence", "noise_rate", "generic_clutter"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {value}")
        if self.presence == 0.0:
            raise ConfigError("presence must be above 0, or no scene holds any concept")


@dataclass(frozen=True, eq=False)
class CaptionExample:
    """One training pair: an image, the prompt to caption it after, and the caption."""

    image: np.ndarray = field(repr=False)
    """uint8 array (H, W, 3)."""
    prompt: str
    caption: str
    concepts: frozenset[str]
    """The concepts the caption names (wrong ones when `noisy`)."""
    noisy: bool = False


@dataclass(frozen=True, eq=False)
class SceneExample:
    """One test scene with its full ground truth, every domain."""

    image: np.ndarray = field(repr=False)
    captions: Mapping[Domain, str]
    concepts: Mapping[Domain, frozenset[str]]

    @property
    def full_caption(self) -> str:
        """The reference description from all three viewpoints, in domain order."""
        return " ; ".join(self.captions[d] for d in DOMAINS)


@dataclass(frozen=True, eq=False)
class PartyDataset:
    """One organisation's private, annotated data; its weight in FedAvg is its size."""

    name: str
    domain: Domain | None
    examples: tuple[CaptionExample, ...]

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[CaptionExample]:
        return iter(self.examples)

    @property
    def weight(self) -> int:
        return len(self.examples)


def _rng(seed: int, stream: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _STREAMS[stream], index])


def _image(scene_rng: np.random.Generator, config: CityDataConfig, **kwargs: object) -> tuple:
    scene = sample_scene(scene_rng, **kwargs)  # type: ignore[arg-type]
    return scene, np.asarray(render(scene, scene_rng, config.image_size), dtype=np.uint8)


def make_party_dataset(config: CityDataConfig, domain: Domain) -> PartyDataset:
    """The private data of the party that annotates `domain`."""
    domain = Domain(domain)
    examples = []
    for i in range(config.samples_per_party):
        rng = _rng(config.seed, domain, i)
        scene, image = _image(rng, config, presence=config.presence)
        truth = scene.concepts_of(domain)
        noisy = bool(rng.random() < config.noise_rate)
        said = noisy_concepts(truth, domain, rng) if noisy else truth
        examples.append(
            CaptionExample(image, DOMAIN_PROMPTS[domain], domain_caption(said, domain), said, noisy)
        )
    return PartyDataset(domain.value, domain, tuple(examples))


def make_party_datasets(
    config: CityDataConfig, domains: Sequence[Domain] = DOMAINS
) -> dict[str, PartyDataset]:
    """One dataset per party, keyed by party name (the domain's name)."""
    if not domains:
        raise ConfigError("at least one party domain is needed")
    if len(set(domains)) != len(domains):
        raise ConfigError(f"each domain can have one party only, got {list(domains)}")
    return {Domain(d).value: make_party_dataset(config, Domain(d)) for d in domains}


def make_test_set(config: CityDataConfig) -> tuple[SceneExample, ...]:
    """Held-out scenes with full captions (all three domains), never noisy."""
    examples = []
    for i in range(config.test_samples):
        scene, image = _image(_rng(config.seed, "test", i), config, presence=config.presence)
        concepts = {d: scene.concepts_of(d) for d in DOMAINS}
        captions = {d: domain_caption(concepts[d], d) for d in DOMAINS}
        examples.append(SceneExample(image, captions, concepts))
    return tuple(examples)


def make_generic_dataset(config: CityDataConfig, samples: int) -> PartyDataset:
    """Generic scenes with generic captions: the open base model's pretraining data.

    Every scene comes twice: with the full caption after `<scene>`, and with the caption
    of one other generic prompt (sky, objects or buildings), drawn from the scene's seed.
    """
    if samples < 1:
        raise ConfigError(f"samples must be at least 1, got {samples}")
    examples = []
    for i in range(samples):
        rng = _rng(config.seed, "generic", i)
        scene, image = _image(rng, config, presence=config.generic_clutter or 1e-9)
        examples.append(CaptionExample(image, SCENE_PROMPT, generic_caption(scene), frozenset()))
        prompt = GENERIC_PROMPTS[1 + int(rng.integers(0, len(GENERIC_PROMPTS) - 1))]
        examples.append(CaptionExample(image, prompt, generic_part(scene, prompt), frozenset()))
    return PartyDataset("generic", None, tuple(examples))


# --- organisations split into many clients (`fedveil demo --clients-per-party N`) --------

VALIDATION_OFFSET = 1_000_000
"""Validation scenes are test-stream samples from this index on: disjoint from the test
set (indices below test_samples) however many test samples are asked for, up to a
million, yet drawn the same way."""


def client_name(party: str, index: int, clients: int) -> str:
    """`energy-07`: a client's name, zero-padded so that names sort in index order."""
    return f"{party}-{index:0{len(str(clients - 1))}d}"


def split_party_dataset(dataset: PartyDataset, clients: int) -> dict[str, PartyDataset]:
    """An organisation's data split into `clients` branch offices (contiguous slices of
    its samples, sizes differing by at most one), keyed by client name.

    Why split rather than draw each office anew: the organisation alone and its offices
    together then hold exactly the same samples, so "the organisation alone" is the
    same baseline whatever the number of offices, and a federation of many offices
    trains on the same data (and costs the same) as one of three organisations; only
    how the data is cut into DP clients changes."""
    if isinstance(clients, bool) or not isinstance(clients, int) or clients < 1:
        raise ConfigError(f"clients per party must be a positive int, got {clients!r}")
    if clients > len(dataset):
        raise ConfigError(
            f"{dataset.name!r} has {len(dataset)} samples, too few for {clients} clients "
            "(each needs at least one)"
        )
    if clients == 1:
        return {dataset.name: dataset}
    slices = np.array_split(np.arange(len(dataset)), clients)
    return {
        client_name(dataset.name, k, clients): PartyDataset(
            client_name(dataset.name, k, clients),
            dataset.domain,
            tuple(dataset.examples[int(i)] for i in chunk),
        )
        for k, chunk in enumerate(slices)
    }


def make_client_datasets(
    config: CityDataConfig, domains: Sequence[Domain] = DOMAINS, clients_per_party: int = 1
) -> dict[str, PartyDataset]:
    """Every party's data split into `clients_per_party` clients (split_party_dataset),
    in party order; one client per party is make_party_datasets itself."""
    clients: dict[str, PartyDataset] = {}
    for dataset in make_party_datasets(config, domains).values():
        clients.update(split_party_dataset(dataset, clients_per_party))
    return clients


def make_validation_set(config: CityDataConfig, samples: int) -> tuple[SceneExample, ...]:
    """Held-out scenes like the test set's but disjoint from it (VALIDATION_OFFSET), to
    choose a recipe (clip norm, learning rate) without scoring on the test set."""
    if samples < 1:
        raise ConfigError(f"samples must be at least 1, got {samples}")
    examples = []
    for i in range(samples):
        rng = _rng(config.seed, "test", VALIDATION_OFFSET + i)
        scene, image = _image(rng, config, presence=config.presence)
        concepts = {d: scene.concepts_of(d) for d in DOMAINS}
        captions = {d: domain_caption(concepts[d], d) for d in DOMAINS}
        examples.append(SceneExample(image, captions, concepts))
    return tuple(examples)
