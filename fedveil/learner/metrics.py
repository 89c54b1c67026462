"""Concept recall and precision of generated captions, and corpus BLEU.

Why concepts rather than BLEU alone: the question is whether a model *sees* a domain's
elements, not whether it copies the glue words. A concept counts as said when its word
sequence appears in the caption (so "gas pipeline" needs both words in order, and the
generic word "street" never counts as "street vendor"). Scores are micro-averaged over
the test set: recall = concepts correctly said / concepts present; precision = concepts
correctly said / concepts said (0 when nothing was said, like sklearn's
zero_division=0, so a silent model is not rewarded).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import sacrebleu

from fedveil.errors import ConfigError
from fedveil.learner.data.concepts import DOMAIN_CONCEPTS, DOMAINS, Domain

_WORD = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[str]:
    """Lower-cased words and punctuation marks, the unit concepts are matched in."""
    return _WORD.findall(text.lower())


def find_concepts(text: str, vocabulary: Iterable[str]) -> frozenset[str]:
    """The concepts of `vocabulary` whose word sequence occurs in `text`."""
    tokens = words(text)
    found = set()
    for concept in vocabulary:
        pattern = words(concept)
        width = len(pattern)
        if width and any(tokens[i : i + width] == pattern for i in range(len(tokens) - width + 1)):
            found.add(concept)
    return frozenset(found)


@dataclass(frozen=True)
class ConceptScores:
    """Per-domain micro-averaged recall and precision, and the counts behind them."""

    recall_by_domain: dict[str, float]
    precision_by_domain: dict[str, float]
    hits_by_domain: dict[str, int] = field(default_factory=dict)
    present_by_domain: dict[str, int] = field(default_factory=dict)
    said_by_domain: dict[str, int] = field(default_factory=dict)

    @property
    def mean_recall(self) -> float:
        """Unweighted mean over domains: every viewpoint counts the same."""
        return sum(self.recall_by_domain.values()) / len(self.recall_by_domain)

    @property
    def mean_precision(self) -> float:
        return sum(self.precision_by_domain.values()) / len(self.precision_by_domain)


def concept_scores(
    captions: Sequence[str],
    truths: Sequence[Mapping[Domain, frozenset[str]]],
    domains: Sequence[Domain] = DOMAINS,
    vocabulary: Mapping[Domain, Sequence[str]] = DOMAIN_CONCEPTS,
) -> ConceptScores:
    """Score full captions (one per test scene) against each scene's concepts per domain."""
    if len(captions) != len(truths):
        raise ConfigError(f"{len(captions)} captions for {len(truths)} scenes")
    if not captions:
        raise ConfigError("cannot score an empty test set")
    if not domains:
        raise ConfigError("score at least one domain")
    recall, precision, hits_d, present_d, said_d = {}, {}, {}, {}, {}
    for domain in domains:
        hits = present = said = 0
        for caption, truth in zip(captions, truths, strict=True):
            predicted = find_concepts(caption, vocabulary[domain])
            actual = frozenset(truth.get(domain, frozenset()))
            hits += len(predicted & actual)
            present += len(actual)
            said += len(predicted)
        key = Domain(domain).value
        recall[key] = hits / present if present else 0.0
        precision[key] = hits / said if said else 0.0
        hits_d[key], present_d[key], said_d[key] = hits, present, said
    return ConceptScores(recall, precision, hits_d, present_d, said_d)


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """sacrebleu corpus BLEU (0-100) of generated full captions against the references."""
    if len(hypotheses) != len(references):
        raise ConfigError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    if not hypotheses:
        raise ConfigError("cannot compute BLEU on an empty test set")
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)
