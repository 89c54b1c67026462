"""Deterministic label corruption of one party's data, for data-quality experiments.

Why it reports the indices: the experiment compares cleaning with an oracle that removes
exactly the corrupted examples, and scores the cleaning's precision and recall against
them. Why seeded from the config: this is experiment data, not a privacy mechanism; a
rerun must corrupt the same examples.

Two kinds of bad annotation:
  swap          the caption (and concepts) of another of the party's scenes whose
                caption differs: a mis-joined annotation table. Words stay in the
                party's domain, only the image no longer matches.
  wrong-domain  a caption in another domain's words (random concepts of that domain):
                an annotator who answered the wrong question.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from fedveil.errors import ConfigError
from fedveil.learner.data.captions import domain_caption
from fedveil.learner.data.concepts import DOMAIN_CONCEPTS, DOMAINS, PIPELINE_STATES, Domain
from fedveil.learner.data.datasets import CaptionExample, PartyDataset


class CorruptionKind(StrEnum):
    """How a corrupted example's caption is chosen (see the module docstring)."""

    SWAP = "swap"
    WRONG_DOMAIN = "wrong-domain"


@dataclass(frozen=True, eq=False)
class CorruptedDataset:
    """A party's data with some captions corrupted, and which ones."""

    dataset: PartyDataset
    corrupted: tuple[int, ...]
    """Sorted indices (into dataset.examples) of the corrupted examples."""
    kind: CorruptionKind

    def mask(self) -> np.ndarray:
        """Boolean per example: True where corrupted."""
        flags = np.zeros(len(self.dataset), dtype=bool)
        flags[list(self.corrupted)] = True
        return flags

    def oracle(self) -> PartyDataset:
        """The same party with exactly the corrupted examples removed."""
        bad = set(self.corrupted)
        kept = tuple(e for i, e in enumerate(self.dataset.examples) if i not in bad)
        return PartyDataset(self.dataset.name, self.dataset.domain, kept)


def _rng(seed: int, name: str, kind: CorruptionKind) -> np.random.Generator:
    digest = hashlib.sha256(f"fedveil-corruption:{name}:{kind.value}".encode()).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


def _swapped(
    examples: tuple[CaptionExample, ...], index: int, rng: np.random.Generator
) -> CaptionExample:
    own = examples[index]
    donors = [j for j, e in enumerate(examples) if e.caption != own.caption]
    if not donors:
        raise ConfigError("every caption of the party is identical; there is nothing to swap")
    donor = examples[donors[int(rng.integers(len(donors)))]]
    return CaptionExample(own.image, own.prompt, donor.caption, donor.concepts, noisy=True)


def _wrong_domain(
    example: CaptionExample, domain: Domain, rng: np.random.Generator
) -> CaptionExample:
    others = [d for d in DOMAINS if d is not domain]
    other = others[int(rng.integers(len(others)))]
    said = {c for c in DOMAIN_CONCEPTS[other] if rng.random() < 0.5}
    if "gas pipeline" not in said:
        said -= set(PIPELINE_STATES)
    concepts = frozenset(said)
    caption = domain_caption(concepts, other)
    return CaptionExample(example.image, example.prompt, caption, concepts, noisy=True)


def corrupt_dataset(
    dataset: PartyDataset, fraction: float, kind: CorruptionKind | str, seed: int = 0
) -> CorruptedDataset:
    """Corrupt round(fraction * len(dataset)) examples of `dataset`, chosen and rewritten
    deterministically from (seed, party name, kind); every corrupted caption differs from
    the original one."""
    kind = CorruptionKind(kind)
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"corruption fraction must be in [0, 1), got {fraction}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"corruption seed must be a non-negative int, got {seed!r}")
    if kind is CorruptionKind.WRONG_DOMAIN and dataset.domain is None:
        raise ConfigError(f"{dataset.name!r} has no domain; wrong-domain corruption needs one")
    rng = _rng(seed, dataset.name, kind)
    count = int(round(fraction * len(dataset)))
    chosen = sorted(int(i) for i in rng.choice(len(dataset), size=count, replace=False))
    examples = list(dataset.examples)
    for index in chosen:
        if kind is CorruptionKind.SWAP:
            examples[index] = _swapped(dataset.examples, index, rng)
        else:
            assert dataset.domain is not None
            examples[index] = _wrong_domain(dataset.examples[index], dataset.domain, rng)
    corrupted = PartyDataset(dataset.name, dataset.domain, tuple(examples))
    return CorruptedDataset(corrupted, tuple(chosen), kind)
