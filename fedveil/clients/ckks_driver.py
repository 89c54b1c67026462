"""The CKKS driver: one CkksClientSession walked through the RPCs of a CKKS round.

The first round of a key epoch distributes the epoch's secret context (the key holder
publishes it sealed to each client; the others fetch theirs); every round encrypts the
update under it, uploads the ciphertexts and decrypts the sum the server returns.

Why the heavy work runs in threads: encrypting or decrypting a 4e6-value update takes
seconds of TenSEAL time; on the event loop it would stall the channel's keepalives and
any other round the process takes part in.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedveil.clients.calls import RetryPolicy, call_unary, upload_resumable, with_retry
from fedveil.clients.ckks_streams import CiphertextPayload, CiphertextResultAssembler
from fedveil.clients.result import AggregateResult, Received
from fedveil.clients.round_call import RoundCall
from fedveil.clients.streams import TensorLayout
from fedveil.errors import ConfigError
from fedveil.proto import aggregation_pb2 as pb
from fedveil.proto import convert_ckks
from fedveil.proto.convert_ckks import spec_to_ckks_config
from fedveil.secagg.ckks.client_session import CkksClientSession, EpochKeyStore
from fedveil.secagg.ckks.messages import CkksResult
from fedveil.secagg.modes import AggregationMode
from fedveil.secagg.protocol.aggregate_bounds import CohortLimits, bounded_value_limits
from fedveil.secagg.protocol.model_chain import payload_digest

logger = logging.getLogger("fedveil.clients.transport")
# CKKS has no analytic per-element bound here; this is the bound its tests hold it to
# (max |error| <= 1e-6 x the value bound; measured errors: benchmarks/README.md, ckks_bench).
CKKS_TESTED_ERROR = 1e-6
# What the aggregate sanity bound allows CKKS on top of the value bound (relative): 100x
# the tested error, so an honest result is never refused; a crafted one gains 1e-4.
CKKS_PLAUSIBLE_ERROR = 1e-4


@dataclass(frozen=True)
class CkksOutcome:
    """A decrypted CKKS round result; `payload_sha256` and `header` are what was
    downloaded (the summed ciphertexts and their header), for the result digest."""

    round_id: int
    survivors: tuple[str, ...]
    weighted_mean: np.ndarray
    total_weight: float
    payload_sha256: bytes = b""
    header: pb.ResultHeader | None = None


@dataclass
class CkksRoundDriver:
    stub: Any
    spec: pb.RoundSpec
    session: CkksClientSession
    retry: RetryPolicy
    stage_timeout_s: float
    unary_timeout_s: float
    workers: int = 1

    @property
    def round_id(self) -> int:
        return int(self.spec.round_id)

    async def _call(self, rpc: str, request: Any) -> Any:
        return await call_unary(
            getattr(self.stub, rpc),
            request,
            rpc=rpc,
            retry=self.retry,
            timeout_s=self.stage_timeout_s,
        )

    async def run(self, update: np.ndarray, weight: int) -> CkksOutcome:
        if self.session.config.distributes_keys:
            await self._obtain_keys()
        ciphertexts = await asyncio.to_thread(
            self.session.encrypt, update, weight, workers=self.workers
        )
        payload = CiphertextPayload(
            self.round_id, self.session.client_id, ciphertexts, self.session.fingerprint
        )
        logger.info(
            "round %d: uploading %d bytes in %d ciphertexts (UploadCiphertext)",
            self.round_id,
            payload.total_bytes,
            payload.chunk_count,
        )
        await upload_resumable(
            self.stub,
            payload,
            retry=self.retry,
            timeout_s=self.stage_timeout_s,
            status_timeout_s=self.unary_timeout_s,
            rpc="UploadCiphertext",
        )
        header, pieces = await self._result()
        result = CkksResult(tuple(header.survivors), tuple(pieces))
        mean, total_weight = await asyncio.to_thread(self.session.decrypt, result)
        return CkksOutcome(
            self.round_id,
            result.survivors,
            mean,
            total_weight,
            payload_sha256=payload_digest(pieces),
            header=header,
        )

    async def _obtain_keys(self) -> None:
        """Advertise; then publish the epoch's keys (holder) or fetch this client's."""
        advert = convert_ckks.advertisement_to_pb(self.session.advertise())
        keys: pb.NeighbourKeys = await self._call(
            "AdvertiseKeys", pb.AdvertiseKeysRequest(round_id=self.round_id, advertisement=advert)
        )
        adverts = [convert_ckks.advertisement_from_pb(a) for a in keys.advertisements]
        publication = await asyncio.to_thread(self.session.handle_advertisements, adverts)
        if publication is not None:
            logger.info("round %d: publishing key epoch %d", self.round_id, publication.key_epoch)
            await self._call(
                "PublishCkksKeys", convert_ckks.publication_to_pb(self.round_id, publication)
            )
            return
        delivery: pb.CkksKeyDelivery = await self._call(
            "FetchCkksKeys",
            pb.FetchCkksKeysRequest(round_id=self.round_id, client_id=self.session.client_id),
        )
        await asyncio.to_thread(
            self.session.handle_delivery, convert_ckks.delivery_from_pb(delivery)
        )

    async def _result(self) -> tuple[pb.ResultHeader, list[bytes]]:
        request = pb.GetResultRequest(round_id=self.round_id, client_id=self.session.client_id)

        async def attempt(_: int) -> tuple[pb.ResultHeader, list[bytes]]:
            assembler = CiphertextResultAssembler(
                self.round_id, self.session.fingerprint, self.session.config.chunk_count
            )
            async for chunk in self.stub.GetResult(request, timeout=self.stage_timeout_s):
                assembler.add(chunk)
            return assembler.finish()

        return await with_retry("GetResult", self.retry, attempt)


class CkksDriver:
    """Runs CKKS rounds for one client; keeps the epoch keys it received between rounds."""

    mode: AggregationMode = AggregationMode.CKKS
    adds_dp_noise = False

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers
        self.keys = EpochKeyStore()

    async def run(
        self, call: RoundCall, update: np.ndarray, weight: int, layout: TensorLayout | None
    ) -> Received:
        """Encrypt under the epoch's CKKS key; the server adds what it cannot read."""
        spec = call.spec
        config = spec_to_ckks_config(spec)
        session = CkksClientSession(
            config,
            call.client_id,
            call.identity,
            call.roster,
            self.keys,
            call.policy,
            expected_model_hash=call.model_hash,
        )
        if not config.distributes_keys and not session.has_key:
            raise ConfigError(
                f"round {spec.round_id} uses CKKS key epoch {config.key_epoch}, whose keys this "
                "client did not receive (it missed the epoch's first round); it can take part "
                "again from the next epoch"
            )
        driver = CkksRoundDriver(
            call.stub,
            spec,
            session,
            call.retry,
            call.stage_timeout_s,
            call.unary_timeout_s,
            workers=self.workers,
        )
        outcome = await driver.run(update, weight)
        result = AggregateResult(
            round_id=outcome.round_id,
            survivors=outcome.survivors,
            total_weight=round(outcome.total_weight),
            weighted_mean=outcome.weighted_mean,
            error_bound=CKKS_TESTED_ERROR * config.value_bound,
            layout=layout,
        )
        return Received(
            result,
            mode=self.mode,
            header=outcome.header,
            payload_sha256=outcome.payload_sha256,
            cohort=CohortLimits(
                result.round_id,
                call.client_id,
                frozenset(config.roster),
                config.min_cohort,
                config.max_weight,
                own_weight=weight,
            ),
            values=lambda n, w: bounded_value_limits(
                config.value_bound, config.dimension, CKKS_PLAUSIBLE_ERROR * config.value_bound
            ),
        )
