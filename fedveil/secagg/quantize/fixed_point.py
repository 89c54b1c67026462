"""Clipping, fixed-point scaling and unbiased stochastic rounding into Z_{2^m}.

Why this shape: secure aggregation can only add integers mod 2^m, and the server must
learn the weighted mean sum_i w_i x_i / sum_i w_i without learning any single w_i. So a
client with weight w (its example count) uploads d+1 ring elements: the d values
round(w * clip(x) * scale) in two's complement, and w itself as element d. The masked
ring sum then reveals exactly the weighted sum and the total weight.

Why the bounds: a ring sum is only correct if the true integer sum never leaves
[-2^(m-1), 2^(m-1) - 1]. Clipping bounds every value, the config proves the cohort's sum
cannot wrap (or refuses to exist), and stochastic rounding keeps the decoded mean
unbiased with a deterministic worst-case error of less than one level per client.

Why the rounding noise comes from AES-CTR: everything random in secagg comes from the
one cryptographic PRG, so no numpy or Python generator state can leak or be predicted.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from fedveil.errors import ConfigError, RingOverflowError
from fedveil.secagg.crypto.prg import SEED_BYTES, UniformStream
from fedveil.secagg.quantize.ring import Ring

MAX_DERIVED_LEVELS = 2**40
"""Cap on max_weight * clip * scale for a derived scale. float64 carries 53 bits, so
levels beyond ~2^40 add no resolution, only float error (see `error_bound`)."""

_FLOAT_SLACK = 2.0**-49
"""Float64 error allowance per level of magnitude. Scaling (x * (w * scale)) and decoding
(int -> float, / scale, / total_weight) round 5 times at relative 2^-53 each, so the
decoded mean can drift by 5 * 2^-53 * (level_cap + 1) levels per client beyond the
rounding error; 16 * 2^-53 also covers rounding in computing the bound itself."""


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


@dataclass(frozen=True)
class QuantizationConfig:
    """How a round turns float updates into ring elements; shared by all its clients.

    clip: every input value is clipped to [-clip, clip].
    bits: ring width m (the upload is m bits per element).
    max_cohort: the most clients whose uploads are ever summed.
    max_weight: the largest per-client weight (example count) a client may claim.
    scale: levels per unit; None derives the largest scale the ring can hold.
    """

    clip: float
    bits: int
    max_cohort: int
    max_weight: int = 1
    scale: float | None = None
    _scale: float = field(default=0.0, init=False, repr=False, compare=False)
    _level_cap: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _is_real(self.clip) or not math.isfinite(self.clip) or self.clip <= 0:
            raise ConfigError(
                f"clip must be a finite number > 0, got {self.clip!r}; choose the largest "
                f"update magnitude you want to keep (e.g. a quantile of past update norms)"
            )
        object.__setattr__(self, "clip", float(self.clip))
        ring = Ring(self.bits)
        object.__setattr__(self, "bits", ring.bits)
        for name in ("max_cohort", "max_weight"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
            object.__setattr__(self, name, int(value))
        limit = (1 << (self.bits - 1)) - 1
        self._check_weight_bound(limit)
        if self.scale is None:
            scale = self._derive_scale(limit)
        else:
            if not _is_real(self.scale) or not math.isfinite(self.scale) or self.scale <= 0:
                raise ConfigError(
                    f"scale must be a finite number > 0 or None (derive it), got {self.scale!r}"
                )
            scale = float(self.scale)
            object.__setattr__(self, "scale", scale)
            self._check_value_bound(scale, limit)
        object.__setattr__(self, "_scale", scale)
        object.__setattr__(self, "_level_cap", math.floor(self._levels(scale)) + 1)

    # --- bounds ------------------------------------------------------------------------

    def _check_weight_bound(self, limit: int) -> None:
        total = self.max_cohort * self.max_weight
        if total > limit:
            raise RingOverflowError(
                f"weight-sum bound fails: max_cohort * max_weight = {self.max_cohort} * "
                f"{self.max_weight} = {total} > 2^(bits-1) - 1 = {limit} for bits={self.bits}; "
                f"raise bits, or lower max_cohort or max_weight (e.g. count weights in "
                f"batches instead of examples)"
            )

    def _levels(self, scale: float) -> Fraction:
        """max_weight * clip * scale, exactly: the largest magnitude before rounding."""
        return Fraction(self.max_weight) * Fraction(self.clip) * Fraction(scale)

    def _value_sum(self, scale: float) -> Fraction:
        """max_cohort * (max_weight * clip * scale + 1), exactly (no float rounding)."""
        return self.max_cohort * (self._levels(scale) + 1)

    def _check_value_bound(self, scale: float, limit: int) -> None:
        total = self._value_sum(scale)
        if total > limit:
            safe = self._headroom_scale(limit)
            fix = (
                f"use scale <= {safe:.6g} (or scale=None to derive it)"
                if safe > 0
                else "no positive scale fits this cohort"
            )
            raise RingOverflowError(
                f"value-sum bound fails: max_cohort * (max_weight * clip * scale + 1) = "
                f"{self.max_cohort} * ({self.max_weight} * {self.clip} * {scale} + 1) = "
                f"{float(total):.6g} > 2^(bits-1) - 1 = {limit} for bits={self.bits}, so a "
                f"cohort's sum could wrap around the ring; {fix}, or raise bits, or lower "
                f"max_cohort, clip or max_weight"
            )

    def _headroom_scale(self, limit: int) -> float:
        """The largest float scale passing the value-sum bound (may be <= 0)."""
        scale = (limit / self.max_cohort - 1.0) / (self.max_weight * self.clip)
        while scale > 0 and self._value_sum(scale) > limit:
            scale = float(np.nextafter(scale, 0.0))  # float rounding went a hair too far
        return scale

    def _derive_scale(self, limit: int) -> float:
        scale = self._headroom_scale(limit)
        levels = (limit / self.max_cohort - 1.0) if scale > 0 else 0.0
        if scale <= 0 or self._levels(scale) < 1:
            raise RingOverflowError(
                f"resolution bound fails: bits={self.bits} leaves each of max_cohort="
                f"{self.max_cohort} clients at most {max(levels, 0.0):.3g} quantisation "
                f"levels (need >= 1, i.e. max_weight * clip * scale >= 1 with "
                f"max_cohort * (max_weight * clip * scale + 1) <= 2^(bits-1) - 1 = {limit}); "
                f"the bits are too small for this cohort: raise bits or lower max_cohort"
            )
        if self._levels(scale) > MAX_DERIVED_LEVELS:
            scale = MAX_DERIVED_LEVELS / (self.max_weight * self.clip)
            while self._levels(scale) > MAX_DERIVED_LEVELS:
                scale = float(np.nextafter(scale, 0.0))
        return scale

    # --- derived values ----------------------------------------------------------------

    @property
    def ring(self) -> Ring:
        """The ring Z_{2^bits} the uploads live in."""
        return Ring(self.bits)

    @property
    def effective_scale(self) -> float:
        """The scale in use: the given one, or the derived largest safe one."""
        return self._scale

    @property
    def level_cap(self) -> int:
        """floor(max_weight * clip * scale) + 1: no rounded value's magnitude exceeds it."""
        return self._level_cap

    def element_count(self, d: int) -> int:
        """Ring elements per upload for a d-dimensional update: d values plus the weight."""
        if not _is_int(d) or d < 0:
            raise ConfigError(f"update dimension must be an integer >= 0, got {d!r}")
        return int(d) + 1


