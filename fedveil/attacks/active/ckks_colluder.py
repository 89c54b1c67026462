"""A server colluding with one enrolled client reads every CKKS upload.

Why this row exists: CKKS is judged on what the server decrypts, the mean, but the
secret key is not the server's alone to lack. The key holder generates the epoch's
secret context and seals it to *every* client that advertised (secagg.ckks.distribution),
so each enrolled client holds the key that opens every other client's ciphertext. The
server holds each client's individual ciphertext (it adds them); with any one client's
secret context it decrypts one upload alone: the victim's clipped update and its weight.

What stops it and what does not: the server alone holds only a public context and cannot
decrypt; an honest client refuses to decrypt a "result" that sums fewer than its minimum
cohort (so the server cannot pass one upload off as a round result to an honest client).
A colluding client simply skips that check. Nothing in the protocol detects the
collusion: the `ckks+colluder` row leaks like `none`.

`run_ckks_colluder` drives the real key hand-over and encryption (CkksClientSession,
CkksServerRound) and measures the recovery; `colluder_view` returns what the colluding
server sees of one client, for the audit's update attacks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fedveil.errors import ConfigError
from fedveil.secagg.ckks.client_session import CkksClientSession, EpochKeyStore
from fedveil.secagg.ckks.codec import decrypt_mean
from fedveil.secagg.ckks.config import CkksRoundConfig
from fedveil.secagg.ckks.keys import CkksKeyring
from fedveil.secagg.ckks.messages import CkksResult
from fedveil.secagg.ckks.server_round import CkksServerRound
from fedveil.secagg.crypto.identity import SigningIdentity
from fedveil.secagg.protocol.config import ClientPolicy

DEFAULT_PRESET = "add-only-8192"
DEFAULT_VALUE_BOUND = 100.0
"""Clients clip to this before encrypting; large enough that typical updates pass whole."""


@dataclass(frozen=True, eq=False)
class CkksRoundCapture:
    """What a CKKS round leaves with a server that kept every upload, plus one colluder.

    `uploads` maps each client to its individual ciphertext chunks (the server received
    them to add them); `colluder_keyring` is the colluding client's secret context.
    """

    config: CkksRoundConfig
    uploads: dict[str, list[bytes]]
    result: CkksResult
    colluder: str
    colluder_keyring: CkksKeyring
    public_keyring: CkksKeyring
    sessions: dict[str, CkksClientSession] = field(repr=False)


@dataclass(frozen=True, eq=False)
class ColluderResult:
    """The victim's update as the colluding server decrypts it, against the truth.

    `clipped_truth` is the victim's update after the client's own clip (what it encrypted).
    `sum_*` compare the honest-server view (the decrypted mean) with the same truth.
    """

    victim: str
    colluder: str
    colluder_holds_secret_key: bool
    server_holds_secret_key: bool
    recovered: np.ndarray
    recovered_weight: float
    clipped_truth: np.ndarray
    max_abs_error: float
    cosine: float
    sum_max_abs_error: float
    sum_cosine: float

    @property
    def recovered_exactly(self) -> bool:
        """Within CKKS precision (the tolerance scales with the update's size)."""
        scale = 1.0 + float(np.max(np.abs(self.clipped_truth), initial=0.0))
        return self.max_abs_error <= 1e-5 * scale


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def _client_ids(n: int) -> tuple[str, ...]:
    return tuple(f"client-{i}" for i in range(n))


def run_ckks_round(
    updates: Sequence[np.ndarray],
    weights: Sequence[int] | None = None,
    *,
    colluder: int = 1,
    value_bound: float = DEFAULT_VALUE_BOUND,
    preset_name: str = DEFAULT_PRESET,
) -> CkksRoundCapture:
    """One real CKKS round (key epoch hand-over, encryption, encrypted sum) with a server
    that keeps each client's ciphertexts and a colluding client `colluder` (its index)."""
    n = len(updates)
    if n < 2:
        raise ConfigError("a CKKS round needs at least 2 clients")
    if not 0 <= colluder < n:
        raise ConfigError(f"colluder index {colluder} is outside the cohort of {n}")
    ids = _client_ids(n)
    dimension = int(np.asarray(updates[0]).shape[0])
    chosen_weights = [1] * n if weights is None else [int(w) for w in weights]
    config = CkksRoundConfig(
        round_id=1,
        roster=ids,
        dimension=dimension,
        preset_name=preset_name,
        key_epoch=0,
        key_holder=ids[0],
        max_weight=max(chosen_weights),
        value_bound=value_bound,
        min_cohort=2,
        model_hash=hashlib.sha256(b"fedveil-ckks-colluder").digest(),
    )
    identities = {c: SigningIdentity.generate() for c in ids}
    roster = {c: i.verifying() for c, i in identities.items()}
    stores = {c: EpochKeyStore() for c in ids}
    policy = ClientPolicy(min_cohort=2, min_threshold=2)
    sessions = {
        c: CkksClientSession(config, c, identities[c], roster, stores[c], policy) for c in ids
    }
    server = CkksServerRound(config, roster)
    for session in sessions.values():
        server.receive_advertisement(session.advertise())
    server.advance()
    for cid, session in sessions.items():
        publication = session.handle_advertisements(server.advertisements_for(cid))
        if publication is not None:
            server.publish(publication)
    server.advance()
    for cid, session in sessions.items():
        if not session.is_key_holder:
            session.handle_delivery(server.delivery_for(cid))
    uploads: dict[str, list[bytes]] = {}
    for (cid, session), update, weight in zip(
        sessions.items(), updates, chosen_weights, strict=True
    ):
        chunks = session.encrypt(np.asarray(update, dtype=np.float64), weight)
        uploads[cid] = chunks  # the server receives these to add them: it keeps a copy
        server.begin_upload(cid, sum(len(c) for c in chunks), session.fingerprint)
        for index, chunk in enumerate(chunks):
            server.add_chunk(cid, index, chunk)
        server.finish_upload(cid, hashlib.sha256(b"".join(chunks)).digest())
    server.advance()
    if server.result is None or server.epoch is None:
        raise ConfigError(f"the CKKS round did not finish: {server.failure}")
    colluder_id = ids[colluder]
    keyring = stores[colluder_id].get(sessions[colluder_id].fingerprint)
    if keyring is None:
        raise ConfigError(f"{colluder_id} holds no secret context for the round's epoch")
    return CkksRoundCapture(
        config=config,
        uploads=uploads,
        result=server.result,
        colluder=colluder_id,
        colluder_keyring=keyring,
        public_keyring=CkksKeyring.from_bytes(server.epoch.public_context),
        sessions=sessions,
    )


def decrypt_one(capture: CkksRoundCapture, victim: str) -> tuple[np.ndarray, float]:
    """The colluding server's decryption of one client's upload: (update, weight)."""
    return decrypt_mean(
        capture.colluder_keyring,
        capture.uploads[victim],
        capture.config.dimension,
        max_weight=capture.config.max_weight,
        weight_scale=capture.config.weight_scale,
    )


def run_ckks_colluder(
    updates: Sequence[np.ndarray],
    weights: Sequence[int] | None = None,
    *,
    victim: int = 0,
    colluder: int = 1,
    value_bound: float = DEFAULT_VALUE_BOUND,
    preset_name: str = DEFAULT_PRESET,
) -> ColluderResult:
    """Run the round, decrypt the victim's upload with the colluder's key, and compare it
    (and the honest-server view, the mean) with the victim's clipped update."""
    if victim == colluder:
        raise ConfigError("the victim and the colluder must be different clients")
    capture = run_ckks_round(
        updates, weights, colluder=colluder, value_bound=value_bound, preset_name=preset_name
    )
    victim_id = _client_ids(len(updates))[victim]
    recovered, weight = decrypt_one(capture, victim_id)
    truth = np.clip(np.asarray(updates[victim], dtype=np.float64), -value_bound, value_bound)
    mean, _ = capture.sessions[capture.colluder].decrypt(capture.result)
    return ColluderResult(
        victim=victim_id,
        colluder=capture.colluder,
        colluder_holds_secret_key=capture.colluder_keyring.is_private,
        server_holds_secret_key=capture.public_keyring.is_private,
        recovered=recovered,
        recovered_weight=weight,
        clipped_truth=truth,
        max_abs_error=float(np.max(np.abs(recovered - truth))),
        cosine=_cosine(recovered, truth),
        sum_max_abs_error=float(np.max(np.abs(mean - truth))),
        sum_cosine=_cosine(mean, truth),
    )


def colluder_view(
    updates: Sequence[np.ndarray],
    weights: Sequence[int] | None = None,
    *,
    victim: int = 0,
    colluder: int | None = None,
    value_bound: float = DEFAULT_VALUE_BOUND,
    preset_name: str = DEFAULT_PRESET,
) -> np.ndarray:
    """What a server colluding with one client sees of `victim`: its decrypted update.

    The audit runs its update attacks on this vector (the `ckks+colluder` row). The
    colluder defaults to the next client after the victim.
    """
    chosen = (victim + 1) % len(updates) if colluder is None else colluder
    capture = run_ckks_round(
        updates, weights, colluder=chosen, value_bound=value_bound, preset_name=preset_name
    )
    recovered, _ = decrypt_one(capture, _client_ids(len(updates))[victim])
    return recovered
