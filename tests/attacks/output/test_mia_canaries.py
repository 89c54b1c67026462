"""Canary registry: formats with known |R|, fair coins, planting, JSON round trip."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from fedveil.attacks.output.canaries import (
    FORMATS,
    CanaryConfig,
    CanaryRegistry,
    SlotSpace,
    draw_registry,
    format_sentences,
    plant_canaries,
    plant_registry,
)
from fedveil.errors import ConfigError


def test_formats_know_their_randomness_space() -> None:
    assert FORMATS["gate_code"].secret.size == 10**4
    assert FORMATS["phone"].secret.size == 10**7
    assert FORMATS["id_number"].secret.size == 10**9
    assert FORMATS["address"].secret.size == 99 * 16 * 4
    assert FORMATS["address"].secret.log2_size == pytest.approx(math.log2(99 * 16 * 4))
    space = SlotSpace("{}-{}", (("a", "b"), ("x", "y", "z")))
    assert list(space.enumerate()) == ["a-x", "a-y", "a-z", "b-x", "b-y", "b-z"]
    assert set(space.sample(np.random.default_rng(0), 200)) == set(space.enumerate())


def test_render_splits_prefix_secret_suffix() -> None:
    fmt = FORMATS["gate_code"]
    assert fmt.render("anna berg", "4719") == "the gate code of anna berg is 4719."
    assert fmt.split("anna berg") == ("the gate code of anna berg is", ".")


def test_coins_are_fair_and_subjects_unique() -> None:
    registry = draw_registry(CanaryConfig(n_canaries=400, formats=tuple(FORMATS), seed=5))
    members = int(registry.labels().sum())
    assert 160 < members < 240  # Binomial(400, 1/2): 200 +- 40 is > 4 sigma
    assert len({c.subject for c in registry}) == 400
    assert {c.format for c in registry} == set(FORMATS)
    for canary in registry:
        fmt = registry.format_of(canary)
        assert canary.text == fmt.render(canary.subject, canary.secret)


def test_members_and_non_members_come_from_one_distribution() -> None:
    # The coin is independent of the canary: per format, members' share is about 1/2,
    # and secrets' first digits are uniform in both groups.
    registry = draw_registry(CanaryConfig(n_canaries=576, formats=("gate_code",), seed=1))
    first = {True: np.zeros(10), False: np.zeros(10)}
    for c in registry:
        first[c.member][int(c.secret[0])] += 1
    for counts in first.values():
        assert counts.min() > 0.4 * counts.mean()


def test_planting_inserts_members_only_with_repetitions() -> None:
    texts = [f"sentence {i}" for i in range(50)]
    planted, registry = plant_canaries(texts, CanaryConfig(n_canaries=20, repetitions=3, seed=2))
    for canary in registry:
        count = planted.count(canary.text)
        assert count == (3 if canary.member else 0)
    assert len(planted) == 50 + 3 * len(registry.members)
    assert [t for t in planted if t.startswith("sentence")] == texts  # order kept


def test_append_placement_puts_canaries_inside_captions() -> None:
    texts = [f"a caption number {i}." for i in range(30)]
    registry = draw_registry(CanaryConfig(n_canaries=10, seed=3))
    planted = plant_registry(texts, registry, placement="append")
    assert len(planted) == len(texts)
    joined = " ".join(planted)
    for canary in registry:
        assert (canary.text in joined) == canary.member


def test_json_round_trip(tmp_path: Path) -> None:
    registry = draw_registry(CanaryConfig(n_canaries=12, formats=tuple(FORMATS), seed=4))
    again = CanaryRegistry.from_json(registry.to_json())
    assert again == registry
    path = tmp_path / "registry.json"
    registry.save(path)
    assert CanaryRegistry.load(path) == registry
    with pytest.raises(ConfigError):
        CanaryRegistry.from_json('{"version": 2}')
    with pytest.raises(ConfigError):
        CanaryRegistry.from_json('{"version": 1, "canaries": []}')


def test_public_format_sentences_avoid_canary_subjects() -> None:
    registry = draw_registry(CanaryConfig(n_canaries=100, seed=6))
    subjects = [c.subject for c in registry]
    public = format_sentences(("gate_code", "address"), 300, seed=0, exclude=subjects)
    assert len(public) == 300
    assert not any(s in text for text in public for s in subjects)


def test_configs_name_the_bad_value() -> None:
    with pytest.raises(ConfigError, match="n_canaries"):
        CanaryConfig(n_canaries=1)
    with pytest.raises(ConfigError, match="unknown canary formats"):
        CanaryConfig(formats=("credit_card",))
    with pytest.raises(ConfigError, match="repetitions"):
        CanaryConfig(repetitions=0)
    with pytest.raises(ConfigError, match="placement"):
        CanaryConfig(placement="sprinkle")
    with pytest.raises(ConfigError, match="holes"):
        SlotSpace("{}{}", (("a",),))
