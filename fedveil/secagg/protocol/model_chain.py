"""Per-round model binding: every party derives the round's model hash from its own model.

Why: the model hash is part of every round's session id (secagg.protocol.config), which
every signature, envelope and mask seed is derived from. If each client puts in the hash
of the model *it* holds, rather than one the server announces, then a server that hands
different parties different models (model inconsistency, Pasquini et al., CCS 2022) gets
signatures that do not verify and masks that do not cancel: the round fails closed.

What a party holds at the start of round r is the base model plus the global adapter it
built by applying, in order, the results of the rounds before r. So the round's model
hash is chained:

    model_hash(first round)  = H(tag, base_model_hash, "")
    model_hash(next round)   = H(tag, base_model_hash, result_digest(previous result))

and `result_digest` covers the result exactly as the party received it (round id, mode,
survivors, total weight, error bound and the SHA-256 of the result's wire bytes: the
float64 mean of a SecAgg or plaintext round, the summed ciphertexts of a CKKS round). A
server that returns different aggregates to different clients in round r therefore gives
them different model hashes in round r + 1, hence different session ids: the split is
caught there, before any share is revealed (item "one result for everyone" of issue 14).

The server keeps the same chain from the results it published. A round that fails has no
result and does not advance anyone's chain. A client that missed a round which did
produce a result (it dropped out, or was not a survivor, or its download failed) holds a
stale chain: it refuses the next round with a SessionMismatchError that says so, and can
take part again only once it has the missed result (and applied it): resume with
`ModelChain(base, result_digest=<that result's digest>, round_id=<its round>)`.

Nothing here is secret; the module is pure (no I/O, no gRPC).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from fedveil.errors import ConfigError, SessionMismatchError
from fedveil.secagg.crypto.encoding import encode_fields
from fedveil.secagg.modes import AggregationMode, parse_mode

MODEL_HASH_BYTES = 32
DIGEST_BYTES = 32
_CHAIN_TAG = b"fedveil-model-chain-v1"
_RESULT_TAG = b"fedveil-round-result-v1"
RESULT_DTYPE = np.dtype("<f8")


def _hash32(value: object, name: str) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != MODEL_HASH_BYTES:
        size = len(value) if isinstance(value, bytes | bytearray) else type(value).__name__
        raise ConfigError(f"{name} must be {MODEL_HASH_BYTES} bytes (SHA-256), got {size}")
    return bytes(value)


def round_model_hash(base_model_hash: bytes, previous_result_digest: bytes | None) -> bytes:
    """The model hash of a round: the base model and the last result applied to it."""
    base = _hash32(base_model_hash, "base_model_hash")
    previous = (
        b""
        if previous_result_digest is None
        else _hash32(previous_result_digest, "previous_result_digest")
    )
    return hashlib.sha256(encode_fields(_CHAIN_TAG, base, previous)).digest()


def payload_digest(pieces: Iterable[bytes | bytearray | memoryview]) -> bytes:
    """SHA-256 of a result's wire bytes (the concatenation of its download chunks)."""
    hasher = hashlib.sha256()
    for piece in pieces:
        hasher.update(piece)
    return hasher.digest()


def mean_payload_digest(mean: np.ndarray) -> bytes:
    """SHA-256 of a float64 mean as the server streams it (little-endian float64)."""
    return hashlib.sha256(np.ascontiguousarray(mean, dtype=RESULT_DTYPE).tobytes()).digest()


def result_digest(
    *,
    round_id: int,
    mode: AggregationMode | str,
    survivors: Iterable[str],
    total_weight: int,
    error_bound: float,
    payload_sha256: bytes,
) -> bytes:
    """The digest of one round's published result, as every survivor must have received it.

    `total_weight` and `error_bound` are the header's values (0 in CKKS rounds, where the
    weight is encrypted inside the ciphertexts the payload digest covers). The privacy
    report is left out: its figures are derived from the round's DP terms, which the
    session id already binds.
    """
    name = parse_mode(mode).value  # the bytes hashed are the mode's spelling
    if len(payload_sha256) != DIGEST_BYTES:
        raise ConfigError(f"payload_sha256 must be {DIGEST_BYTES} bytes")
    ids = sorted(survivors)
    return hashlib.sha256(
        encode_fields(
            _RESULT_TAG,
            int(round_id),
            name,
            int(total_weight),
            np.float64(error_bound).tobytes(),
            bytes(payload_sha256),
            len(ids),
            *ids,
        )
    ).digest()


@dataclass
class ModelChain:
    """One party's chain: its base model hash and the last round result it applied.

    `round_id` is the round whose result `result_digest` is (None before the first).
    Clients keep one per server and advance it only after accepting a result; the server
    keeps one and advances it when it publishes a result.
    """

    base_model_hash: bytes
    result_digest: bytes | None = None
    round_id: int | None = None

    def __post_init__(self) -> None:
        self.base_model_hash = _hash32(self.base_model_hash, "base_model_hash")
        if self.result_digest is not None:
            self.result_digest = _hash32(self.result_digest, "result_digest")
        if self.round_id is not None and self.result_digest is None:
            raise ConfigError("a chain with a round_id needs that round's result_digest")

    @property
    def model_hash(self) -> bytes:
        """The model hash of the next round this party can take part in."""
        return round_model_hash(self.base_model_hash, self.result_digest)

    def advance(self, round_id: int, digest: bytes) -> None:
        """Apply a round's result: the next round's model hash chains it."""
        if self.round_id is not None and round_id <= self.round_id:
            raise ConfigError(
                f"round {round_id} is not after round {self.round_id}, the last one applied"
            )
        self.result_digest = _hash32(digest, "result digest")
        self.round_id = int(round_id)

    def check(self, round_id: int, announced: bytes) -> None:
        """Refuse a round whose model hash is not the one this party derives itself."""
        if self.round_id is not None and round_id <= self.round_id:
            raise SessionMismatchError(
                f"round {round_id} is not after round {self.round_id}, whose result this "
                "client already applied: refusing a replayed or reordered round"
            )
        mine = self.model_hash
        if bytes(announced) == mine:
            return
        if self.round_id is None:
            held = "the base model, with no round result applied yet"
        else:
            held = f"the base model plus the result of round {self.round_id}"
        stale = ""
        if self.round_id is None or round_id > self.round_id + 1:
            stale = (
                " If rounds ran that this client did not complete (it joined late, dropped "
                "out, or missed a download), its chain is stale: obtain the missed round's "
                "result, apply it, and resume with ModelChain(base, result_digest=..., "
                "round_id=...)."
            )
        raise SessionMismatchError(
            f"round {round_id} announces model hash {bytes(announced).hex()[:16]}..., but this "
            f"client holds {held} (model hash {mine.hex()[:16]}...): refusing before sending "
            "anything. Either the server shows parties different models or returned them "
            "different results (model inconsistency), or this client's chain is behind." + stale
        )
