"""Handing the epoch's secret context from the key holder to every client, via the server.

Why hybrid: the secret context is about 400 KB (8192 slots); sealing it once per client
would make the holder's publication n x 400 KB. Instead the holder encrypts it once
under a fresh 256-bit content key (AES-256-GCM) and seals only that key to each client
with the X25519 envelope of the secagg core. The associated data of both layers binds
the session, the key epoch, the holder and the public-context fingerprint, so the
relaying server can neither read the context nor swap, replay or re-target it: any of
these makes opening raise DecryptionError.

The holder's X25519 key is authenticated by its Ed25519-signed advertisement
(`ckks_advertisement_message`), so the server cannot substitute its own key either.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fedveil.errors import ConfigError, CryptoError, DecryptionError
from fedveil.secagg.ckks.keys import CkksKeyring
from fedveil.secagg.crypto.encoding import encode_fields
from fedveil.secagg.crypto.envelope import NONCE_BYTES, TAG_BYTES, EnvelopeContext, seal, unseal

CONTENT_KEY_BYTES = 32
WRAPPED_KEY_BYTES = NONCE_BYTES + CONTENT_KEY_BYTES + TAG_BYTES
_ADVERTISEMENT_TAG = b"fedveil-ckks-advertisement-v1"
_CONTEXT_TAG = b"fedveil-ckks-secret-context-v1"
ENVELOPE_STAGE = "ckks-distribute-keys"


def ckks_advertisement_message(session_id: bytes, client_id: str, encryption_key: bytes) -> bytes:
    """What a client signs to advertise the X25519 key its secret context is sealed to.

    A tag of its own: a CKKS advertisement can never be replayed as a SecAgg one.
    """
    return encode_fields(_ADVERTISEMENT_TAG, session_id, client_id, encryption_key)


@dataclass(frozen=True)
class KeyBinding:
    """What both layers of the hand-over are bound to."""

    session_id: bytes
    key_epoch: int
    holder: str
    fingerprint: bytes

    def associated_data(self) -> bytes:
        return encode_fields(
            _CONTEXT_TAG, self.session_id, self.key_epoch, self.holder, self.fingerprint
        )

    def envelope(self, recipient: str) -> EnvelopeContext:
        return EnvelopeContext(
            self.session_id, self.holder, recipient, f"{ENVELOPE_STAGE}/{self.key_epoch}"
        )


@dataclass(frozen=True)
class SealedContext:
    """The secret context encrypted once, and its content key sealed to each recipient."""

    ciphertext: bytes
    wrapped_keys: dict[str, bytes]


def seal_secret_context(
    keyring: CkksKeyring,
    holder_key: X25519PrivateKey,
    recipients: Mapping[str, bytes],
    binding: KeyBinding,
) -> SealedContext:
    """Encrypt the secret context for `recipients` (client id -> X25519 public key)."""
    if not keyring.is_private:
        raise ConfigError("only a secret context is handed to clients")
    if binding.fingerprint != keyring.fingerprint():
        raise ConfigError("the binding names another context's fingerprint")
    content_key = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(NONCE_BYTES)
    ciphertext = nonce + AESGCM(content_key).encrypt(
        nonce, keyring.to_bytes(), binding.associated_data()
    )
    wrapped = {
        recipient: seal(holder_key, public, content_key, binding.envelope(recipient))
        for recipient, public in sorted(recipients.items())
    }
    return SealedContext(ciphertext, wrapped)


def open_secret_context(
    recipient: str,
    recipient_key: X25519PrivateKey,
    holder_public: bytes,
    ciphertext: bytes,
    wrapped_key: bytes,
    binding: KeyBinding,
) -> CkksKeyring:
    """Recover the secret context; any mismatch or tampering raises DecryptionError."""
    content_key = unseal(recipient_key, holder_public, wrapped_key, binding.envelope(recipient))
    if len(content_key) != CONTENT_KEY_BYTES or len(ciphertext) <= NONCE_BYTES + TAG_BYTES:
        raise DecryptionError("the sealed secret context is malformed")
    nonce, body = ciphertext[:NONCE_BYTES], ciphertext[NONCE_BYTES:]
    try:
        raw = AESGCM(content_key).decrypt(nonce, body, binding.associated_data())
    except InvalidTag as exc:
        raise DecryptionError(
            "the sealed secret context does not open under this session, epoch, holder and "
            "fingerprint: it was tampered with or relayed from elsewhere"
        ) from exc
    keyring = CkksKeyring.from_bytes(raw)
    if not keyring.is_private:
        raise CryptoError("the sealed context holds no secret key")
    if keyring.fingerprint() != binding.fingerprint:
        raise CryptoError("the opened context does not match the announced fingerprint")
    return keyring
