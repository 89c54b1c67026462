"""Refuse to send one update in two rounds without DP noise (cross-round differencing).

Why: the server sees each round's aggregate. If a client sends the same update x in
rounds 1 and 2 and the survivor sets differ only by that client in one of them, the
difference of the two aggregates (times their weights) is x itself: secure aggregation
hid x inside each round, but not across them. DP noise, fresh in every round, makes that
difference noisy; without it a client must send a fresh update each round.

The guard remembers the SHA-256 of every update this process sent (values and their
dtype, so the same numbers under other tensor names are still the same update).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedveil.clients.streams import as_update_vector
from fedveil.errors import RepeatedUpdateError

_FIX = (
    "differencing two rounds' aggregates could isolate it; enable DP (--privacy-epsilon "
    "with --privacy-ledger: the client then joins only DP rounds) or send a fresh update "
    "each round (one "
    "`fedveil client` run per update)"
)


def update_digest(update: np.ndarray | Mapping[str, Any]) -> str:
    """Hex SHA-256 of the update's flat values (as the SDK flattens them) and dtype."""
    vector, _ = as_update_vector(update)
    flat = np.ascontiguousarray(vector)
    return hashlib.sha256(flat.dtype.str.encode() + b"\0" + flat.tobytes()).hexdigest()


class RepeatedUpdateGuard:
    """Admits an update once per process unless every round it goes to carries DP noise.

    `dp_protected`: True only if the client refuses every round without DP noise (a
    client with a privacy budget does: PrivacyPolicyError); the guard cannot know what a
    server will announce, so it must not take a server's word for it.
    """

    def __init__(self, *, dp_protected: bool) -> None:
        self.dp_protected = dp_protected
        self._sent: set[str] = set()

    def check_plan(self, update: np.ndarray | Mapping[str, Any], rounds: int) -> None:
        """Refuse up front, before anything is sent, a run that would repeat `update`."""
        if rounds > 1 and not self.dp_protected:
            raise RepeatedUpdateError(
                f"{rounds} rounds would send the same update (sha256 "
                f"{update_digest(update)[:16]}...) without DP noise: {_FIX}"
            )

    def admit(self, update: np.ndarray | Mapping[str, Any]) -> str:
        """Record `update` as sent (its digest), or RepeatedUpdateError if it was already."""
        digest = update_digest(update)
        if digest in self._sent and not self.dp_protected:
            raise RepeatedUpdateError(
                f"this update (sha256 {digest[:16]}...) was already sent in an earlier "
                f"round without DP noise: {_FIX}"
            )
        self._sent.add(digest)
        return digest
