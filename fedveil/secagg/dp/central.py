"""Central DP: the server adds the noise after unmasking. For comparison only.

THIS MODE TRUSTS THE SERVER. Secure aggregation hides each update, but here the server
sees the exact, un-noised sum of the cohort's clipped updates before it adds noise, and
nothing but its honesty makes it add the noise, keep the sum to itself, or draw fresh
randomness. Use it to measure what distributed DP costs in utility, never where the
server is not trusted with the sum.

The noise is the same integer noise as the distributed mode (discrete Gaussian or
Skellam of the full target variance), added to the int64 lift of the ring sum, so the
released value is an integer-lattice mechanism with no floating-point leakage and is
accounted with the same events (one noise source: num_clients = 1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fedveil.errors import ConfigError
from fedveil.secagg.dp.randomness import CryptoRandom
from fedveil.secagg.dp.sampling import sample_discrete_gaussian, sample_skellam

if TYPE_CHECKING:
    from fedveil.secagg.dp.config import ClientDPConfig


def add_central_noise(
    signed_sum: np.ndarray, config: ClientDPConfig, rng: CryptoRandom | None = None
) -> np.ndarray:
    """signed_sum + noise of variance config.server_noise_variance (levels), as new int64.

    TRUSTS THE SERVER (see module docstring): the caller holds the un-noised sum.
    signed_sum: the centred int64 lift of the unmasked ring sum (Ring.to_signed).
    """
    from fedveil.secagg.dp.config import Mechanism, NoisePlacement

    if config.placement is not NoisePlacement.SERVER:
        raise ConfigError(
            "add_central_noise is for placement=NoisePlacement.SERVER; with client placement "
            "the noise is already in the sum and adding more would be accounted nowhere"
        )
    if not isinstance(signed_sum, np.ndarray) or signed_sum.dtype != np.int64:
        got = signed_sum.dtype if isinstance(signed_sum, np.ndarray) else type(signed_sum)
        raise ConfigError(f"signed_sum must be an int64 array (Ring.to_signed), got {got}")
    rng = CryptoRandom() if rng is None else rng
    variance = config.server_noise_variance
    count = signed_sum.shape[0]
    if variance == 0:
        noise = np.zeros(count, dtype=np.int64)
    elif config.mechanism is Mechanism.DISCRETE_GAUSSIAN:
        noise = sample_discrete_gaussian(variance, count, rng)
    else:
        noise = sample_skellam(variance, count, rng)
    return signed_sum + noise
