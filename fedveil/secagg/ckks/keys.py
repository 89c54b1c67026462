"""CKKS key material: the secret context stays with clients, the server gets a public one.

The key holder creates the secret context and hands it to every enrolled client sealed
(secagg/ckks/distribution.py); the server only ever parses a public copy. Contexts are
serialised without pickle (TenSEAL's protobuf format).
"""

from __future__ import annotations

import hashlib
import math

import tenseal as ts
import tenseal.sealapi  # noqa: F401 - registers SEAL's Modulus type, read by preset_mismatch

from fedveil.errors import ConfigError, CryptoError
from fedveil.secagg.ckks.presets import CkksPreset


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


def context_parameters(keyring: CkksKeyring) -> tuple[int, tuple[int, ...], float]:
    """(poly modulus degree, bit size of every prime of the coefficient modulus including
    the special prime, global scale) of a context, as SEAL and TenSEAL hold them."""
    parms = keyring.context.seal_context().data.key_context_data().parms()
    sizes = tuple(int(prime.bit_count()) for prime in parms.coeff_modulus())
    return int(parms.poly_modulus_degree()), sizes, float(keyring.context.global_scale)


def preset_mismatch(keyring: CkksKeyring, chosen: CkksPreset) -> str | None:
    """What differs between a context's parameters and the preset, or None."""
    degree, sizes, scale = context_parameters(keyring)
    problems = []
    if degree != chosen.poly_modulus_degree:
        problems.append(
            f"poly modulus degree {degree}, the preset's is {chosen.poly_modulus_degree}"
        )
    if sizes != tuple(chosen.coeff_mod_bit_sizes):
        problems.append(
            f"coeff modulus bit sizes {list(sizes)}, the preset's are "
            f"{list(chosen.coeff_mod_bit_sizes)}"
        )
    if scale != 2.0**chosen.scale_bits:
        shown = f"2^{math.log2(scale):g}" if scale > 0 else repr(scale)
        problems.append(f"scale {shown}, the preset's is 2^{chosen.scale_bits}")
    return "; ".join(problems) or None


def check_secret_context(keyring: CkksKeyring, chosen: CkksPreset, key_epoch: int) -> None:
    """A client's check of the secret context it received: it encrypts under nothing but
    the round's preset (a key holder, or a server relaying for one, could otherwise pick
    weaker parameters or a chain whose headroom the round's bounds do not fit)."""
    if not keyring.is_private:
        raise CryptoError(f"the context delivered for key epoch {key_epoch} holds no secret key")
    problem = preset_mismatch(keyring, chosen)
    if problem is not None:
        raise CryptoError(
            f"the secret context delivered for key epoch {key_epoch} is not the round's "
            f"preset {chosen.name} ({problem}); refusing to encrypt under it"
        )


def load_public_context(data: bytes, chosen: CkksPreset) -> CkksKeyring:
    """Parse a context published for the server and check it fits the round's preset.

    Refuses a context that holds the secret key (the server must never receive one), one
    without a public key, and one whose ring degree, modulus chain or scale differ from
    the preset.
    """
    keyring = CkksKeyring.from_bytes(data)
    context = keyring.context
    if keyring.is_private:
        raise CryptoError(
            "the published context holds the secret key; publish the public context only "
            "(the server must never hold the key)"
        )
    if not context.has_public_key():
        raise CryptoError("the published context has no public key")
    problem = preset_mismatch(keyring, chosen)
    if problem is not None:
        raise CryptoError(f"the published context is not preset {chosen.name}: {problem}")
    return keyring