@dataclass(frozen=True, eq=False)
class QuantizedUpdate:
    """One client's ring vector (d values, then its weight) and how many inputs were clipped.

    clipped_count is reported because clipping biases the mean and, under DP, its rate
    is what one tunes `clip` against. `values` stays writable so the protocol can add
    masks into it in place instead of copying a model-sized vector.
    """

    values: np.ndarray
    clipped_count: int

    def __post_init__(self) -> None:
        v = self.values
        if (
            not isinstance(v, np.ndarray)
            or v.ndim != 1
            or v.dtype not in (np.dtype(np.uint32), np.dtype(np.uint64))
            or v.shape[0] < 1
        ):
            got = f"{v.dtype} of shape {v.shape}" if isinstance(v, np.ndarray) else type(v)
            raise ConfigError(
                f"QuantizedUpdate.values must be a non-empty 1-D uint32/uint64 ring vector, "
                f"got {got}"
            )
        if not _is_int(self.clipped_count) or not 0 <= self.clipped_count < v.shape[0]:
            raise ConfigError(
                f"clipped_count must be an integer in [0, {v.shape[0] - 1}], "
                f"got {self.clipped_count!r}"
            )


@dataclass(frozen=True, eq=False)
class AggregateEstimate:
    """What the server learns: the weighted sum and mean of the clipped inputs, the total
    weight, and a deterministic bound on |weighted_mean - exact weighted mean| per element.
    """

    weighted_sum: np.ndarray
    total_weight: int
    weighted_mean: np.ndarray
    error_bound: float


