"""Randomised Hadamard rotation: spreads an update's energy evenly over its coordinates.

Why: after L2 clipping to C, one coordinate may still hold all of C, so without a
rotation every coordinate must be allowed the full range [-C, C] and the ring's bits
are spent on a worst case that almost never happens. After y = H S x / sqrt(D) (S random
signs, H the Walsh-Hadamard matrix) each coordinate is sub-Gaussian with variance proxy
||x||^2 / D (Hoeffding over the signs), so a coordinate clip of C sqrt(2 ln(2D/beta)/D)
is exceeded with probability below beta, and the quantisation scale can be about
sqrt(D / log D) times larger for the same ring (Kairouz, Liu, Steinke 2021, sec. 4).
The rotation is orthogonal, so it leaves L2 norms (the DP sensitivity) unchanged, and the
server undoes it on the aggregate because it is linear.

The signs come from AES-CTR keystream of a 32-byte seed (secagg.crypto.prg); every
client of a round and the server must use the same seed (derive it from the session id
with HKDF), and it need not be secret: it is there for utility, not privacy.
"""

from __future__ import annotations

import math

import numpy as np

from fedveil.errors import ConfigError
from fedveil.secagg.crypto.prg import keystream


def padded_length(dim: int) -> int:
    """The smallest power of two >= dim (the transform's length)."""
    if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim < 1:
        raise ConfigError(f"update dimension must be an integer >= 1, got {dim!r}")
    return 1 << (int(dim) - 1).bit_length()


def fwht(values: np.ndarray) -> np.ndarray:
    """Unnormalised fast Walsh-Hadamard transform (Sylvester order), as a new array.

    H is symmetric with H @ H = D * I, so fwht(fwht(x)) == D * x; on int64 input every
    step is exact integer arithmetic. O(D log D) with one half-length temporary per pass.
    """
    if values.ndim != 1 or values.shape[0] & (values.shape[0] - 1) or values.shape[0] == 0:
        raise ConfigError(f"fwht needs a 1-D array of power-of-two length, got {values.shape}")
    out = values.copy()
    n = out.shape[0]
    h = 1
    while h < n:
        view = out.reshape(-1, 2, h)
        first = view[:, 0, :].copy()
        view[:, 0, :] += view[:, 1, :]
        np.subtract(first, view[:, 1, :], out=view[:, 1, :])
        h *= 2
    return out


class RandomizedHadamard:
    """x (length dim) -> H S [x, 0...] / sqrt(D) (length D, a power of two), and back."""

    def __init__(self, seed: bytes, dim: int) -> None:
        self.dim = int(dim)
        self.padded_dim = padded_length(dim)
        raw = np.frombuffer(keystream(seed, (self.padded_dim + 7) // 8), dtype=np.uint8)
        bits = np.unpackbits(raw, count=self.padded_dim, bitorder="little")
        self._signs = 1.0 - 2.0 * bits.astype(np.float64)  # bit 1 -> -1
        self._norm = 1.0 / math.sqrt(self.padded_dim)

    @property
    def signs(self) -> np.ndarray:
        """The diagonal of S (+1.0 / -1.0), read-only."""
        view = self._signs.view()
        view.flags.writeable = False
        return view

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Pad with zeros to D, flip signs, transform, normalise."""
        if x.ndim != 1 or x.shape[0] != self.dim:
            raise ConfigError(f"rotation expects a vector of length {self.dim}, got {x.shape}")
        padded = np.zeros(self.padded_dim)
        padded[: self.dim] = x
        padded *= self._signs
        out = fwht(padded)
        out *= self._norm
        return out

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """S H y / sqrt(D), truncated to dim: the exact inverse of `forward` (up to float
        rounding, relative 1e-15 per pass); linear, so it also unrotates a sum."""
        if y.ndim != 1 or y.shape[0] != self.padded_dim:
            raise ConfigError(
                f"unrotation expects a vector of length {self.padded_dim}, got {y.shape}"
            )
        out = fwht(y.astype(np.float64))
        out *= self._norm
        out *= self._signs
        return out[: self.dim]
