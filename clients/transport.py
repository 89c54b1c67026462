"""The gRPC client of the aggregation service: one SecAgg+ round per `run_round` call.

Why it is shaped like this: every stage RPC is a long poll that submits this client's
message and returns the server's request for the next stage, so a round is a straight
line of six awaits with the ClientSession (where the secrets and all the checks live)
between them. The transport adds only what the wire needs: TLS, retries of transient
failures (UNAVAILABLE), resumable chunked uploads, and a checked, streamed result.
Retries resend the very same request message, never a fresh one from the session, so a
retry can never make this client say two different things in one stage.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, TypeVar

import grpc
import numpy as np
from cryptography import x509
from cryptography.x509.oid import NameOID

from clients.calls import (
    RetryPolicy,
    call_unary,
    fetch_result,
    upload_resumable,
)
from clients.ckks_driver import CkksRoundDriver
from clients.credentials import ClientCredentials
from clients.errors import TransportError
from clients.mode_policy import require_allowed_mode
from clients.streams import (
    ChunkedPayload,
    TensorLayout,
    as_update_vector,
    layout_from_pb,
)
from clients.weights import WeightMode, effective_weight
from proto import aggregation_pb2 as pb
from proto import aggregation_pb2_grpc as pb_grpc
from proto.convert import (
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
from proto.convert_ckks import spec_to_ckks_config
from secagg.ckks.client_session import CkksClientSession, EpochKeyStore
from secagg.crypto.identity import SigningIdentity, VerifyingIdentity
from secagg.dp.accounting import EpsilonReport
from secagg.dp.budget import PrivacyBudget, PrivacyLedger
from secagg.dp.config import NoisePlacement
from secagg.dp.report import RoundPrivacyReport
from secagg.errors import (
    ConfigError,
    PrivacyPolicyError,
    ProtocolError,
    SurvivorSetMismatchError,
)
from secagg.protocol import messages as m
from secagg.protocol.aggregate_bounds import (
    CohortLimits,
    ValueLimits,
    bounded_value_limits,
    check_cohort,
    check_values,
    dp_value_limits,
    secagg_value_limits,
)
from secagg.protocol.client import ClientSession
from secagg.protocol.config import ClientPolicy
from secagg.protocol.model_chain import ModelChain, mean_payload_digest, result_digest
from secagg.protocol.stages import Stage

logger = logging.getLogger(__name__)

DEFAULT_UNARY_TIMEOUT_S = 30.0
# CKKS has no analytic per-element bound here; this is the bound its tests hold it to
# (max |error| <= 1e-6 x the value bound; measured about 1e-8).
CKKS_TESTED_ERROR = 1e-6
# What the aggregate sanity bound allows CKKS on top of the value bound (relative): 100x
# the tested error, so an honest result is never refused; a crafted one gains 1e-4.
CKKS_PLAUSIBLE_ERROR = 1e-4
DEFAULT_JOIN_TIMEOUT_S = 60.0
# Used when a spec publishes no stage timeout: long enough for a slow cohort's stage.
FALLBACK_STAGE_TIMEOUT_S = 300.0
_PEM_START = b"-----BEGIN "
# While joining, "no round yet" and "server not up yet" both mean: poll again.
_KEEP_WAITING = frozenset({"NOT_FOUND", "UNAVAILABLE"})
T = TypeVar("T")


# --- configuration -------------------------------------------------------------------------


@dataclass(frozen=True)
class TransportSecurity:
    """Mutual-TLS material, or an explicit `insecure=True` (tests only; logs a warning)."""

    ca_pem: bytes | None = None
    cert_pem: bytes | None = None
    key_pem: bytes | None = field(default=None, repr=False)
    server_name_override: str | None = None
    insecure: bool = False

    def __post_init__(self) -> None:
        pems = {"ca_pem": self.ca_pem, "cert_pem": self.cert_pem, "key_pem": self.key_pem}
        given = sorted(name for name, value in pems.items() if value is not None)
        if self.insecure:
            if given or self.server_name_override is not None:
                raise ConfigError(
                    f"insecure=True together with TLS settings {given or ['server_name_override']}"
                    ": choose either TLS material or an insecure channel"
                )
            return
        missing = sorted(name for name, value in pems.items() if value is None)
        if missing:
            raise ConfigError(
                f"TLS needs ca_pem, cert_pem and key_pem; missing {missing} (pass "
                "insecure=True explicitly for a plaintext channel in tests)"
            )
        for name, value in pems.items():
            if not isinstance(value, bytes) or not value.lstrip().startswith(_PEM_START):
                raise ConfigError(f"{name} is not PEM data")
        if self.server_name_override == "":
            raise ConfigError("server_name_override must be a host name or None")

    @classmethod
    def from_credentials(
        cls, credentials: ClientCredentials, *, server_name_override: str | None = None
    ) -> TransportSecurity:
        return cls(
            ca_pem=credentials.ca_pem,
            cert_pem=credentials.cert_pem,
            key_pem=credentials.key_pem,
            server_name_override=server_name_override,
        )

    def common_name(self) -> str | None:
        """The client certificate's CN (the id the server will see), None if insecure."""
        if self.cert_pem is None:
            return None
        try:
            cert = x509.load_pem_x509_certificate(self.cert_pem)
        except ValueError as exc:
            raise ConfigError(f"cert_pem cannot be parsed: {exc}") from exc
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        value = names[0].value if len(names) == 1 else None
        return value if isinstance(value, str) else None

    def open_channel(self, target: str) -> grpc.aio.Channel:
        if self.insecure:
            logger.warning(
                "opening an INSECURE plaintext channel to %s: no TLS, the server is not "
                "authenticated and traffic is readable; use only in tests",
                target,
            )
            return grpc.aio.insecure_channel(target)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.ca_pem, private_key=self.key_pem, certificate_chain=self.cert_pem
        )
        options = []
        if self.server_name_override is not None:
            options.append(("grpc.ssl_target_name_override", self.server_name_override))
        return grpc.aio.secure_channel(target, credentials, options=options)


