"""The modular ring Z_{2^m} in which masked uploads are added.

Why a ring and not floats: pairwise masks only cancel exactly under modular integer
addition, and a uniform mask over Z_{2^m} hides the masked value perfectly. Why 2^m:
numpy's unsigned arithmetic already wraps mod 2^32 or 2^64, and 2^m divides both, so
adding in the native width and masking the low m bits afterwards is exact and costs one
AND per element. m is capped at 62 so that a centred (signed) lift always fits in int64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedveil.errors import ConfigError

MIN_BITS = 8
"""Below 8 bits there is no room for both a useful scale and a cohort's headroom."""

MAX_BITS = 62
"""Above 62 bits the centred lift of a ring element no longer fits in int64."""


def dtype_for_bits(bits: int) -> np.dtype:
    """The narrowest native unsigned dtype that holds an m-bit value (uint32 or uint64).

    Why not uint8/uint16 for small m: every caller adds masks in this dtype, and one
    dtype per ring width range keeps the mask code to two kernels.
    """
    return np.dtype(np.uint32) if bits <= 32 else np.dtype(np.uint64)


@dataclass(frozen=True)
class Ring:
    """Z_{2^bits}: elements are stored reduced, in `dtype`, as unsigned integers."""

    bits: int

    def __post_init__(self) -> None:
        if (
            isinstance(self.bits, bool)
            or not isinstance(self.bits, int | np.integer)
            or not MIN_BITS <= self.bits <= MAX_BITS
        ):
            raise ConfigError(
                f"ring bits must be an integer in [{MIN_BITS}, {MAX_BITS}], got {self.bits!r}; "
                f"pick a width that fits the cohort's sum (e.g. 32) and at most {MAX_BITS} "
                f"so signed values fit in int64"
            )
        object.__setattr__(self, "bits", int(self.bits))

    @property
    def modulus(self) -> int:
        """2^bits, as an exact Python int."""
        return 1 << self.bits

    @property
    def mask(self) -> int:
        """2^bits - 1: AND with it reduces a native-width value into the ring."""
        return (1 << self.bits) - 1

    @property
    def dtype(self) -> np.dtype:
        """uint32 for bits <= 32, else uint64 (see `dtype_for_bits`)."""
        return dtype_for_bits(self.bits)

    def zeros(self, count: int) -> np.ndarray:
        """A zero vector of `count` ring elements (an accumulator for a ring sum)."""
        if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 0:
            raise ConfigError(f"ring vector length must be an integer >= 0, got {count!r}")
        return np.zeros(int(count), dtype=self.dtype)

    def reduce(self, values: np.ndarray) -> None:
        """values &= 2^bits - 1 in place: wrap a native-width sum back into the ring.

        In place because the accumulators are model-sized and a reduced copy would double
        the peak memory of a round.
        """
        if values.dtype != self.dtype:
            raise ConfigError(
                f"ring of {self.bits} bits reduces {self.dtype} arrays, got {values.dtype}; "
                f"allocate accumulators with Ring.zeros"
            )
        np.bitwise_and(values, self.dtype.type(self.mask), out=values)

    def to_signed(self, values: np.ndarray) -> np.ndarray:
        """Centred lift to int64: elements >= 2^(bits-1) map to element - 2^bits.

        This undoes `from_signed`, so a ring sum of two's-complement encodings decodes to
        the true signed sum as long as that sum lies in [-2^(bits-1), 2^(bits-1) - 1] (the
        quantisation config proves it does). Input bits above `bits` are ignored.
        """
        _check_integer_array(values, "to_signed")
        shift = np.int64(64 - self.bits)
        signed = values.astype(np.int64)  # wraps mod 2^64; only the low bits matter
        # Sign-extend bit (bits-1): shift it to the top, then shift back arithmetically.
        np.left_shift(signed, shift, out=signed)
        np.right_shift(signed, shift, out=signed)
        return signed

    def from_signed(self, values: np.ndarray) -> np.ndarray:
        """Two's-complement encoding mod 2^bits of signed integers, in the ring dtype."""
        _check_integer_array(values, "from_signed")
        lifted = values.astype(np.int64, copy=False) & np.int64(self.mask)
        return lifted.astype(self.dtype)


def _check_integer_array(values: np.ndarray, what: str) -> None:
    if not isinstance(values, np.ndarray) or values.dtype.kind not in "iu":
        kind = values.dtype if isinstance(values, np.ndarray) else type(values).__name__
        raise ConfigError(f"{what} takes an integer numpy array, got {kind}")
