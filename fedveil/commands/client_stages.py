"""Stage logging for `fedveil client`: one stable stderr line per stage the client enters.

Why an interceptor on the client's own channel: a supervising test or an operator tells
from the log how far a client got, and these lines name the stage RPCs of the wire
contract rather than depend on the SDK's log wording::

    stage advertise-keys: submitted (round 1)
    stage advertise-keys: answered (round 1)
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from fedveil.clients.transport import TransportSecurity
from fedveil.errors import ConfigError
from fedveil.secagg.protocol.stages import Stage

logger = logging.getLogger("fedveil.client")

# The client polls for a round every 0.2 s; a channel whose reconnect backoff grew to
# gRPC's default 120 s would stop reaching a server that came up after the client did.
_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
)
_STAGE_OF_RPC: dict[str, Stage] = {
    "AdvertiseKeys": Stage.ADVERTISE_KEYS,
    "ShareKeys": Stage.SHARE_KEYS,
    "UploadMaskedInput": Stage.MASKED_INPUT,
    "ConfirmSurvivors": Stage.CONSISTENCY_CHECK,
    "Unmask": Stage.UNMASK,
    "PublishCkksKeys": Stage.SHARE_KEYS,
    "FetchCkksKeys": Stage.SHARE_KEYS,
    "UploadCiphertext": Stage.MASKED_INPUT,
}


def _stage_of(method: bytes | str) -> Stage | None:
    name = method.decode() if isinstance(method, bytes) else method
    return _STAGE_OF_RPC.get(name.rsplit("/", 1)[-1])


class _StageWatcher:
    """Logs `answered` or `failed` once a stage call ends, without touching its result.

    `stop_before` is fault injection for tests: the process stops itself (SIGSTOP) just
    before it first submits that stage, so a test can hold a stage open deterministically
    and resume the client with SIGCONT.
    """

    def __init__(self, stop_before: Stage | None = None) -> None:
        self._pending: set[asyncio.Task[None]] = set()
        self._stop_before = stop_before

    def before_submit(self, stage: Stage) -> None:
        if stage is not self._stop_before:
            return
        self._stop_before = None  # once: a retried call must not stop again
        logger.info("stage %s: stopping before submit (SIGSTOP; resume with SIGCONT)", stage.value)
        os.kill(os.getpid(), signal.SIGSTOP)
        logger.info("stage %s: resumed", stage.value)

    def watch(self, stage: Stage, round_text: str, call: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(self._report(stage, round_text, call))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    @staticmethod
    async def _report(stage: Stage, round_text: str, call: Awaitable[Any]) -> None:
        try:
            await call
        except grpc.RpcError as exc:
            code = exc.code() if callable(getattr(exc, "code", None)) else None
            name = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
            logger.info("stage %s: failed with %s%s", stage.value, name, round_text)
        except asyncio.CancelledError:
            logger.info("stage %s: cancelled%s", stage.value, round_text)
        else:
            logger.info("stage %s: answered%s", stage.value, round_text)


class UnaryStageLogger(grpc.aio.UnaryUnaryClientInterceptor):
    """`stage <name>: submitted` as a unary stage message is handed to gRPC."""

    def __init__(self, watcher: _StageWatcher) -> None:
        self._watcher = watcher

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        stage = _stage_of(client_call_details.method)
        if stage is None:
            return await continuation(client_call_details, request)
        round_text = f" (round {request.round_id})" if hasattr(request, "round_id") else ""
        self._watcher.before_submit(stage)
        logger.info("stage %s: submitted%s", stage.value, round_text)
        call = await continuation(client_call_details, request)
        self._watcher.watch(stage, round_text, call)
        return call


class StreamStageLogger(grpc.aio.StreamUnaryClientInterceptor):
    """`stage masked-input: submitted` once the last upload chunk went to gRPC."""

    def __init__(self, watcher: _StageWatcher) -> None:
        self._watcher = watcher

    async def intercept_stream_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        stage = _stage_of(client_call_details.method)
        if stage is None:
            return await continuation(client_call_details, request_iterator)
        self._watcher.before_submit(stage)
        logger.info("stage %s: sending", stage.value)
        if hasattr(request_iterator, "__aiter__"):
            requests: Any = _after_async(stage, request_iterator)
        else:
            requests = _after_sync(stage, request_iterator)
        call = await continuation(client_call_details, requests)
        self._watcher.watch(stage, "", call)
        return call


def _after_sync(stage: Stage, chunks: Iterable[Any]) -> Iterator[Any]:
    yield from chunks
    logger.info("stage %s: submitted", stage.value)


async def _after_async(stage: Stage, chunks: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for chunk in chunks:
        yield chunk
    logger.info("stage %s: submitted", stage.value)


def stage_interceptors(stop_before: Stage | None = None) -> list[grpc.aio.ClientInterceptor]:
    """grpc.aio files an interceptor under one kind only, hence one object per kind."""
    watcher = _StageWatcher(stop_before)
    return [UnaryStageLogger(watcher), StreamStageLogger(watcher)]


@dataclass(frozen=True)
class ObservedTransportSecurity(TransportSecurity):
    """Mutual TLS as TransportSecurity, on a channel that logs stages and reconnects fast."""

    stop_before: Stage | None = None

    def open_channel(self, target: str) -> grpc.aio.Channel:
        if self.insecure:
            raise ConfigError("fedveil client always uses mutual TLS")
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.ca_pem, private_key=self.key_pem, certificate_chain=self.cert_pem
        )
        options: list[tuple[str, Any]] = list(_CHANNEL_OPTIONS)
        if self.server_name_override is not None:
            options.append(("grpc.ssl_target_name_override", self.server_name_override))
        return grpc.aio.secure_channel(
            target, credentials, options=options, interceptors=stage_interceptors(self.stop_before)
        )
