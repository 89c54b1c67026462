"""Pure helpers behind the client transport: upload chunking, result assembly, flattening.

Why apart from transport.py: these carry the wire contract (chunk sizes, which chunk
carries the checksum, where a resumed upload starts, how the result is checked) and are
tested without a server or an event loop. Nothing here does I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from fedveil.clients.errors import StreamIntegrityError, TransportError
from fedveil.errors import ConfigError
from fedveil.proto import aggregation_pb2 as pb
from fedveil.secagg.protocol.upload_checksum import upload_checksum

RESULT_DTYPE = np.dtype("<f8")


# --- upload ------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ChunkedPayload:
    """One upload cut into VectorChunks of exactly `chunk_bytes` (the last shorter).

    The checksum covers the whole payload, so a resumed stream carries the same checksum
    as the first attempt and the server checks the bytes it assembled across attempts. A
    masked input names its round's `session_id`: its checksum is the Poly1305 of
    secagg.protocol.upload_checksum, keyed by that session and this client; a plaintext
    upload names none and carries the SHA-256 of its float32 bytes.
    """

    round_id: int
    client_id: str
    payload: bytes = field(repr=False)
    chunk_bytes: int
    session_id: bytes | None = field(default=None, repr=False)
    checksum: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.chunk_bytes <= 0:
            raise ConfigError(f"chunk_bytes must be positive, got {self.chunk_bytes}")
        if self.session_id is None:
            checksum = hashlib.sha256(self.payload).digest()
        else:
            checksum = upload_checksum(self.session_id, self.client_id, self.payload)
        object.__setattr__(self, "checksum", checksum)

    @property
    def total_bytes(self) -> int:
        return len(self.payload)

    @property
    def chunk_count(self) -> int:
        """Chunks in a full upload; an empty payload still travels as one (empty) chunk."""
        return max(1, -(-self.total_bytes // self.chunk_bytes))

    def chunks(self, start_index: int = 0) -> Iterator[pb.VectorChunk]:
        """The chunks from `start_index` on; `chunk_count` means "already complete".

        Checked eagerly, so a bad resume index from the server fails before a stream opens.
        """
        if not 0 <= start_index <= self.chunk_count:
            raise TransportError(
                "OUT_OF_RANGE",
                f"the server asks to resume the upload at chunk {start_index}, but it has "
                f"only {self.chunk_count} chunks (0..{self.chunk_count - 1})",
                rpc="GetUploadStatus",
            )
        if start_index == self.chunk_count:
            return iter([self._chunk(start_index, b"", last=True)])
        return self._iter(start_index)

    def _iter(self, start_index: int) -> Iterator[pb.VectorChunk]:
        last = self.chunk_count - 1
        view = memoryview(self.payload)
        for index in range(start_index, self.chunk_count):
            start = index * self.chunk_bytes
            data = bytes(view[start : start + self.chunk_bytes])
            yield self._chunk(index, data, last=index == last)

    def _chunk(self, index: int, data: bytes, *, last: bool) -> pb.VectorChunk:
        return pb.VectorChunk(
            round_id=self.round_id,
            client_id=self.client_id,
            index=index,
            data=data,
            total_bytes=self.total_bytes,
            checksum=self.checksum if last else b"",
        )


# --- result ------------------------------------------------------------------------------


class DownloadedMean(NamedTuple):
    """A checked result download: the header, the float64 mean, and the SHA-256 of the
    wire bytes the mean was read from (what the model chain digests, computed once)."""

    header: pb.ResultHeader
    mean: np.ndarray
    payload_sha256: bytes


class ResultAssembler:
    """Checks and joins a streamed ResultChunk sequence into the float64 weighted mean.

    Why so strict: the result is what the client trains on next; a truncated or
    re-ordered stream must fail loudly, never yield a silently wrong model.
    Why the buffer is allocated up front only when the caller names the dimension: then
    the header's size is the round's, and each chunk is copied once, into place; without
    it a header could make the client allocate whatever it announces, so the buffer grows
    with the bytes that actually arrive.
    """

    def __init__(
        self, expected_round_id: int | None = None, expected_dimension: int | None = None
    ) -> None:
        self._round_id = expected_round_id
        self._dimension = expected_dimension
        self._header: pb.ResultHeader | None = None
        self._data = bytearray()
        self._filled = 0
        self._hasher = hashlib.sha256()
        self._next_index = 0
        self._digest: bytes | None = None
        self._verified: bytes | None = None

    def add(self, chunk: pb.ResultChunk) -> None:
        if self._digest is not None:
            raise StreamIntegrityError("result chunk after the one carrying the digest")
        if chunk.index != self._next_index:
            raise StreamIntegrityError(
                f"result chunk {chunk.index} out of order; expected {self._next_index}"
            )
        self._take_header(chunk)
        assert self._header is not None
        data = chunk.data  # each read of a bytes field copies it: read once
        end = self._filled + len(data)
        if end > self._header.total_bytes:
            raise StreamIntegrityError(
                f"result stream exceeds the announced {self._header.total_bytes} bytes"
            )
        if len(self._data) >= end:
            self._data[self._filled : end] = data
        else:
            self._data += data
        self._filled = end
        self._hasher.update(data)
        self._next_index += 1
        if chunk.sha256:
            self._digest = bytes(chunk.sha256)

    def _take_header(self, chunk: pb.ResultChunk) -> None:
        first = self._next_index == 0
        if first != chunk.HasField("header"):
            where = "missing from the first" if first else "repeated in a later"
            raise StreamIntegrityError(f"result header {where} chunk")
        if first:
            self._header = _checked_header(chunk.header, self._round_id, self._dimension)
            if self._dimension is not None:
                self._data = bytearray(self._header.total_bytes)

    def finish(self) -> tuple[pb.ResultHeader, np.ndarray]:
        """The header and the weighted mean, once every byte and the digest checked out.

        The mean is a view of the received bytes (no copy on a little-endian machine);
        `payload_sha256` is their verified SHA-256 from then on.
        """
        if self._header is None:
            raise StreamIntegrityError("the result stream was empty (no header)")
        if self._filled != self._header.total_bytes:
            raise StreamIntegrityError(
                f"result stream ended after {self._filled} of {self._header.total_bytes} bytes"
            )
        if self._digest is None:
            raise StreamIntegrityError("the result stream's last chunk carries no SHA-256")
        if self._digest != self._hasher.digest():
            raise StreamIntegrityError("result digest mismatch: the bytes were corrupted")
        self._verified = self._digest
        mean = np.frombuffer(self._data, dtype=RESULT_DTYPE).astype(np.float64, copy=False)
        return self._header, mean

    @property
    def payload_sha256(self) -> bytes:
        """SHA-256 of the assembled bytes, once `finish` checked it against the stream's."""
        if self._verified is None:
            raise StreamIntegrityError("the result is not complete and checked yet")
        return self._verified

    def downloaded(self) -> DownloadedMean:
        """`finish`, with the digest of the bytes the mean was read from."""
        header, mean = self.finish()
        return DownloadedMean(header, mean, self.payload_sha256)


