"""Chunked accumulation of m-bit uploads into a running sum.

Why: an adapter update is many megabytes and arrives as a stream of chunks; adding each
chunk into the round's running sum as it arrives keeps the server at O(d) memory instead
of buffering every client's payload (O(n d)). Each chunk must arrive in order, cover whole
elements, and the stream ends with a checksum of the whole payload (the masked input's
Poly1305 of secagg.protocol.upload_checksum; the plaintext and CKKS uploads' SHA-256), so
truncation, reordering and an upload resumed from a different encoding are caught. A
chunk is validated completely before it touches the sum; an upload abandoned half-way is
subtracted again from the chunks the caller kept, so a failed upload never leaves a trace
in the sum.

Why the byte-aligned widths (m = 8, 16, 32) take their own path: their wire layout is a
plain little-endian array, so a chunk is added into the sum straight from the received
bytes (a numpy view, no unpacked copy), and every byte string is a valid chunk (no padding
bits), so nothing needs checking before the add. The add reads each block of the chunk
into cache and the checksum then reads it from there, so the upload is streamed from
memory once; the sum wraps mod 2^32 and is reduced into the ring when the round closes.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from fedveil.errors import ConfigError, InvalidMessageError, ProtocolError
from fedveil.secagg.protocol.upload_checksum import StreamDigest, UploadChecksum
from fedveil.secagg.quantize import packed_size, unpack

DEFAULT_CHUNK_BYTES = 1 << 20

FUSED_BLOCK_BYTES = 1 << 18
"""Bytes added and then checksummed together on the byte-aligned path: small enough that
the block the add just read is still in the core's cache when the checksum reads it, large enough
that the per-block Python overhead stays negligible (benchmarks/README.md)."""

NATIVE_WIRE_DTYPES: dict[int, np.dtype] = {
    8: np.dtype("<u1"),
    16: np.dtype("<u2"),
    32: np.dtype("<u4"),
}
"""Ring widths whose packed layout (secagg.quantize.packing) is a plain little-endian
array of this dtype, i.e. that need no unpacking. 64 is one too, but is not a ring width."""

Chunk = bytes | memoryview
"""A chunk as the accumulator takes it: the wire bytes, or a copy-free view of a slice of
a whole payload (the in-process path, which delivers every chunk of a payload at once)."""


def aligned_chunk_bytes(bits: int, target: int = DEFAULT_CHUNK_BYTES) -> int:
    """The largest chunk size <= target that holds a whole number of m-bit elements."""
    if target < bits:
        raise ConfigError(f"chunk of {target} bytes cannot hold 8 elements of {bits} bits")
    return target // bits * bits


def payload_chunks(payload: bytes, chunk_bytes: int) -> list[memoryview]:
    """A whole payload cut into chunks of `chunk_bytes` as copy-free views (at least one,
    so an empty payload still reaches the size check)."""
    view = memoryview(payload)
    return [view[i : i + chunk_bytes] for i in range(0, max(len(payload), 1), chunk_bytes)]


@dataclass
class UploadProgress:
    """One client's upload in flight: where it is and the checksum of what arrived."""

    next_index: int = 0
    received_bytes: int = 0
    hasher: StreamDigest = field(default_factory=hashlib.sha256)


