"""Each active attack by the server is refused by the clients with its own error."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedveil.errors import (
    CohortTooSmallError,
    ConflictingShareRequestError,
    DecryptionError,
    InvalidMessageError,
    InvalidSignatureError,
    KeySubstitutionError,
    SessionMismatchError,
    SurvivorQuorumError,
    SurvivorSetMismatchError,
    ThresholdNotMetError,
)
from fedveil.runners.simulation import Federation
from fedveil.secagg.crypto.identity import SigningIdentity, advertisement_message
from fedveil.secagg.protocol.client import ClientSession, raw_public
from fedveil.secagg.protocol.config import ClientPolicy
from fedveil.secagg.protocol.masking import pairwise_mask_seed
from fedveil.secagg.protocol.messages import (
    ConsistencyRequest,
    ConsistencySignature,
    EncryptedShare,
    MaskedInputRequest,
    ShareKeysRequest,
)
from fedveil.secagg.protocol.stages import Stage
from tests.helpers.harness import LiveRound, make_round_config

VICTIM = "client-0"


def substituted(
    request: ShareKeysRequest, resign_with: SigningIdentity | None, session: bytes
) -> ShareKeysRequest:
    """The server swaps a neighbour's encryption key for one it holds."""
    target = request.advertisements[0]
    server_key = raw_public(X25519PrivateKey.generate())
    signature = target.signature
    if resign_with is not None:
        signature = resign_with.sign(
            advertisement_message(
                session,
                target.client_id,
                server_key,
                target.masking_key,
                target.self_mask_commitment,
            )
        )
    forged = dataclasses.replace(target, encryption_key=server_key, signature=signature)
    return ShareKeysRequest((forged, *request.advertisements[1:]))


@pytest.mark.parametrize("resign", [False, True], ids=["unsigned", "signed-by-server"])
def test_substituted_key_is_refused(resign: bool) -> None:
    live = LiveRound.start(n=5).run_to(Stage.SHARE_KEYS)
    request = live.server.request_for(VICTIM)
    forged = substituted(
        request, SigningIdentity.generate() if resign else None, live.config.session_id
    )
    client = live.clients[VICTIM]
    with pytest.raises(KeySubstitutionError, match="not signed by its enrolled identity"):
        client.handle(forged)
    assert client.stage is Stage.FAILED


def test_honest_share_keys_request_is_accepted() -> None:
    live = LiveRound.start(n=5).run_to(Stage.SHARE_KEYS)
    reply = live.clients[VICTIM].handle(live.server.request_for(VICTIM))
    assert len(reply.shares) == len(live.clients[VICTIM].neighbours)


def test_server_rejects_forged_advertisement() -> None:
    live = LiveRound.start(n=4)
    advert = live.clients[VICTIM].advertise()
    forged = dataclasses.replace(advert, masking_key=raw_public(X25519PrivateKey.generate()))
    with pytest.raises(InvalidSignatureError):
        live.server.receive(forged)
    live.server.receive(advert)  # the genuine one still goes through


def test_both_shares_of_one_peer_are_never_revealed() -> None:
    live = LiveRound.start(n=5).run_to(Stage.UNMASK)
    request = live.server.request_for(VICTIM)
    greedy = dataclasses.replace(request, dropped=(*request.dropped, request.survivors[1]))
    client = live.clients[VICTIM]
    with pytest.raises(
        ConflictingShareRequestError, match="both the self-mask share and the key share"
    ):
        client.handle(greedy)
    assert client.stage is Stage.FAILED


def test_moving_a_survivor_to_the_dropped_list_is_refused() -> None:
    """A fake dropout: the server signs-in a survivor, then asks for its key share."""
    live = LiveRound.start(n=5).run_to(Stage.UNMASK)
    request = live.server.request_for(VICTIM)
    victim_peer = request.survivors[1]
    shrunk = tuple(c for c in request.survivors if c != victim_peer)
    fake = dataclasses.replace(request, survivors=shrunk, dropped=(victim_peer,))
    with pytest.raises(SurvivorSetMismatchError):
        live.clients[VICTIM].handle(fake)


