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
from pathlib import Path

import grpc
import pytest

from fedveil.proto import aggregation_pb2 as pb
from tests.helpers.mallory import (
    CALL_TIMEOUT_S,
    CHUNK_BYTES,
    OVERSIZED_BYTES,
    STAGE_TIMEOUT_S,
    Case,
    Code,
    Context,
    copy_of,
    foreign_channel,
    refused,
    run_case,
)

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
    chunks[-1].checksum = bytes(b ^ 0x5A for b in chunks[-1].checksum)
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


@pytest.mark.parametrize("case", CASES)
def test_bad_request_gets_its_status_and_the_round_goes_on(tmp_path: Path, case: Case) -> None:
    asyncio.run(run_case(tmp_path, case))
