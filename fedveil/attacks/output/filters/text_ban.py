"""Decode-time regex / flexible-literal filter: bans a token if the *text* it completes
matches a blocked pattern (a transformers LogitsProcessor).

Why text-level on top of the token-sequence ban: regexes ("any 7-digit phone number")
and tokenizer-independent literals cannot be listed as token sequences -- a BPE can spell
one string in many ways. So at every step, for each candidate token, the processor
decodes the context window plus the candidate and bans the candidate if some pattern
now has a match that ends in the newly added text.

What is enforced at decode time, exactly:
- only the `top_k` most likely candidates are checked; every other token is removed
  (an unchecked token cannot be allowed), so with sampling this filter also truncates
  to the top k; top_k=None checks the whole vocabulary (exact, |V| decodes a step);
- patterns see the last `window` tokens (prompt included) decoded; a match that starts
  before the window is not seen;
- a pattern fires as soon as the text so far can match (the end of the text counts as a
  boundary), so it blocks the first token that would complete any match;
- lookahead beyond the current token is impossible: a pattern that only matches once
  later text arrives is decided when that text arrives.
What is left to the post-generation redactor (attacks.output.filters.redactor): matches the
decode-time check cannot see (beyond the window), and any filter bypass, since it
checks the final text as a whole.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

import torch
from transformers import LogitsProcessor

from fedveil.attacks.output.filters.masking import ban, keep_alive
from fedveil.attacks.output.filters.patterns import new_match
from fedveil.errors import ConfigError


class TextPatternProcessor(LogitsProcessor):
    """Bans candidates whose decoded text completes a match of any of `patterns`."""

    def __init__(
        self,
        tokenizer: Any,
        patterns: Sequence[re.Pattern[str]],
        *,
        top_k: int | None = 32,
        window: int = 48,
        eos_token_id: int | None = None,
    ) -> None:
        if not patterns:
            raise ConfigError("TextPatternProcessor needs at least one pattern")
        if top_k is not None and top_k < 1:
            raise ConfigError(f"top_k must be None or >= 1, got {top_k}")
        if window < 1:
            raise ConfigError(f"window must be >= 1 token, got {window}")
        self.tokenizer = tokenizer
        self.patterns = list(patterns)
        self.top_k = top_k
        self.window = window
        self.eos_token_id = eos_token_id
        self.bans = 0

    def banned(self, context: Sequence[int], candidates: Sequence[int]) -> set[int]:
        """The candidates that would complete a match after `context`."""
        texts = self.tokenizer.batch_decode(
            [list(context)] + [[*context, c] for c in candidates], skip_special_tokens=True
        )
        base = texts[0]
        out = set()
        for candidate, text in zip(candidates, texts[1:], strict=True):
            if text == base:
                continue  # adds no text (special tokens): cannot complete a match
            old = len(os.path.commonprefix([base, text]))
            if any(new_match(p, text, old) for p in self.patterns):
                out.add(candidate)
        return out

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.clone()
        finite = torch.isfinite(scores)
        contexts = input_ids[:, max(0, input_ids.shape[1] - self.window) :].tolist()
        for row, context in enumerate(contexts):
            allowed = int(finite[row].sum())
            k = allowed if self.top_k is None else min(self.top_k, allowed)
            if k == 0:
                continue
            top = torch.topk(scores[row], k).indices
            if k < scores.shape[1]:
                keep = torch.full_like(scores[row], float("-inf"))
                keep[top] = scores[row, top]
                scores[row] = keep
            banned = self.banned(context, top.tolist())
            self.bans += len(banned)
            ban(scores, row, banned)
        return keep_alive(scores, self.eos_token_id)
