"""Bad input over real gRPC: each mistake gets its own status and a message naming it.

Why a matrix over a live service: the state machines already refuse bad messages in unit
tests; what only the service can show is that the refusal reaches the caller as the
right gRPC status with a message that says what to fix, and that the round goes on for
every other client. Each case starts a server on loopback with mutual TLS, runs honest
SDK clients for every enrolled id but one, and lets the remaining enrolled client,
"mallory", drive its own ClientSession over a bare stub: valid messages where it needs
to reach a stage, the bad request at the right moment, and (where it can) the valid
message afterwards. The honest clients must end with the exact weighted mean of the
round's survivors.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
import pytest
from google.protobuf.message import Message
from service_harness import client_for, make_keys, raw_stub, running_server, settings_for

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
                self.round_id, self.client_id, masked.payload, int(self.spec.chunk_bytes)
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


# --- the cases ---------------------------------------------------------------------------
# Each returns whether mallory ends the round as a survivor.


async def unknown_round(ctx: Context) -> bool:
    mal = ctx.mallory
    bad = copy_of(mal.advertisement())
    bad.round_id = mal.round_id + 1000
    await refused(mal.advertise(bad), Code.NOT_FOUND, f"round {bad.round_id}", "GetRound")
    await refused(
        mal.stub.GetUploadStatus(
            pb.UploadStatusRequest(round_id=bad.round_id, client_id=mal.client_id),
            timeout=CALL_TIMEOUT_S,
        ),
        Code.NOT_FOUND,
        "unknown",
    )
    return await mal.finish()


async def wrong_stage(ctx: Context) -> bool:
    """Messages of later stages while the round waits for key advertisements."""
    mal = ctx.mallory
    confirm = pb.ConfirmSurvivorsRequest(
        round_id=mal.round_id,
        signature=pb.SurvivorSignature(client_id=mal.client_id, signature=bytes(64)),
    )
    await refused(
        mal.stub.ConfirmSurvivors(confirm, timeout=CALL_TIMEOUT_S),
        Code.FAILED_PRECONDITION,
        "advertise-keys",
        "not open",
    )
    unmask = pb.UnmaskRequest(round_id=mal.round_id, client_id=mal.client_id)
    await refused(
        mal.stub.Unmask(unmask, timeout=CALL_TIMEOUT_S), Code.FAILED_PRECONDITION, "not open"
    )
    chunk = pb.VectorChunk(
        round_id=mal.round_id, client_id=mal.client_id, index=0, data=bytes(CHUNK_BYTES)
    )
    await refused(mal.send_chunks([chunk]), Code.FAILED_PRECONDITION, "masked-input", "not open")
    return await mal.finish()


async def duplicate_advertisement(ctx: Context) -> bool:
    """Two differently keyed, validly signed advertisements race; one is ALREADY_EXISTS.

    The honest clients wait, so the stage is open for both. The accepted one's exact
    replay is a resend: it rejoins the long poll and, like the original, is answered with
    the neighbours' keys; so is a replay after the stage closed.
    """
    mal = ctx.mallory
    assert mal.session is not None
    second_session = mal.new_session()
    requests = {"first": mal.advertisement(), "second": mal.advertisement(second_session)}
    assert requests["first"] != requests["second"]
    calls = {name: asyncio.ensure_future(mal.advertise(req)) for name, req in requests.items()}
    done, _ = await asyncio.wait(
        calls.values(), return_when=asyncio.FIRST_COMPLETED, timeout=CALL_TIMEOUT_S
    )
    assert len(done) == 1, "the stage is open: the accepted advertisement must long-poll"
    rejected = next(name for name, call in calls.items() if call in done)
    accepted = "second" if rejected == "first" else "first"
    await refused(calls[rejected], Code.ALREADY_EXISTS, mal.client_id, "already sent")
    if accepted == "second":
        mal.session, mal.advert = second_session, requests["second"]
    replay = asyncio.ensure_future(mal.advertise(copy_of(requests[accepted])))
    await asyncio.sleep(0.2)
    assert not replay.done() or replay.exception() is None, "a resend must not be an error"
    ctx.honest_may_start.set()
    original, resent = await calls[accepted], await replay
    assert isinstance(original, pb.NeighbourKeys) and original.advertisements
    assert resent == original
    late_replay = await mal.advertise(copy_of(requests[accepted]))  # the round is at share-keys
    assert late_replay == original
    mal.neighbour_keys = original
    return await mal.finish()


async def duplicate_after_stage_closed(ctx: Context) -> bool:
    """A different second advertisement once mallory's first was accepted and the stage closed."""
    mal = ctx.mallory
    await mal.advance_to_share_keys()
    other = mal.advertisement(mal.new_session())
    await refused(mal.advertise(other), Code.ALREADY_EXISTS, "already sent")
    return await mal.finish()


