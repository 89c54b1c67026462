"""Known answers for the masked-input checksum (secagg.protocol.upload_checksum): its key
derivation and its Poly1305, each checked against a computation that shares no code with
it (RFC 5869 HKDF written out from `cryptography`'s primitive, RFC 8439 Poly1305 in plain
Python integers), and pinned, so a change of either is a deliberate wire change."""

from __future__ import annotations

import struct

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedveil.errors import ConfigError, ProtocolError
from fedveil.secagg.protocol.upload_checksum import (
    CHECKSUM_BYTES,
    UploadChecksum,
    upload_checksum,
    upload_checksum_key,
)

SESSION = bytes(16) + b"\xff" * 16
CLIENT = "org-00"
PAYLOAD = bytes(range(256)) * 3

PINNED_KEY = "eb2a33e3add05b7350d599fcd749b5ec083824181ff1d819c31ba156d573782a"
PINNED_CHECKSUM = "49a394d75170d2fc2486e3592ee10efb"

# RFC 8439 section 2.5.2.
RFC_KEY = bytes.fromhex("85d6be7857556d337f4452fe42d506a80103808afb0db2fd4abff6af4149f51b")
RFC_MESSAGE = b"Cryptographic Forum Research Group"
RFC_TAG = bytes.fromhex("a8061dc1305136c6c22b8baf0c0127a9")


def reference_poly1305(key: bytes, message: bytes) -> bytes:
    """RFC 8439 section 2.5.1, in Python integers."""
    r = int.from_bytes(key[:16], "little") & 0x0FFFFFFC0FFFFFFC0FFFFFFC0FFFFFFF
    s = int.from_bytes(key[16:], "little")
    p = (1 << 130) - 5
    acc = 0
    for i in range(0, len(message), 16):
        block = message[i : i + 16] + b"\x01"
        acc = (acc + int.from_bytes(block, "little")) * r % p
    return ((acc + s) % (1 << 128)).to_bytes(16, "little")


def reference_key(session_id: bytes, client_id: str) -> bytes:
    """HKDF-SHA256(ikm = salt = session id, info = label || length-prefixed client id)."""
    raw = client_id.encode()
    info = b"fedveil/v1/upload-checksum" + struct.pack(">I", len(raw)) + raw
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=session_id, info=info)
    return hkdf.derive(session_id)


def test_the_reference_poly1305_is_rfc_8439() -> None:
    assert reference_poly1305(RFC_KEY, RFC_MESSAGE) == RFC_TAG


def test_upload_checksum_computes_poly1305_fed_in_any_pieces() -> None:
    checksum = UploadChecksum(RFC_KEY)
    checksum.update(memoryview(RFC_MESSAGE)[:5])
    checksum.update(RFC_MESSAGE[5:21])
    checksum.update(memoryview(RFC_MESSAGE)[21:])
    assert checksum.digest() == RFC_TAG


def test_key_derivation_known_answer() -> None:
    key = upload_checksum_key(SESSION, CLIENT)
    assert key == reference_key(SESSION, CLIENT)
    assert key.hex() == PINNED_KEY


def test_checksum_known_answer() -> None:
    tag = upload_checksum(SESSION, CLIENT, PAYLOAD)
    assert tag == reference_poly1305(reference_key(SESSION, CLIENT), PAYLOAD)
    assert tag.hex() == PINNED_CHECKSUM
    assert len(tag) == CHECKSUM_BYTES


def test_every_client_and_every_session_has_its_own_key() -> None:
    other_session = bytes(31) + b"\x01"
    keys = {
        upload_checksum_key(SESSION, CLIENT),
        upload_checksum_key(SESSION, "org-01"),
        upload_checksum_key(other_session, CLIENT),
    }
    assert len(keys) == 3


def test_the_checksum_can_be_read_twice_but_takes_no_bytes_after() -> None:
    checksum = UploadChecksum.for_upload(SESSION, CLIENT)
    checksum.update(PAYLOAD)
    assert checksum.digest() == checksum.digest() == bytes.fromhex(PINNED_CHECKSUM)
    with pytest.raises(ProtocolError, match="already taken"):
        checksum.update(b"more")


def test_a_session_id_that_is_not_a_digest_is_refused() -> None:
    with pytest.raises(ConfigError, match="session id must be 32 bytes"):
        upload_checksum_key(b"short", CLIENT)
