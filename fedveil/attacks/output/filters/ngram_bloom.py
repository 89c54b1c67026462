"""MemFree-style decoding (Ippolito et al. 2023): never complete an n-gram of the private
training data. A Bloom filter (rbloom) holds the n-grams of token ids.

Why a Bloom filter: the set of training n-grams is as large as the training data, and
the filter is consulted |candidates| times per generated token; a Bloom filter answers
in constant time from ~10 bits per n-gram, never misses a stored n-gram (no false
negatives: verbatim continuation of n training tokens is impossible), and wrongly bans
an unseen n-gram with probability `false_positive_rate` -- part of the measured FPR.

What it does not do (the paper's own point, "preventing verbatim memorization gives a
false sense of privacy"): it only stops *exact token* n-grams; a secret re-spaced,
re-cased or paraphrased is different tokens and passes. And it bans public n-grams that
happen to be in the private data too, which costs utility on benign text.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from rbloom import Bloom
from transformers import LogitsProcessor

from fedveil.attacks.output.filters.masking import ban, keep_alive
from fedveil.errors import ConfigError


class NGramBloom:
    """The n-grams (tuples of n token ids) of a corpus in a Bloom filter."""

    def __init__(self, n: int, expected_items: int, false_positive_rate: float = 1e-3) -> None:
        if n < 2:
            raise ConfigError(f"n-gram length must be >= 2 (1 would ban single tokens), got {n}")
        if not 0 < false_positive_rate < 1:
            raise ConfigError(f"false_positive_rate must be in (0, 1), got {false_positive_rate}")
        self.n = n
        self.false_positive_rate = false_positive_rate
        self._bloom = Bloom(max(1, expected_items), false_positive_rate)
        self.count = 0

    def add_sequence(self, ids: Sequence[int]) -> None:
        for i in range(len(ids) - self.n + 1):
            self._bloom.add(tuple(int(t) for t in ids[i : i + self.n]))
            self.count += 1

    def __contains__(self, gram: tuple[int, ...]) -> bool:
        return gram in self._bloom

    @property
    def size_in_bits(self) -> int:
        return int(self._bloom.size_in_bits)

    @classmethod
    def from_texts(
        cls,
        texts: Iterable[str],
        tokenizer: Any,
        n: int,
        *,
        false_positive_rate: float = 1e-3,
        bos: bool = True,
        eos: bool = True,
    ) -> NGramBloom:
        """The n-grams of each text tokenised as in training (bos + text + eos)."""
        sequences = []
        for text in texts:
            ids = list(tokenizer.encode(text, add_special_tokens=False))
            if bos and tokenizer.bos_token_id is not None:
                ids = [int(tokenizer.bos_token_id), *ids]
            if eos and tokenizer.eos_token_id is not None:
                ids = [*ids, int(tokenizer.eos_token_id)]
            sequences.append(ids)
        bloom = cls(n, sum(max(0, len(s) - n + 1) for s in sequences), false_positive_rate)
        for ids in sequences:
            bloom.add_sequence(ids)
        return bloom


class NGramBanProcessor(LogitsProcessor):
    """Bans every candidate token that would complete a stored n-gram.

    The n-gram is the last n-1 tokens of the context (prompt included) plus the candidate.
    top_k=None checks every vocabulary entry (exact; |V| lookups a step, fine for small
    vocabularies); an integer checks the top k and removes the rest, as in MemFree.
    """

    def __init__(
        self, bloom: NGramBloom, *, top_k: int | None = None, eos_token_id: int | None = None
    ) -> None:
        if top_k is not None and top_k < 1:
            raise ConfigError(f"top_k must be None or >= 1, got {top_k}")
        self.bloom = bloom
        self.top_k = top_k
        self.eos_token_id = eos_token_id
        self.bans = 0

    def banned(self, context: Sequence[int], candidates: Iterable[int]) -> set[int]:
        if len(context) < self.bloom.n - 1:
            return set()  # too short to complete an n-gram
        prefix = tuple(int(t) for t in context[len(context) - (self.bloom.n - 1) :])
        return {c for c in candidates if (*prefix, c) in self.bloom}

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.clone()
        vocab = scores.shape[1]
        contexts = input_ids[:, max(0, input_ids.shape[1] - (self.bloom.n - 1)) :].tolist()
        for row, context in enumerate(contexts):
            if self.top_k is None:
                candidates: list[int] = torch.isfinite(scores[row]).nonzero().flatten().tolist()
            else:
                k = min(self.top_k, int(torch.isfinite(scores[row]).sum()))
                top = torch.topk(scores[row], k).indices
                keep = torch.full_like(scores[row], float("-inf"))
                keep[top] = scores[row, top]
                scores[row] = keep
                candidates = top.tolist()
            banned = self.banned(context, candidates) if vocab else set()
            self.bans += len(banned)
            ban(scores, row, banned)
        return keep_alive(scores, self.eos_token_id)