async def claims_another_client(ctx: Context) -> bool:
    """Every message naming an id other than the certificate's CN is refused."""
    mal = ctx.mallory
    victim = ctx.ids[0]
    await refused(
        mal.stub.GetRound(pb.GetRoundRequest(client_id=victim), timeout=CALL_TIMEOUT_S),
        Code.PERMISSION_DENIED,
        victim,
        "only speak for itself",
    )
    bad = copy_of(mal.advertisement())
    bad.advertisement.client_id = victim
    await refused(mal.advertise(bad), Code.PERMISSION_DENIED, "only speak for itself")
    await mal.advance_to_share_keys()
    bad_shares = copy_of(mal.share_request())
    bad_shares.client_id = victim
    await refused(mal.share(bad_shares), Code.PERMISSION_DENIED, "only speak for itself")
    await mal.advance_to_masked_input()
    chunks = list(mal.payload().chunks())
    for chunk in chunks:
        chunk.client_id = victim
    await refused(mal.send_chunks(chunks), Code.PERMISSION_DENIED, "only speak for itself")
    return await mal.finish()


async def certificate_not_on_roster(ctx: Context) -> bool:
    """A certificate from the federation's CA for an id the roster does not hold."""
    mal = ctx.mallory
    stranger = "org-99"
    stub = foreign_channel(ctx.keys, ctx.port, stranger)
    await refused(
        stub.GetRound(pb.GetRoundRequest(client_id=stranger), timeout=CALL_TIMEOUT_S),
        Code.PERMISSION_DENIED,
        stranger,
        "not enrolled",
    )
    bad = copy_of(mal.advertisement(mal.new_session()))
    bad.advertisement.client_id = stranger
    await refused(
        stub.AdvertiseKeys(bad, timeout=CALL_TIMEOUT_S), Code.PERMISSION_DENIED, "not enrolled"
    )
    return await mal.finish()


async def certificate_not_pinned(ctx: Context) -> bool:
    """A second certificate for mallory's own id (same CN, other fingerprint).

    It carries a validly signed advertisement (a thief with the identity key but not the
    enrolled TLS key); it must not count, so mallory's own, different one is accepted.
    """
    mal = ctx.mallory
    stub = foreign_channel(ctx.keys, ctx.port, mal.client_id)
    await refused(
        stub.GetRound(pb.GetRoundRequest(client_id=mal.client_id), timeout=CALL_TIMEOUT_S),
        Code.UNAUTHENTICATED,
        "not the one it enrolled with",
    )
    stolen = mal.advertisement(mal.new_session())
    await refused(
        stub.AdvertiseKeys(stolen, timeout=CALL_TIMEOUT_S),
        Code.UNAUTHENTICATED,
        "not the one it enrolled with",
    )
    return await mal.finish()


async def bad_advertisement_signature(ctx: Context) -> bool:
    mal = ctx.mallory
    bad = copy_of(mal.advertisement())
    signature = bytearray(bad.advertisement.signature)
    signature[0] ^= 1
    bad.advertisement.signature = bytes(signature)
    await refused(mal.advertise(bad), Code.UNAUTHENTICATED, "signature")
    foreign = copy_of(mal.advertisement())
    foreign.advertisement.signature = mal.advertisement(mal.new_session()).advertisement.signature
    await refused(mal.advertise(foreign), Code.UNAUTHENTICATED, "signature")
    return await mal.finish()


async def wrong_length_keys(ctx: Context) -> bool:
    mal = ctx.mallory
    short_key = copy_of(mal.advertisement())
    short_key.advertisement.masking_key = short_key.advertisement.masking_key[:31]
    await refused(mal.advertise(short_key), Code.INVALID_ARGUMENT, "32 bytes")
    long_key = copy_of(mal.advertisement())
    long_key.advertisement.encryption_key += b"\x00"
    await refused(mal.advertise(long_key), Code.INVALID_ARGUMENT, "32 bytes")
    short_commitment = copy_of(mal.advertisement())
    short_commitment.advertisement.self_mask_commitment = b"\x01" * 16
    await refused(mal.advertise(short_commitment), Code.INVALID_ARGUMENT, "commitment")
    return await mal.finish()


