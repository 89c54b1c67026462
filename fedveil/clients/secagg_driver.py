"""The SecAgg+ driver: one ClientSession walked through the six stage RPCs of a round.

Why it is shaped like this: every stage RPC is a long poll that submits this client's
message and returns the server's request for the next stage, so a round is a straight
line of six awaits with the ClientSession (where the secrets and all the checks live)
between them. The wire adds only what it needs: retries of transient failures, a
resumable chunked upload of the masked input, and a checked, streamed result. Retries
resend the very same request message, never a fresh one from the session, so a retry
can never make this client say two different things in one stage.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from fedveil.clients.calls import RetryPolicy, call_unary, fetch_result, upload_resumable
from fedveil.clients.errors import TransportError
from fedveil.clients.result import Received, mean_received
from fedveil.clients.round_call import RoundCall
from fedveil.clients.streams import ChunkedPayload, DownloadedMean, TensorLayout
from fedveil.errors import ProtocolError, SurvivorSetMismatchError
from fedveil.proto import aggregation_pb2 as pb
from fedveil.proto.convert import (
    advertisement_to_pb,
    instructions_from_pb,
    neighbour_keys_from_pb,
    privacy_from_pb,
    relayed_from_pb,
    share_keys_to_pb,
    signature_to_pb,
    spec_to_config,
    survivors_from_pb,
    unmask_to_pb,
)
from fedveil.secagg.dp.budget import PrivacyLedger
from fedveil.secagg.dp.config import NoisePlacement
from fedveil.secagg.modes import AggregationMode
from fedveil.secagg.protocol import messages as m
from fedveil.secagg.protocol.aggregate_bounds import (
    CohortLimits,
    ValueLimits,
    dp_value_limits,
    secagg_value_limits,
)
from fedveil.secagg.protocol.client import ClientSession
from fedveil.secagg.protocol.config import RoundConfig
from fedveil.secagg.protocol.stages import Stage

logger = logging.getLogger("fedveil.clients.transport")
T = TypeVar("T")


def _expect(reply: object, kind: type[T]) -> T:
    if not isinstance(reply, kind):
        raise ProtocolError(f"the client session answered {type(reply).__name__}, not {kind}")
    return reply


@dataclass
class SecAggRoundDriver:
    """Walks one ClientSession through the stage RPCs of one round."""

    stub: Any
    spec: pb.RoundSpec
    session: ClientSession
    retry: RetryPolicy
    stage_timeout_s: float
    unary_timeout_s: float

    @property
    def round_id(self) -> int:
        return int(self.spec.round_id)

    async def _stage(self, stage: Stage, rpc: str, request: Any) -> Any:
        logger.info(
            "round %d: %s: sending %d bytes (%s)",
            self.round_id,
            stage.value,
            request.ByteSize(),
            rpc,
        )
        method = getattr(self.stub, rpc)
        return await call_unary(
            method, request, rpc=rpc, retry=self.retry, timeout_s=self.stage_timeout_s
        )

    async def run(self) -> DownloadedMean:
        adv = pb.AdvertiseKeysRequest(
            round_id=self.round_id, advertisement=advertisement_to_pb(self.session.advertise())
        )
        keys = await self._stage(Stage.ADVERTISE_KEYS, "AdvertiseKeys", adv)
        shares = _expect(self.session.handle(neighbour_keys_from_pb(keys)), m.ShareKeysResponse)
        relayed = await self._stage(
            Stage.SHARE_KEYS, "ShareKeys", share_keys_to_pb(self.round_id, shares)
        )
        masked = _expect(self.session.handle(relayed_from_pb(relayed)), m.MaskedInput)
        survivor_set = await self._upload(masked)
        signature = _expect(
            self.session.handle(survivors_from_pb(survivor_set)), m.ConsistencySignature
        )
        confirm = pb.ConfirmSurvivorsRequest(
            round_id=self.round_id, signature=signature_to_pb(signature)
        )
        instructions = instructions_from_pb(
            await self._stage(Stage.CONSISTENCY_CHECK, "ConfirmSurvivors", confirm)
        )
        reveal = _expect(self.session.handle(instructions), m.UnmaskResponse)
        ack = await self._stage(Stage.UNMASK, "Unmask", unmask_to_pb(self.round_id, reveal))
        self._require_done(ack)
        return await self._result(instructions.survivors)

    async def _upload(self, masked: m.MaskedInput) -> pb.SurvivorSet:
        upload = ChunkedPayload(
            self.round_id,
            masked.client_id,
            masked.payload,
            int(self.spec.chunk_bytes),
            session_id=self.session.session_id,
        )
        logger.info(
            "round %d: %s: sending %d bytes in %d chunks (UploadMaskedInput)",
            self.round_id,
            Stage.MASKED_INPUT.value,
            upload.total_bytes,
            upload.chunk_count,
        )
        return await upload_resumable(
            self.stub,
            upload,
            retry=self.retry,
            timeout_s=self.stage_timeout_s,
            status_timeout_s=self.unary_timeout_s,
        )

    def _require_done(self, ack: pb.UnmaskAck) -> None:
        if ack.stage != pb.ROUND_STAGE_DONE:
            raise TransportError(
                "FAILED_PRECONDITION",
                f"round {self.round_id} ended {pb.RoundStage.Name(ack.stage)} after the unmask "
                "stage; it has no result",
                rpc="Unmask",
            )

    async def _result(self, signed: tuple[str, ...]) -> DownloadedMean:
        request = pb.GetResultRequest(round_id=self.round_id, client_id=self.session.client_id)
        downloaded = await fetch_result(
            self.stub,
            request,
            expected_dimension=int(self.spec.dimension),
            retry=self.retry,
            timeout_s=self.stage_timeout_s,
        )
        header = downloaded.header
        if set(header.survivors) != set(signed):
            raise SurvivorSetMismatchError(
                f"round {self.round_id}: the result claims survivors {sorted(header.survivors)}, "
                f"but this client signed {sorted(signed)}"
            )
        logger.info("round %d: result: %d values received", self.round_id, downloaded.mean.shape[0])
        return downloaded


class SecAggDriver:
    """Runs SecAgg+ rounds for one client; DP rounds charge its privacy ledger, if any."""

    mode: AggregationMode = AggregationMode.SECAGG
    adds_dp_noise = True

    def __init__(self, ledger: PrivacyLedger | None) -> None:
        self.ledger = ledger

    async def run(
        self, call: RoundCall, update: np.ndarray, weight: int, layout: TensorLayout | None
    ) -> Received:
        spec = call.spec
        config = spec_to_config(spec)
        session = ClientSession(
            config,
            call.client_id,
            call.identity,
            call.roster,
            call.policy,
            expected_model_hash=call.model_hash,
            ledger=self.ledger,
        )
        session.set_input(update, weight)
        logger.info("round %d: joined with %d values", spec.round_id, spec.dimension)
        if config.dp is not None:
            logger.info(
                "round %d: %s DP, noise multiplier %.4g, clip norm %.4g; the mean is "
                "unweighted (weight %d not used)",
                spec.round_id,
                config.dp.kind,
                config.dp.config.noise_multiplier,
                config.dp.config.clip_norm,
                weight,
            )
        driver = SecAggRoundDriver(
            call.stub, spec, session, call.retry, call.stage_timeout_s, call.unary_timeout_s
        )
        header, mean, payload_sha256 = await driver.run()
        privacy = privacy_from_pb(header.privacy) if header.HasField("privacy") else None
        if config.dp is not None and privacy is not None:
            published = (config.dp.config.noise_multiplier, config.dp.config.clip_norm)
            if (privacy.noise_multiplier, privacy.clip_norm) != published:
                raise ProtocolError(
                    f"round {spec.round_id}: the result's privacy report names noise "
                    f"multiplier / clip norm {(privacy.noise_multiplier, privacy.clip_norm)}, "
                    f"but the round this client joined used {published}"
                )
        cohort, values = secagg_limits(
            config, int(spec.min_cohort), call.client_id, own_weight=weight
        )
        return mean_received(
            header,
            mean,
            layout,
            mode=self.mode,
            cohort=cohort,
            values=values,
            privacy=privacy,
            privacy_spent=session.privacy_spent,
            payload_sha256=payload_sha256,
        )


def secagg_limits(
    config: RoundConfig,
    min_cohort: int,
    client_id: str,
    *,
    own_weight: int | None,
    round_id: int | None = None,
) -> tuple[CohortLimits, Callable[[int, int], ValueLimits]]:
    """What an honest SecAgg round of `config` can produce (secagg.protocol.
    aggregate_bounds): who may survive, their total weight, and how far the mean reaches.

    `own_weight` is what this client sent (None for a party that did not take part,
    clients.catch_up); DP rounds count every survivor once, so it is not used there.
    `round_id` names the round in refusals (default: `config`'s).
    """
    dp = config.dp
    floor = max(config.threshold, min_cohort)
    if dp is not None and dp.config.placement is NoisePlacement.CLIENTS:
        floor = max(floor, dp.config.min_clients)
    dp_config = dp.config if dp is not None else None

    def values(survivors: int, total_weight: int) -> ValueLimits:
        if dp_config is not None:
            return dp_value_limits(dp_config, survivors)
        return secagg_value_limits(config.quantization, config.dimension, survivors, total_weight)

    cohort = CohortLimits(
        config.round_id if round_id is None else round_id,
        client_id,
        frozenset(config.roster),
        floor,
        config.quantization.max_weight,
        own_weight=None if dp is not None else own_weight,
        weight_per_survivor=1 if dp is not None else None,
    )
    return cohort, values
