"""The client transport without a server: upload chunking and resumption, result
assembly, tensor flattening, TLS settings, retry backoff, and the retry/resume loops
driven by fake stubs."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import logging
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from fedveil.clients.errors import StreamIntegrityError, TransportError, from_rpc_error
from fedveil.clients.streams import (
    ChunkedPayload,
    ResultAssembler,
    TensorLayout,
    TensorSlot,
    as_update_vector,
    flatten_tensors,
    layout_from_pb,
    layout_to_pb,
)
from fedveil.clients.transport import (
    AggregateResult,
    AggregationClient,
    AsyncAggregationClient,
    RetryPolicy,
    TransportSecurity,
    call_unary,
    fetch_result,
    upload_resumable,
)
from fedveil.errors import ConfigError, FedveilError, ProtocolError
from fedveil.proto import aggregation_pb2 as pb
from fedveil.proto.convert import config_to_spec
from fedveil.runners.simulation import Federation, make_config
from fedveil.secagg.protocol.model_chain import mean_payload_digest, round_model_hash
from fedveil.secagg.protocol.upload import UploadAccumulator
from fedveil.secagg.protocol.upload_checksum import upload_checksum

FAST = RetryPolicy(attempts=3, initial_backoff_s=0.001, max_backoff_s=0.002)
SESSION = bytes(range(100, 132))  # a session id: keys a masked input's checksum
BASE = bytes(range(32))  # a base model hash; no round here is about a model


def rpc_error(code: grpc.StatusCode, details: str = "boom") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


# --- upload chunking ----------------------------------------------------------------------


def test_chunks_have_exact_sizes_indices_total_and_digest_only_last() -> None:
    payload = bytes(range(256)) * 39 + b"tail"  # 9988 bytes
    upload = ChunkedPayload(7, "client-0", payload, 4096)
    chunks = list(upload.chunks())
    assert upload.chunk_count == 3
    assert [c.index for c in chunks] == [0, 1, 2]
    assert [len(c.data) for c in chunks] == [4096, 4096, len(payload) - 8192]
    assert all(c.total_bytes == len(payload) for c in chunks)
    assert all((c.round_id, c.client_id) == (7, "client-0") for c in chunks)
    assert [bool(c.checksum) for c in chunks] == [False, False, True]
    assert chunks[-1].checksum == hashlib.sha256(payload).digest()
    assert b"".join(c.data for c in chunks) == payload


def test_a_masked_input_carries_its_sessions_poly1305_checksum() -> None:
    """Named by its session, the upload closes with the Poly1305 checksum the server
    recomputes (secagg.protocol.upload_checksum), never the plaintext upload's SHA-256."""
    payload = bytes(range(256)) * 40
    masked = ChunkedPayload(7, "client-0", payload, 4096, session_id=SESSION)
    plain = ChunkedPayload(7, "client-0", payload, 4096)
    last = list(masked.chunks())[-1]
    assert last.checksum == upload_checksum(SESSION, "client-0", payload)
    assert len(last.checksum) == 16 and last.checksum != plain.checksum
    assert list(masked.chunks(masked.chunk_count))[0].checksum == last.checksum


def test_payload_of_whole_chunks_ends_with_a_full_chunk() -> None:
    chunks = list(ChunkedPayload(1, "a", b"x" * 64, 32).chunks())
    assert [len(c.data) for c in chunks] == [32, 32]
    assert chunks[-1].checksum == hashlib.sha256(b"x" * 64).digest()


@settings(max_examples=60, deadline=None)
@given(size=st.integers(0, 3000), chunk=st.integers(1, 700), data=st.data())
def test_resumed_chunks_are_the_tail_of_the_full_upload(size: int, chunk: int, data: Any) -> None:
    payload = bytes(i % 251 for i in range(size))
    upload = ChunkedPayload(3, "c", payload, chunk)
    full = list(upload.chunks())
    start = data.draw(st.integers(0, upload.chunk_count - 1))
    assert list(upload.chunks(start)) == full[start:]
    assert b"".join(c.data for c in full) == payload


