"""The real in-process rounds behind each protection, wired for attacks/ (which may not
import fedveil/): SecAgg+, CKKS, and SecAgg+ with client-level distributed DP."""

from __future__ import annotations

import functools

from fedveil.attacks.protections import Aggregators
from fedveil.runners.ckks_simulation import ckks_mean
from fedveil.runners.simulation import secure_dp_mean, secure_mean


def real_aggregators() -> Aggregators:
    return Aggregators(
        secagg=secure_mean,
        ckks=ckks_mean,
        client_dp=lambda dp: functools.partial(secure_dp_mean, dp=dp),
    )


__all__ = ["real_aggregators"]
