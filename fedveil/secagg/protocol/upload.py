"""Chunked accumulation of m-bit uploads into a running sum.

Why: an adapter update is many megabytes and arrives as a stream of chunks; adding each
chunk into the round's running sum as it arrives keeps the server at O(d) memory instead
of buffering every client's payload (O(n d)). Each chunk must arrive in order, cover whole
elements, and the stream ends with a SHA-256 of the whole payload, so truncation,
reordering and corruption are caught. A chunk is validated completely before it touches
the sum; an upload abandoned half-way is subtracted again from the chunks the caller
kept, so a failed upload never leaves a trace in the sum.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from fedveil.errors import ConfigError, InvalidMessageError, ProtocolError
from fedveil.secagg.quantize import packed_size, unpack

DEFAULT_CHUNK_BYTES = 1 << 20


def aligned_chunk_bytes(bits: int, target: int = DEFAULT_CHUNK_BYTES) -> int:
    """The largest chunk size <= target that holds a whole number of m-bit elements."""
    if target < bits:
        raise ConfigError(f"chunk of {target} bytes cannot hold 8 elements of {bits} bits")
    return target // bits * bits


@dataclass
class UploadProgress:
    """One client's upload in flight: where it is and the digest of what arrived."""

    next_index: int = 0
    received_bytes: int = 0
    hasher: hashlib._Hash = field(default_factory=hashlib.sha256)


class ChunkedUploads:
    """Per-client streamed uploads into one running sum: order, sizes, digest, rollback.

    Subclasses say how one validated chunk is added into (or taken out of) the sum; the
    rules every stream obeys live here once.
    """

    def __init__(self, total_bytes: int, chunk_bytes: int, what: str) -> None:
        self.total_bytes = total_bytes
        self.chunk_bytes = chunk_bytes
        self.chunk_count = max(1, -(-total_bytes // chunk_bytes))
        self._what = what
        self._open: dict[str, UploadProgress] = {}

    def progress(self, client_id: str) -> UploadProgress | None:
        return self._open.get(client_id)

    def begin(self, client_id: str, total_bytes: int) -> UploadProgress:
        """Open (or continue) an upload; the announced size must be the round's."""
        if total_bytes != self.total_bytes:
            raise InvalidMessageError(
                f"upload announces {total_bytes} bytes; this round expects exactly "
                f"{self.total_bytes} ({self._what})"
            )
        return self._open.setdefault(client_id, UploadProgress())

    def _apply(self, client_id: str, index: int, data: bytes, *, subtract: bool) -> None:
        raise NotImplementedError

    def add_chunk(self, client_id: str, index: int, data: bytes) -> None:
        """Validate one chunk fully, then add it into the sum at its offset."""
        state = self._open.get(client_id)
        if state is None:
            raise ProtocolError(f"no upload in progress for {client_id!r}; start with chunk 0")
        if index != state.next_index:
            raise InvalidMessageError(
                f"chunk {index} out of order: the server expects chunk {state.next_index} next"
            )
        if index >= self.chunk_count:
            raise InvalidMessageError(
                f"chunk {index} is past the end: the upload has {self.chunk_count} chunks"
            )
        last = index == self.chunk_count - 1
        expected = self.total_bytes - index * self.chunk_bytes if last else self.chunk_bytes
        if len(data) != expected:
            raise InvalidMessageError(
                f"chunk {index} has {len(data)} bytes; expected {expected} "
                f"(chunk size {self.chunk_bytes}, total {self.total_bytes})"
            )
        self._apply(client_id, index, data, subtract=False)
        state.hasher.update(data)
        state.received_bytes += len(data)
        state.next_index += 1

    def finish(self, client_id: str, digest: bytes) -> None:
        """Close an upload whose every chunk arrived and whose digest matches."""
        state = self._open.get(client_id)
        if state is None:
            raise ProtocolError(f"no upload in progress for {client_id!r}")
        if state.received_bytes != self.total_bytes:
            raise InvalidMessageError(
                f"upload ended after {state.received_bytes} of {self.total_bytes} bytes"
            )
        if digest != state.hasher.digest():
            raise InvalidMessageError(
                "upload digest mismatch: the SHA-256 sent does not match the bytes received; "
                "re-send the upload"
            )
        del self._open[client_id]

    def abort(self, client_id: str, chunks: Iterable[bytes]) -> None:
        """Take an unfinished upload's chunks (as kept by the caller) out of the sum."""
        state = self._open.pop(client_id, None)
        if state is None:
            return
        for index, data in enumerate(chunks):
            if index >= state.next_index:
                break
            self._apply(client_id, index, data, subtract=True)


class UploadAccumulator(ChunkedUploads):
    """Adds validated chunks of m-bit uploads into `target`, client by client."""

    def __init__(self, target: np.ndarray, bits: int, element_count: int, chunk_bytes: int) -> None:
        if chunk_bytes <= 0 or chunk_bytes % bits:
            raise ConfigError(
                f"chunk_bytes={chunk_bytes} must be a positive multiple of bits={bits} so "
                "every chunk holds whole elements"
            )
        total = packed_size(element_count, bits)
        super().__init__(total, chunk_bytes, f"{element_count} elements of {bits} bits")
        self._target = target
        self.bits = bits
        self.element_count = element_count
        self._elements_per_chunk = chunk_bytes * 8 // bits

    def _apply(self, client_id: str, index: int, data: bytes, *, subtract: bool) -> None:
        start = index * self._elements_per_chunk
        stop = min(self.element_count, start + self._elements_per_chunk)
        values = unpack(data, self.bits, stop - start)
        target = self._target[start:stop]
        (np.subtract if subtract else np.add)(target, values, out=target)
