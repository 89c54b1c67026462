"""The accumulator's sum is the exact ring sum of the uploads, for every ring width, over
chunks and add-and-checksum blocks that do not divide the payload evenly, whether the chunks
arrive as bytes (the gRPC stream) or as views of one payload (the in-process path)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from fedveil.errors import InvalidMessageError
from fedveil.secagg.protocol import upload
from fedveil.secagg.protocol.messages import MaskedInput
from fedveil.secagg.protocol.stages import Stage
from fedveil.secagg.protocol.upload import (
    NATIVE_WIRE_DTYPES,
    UploadAccumulator,
    aligned_chunk_bytes,
    payload_chunks,
)
from fedveil.secagg.protocol.upload_checksum import upload_checksum
from fedveil.secagg.quantize import Ring, pack, packed_size
from tests.helpers.harness import LiveRound

WIDTHS = (8, 16, 24, 31, 32, 40, 62)
COUNT = 1001  # odd: the last chunk and the last add-and-checksum block are partial
SESSION = bytes(range(32))  # the session id the checksums are keyed by


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    # 40 bytes: blocks of 40 u1, 20 u2 or 10 u4 elements, none dividing a chunk evenly
    monkeypatch.setattr(upload, "FUSED_BLOCK_BYTES", 40)


def uploads(bits: int, clients: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng([seed, bits])
    ring = Ring(bits)
    return [
        rng.integers(0, 1 << bits, size=COUNT, dtype=np.uint64).astype(ring.dtype)
        for _ in range(clients)
    ]


def reference_sum(values: list[np.ndarray], bits: int) -> list[int]:
    """The ring sum in Python integers: no numpy width or wrap-around involved."""
    return [sum(int(v[i]) for v in values) % (1 << bits) for i in range(COUNT)]


def accumulator(bits: int) -> tuple[UploadAccumulator, np.ndarray]:
    target = Ring(bits).zeros(COUNT)
    chunk = aligned_chunk_bytes(bits, 200)
    return UploadAccumulator(target, bits, COUNT, chunk, session_id=SESSION), target


def send(acc: UploadAccumulator, cid: str, payload: bytes, *, views: bool) -> None:
    acc.begin(cid, len(payload))
    if views:
        chunks: list[bytes | memoryview] = list(payload_chunks(payload, acc.chunk_bytes))
    else:
        size = acc.chunk_bytes
        chunks = [payload[i : i + size] for i in range(0, len(payload), size)]
    assert len(chunks) == acc.chunk_count > 1
    for index, chunk in enumerate(chunks):
        acc.add_chunk(cid, index, chunk)
    acc.finish(cid, upload_checksum(SESSION, cid, payload))


@pytest.mark.parametrize("views", [False, True], ids=["bytes", "views"])
@pytest.mark.parametrize("bits", WIDTHS)
def test_sum_equals_the_ring_sum(bits: int, views: bool) -> None:
    values = uploads(bits, 5, seed=1)
    acc, target = accumulator(bits)
    for i, v in enumerate(values):
        send(acc, f"c{i}", pack(v, bits), views=views)
    Ring(bits).reduce(target)
    assert [int(x) for x in target] == reference_sum(values, bits)


@pytest.mark.parametrize("bits", WIDTHS)
def test_running_checksum_is_the_payloads_poly1305_and_closes_the_upload(bits: int) -> None:
    """Fed block by block while adding, the checksum is the one the client computes over
    the whole payload at once; asking for it does not stop the upload from closing."""
    payload = pack(uploads(bits, 1, seed=2)[0], bits)
    acc, _ = accumulator(bits)
    acc.begin("a", len(payload))
    for index, chunk in enumerate(payload_chunks(payload, acc.chunk_bytes)):
        acc.add_chunk("a", index, chunk)
    running = acc.running_digest("a")
    assert running == upload_checksum(SESSION, "a", payload)
    assert running != hashlib.sha256(payload).digest()[: len(running)]
    acc.finish("a", running)
    assert acc.progress("a") is None


@pytest.mark.parametrize("bits", WIDTHS)
def test_wrong_checksum_is_refused(bits: int) -> None:
    """One byte off, another client's key or another session's key: all refused."""
    payload = pack(uploads(bits, 1, seed=3)[0], bits)
    other_session = bytes(range(1, 33))
    wrong = [
        upload_checksum(SESSION, "a", payload[:-1] + bytes([payload[-1] ^ 1])),
        upload_checksum(SESSION, "b", payload),
        upload_checksum(other_session, "a", payload),
        hashlib.sha256(payload).digest(),
    ]
    for checksum in wrong:
        acc, _ = accumulator(bits)
        acc.begin("a", len(payload))
        for index, chunk in enumerate(payload_chunks(payload, acc.chunk_bytes)):
            acc.add_chunk("a", index, chunk)
        with pytest.raises(InvalidMessageError, match="digest mismatch: the Poly1305"):
            acc.finish("a", checksum)


@pytest.mark.parametrize("bits", WIDTHS)
def test_an_aborted_upload_leaves_exactly_the_others(bits: int) -> None:
    values = uploads(bits, 3, seed=4)
    acc, target = accumulator(bits)
    send(acc, "a", pack(values[0], bits), views=True)
    partial = pack(values[1], bits)
    chunks = payload_chunks(partial, acc.chunk_bytes)
    acc.begin("b", len(partial))
    for index in range(len(chunks) - 1):  # all but the last chunk arrive
        acc.add_chunk("b", index, chunks[index])
    acc.abort("b", chunks)
    send(acc, "c", pack(values[2], bits), views=False)
    Ring(bits).reduce(target)
    assert [int(x) for x in target] == reference_sum([values[0], values[2]], bits)


@pytest.mark.parametrize("bits", [b for b in WIDTHS if (COUNT * b) % 8])
def test_padding_is_checked_before_the_last_chunk_touches_the_sum(bits: int) -> None:
    payload = bytearray(pack(uploads(bits, 1, seed=5)[0], bits))
    payload[-1] |= 0x80  # a padding bit
    acc, target = accumulator(bits)
    chunks = payload_chunks(bytes(payload), acc.chunk_bytes)
    acc.begin("a", len(payload))
    for index in range(len(chunks) - 1):
        acc.add_chunk("a", index, chunks[index])
    before = target.copy()
    with pytest.raises(InvalidMessageError, match="padding"):
        acc.add_chunk("a", len(chunks) - 1, chunks[-1])
    assert np.array_equal(target, before)


def test_byte_aligned_widths_are_the_packing_layout() -> None:
    """The copy-free path reads the wire as a plain array: true only if pack writes one."""
    for bits, dtype in NATIVE_WIRE_DTYPES.items():
        values = np.arange(257, dtype=np.uint64) * 2654435761 % (1 << bits)
        payload = pack(values, bits)
        assert len(payload) == packed_size(257, bits)
        assert np.array_equal(np.frombuffer(payload, dtype=dtype), values)


def test_a_chunk_of_the_wrong_size_is_refused_before_the_add() -> None:
    acc, target = accumulator(32)
    payload = pack(uploads(32, 1, seed=6)[0], 32)
    acc.begin("a", len(payload))
    with pytest.raises(InvalidMessageError, match="expected"):
        acc.add_chunk("a", 0, memoryview(payload)[: acc.chunk_bytes - 4])
    assert not target.any()


@pytest.mark.parametrize("bits", [31, 32])
def test_in_process_uploads_sum_exactly_and_a_refused_one_leaves_no_trace(bits: int) -> None:
    """ServerRound.receive(MaskedInput): the whole-payload path, chunked into views. At 31
    bits a set padding bit fails the last chunk after the others were added, so the
    rollback has to subtract those views again."""
    live = LiveRound.start(
        n=4, chunk_bytes=aligned_chunk_bytes(bits, 320), dimension=COUNT - 1, bits=bits
    )
    live.run_to(Stage.MASKED_INPUT)
    replies = {}
    for cid in sorted(live.server.expected_senders()):
        reply = live.clients[cid].handle(live.server.request_for(cid))
        assert isinstance(reply, MaskedInput)
        replies[cid] = reply
    assert live.server.uploads.chunk_count > 2
    victim = next(iter(replies))
    bad = bytearray(replies[victim].payload)
    if bits == 31:
        bad[-1] |= 0x80  # a padding bit: the last chunk is refused
        match = "padding"
    else:
        del bad[-1]  # every 32-bit byte string is valid: only the size can be wrong
        match = "announces"
    with pytest.raises(InvalidMessageError, match=match):
        live.server.receive(MaskedInput(victim, bytes(bad)))
    assert live.server.uploads.progress(victim) is None
    assert not live.server._sum.any()
    for reply in replies.values():
        live.server.receive(reply)
    live.server.advance()
    while live.server.stage is not Stage.DONE:
        live.step()
    result = live.server.result
    assert result is not None
    est = result.estimate
    total = sum(live.weights.values())
    truth = (
        sum(live.weights[c] * np.clip(live.inputs[c], -1, 1).astype(np.float64) for c in replies)
        / total
    )
    assert set(result.survivors) == set(replies)
    assert np.max(np.abs(est.weighted_mean - truth)) <= est.error_bound
