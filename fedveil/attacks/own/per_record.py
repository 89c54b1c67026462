"""Per-record scores: how much of each given record an attack recovered, ranked.

Why per record: a team asks "which of *our* records does this delta give away", which a
mean token recall over a batch does not answer (ML Privacy Meter reports risk per
record for the same reason). Each record is scored against each attack's output:

- positional (token recovery, DAGER): the attack returns (token, position) pairs; a
  record matches where its i-th token was found at position offset + i, for the offset
  that matches most (the prompt or bos before the text shifts it, and the attacker need
  not know them). recall = matched / record length, precision = matched / pairs found;
- bag (the LM head's token bag): the record's distinct tokens against the bag.

A record's score is its best F1 over the attacks; it counts as recovered when that is at
least RECOVERED_F1 *and* above every data-free reference record's score (records the
delta never saw, records.baseline_records), so that common words alone never count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from fedveil.attacks.own.records import Record

RECOVERED_F1 = 0.5


@dataclass(frozen=True)
class Recovered:
    """What one attack recovered, in the form the scores compare against."""

    attack: str
    positional: bool
    pairs: frozenset[tuple[int, int]] = frozenset()
    bag: frozenset[int] = frozenset()

    @property
    def size(self) -> int:
        return len(self.pairs) if self.positional else len(self.bag)


@dataclass(frozen=True)
class Match:
    recall: float
    precision: float
    f1: float

    def to_json(self) -> dict[str, float]:
        return {"recall": self.recall, "precision": self.precision, "f1": self.f1}


@dataclass(frozen=True)
class RecordScore:
    """One record's matches per attack, its best F1 and whether it counts as recovered."""

    record: Record
    matches: Mapping[str, Match] = field(default_factory=dict)
    recovered: bool = False
    rank: int = 0

    @property
    def score(self) -> float:
        return max((m.f1 for m in self.matches.values()), default=0.0)

    @property
    def best_attack(self) -> str:
        if not self.matches or self.score == 0.0:
            return ""
        return max(self.matches, key=lambda a: self.matches[a].f1)

    def to_json(self) -> dict[str, object]:
        return {
            "rank": self.rank,
            "text": self.record.text,
            "source": self.record.source,
            "tokens": len(self.record.tokens),
            "score": self.score,
            "best_attack": self.best_attack,
            "recovered": self.recovered,
            "attacks": {a: m.to_json() for a, m in self.matches.items()},
        }


def _f1(matched: int, size: int, found: int) -> Match:
    recall = matched / size if size else 0.0
    precision = matched / found if found else 0.0
    f1 = 0.0 if matched == 0 else 2 * recall * precision / (recall + precision)
    return Match(recall, precision, f1)


def positional_match(tokens: Sequence[int], pairs: frozenset[tuple[int, int]]) -> Match:
    """The record's tokens found at consecutive positions, for the best offset."""
    if not pairs or not tokens:
        return Match(0.0, 0.0, 0.0)
    last = max(p for _, p in pairs)
    best = 0
    for offset in range(0, last + 1):
        hits = sum((t, offset + i) in pairs for i, t in enumerate(tokens))
        best = max(best, hits)
    return _f1(best, len(tokens), len(pairs))


def bag_match(tokens: Sequence[int], bag: frozenset[int]) -> Match:
    """The record's distinct tokens found in the bag."""
    distinct = set(tokens)
    return _f1(len(distinct & bag), len(distinct), len(bag))


def score_record(record: Record, recovered: Iterable[Recovered]) -> dict[str, Match]:
    return {
        r.attack: positional_match(record.tokens, r.pairs)
        if r.positional
        else bag_match(record.tokens, r.bag)
        for r in recovered
    }


def rank_records(
    records: Sequence[Record], baseline: Sequence[Record], recovered: Sequence[Recovered]
) -> tuple[list[RecordScore], list[RecordScore]]:
    """(the records ranked by score, best first, with `recovered` set; the baseline's)."""
    reference = [RecordScore(r, score_record(r, recovered)) for r in baseline]
    floor = max((s.score for s in reference), default=0.0)
    scored = [RecordScore(r, score_record(r, recovered)) for r in records]
    order = sorted(range(len(scored)), key=lambda i: (-scored[i].score, i))
    ranked = [
        RecordScore(
            scored[i].record,
            scored[i].matches,
            recovered=scored[i].score >= RECOVERED_F1 and scored[i].score > floor,
            rank=position + 1,
        )
        for position, i in enumerate(order)
    ]
    return ranked, reference


def baseline_summary(reference: Sequence[RecordScore]) -> dict[str, float]:
    """Mean and max score of the reference records, overall and per attack."""
    if not reference:
        return {"count": 0.0}
    scores = [s.score for s in reference]
    out = {"count": float(len(scores)), "mean": sum(scores) / len(scores), "max": max(scores)}
    attacks = {a for s in reference for a in s.matches}
    for attack in sorted(attacks):
        f1s = [s.matches[attack].f1 for s in reference if attack in s.matches]
        out[f"{attack}.mean"] = sum(f1s) / len(f1s)
        out[f"{attack}.max"] = max(f1s)
    return out
