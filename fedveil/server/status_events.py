"""What the coordinator tells an operator's instruments about rounds: opened, a stage
closed (how long it took, how many answered), ended (done or failed, and why), privacy
spent; and the last failure, which `fedveil status` reports.

Why an observer, not metrics calls in the coordinator: the coordinator owns time and
must not depend on how (or whether) an operator watches it. A server without
`--metrics-port` gets the no-op observer, and the Prometheus side (server.metrics) stays
one module that a test can read without reaching into the round logic.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedveil.secagg.protocol.stages import Stage


@dataclass(frozen=True)
class FailureNote:
    """The last round that failed: which, at what stage, and the error's message."""

    round_id: int
    stage: Stage | None
    reason: str
    kind: str  # the error's class name: a bounded label for metrics ("restart" on replay)


class RoundObserver:
    """Receives round events; every method is a no-op here (the default observer)."""

    def round_opened(self, round_id: int) -> None:
        """A round opened (or was resumed after a restart)."""

    def stage_closed(
        self, round_id: int, stage: Stage, seconds: float, answered: int, expected: int
    ) -> None:
        """`stage` closed after `seconds`, having heard `answered` of `expected` clients."""

    def round_ended(self, round_id: int, failure: FailureNote | None) -> None:
        """The round is done (failure None) or failed."""

    def privacy_spent(self, epsilon: float) -> None:
        """The federation's cumulative epsilon after a released DP round."""
