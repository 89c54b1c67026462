"""Mallory, an enrolled client that speaks the raw protocol over a bare stub, and the
runner that starts a live service with honest SDK clients beside her: shared by the bad-input
matrix (tests/server/test_service_bad_input.py), the RPC fuzzer and the hardening tests.
run_case checks that the honest clients end with the exact weighted mean of the survivors."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
import pytest
from google.protobuf.message import Message

from fedveil.clients.credentials import ClientCredentials
from fedveil.clients.streams import ChunkedPayload, ResultAssembler
from fedveil.clients.transport import AggregateResult
from fedveil.proto import aggregation_pb2 as pb
from fedveil.proto import aggregation_pb2_grpc as pb_grpc
from fedveil.proto import convert
from fedveil.secagg.crypto.identity import VerifyingIdentity
from fedveil.secagg.protocol import messages as m
from fedveil.secagg.protocol.client import ClientSession
from fedveil.secagg.protocol.config import ClientPolicy
from fedveil.server.keys_store import client_dir, load_ca, load_roster
from fedveil.server.pki import issue_client_certificate
from tests.helpers.service_harness import (
    client_for,
    make_keys,
    raw_stub,
    running_server,
    settings_for,
)

STAGE_TIMEOUT_S = 3.0
CALL_TIMEOUT_S = 20.0  # bounds every call mallory makes (stage calls are long polls)
CASE_TIMEOUT_S = 40.0
CHUNK_BYTES = 4096  # the smallest the settings allow: several chunks at a small dimension
OVERSIZED_BYTES = CHUNK_BYTES + 64 * 1024 + 4096  # above max_message_bytes
CLIP = 1.0

Code = grpc.StatusCode
M = TypeVar("M", bound=Message)


# --- mallory: an enrolled client speaking the raw protocol ------------------------------


def copy_of(message: M) -> M:
    clone = type(message)()
    clone.CopyFrom(message)
    return clone


async def refused(call: Awaitable[Any], code: grpc.StatusCode, *phrases: str) -> str:
    """Await a call that must fail with `code` and a message containing every phrase."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    error = info.value
    details = error.details() or ""
    assert error.code() == code, f"expected {code.name}, got {error.code().name}: {details!r}"
    assert details.strip(), f"{code.name} without a message"
    for phrase in phrases:
        assert phrase.lower() in details.lower(), f"{phrase!r} not in {details!r}"
    return details


