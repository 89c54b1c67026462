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
stream, without touching each handler. For the same reason it is where the operator's
metrics count the bytes every request carried and each refused call's status
(`CallHooks`, fed to server.metrics): one place sees every call of every handler.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import grpc

from fedveil.errors import FedveilError, InvalidMessageError
from fedveil.server.errors import abort_with

log = logging.getLogger(__name__)
Decode = Callable[[bytes], Any]


class UndecodableRequestError(InvalidMessageError):
    """The request's bytes are not a message of the method's request type."""


class CallHooks(Protocol):
    """What the guard reports to the operator's metrics (server.metrics.ServerMetrics)."""

    def request_received(self, method: str, size: int) -> None: ...

    def call_refused(self, method: str, code: grpc.StatusCode, upload: bool) -> None: ...


def _caller(context: grpc.aio.ServicerContext) -> tuple[str, str, str]:
    """(key the cap counts under, name used in the refusal, the certificate's CN or "")."""
    auth = context.auth_context()
    certificates = list(auth.get("x509_pem_cert", ()))
    if certificates:
        names = list(auth.get("x509_common_name", ()))
        name = names[0].decode("utf-8", errors="replace") if names else ""
        key = "certificate:" + hashlib.sha256(b"".join(certificates)).hexdigest()
        return key, f"client {name or 'this client'!r}", name
    peer = context.peer()
    return f"connection:{peer}", f"connection {peer}", ""


def _refused_code(context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    """The status an aborted call ended with (UNKNOWN when the handler set none)."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    for candidate in grpc.StatusCode:
        if candidate.value[0] == code:
            return candidate
    return grpc.StatusCode.UNKNOWN


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
    """Counts the calls in flight per client and decodes requests, on the services named."""

    def __init__(self, cap: int, service: str, *, hooks: CallHooks | None = None) -> None:
        if cap < 1:
            raise ValueError(f"the cap must be >= 1, got {cap}")
        self.cap = cap
        self._prefixes: tuple[str, ...] = (f"/{service}/",)
        self.in_flight: dict[str, int] = {}
        self._names: dict[str, str] = {}  # cap key -> certificate CN, while calls are open
        self.hooks = hooks

    def cover(self, service: str) -> None:
        """Guard one more service of the same server (the operator's Operations)."""
        self._prefixes = (*self._prefixes, f"/{service}/")

    def connected(self) -> list[str]:
        """The certificate names (CNs) with at least one call open now, sorted."""
        return sorted({name for key, name in self._names.items() if key in self.in_flight})

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = str(handler_call_details.method)
        if handler is None or not method.startswith(self._prefixes):
            return handler
        decode = self._counted(_decoder(handler.request_deserializer, method), method)
        serializer = {"response_serializer": handler.response_serializer}
        if handler.unary_unary is not None:
            behaviour = self._unary(handler.unary_unary, decode, method)
            return grpc.unary_unary_rpc_method_handler(behaviour, **serializer)
        if handler.stream_unary is not None:
            # a client stream answered once: the uploads, whose refusals are counted apart
            behaviour = self._streamed(handler.stream_unary, decode, method, upload=True)
            return grpc.stream_unary_rpc_method_handler(behaviour, **serializer)
        if handler.unary_stream is not None:
            behaviour = self._unary(handler.unary_stream, decode, method)
            return grpc.unary_stream_rpc_method_handler(behaviour, **serializer)
        if handler.stream_stream is not None:
            behaviour = self._streamed(handler.stream_stream, decode, method)
            return grpc.stream_stream_rpc_method_handler(behaviour, **serializer)
        return handler

    def _counted(self, decode: Decode, method: str) -> Decode:
        """`decode`, reporting each request's size to the hooks first."""
        hooks = self.hooks
        if hooks is None:
            return decode

        def counted(raw: bytes) -> Any:
            if isinstance(raw, bytes | bytearray | memoryview):
                hooks.request_received(method, len(raw))
            return decode(raw)

        return counted

    # --- the cap ------------------------------------------------------------------------

    async def _enter(self, context: grpc.aio.ServicerContext) -> str:
        key, name, common_name = _caller(context)
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
        if common_name:
            self._names[key] = common_name
        return key

    def _leave(self, key: str) -> None:
        left = self.in_flight.get(key, 1) - 1
        if left > 0:
            self.in_flight[key] = left
        else:
            self.in_flight.pop(key, None)
            self._names.pop(key, None)

    # --- the wrappers -------------------------------------------------------------------

    @staticmethod
    async def _refuse(context: grpc.aio.ServicerContext, exc: FedveilError) -> None:
        """A FedveilError no handler mapped (an undecodable request, or one raised while
        converting a request before the handler's own mapping): its specific status."""
        await abort_with(context, exc)

    def _unary(
        self, behaviour: Callable[..., Any], decode: Decode, method: str
    ) -> Callable[..., Any]:
        """A unary request: decoded before the handler runs."""
        return self._wrap(behaviour, decode, method, upload=False)

    def _streamed(
        self, behaviour: Callable[..., Any], decode: Decode, method: str, upload: bool = False
    ) -> Callable[..., Any]:
        """A request stream: each message decoded as the handler reads it."""

        async def decoded(raw_iterator: AsyncIterator[bytes]) -> AsyncIterator[Any]:
            async for raw in raw_iterator:
                yield decode(raw)

        return self._wrap(behaviour, decoded, method, upload=upload)

    def _report(self, context: grpc.aio.ServicerContext, method: str, upload: bool) -> None:
        if self.hooks is not None:
            self.hooks.call_refused(method, _refused_code(context), upload)

    def _wrap(
        self,
        behaviour: Callable[..., Any],
        prepare: Callable[[Any], Any],
        method: str,
        *,
        upload: bool,
    ) -> Callable[..., Any]:
        """Count the call against the caller's cap and give an escaped FedveilError its
        status; `prepare` turns the raw request (bytes or a stream) into what the handler
        reads. A call that ends in an abort (any status) is reported to the hooks; a
        cancelled one (the client went away) is not a refusal."""

        async def call(raw: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                key = await self._enter(context)
                try:
                    return await behaviour(prepare(raw), context)
                except FedveilError as exc:
                    await self._refuse(context, exc)
                finally:
                    self._leave(key)
            except Exception:
                self._report(context, method, upload)
                raise

        async def stream(raw: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                key = await self._enter(context)
                try:
                    async for response in behaviour(prepare(raw), context):
                        yield response
                except FedveilError as exc:
                    await self._refuse(context, exc)
                finally:
                    self._leave(key)
            except Exception:
                self._report(context, method, upload)
                raise

        return stream if inspect.isasyncgenfunction(behaviour) else call