def _validated_update(update: np.ndarray) -> np.ndarray:
    if not isinstance(update, np.ndarray) or update.ndim != 1:
        got = f"shape {update.shape}" if isinstance(update, np.ndarray) else type(update).__name__
        raise ConfigError(f"update must be a 1-D numpy array (flatten it first), got {got}")
    if update.dtype.kind != "f":
        raise ConfigError(
            f"update must be a floating-point array, got {update.dtype}; cast it with "
            f".astype(np.float64)"
        )
    bad = update.shape[0] - int(np.count_nonzero(np.isfinite(update)))
    if bad:
        raise ConfigError(
            f"update has {bad} non-finite values (NaN or inf) out of {update.shape[0]}; "
            f"they cannot be clipped meaningfully: fix the training step (diverged loss?) "
            f"or drop this client's update"
        )
    return update.astype(np.float64)  # a copy: everything below works in place on it


QUANTIZE_BLOCK = 32 * 1024
"""Elements quantised at a time: a block's float64 values, uniforms and levels fit in L2."""


def quantize(
    update: np.ndarray,
    weight: int,
    config: QuantizationConfig,
    *,
    rounding_seed: bytes | None = None,
) -> QuantizedUpdate:
    """Clip, scale by weight * scale, round stochastically and encode into the ring.

    Rounding is floor(v) + [u < frac(v)] with u uniform on [0, 1), so E[result] = v
    exactly and |result - v| < 1. rounding_seed (32 bytes) makes it reproducible for
    tests; left None it is fresh from os.urandom, which is what production wants.
    """
    x = _validated_update(update)
    if not _is_int(weight) or not 0 <= weight <= config.max_weight:
        raise ConfigError(
            f"weight must be an integer in [0, max_weight={config.max_weight}], got "
            f"{weight!r}; raise max_weight in the round's QuantizationConfig if clients "
            f"legitimately hold more examples"
        )
    weight = int(weight)
    seed = os.urandom(SEED_BYTES) if rounding_seed is None else rounding_seed
    ring = config.ring
    d = x.shape[0]
    clip = config.clip
    factor = float(weight) * config.effective_scale
    cap = config.level_cap
    uniforms = UniformStream(seed, min(QUANTIZE_BLOCK, max(d, 1)))
    values = ring.zeros(d + 1)
    clipped = 0
    # Block by block so each block's values, uniforms and levels stay in cache; every
    # element goes through the same operations as a whole-vector pass would.
    for start in range(0, d, QUANTIZE_BLOCK):
        stop = min(start + QUANTIZE_BLOCK, d)
        block = x[start:stop]
        clipped += int(np.count_nonzero(block > clip)) + int(np.count_nonzero(block < -clip))
        np.clip(block, -clip, clip, out=block)
        np.multiply(block, factor, out=block)
        rounded = np.floor(block)
        np.subtract(block, rounded, out=block)  # block is now frac(v) in [0, 1)
        rounded += uniforms.next(stop - start) < block
        levels = rounded.astype(np.int64)
        # Float error can push |v| a hair past max_weight*clip*scale; keep the proven bound.
        np.clip(levels, -cap, cap, out=levels)
        values[start:stop] = ring.from_signed(levels)
    values[d] = weight
    return QuantizedUpdate(values=values, clipped_count=clipped)