@dataclass
class Mallory:
    """Walks its own ClientSession through the stage RPCs, one call at a time."""

    keys: Path
    client_id: str
    port: int
    update: np.ndarray
    weight: int
    channel: grpc.aio.Channel = field(init=False)
    stub: pb_grpc.AggregationStub = field(init=False)
    credentials: ClientCredentials = field(init=False)
    roster: dict[str, VerifyingIdentity] = field(init=False)
    spec: pb.RoundSpec | None = None
    session: ClientSession | None = None
    advert: pb.AdvertiseKeysRequest | None = None
    neighbour_keys: pb.NeighbourKeys | None = None
    shares: pb.ShareKeysRequest | None = None
    relayed: pb.RelayedShares | None = None
    upload: ChunkedPayload | None = None
    survivor_set: pb.SurvivorSet | None = None
    instructions: pb.UnmaskInstructions | None = None

    def __post_init__(self) -> None:
        self.channel, self.stub = raw_stub(self.keys, self.client_id, self.port)
        self.credentials = ClientCredentials.load(client_dir(self.keys, self.client_id))
        self.roster = load_roster(self.keys).identities()

    @property
    def round_id(self) -> int:
        assert self.spec is not None
        return int(self.spec.round_id)

    async def join(self) -> None:
        info = await self.stub.GetRound(
            pb.GetRoundRequest(client_id=self.client_id), timeout=CALL_TIMEOUT_S
        )
        assert info.stage == pb.ROUND_STAGE_ADVERTISE_KEYS
        self.spec = info.spec
        self.session = self.new_session()

    def new_session(self) -> ClientSession:
        """A fresh session (fresh keys) for the same round and the same enrolled identity."""
        assert self.spec is not None
        session = ClientSession(
            convert.spec_to_config(self.spec),
            self.client_id,
            self.credentials.identity,
            self.roster,
            ClientPolicy(min_cohort=3, min_threshold=2),
        )
        session.set_input(self.update, self.weight)
        return session

    def advertisement(self, session: ClientSession | None = None) -> pb.AdvertiseKeysRequest:
        """The signed advertisement of `session` (default: mallory's own, made once)."""
        if session is not None:
            return pb.AdvertiseKeysRequest(
                round_id=self.round_id,
                advertisement=convert.advertisement_to_pb(session.advertise()),
            )
        if self.advert is None:
            assert self.session is not None
            self.advert = self.advertisement(self.session)
        return self.advert

    def share_request(self) -> pb.ShareKeysRequest:
        if self.shares is None:
            assert self.session is not None and self.neighbour_keys is not None
            reply = self.session.handle(convert.neighbour_keys_from_pb(self.neighbour_keys))
            assert isinstance(reply, m.ShareKeysResponse)
            self.shares = convert.share_keys_to_pb(self.round_id, reply)
        return self.shares

    def payload(self) -> ChunkedPayload:
        if self.upload is None:
            assert self.session is not None and self.relayed is not None
            masked = self.session.handle(convert.relayed_from_pb(self.relayed))
            assert isinstance(masked, m.MaskedInput)
            assert self.spec is not None
            self.upload = ChunkedPayload(
                self.round_id,
                self.client_id,
                masked.payload,
                int(self.spec.chunk_bytes),
                session_id=self.session.session_id,
            )
        return self.upload

    # --- stage calls: valid by default -------------------------------------------------

    def advertise(self, request: pb.AdvertiseKeysRequest | None = None) -> Awaitable[Any]:
        return self.stub.AdvertiseKeys(request or self.advertisement(), timeout=CALL_TIMEOUT_S)

    def share(self, request: pb.ShareKeysRequest | None = None) -> Awaitable[Any]:
        return self.stub.ShareKeys(request or self.share_request(), timeout=CALL_TIMEOUT_S)

    def send_chunks(self, chunks: list[pb.VectorChunk]) -> Awaitable[Any]:
        return self.stub.UploadMaskedInput(iter(chunks), timeout=CALL_TIMEOUT_S)

    async def upload_status(self) -> pb.UploadStatus:
        return await self.stub.GetUploadStatus(
            pb.UploadStatusRequest(round_id=self.round_id, client_id=self.client_id),
            timeout=CALL_TIMEOUT_S,
        )

    def confirm_request(self) -> pb.ConfirmSurvivorsRequest:
        assert self.session is not None and self.survivor_set is not None
        signature = self.session.handle(convert.survivors_from_pb(self.survivor_set))
        assert isinstance(signature, m.ConsistencySignature)
        return pb.ConfirmSurvivorsRequest(
            round_id=self.round_id, signature=convert.signature_to_pb(signature)
        )

    def unmask_request(self) -> pb.UnmaskRequest:
        assert self.session is not None and self.instructions is not None
        reveal = self.session.handle(convert.instructions_from_pb(self.instructions))
        assert isinstance(reveal, m.UnmaskResponse)
        return convert.unmask_to_pb(self.round_id, reveal)

    async def advance_to_share_keys(self) -> None:
        if self.neighbour_keys is None:
            self.neighbour_keys = await self.advertise()

    async def advance_to_masked_input(self) -> None:
        await self.advance_to_share_keys()
        if self.relayed is None:
            self.relayed = await self.share()

    async def advance_to_consistency(self) -> None:
        await self.advance_to_masked_input()
        if self.survivor_set is None:
            status = await self.upload_status()
            assert not status.complete
            self.survivor_set = await self.send_chunks(
                list(self.payload().chunks(status.next_index))
            )

    async def advance_to_unmask(self, confirm: pb.ConfirmSurvivorsRequest | None = None) -> None:
        await self.advance_to_consistency()
        if self.instructions is None:
            self.instructions = await self.stub.ConfirmSurvivors(
                confirm or self.confirm_request(), timeout=CALL_TIMEOUT_S
            )

    async def finish(self) -> bool:
        """Take part validly in every remaining stage; True: mallory is a survivor."""
        await self.advance_to_unmask()
        ack = await self.stub.Unmask(self.unmask_request(), timeout=CALL_TIMEOUT_S)
        assert ack.stage == pb.ROUND_STAGE_DONE
        assembler = ResultAssembler(self.round_id)
        async for chunk in self.stub.GetResult(
            pb.GetResultRequest(round_id=self.round_id, client_id=self.client_id),
            timeout=CALL_TIMEOUT_S,
        ):
            assembler.add(chunk)
        header, _ = assembler.finish()
        assert self.client_id in header.survivors
        return True


