"""Walks one CkksClientSession through the RPCs of one CKKS round.

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

from clients.calls import RetryPolicy, call_unary, upload_resumable, with_retry
from clients.ckks_streams import CiphertextPayload, CiphertextResultAssembler
from proto import aggregation_pb2 as pb
from proto import convert_ckks
from secagg.ckks.client_session import CkksClientSession
from secagg.ckks.messages import CkksResult
from secagg.protocol.model_chain import payload_digest

logger = logging.getLogger("clients.transport")


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
