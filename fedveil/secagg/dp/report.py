"""Privacy reports of released DP aggregates: per round and cumulative for a federation.

Why a report next to every result: a DP mean is only interpretable with its privacy cost
and its noise. The server composes the events of every round it released (a failed round
releases nothing) and attaches, to each result, the round's epsilon and the federation's
epsilon so far, at the round's delta. These are federation-level numbers at the
configured client sampling rate; each client additionally keeps its own ledger
(secagg.dp.budget), which charges at upload and may account more conservatively.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from fedveil.errors import ConfigError
from fedveil.secagg.dp.accounting import AccountingMethod, PrivacyAccountant
from fedveil.secagg.dp.config import ClientDPConfig, NoisePlacement
from fedveil.secagg.dp.events import DpEvent


@dataclass(frozen=True)
class RoundPrivacyReport:
    """What a DP round cost and how noisy its result is.

    epsilon: cumulative over the `rounds` released DP rounds of the federation so far,
        this one included; round_epsilon: this round alone; both at `delta`.
    noise_std: std of the DP noise in each element of the released mean.
    trusts_server: central DP (the server saw the exact sum and added the noise).
    rigorous: whether `accountant` gives a proven bound (see secagg.dp.accounting).
    """

    kind: str
    epsilon: float
    delta: float
    round_epsilon: float
    rounds: int
    noise_multiplier: float
    clip_norm: float
    mechanism: str
    min_clients: int
    sampling_prob: float
    accountant: str
    rigorous: bool
    noise_std: float
    contributors: int
    trusts_server: bool
    note: str = ""

    def to_dict(self) -> dict[str, float | int | str | bool]:
        """Plain values for JSON (the keys `epsilon`, `delta`, `noise_multiplier`,
        `clip_norm` are what demos and reports quote)."""
        return asdict(self)


class FederationAccountant:
    """Composes the events of every released DP round of one federation."""

    def __init__(self, method: AccountingMethod | str = AccountingMethod.PRV) -> None:
        self._accountant = PrivacyAccountant(method)
        self._rounds = 0

    @property
    def rounds(self) -> int:
        return self._rounds

    @property
    def method(self) -> AccountingMethod:
        return self._accountant.method

    def restore(self, events: Sequence[DpEvent]) -> None:
        """Re-compose the events of one round released before a restart."""
        for event in events:
            self._accountant.compose(event)
        self._rounds += 1

    def record(
        self,
        config: ClientDPConfig,
        events: Sequence[DpEvent],
        *,
        delta: float,
        sampling_prob: float,
        noise_std: float,
        contributors: int,
    ) -> RoundPrivacyReport:
        """Compose one released round and report it (this round alone, and cumulative)."""
        if not events:
            raise ConfigError("a DP round emits at least one privacy event")
        alone = PrivacyAccountant(self._accountant.method)
        for event in events:
            alone.compose(event)
        single = alone.report(delta)
        self.restore(events)
        total = self._accountant.report(delta)
        central = config.placement is NoisePlacement.SERVER
        note = total.note
        if central:
            note = "central DP: the server saw the exact sum and added the noise (trusts it)" + (
                f"; {note}" if note else ""
            )
        return RoundPrivacyReport(
            kind="central" if central else "client",
            epsilon=total.epsilon,
            delta=total.delta,
            round_epsilon=single.epsilon,
            rounds=self._rounds,
            noise_multiplier=config.noise_multiplier,
            clip_norm=config.clip_norm,
            mechanism=config.mechanism.value,
            min_clients=config.min_clients,
            sampling_prob=sampling_prob,
            accountant=total.method.value,
            rigorous=total.rigorous,
            noise_std=noise_std,
            contributors=contributors,
            trusts_server=central,
            note=note,
        )
