"""Deterministic corruption of a party's captions (learner.quality.corruption)."""

from __future__ import annotations

import pytest

from fedveil.errors import ConfigError
from fedveil.learner.data import CityDataConfig, Domain, make_party_dataset
from fedveil.learner.data.concepts import DOMAINS, domain_words
from fedveil.learner.data.datasets import PartyDataset
from fedveil.learner.quality import CorruptionKind, corrupt_dataset

DATA = CityDataConfig(samples_per_party=40, image_size=32)


def energy() -> PartyDataset:
    return make_party_dataset(DATA, Domain.ENERGY)


@pytest.mark.parametrize("kind", list(CorruptionKind))
def test_corruption_is_deterministic_and_reports_exactly_what_it_changed(
    kind: CorruptionKind,
) -> None:
    clean = energy()
    first = corrupt_dataset(clean, 0.3, kind, seed=5)
    again = corrupt_dataset(energy(), 0.3, kind, seed=5)
    assert first.corrupted == again.corrupted
    assert [e.caption for e in first.dataset] == [e.caption for e in again.dataset]
    assert len(first.corrupted) == 12 and list(first.corrupted) == sorted(set(first.corrupted))
    for i, (before, after) in enumerate(zip(clean, first.dataset, strict=True)):
        assert after.image is before.image and after.prompt == before.prompt
        if i in first.corrupted:
            assert after.caption != before.caption and after.noisy
        else:
            assert after.caption == before.caption and not after.noisy
    assert first.mask().sum() == 12 and first.mask()[list(first.corrupted)].all()
    other_seed = corrupt_dataset(clean, 0.3, kind, seed=6)
    assert other_seed.corrupted != first.corrupted


def test_swapped_captions_come_from_the_partys_own_scenes() -> None:
    clean = energy()
    swapped = corrupt_dataset(clean, 0.3, "swap")
    own = {e.caption for e in clean}
    assert all(swapped.dataset.examples[i].caption in own for i in swapped.corrupted)


def test_wrong_domain_captions_use_only_another_domains_words() -> None:
    wrong = corrupt_dataset(energy(), 0.3, CorruptionKind.WRONG_DOMAIN)
    others = set().union(*(domain_words(d) for d in DOMAINS if d is not Domain.ENERGY))
    for i in wrong.corrupted:
        words = set(wrong.dataset.examples[i].caption.split())
        assert words <= others and not words & domain_words(Domain.ENERGY)


def test_the_oracle_removes_exactly_the_corrupted_examples() -> None:
    clean = energy()
    corrupted = corrupt_dataset(clean, 0.3, "swap")
    oracle = corrupted.oracle()
    assert len(oracle) == len(clean) - len(corrupted.corrupted)
    assert not any(e.noisy for e in oracle)
    kept = [e for i, e in enumerate(clean) if i not in corrupted.corrupted]
    assert [e.caption for e in oracle] == [e.caption for e in kept]


def test_bad_corruption_settings_are_refused() -> None:
    clean = energy()
    for fraction in (-0.1, 1.0, 1.5):
        with pytest.raises(ConfigError, match="fraction"):
            corrupt_dataset(clean, fraction, "swap")
    with pytest.raises(ConfigError, match="seed"):
        corrupt_dataset(clean, 0.3, "swap", seed=-1)
    with pytest.raises(ValueError):
        corrupt_dataset(clean, 0.3, "shuffle")
    generic = PartyDataset("generic", None, clean.examples)
    with pytest.raises(ConfigError, match="no domain"):
        corrupt_dataset(generic, 0.3, "wrong-domain")
    same = PartyDataset("same", Domain.ENERGY, (clean.examples[0],) * 4)
    with pytest.raises(ConfigError, match="nothing to swap"):
        corrupt_dataset(same, 0.5, "swap")