def _checked_header(
    header: pb.ResultHeader, round_id: int | None, dimension: int | None
) -> pb.ResultHeader:
    if round_id is not None and header.round_id != round_id:
        raise StreamIntegrityError(f"result is for round {header.round_id}, not {round_id}")
    if header.dimension < 1:
        raise StreamIntegrityError("result header announces dimension 0")
    if dimension is not None and header.dimension != dimension:
        raise StreamIntegrityError(
            f"result has dimension {header.dimension}; the round's is {dimension}"
        )
    if header.total_bytes != header.dimension * RESULT_DTYPE.itemsize:
        raise StreamIntegrityError(
            f"result header announces {header.total_bytes} bytes for {header.dimension} "
            f"float64 values (expected {header.dimension * RESULT_DTYPE.itemsize})"
        )
    return header


# --- tensors <-> flat vector ---------------------------------------------------------------


@dataclass(frozen=True)
class TensorSlot:
    """Where one named tensor lives in the flat vector."""

    name: str
    shape: tuple[int, ...]
    offset: int

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class TensorLayout:
    """Named tensors laid end to end in one flat vector (sorted-name order when flattened)."""

    slots: tuple[TensorSlot, ...]

    def __post_init__(self) -> None:
        names = [s.name for s in self.slots]
        if len(set(names)) != len(names):
            raise ConfigError("a tensor layout names a tensor twice")
        if any(s.offset < 0 or any(d < 0 for d in s.shape) for s in self.slots):
            raise ConfigError("a tensor layout has a negative offset or dimension")

    @property
    def size(self) -> int:
        return max((s.offset + s.size for s in self.slots), default=0)

    def split(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Float64 copies of each tensor, in its original shape."""
        if flat.ndim != 1 or flat.shape[0] != self.size:
            raise ConfigError(f"layout covers {self.size} values, the vector has {flat.shape}")
        return {
            s.name: np.array(flat[s.offset : s.offset + s.size], dtype=np.float64).reshape(s.shape)
            for s in self.slots
        }


def layout_from_pb(msg: pb.VectorLayout) -> TensorLayout | None:
    """The spec's layout, or None when the server published none."""
    if not msg.tensors:
        return None
    return TensorLayout(
        tuple(
            TensorSlot(t.name, tuple(int(d) for d in t.shape), int(t.offset)) for t in msg.tensors
        )
    )


def layout_to_pb(layout: TensorLayout) -> pb.VectorLayout:
    return pb.VectorLayout(
        tensors=[
            pb.TensorSlot(name=s.name, shape=list(s.shape), offset=s.offset) for s in layout.slots
        ]
    )


def to_numpy(value: Any) -> np.ndarray:
    """A numpy array of an array-like; torch tensors are detached and moved to the CPU.

    Torch is never imported: anything with `.detach` is treated as a tensor. numpy has no
    bfloat16, so such a tensor is widened with `.float()` (the update becomes float32
    anyway).
    """
    if not hasattr(value, "detach"):
        return np.asarray(value)
    tensor = value.detach().cpu()
    try:
        return np.asarray(tensor.numpy())
    except TypeError:
        return np.asarray(tensor.float().numpy())


def flatten_tensors(tensors: Mapping[str, Any]) -> tuple[np.ndarray, TensorLayout]:
    """One float32 vector of every tensor, in sorted-name order, and its layout."""
    if not tensors:
        raise ConfigError("the update has no tensors")
    arrays: dict[str, np.ndarray] = {}
    for name in sorted(tensors):
        if not isinstance(name, str) or not name:
            raise ConfigError(f"tensor names must be non-empty strings, got {name!r}")
        arrays[name] = to_numpy(tensors[name])
    slots, offset = [], 0
    for name, array in arrays.items():
        slots.append(TensorSlot(name, tuple(int(d) for d in array.shape), offset))
        offset += array.size
    flat = np.empty(offset, dtype=np.float32)
    for slot in slots:
        flat[slot.offset : slot.offset + slot.size] = arrays[slot.name].reshape(-1)
    return flat, TensorLayout(tuple(slots))


def as_update_vector(update: Any) -> tuple[np.ndarray, TensorLayout | None]:
    """A 1-D update vector and, for a dict of tensors, the layout to split the result."""
    if isinstance(update, Mapping):
        return flatten_tensors(update)
    vector = to_numpy(update)
    if vector.ndim != 1:
        raise ConfigError(
            f"a plain update must be a 1-D vector, got shape {vector.shape}; pass a dict of "
            "named tensors to keep shapes"
        )
    return vector, None


def fit_layout(
    spec: pb.RoundSpec, vector: np.ndarray, layout: TensorLayout | None
) -> TensorLayout | None:
    """Refuse an update that does not fit the round; return the layout to split with."""
    if vector.shape[0] != spec.dimension:
        raise ConfigError(
            f"round {spec.round_id} aggregates vectors of {spec.dimension} values, but this "
            f"update has {vector.shape[0]}; send an update with the round's adapter layout"
        )
    published = layout_from_pb(spec.layout)
    if layout is None or published is None:
        return layout or published
    ours = {s.name: (s.shape, s.offset) for s in layout.slots}
    theirs = {s.name: (s.shape, s.offset) for s in published.slots}
    if ours != theirs:
        differ = sorted(n for n in ours.keys() | theirs.keys() if ours.get(n) != theirs.get(n))
        raise ConfigError(
            f"round {spec.round_id} publishes a tensor layout that differs from this update's "
            f"in {differ[:5]}: the tensors would be summed out of place"
        )
    return layout
