"""Uniform random words for privacy noise, from AES-256-CTR keyed by the OS.

Why not numpy's Generator: its bit generators (PCG64, Philox, MT19937) are fast but not
cryptographic; an observer who learns enough outputs, or the seed, can predict the
noise and subtract it, which voids the DP guarantee. Every random bit of a DP noise
sample here is AES-256-CTR keystream under a 256-bit key from `secrets.token_bytes`
(the OS CSPRNG), the same construction as the SecAgg mask PRG (secagg.crypto.prg), with
a counter that starts at zero and is never rewound, so no keystream block is used twice.

A seed may be passed for reproducible tests only; production code passes none.
"""

from __future__ import annotations

import secrets

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fedveil.errors import ConfigError
from fedveil.secagg.crypto.prg import SEED_BYTES

_ZERO_COUNTER = bytes(16)
_FLOAT53 = 1.0 / (1 << 53)


class CryptoRandom:
    """A stream of uniform random words; one instance per noise-drawing party.

    Not thread-safe (one keystream position). Each method consumes fresh keystream.
    """

    def __init__(self, seed: bytes | None = None) -> None:
        if seed is None:
            seed = secrets.token_bytes(SEED_BYTES)
        elif not isinstance(seed, bytes | bytearray) or len(seed) != SEED_BYTES:
            got = len(seed) if isinstance(seed, bytes | bytearray) else type(seed).__name__
            raise ConfigError(f"CryptoRandom seed must be {SEED_BYTES} bytes, got {got}")
        self._encryptor = Cipher(algorithms.AES(bytes(seed)), modes.CTR(_ZERO_COUNTER)).encryptor()

    def token(self, nbytes: int = SEED_BYTES) -> bytes:
        """`nbytes` keystream bytes (e.g. a seed for secagg.quantize's stochastic rounding)."""
        if nbytes < 0:
            raise ConfigError(f"nbytes must be >= 0, got {nbytes}")
        return self._encryptor.update(bytes(nbytes))

    def uint64(self, count: int) -> np.ndarray:
        """`count` independent uniform 64-bit words."""
        return np.frombuffer(self.token(8 * count), dtype=np.uint64).copy()

    def uniform53(self, count: int) -> np.ndarray:
        """`count` uniform integers in [0, 2^53) as uint64: the first 53 bits of U in [0,1).

        Kept as integers so a caller can compare U's known bits exactly (see
        `bernoulli_exp_neg`); `uniform` turns them into floats.
        """
        return self.uint64(count) >> np.uint64(11)

    def uniform(self, count: int) -> np.ndarray:
        """`count` float64 values uniform on the 2^53-point grid of [0, 1)."""
        return self.uniform53(count).astype(np.float64) * _FLOAT53

    def below(self, count: int, bound: int) -> np.ndarray:
        """`count` integers uniform on {0, ..., bound - 1}, exactly (rejection, no modulo bias).

        Each 64-bit word is cut to the bit length of bound - 1 and kept when below bound,
        so more than half of the draws are kept whatever the bound.
        """
        if not 1 <= bound <= (1 << 62):
            raise ConfigError(f"bound must be in [1, 2^62], got {bound}")
        out = np.empty(count, dtype=np.int64)
        if bound == 1:
            out.fill(0)
            return out
        shift = np.uint64(64 - (bound - 1).bit_length())
        filled = 0
        while filled < count:
            need = count - filled
            words = self.uint64(need + need // 2 + 8) >> shift
            kept = words[words < np.uint64(bound)][:need]
            out[filled : filled + kept.shape[0]] = kept.astype(np.int64)
            filled += kept.shape[0]
        return out

    def bits(self, count: int) -> np.ndarray:
        """`count` fair coin flips as a bool array."""
        raw = np.frombuffer(self.token((count + 7) // 8), dtype=np.uint8)
        return np.unpackbits(raw, count=count, bitorder="little").astype(bool)
