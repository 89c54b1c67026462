"""m-bit packing of ring vectors for the wire.

Why pack: an upload of d elements in Z_{2^m} carries d*m bits of information, and
sending each in a 32- or 64-bit word would inflate the largest message of a round by up
to 64/m (a 24-bit ring in uint32 words wastes a quarter of the bandwidth). The layout is
one little-endian, LSB-first bit stream: value i occupies stream bits [i*m, (i+1)*m),
bit k of the stream is bit (k mod 8) of byte k // 8, and the final partial byte is padded
with zero bits. Both ends of the connection can compute the exact length from (count, m),
so a length or padding mismatch is proof of a malformed message.

Why this algorithm: per-value Python loops are far too slow for millions of values.
Instead values are handled in groups of P = 64 / gcd(m, 64) values, which fill exactly
W = m / gcd(m, 64) uint64 words, so each of the P positions of a group has a fixed word
index and shift. A Python loop over the P positions runs vectorised over all groups, and
rows are processed in blocks so the strided column accesses stay in cache.
Widths 8/16/32/64 are plain little-endian arrays and take a copy-free byte view.
"""

from __future__ import annotations

import math

import numpy as np

from fedveil.errors import ConfigError, InvalidMessageError
from fedveil.secagg.quantize.ring import dtype_for_bits

MAX_PACK_BITS = 64

_BLOCK_ROWS = 4096
"""Groups per block of the general path. Measured at 4e6 values: smaller blocks pay the
Python loop (P iterations per block) too often, larger ones fall out of cache."""

_NATIVE: dict[int, np.dtype] = {
    8: np.dtype("<u1"),
    16: np.dtype("<u2"),
    32: np.dtype("<u4"),
    64: np.dtype("<u8"),
}


def _check_bits(bits: int) -> int:
    if (
        isinstance(bits, bool)
        or not isinstance(bits, int | np.integer)
        or not 1 <= bits <= MAX_PACK_BITS
    ):
        raise ConfigError(f"packing width must be an integer in [1, {MAX_PACK_BITS}], got {bits!r}")
    return int(bits)


def _check_count(count: int) -> int:
    if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 0:
        raise ConfigError(f"element count must be an integer >= 0, got {count!r}")
    return int(count)


def packed_size(count: int, bits: int) -> int:
    """Bytes on the wire for `count` values of `bits` bits: ceil(count * bits / 8)."""
    return (_check_count(count) * _check_bits(bits) + 7) // 8


def _layout(bits: int) -> tuple[int, int]:
    """(values per group, uint64 words per group): the smallest whole-word period."""
    g = math.gcd(bits, 64)
    return 64 // g, bits // g


def _check_values(values: np.ndarray, bits: int) -> None:
    """Refuse values that do not fit: packing would silently drop their high bits."""
    if not isinstance(values, np.ndarray) or values.ndim != 1 or values.dtype.kind not in "iu":
        got = (
            f"{values.dtype} array of shape {values.shape}"
            if isinstance(values, np.ndarray)
            else type(values).__name__
        )
        raise ConfigError(f"pack takes a 1-D integer numpy array, got {got}")
    if values.size == 0:
        return
    if values.dtype.kind == "i" and int(values.min()) < 0:
        raise ConfigError(
            f"pack got a negative value {int(values.min())}; encode signed values into the "
            f"ring first (Ring.from_signed)"
        )
    if bits < values.dtype.itemsize * 8:
        top = int(values.max())
        if top >> bits:
            raise ConfigError(
                f"value {top} does not fit in {bits} bits; reduce it into the ring "
                f"(Ring.reduce) before packing"
            )