async def shares_not_for_the_neighbours(ctx: Context) -> bool:
    """k=2 of n=6: a share for a non-neighbour, a missing share, a share in another's name."""
    mal = ctx.mallory
    assert mal.session is not None
    await mal.advance_to_share_keys()
    genuine = mal.share_request()
    neighbours = mal.session.neighbours
    assert {s.recipient for s in genuine.shares} == set(neighbours)
    outsider = sorted(set(ctx.ids) - neighbours - {mal.client_id})[0]
    redirected = copy_of(genuine)
    redirected.shares[0].recipient = outsider
    await refused(mal.share(redirected), Code.INVALID_ARGUMENT, "neighbour", outsider)
    missing = copy_of(genuine)
    del missing.shares[-1]
    await refused(mal.share(missing), Code.INVALID_ARGUMENT, "exactly one share")
    extra = copy_of(genuine)
    extra.shares.append(
        pb.EncryptedShare(
            sender=mal.client_id, recipient=outsider, ciphertext=genuine.shares[0].ciphertext
        )
    )
    await refused(mal.share(extra), Code.INVALID_ARGUMENT, "neighbour")
    forged_sender = copy_of(genuine)
    forged_sender.shares[0].sender = ctx.ids[0]
    await refused(mal.share(forged_sender), Code.INVALID_ARGUMENT, "claims sender")
    return await mal.finish()


async def upload_wrong_total_bytes(ctx: Context) -> bool:
    mal = ctx.mallory
    await mal.advance_to_masked_input()
    chunks = list(mal.payload().chunks())
    assert len(chunks) >= 3
    for chunk in chunks:
        chunk.total_bytes += 4
    await refused(mal.send_chunks(chunks), Code.INVALID_ARGUMENT, "expects exactly")
    return await mal.finish()


async def upload_chunk_out_of_order(ctx: Context) -> bool:
    """Chunk 2 after chunk 0 is refused; the upload resumes where the server says."""
    mal = ctx.mallory
    await mal.advance_to_masked_input()
    chunks = list(mal.payload().chunks())
    await refused(
        mal.send_chunks([chunks[0], chunks[2]]), Code.INVALID_ARGUMENT, "out of order", "chunk 1"
    )
    status = await mal.upload_status()
    assert not status.complete and status.next_index <= 1
    return await mal.finish()  # resumes from status.next_index


async def upload_short_chunk(ctx: Context) -> bool:
    mal = ctx.mallory
    await mal.advance_to_masked_input()
    first = list(mal.payload().chunks())[0]
    first.data = first.data[:-8]
    await refused(mal.send_chunks([first]), Code.INVALID_ARGUMENT, "bytes; expected")
    return await mal.finish()


def corrupt_digest(chunks: list[pb.VectorChunk]) -> list[pb.VectorChunk]:
    chunks[-1].sha256 = hashlib.sha256(b"not the payload").digest()
    return chunks


async def upload_digest_mismatch(ctx: Context) -> bool:
    """Mallory gives up after the refusal: the stage closes by deadline without it, its
    half-added upload is rolled back, and its pairwise masks are removed at unmasking."""
    mal = ctx.mallory
    await mal.advance_to_masked_input()
    chunks = corrupt_digest(list(mal.payload().chunks()))
    await refused(mal.send_chunks(chunks), Code.INVALID_ARGUMENT, "digest mismatch")
    return False


async def upload_digest_mismatch_then_resend(ctx: Context) -> bool:
    """After a digest mismatch the message says "re-send the upload": doing so must work."""
    mal = ctx.mallory
    await mal.advance_to_masked_input()
    chunks = corrupt_digest(list(mal.payload().chunks()))
    await refused(mal.send_chunks(chunks), Code.INVALID_ARGUMENT, "re-send")
    return await mal.finish()  # GetUploadStatus, then the chunks from where it points


async def oversized_chunk(ctx: Context) -> bool:
    mal = ctx.mallory
    await mal.advance_to_masked_input()
    first = list(mal.payload().chunks())[0]
    first.data = bytes(OVERSIZED_BYTES)
    await refused(mal.send_chunks([first]), Code.RESOURCE_EXHAUSTED, "larger than max")
    return await mal.finish()


async def oversized_advertisement(ctx: Context) -> bool:
    mal = ctx.mallory
    bad = copy_of(mal.advertisement())
    bad.advertisement.signature = bytes(OVERSIZED_BYTES)
    await refused(mal.advertise(bad), Code.RESOURCE_EXHAUSTED, "larger than max")
    return await mal.finish()


async def late_advertisement(ctx: Context) -> bool:
    """Mallory sleeps through the advertise-keys deadline, then advertises."""
    mal = ctx.mallory
    loop = asyncio.get_running_loop()
    give_up = loop.time() + 3 * STAGE_TIMEOUT_S
    while loop.time() < give_up:
        try:
            info = await mal.stub.GetRound(
                pb.GetRoundRequest(client_id=mal.client_id), timeout=CALL_TIMEOUT_S
            )
        except grpc.aio.AioRpcError:
            break  # the round already ended: no round is open any more
        if info.stage != pb.ROUND_STAGE_ADVERTISE_KEYS:
            break
        await asyncio.sleep(0.02)
    else:
        pytest.fail("the advertise-keys stage never closed by its deadline")
    await refused(mal.advertise(), Code.DEADLINE_EXCEEDED, "advertise-keys", "closed")
    return False


