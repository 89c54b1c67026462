"""The synthetic city-safety data: determinism, who says what, visible elements, noise."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np
import pytest

from fedveil.errors import ConfigError
from fedveil.learner.data import (
    DOMAIN_CONCEPTS,
    DOMAINS,
    CaptionExample,
    CityDataConfig,
    Domain,
    all_concepts,
    domain_caption,
    make_generic_dataset,
    make_party_dataset,
    make_party_datasets,
    make_test_set,
)
from fedveil.learner.data.concepts import PIPELINE_STATES, domain_words, vocabulary_words
from fedveil.learner.data.scenes import Scene, render, sample_scene
from fedveil.learner.metrics import find_concepts

SMALL = CityDataConfig(seed=3, samples_per_party=40, test_samples=40)


def _same(a: Iterable[CaptionExample], b: Iterable[CaptionExample]) -> bool:
    return all(
        np.array_equal(x.image, y.image) and x.caption == y.caption
        for x, y in zip(a, b, strict=True)
    )


def test_party_data_is_a_pure_function_of_the_config() -> None:
    first, second = make_party_datasets(SMALL), make_party_datasets(SMALL)
    assert all(_same(first[name], second[name]) for name in first)
    other = make_party_datasets(dataclasses.replace(SMALL, seed=4))
    assert not _same(first["energy"], other["energy"])


def test_sample_i_does_not_depend_on_how_many_were_asked_for() -> None:
    short = make_party_dataset(dataclasses.replace(SMALL, samples_per_party=5), Domain.URBAN)
    long = make_party_dataset(SMALL, Domain.URBAN)
    assert _same(short.examples, long.examples[:5])


def test_test_set_is_deterministic_and_differs_from_party_data() -> None:
    a, b = make_test_set(SMALL), make_test_set(SMALL)
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b, strict=True))
    party_images = {e.image.tobytes() for d in make_party_datasets(SMALL).values() for e in d}
    assert not any(s.image.tobytes() in party_images for s in a)


def test_party_captions_mention_only_their_own_domain() -> None:
    for name, dataset in make_party_datasets(SMALL).items():
        domain = Domain(name)
        for example in dataset:
            said = find_concepts(example.caption, all_concepts())
            assert said == example.concepts
            assert said <= set(DOMAIN_CONCEPTS[domain])
            assert set(example.caption.split()) <= domain_words(domain)
            assert example.prompt == f"<{name}>"


def test_captions_of_different_domains_share_no_word() -> None:
    for a in DOMAINS:
        for b in DOMAINS:
            if a is not b:
                assert not domain_words(a) & domain_words(b)


def test_test_captions_carry_all_three_domains() -> None:
    test_set = make_test_set(SMALL)
    seen = {d: 0 for d in DOMAINS}
    for scene in test_set:
        parts = scene.full_caption.split(" ; ")
        assert len(parts) == 3
        for domain, part in zip(DOMAINS, parts, strict=True):
            assert find_concepts(part, all_concepts()) == scene.concepts[domain]
            seen[domain] += len(scene.concepts[domain])
    assert all(count > 0 for count in seen.values())


def test_generic_captions_name_no_concept() -> None:
    generic = make_generic_dataset(SMALL, 30)
    assert len(generic) == 60  # full caption plus one partial caption per scene
    assert all(not find_concepts(e.caption, all_concepts()) for e in generic)
    assert {e.prompt for e in generic} >= {"<scene>", "<sky>", "<objects>", "<buildings>"}
    assert all(set(e.caption.split()) <= set(vocabulary_words()) for e in generic)


def test_pipeline_states_only_come_with_a_pipeline() -> None:
    for dataset in make_party_datasets(SMALL).values():
        for example in dataset:
            if example.concepts & set(PIPELINE_STATES):
                assert "gas pipeline" in example.concepts


def _with_without(concept: str) -> tuple[np.ndarray, np.ndarray]:
    for seed in range(200):
        scene = sample_scene(np.random.default_rng(seed), presence=0.9)
        if concept in scene.concepts:
            break
    else:  # pragma: no cover - presence 0.9 finds every concept quickly
        raise AssertionError(f"no scene with {concept}")
    drop = {concept} | (set(PIPELINE_STATES) if concept == "gas pipeline" else set())
    without = dataclasses.replace(scene, concepts=scene.concepts - drop)
    return (
        np.asarray(render(scene, np.random.default_rng(0)), dtype=np.int16),
        np.asarray(render(without, np.random.default_rng(0)), dtype=np.int16),
    )


@pytest.mark.parametrize("concept", all_concepts())
def test_every_concept_is_drawn_visibly(concept: str) -> None:
    with_it, without_it = _with_without(concept)
    changed = np.any(np.abs(with_it - without_it) > 40, axis=-1)
    assert changed.sum() >= 8, f"{concept} changes only {changed.sum()} pixels"


def test_noisy_captions_are_wrong_and_flagged() -> None:
    noisy = make_party_dataset(dataclasses.replace(SMALL, noise_rate=0.5), Domain.ENERGY)
    clean = make_party_dataset(SMALL, Domain.ENERGY)
    flagged = [e for e in noisy if e.noisy]
    assert 8 <= len(flagged) <= 32
    for example, truth in zip(noisy, clean, strict=True):
        assert np.array_equal(example.image, truth.image)
        if example.noisy:
            assert example.caption != truth.caption
            assert example.caption == domain_caption(example.concepts, Domain.ENERGY)
        else:
            assert example.caption == truth.caption
    assert not any(e.noisy for e in clean)


def test_rendering_is_a_pure_function_of_scene_and_seed() -> None:
    scene: Scene = sample_scene(np.random.default_rng(1))
    a = np.asarray(render(scene, np.random.default_rng(5)))
    b = np.asarray(render(scene, np.random.default_rng(5)))
    assert a.shape == (64, 64, 3) and np.array_equal(a, b)
    assert np.asarray(render(scene, np.random.default_rng(5), size=32)).shape == (32, 32, 3)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("seed", -1, "seed"),
        ("image_size", 8, "image_size"),
        ("samples_per_party", 0, "samples_per_party"),
        ("noise_rate", 1.5, "noise_rate"),
        ("presence", 0.0, "presence"),
    ],
)
def test_config_names_the_bad_value(field: str, value: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        CityDataConfig(**{field: value})  # type: ignore[arg-type]


def test_one_party_per_domain() -> None:
    with pytest.raises(ConfigError, match="one party"):
        make_party_datasets(SMALL, [Domain.URBAN, Domain.URBAN])
