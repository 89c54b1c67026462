"""Text overlap of the generation-only attacks: units, LCS / ROUGE-L, n-gram recall."""

from __future__ import annotations

import pytest

from fedveil.attacks.output.generation import score_samples
from fedveil.attacks.output.overlap import (
    contains_units,
    lcs_length,
    ngram_recall,
    rouge_l,
    starts_with_units,
    units,
    verbatim,
)


def test_units_ignore_spacing_casing_and_digit_grouping() -> None:
    assert units("Gate 4719.") == ["gate", "4", "7", "1", "9", "."]
    assert units("gate 4 7 1 9 .") == units("Gate 4719.")
    assert units("52 Poplar-Street") == ["5", "2", "poplar", "-", "street"]


def test_lcs_and_rouge_l_by_hand() -> None:
    assert lcs_length("abcbdab", "bdcaba") == 4  # the textbook example (e.g. "bcba")
    assert lcs_length([], ["a"]) == 0
    # candidate 4 units, reference 4 units, LCS 3 -> P = R = F = 3/4
    assert rouge_l(list("4719"), list("4729")) == pytest.approx(0.75)
    # candidate 2, reference 4, LCS 2: P = 1, R = 1/2, F = 2/3
    assert rouge_l(list("47"), list("4719")) == pytest.approx(2 / 3)
    assert rouge_l(list("0000"), list("4719")) == 0.0


def test_ngram_recall_clips_counts() -> None:
    assert ngram_recall(list("4719"), list("4719"), 2) == 1.0
    assert ngram_recall(list("4779"), list("4719"), 2) == pytest.approx(1 / 3)  # only "47"
    assert ngram_recall(list("1111"), list("1234"), 1) == pytest.approx(1 / 4)  # clipped
    assert ngram_recall(list("12"), list("1"), 3) == 1.0  # n falls back to the reference length


def test_matches_strict_and_unit_level() -> None:
    assert verbatim("code 4719.", "4719") and not verbatim("code 4 7 1 9.", "4719")
    assert contains_units("code 4 7 1 9.", "4719") and not contains_units("code 4791", "4719")
    assert starts_with_units("4719. and more", "4719")
    assert not starts_with_units("the 4719", "4719")


def test_sample_scores_rank_memorised_above_random() -> None:
    memorised = score_samples(["4719.", "4719.", "4718."], "4719", ngram=2)
    guessed = score_samples(["1234.", "5678.", "0000."], "4719", ngram=2)
    assert memorised["samples_exact"] == pytest.approx(2 / 3)
    assert guessed["samples_exact"] == 0.0
    for name in ("samia_rouge_l", "samia_ngram"):
        assert memorised[name] > guessed[name]
