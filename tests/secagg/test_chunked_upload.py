"""Streamed masked uploads: in order, whole elements, digest-checked, and an abandoned
upload leaves no trace in the running sum."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from fedveil.errors import ConfigError, InvalidMessageError, ProtocolError, StageError
from fedveil.secagg.protocol.messages import MaskedInput
from fedveil.secagg.protocol.stages import Stage
from fedveil.secagg.protocol.upload import aligned_chunk_bytes
from tests.helpers.harness import LiveRound


def masked_payloads(live: LiveRound) -> dict[str, bytes]:
    live.run_to(Stage.MASKED_INPUT)
    out = {}
    for cid in sorted(live.server.expected_senders()):
        reply = live.clients[cid].handle(live.server.request_for(cid))
        assert isinstance(reply, MaskedInput)
        out[cid] = reply.payload
    return out


def stream(live: LiveRound, cid: str, payload: bytes) -> list[bytes]:
    size = live.server.uploads.chunk_bytes
    chunks = [payload[i : i + size] for i in range(0, len(payload), size)]
    live.server.begin_masked_input(cid, len(payload))
    for index, chunk in enumerate(chunks):
        live.server.add_masked_chunk(cid, index, chunk)
    return chunks


def finish_round(live: LiveRound) -> None:
    live.server.advance()
    while live.server.stage is not Stage.DONE:
        live.step()


def small_chunk_round() -> LiveRound:
    # small chunks, so every upload spans several
    return LiveRound.start(n=4, chunk_bytes=aligned_chunk_bytes(24, 240), dimension=1000, bits=24)


def exact(live: LiveRound) -> None:
    est = live.server.result.estimate
    total = sum(live.weights.values())
    truth = (
        sum(
            live.weights[c] * np.clip(live.inputs[c], -1, 1).astype(np.float64)
            for c in live.config.roster
        )
        / total
    )
    assert np.max(np.abs(est.weighted_mean - truth)) <= est.error_bound


def test_streamed_uploads_sum_exactly() -> None:
    live = small_chunk_round()
    payloads = masked_payloads(live)
    for cid, payload in payloads.items():
        chunks = stream(live, cid, payload)
        assert len(chunks) > 5
        live.server.finish_masked_input(cid, hashlib.sha256(payload).digest())
    finish_round(live)
    exact(live)


def test_bad_chunks_are_refused_and_an_aborted_upload_leaves_no_trace() -> None:
    live = small_chunk_round()
    payloads = masked_payloads(live)
    size = live.server.uploads.chunk_bytes
    victim, payload = next(iter(payloads.items()))
    with pytest.raises(InvalidMessageError, match="announces"):
        live.server.begin_masked_input(victim, len(payload) - 1)
    live.server.begin_masked_input(victim, len(payload))
    with pytest.raises(InvalidMessageError, match="out of order"):
        live.server.add_masked_chunk(victim, 1, payload[size : 2 * size])
    with pytest.raises(InvalidMessageError, match="expected"):
        live.server.add_masked_chunk(victim, 0, payload[: size - 3])
    live.server.add_masked_chunk(victim, 0, payload[:size])
    live.server.add_masked_chunk(victim, 1, payload[size : 2 * size])
    with pytest.raises(InvalidMessageError, match="ended after"):
        live.server.finish_masked_input(victim, hashlib.sha256(payload).digest())
    with pytest.raises(StageError, match="unfinished"):
        live.server.advance()
    assert live.server.stage is Stage.MASKED_INPUT
    # the connection broke: resume where the server stands, then send a wrong digest
    assert live.server.uploads.progress(victim).next_index == 2
    chunks = [payload[i : i + size] for i in range(0, len(payload), size)]
    for index in range(2, len(chunks)):
        live.server.add_masked_chunk(victim, index, chunks[index])
    with pytest.raises(InvalidMessageError, match="digest mismatch"):
        live.server.finish_masked_input(victim, bytes(32))
    live.server.abort_masked_input(victim, chunks)
    for cid, other in payloads.items():
        if cid != victim:
            stream(live, cid, other)
            live.server.finish_masked_input(cid, hashlib.sha256(other).digest())
    with pytest.raises(ProtocolError):
        live.server.add_masked_chunk(victim, 0, chunks[0])
    finish_round(live)
    assert victim not in live.server.result.survivors
    est = live.server.result.estimate
    alive = live.server.result.survivors
    total = sum(live.weights[c] for c in alive)
    truth = (
        sum(live.weights[c] * np.clip(live.inputs[c], -1, 1).astype(np.float64) for c in alive)
        / total
    )
    assert np.max(np.abs(est.weighted_mean - truth)) <= est.error_bound


def test_duplicate_upload_after_finish_is_refused() -> None:
    live = small_chunk_round()
    payloads = masked_payloads(live)
    cid, payload = next(iter(payloads.items()))
    stream(live, cid, payload)
    live.server.finish_masked_input(cid, hashlib.sha256(payload).digest())
    with pytest.raises(ProtocolError, match="already sent"):
        live.server.begin_masked_input(cid, len(payload))


def test_chunk_size_must_hold_whole_elements() -> None:
    with pytest.raises(ConfigError, match="multiple of bits"):
        LiveRound.start(n=3, chunk_bytes=100, bits=24)
