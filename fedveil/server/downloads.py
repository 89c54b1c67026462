"""Who fetched which round's result, and waiting until every survivor has.

Why apart from the coordinator: the coordinator owns when stages close; this only
remembers downloads, so that after the last round the server keeps serving until the
survivors holding a share of the result have it (`--rounds R` does not cut them off).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from fedveil.server.active_round import ActiveRound


class ResultDownloads:
    """The clients that fetched each round's result."""

    def __init__(self) -> None:
        self.by_round: dict[int, set[str]] = {}

    def record(self, round_id: int, client_id: str) -> None:
        self.by_round.setdefault(round_id, set()).add(client_id)

    def pending(self, rounds: Mapping[int, ActiveRound]) -> list[int]:
        """The rounds with a result some survivor has not fetched yet."""
        return [
            rid
            for rid, active in rounds.items()
            if active.server.result is not None
            and not set(active.server.result.survivors) <= self.by_round.get(rid, set())
        ]

    async def drain(
        self, rounds: Mapping[int, ActiveRound], timeout_s: float, poll_s: float = 0.05
    ) -> None:
        """Return once every survivor of `rounds` fetched its result, or after `timeout_s`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            if not self.pending(rounds):
                return
            await asyncio.sleep(poll_s)