def _check_cohort(config: QuantizationConfig, cohort_size: int) -> int:
    if not _is_int(cohort_size) or cohort_size < 1:
        raise ConfigError(f"cohort_size must be an integer >= 1, got {cohort_size!r}")
    if cohort_size > config.max_cohort:
        raise RingOverflowError(
            f"cohort bound fails: cohort_size={cohort_size} > max_cohort="
            f"{config.max_cohort}, so the ring sum may have wrapped; size the round's "
            f"QuantizationConfig for the whole roster (raise max_cohort, and bits if needed)"
        )
    return int(cohort_size)


def error_bound(config: QuantizationConfig, cohort_size: int, total_weight: int) -> float:
    """Worst-case |decoded weighted mean - exact weighted mean of clipped inputs|, per element.

    Each client's rounding moves each value by less than one level, so the weighted sum
    is off by less than cohort_size levels, i.e. cohort_size / scale, and the mean by that
    over total_weight. The factor (1 + 2^-49 * (level_cap + 1)) covers float64 rounding in
    scaling and decoding; it is below 1 + 2^-9 for any derived scale (levels <= 2^40).
    """
    cohort_size = _check_cohort(config, cohort_size)
    if not _is_int(total_weight) or total_weight < 1:
        raise ConfigError(f"total_weight must be an integer >= 1, got {total_weight!r}")
    slack = 1.0 + _FLOAT_SLACK * (config.level_cap + 1)
    return cohort_size * slack / (config.effective_scale * int(total_weight))


def dequantize_sum(
    ring_sum: np.ndarray, config: QuantizationConfig, cohort_size: int
) -> AggregateEstimate:
    """Decode the ring sum of cohort_size clients' QuantizedUpdate.values.

    ring_sum may be unreduced (bits above m are ignored). The total weight is checked
    against cohort_size * max_weight: a larger value proves the sum is not a sum of valid
    uploads (masks that did not cancel, or a client over max_weight), and decoding it
    would silently return garbage.
    """
    cohort_size = _check_cohort(config, cohort_size)
    if (
        not isinstance(ring_sum, np.ndarray)
        or ring_sum.ndim != 1
        or ring_sum.dtype.kind not in "iu"
        or ring_sum.shape[0] < 1
    ):
        got = (
            f"{ring_sum.dtype} of shape {ring_sum.shape}"
            if isinstance(ring_sum, np.ndarray)
            else type(ring_sum).__name__
        )
        raise ConfigError(f"ring_sum must be a non-empty 1-D integer array, got {got}")
    ring = config.ring
    d = ring_sum.shape[0] - 1
    total_weight = int(ring_sum[d]) & ring.mask
    if total_weight == 0:
        raise ConfigError("total weight is zero: no client contributed examples")
    most = cohort_size * config.max_weight
    if total_weight > most:
        raise ConfigError(
            f"total weight {total_weight} exceeds cohort_size * max_weight = {most}: the "
            f"ring sum is not the sum of {cohort_size} valid uploads (masks did not cancel "
            f"or a client exceeded max_weight); discard the round"
        )
    weighted_sum = ring.to_signed(ring_sum[:d]).astype(np.float64)
    weighted_sum /= config.effective_scale
    weighted_mean = weighted_sum / total_weight
    return AggregateEstimate(
        weighted_sum=weighted_sum,
        total_weight=total_weight,
        weighted_mean=weighted_mean,
        error_bound=error_bound(config, cohort_size, total_weight),
    )
