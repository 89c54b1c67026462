"""Authenticated public-key envelopes: X25519 agreement, HKDF, then an AEAD.

Why: the server relays every Shamir share between clients, so each share is sealed to
its recipient. The associated data binds the session, the sender, the recipient and the
protocol stage, so the relaying server cannot replay a share into another round, swap
senders or recipients, or move it to another stage: any of these makes `unseal` raise.

Wire format: 12-byte random nonce || ciphertext || 16-byte tag. The AEAD algorithm is a
value chosen by configuration, never read from the wire (no downgrade).
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from fedveil.errors import ConfigError, CryptoError, DecryptionError
from fedveil.secagg.crypto.encoding import encode_fields
from fedveil.secagg.crypto.kdf import Purpose, derive_key

NONCE_BYTES = 12
TAG_BYTES = 16
X25519_KEY_BYTES = 32
_AD_TAG = b"fedveil-envelope-v1"


class AeadAlgorithm(enum.Enum):
    """The AEADs an envelope may use; both are from `cryptography`."""

    AES_256_GCM = "aes-256-gcm"
    CHACHA20_POLY1305 = "chacha20-poly1305"

    def instance(self, key: bytes) -> AESGCM | ChaCha20Poly1305:
        return AESGCM(key) if self is AeadAlgorithm.AES_256_GCM else ChaCha20Poly1305(key)


@dataclass(frozen=True)
class EnvelopeContext:
    """Who sealed what for whom, in which session and stage: the AEAD associated data."""

    session_id: bytes
    sender: str
    recipient: str
    stage: str

    def associated_data(self) -> bytes:
        return encode_fields(_AD_TAG, self.session_id, self.sender, self.recipient, self.stage)


def load_x25519_public(raw: bytes | X25519PublicKey) -> X25519PublicKey:
    """Parse a peer's raw 32-byte X25519 public key; a malformed one raises CryptoError."""
    if isinstance(raw, X25519PublicKey):
        return raw
    if not isinstance(raw, bytes | bytearray) or len(raw) != X25519_KEY_BYTES:
        raise CryptoError(f"an X25519 public key is {X25519_KEY_BYTES} raw bytes")
    return X25519PublicKey.from_public_bytes(bytes(raw))


def agree(private: X25519PrivateKey, peer_public: bytes | X25519PublicKey) -> bytes:
    """X25519 shared secret; a low-order peer key (all-zero secret) raises CryptoError."""
    try:
        return private.exchange(load_x25519_public(peer_public))
    except ValueError as exc:
        raise CryptoError("X25519 agreement failed: the peer key is a low-order point") from exc


def _envelope_key(shared: bytes, context: EnvelopeContext) -> bytes:
    return derive_key(
        shared, Purpose.ENVELOPE, context.session_id, context.sender, context.recipient
    )


def seal(
    sender_key: X25519PrivateKey,
    recipient_public: bytes | X25519PublicKey,
    plaintext: bytes,
    context: EnvelopeContext,
    *,
    algorithm: AeadAlgorithm = AeadAlgorithm.AES_256_GCM,
    nonce: bytes | None = None,
) -> bytes:
    """Encrypt `plaintext` so only the recipient, in this exact context, can open it.

    `nonce` exists for known-answer tests only; leave it None (a fresh random nonce).
    """
    if nonce is None:
        nonce = os.urandom(NONCE_BYTES)
    elif len(nonce) != NONCE_BYTES:
        raise ConfigError(f"nonce must be {NONCE_BYTES} bytes, got {len(nonce)}")
    key = _envelope_key(agree(sender_key, recipient_public), context)
    return nonce + algorithm.instance(key).encrypt(nonce, plaintext, context.associated_data())


def unseal(
    recipient_key: X25519PrivateKey,
    sender_public: bytes | X25519PublicKey,
    envelope: bytes,
    context: EnvelopeContext,
    *,
    algorithm: AeadAlgorithm = AeadAlgorithm.AES_256_GCM,
) -> bytes:
    """Open an envelope; raises DecryptionError on any mismatch of key, context or bytes."""
    if len(envelope) < NONCE_BYTES + TAG_BYTES:
        raise DecryptionError(
            f"envelope of {len(envelope)} bytes is shorter than nonce and tag "
            f"({NONCE_BYTES + TAG_BYTES} bytes)"
        )
    key = _envelope_key(agree(recipient_key, sender_public), context)
    nonce, body = envelope[:NONCE_BYTES], envelope[NONCE_BYTES:]
    try:
        return algorithm.instance(key).decrypt(nonce, body, context.associated_data())
    except InvalidTag as exc:
        raise DecryptionError(
            f"envelope from {context.sender!r} to {context.recipient!r} at stage "
            f"{context.stage!r} failed authentication: wrong key, session or tampered bytes"
        ) from exc
