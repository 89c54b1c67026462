"""Per-record scoring of `fedveil attack`: positions with the best offset, bags, ranking
against the data-free reference records (attacks.own.per_record)."""

from __future__ import annotations

from fedveil.attacks.own.per_record import (
    RECOVERED_F1,
    Recovered,
    bag_match,
    baseline_summary,
    positional_match,
    rank_records,
)
from fedveil.attacks.own.records import Record


def _record(text: str, tokens: list[int]) -> Record:
    return Record(text, tuple(tokens), "test")


def test_positional_match_finds_the_offset_a_prompt_shifts_the_text_by() -> None:
    # bos 1 at position 0, prompt 8 at 1, then the text 25 44 60
    pairs = frozenset({(1, 0), (8, 1), (25, 2), (44, 3), (60, 4)})
    match = positional_match([25, 44, 60], pairs)
    assert match.recall == 1.0 and match.precision == 3 / 5
    assert positional_match([44, 25, 60], pairs).recall == 1 / 3  # order matters
    assert positional_match([25, 44, 60], frozenset()).f1 == 0.0


def test_bag_match_counts_distinct_tokens() -> None:
    match = bag_match([5, 5, 6, 7], frozenset({5, 6, 9, 10}))
    assert match.recall == 2 / 3 and match.precision == 2 / 4


def test_a_record_counts_as_recovered_only_above_every_reference_record() -> None:
    found = [Recovered("bag", False, bag=frozenset({1, 2, 3, 4}))]
    true = _record("true", [1, 2, 3, 4])
    half = _record("half", [1, 2, 7, 8])
    # a reference record the delta never saw shares two common tokens: F1 0.5
    ranked, reference = rank_records([half, true], [_record("ref", [1, 2, 9, 10])], found)
    assert [r.record.text for r in ranked] == ["true", "half"]
    assert [r.rank for r in ranked] == [1, 2]
    assert ranked[0].recovered and ranked[0].score == 1.0
    assert ranked[1].score == RECOVERED_F1 and not ranked[1].recovered  # not above the floor
    ranked, _ = rank_records([half], [_record("ref", [9, 10])], found)
    assert ranked[0].recovered  # the same score, against a lower floor
    # a reference record as good as the true one: nothing may count as recovered
    ranked, reference = rank_records([true], [_record("same", [1, 2, 3, 4])], found)
    assert not ranked[0].recovered
    assert baseline_summary(reference)["max"] == 1.0


def test_nothing_found_scores_zero_and_names_no_attack() -> None:
    ranked, _ = rank_records([_record("x", [1])], [], [Recovered("span", True)])
    assert ranked[0].score == 0.0 and ranked[0].best_attack == "" and not ranked[0].recovered
