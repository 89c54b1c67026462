"""Fuzzing every RPC handler over real gRPC (mutual TLS, loopback) while a round runs.

Why: the matrix in test_service_bad_input.py covers the mistakes someone thought of; an
enrolled client can send anything. Hypothesis drives "mallory", an enrolled client with
its own certificate, through every method of fedveil.v1.Aggregation with three kinds of
requests: random messages of the method's request type (the ids and round ids drawn
mostly from the live ones, so they get past the first checks), well-formed messages of
the live round mutated field by field or byte by byte on the wire, and wire bytes that
are not a message at all. In CKKS mode mallory is a key member, so its mutated
ciphertexts (real ones, made under the epoch's public key) reach the server's parser and
are added to the encrypted sum before the upload is refused and rolled back.

Every call must answer within a bounded time (no hang; the server must not crash) with
a specific status and a message: never UNKNOWN or INTERNAL, and DEADLINE_EXCEEDED only
as the server's own "stage closed" answer. Meanwhile three honest clients run their
rounds; each must end with the exact weighted mean of the honest clients (mallory never
completes an upload, so it is never a survivor). The long run is marked slow; a short
budget runs with every `make test`.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
import pytest
import tenseal as ts
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedveil.clients.transport import AggregateResult
from fedveil.proto import aggregation_pb2 as pb
from fedveil.secagg.ckks.keys import CkksKeyring
from fedveil.secagg.ckks.server_round import CkksServerRound
from fedveil.server.app import RunningServer, start_server
from tests.helpers.mallory import Case, Context, refused, run_case
from tests.helpers.service_harness import client_for, make_keys, raw_stub, settings_for

T = TypeVar("T")
SERVICE = pb.DESCRIPTOR.services_by_name["Aggregation"]
METHODS: tuple[MethodDescriptor, ...] = tuple(SERVICE.methods)
CALL_TIMEOUT_S = 8.0  # every fuzzed call; nothing mallory sends may be waited on longer
STAGE_TIMEOUT_S = 2.0
CHUNK_BYTES = 4096
DIMENSION = 3000  # SecAgg: 12004 bytes, three chunks; CKKS: one ciphertext
CLIP = 1.0
CKKS = ("secagg", "ckks")
Code = grpc.StatusCode
# What a refusal may be: each names what was wrong. DEADLINE_EXCEEDED only as the
# server's StageClosedError (checked by its message), never a call the client gave up on.
SPECIFIC = {
    Code.OK,
    Code.INVALID_ARGUMENT,
    Code.FAILED_PRECONDITION,
    Code.NOT_FOUND,
    Code.ALREADY_EXISTS,
    Code.PERMISSION_DENIED,
    Code.UNAUTHENTICATED,
    Code.RESOURCE_EXHAUSTED,
    Code.DEADLINE_EXCEEDED,
}
ID_FIELDS = {"client_id", "sender", "recipient", "owner"}
INT_RANGES = {
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_ENUM: (-3, 40),
}


# --- the live federation: server and honest clients on a loop of their own ---------------


@dataclass
class Outcome:
    method: str
    code: grpc.StatusCode
    details: str
    seconds: float


@dataclass
class Federation:
    """A server and three honest clients running `rounds` rounds in a background loop;
    mallory (the last enrolled id) is driven from the test's thread, one call at a time."""

    root: Path
    mode: str
    rounds: int
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    outcomes: list[Outcome] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.keys, self.ids = make_keys(self.root, 4)
        self.mallory, self.honest = self.ids[-1], self.ids[:-1]
        rng = np.random.default_rng(17)
        self.updates = {c: rng.normal(0, 0.5, DIMENSION).astype(np.float32) for c in self.ids}
        self.weights = {c: int(rng.integers(1, 500)) for c in self.ids}
        self.results: dict[int, list[AggregateResult]] = {}
        key_round = 1 if self.mode == "ckks" else 0  # CKKS: mallory takes part in the key round
        self.settings = settings_for(
            self.root,
            self.keys,
            dimension=DIMENSION,
            mode=self.mode,
            rounds=self.rounds + key_round,
            stage_timeout_s=STAGE_TIMEOUT_S,
            chunk_bytes=CHUNK_BYTES,
            clip=CLIP,
        )
        self.server: RunningServer = self.run(start_server(self.settings), 60)
        self.channel, _ = self.run(self._channel(), 10)
        self.honest_task = asyncio.run_coroutine_threadsafe(self._honest(key_round), self.loop)

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    async def _channel(self) -> tuple[grpc.aio.Channel, Any]:
        return raw_stub(self.keys, self.mallory, self.server.port)

    async def _honest(self, key_round: int) -> None:
        allowed = CKKS if self.mode == "ckks" else ("secagg",)
        clients = {
            c: client_for(self.keys, c, self.server.port, allowed_modes=allowed) for c in self.ids
        }
        try:
            if key_round:
                await asyncio.gather(
                    *(clients[c].run_round(self.updates[c], self.weights[c]) for c in self.ids)
                )
            for _ in range(self.rounds):
                results = await asyncio.gather(
                    *(clients[c].run_round(self.updates[c], self.weights[c]) for c in self.honest)
                )
                self.results[results[0].round_id] = results
        finally:
            for client in clients.values():
                await client.close()

    # --- what mallory sees ------------------------------------------------------------

    def live(self) -> tuple[int, pb.RoundSpec | None]:
        current = self.server.coordinator.current
        if current is None:
            last = max(self.server.coordinator.rounds, default=1)
            return last, None
        return current.round_id, current.spec

    def ciphertexts(self) -> list[bytes]:
        """Zeros under the epoch's public key, one per chunk (empty outside CKKS)."""
        current = self.server.coordinator.current
        if current is None or not isinstance(current.server, CkksServerRound):
            return []
        epoch = current.server.epoch
        if epoch is None:
            return []
        if getattr(self, "_ct_epoch", None) != epoch.fingerprint:
            public = CkksKeyring.from_bytes(epoch.public_context)
            slots = current.server.config.preset.slot_count
            count = current.server.config.chunk_count
            sizes = [min(slots, DIMENSION + 1 - i * slots) for i in range(count)]
            self._cts = [
                bytes(ts.ckks_vector(public.context, [0.0] * n).serialize()) for n in sizes
            ]
            self._public_context = epoch.public_context
            self._ct_epoch = epoch.fingerprint
        return self._cts

    def call(self, method: MethodDescriptor, payload: bytes | list[bytes]) -> Outcome:
        started = time.monotonic()
        try:
            code, details = self.run(self._call(method, payload), CALL_TIMEOUT_S + 10)
        except TimeoutError:  # the loop itself did not answer: a hang
            pytest.fail(f"{method.name}: no answer within {CALL_TIMEOUT_S + 10}s")
        outcome = Outcome(method.name, code, details, time.monotonic() - started)
        self.outcomes.append(outcome)
        return outcome

    async def _call(
        self, method: MethodDescriptor, payload: bytes | list[bytes]
    ) -> tuple[grpc.StatusCode, str]:
        path = f"/{SERVICE.full_name}/{method.name}"
        try:
            if method.client_streaming:
                pieces = payload if isinstance(payload, list) else [payload]
                await self.channel.stream_unary(path)(iter(pieces), timeout=CALL_TIMEOUT_S)
            elif method.server_streaming:
                assert isinstance(payload, bytes)
                async for _ in self.channel.unary_stream(path)(payload, timeout=CALL_TIMEOUT_S):
                    pass
            else:
                assert isinstance(payload, bytes)
                await self.channel.unary_unary(path)(payload, timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or ""
        return Code.OK, ""

    def close(self, wait_s: float) -> None:
        try:
            self.honest_task.result(wait_s)
        finally:
            self.run(self.channel.close(), 10)
            self.run(self.server.stop(0.1), 30)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


# --- what mallory sends --------------------------------------------------------------------


def _request_class(method: MethodDescriptor) -> type[Message]:
    return GetMessageClass(method.input_type)


def _template(fed: Federation, method: MethodDescriptor, round_id: int) -> list[Message]:
    """A well-formed request of the live round from mallory (never a valid one: random
    signatures and keys, and an upload whose digest never matches)."""
    me, others = fed.mallory, fed.honest
    rand = os.urandom
    name = method.name
    if name in ("GetRound",):
        return [pb.GetRoundRequest(client_id=me)]
    if name == "AdvertiseKeys":
        advert = pb.KeyAdvertisement(
            client_id=me,
            encryption_key=rand(32),
            masking_key=rand(32),
            self_mask_commitment=rand(32),
            signature=rand(64),
        )
        return [pb.AdvertiseKeysRequest(round_id=round_id, advertisement=advert)]
    if name == "ShareKeys":
        shares = [pb.EncryptedShare(sender=me, recipient=o, ciphertext=rand(120)) for o in others]
        return [pb.ShareKeysRequest(round_id=round_id, client_id=me, shares=shares)]
    if name == "ConfirmSurvivors":
        signature = pb.SurvivorSignature(client_id=me, signature=rand(64))
        return [pb.ConfirmSurvivorsRequest(round_id=round_id, signature=signature)]
    if name == "Unmask":
        shares = [pb.RevealedShare(owner=o, share=rand(48)) for o in others]
        return [
            pb.UnmaskRequest(
                round_id=round_id, client_id=me, self_mask_shares=shares[:2], key_shares=shares[2:]
            )
        ]
    if name == "PublishCkksKeys":
        wrapped = [pb.CkksWrappedKey(recipient=o, ciphertext=rand(92)) for o in others]
        fed.ciphertexts()
        return [
            pb.CkksKeyPublication(
                round_id=round_id,
                client_id=me,
                key_epoch=0,
                key_fingerprint=rand(32),
                public_context=getattr(fed, "_public_context", rand(64)),
                sealed_context=rand(256),
                wrapped_keys=wrapped,
            )
        ]
    if name in ("UploadMaskedInput", "UploadPlaintext", "UploadCiphertext"):
        _, spec = fed.live()
        if name == "UploadCiphertext":
            pieces = fed.ciphertexts() or [rand(2000)]
            fingerprint = bytes(spec.ckks.key_fingerprint) if spec is not None else rand(32)
        else:
            total = DIMENSION * 4 + 4
            pieces = [rand(min(CHUNK_BYTES, total - i)) for i in range(0, total, CHUNK_BYTES)]
            fingerprint = b""
        total_bytes = sum(len(p) for p in pieces)
        return [
            pb.VectorChunk(
                round_id=round_id,
                client_id=me,
                index=i,
                data=piece,
                total_bytes=total_bytes,
                checksum=rand(32) if i == len(pieces) - 1 else b"",  # never the digest
                weight=7,
                key_fingerprint=fingerprint,
            )
            for i, piece in enumerate(pieces)
        ]
    request = _request_class(method)()  # GetUploadStatus, FetchCkksKeys, GetResult
    request.round_id = round_id
    request.client_id = me
    return [request]


def _ids(fed: Federation) -> st.SearchStrategy[str]:
    return st.one_of(
        st.just(fed.mallory),
        st.sampled_from(fed.ids + ["", "org-99", "ORG-03", fed.mallory + "\x00"]),
        st.text(max_size=12),
    )


def _round_ids(round_id: int) -> st.SearchStrategy[int]:
    return st.one_of(
        st.just(round_id),
        st.sampled_from([0, 1, round_id - 1, round_id + 1, 2**63, 2**64 - 1]).filter(
            lambda r: 0 <= r < 2**64
        ),
        st.integers(0, 2**64 - 1),
    )


def _blobs() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=96),
        st.sampled_from([0, 1, 31, 32, 33, 63, 64, 65, CHUNK_BYTES]).map(os.urandom),
    )


