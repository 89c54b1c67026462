"""The gRPC client of the aggregation service: one round per `run_round` call.

Why the client is small: joining a round and accepting its aggregate are the same in
every mode (wait for a round that accepts keys, check the mode against the policy, the
model hash against the chain, the update against the spec; then bound the aggregate and
chain it); the stage RPCs in between belong to the mode's driver (clients.
secagg_driver, clients.ckks_driver, clients.plaintext_driver). The channel adds only
what the wire needs: TLS (clients.security), retries of transient failures and
resumable uploads (clients.calls). Constructor arguments are ClientOptions'
(clients.options); the blocking facade takes the very same.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc
import numpy as np

from fedveil.clients.calls import RetryPolicy, call_unary, fetch_result, upload_resumable
from fedveil.clients.catch_up import catch_up, needs_catch_up
from fedveil.clients.errors import TransportError
from fedveil.clients.mode_driver import drivers_for
from fedveil.clients.mode_policy import require_allowed_mode
from fedveil.clients.options import ClientOptions, built_from
from fedveil.clients.result import AggregateResult, accept
from fedveil.clients.round_call import RoundCall
from fedveil.clients.security import TransportSecurity
from fedveil.clients.streams import as_update_vector, fit_layout
from fedveil.clients.weights import WeightMode, effective_weight
from fedveil.errors import ConfigError, PrivacyPolicyError, ProtocolError
from fedveil.proto import aggregation_pb2 as pb
from fedveil.proto import aggregation_pb2_grpc as pb_grpc
from fedveil.secagg.dp.budget import PrivacyBudget, PrivacyLedger
from fedveil.secagg.protocol.model_chain import ModelChain

__all__ = [
    "AggregateResult",
    "AggregationClient",
    "AsyncAggregationClient",
    "ClientOptions",
    "RetryPolicy",
    "TransportSecurity",
    "call_unary",
    "fetch_result",
    "upload_resumable",
]

DEFAULT_UNARY_TIMEOUT_S = 30.0
DEFAULT_JOIN_TIMEOUT_S = 60.0
# Used when a spec publishes no stage timeout: long enough for a slow cohort's stage.
FALLBACK_STAGE_TIMEOUT_S = 300.0
# While joining, "no round yet" and "server not up yet" both mean: poll again.
_KEEP_WAITING = frozenset({"NOT_FOUND", "UNAVAILABLE"})
T = TypeVar("T")


class AsyncAggregationClient:
    """An enrolled client of the aggregation service, on grpc.aio.

    Takes the arguments of ClientOptions (see there), or `from_options(options)`.
    The channel opens on first use, on the event loop that uses it.
    """

    @built_from(ClientOptions)
    def __init__(self, options: ClientOptions) -> None:
        self._start(options)

    @classmethod
    def from_options(cls, options: ClientOptions) -> Self:
        client = cls.__new__(cls)
        client._start(options)
        return client

    def _start(self, options: ClientOptions) -> None:
        self.options = options
        self.target = options.target
        self.client_id = options.client_id
        self._roster = dict(options.roster_identities)
        chain = options.model_chain
        self._chain = chain if chain is not None else ModelChain(options.base_model_hash)
        self._retry = options.retry or RetryPolicy()
        budget = options.privacy_budget
        if isinstance(budget, PrivacyBudget):
            budget = PrivacyLedger(budget, owner=options.client_id)
        self._ledger: PrivacyLedger | None = budget
        self._drivers = drivers_for(options, self._ledger)
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.AggregationStub | None = None
        self._closed = False

    @property
    def privacy_ledger(self) -> PrivacyLedger | None:
        """This client's privacy ledger (`.report()`: epsilon spent so far), if budgeted."""
        return self._ledger

    @property
    def model_chain(self) -> ModelChain:
        """The base model and the last result this client accepted (keep it to resume)."""
        return self._chain

    def _ensure_stub(self) -> pb_grpc.AggregationStub:
        if self._closed:
            raise ProtocolError("this client is closed; create a new one")
        if self._stub is None:
            self._channel = self.options.security.open_channel(self.target)
            self._stub = pb_grpc.AggregationStub(self._channel)
        return self._stub

    def _unary_timeout(self) -> float:
        return self.options.rpc_timeout_s or DEFAULT_UNARY_TIMEOUT_S

    def _stage_timeout(self, spec: pb.RoundSpec) -> float:
        if self.options.rpc_timeout_s is not None:
            return self.options.rpc_timeout_s
        stage = spec.stage_timeout_s if spec.stage_timeout_s > 0 else FALLBACK_STAGE_TIMEOUT_S
        return stage * 2 + 5

    async def get_round(self) -> pb.RoundInfo:
        """The open round; TransportError NOT_FOUND when none is open yet."""
        stub = self._ensure_stub()
        info: pb.RoundInfo = await call_unary(
            stub.GetRound,
            pb.GetRoundRequest(client_id=self.client_id),
            rpc="GetRound",
            retry=self._retry,
            timeout_s=self._unary_timeout(),
        )
        return info

    async def wait_for_round(
        self, poll_s: float = 0.2, timeout_s: float = DEFAULT_JOIN_TIMEOUT_S
    ) -> pb.RoundInfo:
        """Poll until a round accepts key advertisements (a client can join only then).

        NOT_FOUND (no round yet) and UNAVAILABLE (server not up yet) keep it polling.
        """
        if not poll_s > 0 or not timeout_s > 0:
            raise ConfigError(f"poll_s and timeout_s must be > 0, got {poll_s}, {timeout_s}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        last = "no answer"
        while True:
            try:
                info = await self.get_round()
                if info.stage in (pb.ROUND_STAGE_ADVERTISE_KEYS, pb.ROUND_STAGE_COLLECT):
                    return info
                last = f"round {info.spec.round_id} is in {pb.RoundStage.Name(info.stage)}"
            except TransportError as exc:
                if exc.code not in _KEEP_WAITING:
                    raise
                last = str(exc)
            if loop.time() + poll_s > deadline:
                raise TransportError(
                    "DEADLINE_EXCEEDED",
                    f"no round opened for key advertisement within {timeout_s:g}s "
                    f"(last answer: {last})",
                    rpc="GetRound",
                )
            await asyncio.sleep(poll_s)

    async def run_round(
        self,
        update: np.ndarray | Mapping[str, Any],
        weight: int,
        *,
        join_timeout_s: float = DEFAULT_JOIN_TIMEOUT_S,
        weight_mode: WeightMode | str = WeightMode.EXACT,
    ) -> AggregateResult:
        """Join the next round, take part in every stage, and return the aggregate.

        `update` is a 1-D vector, or a dict of named tensors (numpy or torch) that is
        flattened in sorted-name order; the result then splits back with `as_tensors()`.
        `weight` is this client's example count; `weight_mode` (clients.weights) decides
        how much of it is sent: exact, fixed (1) or bucketed (next power of two), so the
        total weight across rounds does not reveal small changes in a client's data.
        A mode the policy does not allow (policy.allowed_modes) is refused with
        ModeDowngradeError before anything but the GetRound poll was sent.
        """
        vector, layout = as_update_vector(update)
        weight_mode = WeightMode.parse(weight_mode)
        info = await self.wait_for_round(timeout_s=join_timeout_s)
        spec = info.spec
        mode = require_allowed_mode(int(spec.round_id), int(spec.mode), self.options.policy)
        weight = effective_weight(
            weight, weight_mode, max_weight=int(spec.quantization.max_weight) or None
        )
        # Before anything is sent: the round must be about the model this client holds.
        self._chain.check(int(spec.round_id), bytes(spec.model_hash))
        layout = fit_layout(spec, vector, layout)
        if spec.chunk_bytes <= 0:
            raise ConfigError(f"round {spec.round_id} publishes no upload chunk size")
        driver = self._drivers[mode]
        if self._ledger is not None and not driver.adds_dp_noise:
            raise PrivacyPolicyError(
                f"round {spec.round_id} runs in {mode.value} mode, "
                "which adds no differential-privacy noise, but this client has a privacy "
                "budget: refusing to send an un-noised update"
            )
        call = RoundCall(
            stub=self._ensure_stub(),
            spec=spec,
            client_id=self.client_id,
            identity=self.options.identity,
            roster=self._roster,
            policy=self.options.policy,
            model_hash=self._chain.model_hash,
            retry=self._retry,
            stage_timeout_s=self._stage_timeout(spec),
            unary_timeout_s=self._unary_timeout(),
        )
        received = await driver.run(call, vector, weight, layout)
        return accept(received, self._chain)

    def needs_catch_up(self, info: pb.RoundInfo) -> bool:
        """Whether this client missed a published result before the announced round (its
        chain is stale): call `catch_up` before `run_round` then (clients.catch_up)."""
        return needs_catch_up(self._chain, info)

    async def catch_up(self, announced: pb.RoundInfo | int) -> list[AggregateResult]:
        """Fetch, check and chain the results of the rounds this client missed.

        `announced`: the round this client wants to join next (a RoundInfo from
        `wait_for_round`, or its id); every round after the last result this client
        applied and before it is fetched with GetResult, rounds that failed are skipped.
        Returns the missed results in order (apply each `weighted_mean` to the model, in
        order); the model chain has advanced past them. Refuses a CKKS round
        (ProtocolError: it needs the epoch key) and, when the announced round's model
        hash does not follow from the results served, raises SessionMismatchError and
        changes nothing. Why fetching is safe: see clients.catch_up.
        """
        if isinstance(announced, pb.RoundInfo):
            info, up_to = announced, int(announced.spec.round_id)
        else:
            info, up_to = await self.get_round(), int(announced)
            if up_to > int(info.spec.round_id):
                raise ProtocolError(
                    f"round {up_to} is not announced yet (the open round is "
                    f"{info.spec.round_id}): catch up to a round the server announced"
                )
        return await catch_up(
            self._ensure_stub(),
            client_id=self.client_id,
            chain=self._chain,
            announced=info.spec,
            up_to=up_to,
            retry=self._retry,
            timeout_s=self._stage_timeout(info.spec),
        )

    async def close(self) -> None:
        self._closed = True
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            await channel.close()

    async def __aenter__(self) -> AsyncAggregationClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class AggregationClient:
    """A blocking facade: the async client runs on a private event loop in its own thread.

    Why a thread: the caller may already run an event loop (a notebook, a training
    framework), where `asyncio.run` is refused; a private loop works either way.
    Takes the arguments of ClientOptions, as AsyncAggregationClient does, or
    `from_options(options)`.
    """

    @built_from(ClientOptions)
    def __init__(self, options: ClientOptions) -> None:
        self._start(options)

    @classmethod
    def from_options(cls, options: ClientOptions) -> Self:
        client = cls.__new__(cls)
        client._start(options)
        return client

    def _start(self, options: ClientOptions) -> None:
        self._client = AsyncAggregationClient.from_options(options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fedveil-aggregation-client", daemon=True
        )
        self._thread.start()
        self._closed = False

    @property
    def client_id(self) -> str:
        return self._client.client_id

    @property
    def privacy_ledger(self) -> PrivacyLedger | None:
        return self._client.privacy_ledger

    @property
    def model_chain(self) -> ModelChain:
        return self._client.model_chain

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise ProtocolError("this client is closed; create a new one")
        if threading.current_thread() is self._thread:
            coro.close()
            raise ProtocolError("the blocking client cannot be called from its own loop")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def get_round(self) -> pb.RoundInfo:
        return self._run(self._client.get_round())

    def wait_for_round(
        self, poll_s: float = 0.2, timeout_s: float = DEFAULT_JOIN_TIMEOUT_S
    ) -> pb.RoundInfo:
        return self._run(self._client.wait_for_round(poll_s, timeout_s))

    def run_round(
        self,
        update: np.ndarray | Mapping[str, Any],
        weight: int,
        *,
        join_timeout_s: float = DEFAULT_JOIN_TIMEOUT_S,
        weight_mode: WeightMode | str = WeightMode.EXACT,
    ) -> AggregateResult:
        return self._run(
            self._client.run_round(
                update, weight, join_timeout_s=join_timeout_s, weight_mode=weight_mode
            )
        )

    def needs_catch_up(self, info: pb.RoundInfo) -> bool:
        return self._client.needs_catch_up(info)

    def catch_up(self, announced: pb.RoundInfo | int) -> list[AggregateResult]:
        """Fetch and chain the missed rounds' results (AsyncAggregationClient.catch_up)."""
        return self._run(self._client.catch_up(announced))

    def close(self) -> None:
        if self._closed:
            return
        try:
            self._run(self._client.close())
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def __enter__(self) -> AggregationClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
