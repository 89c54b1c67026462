"""Shared by the decode-time filters: how a ban is written into the logits.

Why a helper: every filter bans by setting scores to -inf, and a row whose every token
is banned would make sampling divide by zero (NaN probabilities). Ending the text is
always safe -- an empty continuation leaks nothing -- so such a row keeps only eos.
"""

from __future__ import annotations

import torch


def ban(scores: torch.Tensor, row: int, tokens: list[int] | set[int]) -> None:
    """Set the scores of `tokens` in `row` to -inf (in place)."""
    if tokens:
        scores[row, list(tokens)] = float("-inf")


def keep_alive(scores: torch.Tensor, eos_id: int | None) -> torch.Tensor:
    """Give eos a finite score in every row where nothing else is left."""
    if eos_id is None:
        return scores
    dead = ~torch.isfinite(scores).any(dim=-1)
    if dead.any():
        scores[dead, eos_id] = 0.0
    return scores
