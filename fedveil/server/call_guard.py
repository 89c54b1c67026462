"""What every call of the service passes before its handler: a per-client cap on calls in
flight (RESOURCE_EXHAUSTED past it) and strict decoding (INVALID_ARGUMENT, not UNKNOWN).

Why a cap: every stage RPC is a long poll and every upload a stream, so each call an
enrolled client opens holds a handler, its HTTP/2 stream and its buffers on the server
until the stage closes. Without a cap one client can open thousands and starve the
others. An honest client holds one or two calls (a long poll, perhaps a retry whose
predecessor the server has not yet seen end). The client is named by the certificate it
proved in the mutual-TLS handshake (the roster pins one per client); without TLS
(`insecure`, a local experiment) by its connection.

Why decode here: gRPC parses a request before the handler runs and answers bytes that
are not a protobuf message with UNKNOWN and the parser's exception (found by the fuzzer,
tests/server/test_rpc_fuzz.py). Decoding in the wrapper turns that into INVALID_ARGUMENT naming
the expected message, for unary requests and for every message of a request stream. The
same net gives any FedveilError that escapes a handler its specific status (the fuzzer
found CKKS advertisements converted before the handler's own mapping: UNKNOWN).

Why an interceptor: both must apply before a handler reads a message (an idle upload
stream never sends one) and to every RPC of the service alike, including the result
stream, without touching each handler.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from fedveil.errors import FedveilError, InvalidMessageError
from fedveil.server.errors import abort_with

log = logging.getLogger(__name__)
Decode = Callable[[bytes], Any]


class UndecodableRequestError(InvalidMessageError):
    """The request's bytes are not a message of the method's request type."""


def _caller(context: grpc.aio.ServicerContext) -> tuple[str, str]:
    """(key the cap counts under, name used in the refusal)."""
    auth = context.auth_context()
    certificates = list(auth.get("x509_pem_cert", ()))
    if certificates:
        names = list(auth.get("x509_common_name", ()))
        name = names[0].decode("utf-8", errors="replace") if names else "this client"
        key = "certificate:" + hashlib.sha256(b"".join(certificates)).hexdigest()
        return key, f"client {name!r}"
    peer = context.peer()
    return f"connection:{peer}", f"connection {peer}"


def _decoder(deserialize: Decode | None, method: str) -> Decode:
    if deserialize is None:
        return lambda raw: raw
    owner = getattr(deserialize, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    expected = getattr(descriptor, "full_name", f"request of {method}")

    def decode(raw: bytes) -> Any:
        try:
            return deserialize(raw)
        except Exception as exc:  # noqa: BLE001 - any parser failure is the caller's bytes
            raise UndecodableRequestError(
                f"the request is not a valid {expected} message ({exc}); send the protobuf "
                "message the method takes"
            ) from exc

    return decode


class CallGuard(grpc.aio.ServerInterceptor):
    """Counts the calls in flight per client and decodes requests, on one service."""

    def __init__(self, cap: int, service: str) -> None:
        if cap < 1:
            raise ValueError(f"the cap must be >= 1, got {cap}")
        self.cap = cap
        self._prefix = f"/{service}/"
        self.in_flight: dict[str, int] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = str(handler_call_details.method)
        if handler is None or not method.startswith(self._prefix):
            return handler
        decode = _decoder(handler.request_deserializer, method)
        serializer = {"response_serializer": handler.response_serializer}
        if handler.unary_unary is not None:
            behaviour = self._unary(handler.unary_unary, decode)
            return grpc.unary_unary_rpc_method_handler(behaviour, **serializer)
        if handler.stream_unary is not None:
            behaviour = self._streamed(handler.stream_unary, decode)
            return grpc.stream_unary_rpc_method_handler(behaviour, **serializer)
        if handler.unary_stream is not None:
            behaviour = self._unary(handler.unary_stream, decode)
            return grpc.unary_stream_rpc_method_handler(behaviour, **serializer)
        if handler.stream_stream is not None:
            behaviour = self._streamed(handler.stream_stream, decode)
            return grpc.stream_stream_rpc_method_handler(behaviour, **serializer)
        return handler

    # --- the cap ------------------------------------------------------------------------

    async def _enter(self, context: grpc.aio.ServicerContext) -> str:
        key, name = _caller(context)
        held = self.in_flight.get(key, 0)
        if held >= self.cap:
            log.info("refused RESOURCE_EXHAUSTED: %s holds %d calls", name, held)
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{name} already has {held} calls in flight on this server, its cap "
                f"(server.max_calls_per_client = {self.cap}); wait for one to finish "
                "before opening another",
            )
        self.in_flight[key] = held + 1
        return key

    def _leave(self, key: str) -> None:
        left = self.in_flight.get(key, 1) - 1
        if left > 0:
            self.in_flight[key] = left
        else:
            self.in_flight.pop(key, None)

    # --- the wrappers -------------------------------------------------------------------

    @staticmethod
    async def _refuse(context: grpc.aio.ServicerContext, exc: FedveilError) -> None:
        """A FedveilError no handler mapped (an undecodable request, or one raised while
        converting a request before the handler's own mapping): its specific status."""
        await abort_with(context, exc)

    def _unary(self, behaviour: Callable[..., Any], decode: Decode) -> Callable[..., Any]:
        """A unary request: decoded before the handler runs."""
        return self._wrap(behaviour, decode)

    def _streamed(self, behaviour: Callable[..., Any], decode: Decode) -> Callable[..., Any]:
        """A request stream: each message decoded as the handler reads it."""

        async def decoded(raw_iterator: AsyncIterator[bytes]) -> AsyncIterator[Any]:
            async for raw in raw_iterator:
                yield decode(raw)

        return self._wrap(behaviour, decoded)

    def _wrap(
        self, behaviour: Callable[..., Any], prepare: Callable[[Any], Any]
    ) -> Callable[..., Any]:
        """Count the call against the caller's cap and give an escaped FedveilError its
        status; `prepare` turns the raw request (bytes or a stream) into what the handler
        reads."""

        async def call(raw: Any, context: grpc.aio.ServicerContext) -> Any:
            key = await self._enter(context)
            try:
                return await behaviour(prepare(raw), context)
            except FedveilError as exc:
                await self._refuse(context, exc)
            finally:
                self._leave(key)

        async def stream(raw: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            key = await self._enter(context)
            try:
                async for response in behaviour(prepare(raw), context):
                    yield response
            except FedveilError as exc:
                await self._refuse(context, exc)
            finally:
                self._leave(key)

        return stream if inspect.isasyncgenfunction(behaviour) else call
