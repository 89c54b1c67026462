"""What every mode's driver answers, and the one table of them the client uses.

Why an interface: the client joins a round, checks that it may take part (mode pinning,
the model chain, the update's shape) and accepts the aggregate the same way whatever
the mode; only the stage RPCs in between differ. Each mode's driver (clients.
secagg_driver, clients.ckks_driver, clients.plaintext_driver) takes a RoundCall and
returns what it received (clients.result.Received) for the client to accept.

Why a table keyed by AggregationMode: adding a mode is its definition in secagg.modes
plus one row here (and one in the server's server.round_modes.ROUND_FACTORIES); a test
(tests/secagg/test_modes.py) checks that no mode lacks its row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Protocol

import numpy as np

from fedveil.clients.ckks_driver import CkksDriver
from fedveil.clients.options import ClientOptions
from fedveil.clients.plaintext_driver import PlaintextDriver
from fedveil.clients.result import Received
from fedveil.clients.round_call import RoundCall
from fedveil.clients.secagg_driver import SecAggDriver
from fedveil.clients.streams import TensorLayout
from fedveil.secagg.dp.budget import PrivacyLedger
from fedveil.secagg.modes import AggregationMode


class ModeDriver(Protocol):
    """Drives one round of its mode for one client."""

    mode: AggregationMode
    adds_dp_noise: bool  # whether a round of the mode can carry a client's DP noise

    async def run(
        self, call: RoundCall, update: np.ndarray, weight: int, layout: TensorLayout | None
    ) -> Received:
        """Take part in every stage and return the result as received (not yet accepted)."""
        ...


# A driver of one mode for one client: built from its options and its privacy ledger.
DriverFactory = Callable[[ClientOptions, PrivacyLedger | None], ModeDriver]

DRIVERS: Mapping[AggregationMode, DriverFactory] = MappingProxyType(
    {
        AggregationMode.SECAGG: lambda options, ledger: SecAggDriver(ledger),
        AggregationMode.CKKS: lambda options, ledger: CkksDriver(options.ckks_workers),
        AggregationMode.PLAINTEXT: lambda options, ledger: PlaintextDriver(),
    }
)


def drivers_for(
    options: ClientOptions, ledger: PrivacyLedger | None
) -> dict[AggregationMode, ModeDriver]:
    """One driver per mode for the client built from `options` (they keep state between
    rounds, e.g. the CKKS epoch keys, so the client builds them once)."""
    return {mode: factory(options, ledger) for mode, factory in DRIVERS.items()}


__all__ = ["DRIVERS", "DriverFactory", "ModeDriver", "RoundCall", "drivers_for"]
