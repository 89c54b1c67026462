"""HKDF-SHA256 with an explicit purpose label for every use, and the session id as salt.

Why labels: one X25519 shared secret feeds several keys (a pairwise mask seed, a share
encryption key); without a purpose label two uses could get the same key. Why the session
id as salt: it binds every derived key to one round, one round configuration, one global
model and one roster, so clients that were shown different views derive different keys
and their masks fail to cancel (the round fails closed instead of leaking).
"""

from __future__ import annotations

import enum

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedveil.errors import ConfigError
from fedveil.secagg.crypto.encoding import Field, encode_fields

SESSION_ID_BYTES = 32
_LABEL_PREFIX = b"fedveil/v1/"


class Purpose(enum.Enum):
    """Every distinct use of derived key material; the value is the HKDF info label.

    ENVELOPE keys seal Shamir shares (and, later, wrapped CKKS keys); the envelope's
    associated data names the stage, so one label serves each sealed payload kind.
    DP_ROTATION seeds the round's randomised Hadamard rotation: public, shared by every
    party of the round, fresh with every session id (it serves utility, not secrecy).
    UPLOAD_CHECKSUM keys the Poly1305 checksum of one masked-input upload: public as well
    (secagg.protocol.upload_checksum says why that is all it needs to be).
    """

    PAIRWISE_MASK = "pairwise-mask"
    SELF_MASK = "self-mask"
    ENVELOPE = "envelope"
    NEIGHBOUR_GRAPH = "neighbour-graph"
    DP_ROTATION = "dp-rotation"
    UPLOAD_CHECKSUM = "upload-checksum"


def derive_key(
    secret: bytes,
    purpose: Purpose,
    session_id: bytes,
    *context: Field,
    length: int = 32,
) -> bytes:
    """HKDF-SHA256(ikm=secret, salt=session_id, info=label(purpose) || context).

    `context` names the parties or object the key is for (e.g. the sorted pair of client
    ids), length-prefixed so distinct contexts never collide.
    """
    if not isinstance(purpose, Purpose):
        raise ConfigError(f"purpose must be a kdf.Purpose, got {purpose!r}")
    if not isinstance(session_id, bytes) or len(session_id) != SESSION_ID_BYTES:
        raise ConfigError(
            f"session id must be {SESSION_ID_BYTES} bytes (a SHA-256 digest), "
            f"got {type(session_id).__name__} of length {len(session_id)}"
        )
    if not secret:
        raise ConfigError("HKDF input key material is empty")
    info = _LABEL_PREFIX + purpose.value.encode("ascii") + encode_fields(*context)
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=session_id, info=info).derive(secret)
