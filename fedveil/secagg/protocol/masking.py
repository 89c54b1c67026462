"""Seeds and signs of the masks, shared by client and server so they always agree.

A client's upload is y_u = x_u + PRG(b_u) + sum over mask peers v of s(u,v) * PRG(s_uv)
with s(u,v) = +1 if u < v else -1, so pairwise masks cancel in the sum over survivors and
the server removes the self masks of survivors and the pairwise masks of dropouts.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedveil.secagg.crypto.encoding import encode_fields
from fedveil.secagg.crypto.envelope import agree
from fedveil.secagg.crypto.kdf import Purpose, derive_key


def self_mask_seed(self_mask_secret: bytes, session_id: bytes, owner: str) -> bytes:
    """The AES key of a client's self mask, bound to the session and the owner."""
    return derive_key(self_mask_secret, Purpose.SELF_MASK, session_id, owner)


COMMITMENT_BYTES = 32
_COMMITMENT_TAG = b"fedveil-self-mask-commitment-v1"


def self_mask_commitment(self_mask_secret: bytes, session_id: bytes, owner: str) -> bytes:
    """SHA-256 commitment to a client's 256-bit self-mask secret, published signed.

    The secret is uniformly random, so the hash reveals nothing about it; it lets the server
    verify a rebuilt secret and discard wrong shares instead of corrupting the sum.
    """
    return hashlib.sha256(
        encode_fields(_COMMITMENT_TAG, session_id, owner, self_mask_secret)
    ).digest()


def pairwise_mask_seed(
    own_key: X25519PrivateKey, own_id: str, peer_public: bytes, peer_id: str, session_id: bytes
) -> bytes:
    """The AES key of the mask two clients share, identical from either side."""
    low, high = sorted((own_id, peer_id))
    return derive_key(agree(own_key, peer_public), Purpose.PAIRWISE_MASK, session_id, low, high)


def client_subtracts(own_id: str, peer_id: str) -> bool:
    """Whether `own_id` subtracts (rather than adds) the mask it shares with `peer_id`."""
    return own_id > peer_id
