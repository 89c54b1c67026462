"""The demo's vocabulary, light enough for the command line to import at start-up.

Why here and not in options.py: the flags' choices must come from the core enums
(secagg.modes) the server uses, but the command parses flags without importing torch,
and the options module builds a training recipe (which does).
"""

from __future__ import annotations

from fedveil.errors import ConfigError
from fedveil.secagg.modes import AggregationMode, DPKind

MODES: tuple[AggregationMode, ...] = tuple(AggregationMode)

DP_KINDS: tuple[DPKind, ...] = (DPKind.NONE, DPKind.CLIENT, DPKind.SAMPLE)
"""The demo's DP: none; client-level noise inside SecAgg (the server's `client`); or
DP-SGD inside each party (`sample`). Central DP trusts the server and is not demonstrated."""


def parse_rank_list(text: str) -> tuple[int, ...]:
    """`--ranks 4,8,16`: one LoRA rank per party, in party order (checked against the
    parties and the maximum in demo.options)."""
    parts = [part.strip() for part in text.split(",")]
    try:
        ranks = tuple(int(part) for part in parts)
    except ValueError:
        raise ConfigError(
            f"--ranks takes comma-separated ints (e.g. 4,8,16), got {text!r}"
        ) from None
    if any(rank < 1 for rank in ranks):
        raise ConfigError(f"--ranks: every rank must be >= 1, got {text!r}")
    return ranks