@dataclass(frozen=True, eq=False)
class AggregateResult:
    """The round's weighted mean over its survivors, as the server streamed it.

    DP rounds: the mean is unweighted (total_weight = contributors) and noised;
    error_bound bounds the rounding error only. `privacy` is the server's report of the
    round (`privacy.epsilon`: the federation's cumulative epsilon at `privacy.delta`,
    `privacy.round_epsilon`, `privacy.noise_multiplier`, `privacy.clip_norm`,
    `privacy.noise_std` per element; `privacy.to_dict()` for JSON); `privacy_spent` is this
    client's own ledger after the round (None without a privacy budget).
    `result_digest`: the digest of the result as this client received it; the client's
    next round's model hash chains it (secagg.protocol.model_chain).
    """

    round_id: int
    survivors: tuple[str, ...]
    total_weight: int
    weighted_mean: np.ndarray
    error_bound: float
    layout: TensorLayout | None = None
    privacy: RoundPrivacyReport | None = None
    privacy_spent: EpsilonReport | None = None
    result_digest: bytes | None = None

    def as_tensors(self, layout: TensorLayout | None = None) -> dict[str, np.ndarray]:
        """The mean split into named float64 tensors (by `layout`, or the round's own)."""
        chosen = layout or self.layout
        if chosen is None:
            raise ConfigError("no tensor layout: the update was a flat vector; pass a layout")
        return chosen.split(self.weighted_mean)


# --- one round ---------------------------------------------------------------------------


def _expect(reply: object, kind: type[T]) -> T:
    if not isinstance(reply, kind):
        raise ProtocolError(f"the client session answered {type(reply).__name__}, not {kind}")
    return reply


@dataclass
class _RoundDriver:
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

    async def run(self) -> tuple[pb.ResultHeader, np.ndarray]:
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
            self.round_id, masked.client_id, masked.payload, int(self.spec.chunk_bytes)
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

    async def _result(self, signed: tuple[str, ...]) -> tuple[pb.ResultHeader, np.ndarray]:
        request = pb.GetResultRequest(round_id=self.round_id, client_id=self.session.client_id)
        header, mean = await fetch_result(
            self.stub,
            request,
            expected_dimension=int(self.spec.dimension),
            retry=self.retry,
            timeout_s=self.stage_timeout_s,
        )
        if set(header.survivors) != set(signed):
            raise SurvivorSetMismatchError(
                f"round {self.round_id}: the result claims survivors {sorted(header.survivors)}, "
                f"but this client signed {sorted(signed)}"
            )
        logger.info("round %d: result: %d values received", self.round_id, mean.shape[0])
        return header, mean


def _fit_layout(
    spec: pb.RoundSpec, vector: np.ndarray, layout: TensorLayout | None
) -> TensorLayout | None:
    """Refuse an update that does not fit the round; return the layout to split with."""
    if vector.shape[0] != spec.dimension:
        raise ConfigError(
            f"round {spec.round_id} aggregates vectors of {spec.dimension} values, but this "
            f"update has {vector.shape[0]}; send an update with the round's adapter layout"
        )
    published = layout_from_pb(spec.layout)
    if layout is None or published is None:
        return layout or published
    ours = {s.name: (s.shape, s.offset) for s in layout.slots}
    theirs = {s.name: (s.shape, s.offset) for s in published.slots}
    if ours != theirs:
        differ = sorted(n for n in ours.keys() | theirs.keys() if ours.get(n) != theirs.get(n))
        raise ConfigError(
            f"round {spec.round_id} publishes a tensor layout that differs from this update's "
            f"in {differ[:5]}: the tensors would be summed out of place"
        )
    return layout