def pack(values: np.ndarray, bits: int) -> bytes:
    """Pack 1-D integers, each < 2^bits, into exactly `packed_size(len, bits)` bytes."""
    bits = _check_bits(bits)
    _check_values(values, bits)
    count = values.shape[0]
    native = _NATIVE.get(bits)
    if native is not None:
        return np.ascontiguousarray(values, dtype=native).tobytes()
    per_group, words = _layout(bits)
    groups = -(-count // per_group)
    out = np.zeros((groups, words), dtype=np.uint64)
    block_rows = min(_BLOCK_ROWS, max(groups, 1))
    block = np.empty((block_rows, per_group), dtype=np.uint64)
    tmp = np.empty(block_rows, dtype=np.uint64)
    spans = [_span(j, bits) for j in range(per_group)]
    for row0 in range(0, groups, block_rows):
        rows = min(block_rows, groups - row0)
        start = row0 * per_group
        stop = min(count, start + rows * per_group)
        vb = block[:rows]
        flat = vb.reshape(-1)
        flat[: stop - start] = values[start:stop]
        flat[stop - start :] = 0
        ob = out[row0 : row0 + rows]
        t = tmp[:rows]
        for j, (word, shift, spill) in enumerate(spans):
            col = vb[:, j]
            target = ob[:, word]
            if shift:
                np.left_shift(col, np.uint64(shift), out=t)
                np.bitwise_or(target, t, out=target)
            else:
                np.bitwise_or(target, col, out=target)
            if spill:
                high = ob[:, word + 1]
                np.right_shift(col, np.uint64(64 - shift), out=t)
                np.bitwise_or(high, t, out=high)
    stream = out.reshape(-1).astype("<u8", copy=False).view(np.uint8)
    return stream[: packed_size(count, bits)].tobytes()


def _span(position: int, bits: int) -> tuple[int, int, bool]:
    """(word, shift, spills into word+1) for the value at `position` within a group."""
    word, shift = divmod(position * bits, 64)
    return word, shift, shift + bits > 64


def unpack(payload: bytes | bytearray | memoryview, bits: int, count: int) -> np.ndarray:
    """The inverse of `pack`: `count` values of `bits` bits, in uint32 (bits <= 32) or uint64.

    Raises InvalidMessageError when the payload length is not packed_size(count, bits) or
    a padding bit is set: the payload comes from a peer, and accepting either would let
    two different byte strings decode to the same vector (or hide data in the padding).
    """
    bits = _check_bits(bits)
    count = _check_count(count)
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise InvalidMessageError(f"packed payload must be bytes, got {type(payload).__name__}")
    expected = packed_size(count, bits)
    got = len(payload) if not isinstance(payload, memoryview) else payload.nbytes
    if got != expected:
        raise InvalidMessageError(
            f"packed payload has {got} bytes, expected {expected} for {count} values of "
            f"{bits} bits; the sender must pack exactly the round's vector length and width"
        )
    result_dtype = dtype_for_bits(bits)
    raw = np.frombuffer(payload, dtype=np.uint8)
    used = (count * bits) % 8
    if used and int(raw[-1]) >> used:
        raise InvalidMessageError(
            f"packed payload has nonzero padding bits in its last byte "
            f"(0x{int(raw[-1]):02x}, only the low {used} bits carry data); the sender "
            f"must zero the padding"
        )
    native = _NATIVE.get(bits)
    if native is not None:
        return np.frombuffer(payload, dtype=native).astype(result_dtype)
    per_group, words = _layout(bits)
    groups = -(-count // per_group)
    stream = np.zeros(groups * words, dtype="<u8")
    stream.view(np.uint8)[:expected] = raw
    w2 = stream.astype(np.uint64, copy=False).reshape(groups, words)
    out = np.empty((groups, per_group), dtype=np.uint64)
    mask = np.uint64((1 << bits) - 1)
    block_rows = min(_BLOCK_ROWS, max(groups, 1))
    tmp = np.empty(block_rows, dtype=np.uint64)
    spans = [_span(j, bits) for j in range(per_group)]
    for row0 in range(0, groups, block_rows):
        rows = min(block_rows, groups - row0)
        wb = w2[row0 : row0 + rows]
        ob = out[row0 : row0 + rows]
        t = tmp[:rows]
        for j, (word, shift, spill) in enumerate(spans):
            col = ob[:, j]
            np.right_shift(wb[:, word], np.uint64(shift), out=col)
            if spill:
                np.left_shift(wb[:, word + 1], np.uint64(64 - shift), out=t)
                np.bitwise_or(col, t, out=col)
            if shift + bits != 64:
                np.bitwise_and(col, mask, out=col)
    return out.reshape(-1)[:count].astype(result_dtype)
