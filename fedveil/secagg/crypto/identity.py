"""Ed25519 identities of enrolled clients and the statements they sign.

Why: an honest-but-curious server that may also turn active could substitute its own
X25519 keys for a client's (a man-in-the-middle on every share) or show clients
different survivor sets. Each client signs its key advertisement and the survivor set it
saw with the long-term identity it enrolled with; peers verify against the roster they
got at enrolment, not against anything the server relays in the round.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from fedveil.errors import ConfigError, InvalidSignatureError
from fedveil.secagg.crypto.encoding import encode_fields, encode_id_set

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
_ADVERTISEMENT_TAG = b"fedveil-key-advertisement-v1"
_SURVIVOR_SET_TAG = b"fedveil-survivor-set-v1"


@dataclass(frozen=True)
class VerifyingIdentity:
    """A client's enrolled Ed25519 public key."""

    public_bytes: bytes

    def __post_init__(self) -> None:
        if len(self.public_bytes) != PUBLIC_KEY_BYTES:
            raise ConfigError(
                f"an Ed25519 public key is {PUBLIC_KEY_BYTES} bytes, got {len(self.public_bytes)}"
            )

    def verify(self, signature: bytes, message: bytes) -> None:
        """Return None if valid; raise InvalidSignatureError otherwise (never a bool)."""
        try:
            key = Ed25519PublicKey.from_public_bytes(self.public_bytes)
            key.verify(signature, message)
        except (InvalidSignature, ValueError) as exc:
            raise InvalidSignatureError("Ed25519 signature does not verify") from exc


class SigningIdentity:
    """A client's long-term Ed25519 signing key."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key

    @classmethod
    def generate(cls) -> SigningIdentity:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> SigningIdentity:
        if len(raw) != 32:
            raise ConfigError(f"an Ed25519 private key is 32 bytes, got {len(raw)}")
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    def private_bytes(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def verifying(self) -> VerifyingIdentity:
        raw = self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return VerifyingIdentity(raw)

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)


def advertisement_message(
    session_id: bytes,
    client_id: str,
    encryption_key: bytes,
    masking_key: bytes,
    self_mask_commitment: bytes,
) -> bytes:
    """What a client signs when it advertises its keys for a session.

    Besides the two X25519 public keys it covers a commitment to the self-mask seed, so the
    server can check the seed it rebuilds from shares (a wrong share is caught even when
    exactly t shares arrive).
    """
    return encode_fields(
        _ADVERTISEMENT_TAG, session_id, client_id, encryption_key, masking_key, self_mask_commitment
    )


def survivor_set_message(session_id: bytes, survivors: Iterable[str]) -> bytes:
    """What a client signs at the consistency check: the survivor set it was shown."""
    return encode_fields(_SURVIVOR_SET_TAG, session_id, encode_id_set(survivors))
