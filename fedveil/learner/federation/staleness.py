"""How much a stale update counts in a buffered (FedBuff) round, decided by its sender.

Why client-side: the weight travels masked next to the update (the masked weight
element of a SecAgg upload), so the server never learns how stale anyone was beyond
what the round's model hash already tells it; a party scales its own example count by
s(tau), where tau is how many results were published between the model it trained from
and the round it joins.

Why the polynomial 1 / (1 + tau)^a with a = 1/2 by default: it is FedBuff's choice
(Nguyen et al., 2022), a gentle discount that keeps a slow party's data in the model
while letting fresher updates dominate; `constant` turns staleness weighting off.

Why integers: the service aggregates integer weights (round.max_weight bounds them), so
the scaled weight is rounded, and never below 1 (a stale update still counts).

Under client-level DP the service's mean is unweighted (every survivor counts once, the
weight is not sent), so a staleness weight would have no effect: `for_dp` refuses any
staleness function but `constant` there, rather than let a configuration claim a discount
it does not apply.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from fedveil.errors import ConfigError


class StalenessKind(StrEnum):
    CONSTANT = "constant"
    POLYNOMIAL = "polynomial"


@dataclass(frozen=True)
class StalenessWeight:
    """s(tau): constant (1) or polynomial ((1 + tau)^-exponent)."""

    kind: StalenessKind = StalenessKind.POLYNOMIAL
    exponent: float = 0.5

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", StalenessKind(self.kind))
        except ValueError:
            choices = [k.value for k in StalenessKind]
            raise ConfigError(f"staleness must be one of {choices}, got {self.kind!r}") from None
        if not (math.isfinite(self.exponent) and self.exponent >= 0):
            raise ConfigError(f"staleness exponent must be finite and >= 0, got {self.exponent}")

    def factor(self, tau: int) -> float:
        """s(tau) for an update `tau` published results behind the round it joins."""
        if isinstance(tau, bool) or not isinstance(tau, int) or tau < 0:
            raise ConfigError(f"staleness must be a non-negative int, got {tau!r}")
        if self.kind is StalenessKind.CONSTANT:
            return 1.0
        return float((1.0 + tau) ** -self.exponent)

    def weight(self, weight: int, tau: int) -> int:
        """The integer weight a party sends: round(weight * s(tau)), at least 1."""
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
            raise ConfigError(f"a weight must be a positive int, got {weight!r}")
        return max(1, round(weight * self.factor(tau)))

    def for_dp(self) -> StalenessWeight:
        """This function, checked for a client-level DP federation (unweighted means)."""
        if self.kind is not StalenessKind.CONSTANT:
            raise ConfigError(
                f"staleness {self.kind.value!r} has no effect under client-level DP: its means "
                "are unweighted, so the weight that carries the discount is never sent; use "
                "staleness 'constant'"
            )
        return self


NO_STALENESS = StalenessWeight(StalenessKind.CONSTANT)
FEDBUFF = StalenessWeight(StalenessKind.POLYNOMIAL, 0.5)