def test_reveal_ledger_refuses_the_other_kind() -> None:
    live = LiveRound.start(n=4).run_to(Stage.UNMASK)
    client = live.clients[VICTIM]
    client._record_reveal("client-1", "self-mask")
    with pytest.raises(ConflictingShareRequestError):
        client._record_reveal("client-1", "masking-key")


def test_roster_below_minimum_cohort_is_refused() -> None:
    federation = Federation.enrol(3)
    config = make_round_config(federation)
    cid = federation.ids[0]
    with pytest.raises(CohortTooSmallError, match="minimum cohort"):
        ClientSession(
            config, cid, federation.identities[cid], federation.roster, ClientPolicy(min_cohort=4)
        )


def test_threshold_below_client_minimum_is_refused() -> None:
    federation = Federation.enrol(5)
    config = make_round_config(federation, neighbours=2, threshold=2)
    cid = federation.ids[0]
    with pytest.raises(CohortTooSmallError, match="minimum threshold"):
        ClientSession(
            config,
            cid,
            federation.identities[cid],
            federation.roster,
            ClientPolicy(min_threshold=3),
        )


def test_survivor_set_below_minimum_cohort_is_refused() -> None:
    live = LiveRound.start(n=6, policy=ClientPolicy(min_cohort=5, min_threshold=2))
    live.run_to(Stage.CONSISTENCY_CHECK)
    small = ConsistencyRequest(tuple(sorted(live.server.survivors))[:4])
    if VICTIM not in small.survivors:
        small = ConsistencyRequest((VICTIM, *small.survivors[:3]))
    with pytest.raises(CohortTooSmallError, match="below this client's floor"):
        live.clients[VICTIM].handle(small)


def test_survivor_set_isolating_a_client_is_refused() -> None:
    """If all of a client's mask peers were declared gone, its self-mask would expose it."""
    live = LiveRound.start(n=8, neighbours=2, threshold=2).run_to(Stage.CONSISTENCY_CHECK)
    client = live.clients[VICTIM]
    others = [c for c in live.config.roster if c != VICTIM and c not in client.neighbours]
    with pytest.raises(
        CohortTooSmallError, match="of the neighbours this client masked with survive"
    ):
        client.handle(ConsistencyRequest((VICTIM, *others)))


def test_survivor_signatures_must_verify() -> None:
    live = LiveRound.start(n=5).run_to(Stage.UNMASK)
    request = live.server.request_for(VICTIM)
    bad = list(request.signatures)
    bad[1] = ConsistencySignature(bad[1].client_id, bytes(64))
    with pytest.raises(InvalidSignatureError):
        live.clients[VICTIM].handle(dataclasses.replace(request, signatures=tuple(bad)))


def test_too_few_survivor_signatures_are_refused() -> None:
    """t signatures are not enough: the set needs more than half the roster's."""
    live = LiveRound.start(n=9, neighbours=4).run_to(Stage.UNMASK)
    request = live.server.request_for(VICTIM)
    assert live.config.threshold < 5
    few = request.signatures[:4]  # t of them, but not > 9 / 2
    with pytest.raises(SurvivorQuorumError, match="5 are required"):
        live.clients[VICTIM].handle(dataclasses.replace(request, signatures=few))


def test_tampered_relay_fails_to_open() -> None:
    live = LiveRound.start(n=4).run_to(Stage.MASKED_INPUT)
    request = live.server.request_for(VICTIM)
    first = request.shares[0]
    flipped = bytes([first.ciphertext[0] ^ 1]) + first.ciphertext[1:]
    tampered = MaskedInputRequest(
        (dataclasses.replace(first, ciphertext=flipped), *request.shares[1:])
    )
    with pytest.raises(DecryptionError):
        live.clients[VICTIM].handle(tampered)