class ChunkedUploads:
    """Per-client streamed uploads into one running sum: order, sizes, checksum, rollback.

    Subclasses say how one validated chunk is added into (or taken out of) the sum, and
    may say which checksum an upload closes with (SHA-256 unless they do); the rules every
    stream obeys live here once.
    """

    checksum_name = "SHA-256"

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
        state = self._open.get(client_id)
        if state is None:
            state = self._open[client_id] = UploadProgress(hasher=self._new_checksum(client_id))
        return state

    def _new_checksum(self, client_id: str) -> StreamDigest:
        """The running checksum `client_id`'s upload is checked against."""
        del client_id  # SHA-256 is the same for every client
        return hashlib.sha256()

    def _apply(self, client_id: str, index: int, data: bytes, *, subtract: bool) -> None:
        raise NotImplementedError

    def _expect_chunk(self, client_id: str, index: int, size: int) -> UploadProgress:
        """The upload `index` may join, once its position and size are checked."""
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
        if size != expected:
            raise InvalidMessageError(
                f"chunk {index} has {size} bytes; expected {expected} "
                f"(chunk size {self.chunk_bytes}, total {self.total_bytes})"
            )
        return state

    def add_chunk(self, client_id: str, index: int, data: bytes) -> None:
        """Validate one chunk fully, then add it into the sum at its offset."""
        state = self._expect_chunk(client_id, index, len(data))
        self._apply(client_id, index, data, subtract=False)
        state.hasher.update(data)
        state.received_bytes += len(data)
        state.next_index += 1

    def running_digest(self, client_id: str) -> bytes:
        """The checksum of the bytes that arrived in `client_id`'s open upload.

        For a caller that holds the whole payload and delivers it chunk by chunk itself
        (the in-process path), once every chunk is in: the checksum its sender would have
        sent, without a second pass over the bytes.
        """
        state = self._open.get(client_id)
        if state is None:
            raise ProtocolError(f"no upload in progress for {client_id!r}")
        return state.hasher.digest()

    def finish(self, client_id: str, digest: bytes) -> None:
        """Close an upload whose every chunk arrived and whose checksum matches."""
        state = self._open.get(client_id)
        if state is None:
            raise ProtocolError(f"no upload in progress for {client_id!r}")
        if state.received_bytes != self.total_bytes:
            raise InvalidMessageError(
                f"upload ended after {state.received_bytes} of {self.total_bytes} bytes"
            )
        if not hmac.compare_digest(digest, state.hasher.digest()):
            raise InvalidMessageError(
                f"upload digest mismatch: the {self.checksum_name} sent does not match the "
                "bytes received; re-send the upload"
            )
        del self._open[client_id]

    def _added_chunks(self, client_id: str) -> int:
        """Close `client_id`'s unfinished upload: how many of its chunks are in the sum."""
        state = self._open.pop(client_id, None)
        return 0 if state is None else state.next_index

    def abort(self, client_id: str, chunks: Iterable[bytes]) -> None:
        """Take an unfinished upload's chunks (as kept by the caller) out of the sum."""
        added = self._added_chunks(client_id)
        for index, data in zip(range(added), chunks, strict=False):
            self._apply(client_id, index, data, subtract=True)


class UploadAccumulator(ChunkedUploads):
    """Adds validated chunks of m-bit uploads into `target`, client by client; each upload
    closes with the Poly1305 checksum keyed by `session_id` and its client's id."""

    checksum_name = "Poly1305 checksum"

    def __init__(
        self,
        target: np.ndarray,
        bits: int,
        element_count: int,
        chunk_bytes: int,
        *,
        session_id: bytes,
    ) -> None:
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
        self._wire = NATIVE_WIRE_DTYPES.get(bits)
        self._session_id = session_id

    def _new_checksum(self, client_id: str) -> StreamDigest:
        return UploadChecksum.for_upload(self._session_id, client_id)

    def add_chunk(self, client_id: str, index: int, data: Chunk) -> None:
        """Validate one chunk fully, then add it into the sum at its offset.

        Byte-aligned widths add and checksum block by block (module docstring); the others
        unpack the whole chunk first, since its padding bits must be checked before the add.
        """
        state = self._expect_chunk(client_id, index, len(data))
        if self._wire is None:
            self._apply(client_id, index, data, subtract=False)
            state.hasher.update(data)
        else:
            self._add_and_checksum(index, data, state)
        state.received_bytes += len(data)
        state.next_index += 1

    def abort(self, client_id: str, chunks: Iterable[Chunk]) -> None:
        """Take an unfinished upload's chunks (as kept by the caller) out of the sum."""
        added = self._added_chunks(client_id)
        for index, data in zip(range(added), chunks, strict=False):
            self._apply(client_id, index, data, subtract=True)

    def _span(self, index: int) -> slice:
        start = index * self._elements_per_chunk
        return slice(start, min(self.element_count, start + self._elements_per_chunk))

    def _add_and_checksum(self, index: int, data: Chunk, state: UploadProgress) -> None:
        assert self._wire is not None
        values = np.frombuffer(data, dtype=self._wire)
        target = self._target[self._span(index)]
        step = FUSED_BLOCK_BYTES // self._wire.itemsize
        raw = memoryview(data).cast("B")
        width = self._wire.itemsize
        for lo in range(0, values.shape[0], step):
            part = target[lo : lo + step]
            np.add(part, values[lo : lo + step], out=part)
            state.hasher.update(raw[lo * width : (lo + step) * width])

    def _apply(self, client_id: str, index: int, data: Chunk, *, subtract: bool) -> None:
        span = self._span(index)
        if self._wire is not None:
            values = np.frombuffer(data, dtype=self._wire)
        else:
            values = unpack(data, self.bits, span.stop - span.start)
        target = self._target[span]
        (np.subtract if subtract else np.add)(target, values, out=target)
