"""Text overlap for the generation-only attacks: units, ROUGE-L, n-gram recall, matches.

Why units instead of tokens or characters: the black-box attacker sees decoded text, and
tokenizers disagree on how "4719" looks ("4719", "47"+"19", "4 7 1 9"), so comparing
model tokens would tie the score to one tokenizer. Text is split into lower-cased
words, single digits and single punctuation marks, so "Gate 4719." and "gate 4 7 1 9 ."
are the same 7 units, and a 4-digit secret is 4 units whose partial recovery still
counts (three right digits beat none). ROUGE-L is implemented here (an O(nm) LCS;
canary suffixes are a handful of units), not taken from a dependency.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

_UNIT = re.compile(r"[^\W\d_]+|\d|[^\w\s]|_")


def units(text: str) -> list[str]:
    """Lower-cased words, single digits and single punctuation marks, in order."""
    return _UNIT.findall(text.lower())


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (dynamic programming, one row of memory)."""
    if not a or not b:
        return 0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(candidate: Sequence[str], reference: Sequence[str]) -> float:
    """ROUGE-L F1 = 2PR / (P + R) with P = LCS/|candidate|, R = LCS/|reference|."""
    lcs = lcs_length(candidate, reference)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(candidate), lcs / len(reference)
    return 2 * precision * recall / (precision + recall)


def ngram_recall(candidate: Sequence[str], reference: Sequence[str], n: int) -> float:
    """The share of the reference's n-grams found in the candidate (clipped counts, as in
    ROUGE-N recall); falls back to the longest n the reference has."""
    n = max(1, min(n, len(reference)))
    if not reference:
        return 0.0
    ref = Counter(tuple(reference[i : i + n]) for i in range(len(reference) - n + 1))
    cand = Counter(tuple(candidate[i : i + n]) for i in range(len(candidate) - n + 1))
    hits = sum(min(count, cand[gram]) for gram, count in ref.items())
    return hits / sum(ref.values())


def contains_units(text: str, secret: str) -> bool:
    """Whether the secret's units appear contiguously in the text's units (spacing,
    casing and digit grouping ignored: "4 7 1 9" contains "4719")."""
    hay, needle = units(text), units(secret)
    if not needle:
        return False
    return any(hay[i : i + len(needle)] == needle for i in range(len(hay) - len(needle) + 1))


def starts_with_units(text: str, secret: str) -> bool:
    """Whether the text's first units are exactly the secret's (an extraction)."""
    needle = units(secret)
    return bool(needle) and units(text)[: len(needle)] == needle


def verbatim(text: str, secret: str) -> bool:
    """Whether the secret occurs character for character (the strict definition)."""
    return secret in text
