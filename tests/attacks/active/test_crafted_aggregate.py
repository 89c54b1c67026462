"""Crafted aggregates against the real client acceptance and the real next round, both
ways: each attack leaks when its crafted model reaches the next round; the bounds refuse
it beyond the clip, the chain catches a split; a consistent one inside the bounds is open."""

from __future__ import annotations

import pytest

from fedveil.attacks.active.crafted_aggregate import (
    crafted_aggregate_attack,
)
from fedveil.attacks.active.secagg_round import BASE_MODEL_HASH
from fedveil.errors import SessionMismatchError
from fedveil.secagg.protocol.model_chain import ModelChain


def test_imprint_beyond_the_clip_is_refused_by_the_bounds() -> None:
    outcome = crafted_aggregate_attack("imprint", scale=50.0)
    assert outcome.refused_by == "ImplausibleAggregateError" and not outcome.open
    assert outcome.leak_on_victim_update == 1.0  # what it would have given, accepted


def test_imprint_inside_the_bounds_is_accepted_and_leaks_through_secagg() -> None:
    outcome = crafted_aggregate_attack("imprint", scale=0.5)
    assert outcome.open  # stated as an open row
    assert outcome.leak_on_aggregate >= 0.5  # records rebuilt from the SecAgg mean


def test_zero_others_lora_inside_the_bounds_is_open_but_needs_isolation() -> None:
    outcome = crafted_aggregate_attack("zero-others", scale=0.5)
    assert outcome.open
    assert outcome.leak_on_victim_update > 0.999  # the victim's own update: structured
    assert outcome.leak_on_aggregate < 0.95  # the consistent SecAgg sum mixes the cohort


def test_zero_others_lora_beyond_the_clip_is_refused() -> None:
    outcome = crafted_aggregate_attack("zero-others", scale=5.0)
    assert outcome.refused_by == "ImplausibleAggregateError"


def test_a_split_result_is_caught_at_the_next_round() -> None:
    outcome = crafted_aggregate_attack("inconsistent", scale=0.5)
    assert outcome.refused_by is None  # each half is plausible on its own
    assert outcome.detected_by == "KeySubstitutionError"  # session ids differ
    assert outcome.leak_on_aggregate > 0.999  # the sum it would have isolated


def test_one_announced_hash_after_a_split_is_refused_by_the_other_side() -> None:
    victim, other = ModelChain(BASE_MODEL_HASH), ModelChain(BASE_MODEL_HASH)
    victim.advance(1, b"\x01" * 32)
    other.advance(1, b"\x02" * 32)
    other.check(2, other.model_hash)
    with pytest.raises(SessionMismatchError, match="model inconsistency"):
        victim.check(2, other.model_hash)
    # consistent delivery: both chains agree, nothing to detect
    same = ModelChain(BASE_MODEL_HASH)
    same.advance(1, b"\x02" * 32)
    same.check(2, other.model_hash)
