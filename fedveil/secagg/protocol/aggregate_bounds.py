"""A sanity bound on the aggregate: refuse what no honest cohort could have produced.

Why: a client applies the aggregate the server returns to its model. The masks and the
session id make sure the server cannot *read* an update, but not that the mean it hands
back is the one the cohort computed. These checks run on the client before the result
is accepted (and before the model chain advances, secagg.protocol.model_chain); any
failure raises ImplausibleAggregateError and the result is not applied.

What is checked (all from the round's own config, never from figures the server adds
to the result):
- the survivor set: a subset of the roster, at least the round's floor (its threshold,
  published minimum cohort and, in client-DP rounds, the clients whose noise was
  accounted), and it contains this client (it uploaded and signed);
- the total weight: at least 1 and this client's own weight, at most survivors x
  max_weight; in DP rounds exactly the number of survivors (each counts once);
- every value is finite, and within the reach of clipped inputs:
  * SecAgg without DP: each input coordinate is clipped to [-clip, clip], so each
    coordinate of the weighted mean is within clip + the round's proven rounding bound
    (secagg.quantize.error_bound, recomputed here), and the L2 norm within that times
    sqrt(d);
  * SecAgg with DP: each client's rounded contribution has L2 <= l2_sensitivity levels,
    so the noise-free mean has L2 (and every coordinate) <= l2_sensitivity / scale. The
    noise is allowed NOISE_SLACK x its tail at NOISE_FAILURE_PROB: per coordinate the
    mechanism's own tail bound (secagg.dp.config.noise_tail) with a union bound over
    the padded dimension, in L2 the Laurent-Massart chi-square tail. The noise variance
    is recomputed from the round's DP config and survivor count, not taken from the
    server's privacy report. An honest aggregate is refused with probability below
    about 1e-12 plus the round's published ring-overflow probability (a wrapped sum is
    garbage and rightly refused);
  * CKKS and the plaintext baseline: each value is clipped to the round's bound before
    it leaves the client, so each coordinate of the mean is within that bound plus the
    scheme's error.

What it does not stop: a server that returns a *consistent* crafted aggregate that stays
inside these bounds (say, a mean of plausible size pointing in a direction of its
choosing, or the result of an earlier round) is not detected here; the bounds only cap
how far one round can move the model. Returning different crafted aggregates to
different clients is caught at the next round by the model chain. Malicious clients
poisoning the sum within their clip are out of scope of both (use robust aggregation).

Pure: numpy only, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from fedveil.errors import ImplausibleAggregateError
from fedveil.secagg.dp.config import ClientDPConfig, NoisePlacement, noise_tail
from fedveil.secagg.quantize import QuantizationConfig
from fedveil.secagg.quantize.fixed_point import error_bound

NOISE_FAILURE_PROB = 1e-12
"""Per round, the chance the honest noise alone exceeds the allowance (before NOISE_SLACK)."""
NOISE_SLACK = 1.5
"""Multiple of the noise tail allowed: covers Skellam's heavier-than-Gaussian tails and
the discreteness of the noise; a crafted aggregate gains at most this factor."""
FLOAT_SLACK = 1e-9
"""Relative allowance for float64 rounding in decoding, rotation and division."""


@dataclass(frozen=True)
class CohortLimits:
    """Who may be in a round's result and what total weight they can sum to.

    own_weight: the weight this client sent (None where it is not counted, e.g. DP).
    weight_per_survivor: DP rounds: every survivor counts exactly this (1).
    """

    round_id: int
    client_id: str
    roster: frozenset[str]
    min_survivors: int
    max_weight: int
    own_weight: int | None = None
    weight_per_survivor: int | None = None


@dataclass(frozen=True)
class ValueLimits:
    """The largest |coordinate| and L2 norm of an honest mean, and why."""

    coordinate: float
    l2: float
    reason: str


def check_cohort(limits: CohortLimits, survivors: Iterable[str], total_weight: int) -> None:
    """Refuse a survivor set or total weight no honest run of the round could give."""
    r = limits.round_id
    ids = list(survivors)
    if len(set(ids)) != len(ids):
        raise ImplausibleAggregateError(f"round {r}: the result lists a survivor twice")
    strangers = sorted(set(ids) - limits.roster)
    if strangers:
        raise ImplausibleAggregateError(
            f"round {r}: the result names survivors {strangers[:5]} who are not on the "
            "round's roster"
        )
    if limits.client_id not in ids:
        raise ImplausibleAggregateError(
            f"round {r}: the result's survivors leave out this client ({limits.client_id!r}), "
            "which uploaded and signed: it is not the sum this client took part in"
        )
    n = len(ids)
    if n < limits.min_survivors:
        raise ImplausibleAggregateError(
            f"round {r}: the result sums {n} survivors, below the round's floor of "
            f"{limits.min_survivors}"
        )
    total = int(total_weight)
    if limits.weight_per_survivor is not None:
        expected = n * limits.weight_per_survivor
        if total != expected:
            raise ImplausibleAggregateError(
                f"round {r}: total weight {total} for {n} survivors; every survivor counts "
                f"{limits.weight_per_survivor} in this round, so it must be {expected}"
            )
        return
    least = max(1, limits.own_weight or 0)
    most = n * limits.max_weight
    if not least <= total <= most:
        raise ImplausibleAggregateError(
            f"round {r}: total weight {total} is outside [{least}, {most}] (at least 1 and "
            f"this client's own weight, at most {n} survivors x max_weight {limits.max_weight})"
        )


def check_values(round_id: int, mean: np.ndarray, limits: ValueLimits) -> None:
    """Refuse a mean with a non-finite value, a coordinate or an L2 norm out of reach.

    Why max and min: together they say whether every value is finite (NaN and infinity
    reach them) and how far the largest coordinate reaches, in two passes that allocate
    nothing; the offending index is looked up only for a refusal.
    """
    values = np.asarray(mean, dtype=np.float64)
    if values.ndim != 1:
        raise ImplausibleAggregateError(f"round {round_id}: the mean is not a flat vector")
    if values.size == 0:
        return
    high, low = float(values.max()), float(values.min())
    if not (math.isfinite(high) and math.isfinite(low)):
        raise ImplausibleAggregateError(f"round {round_id}: the mean holds NaN or infinity")
    if max(high, -low) > limits.coordinate:
        index = int(np.argmax(np.abs(values)))
        raise ImplausibleAggregateError(
            f"round {round_id}: coordinate {index} of the mean is {values[index]:.6g}, beyond "
            f"{limits.coordinate:.6g} ({limits.reason}); no honest cohort could produce it"
        )
    # Not np.linalg.norm: its BLAS dot shares two cores with scipy's BLAS threads (loaded
    # by the DP accountant) and measured far slower than this loop (benchmarks/README.md).
    norm = math.sqrt(float(np.einsum("i,i->", values, values)))
    if norm > limits.l2:
        raise ImplausibleAggregateError(
            f"round {round_id}: the mean's L2 norm is {norm:.6g}, beyond {limits.l2:.6g} "
            f"({limits.reason}); no honest cohort could produce it"
        )


def secagg_value_limits(
    quantization: QuantizationConfig, dimension: int, survivors: int, total_weight: int
) -> ValueLimits:
    """SecAgg without DP: clip + the proven rounding bound per coordinate.

    Call after check_cohort (it needs 1 <= total_weight and survivors <= max_cohort).
    """
    rounding = error_bound(quantization, survivors, total_weight)
    coordinate = (quantization.clip + rounding) * (1 + FLOAT_SLACK)
    return ValueLimits(
        coordinate=coordinate,
        l2=coordinate * math.sqrt(dimension),
        reason=f"clip {quantization.clip:g} + rounding bound {rounding:.3g}",
    )


def dp_noise_variance(config: ClientDPConfig, survivors: int) -> float:
    """Per-coordinate noise variance (levels^2) in the sum of `survivors` DP uploads."""
    if config.placement is NoisePlacement.SERVER:
        return config.server_noise_variance
    return survivors * config.client_noise_variance


def dp_value_limits(config: ClientDPConfig, survivors: int) -> ValueLimits:
    """SecAgg with DP: the clipped contributions' reach plus a generous noise allowance."""
    scale, n, dim = config.effective_scale, survivors, config.padded_dim
    signal = config.l2_sensitivity / scale
    variance = dp_noise_variance(config, n)
    per_coordinate = noise_tail(variance, config.mechanism, NOISE_FAILURE_PROB / dim)
    log_term = math.log(1 / NOISE_FAILURE_PROB)
    chi = math.sqrt(variance * (dim + 2 * math.sqrt(dim * log_term) + 2 * log_term))
    noise_coordinate = NOISE_SLACK * per_coordinate / scale / n
    noise_l2 = NOISE_SLACK * chi / scale / n
    sigma = math.sqrt(variance) / scale / n
    return ValueLimits(
        coordinate=(signal + noise_coordinate) * (1 + FLOAT_SLACK),
        l2=(signal + noise_l2) * (1 + FLOAT_SLACK),
        reason=(
            f"clipped contributions reach {signal:.4g}; DP noise std {sigma:.4g} allowed "
            f"{noise_coordinate:.4g} per coordinate, {noise_l2:.4g} in L2"
        ),
    )


def bounded_value_limits(bound: float, dimension: int, error: float) -> ValueLimits:
    """CKKS and plaintext rounds: values clipped to `bound` before they leave the client."""
    coordinate = (bound + error) * (1 + FLOAT_SLACK)
    return ValueLimits(
        coordinate=coordinate,
        l2=coordinate * math.sqrt(dimension),
        reason=f"value bound {bound:g} + error {error:.3g}",
    )
