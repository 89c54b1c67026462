"""Typed protocol messages exchanged between a ClientSession and a ServerRound.

Why plain frozen dataclasses: the protocol core does no I/O, so it needs no wire format;
the gRPC layer maps these one-to-one onto protobuf messages, and nothing a peer sends is
ever unpickled. Every field is bytes, str, int or a tuple of those.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedveil.secagg.dp.stages import DPAggregate
from fedveil.secagg.quantize import AggregateEstimate


@dataclass(frozen=True)
class KeyAdvertisement:
    """Stage 1, client -> server -> neighbours: two X25519 public keys, signed.

    `encryption_key` seals Shamir shares to this client; `masking_key` derives pairwise
    masks; `self_mask_commitment` lets the server verify the self-mask seed it rebuilds.
    The Ed25519 signature by the client's enrolled identity covers all three and the
    session id.
    """

    client_id: str
    encryption_key: bytes
    masking_key: bytes
    self_mask_commitment: bytes
    signature: bytes


@dataclass(frozen=True)
class ShareKeysRequest:
    """Stage 2, server -> client: the advertisements of the client's neighbours."""

    advertisements: tuple[KeyAdvertisement, ...]


@dataclass(frozen=True)
class EncryptedShare:
    """One sealed pair of shares (self-mask seed, masking key) from sender to recipient."""

    sender: str
    recipient: str
    ciphertext: bytes


@dataclass(frozen=True)
class ShareKeysResponse:
    """Stage 2, client -> server: one envelope per neighbour, for the server to relay."""

    client_id: str
    shares: tuple[EncryptedShare, ...]


@dataclass(frozen=True)
class MaskedInputRequest:
    """Stage 3, server -> client: the envelopes addressed to this client."""

    shares: tuple[EncryptedShare, ...]


@dataclass(frozen=True)
class MaskedInput:
    """Stage 3, client -> server: the masked update, packed at m bits per element."""

    client_id: str
    payload: bytes


@dataclass(frozen=True)
class ConsistencyRequest:
    """Stage 4, server -> client: the survivor set (clients whose masked input arrived)."""

    survivors: tuple[str, ...]


@dataclass(frozen=True)
class ConsistencySignature:
    """Stage 4, client -> server: the client's signature over the survivor set."""

    client_id: str
    signature: bytes


@dataclass(frozen=True)
class UnmaskRequest:
    """Stage 5, server -> client: the signed survivor set and the declared dropouts."""

    survivors: tuple[str, ...]
    dropped: tuple[str, ...]
    signatures: tuple[ConsistencySignature, ...]


@dataclass(frozen=True)
class RevealedShare:
    """A share a holder reveals for one owner: of its self-mask seed or its masking key."""

    owner: str
    share: bytes


@dataclass(frozen=True)
class UnmaskResponse:
    """Stage 5, client -> server: self-mask shares of survivors, key shares of dropouts."""

    client_id: str
    self_mask_shares: tuple[RevealedShare, ...]
    key_shares: tuple[RevealedShare, ...]


@dataclass(frozen=True)
class RoundResult:
    """Stage 6: what the server learns, and nothing more: the sum over the survivors.

    In a DP round `dp` is the decoded, noised aggregate and `estimate` carries its mean
    (unweighted, total_weight = contributors) with error_bound bounding the rounding error
    only: the DP noise (std dp.noise_std per element) is on top and is not bounded.
    """

    survivors: tuple[str, ...]
    ring_sum: np.ndarray
    estimate: AggregateEstimate
    dp: DPAggregate | None = None