def test_already_complete_upload_is_one_empty_chunk_past_the_end() -> None:
    payload = b"p" * 100
    upload = ChunkedPayload(5, "b", payload, 30)
    (only,) = list(upload.chunks(upload.chunk_count))
    assert only.index == upload.chunk_count == 4
    assert only.data == b""
    assert only.total_bytes == 100
    assert only.checksum == hashlib.sha256(payload).digest()


@pytest.mark.parametrize("start", [-1, 5])
def test_resume_index_out_of_range_is_refused_before_streaming(start: int) -> None:
    upload = ChunkedPayload(5, "b", b"p" * 100, 30)
    with pytest.raises(TransportError, match="OUT_OF_RANGE"):
        upload.chunks(start)


def test_empty_payload_and_bad_chunk_size() -> None:
    (only,) = list(ChunkedPayload(1, "a", b"", 8).chunks())
    assert (only.index, only.data, only.checksum) == (0, b"", hashlib.sha256(b"").digest())
    with pytest.raises(ConfigError, match="chunk_bytes"):
        ChunkedPayload(1, "a", b"x", 0)


def test_chunks_and_a_resumed_upload_are_accepted_by_the_accumulator() -> None:
    bits, elements, chunk_bytes = 16, 101, 32
    rng = np.random.default_rng(0)
    payload = rng.integers(0, 256, (elements * bits + 7) // 8, dtype=np.uint8).tobytes()
    upload = ChunkedPayload(1, "c", payload, chunk_bytes, session_id=SESSION)
    accumulator = UploadAccumulator(
        np.zeros(elements, np.uint64), bits, elements, chunk_bytes, session_id=SESSION
    )
    first = list(upload.chunks())[:3]
    accumulator.begin("c", first[0].total_bytes)
    for chunk in first:
        accumulator.add_chunk("c", chunk.index, chunk.data)
    progress = accumulator.progress("c")
    assert progress is not None
    for chunk in upload.chunks(progress.next_index):
        accumulator.add_chunk("c", chunk.index, chunk.data)
        if chunk.checksum:
            accumulator.finish("c", chunk.checksum)
    assert accumulator.progress("c") is None  # finished: digest and size checked


# --- result assembly ----------------------------------------------------------------------


def result_chunks(
    mean: np.ndarray, step: int = 24, round_id: int = 9, **header: Any
) -> list[pb.ResultChunk]:
    data = mean.astype("<f8").tobytes()
    fields: dict[str, Any] = {
        "round_id": round_id,
        "survivors": ["a", "b", "c"],
        "total_weight": 12,
    }
    fields |= {"dimension": mean.size, "error_bound": 1e-6, "total_bytes": len(data)} | header
    parts = [data[i : i + step] for i in range(0, len(data), step)]
    return [
        pb.ResultChunk(
            header=pb.ResultHeader(**fields) if i == 0 else None,
            index=i,
            data=part,
            sha256=hashlib.sha256(data).digest() if i == len(parts) - 1 else b"",
        )
        for i, part in enumerate(parts)
    ]


def assemble(chunks: Iterable[pb.ResultChunk], **expected: Any) -> tuple[Any, np.ndarray]:
    assembler = ResultAssembler(**expected)
    for chunk in chunks:
        assembler.add(chunk)
    return assembler.finish()


def test_result_stream_reassembles_the_float64_mean() -> None:
    mean = np.linspace(-1, 1, 11)
    header, out = assemble(result_chunks(mean), expected_round_id=9, expected_dimension=11)
    assert out.dtype == np.float64 and out.flags.writeable
    np.testing.assert_array_equal(out, mean)
    assert (list(header.survivors), header.total_weight) == (["a", "b", "c"], 12)


def test_wrong_digest_is_refused() -> None:
    chunks = result_chunks(np.ones(5))
    chunks[-1].sha256 = hashlib.sha256(b"other").digest()
    with pytest.raises(StreamIntegrityError, match="digest mismatch") as info:
        assemble(chunks)
    assert isinstance(info.value, TransportError) and info.value.code == "DATA_LOSS"


def test_corrupted_bytes_are_refused() -> None:
    chunks = result_chunks(np.ones(5))
    chunks[0].data = bytes([chunks[0].data[0] ^ 1]) + chunks[0].data[1:]
    with pytest.raises(StreamIntegrityError, match="digest"):
        assemble(chunks)


def test_missing_or_repeated_header_is_refused() -> None:
    chunks = result_chunks(np.ones(5), step=8)
    chunks[0].ClearField("header")
    with pytest.raises(StreamIntegrityError, match="missing from the first"):
        assemble(chunks)
    chunks = result_chunks(np.ones(5), step=8)
    chunks[1].header.CopyFrom(chunks[0].header)
    with pytest.raises(StreamIntegrityError, match="repeated"):
        assemble(chunks)


@pytest.mark.parametrize(
    ("header", "expected", "match"),
    [
        ({"total_bytes": 41}, {}, "announces 41 bytes"),
        ({"dimension": 0, "total_bytes": 0}, {}, "dimension 0"),
        ({}, {"expected_round_id": 3}, "not 3"),
        ({}, {"expected_dimension": 6}, "round's is 6"),
    ],
)
def test_bad_header_is_refused(header: dict, expected: dict, match: str) -> None:
    with pytest.raises(StreamIntegrityError, match=match):
        assemble(result_chunks(np.ones(5), **header), **expected)


@pytest.mark.parametrize("expected", [{}, {"expected_dimension": 6}])
def test_truncated_overlong_reordered_and_trailing_streams_are_refused(expected: dict) -> None:
    """Both buffers: grown as bytes arrive, and allocated up front for a known dimension."""
    chunks = result_chunks(np.ones(6), step=16)
    with pytest.raises(StreamIntegrityError, match="ended after 32 of 48"):
        assemble(chunks[:-1], **expected)
    with pytest.raises(StreamIntegrityError, match="out of order"):
        assemble([chunks[0], chunks[2]], **expected)
    extra = pb.ResultChunk(index=3, data=b"\x00" * 8)
    with pytest.raises(StreamIntegrityError, match="after the one carrying the digest"):
        assemble([*chunks, extra], **expected)
    chunks[1].data += b"\x00" * 24
    with pytest.raises(StreamIntegrityError, match="exceeds"):
        assemble(chunks, **expected)
    with pytest.raises(StreamIntegrityError, match="empty"):
        assemble([], **expected)


@pytest.mark.parametrize("expected", [{}, {"expected_dimension": 9}])
def test_the_download_carries_the_checked_digest_of_the_bytes(expected: dict) -> None:
    mean = np.linspace(-2, 2, 9)
    assembler = ResultAssembler(**expected)
    with pytest.raises(StreamIntegrityError, match="not complete"):
        _ = assembler.payload_sha256
    for chunk in result_chunks(mean, step=16):
        assembler.add(chunk)
    header, out, sha256 = assembler.downloaded()
    np.testing.assert_array_equal(out, mean)
    assert out.flags.writeable and header.dimension == 9
    assert sha256 == mean_payload_digest(out) == hashlib.sha256(mean.tobytes()).digest()


def test_missing_digest_is_refused() -> None:
    chunks = result_chunks(np.ones(4))
    chunks[-1].sha256 = b""
    with pytest.raises(StreamIntegrityError, match="no SHA-256"):
        assemble(chunks)


# --- tensors <-> flat vector ----------------------------------------------------------------


def test_flatten_is_sorted_float32_and_splits_back_to_float64_shapes() -> None:
    tensors: dict[str, Any] = {
        "z.lora_B": np.arange(6, dtype=np.float64).reshape(2, 3),
        "a.lora_A": np.full((4,), 0.5, dtype=np.float16),
        "m.scalar": np.float32(7.0),
    }
    flat, layout = flatten_tensors(tensors)
    assert flat.dtype == np.float32 and flat.shape == (11,)
    assert [s.name for s in layout.slots] == ["a.lora_A", "m.scalar", "z.lora_B"]
    assert [s.offset for s in layout.slots] == [0, 4, 5]
    np.testing.assert_array_equal(flat[:5], [0.5] * 4 + [7.0])
    back = layout.split(flat.astype(np.float64))
    assert set(back) == set(tensors)
    for name, value in tensors.items():
        assert back[name].dtype == np.float64
        assert back[name].shape == np.shape(value)
        np.testing.assert_array_equal(back[name], np.asarray(value, dtype=np.float64))


def test_torch_tensors_are_detached_and_bfloat16_is_widened() -> None:
    torch = pytest.importorskip("torch")
    tensors = {
        "w": torch.ones(2, 3, requires_grad=True) * 2,
        "b": torch.tensor([0.25, -0.5], dtype=torch.bfloat16),
    }
    flat, layout = flatten_tensors(tensors)
    np.testing.assert_array_equal(flat, [0.25, -0.5, 2, 2, 2, 2, 2, 2])
    assert layout.split(flat.astype(np.float64))["w"].shape == (2, 3)


def test_transport_does_not_import_torch() -> None:
    code = "import sys, fedveil.clients.transport; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_update_vector_checks_and_layout_conversions() -> None:
    with pytest.raises(ConfigError, match="no tensors"):
        flatten_tensors({})
    with pytest.raises(ConfigError, match="1-D"):
        as_update_vector(np.zeros((2, 2)))
    vector, layout = as_update_vector(np.zeros(3))
    assert vector.shape == (3,) and layout is None
    _, layout = flatten_tensors({"b": np.zeros((2, 2)), "a": np.zeros(1)})
    assert layout_from_pb(layout_to_pb(layout)) == layout
    assert layout_from_pb(pb.VectorLayout()) is None
    with pytest.raises(ConfigError, match="twice"):
        TensorLayout((TensorSlot("a", (1,), 0), TensorSlot("a", (1,), 1)))
    with pytest.raises(ConfigError, match="covers 5"):
        layout.split(np.zeros(4))


def test_aggregate_result_as_tensors() -> None:
    _, layout = flatten_tensors({"b": np.zeros((2, 2)), "a": np.zeros(1)})
    result = AggregateResult(1, ("a",), 3, np.arange(5.0), 0.0, layout)
    np.testing.assert_array_equal(result.as_tensors()["b"], [[1, 2], [3, 4]])
    flat = AggregateResult(1, ("a",), 3, np.arange(5.0), 0.0)
    with pytest.raises(ConfigError, match="no tensor layout"):
        flat.as_tensors()
    assert flat.as_tensors(layout)["a"].tolist() == [0.0]


# --- TLS settings -----------------------------------------------------------------------------


def self_signed(common_name: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def test_tls_needs_all_three_pems_and_insecure_is_exclusive() -> None:
    cert, key = self_signed("client-0")
    security = TransportSecurity(ca_pem=cert, cert_pem=cert, key_pem=key)
    assert security.common_name() == "client-0"
    assert "PRIVATE KEY" not in repr(security)
    with pytest.raises(ConfigError, match=r"missing \['key_pem'\]"):
        TransportSecurity(ca_pem=cert, cert_pem=cert)
    with pytest.raises(ConfigError, match="missing"):
        TransportSecurity()
    with pytest.raises(ConfigError, match="ca_pem is not PEM"):
        TransportSecurity(ca_pem=b"nonsense", cert_pem=cert, key_pem=key)
    with pytest.raises(ConfigError, match="choose either"):
        TransportSecurity(ca_pem=cert, insecure=True)
    assert TransportSecurity(insecure=True).common_name() is None


def test_insecure_channel_warns_every_time(caplog: pytest.LogCaptureFixture) -> None:
    async def open_twice() -> None:
        security = TransportSecurity(insecure=True)
        for _ in range(2):
            await security.open_channel("127.0.0.1:1").close()

    with caplog.at_level(logging.WARNING, logger="fedveil.clients.transport"):
        asyncio.run(open_twice())
    assert sum("INSECURE" in r.getMessage() for r in caplog.records) == 2


def test_client_refuses_a_certificate_for_another_client() -> None:
    federation = Federation.enrol(3)
    cid = federation.ids[0]
    cert, key = self_signed("someone-else")
    security = TransportSecurity(ca_pem=cert, cert_pem=cert, key_pem=key)
    with pytest.raises(ConfigError, match="certificate names 'someone-else'"):
        AsyncAggregationClient(
            "h:1",
            cid,
            federation.identities[cid],
            federation.roster,
            security,
            base_model_hash=BASE,
        )
    other = federation.identities[federation.ids[1]]
    with pytest.raises(ConfigError, match="not enrolled"):
        AsyncAggregationClient(
            "h:1",
            cid,
            other,
            federation.roster,
            TransportSecurity(insecure=True),
            base_model_hash=BASE,
        )


# --- retry policy and loops ---------------------------------------------------------------------


def test_backoff_grows_exponentially_within_jitter_bounds() -> None:
    policy = RetryPolicy(attempts=5, initial_backoff_s=0.1, max_backoff_s=2.0, multiplier=2.0)
    ceilings = [policy.ceiling_s(r) for r in range(8)]
    assert ceilings == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0])
    for retry, ceiling in enumerate(ceilings):
        samples = [policy.backoff_s(retry) for _ in range(200)]
        assert all(ceiling / 2 <= s <= ceiling for s in samples)
        assert len(set(samples)) > 1  # jittered, not a fixed schedule
    assert policy.backoff_s(10**6) <= 2.0  # no overflow far out


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attempts": 0},
        {"initial_backoff_s": 0.0},
        {"initial_backoff_s": 1.0, "max_backoff_s": 0.5},
        {"multiplier": 0.5},
    ],
)
def test_retry_policy_validation(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        RetryPolicy(**kwargs)


def test_rpc_error_keeps_status_name_and_server_message() -> None:
    error = from_rpc_error(
        rpc_error(grpc.StatusCode.FAILED_PRECONDITION, "round 3 failed at stage share-keys: x"),
        "ShareKeys",
    )
    assert isinstance(error, FedveilError)
    assert str(error) == "FAILED_PRECONDITION: round 3 failed at stage share-keys: x"
    assert (error.code, error.rpc, error.grpc_status) == (
        "FAILED_PRECONDITION",
        "ShareKeys",
        "FAILED_PRECONDITION",
    )


class FlakyUnary:
    def __init__(self, *codes: grpc.StatusCode) -> None:
        self.codes = list(codes)
        self.requests: list[Any] = []

    async def __call__(self, request: Any, timeout: float) -> str:
        self.requests.append(request)
        if self.codes:
            raise rpc_error(self.codes.pop(0))
        return "ok"


def test_unary_call_retries_unavailable_with_the_same_request() -> None:
    method = FlakyUnary(grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE)
    request = pb.GetRoundRequest(client_id="a")
    assert asyncio.run(call_unary(method, request, rpc="GetRound", retry=FAST, timeout_s=1)) == "ok"
    assert len(method.requests) == 3 and all(r is request for r in method.requests)


def test_unary_call_does_not_retry_other_codes_and_gives_up_eventually() -> None:
    method = FlakyUnary(grpc.StatusCode.PERMISSION_DENIED)
    with pytest.raises(TransportError, match="PERMISSION_DENIED: boom"):
        asyncio.run(call_unary(method, None, rpc="X", retry=FAST, timeout_s=1))
    assert len(method.requests) == 1
    method = FlakyUnary(*[grpc.StatusCode.UNAVAILABLE] * 3)
    with pytest.raises(TransportError, match="UNAVAILABLE: boom .gave up after 3 attempts"):
        asyncio.run(call_unary(method, None, rpc="X", retry=FAST, timeout_s=1))


class UploadStub:
    """Takes `break_after` chunks on the first stream, then fails it as UNAVAILABLE."""

    def __init__(self, break_after: int, complete: bool = False) -> None:
        self.break_after = break_after
        self.complete = complete
        self.streams: list[list[pb.VectorChunk]] = []

    async def UploadMaskedInput(self, chunks: Iterable[pb.VectorChunk], timeout: float) -> Any:
        taken: list[pb.VectorChunk] = []
        self.streams.append(taken)
        for chunk in chunks:
            taken.append(chunk)
            if len(self.streams) == 1 and len(taken) == self.break_after:
                raise rpc_error(grpc.StatusCode.UNAVAILABLE, "connection reset")
        return pb.SurvivorSet(survivors=["a", "b"])

    async def GetUploadStatus(self, request: pb.UploadStatusRequest, timeout: float) -> Any:
        return pb.UploadStatus(next_index=self.break_after, complete=self.complete)


def test_broken_upload_resumes_at_the_servers_next_index() -> None:
    upload = ChunkedPayload(4, "a", bytes(range(200)), 32)
    stub = UploadStub(break_after=3)
    reply = asyncio.run(upload_resumable(stub, upload, retry=FAST, timeout_s=1, status_timeout_s=1))
    assert list(reply.survivors) == ["a", "b"]
    assert [c.index for c in stub.streams[1]] == [3, 4, 5, 6]
    assert stub.streams[1][-1].checksum == hashlib.sha256(upload.payload).digest()


def test_upload_broken_after_completion_sends_the_already_complete_chunk() -> None:
    upload = ChunkedPayload(4, "a", bytes(64), 32)
    stub = UploadStub(break_after=2, complete=True)
    asyncio.run(upload_resumable(stub, upload, retry=FAST, timeout_s=1, status_timeout_s=1))
    (only,) = stub.streams[1]
    assert (only.index, only.data, only.total_bytes) == (2, b"", 64)


class ResultStub:
    def __init__(self, chunks: list[pb.ResultChunk]) -> None:
        self.chunks = chunks
        self.calls = 0

    def GetResult(self, request: pb.GetResultRequest, timeout: float) -> AsyncIterator[Any]:
        self.calls += 1
        return self._stream(self.calls == 1)

    async def _stream(self, fail: bool) -> AsyncIterator[Any]:
        for index, chunk in enumerate(self.chunks):
            if fail and index == 1:
                raise rpc_error(grpc.StatusCode.UNAVAILABLE)
            yield chunk


def test_broken_result_stream_starts_over() -> None:
    mean = np.arange(7.0)
    stub = ResultStub(result_chunks(mean, step=16))
    request = pb.GetResultRequest(round_id=9, client_id="a")
    _, out, sha256 = asyncio.run(
        fetch_result(stub, request, expected_dimension=7, retry=FAST, timeout_s=1)
    )
    np.testing.assert_array_equal(out, mean)
    assert sha256 == hashlib.sha256(mean.astype("<f8").tobytes()).digest()
    assert stub.calls == 2


# --- the client without a server ------------------------------------------------------------------


class RoundStub:
    def __init__(self, *replies: Any) -> None:
        self.replies = list(replies)
        self.advertised = False

    async def GetRound(self, request: pb.GetRoundRequest, timeout: float) -> pb.RoundInfo:
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def AdvertiseKeys(self, request: Any, timeout: float) -> Any:
        self.advertised = True
        raise AssertionError("must not advertise")


def stubbed_client(stub: RoundStub) -> tuple[AsyncAggregationClient, pb.RoundSpec]:
    federation = Federation.enrol(3)
    cid = federation.ids[0]
    # the first round about BASE, as this client derives it (secagg.protocol.model_chain)
    config = make_config(federation, 10, model_hash=round_model_hash(BASE, None))
    spec = config_to_spec(config, min_cohort=3, chunk_bytes=64, stage_timeout_s=1)
    client = AsyncAggregationClient(
        "h:1",
        cid,
        federation.identities[cid],
        federation.roster,
        TransportSecurity(insecure=True),
        base_model_hash=BASE,
        retry=FAST,
    )
    setattr(client, "_ensure_stub", lambda: stub)  # noqa: B010 (a fake stub, no server)
    return client, spec


def test_wait_for_round_skips_missing_and_later_stage_rounds() -> None:
    stub = RoundStub()
    client, spec = stubbed_client(stub)
    stub.replies = [
        rpc_error(grpc.StatusCode.NOT_FOUND, "no round"),
        *[rpc_error(grpc.StatusCode.UNAVAILABLE, "server starting")] * FAST.attempts,
        pb.RoundInfo(spec=spec, stage=pb.ROUND_STAGE_SHARE_KEYS),
        pb.RoundInfo(spec=spec, stage=pb.ROUND_STAGE_ADVERTISE_KEYS),
    ]
    info = asyncio.run(client.wait_for_round(poll_s=0.001, timeout_s=5))
    assert info.stage == pb.ROUND_STAGE_ADVERTISE_KEYS
    stub.replies = [pb.RoundInfo(spec=spec, stage=pb.ROUND_STAGE_UNMASK)]
    with pytest.raises(TransportError, match="DEADLINE_EXCEEDED: no round .* ROUND_STAGE_UNMASK"):
        asyncio.run(client.wait_for_round(poll_s=0.01, timeout_s=0.05))


def test_run_round_refuses_an_update_of_the_wrong_size_before_joining() -> None:
    stub = RoundStub()
    client, spec = stubbed_client(stub)
    stub.replies = [pb.RoundInfo(spec=spec, stage=pb.ROUND_STAGE_ADVERTISE_KEYS)]
    with pytest.raises(ConfigError, match="vectors of 10 values, but this update has 9"):
        asyncio.run(client.run_round(np.zeros(9), 1))
    _, layout = flatten_tensors({"a": np.zeros(4), "b": np.zeros(6)})
    spec.layout.CopyFrom(layout_to_pb(layout))
    stub.replies = [pb.RoundInfo(spec=spec, stage=pb.ROUND_STAGE_ADVERTISE_KEYS)]
    with pytest.raises(ConfigError, match=r"layout that differs .* in \['a', 'b', 'c'\]"):
        asyncio.run(client.run_round({"c": np.zeros(4), "b": np.zeros(6)}, 1))
    assert not stub.advertised


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_blocking_client_maps_errors_inside_a_running_loop_and_closes_once() -> None:
    federation = Federation.enrol(3)
    cid = federation.ids[0]
    client = AggregationClient(
        f"127.0.0.1:{free_port()}",
        cid,
        federation.identities[cid],
        federation.roster,
        TransportSecurity(insecure=True),
        base_model_hash=BASE,
        retry=FAST,
        rpc_timeout_s=2,
    )

    async def caller_with_a_loop() -> None:
        with pytest.raises(TransportError, match="UNAVAILABLE") as info:
            client.get_round()
        assert info.value.rpc == "GetRound"

    with client:
        asyncio.run(caller_with_a_loop())
    client.close()  # idempotent
    with pytest.raises(ProtocolError, match="closed"):
        client.get_round()