@dataclass
class Context:
    mallory: Mallory
    keys: Path
    port: int
    ids: list[str]
    honest_may_start: asyncio.Event


def foreign_channel(keys: Path, port: int, common_name: str) -> pb_grpc.AggregationStub:
    """A stub whose TLS certificate the federation's CA signed for `common_name` just now.

    The certificate chains (the handshake succeeds) but the roster does not pin it.
    """
    ca = load_ca(keys)
    issued = issue_client_certificate(ca, common_name)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.cert_pem(),
        private_key=issued.key_pem(),
        certificate_chain=issued.cert_pem(),
    )
    return pb_grpc.AggregationStub(grpc.aio.secure_channel(f"localhost:{port}", credentials))


@dataclass(frozen=True)
class Case:
    attack: Callable[[Context], Awaitable[bool]]
    n: int = 4
    dimension: int = 1000
    hold_honest: bool = False  # the honest clients start only when the attack says so
    round_kwargs: dict[str, object] = field(default_factory=dict)


# --- the runner ----------------------------------------------------------------------------


def weighted_mean(updates: dict[str, np.ndarray], weights: dict[str, int]) -> np.ndarray:
    total = sum(weights[c] for c in updates)
    return (
        sum(weights[c] * np.clip(updates[c], -CLIP, CLIP).astype(np.float64) for c in updates)
        / total
    )


async def run_case(root: Path, case: Case) -> tuple[bool, dict[str, AggregateResult]]:
    keys, ids = make_keys(root, case.n)
    settings = settings_for(
        root,
        keys,
        dimension=case.dimension,
        stage_timeout_s=STAGE_TIMEOUT_S,
        rounds=1,
        chunk_bytes=CHUNK_BYTES,
        clip=CLIP,
        **case.round_kwargs,
    )
    mallory_id = ids[-1]
    rng = np.random.default_rng(case.n * 7919 + case.dimension)
    updates = {c: rng.normal(0, 0.6, case.dimension).astype(np.float32) for c in ids}
    weights = {c: int(rng.integers(1, 500)) for c in ids}
    async with running_server(settings) as server:
        honest = {c: client_for(keys, c, server.port) for c in ids if c != mallory_id}
        mallory = Mallory(keys, mallory_id, server.port, updates[mallory_id], weights[mallory_id])
        may_start = asyncio.Event()
        if not case.hold_honest:
            may_start.set()

        async def run_honest() -> list[AggregateResult]:
            await may_start.wait()
            return await asyncio.gather(
                *(client.run_round(updates[c], weights[c]) for c, client in honest.items())
            )

        async def attack() -> bool:
            try:
                await mallory.join()
                return await case.attack(Context(mallory, keys, server.port, ids, may_start))
            finally:
                may_start.set()

        try:
            async with asyncio.timeout(CASE_TIMEOUT_S), asyncio.TaskGroup() as group:
                honest_task = group.create_task(run_honest())
                attack_task = group.create_task(attack())
        finally:
            for client in honest.values():
                await client.close()
            await mallory.channel.close()
    results = dict(zip(honest, honest_task.result(), strict=True))
    survives = attack_task.result()
    survivors = sorted(honest) + ([mallory_id] if survives else [])
    expected = weighted_mean({c: updates[c] for c in survivors}, weights)
    for client_id, result in results.items():
        assert sorted(result.survivors) == survivors, client_id
        assert result.total_weight == sum(weights[c] for c in survivors)
        error = float(np.max(np.abs(result.weighted_mean - expected)))
        assert error <= result.error_bound, (client_id, error, result.error_bound)
    first = next(iter(results.values()))
    assert all(np.array_equal(r.weighted_mean, first.weighted_mean) for r in results.values())
    return survives, results
