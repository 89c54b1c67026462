"""AES-256-CTR pseudorandom generator for masks over Z_{2^m}.

Why this shape: a SecAgg mask is as long as the model update (millions of elements) and
each client expands up to k+1 of them, the server up to n(k+1). Expanding a full-length
keystream and then adding it doubles memory traffic and the peak footprint, so the
keystream is produced in cache-sized chunks with `update_into` into one reused buffer and
added to (or subtracted from) the accumulator in place, chunk by chunk.

The keystream is AES-256-CTR under the 256-bit seed with an all-zero initial counter
block: each seed is derived by HKDF for one purpose and one session, so a (key, counter)
pair is never reused across masks. The accumulator's native unsigned width w (16, 32 or
64 bits) is used for the arithmetic; reducing mod 2^m (m <= w) afterwards is exact
because 2^m divides 2^w, and the reduced keystream stays uniform over Z_{2^m}.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from fedveil.errors import ConfigError

SEED_BYTES = 32
"""Length of every mask seed: the full AES-256 key, never a truncated integer seed."""

CHUNK_BYTES = 128 * 1024
"""Keystream chunk: small enough to stay in L2 while it is added into the accumulator."""

_ZERO_COUNTER = bytes(16)
_MASK_DTYPES = (np.dtype(np.uint16), np.dtype(np.uint32), np.dtype(np.uint64))


def _check_seed(seed: bytes) -> None:
    if not isinstance(seed, bytes | bytearray) or len(seed) != SEED_BYTES:
        got = len(seed) if isinstance(seed, bytes | bytearray) else type(seed).__name__
        raise ConfigError(f"mask seed must be {SEED_BYTES} bytes, got {got}")


def _encryptor(seed: bytes) -> CipherContext:
    return Cipher(algorithms.AES(bytes(seed)), modes.CTR(_ZERO_COUNTER)).encryptor()


class MaskExpander:
    """Adds AES-CTR masks into accumulators, reusing one chunk buffer across calls.

    One expander per thread; it owns the zero input and the keystream output buffers so a
    round of k+1 masks allocates nothing proportional to the vector length.
    """

    def __init__(self, chunk_bytes: int = CHUNK_BYTES) -> None:
        if chunk_bytes <= 0 or chunk_bytes % 16:
            raise ConfigError(f"chunk_bytes must be a positive multiple of 16, got {chunk_bytes}")
        self._chunk_bytes = chunk_bytes
        self._zeros = bytes(chunk_bytes)
        # update_into needs room for one extra block beyond the input length.
        self._out = bytearray(chunk_bytes + 16)

    def apply(self, acc: np.ndarray, seed: bytes, *, subtract: bool = False) -> None:
        """acc += PRG(seed) (or -=) elementwise, mod 2^w for acc's unsigned width w."""
        _check_seed(seed)
        if acc.dtype not in _MASK_DTYPES or acc.ndim != 1 or not acc.flags.c_contiguous:
            raise ConfigError(
                f"mask accumulator must be a contiguous 1-D uint16/uint32/uint64 array, "
                f"got {acc.dtype} with shape {acc.shape}"
            )
        if not acc.flags.writeable:
            raise ConfigError("mask accumulator is read-only; pass a writeable copy")
        op = np.subtract if subtract else np.add
        itemsize = acc.dtype.itemsize
        per_chunk = self._chunk_bytes // itemsize
        enc = _encryptor(seed)
        out_words = np.frombuffer(self._out, dtype=acc.dtype, count=per_chunk)
        zeros = memoryview(self._zeros)
        total = acc.shape[0]
        for start in range(0, total, per_chunk):
            count = min(per_chunk, total - start)
            nbytes = count * itemsize
            enc.update_into(zeros[:nbytes], self._out)
            target = acc[start : start + count]
            op(target, out_words[:count], out=target)


def add_mask(acc: np.ndarray, seed: bytes, *, subtract: bool = False) -> None:
    """Convenience wrapper: one-off `MaskExpander().apply`."""
    MaskExpander().apply(acc, seed, subtract=subtract)


def keystream(seed: bytes, nbytes: int) -> bytes:
    """The raw keystream (for known-answer tests and small derived values only)."""
    _check_seed(seed)
    if nbytes < 0:
        raise ConfigError(f"nbytes must be >= 0, got {nbytes}")
    return _encryptor(seed).update(bytes(nbytes))


class UniformStream:
    """Successive blocks of the `uniform_unit_interval(seed, ...)` sequence.

    Why: stochastic rounding of a long vector wants its uniforms a cache-sized block at a
    time, next to the values they round, not one full-length float64 array; the blocks
    concatenated are exactly `uniform_unit_interval(seed, total)` (one AES-CTR stream).
    """

    def __init__(self, seed: bytes, block: int) -> None:
        _check_seed(seed)
        if block <= 0:
            raise ConfigError(f"block must be positive, got {block}")
        self._enc = _encryptor(seed)
        self._zeros = bytes(8 * block)
        self._raw = bytearray(8 * block + 16)  # update_into needs one spare block
        self._words = np.frombuffer(self._raw, dtype=np.uint64, count=block)
        self._out = np.empty(block, dtype=np.float64)
        self._block = block

    def next(self, count: int) -> np.ndarray:
        """The next `count` (<= block) uniforms; the array is reused by the next call."""
        if not 0 <= count <= self._block:
            raise ConfigError(f"count must be in [0, {self._block}], got {count}")
        self._enc.update_into(memoryview(self._zeros)[: 8 * count], self._raw)
        words = self._words[:count]
        out = self._out[:count]
        np.right_shift(words, np.uint64(11), out=words)
        np.multiply(words, 1.0 / (1 << 53), out=out)
        return out


def uniform_unit_interval(seed: bytes, count: int) -> np.ndarray:
    """`count` float64 values uniform on [0, 1) with 53 random bits each, from AES-CTR.

    Used for unbiased stochastic rounding, so even rounding noise comes from a
    cryptographic generator rather than numpy's.
    """
    words = np.frombuffer(keystream(seed, 8 * count), dtype=np.uint64)
    return (words >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
