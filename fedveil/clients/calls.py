"""Retried gRPC calls: transient failures are resent unchanged, uploads resume.

Why a module of its own: the SecAgg and the CKKS round drivers make the same kinds of
call (a unary long poll, a resumable chunked upload, a checked streamed download) and
must retry them under the same rules; a retry resends the very same request message,
never a fresh one, so a client can never say two different things in one stage.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from fedveil.clients.ckks_streams import CiphertextPayload
from fedveil.clients.errors import TransportError, from_rpc_error
from fedveil.clients.streams import ChunkedPayload, DownloadedMean, ResultAssembler
from fedveil.errors import ConfigError
from fedveil.proto import aggregation_pb2 as pb

logger = logging.getLogger("fedveil.clients.transport")
_JITTER = random.SystemRandom()
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of transient failures (UNAVAILABLE, server-side CANCELLED), capped backoff.

    The delay before retry r (0-based) is drawn uniformly from [c/2, c], where
    c = min(max_backoff_s, initial_backoff_s * multiplier**r): jitter keeps a cohort that
    lost the server at once from reconnecting in lock step, the floor keeps it from
    hammering. The jitter comes from the OS RNG; nothing here is seeded.
    """

    attempts: int = 8
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigError(f"attempts must be >= 1, got {self.attempts}")
        if not self.initial_backoff_s > 0:
            raise ConfigError(f"initial_backoff_s must be > 0, got {self.initial_backoff_s}")
        if not self.max_backoff_s >= self.initial_backoff_s:
            raise ConfigError(
                f"max_backoff_s={self.max_backoff_s} must be >= initial_backoff_s="
                f"{self.initial_backoff_s}"
            )
        if not self.multiplier >= 1:
            raise ConfigError(f"multiplier must be >= 1, got {self.multiplier}")

    def ceiling_s(self, retry: int) -> float:
        try:
            grown = self.initial_backoff_s * self.multiplier ** min(retry, 1024)
        except OverflowError:
            grown = math.inf
        return min(self.max_backoff_s, grown)

    def backoff_s(self, retry: int) -> float:
        ceiling = self.ceiling_s(retry)
        return ceiling / 2 + _JITTER.uniform(0.0, ceiling / 2)


# --- retrying calls ------------------------------------------------------------------------


_TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})


def _is_transient(exc: grpc.RpcError) -> bool:
    """UNAVAILABLE (no connection) and CANCELLED by the server (it shut down mid-call).

    Both are safe to retry: the server accepts an exact resend of a stage message as a
    rejoin, and uploads resume from the server's next chunk index. A local cancellation
    surfaces as asyncio.CancelledError, never as an RpcError, so it is not retried.
    """
    code = getattr(exc, "code", None)
    return callable(code) and code() in _TRANSIENT


async def with_retry(rpc: str, retry: RetryPolicy, attempt: Callable[[int], Awaitable[T]]) -> T:
    """Run `attempt(n)` until it succeeds, retrying UNAVAILABLE; map other failures."""
    for number in range(retry.attempts):
        try:
            return await attempt(number)
        except grpc.RpcError as exc:
            error = from_rpc_error(exc, rpc)
            if not _is_transient(exc):
                raise error from exc
            if number + 1 >= retry.attempts:
                raise TransportError(
                    error.code,
                    f"{error.details} (gave up after {retry.attempts} attempts)",
                    rpc=rpc,
                ) from exc
            delay = retry.backoff_s(number)
            logger.warning("%s: %s; retrying in %.2fs", rpc, error, delay)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable: RetryPolicy.attempts >= 1")


async def call_unary(
    method: Callable[..., Awaitable[T]],
    request: Any,
    *,
    rpc: str,
    retry: RetryPolicy,
    timeout_s: float,
) -> T:
    """One unary call, resent unchanged while the server is unavailable."""
    return await with_retry(rpc, retry, lambda _: method(request, timeout=timeout_s))


async def upload_resumable(
    stub: Any,
    upload: ChunkedPayload | CiphertextPayload,
    *,
    retry: RetryPolicy,
    timeout_s: float,
    status_timeout_s: float,
    rpc: str = "UploadMaskedInput",
) -> Any:
    """Stream an upload; after a broken stream, resume where the server stopped.

    `rpc` is UploadMaskedInput (SecAgg: answered with the survivor set) or
    UploadCiphertext (CKKS: answered with an UploadAck).
    """

    async def attempt(number: int) -> Any:
        start = 0
        if number:
            status = await call_unary(
                stub.GetUploadStatus,
                pb.UploadStatusRequest(round_id=upload.round_id, client_id=upload.client_id),
                rpc="GetUploadStatus",
                retry=retry,
                timeout_s=status_timeout_s,
            )
            start = upload.chunk_count if status.complete else status.next_index
            logger.info("upload resumes at chunk %d of %d", start, upload.chunk_count)
        chunks = upload.chunks(start)
        return await getattr(stub, rpc)(chunks, timeout=timeout_s)

    return await with_retry(rpc, retry, attempt)


async def fetch_result(
    stub: Any,
    request: pb.GetResultRequest,
    *,
    expected_dimension: int | None,
    retry: RetryPolicy,
    timeout_s: float,
) -> DownloadedMean:
    """Download and check the result; a broken stream starts over from the first chunk."""

    async def attempt(_: int) -> DownloadedMean:
        assembler = ResultAssembler(request.round_id, expected_dimension)
        async for chunk in stub.GetResult(request, timeout=timeout_s):
            assembler.add(chunk)
        return assembler.downloaded()

    return await with_retry("GetResult", retry, attempt)