async def bad_survivor_signature(ctx: Context) -> bool:
    mal = ctx.mallory
    await mal.advance_to_consistency()
    genuine = mal.confirm_request()
    bad = copy_of(genuine)
    bad.signature.signature = bytes(64)
    await refused(
        mal.stub.ConfirmSurvivors(bad, timeout=CALL_TIMEOUT_S), Code.UNAUTHENTICATED, "signature"
    )
    await mal.advance_to_unmask(genuine)
    return await mal.finish()


async def unmask_wrong_shares(ctx: Context) -> bool:
    mal = ctx.mallory
    await mal.advance_to_unmask()
    genuine = mal.unmask_request()
    assert genuine.self_mask_shares
    missing = copy_of(genuine)
    del missing.self_mask_shares[0]
    await refused(
        mal.stub.Unmask(missing, timeout=CALL_TIMEOUT_S), Code.INVALID_ARGUMENT, "self-mask"
    )
    short = copy_of(genuine)
    short.self_mask_shares[0].share = short.self_mask_shares[0].share[:-1]
    await refused(mal.stub.Unmask(short, timeout=CALL_TIMEOUT_S), Code.INVALID_ARGUMENT, "bytes")
    ack = await mal.stub.Unmask(genuine, timeout=CALL_TIMEOUT_S)
    assert ack.stage == pb.ROUND_STAGE_DONE
    return True


@dataclass(frozen=True)
class Case:
    attack: Callable[[Context], Awaitable[bool]]
    n: int = 4
    dimension: int = 1000
    hold_honest: bool = False  # the honest clients start only when the attack says so
    round_kwargs: dict[str, object] = field(default_factory=dict)


UPLOAD = {"dimension": 3000}  # 12004 bytes: three chunks of 4096

CASES = [
    pytest.param(Case(unknown_round), id="unknown-round->NOT_FOUND"),
    pytest.param(Case(wrong_stage), id="wrong-stage->FAILED_PRECONDITION"),
    pytest.param(
        Case(duplicate_advertisement, hold_honest=True),
        id="duplicate-advertisement->ALREADY_EXISTS,exact-replay->resend",
    ),
    pytest.param(
        Case(duplicate_after_stage_closed),
        id="duplicate-after-close->ALREADY_EXISTS",
    ),
    pytest.param(Case(claims_another_client), id="claims-another-id->PERMISSION_DENIED"),
    pytest.param(Case(certificate_not_on_roster), id="cert-not-on-roster->PERMISSION_DENIED"),
    pytest.param(Case(certificate_not_pinned), id="cert-not-pinned->UNAUTHENTICATED"),
    pytest.param(Case(bad_advertisement_signature), id="bad-signature->UNAUTHENTICATED"),
    pytest.param(Case(wrong_length_keys), id="wrong-length-keys->INVALID_ARGUMENT"),
    pytest.param(
        Case(shares_not_for_the_neighbours, n=6, round_kwargs={"neighbours": 2, "threshold": 2}),
        id="share-for-non-neighbour->INVALID_ARGUMENT",
    ),
    pytest.param(
        Case(upload_wrong_total_bytes, **UPLOAD), id="upload-total-bytes->INVALID_ARGUMENT"
    ),
    pytest.param(
        Case(upload_chunk_out_of_order, **UPLOAD), id="chunk-out-of-order->INVALID_ARGUMENT"
    ),
    pytest.param(Case(upload_short_chunk, **UPLOAD), id="chunk-wrong-length->INVALID_ARGUMENT"),
    pytest.param(Case(upload_digest_mismatch, **UPLOAD), id="digest-mismatch->INVALID_ARGUMENT"),
    pytest.param(
        Case(upload_digest_mismatch_then_resend, **UPLOAD),
        id="digest-mismatch-then-resend->accepted",
    ),
    pytest.param(Case(oversized_chunk, **UPLOAD), id="oversized-chunk->RESOURCE_EXHAUSTED"),
    pytest.param(Case(oversized_advertisement), id="oversized-unary->RESOURCE_EXHAUSTED"),
    pytest.param(Case(late_advertisement), id="late-after-deadline->DEADLINE_EXCEEDED"),
    pytest.param(Case(bad_survivor_signature), id="bad-survivor-signature->UNAUTHENTICATED"),
    pytest.param(Case(unmask_wrong_shares), id="unmask-wrong-shares->INVALID_ARGUMENT"),
]


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


@pytest.mark.parametrize("case", CASES)
def test_bad_request_gets_its_status_and_the_round_goes_on(tmp_path: Path, case: Case) -> None:
    asyncio.run(run_case(tmp_path, case))
