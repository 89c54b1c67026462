"""Streamed masked uploads: in order, whole elements, checksum-checked, and an abandoned
upload leaves no trace in the running sum."""

from __future__ import annotations

import numpy as np
import pytest

from fedveil.errors import ConfigError, InvalidMessageError, ProtocolError, StageError
from fedveil.secagg.protocol.messages import MaskedInput
from fedveil.secagg.protocol.stages import Stage
from fedveil.secagg.protocol.upload import aligned_chunk_bytes
from fedveil.secagg.protocol.upload_checksum import upload_checksum
from fedveil.secagg.quantize import QuantizedUpdate, pack, quantize, unpack
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


def checksum(live: LiveRound, cid: str, payload: bytes) -> bytes:
    """What `cid`'s client sends on its last chunk."""
    return upload_checksum(live.config.session_id, cid, payload)


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
        live.server.finish_masked_input(cid, checksum(live, cid, payload))
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
        live.server.finish_masked_input(victim, checksum(live, victim, payload))
    with pytest.raises(StageError, match="unfinished"):
        live.server.advance()
    assert live.server.stage is Stage.MASKED_INPUT
    # the connection broke: resume where the server stands, then send a wrong digest
    assert live.server.uploads.progress(victim).next_index == 2
    chunks = [payload[i : i + size] for i in range(0, len(payload), size)]
    for index in range(2, len(chunks)):
        live.server.add_masked_chunk(victim, index, chunks[index])
    with pytest.raises(InvalidMessageError, match="digest mismatch"):
        live.server.finish_masked_input(victim, bytes(16))
    live.server.abort_masked_input(victim, chunks)
    for cid, other in payloads.items():
        if cid != victim:
            stream(live, cid, other)
            live.server.finish_masked_input(cid, checksum(live, cid, other))
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


def re_encoded(live: LiveRound, cid: str, payload: bytes, first: QuantizedUpdate) -> bytes:
    """What `cid` uploads after encoding the same update again: the same masks over a fresh
    stochastic rounding (a client that crashed half-way and re-quantised on restart)."""
    quantization = live.config.quantization
    second = quantize(live.inputs[cid], live.weights[cid], quantization)
    assert not np.array_equal(second.values, first.values)  # fresh CSPRNG rounding
    bits, count = quantization.bits, first.values.shape[0]
    masked = unpack(payload, bits, count).astype(np.uint64)
    moved = masked - first.values.astype(np.uint64) + second.values.astype(np.uint64)
    return pack(moved % np.uint64(1 << bits), bits)


def half_then_resume(live: LiveRound, same_encoding: bool) -> tuple[str, bytes, list[bytes]]:
    """The victim streams half its upload, breaks off, and resumes at the server's
    next_index from the same encoding or from a second one. Returns the victim, the
    payload its resumed stream belongs to, and the chunks the server added."""
    live.run_to(Stage.MASKED_INPUT)
    victim = sorted(live.server.expected_senders())[0]
    client = live.clients[victim]
    first = client.set_input(live.inputs[victim], live.weights[victim])
    reply = client.handle(live.server.request_for(victim))
    assert isinstance(reply, MaskedInput)
    payload = reply.payload
    second = payload if same_encoding else re_encoded(live, victim, payload, first)
    size = live.server.uploads.chunk_bytes
    before = [payload[i : i + size] for i in range(0, len(payload), size)]
    after = [second[i : i + size] for i in range(0, len(second), size)]
    half = len(before) // 2
    live.server.begin_masked_input(victim, len(payload))
    for index in range(half):
        live.server.add_masked_chunk(victim, index, before[index])
    progress = live.server.uploads.progress(victim)
    assert progress is not None and progress.next_index == half
    live.server.begin_masked_input(victim, len(second))  # the resumed stream
    for index in range(half, len(after)):
        live.server.add_masked_chunk(victim, index, after[index])
    return victim, second, before[:half] + after[half:]


def others_upload(live: LiveRound, skip: str) -> None:
    for cid in sorted(live.server.expected_senders() - {skip}):
        reply = live.clients[cid].handle(live.server.request_for(cid))
        assert isinstance(reply, MaskedInput)
        stream(live, cid, reply.payload)
        live.server.finish_masked_input(cid, checksum(live, cid, reply.payload))


def test_a_resume_from_another_encoding_is_refused_and_the_others_sum_exactly() -> None:
    """Attack first: the two halves pass every order, size and padding check; only the
    checksum sees that they were never one payload. Refused, rolled back, and the round
    ends exact over the others."""
    live = small_chunk_round()
    victim, second, added = half_then_resume(live, same_encoding=False)
    assert b"".join(added) != second
    with pytest.raises(InvalidMessageError, match="digest mismatch"):
        live.server.finish_masked_input(victim, checksum(live, victim, second))
    live.server.abort_masked_input(victim, added)  # as server.uploads does on the refusal
    others_upload(live, victim)
    finish_round(live)
    result = live.server.result
    assert result is not None and victim not in result.survivors
    est, alive = result.estimate, result.survivors
    total = sum(live.weights[c] for c in alive)
    truth = (
        sum(live.weights[c] * np.clip(live.inputs[c], -1, 1).astype(np.float64) for c in alive)
        / total
    )
    assert np.max(np.abs(est.weighted_mean - truth)) <= est.error_bound


def test_without_the_checksum_the_mixed_upload_would_be_summed() -> None:
    """The other direction: closed with a checksum of the bytes the server assembled, the
    mixed upload is accepted, so nothing but the checksum keeps it out of the sum."""
    live = small_chunk_round()
    victim, _, added = half_then_resume(live, same_encoding=False)
    live.server.finish_masked_input(victim, checksum(live, victim, b"".join(added)))
    assert victim in live.server.uploaded


def test_a_resume_from_the_same_encoding_is_accepted_and_exact() -> None:
    live = small_chunk_round()
    victim, payload, added = half_then_resume(live, same_encoding=True)
    assert b"".join(added) == payload
    live.server.finish_masked_input(victim, checksum(live, victim, payload))
    others_upload(live, victim)
    finish_round(live)
    result = live.server.result
    assert result is not None and victim in result.survivors
    exact(live)


def test_duplicate_upload_after_finish_is_refused() -> None:
    live = small_chunk_round()
    payloads = masked_payloads(live)
    cid, payload = next(iter(payloads.items()))
    stream(live, cid, payload)
    live.server.finish_masked_input(cid, checksum(live, cid, payload))
    with pytest.raises(ProtocolError, match="already sent"):
        live.server.begin_masked_input(cid, len(payload))


def test_chunk_size_must_hold_whole_elements() -> None:
    with pytest.raises(ConfigError, match="multiple of bits"):
        LiveRound.start(n=3, chunk_bytes=100, bits=24)
