"""The demo's vocabulary, light enough for the command line to import at start-up.

Why here and not in options.py: the flags' choices must come from the core enums
(secagg.modes) the server uses, but the command parses flags without importing torch,
and the options module builds a training recipe (which does).
"""

from __future__ import annotations

from fedveil.secagg.modes import AggregationMode, DPKind

MODES: tuple[AggregationMode, ...] = tuple(AggregationMode)

DP_KINDS: tuple[DPKind, ...] = (DPKind.NONE, DPKind.CLIENT, DPKind.SAMPLE)
"""The demo's DP: none; client-level noise inside SecAgg (the server's `client`); or
DP-SGD inside each party (`sample`). Central DP trusts the server and is not demonstrated."""
