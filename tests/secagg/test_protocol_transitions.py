"""Every illegal stage transition raises, for the transition table, the client and the server."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fedveil.errors import InvalidMessageError, ProtocolError, StageError, ThresholdNotMetError
from fedveil.secagg.protocol.messages import (
    ConsistencyRequest,
    ConsistencySignature,
    KeyAdvertisement,
    MaskedInput,
    MaskedInputRequest,
    ShareKeysRequest,
    ShareKeysResponse,
    UnmaskRequest,
    UnmaskResponse,
)
from fedveil.secagg.protocol.stages import ORDER, TRANSITIONS, Stage, check_transition
from tests.helpers.harness import LiveRound

CLIENT_MESSAGES = {
    Stage.SHARE_KEYS: ShareKeysRequest(()),
    Stage.MASKED_INPUT: MaskedInputRequest(()),
    Stage.CONSISTENCY_CHECK: ConsistencyRequest(()),
    Stage.UNMASK: UnmaskRequest((), (), ()),
}
SERVER_MESSAGES = {
    Stage.ADVERTISE_KEYS: KeyAdvertisement("client-0", bytes(32), bytes(32), bytes(32), bytes(64)),
    Stage.SHARE_KEYS: ShareKeysResponse("client-0", ()),
    Stage.MASKED_INPUT: MaskedInput("client-0", b""),
    Stage.CONSISTENCY_CHECK: ConsistencySignature("client-0", bytes(64)),
    Stage.UNMASK: UnmaskResponse("client-0", (), ()),
}
ROUND_STAGES = ORDER[:-1]


@pytest.mark.parametrize(("current", "target"), list(itertools.product(Stage, Stage)))
def test_transition_table(current: Stage, target: Stage) -> None:
    if target in TRANSITIONS[current]:
        check_transition(current, target)
    else:
        with pytest.raises(StageError, match="illegal stage transition"):
            check_transition(current, target)


def test_table_is_the_protocol_order() -> None:
    for current, following in itertools.pairwise(ORDER):
        assert TRANSITIONS[current] == {following, Stage.FAILED}
    assert TRANSITIONS[Stage.DONE] == TRANSITIONS[Stage.FAILED] == frozenset()


def client_at(stage: Stage) -> tuple[LiveRound, str]:
    """A live round whose client-0 is in `stage` (as seen by the client)."""
    live = LiveRound.start(n=4)
    order = list(ORDER)
    while True:
        client = live.clients["client-0"]
        if client.stage is stage:
            return live, "client-0"
        assert order.index(client.stage) < order.index(stage)
        live.step()


@pytest.mark.parametrize(
    ("stage", "message_stage"),
    [(s, m) for s in (*ROUND_STAGES, Stage.DONE) for m in CLIENT_MESSAGES if s is not m],
)
def test_client_rejects_messages_of_other_stages(stage: Stage, message_stage: Stage) -> None:
    live, cid = client_at(stage)
    client = live.clients[cid]
    with pytest.raises(StageError):
        client.handle(CLIENT_MESSAGES[message_stage])
    assert client.stage is (Stage.DONE if stage is Stage.DONE else Stage.FAILED)


@pytest.mark.parametrize("stage", [s for s in ROUND_STAGES if s is not Stage.ADVERTISE_KEYS])
def test_client_advertises_only_once(stage: Stage) -> None:
    live, cid = client_at(stage)
    with pytest.raises(StageError):
        live.clients[cid].advertise()


def test_failed_client_answers_nothing() -> None:
    live, cid = client_at(Stage.MASKED_INPUT)
    client = live.clients[cid]
    with pytest.raises(StageError):
        client.handle(ConsistencyRequest(()))
    assert client.stage is Stage.FAILED
    with pytest.raises(StageError):
        client.handle(live.server.request_for(cid))


def test_client_rejects_unknown_message_type() -> None:
    live = LiveRound.start(n=3)
    with pytest.raises(InvalidMessageError):
        live.clients["client-0"].handle("not a message")


def test_masking_without_input_is_refused() -> None:
    live = LiveRound.start(n=3)
    live.clients["client-0"]._input = None  # as if set_input was never called
    live.run_to(Stage.MASKED_INPUT)
    with pytest.raises(ProtocolError, match="set_input"):
        live.clients["client-0"].handle(live.server.request_for("client-0"))


def test_input_cannot_be_set_after_masking() -> None:
    live = LiveRound.start(n=3).run_to(Stage.CONSISTENCY_CHECK)
    with pytest.raises(ProtocolError):
        live.clients["client-1"].set_input(np.zeros(live.config.dimension), 1)


@pytest.mark.parametrize(
    ("stage", "message_stage"),
    [(s, m) for s in ROUND_STAGES for m in SERVER_MESSAGES if s is not m],
)
def test_server_rejects_messages_of_other_stages(stage: Stage, message_stage: Stage) -> None:
    live = LiveRound.start(n=4).run_to(stage)
    with pytest.raises(StageError):
        live.server.receive(SERVER_MESSAGES[message_stage])
    assert live.server.stage is stage  # a misplaced message never harms the round
    while live.server.stage is not Stage.DONE:
        live.step()
    assert live.server.result is not None


@pytest.mark.parametrize("final", [Stage.DONE, Stage.FAILED])
def test_finished_round_accepts_nothing(final: Stage) -> None:
    live = LiveRound.start(n=4)
    if final is Stage.DONE:
        live.run_to(Stage.DONE)
    else:
        with pytest.raises(ThresholdNotMetError):
            live.step(skip=frozenset(live.config.roster))  # nobody advertises
    assert live.server.stage is final
    for message in SERVER_MESSAGES.values():
        with pytest.raises(StageError):
            live.server.receive(message)
    with pytest.raises(StageError):
        live.server.advance()
    with pytest.raises(StageError):
        live.server.request_for("client-0")


def test_no_request_before_keys_are_advertised() -> None:
    live = LiveRound.start(n=3)
    with pytest.raises(StageError):
        live.server.request_for("client-0")
