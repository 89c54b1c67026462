"""The roster file re-read at every round open: revocation and re-enrolment take effect.

Why apart from the coordinator: which clients may take part is the federation's list,
kept in a file an operator edits (`fedveil keys revoke`, re-enrolment); the coordinator
only asks, before each round, for the roster that round runs with, or learns that none
can be used (and then opens no more rounds, rather than keep a revoked client in).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from fedveil.errors import ConfigError
from fedveil.secagg.crypto.identity import VerifyingIdentity
from fedveil.server.roster import Roster

log = logging.getLogger(__name__)

Identities = dict[str, VerifyingIdentity]


class RosterWatch:
    """Loads the roster with `load` and hands each one used to `on_change` (the
    servicer's authorisation)."""

    def __init__(self, load: Callable[[], Roster], on_change: Callable[[Roster], None]) -> None:
        self._load = load
        self._on_change = on_change

    def reload(
        self,
        previous: Identities,
        round_id: int,
        check: Callable[[Identities, int], None],
    ) -> Identities | None:
        """The identities round `round_id` runs with; a changed roster must pass `check`
        (ConfigError: it no longer shapes a valid round). None when the roster cannot be
        used: nothing was handed on."""
        try:
            roster = self._load()
            identities = roster.identities()
            if identities != previous:
                check(identities, round_id)
        except (ConfigError, OSError) as exc:
            log.error(
                "round %d not opened, no further rounds: the roster cannot be used (%s); "
                "fix it and restart the server",
                round_id,
                exc,
            )
            return None
        if identities != previous:
            removed = sorted(set(previous) - set(identities))
            rekeyed = sorted(
                c for c in identities if c in previous and identities[c] != previous[c]
            )
            added = sorted(set(identities) - set(previous))
            log.info(
                "roster changed before round %d: removed %s, re-keyed %s, added %s",
                round_id,
                removed,
                rekeyed,
                added,
            )
        self._on_change(roster)
        return identities
