"""Typed messages of a CKKS round, mapped one-to-one onto fedveil.v1 protobuf messages.

Plain frozen dataclasses of bytes, str and int: the core does no I/O and nothing a peer
sends is ever unpickled.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CkksAdvertisement:
    """A client's X25519 key for this key epoch, signed by its enrolled Ed25519 identity."""

    client_id: str
    encryption_key: bytes
    signature: bytes


@dataclass(frozen=True)
class WrappedKey:
    """The content key of the sealed secret context, sealed to one recipient."""

    recipient: str
    ciphertext: bytes


@dataclass(frozen=True)
class KeyPublication:
    """The key holder's hand-over: a public context for the server, the sealed secret
    context and one wrapped content key per other advertised client."""

    client_id: str
    key_epoch: int
    fingerprint: bytes
    public_context: bytes
    sealed_context: bytes
    wrapped_keys: tuple[WrappedKey, ...]


@dataclass(frozen=True)
class KeyDelivery:
    """What one client receives to open the epoch's secret context."""

    key_epoch: int
    fingerprint: bytes
    holder: CkksAdvertisement
    sealed_context: bytes
    wrapped_key: bytes


@dataclass(frozen=True)
class EpochKeys:
    """What the server keeps of an epoch between rounds: no secret, only the public
    context, its fingerprint and who can encrypt under it."""

    key_epoch: int
    fingerprint: bytes
    public_context: bytes
    members: frozenset[str]
    key_round: int


@dataclass(frozen=True)
class CkksResult:
    """The summed ciphertexts (one per chunk) and the clients whose uploads they hold."""

    survivors: tuple[str, ...]
    ciphertexts: tuple[bytes, ...]
