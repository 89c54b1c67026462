"""The wire side of CKKS uploads and results: one ciphertext per chunk, checked end to end.

Why apart from streams.py: a serialised ciphertext has no fixed size, so chunks are cut
at ciphertext boundaries rather than every `chunk_bytes`; the digest and resume rules are
the same as for SecAgg uploads. Nothing here does I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from fedveil.clients.errors import StreamIntegrityError, TransportError
from fedveil.proto import aggregation_pb2 as pb


@dataclass(frozen=True, eq=False)
class CiphertextPayload:
    """One encrypted update: its ciphertexts, sent as VectorChunks in order."""

    round_id: int
    client_id: str
    ciphertexts: Sequence[bytes] = field(repr=False)
    fingerprint: bytes
    digest: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        hasher = hashlib.sha256()
        for ciphertext in self.ciphertexts:
            hasher.update(ciphertext)
        object.__setattr__(self, "digest", hasher.digest())

    @property
    def total_bytes(self) -> int:
        return sum(len(c) for c in self.ciphertexts)

    @property
    def chunk_count(self) -> int:
        return len(self.ciphertexts)

    def chunks(self, start_index: int = 0) -> Iterator[pb.VectorChunk]:
        """The chunks from `start_index` on; `chunk_count` means "already complete"."""
        if not 0 <= start_index <= self.chunk_count:
            raise TransportError(
                "OUT_OF_RANGE",
                f"the server asks to resume the upload at ciphertext {start_index}, but it "
                f"has only {self.chunk_count}",
                rpc="GetUploadStatus",
            )
        if start_index == self.chunk_count:
            return iter([self._chunk(start_index, b"", last=True)])
        last = self.chunk_count - 1
        return (
            self._chunk(i, self.ciphertexts[i], last=i == last)
            for i in range(start_index, self.chunk_count)
        )

    def _chunk(self, index: int, data: bytes, *, last: bool) -> pb.VectorChunk:
        return pb.VectorChunk(
            round_id=self.round_id,
            client_id=self.client_id,
            index=index,
            data=data,
            total_bytes=self.total_bytes,
            checksum=self.digest if last else b"",
            key_fingerprint=self.fingerprint,
        )


class CiphertextResultAssembler:
    """Checks a streamed CKKS result: header, order, count, size and digest."""

    def __init__(self, round_id: int, fingerprint: bytes, chunk_count: int) -> None:
        self._round_id = round_id
        self._fingerprint = fingerprint
        self._count = chunk_count
        self._header: pb.ResultHeader | None = None
        self._pieces: list[bytes] = []
        self._received = 0
        self._hasher = hashlib.sha256()
        self._digest: bytes | None = None

    def add(self, chunk: pb.ResultChunk) -> None:
        if self._digest is not None:
            raise StreamIntegrityError("result chunk after the one carrying the digest")
        if chunk.index != len(self._pieces):
            raise StreamIntegrityError(
                f"result chunk {chunk.index} out of order; expected {len(self._pieces)}"
            )
        first = not self._pieces
        if first != chunk.HasField("header"):
            raise StreamIntegrityError("the result header must come in the first chunk only")
        if first:
            self._header = self._checked(chunk.header)
        assert self._header is not None
        data = chunk.data
        self._received += len(data)
        if self._received > self._header.total_bytes or len(self._pieces) >= self._count:
            raise StreamIntegrityError("the result stream runs past what its header announced")
        self._pieces.append(data)
        self._hasher.update(data)
        if chunk.sha256:
            self._digest = bytes(chunk.sha256)

    def _checked(self, header: pb.ResultHeader) -> pb.ResultHeader:
        if header.round_id != self._round_id:
            raise StreamIntegrityError(
                f"the result is for round {header.round_id}, not {self._round_id}"
            )
        if header.mode != pb.AGGREGATION_MODE_CKKS:
            raise StreamIntegrityError("a CKKS round's result must be ciphertexts")
        if bytes(header.key_fingerprint) != self._fingerprint:
            raise StreamIntegrityError("the result is under another key than this round's")
        if header.chunk_count != self._count:
            raise StreamIntegrityError(
                f"the result holds {header.chunk_count} ciphertexts; the round has {self._count}"
            )
        return header

    def finish(self) -> tuple[pb.ResultHeader, list[bytes]]:
        if self._header is None:
            raise StreamIntegrityError("the result stream was empty (no header)")
        if len(self._pieces) != self._count or self._received != self._header.total_bytes:
            raise StreamIntegrityError(
                f"the result stream ended after {len(self._pieces)} of {self._count} ciphertexts"
            )
        if self._digest is None or self._digest != self._hasher.digest():
            raise StreamIntegrityError("result digest missing or wrong: the bytes were corrupted")
        return self._header, self._pieces
