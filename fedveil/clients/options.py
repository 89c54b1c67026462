"""Everything a client of the aggregation service is constructed from, checked once.

Why one options object: the async client and its blocking facade take the same
arguments; written out twice they drift (a parameter added to one and not the other).
Both constructors are generated from ClientOptions (`built_from`), so each argument is
declared, documented and validated here, and `AsyncAggregationClient.from_options`
builds a client from an options object kept by the caller.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, dataclass
from typing import Concatenate, ParamSpec, TypeVar

from fedveil.clients.calls import RetryPolicy
from fedveil.clients.security import TransportSecurity
from fedveil.errors import ConfigError
from fedveil.secagg.crypto.identity import SigningIdentity, VerifyingIdentity
from fedveil.secagg.dp.budget import PrivacyBudget, PrivacyLedger
from fedveil.secagg.protocol.config import ClientPolicy
from fedveil.secagg.protocol.model_chain import ModelChain

P = ParamSpec("P")
S = TypeVar("S")


@dataclass(frozen=True)
class ClientOptions:
    """An enrolled client of the aggregation service.

    `target`: 'host:port'. `identity` must be the one `roster_identities` enrols for
    `client_id`, and `security`'s certificate must name `client_id` (the server
    identifies callers by it). `policy`: what rounds this client takes part in (None:
    the default ClientPolicy, SecAgg only).

    `base_model_hash` (required): SHA-256 of the base model this client holds (e.g.
    learner.lora.base_model_hash). The client derives each round's model hash itself
    from it and from the last result it accepted (secagg.protocol.model_chain), and
    refuses, before sending anything, a round that announces another one
    (SessionMismatchError). `model_chain` resumes a chain kept from an earlier run
    (`client.model_chain` after its last round); without it the chain starts at the
    base model, so a client that joins a federation after its first round must pass
    the chain of the rounds it missed.

    `retry`: retries of transient failures (default RetryPolicy()). `rpc_timeout_s`,
    when given, bounds every call; otherwise unary calls get
    clients.transport.DEFAULT_UNARY_TIMEOUT_S and the long-poll stage calls
    spec.stage_timeout_s * 2 + 5. `ckks_workers`: threads
    that encrypt a CKKS update.

    `privacy_budget`: the most (epsilon, delta) this client spends over the run (or
    a PrivacyLedger to carry on one; a PrivacyBudget alone is kept in memory only, so
    a client that restarts passes clients.privacy_ledger.PersistentPrivacyLedger,
    which writes each charge to its file before the upload leaves). With it the
    client takes part only in DP rounds (central DP only if policy.accept_central_dp),
    and raises PrivacyBudgetExceededError before sending anything when a round would
    take it past the budget.
    """

    target: str
    client_id: str
    identity: SigningIdentity
    roster_identities: Mapping[str, VerifyingIdentity]
    security: TransportSecurity
    policy: ClientPolicy | None = None
    _: KW_ONLY
    base_model_hash: bytes
    model_chain: ModelChain | None = None
    retry: RetryPolicy | None = None
    rpc_timeout_s: float | None = None
    ckks_workers: int = 1
    privacy_budget: PrivacyBudget | PrivacyLedger | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.target, str) or not self.target:
            raise ConfigError(f"target must be 'host:port', got {self.target!r}")
        if self.roster_identities.get(self.client_id) != self.identity.verifying():
            raise ConfigError(
                f"{self.client_id!r} is not enrolled in the roster given, or with another identity"
            )
        common_name = self.security.common_name()
        if not self.security.insecure and common_name != self.client_id:
            raise ConfigError(
                f"the client certificate names {common_name!r}, not {self.client_id!r}; the "
                "server identifies callers by their certificate and would refuse every call"
            )
        if self.rpc_timeout_s is not None and not self.rpc_timeout_s > 0:
            raise ConfigError(f"rpc_timeout_s must be > 0, got {self.rpc_timeout_s}")
        chain = self.model_chain
        if chain is not None and chain.base_model_hash != self.base_model_hash:
            raise ConfigError("model_chain starts from another base model than base_model_hash")
        if self.ckks_workers < 1:
            raise ConfigError(f"ckks_workers must be >= 1, got {self.ckks_workers}")
        budget = self.privacy_budget
        if budget is not None and not isinstance(budget, PrivacyBudget | PrivacyLedger):
            raise ConfigError(
                f"privacy_budget must be a PrivacyBudget or PrivacyLedger, got "
                f"{type(budget).__name__}"
            )


def built_from(
    options: Callable[P, ClientOptions],
) -> Callable[[Callable[[S, ClientOptions], None]], Callable[Concatenate[S, P], None]]:
    """Turn `__init__(self, options)` into a constructor that takes the arguments of
    ClientOptions (typed as such), builds the options, and hands them on."""

    def decorate(setup: Callable[[S, ClientOptions], None]) -> Callable[Concatenate[S, P], None]:
        def __init__(self: S, /, *args: P.args, **kwargs: P.kwargs) -> None:
            setup(self, options(*args, **kwargs))

        signature = inspect.signature(options)
        self_parameter = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)
        __init__.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[self_parameter, *signature.parameters.values()], return_annotation=None
        )
        __init__.__doc__ = setup.__doc__
        __init__.__qualname__ = setup.__qualname__
        return __init__

    return decorate
