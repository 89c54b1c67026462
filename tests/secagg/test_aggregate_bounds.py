"""The aggregate sanity bound: a crafted aggregate no honest cohort could give is refused.

Attacker first: each crafted result below is what a malicious server could return; the
checks in secagg.protocol.aggregate_bounds must refuse it, and honest aggregates (computed
by the real quantiser and DP pipeline) must pass.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedveil.errors import ImplausibleAggregateError, MaliciousServerError
from fedveil.runners.simulation import Federation, make_config
from fedveil.secagg.dp.config import ClientDPConfig, Mechanism, NoisePlacement
from fedveil.secagg.dp.randomness import CryptoRandom
from fedveil.secagg.dp.stages import ClientDPPipeline
from fedveil.secagg.protocol.aggregate_bounds import (
    CohortLimits,
    ValueLimits,
    bounded_value_limits,
    check_cohort,
    check_values,
    dp_value_limits,
    secagg_value_limits,
)
from fedveil.secagg.quantize import QuantizationConfig
from fedveil.secagg.quantize.fixed_point import dequantize_sum, quantize

ROSTER = frozenset({"a", "b", "c", "d", "e"})
CLIP, MAX_WEIGHT, D = 1.0, 1000, 64


def cohort(**overrides: object) -> CohortLimits:
    fields: dict[str, object] = {
        "round_id": 3,
        "client_id": "a",
        "roster": ROSTER,
        "min_survivors": 3,
        "max_weight": MAX_WEIGHT,
        "own_weight": 40,
    }
    fields.update(overrides)
    return CohortLimits(**fields)  # type: ignore[arg-type]


def honest_secagg(n: int, seed: int) -> tuple[np.ndarray, int, QuantizationConfig]:
    """The real decode of n clipped, quantised uploads (inputs far beyond the clip)."""
    q = QuantizationConfig(clip=CLIP, bits=32, max_cohort=5, max_weight=MAX_WEIGHT)
    rng = np.random.default_rng(seed)
    total = np.zeros(D + 1, dtype=np.int64)
    for i in range(n):
        x = rng.normal(0, 5.0, D).astype(np.float32)
        x[0] = 100.0  # every client clipped at +clip on coordinate 0: the extreme case
        total += quantize(x, MAX_WEIGHT, q, rounding_seed=bytes([i]) * 32).values.astype(np.int64)
    estimate = dequantize_sum(total, q, n)
    return estimate.weighted_mean, estimate.total_weight, q


def test_errors_are_malicious_server_errors() -> None:
    assert issubclass(ImplausibleAggregateError, MaliciousServerError)
    assert ImplausibleAggregateError.grpc_status == "PERMISSION_DENIED"


def test_an_honest_secagg_aggregate_at_the_clip_passes() -> None:
    mean, total, q = honest_secagg(4, seed=1)
    assert mean[0] > CLIP - 1e-6  # honest aggregates do reach the bound
    check_cohort(cohort(own_weight=MAX_WEIGHT), ["a", "b", "c", "d"], total)
    check_values(3, mean, secagg_value_limits(q, D, 4, total))


def test_a_coordinate_beyond_clip_is_refused() -> None:
    mean, total, q = honest_secagg(4, seed=2)
    limits = secagg_value_limits(q, D, 4, total)
    crafted = mean.copy()
    crafted[7] = CLIP + 10 * (limits.coordinate - CLIP) + 1e-6  # just past clip + rounding
    with pytest.raises(ImplausibleAggregateError, match="coordinate 7"):
        check_values(3, crafted, limits)
    crafted[7] = -5.0
    with pytest.raises(ImplausibleAggregateError, match="no honest cohort"):
        check_values(3, crafted, limits)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_refused(bad: float) -> None:
    mean = np.zeros(D)
    mean[3] = bad
    with pytest.raises(ImplausibleAggregateError, match="NaN or infinity"):
        check_values(3, mean, bounded_value_limits(CLIP, D, 0.0))


def test_the_l2_bound_holds_on_its_own() -> None:
    tight = ValueLimits(coordinate=1.0, l2=2.0, reason="test")
    check_values(3, np.full(4, 0.99), tight)
    with pytest.raises(ImplausibleAggregateError, match="L2 norm"):
        check_values(3, np.full(5, 0.99), tight)


def test_a_total_weight_beyond_survivors_times_max_weight_is_refused() -> None:
    survivors = ["a", "b", "c"]
    check_cohort(cohort(), survivors, 3 * MAX_WEIGHT)
    with pytest.raises(ImplausibleAggregateError, match=r"outside \[40, 3000\]"):
        check_cohort(cohort(), survivors, 3 * MAX_WEIGHT + 1)
    with pytest.raises(ImplausibleAggregateError, match="own weight"):
        check_cohort(cohort(), survivors, 39)  # below this client's own contribution
    with pytest.raises(ImplausibleAggregateError, match="outside"):
        check_cohort(cohort(own_weight=0), survivors, 0)


@pytest.mark.parametrize(
    ("survivors", "message"),
    [
        (["a", "b", "mallory"], "not on the round's roster"),
        (["b", "c", "d"], "leave out this client"),
        (["a", "b"], "below the round's floor of 3"),
        (["a", "b", "b"], "twice"),
    ],
)
def test_survivor_sets_no_honest_round_has_are_refused(survivors: list[str], message: str) -> None:
    with pytest.raises(ImplausibleAggregateError, match=message):
        check_cohort(cohort(), survivors, 100)


def test_dp_rounds_count_every_survivor_exactly_once() -> None:
    dp = cohort(own_weight=None, weight_per_survivor=1)
    check_cohort(dp, ["a", "b", "c", "d"], 4)
    with pytest.raises(ImplausibleAggregateError, match="must be 4"):
        check_cohort(dp, ["a", "b", "c", "d"], 5)


@pytest.mark.parametrize(
    ("mechanism", "placement", "rotate"),
    [
        (Mechanism.DISCRETE_GAUSSIAN, NoisePlacement.CLIENTS, True),
        (Mechanism.SKELLAM, NoisePlacement.CLIENTS, False),
        (Mechanism.DISCRETE_GAUSSIAN, NoisePlacement.SERVER, True),
    ],
)
def test_honest_dp_aggregates_pass_and_a_crafted_one_does_not(
    mechanism: Mechanism, placement: NoisePlacement, rotate: bool
) -> None:
    n, d = 5, 200
    config = ClientDPConfig(
        clip_norm=1.0,
        noise_multiplier=1.0,
        min_clients=3,
        max_cohort=n,
        dim=d,
        bits=32,
        mechanism=mechanism,
        placement=placement,
        rotate=rotate,
    )
    limits = dp_value_limits(config, n)
    for trial in range(3):
        pipe = ClientDPPipeline(config, bytes([trial]) * 32 if rotate else None)
        rng = np.random.default_rng(trial)
        total = np.zeros(pipe.upload_length, dtype=np.int64)
        for i in range(n):
            x = rng.normal(0, 1.0, d)
            x *= 50 / np.linalg.norm(x)  # far beyond the clip norm
            encoded = pipe.client_encode(x, CryptoRandom(bytes([trial, i]) * 16))
            total += encoded.values.astype(np.int64)
        ring = config.quantization.ring
        total &= ring.mask
        server_rng = CryptoRandom(bytes([9, trial]) * 16)
        aggregate = pipe.server_decode(total, n, rng=server_rng)
        check_values(3, aggregate.mean, limits)
        # the allowance is generous, but not unbounded: a few times the noise breaks it
        assert limits.l2 < 3 * (1.0 + aggregate.noise_std * math.sqrt(d))
    crafted = np.zeros(d)
    crafted[0] = limits.coordinate * 1.01
    with pytest.raises(ImplausibleAggregateError, match="coordinate 0"):
        check_values(3, crafted, limits)
    with pytest.raises(ImplausibleAggregateError, match="L2 norm"):
        check_values(3, np.full(d, 0.99 * limits.coordinate), limits)


def test_secagg_limits_match_a_real_round_config() -> None:
    federation = Federation.enrol(4)
    config = make_config(federation, 32, clip=0.5, max_weight=10)
    limits = secagg_value_limits(config.quantization, 32, 4, 40)
    assert 0.5 < limits.coordinate < 0.5 + 1e-6
    assert limits.l2 == pytest.approx(limits.coordinate * math.sqrt(32))