def test_share_relayed_under_another_sender_fails_to_open() -> None:
    live = LiveRound.start(n=4).run_to(Stage.MASKED_INPUT)
    a, b = live.server.request_for(VICTIM).shares[:2]
    swapped = MaskedInputRequest((EncryptedShare(a.sender, a.recipient, b.ciphertext), b))
    with pytest.raises(DecryptionError):
        live.clients[VICTIM].handle(swapped)


def test_share_for_someone_else_is_refused() -> None:
    live = LiveRound.start(n=4).run_to(Stage.MASKED_INPUT)
    other = live.server.request_for("client-1").shares[0]
    with pytest.raises(InvalidMessageError, match="relayed to"):
        live.clients[VICTIM].handle(MaskedInputRequest((other,)))


def test_withholding_shares_below_threshold_is_refused() -> None:
    live = LiveRound.start(n=5).run_to(Stage.MASKED_INPUT)
    with pytest.raises(ThresholdNotMetError):
        live.clients[VICTIM].handle(MaskedInputRequest(()))


def test_model_hash_mismatch_is_refused_at_join() -> None:
    federation = Federation.enrol(4)
    config = make_round_config(federation)
    cid = federation.ids[0]
    with pytest.raises(SessionMismatchError, match="model inconsistency"):
        ClientSession(
            config,
            cid,
            federation.identities[cid],
            federation.roster,
            expected_model_hash=hashlib.sha256(b"another model").digest(),
        )


def test_divergent_sessions_fail_closed() -> None:
    """The server shows client-0 a different global model: nobody accepts its keys, and
    even the masks it would derive differ, so a forced sum would not cancel."""
    federation = Federation.enrol(4)
    honest = make_round_config(federation)
    divergent = make_round_config(federation, model_hash=hashlib.sha256(b"poisoned").digest())
    assert honest.session_id != divergent.session_id
    roster = federation.roster
    policy = ClientPolicy(min_cohort=2, min_threshold=2)
    odd = ClientSession(divergent, VICTIM, federation.identities[VICTIM], roster, policy)
    others = {
        c: ClientSession(honest, c, federation.identities[c], roster, policy)
        for c in federation.ids
        if c != VICTIM
    }
    odd_advert = odd.advertise()
    adverts = {c: s.advertise() for c, s in others.items()}
    with pytest.raises(KeySubstitutionError):
        others["client-1"].handle(
            ShareKeysRequest((odd_advert, adverts["client-2"], adverts["client-3"]))
        )
    with pytest.raises(KeySubstitutionError):
        odd.handle(ShareKeysRequest(tuple(adverts.values())))
    key_a, key_b = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    seed_honest = pairwise_mask_seed(
        key_a, "client-0", raw_public(key_b), "client-1", honest.session_id
    )
    seed_divergent = pairwise_mask_seed(
        key_b, "client-1", raw_public(key_a), "client-0", divergent.session_id
    )
    assert seed_honest != seed_divergent


def test_unmask_request_with_unsigned_survivor_set_change_is_refused() -> None:
    live = LiveRound.start(n=5).run_to(Stage.UNMASK)
    request = live.server.request_for(VICTIM)
    extended = dataclasses.replace(request, survivors=(*request.survivors, "client-9"))
    with pytest.raises(SurvivorSetMismatchError):
        live.clients[VICTIM].handle(extended)


def test_honest_round_still_exact_after_refusals_elsewhere() -> None:
    live = LiveRound.start(n=5).run_to(Stage.DONE)
    est = live.server.result.estimate
    total = sum(live.weights.values())
    exact = (
        sum(
            live.weights[c] * np.clip(live.inputs[c], -1, 1).astype(np.float64)
            for c in live.config.roster
        )
        / total
    )
    assert est.total_weight == total
    assert np.max(np.abs(est.weighted_mean - exact)) <= est.error_bound
