"""Decode-time blacklist of token sequences (a transformers LogitsProcessor).

Why a trie of sequences rather than banning tokens: a secret is several tokens ("▁",
"4", "7", "1", "9"), each harmless on its own; the processor bans only the token that
would *complete* a banned sequence given the tokens already in the context (prompt and
generated text), so "47" may still be written, "4719" may not.

What it enforces, exactly: the token sequences listed. A literal is listed in the
tokenisations `token_sequences` produces: alone and after a space, in four casings, and
without a leading word-start marker token ("▁" in SentencePiece-style tokenizers). A
model that spells the secret with *other* tokens ("4", "7", "19" under a BPE whose
canonical split is "47", "19"; or "4 7 1 9" with spaces) is not stopped here -- that is
the text-level check's job (attacks.output.filters.text_ban) and the redactor's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from transformers import LogitsProcessor

from fedveil.attacks.output.filters.masking import ban, keep_alive
from fedveil.errors import ConfigError


def token_sequences(
    tokenizer: Any, literals: Iterable[str], *, casings: bool = True
) -> list[tuple[int, ...]]:
    """The tokenisations of each literal that the ban lists (see the module docstring)."""
    out: dict[tuple[int, ...], None] = {}
    for literal in literals:
        forms = {literal}
        if casings:
            forms |= {literal.lower(), literal.upper(), literal.capitalize()}
        for form in forms:
            for text in (form, " " + form):
                ids = tuple(int(i) for i in tokenizer.encode(text, add_special_tokens=False))
                if not ids:
                    continue
                out[ids] = None
                if len(ids) > 1 and not tokenizer.decode(ids[:1]).strip():
                    out[ids[1:]] = None  # the bare word-start marker is context, not secret
    return list(out)


class SequenceBanProcessor(LogitsProcessor):
    """Bans the next token wherever it would complete one of `sequences`.

    Cost per step and row: one dict lookup per distinct sequence length.
    """

    def __init__(
        self, sequences: Sequence[Sequence[int]], *, eos_token_id: int | None = None
    ) -> None:
        if not sequences:
            raise ConfigError("SequenceBanProcessor needs at least one banned sequence")
        self._next: dict[tuple[int, ...], set[int]] = {}
        for seq in sequences:
            if not seq:
                raise ConfigError("a banned token sequence is empty")
            key = tuple(int(t) for t in seq[:-1])
            self._next.setdefault(key, set()).add(int(seq[-1]))
        self._lengths = sorted({len(k) for k in self._next})
        self.eos_token_id = eos_token_id
        self.bans = 0  # tokens banned so far, counted per (row, step, token)

    def banned_next(self, context: Sequence[int]) -> set[int]:
        """The tokens that would complete a banned sequence after `context`."""
        out: set[int] = set()
        for length in self._lengths:
            if length > len(context):
                break
            key = tuple(context[len(context) - length :]) if length else ()
            out |= self._next.get(key, set())
        return out

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.clone()
        longest = self._lengths[-1]
        for row, context in enumerate(
            input_ids[:, max(0, input_ids.shape[1] - longest) :].tolist()
        ):
            banned = self.banned_next(context)
            self.bans += len(banned)
            ban(scores, row, banned)
        return keep_alive(scores, self.eos_token_id)