def _draw_value(
    data: st.DataObject, fed: Federation, round_id: int, fd: FieldDescriptor, depth: int
) -> Any:
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        return _draw_message(data, fed, round_id, fd.message_type, depth + 1)
    if fd.name in ID_FIELDS:
        return data.draw(_ids(fed))
    if fd.name == "round_id":
        return data.draw(_round_ids(round_id))
    if fd.type in INT_RANGES:
        low, high = INT_RANGES[fd.type]
        return data.draw(
            st.one_of(st.integers(0, 16).filter(lambda v: v >= low), st.integers(low, high))
        )
    if fd.type == FieldDescriptor.TYPE_BOOL:
        return data.draw(st.booleans())
    if fd.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return data.draw(st.floats(width=32 if fd.type == FieldDescriptor.TYPE_FLOAT else 64))
    if fd.type == FieldDescriptor.TYPE_STRING:
        return data.draw(st.text(max_size=20))
    return data.draw(_blobs())


def _assign(message: Message, fd: FieldDescriptor, value: Any) -> None:
    if fd.is_repeated:
        target = getattr(message, fd.name)
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            target.add().CopyFrom(value)
        else:
            target.append(value)
    elif fd.type == FieldDescriptor.TYPE_MESSAGE:
        getattr(message, fd.name).CopyFrom(value)
    else:
        setattr(message, fd.name, value)


