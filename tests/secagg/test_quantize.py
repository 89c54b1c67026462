"""Ring arithmetic, fixed-point quantisation, stochastic rounding and the overflow bounds."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fedveil.errors import ConfigError, RingOverflowError
from fedveil.secagg.quantize import (
    QuantizationConfig,
    QuantizedUpdate,
    Ring,
    dequantize_sum,
    error_bound,
    pack,
    packed_size,
    quantize,
    unpack,
)
from fedveil.secagg.quantize.fixed_point import MAX_DERIVED_LEVELS


def _seed(*parts: object) -> bytes:
    return hashlib.sha256(repr(parts).encode()).digest()


# --- ring ----------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [7, 63, 0, -8, True, 16.0, "32"])
def test_ring_rejects_bad_width(bits: object) -> None:
    with pytest.raises(ConfigError, match=r"ring bits must be an integer in \[8, 62\]"):
        Ring(bits)  # type: ignore[arg-type]


@pytest.mark.parametrize(("bits", "dtype"), [(8, np.uint32), (32, np.uint32), (33, np.uint64)])
def test_ring_dtype_and_modulus(bits: int, dtype: type) -> None:
    ring = Ring(bits)
    assert ring.dtype == np.dtype(dtype)
    assert ring.modulus == 2**bits
    zeros = ring.zeros(5)
    assert zeros.dtype == np.dtype(dtype) and zeros.shape == (5,) and not zeros.any()


def test_ring_reduce_in_place() -> None:
    ring = Ring(20)
    acc = np.array([2**20, 2**20 + 7, 2**32 - 1], dtype=np.uint32)
    ring.reduce(acc)
    assert acc.tolist() == [0, 7, 2**20 - 1]
    with pytest.raises(ConfigError, match="uint32"):
        ring.reduce(acc.astype(np.uint64))


@settings(max_examples=200, deadline=None)
@given(data=st.data(), bits=st.integers(8, 62))
def test_signed_round_trip(data: st.DataObject, bits: int) -> None:
    half = 1 << (bits - 1)
    signed = data.draw(st.lists(st.integers(-half, half - 1), min_size=0, max_size=20))
    signed += [-half, half - 1, 0, -1]
    ring = Ring(bits)
    encoded = ring.from_signed(np.array(signed, dtype=np.int64))
    assert encoded.dtype == ring.dtype
    assert all(0 <= int(v) < ring.modulus for v in encoded)
    assert [int(v) for v in encoded] == [s % ring.modulus for s in signed]
    decoded = ring.to_signed(encoded)
    assert decoded.dtype == np.int64
    assert decoded.tolist() == signed


def test_signed_sum_wraps_and_decodes() -> None:
    ring = Ring(16)
    acc = ring.zeros(1)
    for v in [-30000, 20000, -15000, 30000]:  # partial sums leave [-2^15, 2^15)
        acc += ring.from_signed(np.array([v], dtype=np.int64))
        ring.reduce(acc)
    assert ring.to_signed(acc).tolist() == [5000]


# --- config and its bounds -----------------------------------------------------------


def test_derived_scale_is_the_largest_safe_one() -> None:
    config = QuantizationConfig(clip=0.5, bits=32, max_cohort=100, max_weight=64)
    limit = 2**31 - 1
    scale = config.effective_scale
    assert config.scale is None
    total = 100 * (Fraction(64) * Fraction(0.5) * Fraction(scale) + 1)
    assert total <= limit
    assert limit - total < Fraction(100 * 64 * 0.5 * scale) * Fraction(1, 10**9)
    assert config.ring == Ring(32)
    assert config.element_count(7) == 8


@settings(max_examples=200, deadline=None)
@given(
    bits=st.integers(8, 62),
    max_cohort=st.integers(1, 10_000),
    max_weight=st.integers(1, 10_000),
    clip=st.floats(1e-4, 1e4),
)
def test_derived_scale_always_satisfies_the_bounds(
    bits: int, max_cohort: int, max_weight: int, clip: float
) -> None:
    limit = 2 ** (bits - 1) - 1
    try:
        config = QuantizationConfig(clip, bits, max_cohort, max_weight)
    except RingOverflowError as err:
        assert max_cohort * max_weight > limit or max_cohort * 2 > limit, str(err)
        return
    levels = Fraction(max_weight) * Fraction(clip) * Fraction(config.effective_scale)
    assert max_cohort * max_weight <= limit
    assert max_cohort * (levels + 1) <= limit
    assert 1 <= levels <= MAX_DERIVED_LEVELS
    assert max_cohort * config.level_cap <= limit


def test_value_sum_bound_names_itself() -> None:
    with pytest.raises(RingOverflowError, match="value-sum bound") as info:
        QuantizationConfig(clip=1.0, bits=16, max_cohort=10, scale=1e6)
    message = str(info.value)
    assert "32767" in message and "raise bits" in message and "scale <=" in message
    # The largest safe scale quoted in the message is accepted.
    QuantizationConfig(clip=1.0, bits=16, max_cohort=10, scale=3275.0)


def test_weight_sum_bound_names_itself() -> None:
    with pytest.raises(RingOverflowError, match="weight-sum bound") as info:
        QuantizationConfig(clip=1.0, bits=16, max_cohort=1000, max_weight=1000)
    assert "1000000" in str(info.value) and "max_weight" in str(info.value)


@pytest.mark.parametrize("max_cohort", [100, 127])
def test_resolution_bound_when_bits_too_small(max_cohort: int) -> None:
    with pytest.raises(RingOverflowError, match="resolution bound") as info:
        QuantizationConfig(clip=1.0, bits=8, max_cohort=max_cohort)
    assert "raise bits or lower max_cohort" in str(info.value)


def test_overflow_errors_are_config_errors() -> None:
    assert issubclass(RingOverflowError, ConfigError)
    assert RingOverflowError.grpc_status == "INVALID_ARGUMENT"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"clip": 0.0}, "clip must be"),
        ({"clip": -1.0}, "clip must be"),
        ({"clip": math.nan}, "clip must be"),
        ({"clip": math.inf}, "clip must be"),
        ({"clip": True}, "clip must be"),
        ({"bits": 63}, "ring bits"),
        ({"max_cohort": 0}, "max_cohort must be"),
        ({"max_weight": 0}, "max_weight must be"),
        ({"max_weight": 2.0}, "max_weight must be"),
        ({"scale": 0.0}, "scale must be"),
        ({"scale": math.nan}, "scale must be"),
    ],
)
def test_config_validation_names_the_value(kwargs: dict[str, object], match: str) -> None:
    base: dict[str, object] = {"clip": 1.0, "bits": 32, "max_cohort": 10}
    with pytest.raises(ConfigError, match=match):
        QuantizationConfig(**{**base, **kwargs})  # type: ignore[arg-type]


def test_config_is_frozen_and_replace_revalidates() -> None:
    config = QuantizationConfig(clip=1.0, bits=32, max_cohort=10)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.bits = 16  # type: ignore[misc]
    wider = dataclasses.replace(config, bits=40)
    assert wider.effective_scale > config.effective_scale
    with pytest.raises(RingOverflowError):
        dataclasses.replace(config, bits=8, max_cohort=127)


# --- quantize ------------------------------------------------------------------------


def test_stochastic_rounding_is_unbiased() -> None:
    config = QuantizationConfig(clip=1.0, bits=16, max_cohort=1, scale=1.0)
    update = np.concatenate([np.full(2000, 0.3), np.full(2000, -0.3)])
    trials = 50
    total = np.zeros(2, dtype=np.int64)
    for i in range(trials):
        q = quantize(update, 1, config, rounding_seed=hashlib.sha256(str(i).encode()).digest())
        levels = config.ring.to_signed(q.values[:-1])
        assert set(levels[:2000].tolist()) <= {0, 1}
        assert set(levels[2000:].tolist()) <= {-1, 0}
        total += levels.reshape(2, 2000).sum(axis=1)
    n = trials * 2000
    means = total / n
    standard_error = math.sqrt(0.3 * 0.7 / n)
    assert abs(means[0] - 0.3) < 4 * standard_error
    assert abs(means[1] + 0.3) < 4 * standard_error


def test_rounding_is_reproducible_with_a_seed_and_fresh_without() -> None:
    config = QuantizationConfig(clip=1.0, bits=32, max_cohort=4, scale=10.0)
    update = np.linspace(-1, 1, 500)
    a = quantize(update, 1, config, rounding_seed=_seed("a"))
    b = quantize(update, 1, config, rounding_seed=_seed("a"))
    np.testing.assert_array_equal(a.values, b.values)
    c = quantize(update, 1, config)
    d = quantize(update, 1, config)
    assert not np.array_equal(c.values, d.values)


def test_layout_values_then_weight() -> None:
    config = QuantizationConfig(clip=2.0, bits=24, max_cohort=3, max_weight=10, scale=4.0)
    q = quantize(np.array([0.25, -0.5, 1.5], dtype=np.float32), 7, config)
    assert q.values.dtype == np.uint32 and q.values.shape == (4,)
    # 7 * 0.25 * 4 = 7, 7 * -0.5 * 4 = -14, 7 * 1.5 * 4 = 42: integers round exactly.
    assert config.ring.to_signed(q.values[:3]).tolist() == [7, -14, 42]
    assert int(q.values[3]) == 7
    assert q.clipped_count == 0


def test_clip_count_is_reported() -> None:
    config = QuantizationConfig(clip=1.0, bits=32, max_cohort=4)
    update = np.array([0.5, 2.0, -3.0, 1.0, -1.0, 1.0000001])
    q = quantize(update, 1, config, rounding_seed=_seed("clip"))
    assert q.clipped_count == 3
    levels = config.ring.to_signed(q.values[:-1])
    top = math.floor(config.effective_scale)
    assert abs(levels[1]) in (top, top + 1) and levels[2] < 0


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_input_refused_with_count(bad: float) -> None:
    config = QuantizationConfig(clip=1.0, bits=32, max_cohort=4)
    update = np.array([0.1, bad, 0.2, bad])
    with pytest.raises(ConfigError, match="2 non-finite values"):
        quantize(update, 1, config)


@pytest.mark.parametrize(
    "update",
    [np.zeros((2, 2)), np.arange(4), [0.1, 0.2]],
)
def test_bad_update_shape_or_dtype(update: object) -> None:
    config = QuantizationConfig(clip=1.0, bits=32, max_cohort=4)
    with pytest.raises(ConfigError, match="update must be"):
        quantize(update, 1, config)  # type: ignore[arg-type]


@pytest.mark.parametrize("weight", [-1, 6, True, 1.0])
def test_weight_out_of_range(weight: object) -> None:
    config = QuantizationConfig(clip=1.0, bits=32, max_cohort=4, max_weight=5)
    with pytest.raises(ConfigError, match=r"weight must be an integer in \[0, max_weight=5\]"):
        quantize(np.zeros(3), weight, config)  # type: ignore[arg-type]


def test_bad_rounding_seed() -> None:
    config = QuantizationConfig(clip=1.0, bits=32, max_cohort=4)
    with pytest.raises(ConfigError, match="32 bytes"):
        quantize(np.zeros(3), 1, config, rounding_seed=b"short")


def test_quantized_update_validates() -> None:
    with pytest.raises(ConfigError):
        QuantizedUpdate(values=np.zeros(3, dtype=np.int64), clipped_count=0)
    with pytest.raises(ConfigError):
        QuantizedUpdate(values=np.zeros(3, dtype=np.uint32), clipped_count=3)


def test_quantized_update_travels_as_m_bits() -> None:
    config = QuantizationConfig(clip=1.0, bits=20, max_cohort=8, max_weight=4)
    q = quantize(np.linspace(-2, 2, 1001), 3, config)
    payload = pack(q.values, config.bits)
    assert len(payload) == packed_size(config.element_count(1001), 20) == 2505
    np.testing.assert_array_equal(unpack(payload, 20, 1002), q.values)


# --- dequantize ----------------------------------------------------------------------


def _ring_sum(config: QuantizationConfig, uploads: list[np.ndarray], mask_seed: int) -> np.ndarray:
    """Sum uploads in the ring with pairwise-style masks that cancel, as SecAgg would."""
    ring = config.ring
    rng = np.random.default_rng(mask_seed)
    masks = [
        rng.integers(0, ring.modulus, size=uploads[0].shape, dtype=np.uint64).astype(ring.dtype)
        for _ in uploads
    ]
    acc = ring.zeros(uploads[0].shape[0])
    for upload, mask in zip(uploads, masks, strict=True):
        acc += upload
        acc += mask
        ring.reduce(acc)
    for mask in masks:
        acc -= mask
    ring.reduce(acc)
    return acc


@settings(max_examples=100, deadline=None)
@given(
    data=st.data(),
    cohort=st.integers(1, 40),
    bits=st.integers(16, 62),
    max_weight=st.integers(1, 500),
    clip=st.floats(0.01, 50.0),
    d=st.integers(1, 6),
    user_scale=st.booleans(),
)
def test_weighted_mean_within_error_bound(
    data: st.DataObject,
    cohort: int,
    bits: int,
    max_weight: int,
    clip: float,
    d: int,
    user_scale: bool,
) -> None:
    max_cohort = cohort + data.draw(st.integers(0, 20))
    try:
        config = QuantizationConfig(clip, bits, max_cohort, max_weight)
    except RingOverflowError:
        assume(False)
        return
    if user_scale:  # a coarse scale makes the rounding error visible
        scale = config.effective_scale * data.draw(st.floats(1e-6, 1.0))
        assume(max_weight * clip * scale > 0)
        config = dataclasses.replace(config, scale=scale)
    weights = data.draw(st.lists(st.integers(0, max_weight), min_size=cohort, max_size=cohort))
    assume(sum(weights) > 0)
    element = st.one_of(
        st.floats(-3 * clip, 3 * clip), st.sampled_from([clip, -clip, 0.0, 5 * clip])
    )
    inputs = [
        np.array(data.draw(st.lists(element, min_size=d, max_size=d)), dtype=np.float64)
        for _ in range(cohort)
    ]
    uploads = [
        quantize(x, w, config, rounding_seed=_seed("client", i)).values
        for i, (x, w) in enumerate(zip(inputs, weights, strict=True))
    ]
    ring_sum = _ring_sum(config, uploads, mask_seed=data.draw(st.integers(0, 2**32 - 1)))
    estimate = dequantize_sum(ring_sum, config, cohort)

    assert estimate.total_weight == sum(weights)
    assert estimate.error_bound == error_bound(config, cohort, sum(weights))
    bound = Fraction(estimate.error_bound)
    for j in range(d):
        exact_sum = sum(
            Fraction(w) * Fraction(float(np.clip(x[j], -clip, clip)))
            for x, w in zip(inputs, weights, strict=True)
        )
        exact_mean = exact_sum / sum(weights)
        assert abs(Fraction(float(estimate.weighted_mean[j])) - exact_mean) <= bound
        assert abs(Fraction(float(estimate.weighted_sum[j])) - exact_sum) <= bound * sum(weights)


def test_full_cohort_at_the_clip_does_not_wrap() -> None:
    config = QuantizationConfig(clip=1.0, bits=12, max_cohort=7, max_weight=3)
    for sign in (1.0, -1.0):
        uploads = [
            quantize(np.full(50, 5.0 * sign), 3, config, rounding_seed=_seed(sign, i)).values
            for i in range(7)
        ]
        estimate = dequantize_sum(_ring_sum(config, uploads, 1), config, 7)
        assert estimate.total_weight == 21
        assert np.all(np.abs(estimate.weighted_mean - sign) <= estimate.error_bound)


def test_error_bound_formula() -> None:
    config = QuantizationConfig(clip=1.0, bits=32, max_cohort=50, max_weight=10)
    bound = error_bound(config, 20, 100)
    assert bound == pytest.approx(20 / (config.effective_scale * 100), rel=1e-6)
    with pytest.raises(RingOverflowError, match="cohort bound"):
        error_bound(config, 51, 100)
    with pytest.raises(ConfigError, match="total_weight"):
        error_bound(config, 20, 0)


def test_dequantize_refuses_cohort_beyond_max() -> None:
    config = QuantizationConfig(clip=1.0, bits=32, max_cohort=5)
    with pytest.raises(RingOverflowError, match="cohort bound") as info:
        dequantize_sum(config.ring.zeros(4), config, 6)
    assert "max_cohort=5" in str(info.value)


def test_dequantize_zero_total_weight() -> None:
    config = QuantizationConfig(clip=1.0, bits=32, max_cohort=5, max_weight=3)
    q = quantize(np.array([0.5, 0.5]), 0, config)
    with pytest.raises(ConfigError, match="total weight is zero: no client contributed examples"):
        dequantize_sum(q.values, config, 1)


def test_dequantize_refuses_impossible_total_weight() -> None:
    config = QuantizationConfig(clip=1.0, bits=32, max_cohort=5, max_weight=3)
    ring_sum = config.ring.zeros(3)
    ring_sum[-1] = 7  # two clients can bring at most 6
    with pytest.raises(ConfigError, match="exceeds cohort_size"):
        dequantize_sum(ring_sum, config, 2)


def test_dequantize_rejects_bad_ring_sum() -> None:
    config = QuantizationConfig(clip=1.0, bits=32, max_cohort=5)
    for bad in (np.zeros(0, dtype=np.uint32), np.zeros(3), np.zeros((2, 2), dtype=np.uint32)):
        with pytest.raises(ConfigError, match="ring_sum"):
            dequantize_sum(bad, config, 1)
