"""Catching up: fetch the results of the rounds this client missed, and chain them.

Why: each round's model hash chains the digest of the previous published result
(secagg.protocol.model_chain). A party that missed a round that produced a result (it
dropped out, was not a survivor, or its download failed) holds a stale chain and is
refused by the next round ("chain is stale"). It can take part again once it holds the
current global adapter: every missed result, applied in order. The server keeps every
published result (server.stored_results), so the party downloads each with GetResult,
checks it as a survivor would, and chains it exactly as the round's driver would have
(clients.result.mean_received and accept: the same AggregateResult, the same digest).

Why this is safe: the result is what every survivor already received and what the
server already holds (SecAgg reveals the sum to the server), so fetching it tells the
party nothing the protocol did not already release to the cohort. A server that hands
the rejoining party a different result than the others (or claims a round failed that
did not) gives it a different chain, hence a different model hash and session id in the
next round: that round fails closed for it, before any of its input is sent or could be
unmasked. When the announced round's model hash is known, catch_up checks it first and
refuses (SessionMismatchError) without changing the chain, so a learner never applies a
result the federation did not publish.

Only SecAgg and plaintext rounds can be caught up: a CKKS result is a ciphertext sum
under the epoch key, which a party that missed the round may not hold.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedveil.clients.calls import RetryPolicy, with_retry
from fedveil.clients.errors import TransportError
from fedveil.clients.plaintext_driver import plaintext_limits
from fedveil.clients.result import AggregateResult, Received, accept, mean_received
from fedveil.clients.secagg_driver import secagg_limits
from fedveil.clients.streams import DownloadedMean, ResultAssembler, layout_from_pb
from fedveil.errors import ImplausibleAggregateError, ProtocolError, SessionMismatchError
from fedveil.proto import aggregation_pb2 as pb
from fedveil.proto.convert import mode_from_wire, privacy_from_pb, spec_to_config
from fedveil.secagg.modes import AggregationMode
from fedveil.secagg.protocol.model_chain import ModelChain

# What the server answers for a round that failed: it has no result and advanced no chain.
_NO_RESULT = "FAILED_PRECONDITION"


def needs_catch_up(chain: ModelChain, info: pb.RoundInfo) -> bool:
    """Whether `chain` missed a published result before the announced round.

    True when the announced round is later than the one after the last result applied
    and announces another model hash than the chain derives (rounds in between that all
    failed leave the model hash as it was: nothing to catch up then).
    """
    last = chain.round_id if chain.round_id is not None else 0
    announced = int(info.spec.round_id)
    return announced > last + 1 and bytes(info.spec.model_hash) != chain.model_hash


async def catch_up(
    stub: Any,
    *,
    client_id: str,
    chain: ModelChain,
    announced: pb.RoundSpec,
    up_to: int,
    retry: RetryPolicy,
    timeout_s: float,
) -> list[AggregateResult]:
    """The results of rounds chain.round_id < r < `up_to`, checked and chained in order.

    Rounds the server says failed are skipped (they have no result). `announced` is the
    spec the server announces now: it bounds the missed results (roster, threshold,
    quantization or DP terms; the server's settings are the same for every round) and,
    when it is round `up_to`, its model hash must be the one the caught-up chain derives
    (else SessionMismatchError). `chain` changes only when every missed result was
    fetched and accepted: all of them, or none.
    """
    scratch = ModelChain(chain.base_model_hash, chain.result_digest, chain.round_id)
    first = (chain.round_id if chain.round_id is not None else 0) + 1
    results = []
    for round_id in range(first, up_to):
        request = pb.GetResultRequest(round_id=round_id, client_id=client_id)
        fetched = await _download(
            stub, request, dimension=int(announced.dimension), retry=retry, timeout_s=timeout_s
        )
        if fetched is not None:
            received = _received(announced, *fetched)
            results.append(accept(received, scratch))
    if int(announced.round_id) == up_to and bytes(announced.model_hash) != scratch.model_hash:
        raise SessionMismatchError(
            f"after catching up to round {up_to} this client derives model hash "
            f"{scratch.model_hash.hex()[:16]}..., but the server announces "
            f"{bytes(announced.model_hash).hex()[:16]}...: the results it served differ from "
            "the ones it published (model inconsistency); nothing was applied"
        )
    for result in results:
        assert result.result_digest is not None
        chain.advance(result.round_id, result.result_digest)
    return results


async def _download(
    stub: Any, request: pb.GetResultRequest, *, dimension: int, retry: RetryPolicy, timeout_s: float
) -> DownloadedMean | None:
    """A missed round's header and mean; None when the server says the round failed."""

    async def attempt(_: int) -> DownloadedMean:
        assembler = ResultAssembler(request.round_id, dimension)
        call = stub.GetResult(request, timeout=timeout_s)
        try:
            async for chunk in call:
                if chunk.index == 0 and chunk.HasField("header"):
                    _refuse_ckks(chunk.header)  # before the ciphertexts fail the size check
                assembler.add(chunk)
        finally:
            cancel = getattr(call, "cancel", None)
            if callable(cancel):
                cancel()  # a no-op once the stream ended
        return assembler.downloaded()

    try:
        return await with_retry("GetResult", retry, attempt)
    except TransportError as exc:
        if exc.code == _NO_RESULT:
            return None
        raise


def _refuse_ckks(header: pb.ResultHeader) -> None:
    if mode_from_wire(header.mode) is AggregationMode.CKKS:
        raise ProtocolError(
            f"round {header.round_id} ran in ckks mode: a CKKS party that missed a round "
            "cannot catch up (the result is encrypted under the epoch key); re-enrol in "
            "the next key epoch"
        )


def _received(
    spec: pb.RoundSpec, header: pb.ResultHeader, mean: np.ndarray, payload_sha256: bytes
) -> Received:
    """The missed result as the round's driver would have received it (clients.result).

    The limits are a survivor's, except that this party is not among the survivors: the
    cohort check's membership test names a survivor, every other check is unchanged.
    """
    round_id = int(header.round_id)
    if not header.survivors:
        raise ImplausibleAggregateError(f"round {round_id}: the result names no survivors")
    survivor = str(header.survivors[0])
    mode = mode_from_wire(header.mode)
    if mode is AggregationMode.PLAINTEXT:
        cohort, values = plaintext_limits(spec, survivor, own_weight=None, round_id=round_id)
    elif mode is AggregationMode.SECAGG and mode_from_wire(spec.mode) is AggregationMode.SECAGG:
        config = spec_to_config(spec)
        cohort, values = secagg_limits(
            config, int(spec.min_cohort), survivor, own_weight=None, round_id=round_id
        )
    else:
        raise ProtocolError(
            f"round {round_id} ran in mode {header.mode}, round {spec.round_id} in mode "
            f"{spec.mode}: this client cannot bound the missed result, so it cannot catch up"
        )
    privacy = privacy_from_pb(header.privacy) if header.HasField("privacy") else None
    return mean_received(
        header,
        mean,
        layout_from_pb(spec.layout),
        mode=mode,
        cohort=cohort,
        values=values,
        privacy=privacy,
        payload_sha256=payload_sha256,
    )