def _draw_message(
    data: st.DataObject, fed: Federation, round_id: int, descriptor: Descriptor, depth: int = 0
) -> Message:
    message = GetMessageClass(descriptor)()
    for fd in descriptor.fields:
        if depth > 2 or not data.draw(st.booleans()):
            continue
        repeats = data.draw(st.integers(1, 4)) if fd.is_repeated else 1
        for _ in range(repeats):
            _assign(message, fd, _draw_value(data, fed, round_id, fd, depth))
    return message


def _mutate(data: st.DataObject, fed: Federation, round_id: int, message: Message) -> bytes:
    """1-3 mutations of a well-formed message: a field set, cleared or appended to (at
    any depth), then possibly the wire bytes flipped, cut or spliced."""
    for _ in range(data.draw(st.integers(1, 3))):
        target = message
        while True:  # walk into a nested message now and then
            fds = target.DESCRIPTOR.fields
            fd = data.draw(st.sampled_from(tuple(fds)))
            nested = fd.type == FieldDescriptor.TYPE_MESSAGE
            if nested and not fd.is_repeated and data.draw(st.booleans()):
                target = getattr(target, fd.name)
                continue
            if (nested and fd.is_repeated and len(getattr(target, fd.name))) and data.draw(
                st.booleans()
            ):
                items = getattr(target, fd.name)
                target = items[data.draw(st.integers(0, len(items) - 1))]
                continue
            break
        action = data.draw(st.sampled_from(["set", "set", "clear", "append"]))
        if action == "clear":
            target.ClearField(fd.name)
        elif action == "append" and fd.is_repeated:
            _assign(target, fd, _draw_value(data, fed, round_id, fd, 1))
        elif fd.is_repeated:
            target.ClearField(fd.name)
            _assign(target, fd, _draw_value(data, fed, round_id, fd, 1))
        else:
            _assign(target, fd, _draw_value(data, fed, round_id, fd, 1))
    wire = message.SerializeToString()
    if wire and data.draw(st.integers(0, 3)) == 0:
        wire = _mutate_bytes(data, wire)
    return wire