# --- the clients ---------------------------------------------------------------------------


class AsyncAggregationClient:
    """An enrolled client of the aggregation service, on grpc.aio.

    `rpc_timeout_s`, when given, bounds every call; otherwise unary calls get
    DEFAULT_UNARY_TIMEOUT_S and the long-poll stage calls spec.stage_timeout_s * 2 + 5.
    The channel opens on first use, on the event loop that uses it.
    """

    def __init__(
        self,
        target: str,
        client_id: str,
        identity: SigningIdentity,
        roster_identities: Mapping[str, VerifyingIdentity],
        security: TransportSecurity,
        policy: ClientPolicy | None = None,
        *,
        base_model_hash: bytes,
        model_chain: ModelChain | None = None,
        retry: RetryPolicy | None = None,
        rpc_timeout_s: float | None = None,
        ckks_workers: int = 1,
        privacy_budget: PrivacyBudget | PrivacyLedger | None = None,
    ) -> None:
        """`base_model_hash` (required): SHA-256 of the base model this client holds (e.g.
        clients.lora.base_model_hash). The client derives each round's model hash itself
        from it and from the last result it accepted (secagg.protocol.model_chain), and
        refuses, before sending anything, a round that announces another one
        (SessionMismatchError). `model_chain` resumes a chain kept from an earlier run
        (`client.model_chain` after its last round); without it the chain starts at the
        base model, so a client that joins a federation after its first round must pass
        the chain of the rounds it missed.

        `privacy_budget`: the most (epsilon, delta) this client spends over the run (or
        a PrivacyLedger to carry on one; a PrivacyBudget alone is kept in memory only, so
        a client that restarts passes clients.privacy_ledger.PersistentPrivacyLedger,
        which writes each charge to its file before the upload leaves). With it the
        client takes part only in DP rounds (central DP only if policy.accept_central_dp),
        and raises PrivacyBudgetExceededError before sending anything when a round would
        take it past the budget."""
        if not isinstance(target, str) or not target:
            raise ConfigError(f"target must be 'host:port', got {target!r}")
        if roster_identities.get(client_id) != identity.verifying():
            raise ConfigError(
                f"{client_id!r} is not enrolled in the roster given, or with another identity"
            )
        common_name = security.common_name()
        if not security.insecure and common_name != client_id:
            raise ConfigError(
                f"the client certificate names {common_name!r}, not {client_id!r}; the server "
                "identifies callers by their certificate and would refuse every call"
            )
        if rpc_timeout_s is not None and not rpc_timeout_s > 0:
            raise ConfigError(f"rpc_timeout_s must be > 0, got {rpc_timeout_s}")
        self.target = target
        self.client_id = client_id
        self._identity = identity
        self._roster = dict(roster_identities)
        self._security = security
        self._policy = policy
        if model_chain is None:
            model_chain = ModelChain(base_model_hash)
        elif model_chain.base_model_hash != base_model_hash:
            raise ConfigError("model_chain starts from another base model than base_model_hash")
        self._chain = model_chain
        self._retry = retry or RetryPolicy()
        self._rpc_timeout_s = rpc_timeout_s
        if ckks_workers < 1:
            raise ConfigError(f"ckks_workers must be >= 1, got {ckks_workers}")
        self._ckks_workers = ckks_workers
        if isinstance(privacy_budget, PrivacyBudget):
            privacy_budget = PrivacyLedger(privacy_budget, owner=client_id)
        elif privacy_budget is not None and not isinstance(privacy_budget, PrivacyLedger):
            raise ConfigError(
                f"privacy_budget must be a PrivacyBudget or PrivacyLedger, got "
                f"{type(privacy_budget).__name__}"
            )
        self._ledger: PrivacyLedger | None = privacy_budget
        self._ckks_keys = EpochKeyStore()
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
            self._channel = self._security.open_channel(self.target)
            self._stub = pb_grpc.AggregationStub(self._channel)
        return self._stub

    def _unary_timeout(self) -> float:
        return self._rpc_timeout_s or DEFAULT_UNARY_TIMEOUT_S

    def _stage_timeout(self, spec: pb.RoundSpec) -> float:
        if self._rpc_timeout_s is not None:
            return self._rpc_timeout_s
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
        require_allowed_mode(int(spec.round_id), int(spec.mode), self._policy)
        weight = effective_weight(
            weight, weight_mode, max_weight=int(spec.quantization.max_weight) or None
        )
        # Before anything is sent: the round must be about the model this client holds.
        self._chain.check(int(spec.round_id), bytes(spec.model_hash))
        layout = _fit_layout(spec, vector, layout)
        if spec.chunk_bytes <= 0:
            raise ConfigError(f"round {spec.round_id} publishes no upload chunk size")
        if self._ledger is not None and spec.mode != pb.AGGREGATION_MODE_SECAGG:
            raise PrivacyPolicyError(
                f"round {spec.round_id} runs in {pb.AggregationMode.Name(spec.mode)} mode, "
                "which adds no differential-privacy noise, but this client has a privacy "
                "budget: refusing to send an un-noised update"
            )
        if spec.mode == pb.AGGREGATION_MODE_CKKS:
            return await self._run_ckks(spec, vector, weight, layout)
        if spec.mode == pb.AGGREGATION_MODE_PLAINTEXT:
            header, mean = await self._run_plaintext(spec, vector, weight)
            plain = AggregateResult(
                round_id=int(header.round_id),
                survivors=tuple(header.survivors),
                total_weight=int(header.total_weight),
                weighted_mean=mean,
                error_bound=float(header.error_bound),
                layout=layout,
            )
            clip, dimension = float(spec.quantization.clip), int(spec.dimension)
            return self._accept(
                plain,
                mode="plaintext",
                header=header,
                payload_sha256=mean_payload_digest(mean),
                cohort=CohortLimits(
                    plain.round_id,
                    self.client_id,
                    frozenset(spec.roster),
                    int(spec.threshold),
                    int(spec.quantization.max_weight),
                    own_weight=weight,
                ),
                values=lambda n, w: bounded_value_limits(clip, dimension, 0.0),
            )
        config = spec_to_config(spec)
        session = ClientSession(
            config,
            self.client_id,
            self._identity,
            self._roster,
            self._policy,
            expected_model_hash=self._chain.model_hash,
            ledger=self._ledger,
        )
        session.set_input(vector, weight)
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
        driver = _RoundDriver(
            self._ensure_stub(),
            spec,
            session,
            self._retry,
            self._stage_timeout(spec),
            self._unary_timeout(),
        )
        header, mean = await driver.run()
        privacy = privacy_from_pb(header.privacy) if header.HasField("privacy") else None
        if config.dp is not None and privacy is not None:
            published = (config.dp.config.noise_multiplier, config.dp.config.clip_norm)
            if (privacy.noise_multiplier, privacy.clip_norm) != published:
                raise ProtocolError(
                    f"round {spec.round_id}: the result's privacy report names noise "
                    f"multiplier / clip norm {(privacy.noise_multiplier, privacy.clip_norm)}, "
                    f"but the round this client joined used {published}"
                )
        result = AggregateResult(
            round_id=int(header.round_id),
            survivors=tuple(header.survivors),
            total_weight=int(header.total_weight),
            weighted_mean=mean,
            error_bound=float(header.error_bound),
            layout=layout,
            privacy=privacy,
            privacy_spent=session.privacy_spent,
        )
        dp = config.dp
        floor = max(config.threshold, int(spec.min_cohort))
        if dp is not None and dp.config.placement is NoisePlacement.CLIENTS:
            floor = max(floor, dp.config.min_clients)
        dp_config = dp.config if dp is not None else None

        def values(survivors: int, total_weight: int) -> ValueLimits:
            if dp_config is not None:
                return dp_value_limits(dp_config, survivors)
            return secagg_value_limits(
                config.quantization, config.dimension, survivors, total_weight
            )

        return self._accept(
            result,
            mode="secagg",
            header=header,
            payload_sha256=mean_payload_digest(mean),
            cohort=CohortLimits(
                result.round_id,
                self.client_id,
                frozenset(config.roster),
                floor,
                config.quantization.max_weight,
                own_weight=None if dp is not None else weight,
                weight_per_survivor=1 if dp is not None else None,
            ),
            values=values,
        )

    def _accept(
        self,
        result: AggregateResult,
        *,
        mode: str,
        header: pb.ResultHeader | None,
        payload_sha256: bytes,
        cohort: CohortLimits,
        values: Callable[[int, int], ValueLimits],
    ) -> AggregateResult:
        """Refuse an aggregate no honest cohort could produce (ImplausibleAggregateError,
        secagg.protocol.aggregate_bounds), then chain the result as received into the
        next round's model hash (secagg.protocol.model_chain)."""
        check_cohort(cohort, result.survivors, result.total_weight)
        limits = values(len(result.survivors), result.total_weight)
        check_values(result.round_id, result.weighted_mean, limits)
        digest = result_digest(
            round_id=result.round_id,
            mode=mode,
            survivors=result.survivors,
            total_weight=int(header.total_weight) if header is not None else 0,
            error_bound=float(header.error_bound) if header is not None else 0.0,
            payload_sha256=payload_sha256,
        )
        self._chain.advance(result.round_id, digest)
        return replace(result, result_digest=digest)

    async def _run_ckks(
        self, spec: pb.RoundSpec, vector: np.ndarray, weight: int, layout: TensorLayout | None
    ) -> AggregateResult:
        """Encrypt under the epoch's CKKS key; the server adds what it cannot read."""
        config = spec_to_ckks_config(spec)
        session = CkksClientSession(
            config,
            self.client_id,
            self._identity,
            self._roster,
            self._ckks_keys,
            self._policy,
            expected_model_hash=self._chain.model_hash,
        )
        if not config.distributes_keys and not session.has_key:
            raise ConfigError(
                f"round {spec.round_id} uses CKKS key epoch {config.key_epoch}, whose keys this "
                "client did not receive (it missed the epoch's first round); it can take part "
                "again from the next epoch"
            )
        driver = CkksRoundDriver(
            self._ensure_stub(),
            spec,
            session,
            self._retry,
            self._stage_timeout(spec),
            self._unary_timeout(),
            workers=self._ckks_workers,
        )
        outcome = await driver.run(vector, weight)
        result = AggregateResult(
            round_id=outcome.round_id,
            survivors=outcome.survivors,
            total_weight=round(outcome.total_weight),
            weighted_mean=outcome.weighted_mean,
            error_bound=CKKS_TESTED_ERROR * config.value_bound,
            layout=layout,
        )
        return self._accept(
            result,
            mode="ckks",
            header=outcome.header,
            payload_sha256=outcome.payload_sha256,
            cohort=CohortLimits(
                result.round_id,
                self.client_id,
                frozenset(config.roster),
                config.min_cohort,
                config.max_weight,
                own_weight=weight,
            ),
            values=lambda n, w: bounded_value_limits(
                config.value_bound, config.dimension, CKKS_PLAUSIBLE_ERROR * config.value_bound
            ),
        )

    async def _run_plaintext(
        self, spec: pb.RoundSpec, vector: np.ndarray, weight: int
    ) -> tuple[pb.ResultHeader, np.ndarray]:
        """The unprotected baseline: stream the update in the clear, then fetch the mean."""
        logger.warning(
            "round %d is a PLAINTEXT round: the server sees this client's update", spec.round_id
        )
        payload = ChunkedPayload(
            int(spec.round_id),
            self.client_id,
            np.ascontiguousarray(vector, dtype="<f4").tobytes(),
            int(spec.chunk_bytes),
        )
        stub = self._ensure_stub()

        def with_weight() -> Iterator[pb.VectorChunk]:
            for chunk in payload.chunks():
                chunk.weight = weight
                yield chunk

        timeout = self._stage_timeout(spec)
        await call_unary(
            lambda request, timeout: stub.UploadPlaintext(with_weight(), timeout=timeout),
            None,
            rpc="UploadPlaintext",
            retry=RetryPolicy(attempts=1),
            timeout_s=timeout,
        )
        request = pb.GetResultRequest(round_id=spec.round_id, client_id=self.client_id)
        return await fetch_result(
            stub,
            request,
            expected_dimension=int(spec.dimension),
            retry=self._retry,
            timeout_s=timeout,
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
    Arguments are those of AsyncAggregationClient.
    """

    def __init__(
        self,
        target: str,
        client_id: str,
        identity: SigningIdentity,
        roster_identities: Mapping[str, VerifyingIdentity],
        security: TransportSecurity,
        policy: ClientPolicy | None = None,
        *,
        base_model_hash: bytes,
        model_chain: ModelChain | None = None,
        retry: RetryPolicy | None = None,
        rpc_timeout_s: float | None = None,
        ckks_workers: int = 1,
        privacy_budget: PrivacyBudget | PrivacyLedger | None = None,
    ) -> None:
        self._client = AsyncAggregationClient(
            target,
            client_id,
            identity,
            roster_identities,
            security,
            policy,
            base_model_hash=base_model_hash,
            model_chain=model_chain,
            retry=retry,
            rpc_timeout_s=rpc_timeout_s,
            ckks_workers=ckks_workers,
            privacy_budget=privacy_budget,
        )
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
