"""Unambiguous byte encoding of tuples of fields for hashing, signing and AEAD data.

Why: concatenating variable-length fields lets ("ab", "c") and ("a", "bc") collide, which
would let a signature or associated data over one tuple be replayed as another. Every
field is therefore prefixed with its 4-byte big-endian length.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

Field = bytes | str | int


def _as_bytes(field: Field) -> bytes:
    if isinstance(field, bool):
        raise TypeError("booleans are not encoded implicitly; use an int 0/1")
    if isinstance(field, bytes | bytearray | memoryview):
        return bytes(field)
    if isinstance(field, str):
        return field.encode("utf-8")
    if isinstance(field, int):
        if not 0 <= field < 1 << 64:
            raise ValueError(f"integers are encoded as unsigned 64-bit values, got {field}")
        return field.to_bytes(8, "big")
    raise TypeError(f"cannot encode {type(field).__name__}")


def encode_fields(*fields: Field) -> bytes:
    """Length-prefixed concatenation: injective over tuples of fields."""
    parts = []
    for field in fields:
        raw = _as_bytes(field)
        parts.append(struct.pack(">I", len(raw)))
        parts.append(raw)
    return b"".join(parts)


def encode_id_set(ids: Iterable[str]) -> bytes:
    """A set of client ids, sorted, so every party encodes the same set identically."""
    return encode_fields(*sorted(ids))


def decode_fields(data: bytes, count: int) -> list[bytes]:
    """Inverse of `encode_fields` for exactly `count` fields; malformed input raises."""
    from fedveil.errors import InvalidMessageError

    fields: list[bytes] = []
    offset = 0
    for _ in range(count):
        if offset + 4 > len(data):
            raise InvalidMessageError("encoded fields are truncated (missing length prefix)")
        (length,) = struct.unpack_from(">I", data, offset)
        offset += 4
        if offset + length > len(data):
            raise InvalidMessageError(
                "encoded fields are truncated (field shorter than its length)"
            )
        fields.append(bytes(data[offset : offset + length]))
        offset += length
    if offset != len(data):
        raise InvalidMessageError(
            f"{len(data) - offset} unexpected trailing bytes after {count} fields"
        )
    return fields
