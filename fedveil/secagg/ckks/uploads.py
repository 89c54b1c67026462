"""Streamed ciphertext uploads into the server's running encrypted sum.

Why not the SecAgg upload class: a serialised ciphertext has no fixed size, so the chunks
here are one ciphertext each, checked by parsing rather than by length. The stream rules
are the same: chunks in order, every chunk fully validated before it touches the sum, a
SHA-256 of the whole upload at the end, and an upload abandoned half-way subtracted again
from the chunks the caller kept.
"""

from __future__ import annotations

from collections.abc import Iterable

from fedveil.errors import InvalidMessageError, ProtocolError
from fedveil.secagg.ckks.codec import CiphertextSum
from fedveil.secagg.protocol.upload import UploadProgress

# A serialised 8192-degree ciphertext is ~131 KB, a 16384-degree one ~263 KB.
MAX_CIPHERTEXT_BYTES = 1 << 20


class CiphertextUploads:
    """Per-client uploads of `sum.count` ciphertexts under one key fingerprint."""

    def __init__(self, encrypted_sum: CiphertextSum, fingerprint: bytes) -> None:
        self.sum = encrypted_sum
        self.fingerprint = fingerprint
        self.chunk_count = encrypted_sum.count
        self._open: dict[str, UploadProgress] = {}
        self._announced: dict[str, int] = {}

    def progress(self, client_id: str) -> UploadProgress | None:
        return self._open.get(client_id)

    def begin(self, client_id: str, total_bytes: int, fingerprint: bytes) -> None:
        """Open (or continue) an upload; its size and key fingerprint stay fixed."""
        if fingerprint != self.fingerprint:
            raise InvalidMessageError(
                "the upload names another CKKS key (fingerprint mismatch): encrypt under the "
                "round's key epoch, as named in the round spec"
            )
        if not 0 < total_bytes <= self.chunk_count * MAX_CIPHERTEXT_BYTES:
            raise InvalidMessageError(
                f"upload announces {total_bytes} bytes; {self.chunk_count} ciphertexts take "
                f"between 1 and {self.chunk_count * MAX_CIPHERTEXT_BYTES} bytes"
            )
        announced = self._announced.setdefault(client_id, total_bytes)
        if announced != total_bytes:
            raise InvalidMessageError(
                f"upload announces {total_bytes} bytes, but its first chunk announced {announced}"
            )
        self._open.setdefault(client_id, UploadProgress())

    def add_chunk(self, client_id: str, index: int, data: bytes) -> None:
        """Parse one ciphertext fully, then add it into the running sum."""
        state = self._open.get(client_id)
        if state is None:
            raise ProtocolError(f"no upload in progress for {client_id!r}; start with chunk 0")
        if index != state.next_index:
            raise InvalidMessageError(
                f"chunk {index} out of order: the server expects chunk {state.next_index} next"
            )
        if len(data) > MAX_CIPHERTEXT_BYTES:
            raise InvalidMessageError(
                f"chunk {index} has {len(data)} bytes; one ciphertext is at most "
                f"{MAX_CIPHERTEXT_BYTES}"
            )
        if state.received_bytes + len(data) > self._announced[client_id]:
            raise InvalidMessageError(
                f"chunk {index} runs past the {self._announced[client_id]} bytes announced"
            )
        vector = self.sum.parse(index, data, self.fingerprint)
        self.sum.add(index, vector)
        state.hasher.update(data)
        state.received_bytes += len(data)
        state.next_index += 1

    def finish(self, client_id: str, digest: bytes) -> None:
        """Close an upload whose every ciphertext arrived and whose digest matches."""
        state = self._open.get(client_id)
        if state is None:
            raise ProtocolError(f"no upload in progress for {client_id!r}")
        if state.next_index != self.chunk_count:
            raise InvalidMessageError(
                f"upload ended after {state.next_index} of {self.chunk_count} ciphertexts"
            )
        if state.received_bytes != self._announced[client_id]:
            raise InvalidMessageError(
                f"upload ended after {state.received_bytes} of the "
                f"{self._announced[client_id]} bytes announced"
            )
        if digest != state.hasher.digest():
            raise InvalidMessageError(
                "upload digest mismatch: the SHA-256 sent does not match the bytes received; "
                "re-send the upload"
            )
        del self._open[client_id]
        del self._announced[client_id]

    def abort(self, client_id: str, chunks: Iterable[bytes]) -> None:
        """Take an unfinished upload's ciphertexts (as kept by the caller) out of the sum."""
        state = self._open.pop(client_id, None)
        self._announced.pop(client_id, None)
        if state is None:
            return
        for index, data in enumerate(chunks):
            if index >= state.next_index:
                break
            self.sum.add(index, self.sum.parse(index, data, self.fingerprint), subtract=True)