def _mutate_bytes(data: st.DataObject, blob: bytes) -> bytes:
    """Bytes flipped (at the start, where headers are, or anywhere), cut or spliced."""
    if not blob:
        return data.draw(st.binary(max_size=16))
    how = data.draw(st.sampled_from(["flip", "flip", "cut", "splice"]))
    if how == "flip":
        out = bytearray(blob)
        for _ in range(data.draw(st.integers(1, 4))):
            head = data.draw(st.booleans())
            at = data.draw(st.integers(0, min(len(out), 96) - 1 if head else len(out) - 1))
            out[at] ^= data.draw(st.integers(1, 255))
        return bytes(out)
    at = data.draw(st.integers(0, len(blob) - 1))
    if how == "cut":
        return blob[:at]
    return blob[:at] + data.draw(st.binary(min_size=1, max_size=12)) + blob[at:]


def _requests(
    data: st.DataObject, fed: Federation, method: MethodDescriptor
) -> bytes | list[bytes]:
    round_id, _ = fed.live()
    kinds = ["random", "mutated", "mutated", "wire"]
    if method.client_streaming:
        kinds.append("payload")  # only the chunks' data, everything else left valid
    kind = data.draw(st.sampled_from(kinds), label="kind")
    count = 1
    if method.client_streaming:
        count = data.draw(st.integers(0, 4), label="stream length")
    if kind == "wire":
        pieces = [data.draw(st.binary(min_size=1, max_size=64)) for _ in range(max(count, 1))]
    elif kind == "payload":
        pieces = []
        for message in _template(fed, method, round_id):
            chunk = pb.VectorChunk()
            chunk.CopyFrom(message)
            if data.draw(st.booleans()):
                chunk.data = _mutate_bytes(data, chunk.data)
            pieces.append(chunk.SerializeToString())
    elif kind == "random":
        pieces = [
            _draw_message(data, fed, round_id, method.input_type).SerializeToString()
            for _ in range(count)
        ]
    else:
        template = _template(fed, method, round_id)
        if method.client_streaming:
            keep = data.draw(st.integers(0, len(template)))
            template = template[:keep] if data.draw(st.booleans()) else template
        pieces = []
        for index, message in enumerate(template):
            if index == 0 or data.draw(st.booleans()):
                pieces.append(_mutate(data, fed, round_id, message))
            else:
                pieces.append(message.SerializeToString())
    return pieces if method.client_streaming else pieces[0]


