"""CKKS key material: the secret context stays with clients, the server gets a public one.

Why wrap with the envelope: the key holder creates the secret context and sends it to
every enrolled client through the server; sealed with X25519 + AEAD to each recipient
(associated data: session, holder, recipient, stage), the relaying server learns nothing
and cannot swap it. Contexts are serialised without pickle (TenSEAL's protobuf format).
"""

from __future__ import annotations

import hashlib

import tenseal as ts
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from secagg.ckks.presets import CkksPreset
from secagg.crypto.envelope import AeadAlgorithm, EnvelopeContext, seal, unseal
from secagg.errors import ConfigError, CryptoError


class CkksKeyring:
    """A TenSEAL CKKS context, secret (clients) or public (server)."""

    def __init__(self, context: ts.Context) -> None:
        self._context = context

    @classmethod
    def generate(cls, chosen: CkksPreset) -> CkksKeyring:
        context = ts.context(
            ts.SCHEME_TYPE.CKKS,
            poly_modulus_degree=chosen.poly_modulus_degree,
            coeff_mod_bit_sizes=list(chosen.coeff_mod_bit_sizes),
        )
        context.global_scale = 2.0**chosen.scale_bits
        return cls(context)

    @classmethod
    def from_bytes(cls, data: bytes) -> CkksKeyring:
        try:
            return cls(ts.context_from(data))
        except Exception as exc:  # noqa: BLE001 - TenSEAL raises assorted types on bad input
            raise CryptoError(f"not a serialised TenSEAL context: {exc}") from exc

    @property
    def context(self) -> ts.Context:
        return self._context

    @property
    def is_private(self) -> bool:
        return bool(self._context.is_private())

    def public(self) -> CkksKeyring:
        """A copy without the secret key: what the server gets."""
        copy = self._context.copy()
        copy.make_context_public()
        return CkksKeyring(copy)

    def to_bytes(self) -> bytes:
        """Serialised context; includes the secret key only if this keyring is private.

        Relinearisation and Galois keys are left out: add-only aggregation never uses
        them, and they would more than double the public context.
        """
        return bytes(
            self._context.serialize(
                save_public_key=True,
                save_secret_key=self.is_private,
                save_galois_keys=False,
                save_relin_keys=False,
            )
        )

    def fingerprint(self) -> bytes:
        """SHA-256 of the parameters and public key: the same for the key holder, every
        client that unwrapped the context, and the server's public copy (copies regenerate
        relinearisation keys with fresh randomness, so those are not hashed)."""
        return hashlib.sha256(
            bytes(
                self._context.serialize(
                    save_public_key=True,
                    save_secret_key=False,
                    save_galois_keys=False,
                    save_relin_keys=False,
                )
            )
        ).digest()


def wrap_secret_context(
    keyring: CkksKeyring,
    holder_key: X25519PrivateKey,
    recipient_public: bytes,
    context: EnvelopeContext,
    *,
    algorithm: AeadAlgorithm = AeadAlgorithm.AES_256_GCM,
) -> bytes:
    """Seal the secret context to one enrolled client."""
    if not keyring.is_private:
        raise ConfigError("only a secret context is wrapped for clients")
    return seal(holder_key, recipient_public, keyring.to_bytes(), context, algorithm=algorithm)


def unwrap_secret_context(
    recipient_key: X25519PrivateKey,
    holder_public: bytes,
    envelope: bytes,
    context: EnvelopeContext,
    *,
    algorithm: AeadAlgorithm = AeadAlgorithm.AES_256_GCM,
) -> CkksKeyring:
    """Open a wrapped secret context; a failed open raises DecryptionError."""
    keyring = CkksKeyring.from_bytes(
        unseal(recipient_key, holder_public, envelope, context, algorithm=algorithm)
    )
    if not keyring.is_private:
        raise CryptoError("the wrapped context holds no secret key")
    return keyring


def key_epoch(round_id: int, rotate_every: int) -> int:
    """The key epoch of a round when the secret context is replaced every N rounds.

    Rotation bounds how much a leaked secret context exposes: only the aggregates of the
    rounds of its epoch. Rounds are numbered from 1; epoch 0 covers rounds 1..N.
    """
    if rotate_every < 1:
        raise ConfigError(f"rotate_every must be >= 1 round, got {rotate_every}")
    if round_id < 1:
        raise ConfigError(f"round ids start at 1, got {round_id}")
    return (round_id - 1) // rotate_every
