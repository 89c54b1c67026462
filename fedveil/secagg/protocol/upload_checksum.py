"""The checksum a masked-input upload closes with: Poly1305 under a public per-upload key.

What it guards. The last chunk of a masked-input stream carries a checksum of the whole
payload, and the server compares it with the bytes it added into the sum (and replay
compares it again with the journalled chunks after a restart). The connection is mutual
TLS, so the checksum is not there for the network: it catches an upload assembled from
bytes that do not belong together, which TLS cannot see. A client that crashed half-way
and encoded its update again (stochastic rounding draws fresh CSPRNG bits, so the second
payload differs from the first) and then resumed at GetUploadStatus's next_index would
otherwise have the server add the first encoding's prefix and the second's suffix, a
vector no client produced; so would a journal that hands back damaged chunks. Nothing
else rests on it: it is not signed, not part of the consistency check (which signs the
session id and the survivor set only), and not stored anywhere but the journal's record
that the upload finished.

Why a universal hash is enough, and why its key may be public. Poly1305 with key (r, s)
evaluates the message as a polynomial at r modulo 2^130 - 5; two different messages of at
most L bytes, both fixed independently of r, get the same tag with probability at most
8 * ceil(L / 16) / 2^106 over r (Bernstein, "The Poly1305-AES message-authentication
code", 2005). That bound asks r to be independent of the two messages, not secret. The
key here is HKDF(session id, "upload-checksum", client id): fresh for every round (the
session id binds the round id, its configuration, the model and the roster) and every
client, and derived alike by the client, the server and journal replay, so it never
travels and the journal stores no key. Neither the encoder's CSPRNG rounding nor a
storage fault reads it, so the two payloads of a mixed resume are fixed independently of
r and the bound holds for them.

Why reusing the one-time key is sound here. Poly1305's rule "never one key for two
messages" protects a secret key against a forger who sees the tags of messages of their
choosing. Nothing here is secret: anyone who knows the session id can compute the key,
so the checksum is no MAC and claims no authenticity. The only parties that could pick
messages knowing the key are the client whose upload it is, which can upload any vector
it likes anyway (a collision with its own checksum gets the server to add a vector it
could have sent outright), and the server, which is the party doing the check; the
network sees neither tags nor chunks through mutual TLS, and another client cannot write
into this client's stream (the server names the caller from its certificate). So the
same key over a resumed upload, or over an upload re-sent from chunk 0 after a mismatch,
gives nobody anything. What the checksum does not stop, as the unkeyed SHA-256 before it
did not: someone who can rewrite the journal can rewrite the stored checksum too.

Why Poly1305 rather than SHA-256: the checksum reads every uploaded byte once more, and
the server's masked-input stage is a memory-bandwidth job; SHA-256 was most of that
stage's limit, Poly1305 (from `cryptography`, already a dependency) is several times
faster (benchmarks/README.md). Plaintext and CKKS uploads keep their SHA-256.
"""

from __future__ import annotations

from typing import Protocol

from cryptography.hazmat.primitives.poly1305 import Poly1305

from fedveil.errors import ProtocolError
from fedveil.secagg.crypto.kdf import Purpose, derive_key

CHECKSUM_BYTES = 16
"""A Poly1305 tag."""

KEY_BYTES = 32
"""A Poly1305 key: r (clamped by the algorithm) and s, 16 bytes each."""


class StreamDigest(Protocol):
    """What an upload in flight feeds its bytes to: hashlib's objects and UploadChecksum."""

    def update(self, data: bytes | memoryview, /) -> None: ...

    def digest(self) -> bytes: ...


def upload_checksum_key(session_id: bytes, client_id: str) -> bytes:
    """The Poly1305 key of `client_id`'s masked-input upload in the session `session_id`."""
    return derive_key(session_id, Purpose.UPLOAD_CHECKSUM, session_id, client_id, length=KEY_BYTES)


class UploadChecksum:
    """Poly1305 over an upload fed in pieces; `digest` may be asked again once it is done.

    Why the tag is kept: the in-process path asks for the running checksum and then checks
    the upload against it, and a Poly1305 context can be finalised only once.
    """

    def __init__(self, key: bytes) -> None:
        self._mac = Poly1305(key)
        self._tag: bytes | None = None

    @classmethod
    def for_upload(cls, session_id: bytes, client_id: str) -> UploadChecksum:
        return cls(upload_checksum_key(session_id, client_id))

    def update(self, data: bytes | memoryview, /) -> None:
        if self._tag is not None:
            raise ProtocolError("the upload's checksum was already taken: no more bytes")
        self._mac.update(data)

    def digest(self) -> bytes:
        if self._tag is None:
            self._tag = self._mac.finalize()
        return self._tag


def upload_checksum(session_id: bytes, client_id: str, payload: bytes | memoryview) -> bytes:
    """The checksum a client sends with its whole masked-input payload."""
    checksum = UploadChecksum.for_upload(session_id, client_id)
    checksum.update(payload)
    return checksum.digest()