def check(outcome: Outcome) -> None:
    assert outcome.code in SPECIFIC, f"{outcome.method}: {outcome.code.name} {outcome.details!r}"
    if outcome.code is not Code.OK:
        assert outcome.details.strip(), f"{outcome.method}: {outcome.code.name} without a message"
    if outcome.code is Code.DEADLINE_EXCEEDED:
        assert "StageClosedError" in outcome.details, f"{outcome.method} hung: {outcome.details!r}"
    assert outcome.seconds < CALL_TIMEOUT_S, f"{outcome.method} took {outcome.seconds:.1f}s"


# --- the runs ---------------------------------------------------------------------------------


def _weighted_mean(fed: Federation) -> Any:
    ids = fed.honest
    total = sum(fed.weights[c] for c in ids)
    return (
        sum(fed.weights[c] * np.clip(fed.updates[c], -CLIP, CLIP).astype(np.float64) for c in ids)
        / total
    )


def fuzz(root: Path, mode: str, rounds: int, examples: int) -> Federation:
    fed = Federation(root, mode, rounds)
    try:
        # every handler at least once, whatever the budget: its template, and bad wire bytes
        for method in METHODS:
            round_id, _ = fed.live()
            template = [m.SerializeToString() for m in _template(fed, method, round_id)]
            check(fed.call(method, template if method.client_streaming else template[0]))
            check(fed.call(method, [b"\xff\xff"] if method.client_streaming else b"\xff\xff"))

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(data=st.data())
        def one_request(data: st.DataObject) -> None:
            method = data.draw(st.sampled_from(METHODS), label="method")
            check(fed.call(method, _requests(data, fed, method)))

        one_request()
    finally:
        fed.close(wait_s=rounds * 10 * STAGE_TIMEOUT_S + 30)
    assert len(fed.results) == rounds, f"the honest clients finished {sorted(fed.results)}"
    expected = _weighted_mean(fed)
    for round_id, results in fed.results.items():
        for result in results:
            assert sorted(result.survivors) == sorted(fed.honest), (round_id, result.survivors)
            bound = result.error_bound if mode == "secagg" else 1e-6
            assert np.max(np.abs(result.weighted_mean - expected)) <= bound, round_id
        assert all(np.array_equal(r.weighted_mean, results[0].weighted_mean) for r in results)
    return fed


@pytest.mark.parametrize("mode", ["secagg", "ckks"])
def test_fuzzed_requests_get_a_specific_status_and_the_round_finishes(
    tmp_path: Path, mode: str
) -> None:
    fed = fuzz(tmp_path, mode, rounds=1, examples=25)
    assert {o.method for o in fed.outcomes} == {m.name for m in METHODS}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["secagg", "ckks"])
def test_fuzzed_requests_long_run(tmp_path: Path, mode: str) -> None:
    fed = fuzz(tmp_path, mode, rounds=4, examples=1500)
    codes = {o.code for o in fed.outcomes}
    assert Code.INVALID_ARGUMENT in codes and Code.PERMISSION_DENIED in codes


# --- what the fuzzer found, pinned ---------------------------------------------------------


async def _ends_upload_early(ctx: Context) -> bool:
    """Mallory half-closes its upload stream after the first of three chunks. The server
    used to keep the call open until the stage closed (a long poll on an upload that
    could no longer finish: its author was dropped, or told OK in CKKS and plaintext
    mode). Now the call is refused at once and the client resumes where the server says."""
    mal = ctx.mallory
    await mal.advance_to_masked_input()
    chunks = list(mal.payload().chunks())
    assert len(chunks) == 3
    started = time.monotonic()
    await refused(mal.send_chunks(chunks[:1]), Code.INVALID_ARGUMENT, "ended", "GetUploadStatus")
    assert time.monotonic() - started < 1.0
    status = await mal.upload_status()
    assert status.next_index == 1 and not status.complete
    return await mal.finish()  # resumes at chunk 1


def test_an_upload_stream_that_ends_early_is_refused_at_once(tmp_path: Path) -> None:
    survives, _ = asyncio.run(run_case(tmp_path, Case(_ends_upload_early, dimension=3000)))
    assert survives
