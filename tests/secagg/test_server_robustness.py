"""One client's bad message gets a specific error and never harms the round for the others."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedveil.errors import (
    DuplicateSubmissionError,
    FedveilError,
    InconsistentSharesError,
    InvalidMessageError,
    InvalidSignatureError,
    ProtocolError,
    UnknownClientError,
)
from fedveil.secagg.protocol.messages import (
    ConsistencySignature,
    KeyAdvertisement,
    MaskedInput,
    RevealedShare,
    ShareKeysResponse,
    UnmaskResponse,
)
from fedveil.secagg.protocol.stages import Stage
from tests.helpers.harness import LiveRound

STATUS = {
    InvalidMessageError: "INVALID_ARGUMENT",
    DuplicateSubmissionError: "ALREADY_EXISTS",
    UnknownClientError: "PERMISSION_DENIED",
    InvalidSignatureError: "UNAUTHENTICATED",
    ProtocolError: "FAILED_PRECONDITION",
}


def finish_and_check(live: LiveRound) -> None:
    """Complete the round with everyone honest; the result must be exact."""
    while live.server.stage is not Stage.DONE:
        live.step()
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


def reply_of(live: LiveRound, cid: str) -> object:
    client = live.clients[cid]
    return (
        client.advertise()
        if live.server.stage is Stage.ADVERTISE_KEYS
        else client.handle(live.server.request_for(cid))
    )


def bad_messages(live: LiveRound, stage: Stage) -> list[tuple[object, type[FedveilError]]]:
    """Malformed variants of a genuine message of `stage`, each with the error it must get."""
    live.run_to(stage)
    genuine = reply_of(live, "client-1")
    out: list[tuple[object, type[FedveilError]]] = [
        (dataclasses.replace(genuine, client_id="mallory"), UnknownClientError)
    ]
    if isinstance(genuine, KeyAdvertisement):
        out += [
            (dataclasses.replace(genuine, masking_key=b"short"), InvalidMessageError),
            (dataclasses.replace(genuine, masking_key=genuine.encryption_key), InvalidMessageError),
            (dataclasses.replace(genuine, signature=bytes(64)), InvalidSignatureError),
        ]
    elif isinstance(genuine, ShareKeysResponse):
        out += [
            (dataclasses.replace(genuine, shares=genuine.shares[1:]), InvalidMessageError),
            (
                dataclasses.replace(genuine, shares=(*genuine.shares, genuine.shares[0])),
                InvalidMessageError,
            ),
            (
                dataclasses.replace(
                    genuine,
                    shares=(
                        dataclasses.replace(genuine.shares[0], ciphertext=bytes(5000)),
                        *genuine.shares[1:],
                    ),
                ),
                InvalidMessageError,
            ),
        ]
    elif isinstance(genuine, MaskedInput):
        out += [
            (dataclasses.replace(genuine, payload=genuine.payload[:-4]), InvalidMessageError),
            (dataclasses.replace(genuine, payload=genuine.payload + bytes(4)), InvalidMessageError),
        ]
    elif isinstance(genuine, ConsistencySignature):
        out += [(dataclasses.replace(genuine, signature=bytes(64)), InvalidSignatureError)]
    elif isinstance(genuine, UnmaskResponse):
        out += [
            (
                dataclasses.replace(genuine, self_mask_shares=genuine.self_mask_shares[1:]),
                InvalidMessageError,
            ),
            (
                dataclasses.replace(
                    genuine,
                    self_mask_shares=(
                        RevealedShare(genuine.self_mask_shares[0].owner, b"x"),
                        *genuine.self_mask_shares[1:],
                    ),
                ),
                InvalidMessageError,
            ),
        ]
    return [*out, (genuine, type(None))]  # the genuine one last


@pytest.mark.parametrize(
    "stage",
    [
        Stage.ADVERTISE_KEYS,
        Stage.SHARE_KEYS,
        Stage.MASKED_INPUT,
        Stage.CONSISTENCY_CHECK,
        Stage.UNMASK,
    ],
)
def test_bad_messages_are_refused_and_the_round_goes_on(stage: Stage) -> None:
    live = LiveRound.start(n=5)
    cases = bad_messages(live, stage)
    genuine = cases[-1][0]
    for message, error in cases[:-1]:
        with pytest.raises(error) as info:
            live.server.receive(message)
        assert str(info.value), "errors must say what was wrong"
        assert info.value.grpc_status == next(
            v for k, v in STATUS.items() if isinstance(info.value, k)
        )
        assert live.server.stage is stage
    live.server.receive(genuine)
    with pytest.raises(DuplicateSubmissionError, match="already sent"):
        live.server.receive(genuine)
    finish_and_check(live)


def test_upload_from_a_client_that_dropped_earlier_is_refused() -> None:
    live = LiveRound.start(n=5)
    live.step(skip=frozenset({"client-4"}))  # client-4 never advertises
    live.step()
    with pytest.raises(ProtocolError, match="dropped out"):
        live.server.receive(MaskedInput("client-4", b""))
    with pytest.raises(ProtocolError, match="dropped out"):
        live.server.request_for("client-4")


def test_one_corrupted_share_is_located_and_the_round_stays_exact() -> None:
    """A holder that reveals a wrong (well-formed) share cannot spoil the sum while more than
    t holders answered: the server finds the subset whose shares agree."""
    live = LiveRound.start(n=5).run_to(Stage.UNMASK)
    liar = "client-2"
    honest_reply = live.clients[liar].handle(live.server.request_for(liar))
    first = honest_reply.self_mask_shares[0]
    corrupted = RevealedShare(first.owner, bytes(len(first.share) - 1) + b"\x07")
    live.server.receive(
        dataclasses.replace(
            honest_reply, self_mask_shares=(corrupted, *honest_reply.self_mask_shares[1:])
        )
    )
    finish_and_check(live)


def test_a_wrong_share_among_exactly_t_fails_closed_instead_of_corrupting_the_sum() -> None:
    """With no redundancy the wrong share cannot be located, but the rebuilt seed fails the
    signed commitment, so the round fails rather than publishing a wrong aggregate."""
    live = LiveRound.start(n=5, neighbours=4, threshold=3).run_to(Stage.UNMASK)
    responders = sorted(live.server.expected_senders())[:3]
    for holder in responders:
        reply = live.clients[holder].handle(live.server.request_for(holder))
        if holder == responders[0]:
            first = reply.self_mask_shares[0]
            bumped = bytearray(first.share)
            bumped[3] ^= 1  # one low limb bit: passes the limb range check
            reply = dataclasses.replace(
                reply,
                self_mask_shares=(
                    RevealedShare(first.owner, bytes(bumped)),
                    *reply.self_mask_shares[1:],
                ),
            )
        live.server.receive(reply)
    with pytest.raises(InconsistentSharesError, match="inconsistent"):
        live.server.advance()
    assert live.server.stage is Stage.FAILED
    assert live.server.result is None
