"""Per-client privacy budgets: refuse to take part rather than overspend.

Why the client enforces it: under client-level DP the server is not trusted with the
data, so it cannot be trusted to stop a client from being queried past its budget
either. Each client keeps a ledger of the events it took part in and checks, before it
trains or uploads, that epsilon after the next round stays within its budget.

Why charge at upload, not at aggregation: once a noised update has left the client, its
privacy is spent whether or not the round completes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from fedveil.errors import ConfigError, PrivacyBudgetExceededError
from fedveil.secagg.dp.accounting import (
    AccountingMethod,
    EpsilonReport,
    PrivacyAccountant,
    check_delta,
)
from fedveil.secagg.dp.events import DpEvent


@dataclass(frozen=True)
class PrivacyBudget:
    """The most (epsilon, delta) a party accepts over the whole run."""

    epsilon: float
    delta: float

    def __post_init__(self) -> None:
        eps = self.epsilon
        if (
            isinstance(eps, bool)
            or not isinstance(eps, int | float)
            or not math.isfinite(eps)
            or eps <= 0
        ):
            raise ConfigError(f"budget epsilon must be a finite number > 0, got {eps!r}")
        object.__setattr__(self, "epsilon", float(eps))
        object.__setattr__(self, "delta", check_delta(self.delta))


class PrivacyLedger:
    """Events a party has been charged for, checked against its budget.

    `charge(events)` is the one call a client makes per round, after the round config
    is known and before it uploads: it raises PrivacyBudgetExceededError (and records
    nothing) if the round would overspend, otherwise records the round.
    """

    def __init__(
        self,
        budget: PrivacyBudget,
        *,
        method: AccountingMethod | str = AccountingMethod.PRV,
        owner: str = "this client",
        discrete_as_gaussian: bool = False,
    ) -> None:
        if not isinstance(budget, PrivacyBudget):
            raise ConfigError(f"budget must be a PrivacyBudget, got {type(budget).__name__}")
        self.budget = budget
        self.owner = owner
        self._accountant = PrivacyAccountant(method, discrete_as_gaussian=discrete_as_gaussian)
        self._rounds = 0

    @property
    def rounds(self) -> int:
        """How many charges were recorded."""
        return self._rounds

    @property
    def events(self) -> tuple[DpEvent, ...]:
        return self._accountant.events

    def report(self) -> EpsilonReport:
        """Epsilon spent so far, at the budget's delta."""
        return self._accountant.report(self.budget.delta)

    @property
    def spent_epsilon(self) -> float:
        return self.report().epsilon

    def projected(self, events: Iterable[DpEvent]) -> EpsilonReport:
        """Epsilon if `events` were charged now (nothing is recorded)."""
        return self._accountant.extended(events).report(self.budget.delta)

    def check(self, events: Sequence[DpEvent]) -> EpsilonReport:
        """The projected report, or PrivacyBudgetExceededError if it is over budget."""
        after = self.projected(events)
        if not after.epsilon <= self.budget.epsilon:  # also refuses NaN / inf
            spent = self.spent_epsilon
            raise PrivacyBudgetExceededError(
                f"privacy budget exceeded for {self.owner}: epsilon spent so far is "
                f"{spent:.4g} over {self._rounds} round(s); taking part in this round would "
                f"bring it to {after.epsilon:.4g} > budget epsilon {self.budget.epsilon:.4g} "
                f"at delta {self.budget.delta:g} ({after.method.value} accountant). Refusing "
                f"to take part; stop training here, or start a new run with a larger budget "
                f"or more noise per round"
            )
        return after

    @property
    def method(self) -> AccountingMethod:
        """The accounting method this ledger composes its events with."""
        return self._accountant.method

    @property
    def discrete_as_gaussian(self) -> bool:
        return self._accountant.discrete_as_gaussian

    def charge(self, events: Sequence[DpEvent]) -> EpsilonReport:
        """Check, then record `events` as spent; returns the new cumulative report.

        A subclass that keeps the ledger elsewhere (clients.privacy_ledger writes a file)
        overrides this to store the round *before* `_record`, so that an error while
        storing leaves nothing recorded and the caller sends nothing."""
        events = list(events)
        after = self.check(events)
        self._record(events)
        return after

    def _record(self, events: Sequence[DpEvent]) -> None:
        """Record one round's events as spent, unchecked (charge checks; a stored ledger
        replays the rounds it already charged)."""
        for event in events:
            self._accountant.compose(event)
        self._rounds += 1
