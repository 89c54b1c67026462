"""Concept matching, per-domain recall and precision, and BLEU, on hand-made captions."""

from __future__ import annotations

import pytest

from fedveil.errors import ConfigError
from fedveil.learner.data import DOMAIN_CONCEPTS, Domain
from fedveil.learner.metrics import concept_scores, corpus_bleu, find_concepts, words

E, R, U = Domain.ENERGY, Domain.RESIDENTIAL, Domain.URBAN
ALL = [c for cs in DOMAIN_CONCEPTS.values() for c in cs]


def test_words_split_punctuation_and_lower_case() -> None:
    assert words("Gas pipeline, Meter;") == ["gas", "pipeline", ",", "meter", ";"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("gas pipeline with leak and corrosion", {"gas pipeline", "leak", "corrosion"}),
        ("a street with a pipeline", set()),  # "gas pipeline" needs both words, in order
        ("pipeline gas", set()),
        ("the street is busy", set()),  # the generic word is not "street vendor"
        ("street vendor near a parked car", {"street vendor", "parked car"}),
        ("well cover ; meter", {"well cover", "meter"}),
        ("meters", set()),  # whole words only
        ("", set()),
    ],
)
def test_find_concepts_matches_word_sequences(text: str, expected: set[str]) -> None:
    assert find_concepts(text, ALL) == expected


def test_recall_and_precision_are_micro_averaged_per_domain() -> None:
    captions = [
        "gas pipeline meter ; gate ; bike lane",  # energy 2/2, residential 1 said 1 true
        "leak ; residents fall ; parked car",  # energy said leak (wrong), residential 1/2
    ]
    truths = [
        {E: frozenset({"gas pipeline", "meter"}), R: frozenset({"gate"}), U: frozenset()},
        {E: frozenset({"well cover"}), R: frozenset({"fall", "parcel"}), U: frozenset()},
    ]
    scores = concept_scores(captions, truths)
    # energy: hits 2 of 3 present; said 3 -> precision 2/3
    assert scores.recall_by_domain["energy"] == pytest.approx(2 / 3)
    assert scores.precision_by_domain["energy"] == pytest.approx(2 / 3)
    # residential: hits gate + fall = 2 of 3 present; said gate, residents, fall -> 2/3
    assert scores.recall_by_domain["residential"] == pytest.approx(2 / 3)
    assert scores.precision_by_domain["residential"] == pytest.approx(2 / 3)
    # urban: nothing present -> recall 0 by convention; said 2, none right -> precision 0
    assert scores.recall_by_domain["urban"] == 0.0
    assert scores.precision_by_domain["urban"] == 0.0
    assert scores.said_by_domain["urban"] == 2
    assert scores.mean_recall == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)


def test_a_silent_model_scores_zero_not_perfect_precision() -> None:
    scores = concept_scores(["", ""], [{E: frozenset({"meter"})}, {E: frozenset()}], [E])
    assert scores.recall_by_domain == {"energy": 0.0}
    assert scores.precision_by_domain == {"energy": 0.0}


def test_concepts_are_counted_in_their_own_domain_only() -> None:
    # An energy word in the caption is no residential hit, wherever it appears.
    scores = concept_scores(["meter"], [{R: frozenset({"gate"}), E: frozenset()}], [E, R])
    assert scores.recall_by_domain["residential"] == 0.0
    assert scores.said_by_domain == {"energy": 1, "residential": 0}


def test_perfect_captions_score_one() -> None:
    truth = {
        E: frozenset({"leak", "gas pipeline"}),
        R: frozenset({"gate"}),
        U: frozenset({"bike lane"}),
    }
    scores = concept_scores(["gas pipeline with leak ; gate ; bike lane"], [truth])
    assert scores.mean_recall == 1.0 and scores.mean_precision == 1.0


def test_bleu_known_values() -> None:
    refs = ["gas pipeline with leak ; gate parcel ; bike lane parked car"]
    assert corpus_bleu(refs, refs) == pytest.approx(100.0)
    assert corpus_bleu(["completely different words here"], refs) < 5.0
    partial = corpus_bleu(["gas pipeline with leak ; gate ; bike lane"], refs)
    assert 5.0 < partial < 100.0


def test_metric_inputs_are_checked() -> None:
    with pytest.raises(ConfigError, match="2 captions for 1 scenes"):
        concept_scores(["a", "b"], [{E: frozenset()}])
    with pytest.raises(ConfigError, match="empty"):
        concept_scores([], [])
    with pytest.raises(ConfigError, match="hypotheses"):
        corpus_bleu(["a"], [])
