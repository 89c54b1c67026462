"""The aggregation modes and DP kinds, defined once for the server, the SDK, settings, the
demo and the audit.

Why one definition: the mode a round runs in decides what each party reveals to whom, and a
client must decide before sending a byte whether it accepts that (clients.mode_policy). When
the name, the trust it asks for and the DP it can carry were strings repeated in ten files,
adding a mode meant editing all of them and a typo in one silently meant "not that mode".

The layering decides the rest of the shape. A TensorFlow-Federated-style factory object
would hold both the server's round and the client's driver, but the server and the client
SDK never import each other (pyproject's import-linter contracts): so the pure definition
lives here, in the core both import, and each side keeps one table keyed by
`AggregationMode` (server.round_modes.ROUND_FACTORIES, clients.mode_driver.DRIVERS), whose
completeness a test checks. The wire number of each mode lives in the one protobuf
translation layer (proto.convert).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from fedveil.errors import ConfigError


class AggregationMode(enum.StrEnum):
    """How the server combines the uploads (the value is the settings/CLI spelling)."""

    SECAGG = "secagg"
    CKKS = "ckks"
    PLAINTEXT = "plaintext"


class DPKind(enum.StrEnum):
    """Whose noise protects what: one vocabulary for the server, the demo and the audit.

    NONE: no differential privacy.
    CLIENT: client-level DP with distributed noise; each client adds its share of the
        noise before masking, so the server never sees an un-noised sum (SecAgg only).
    CENTRAL: client-level DP whose noise the server adds after unmasking; it trusts the
        server, and is there for comparison.
    SAMPLE: record-level DP-SGD inside a party's own training (per-example clipping and
        Gaussian noise on each step); it runs in the learner, not in the aggregation.
    """

    NONE = "none"
    CLIENT = "client"
    CENTRAL = "central"
    SAMPLE = "sample"


@dataclass(frozen=True)
class ModeSpec:
    """What one aggregation mode is: what it shows to whom, and what a client trusts by
    taking part. The texts are the ones users read in errors and in the README's table."""

    mode: AggregationMode
    summary: str
    server_sees: str
    key_holder_sees: str
    trusts: str
    how_to_opt_in: str
    allowed_by_default: bool
    carries_client_dp: bool

    @property
    def name(self) -> str:
        return self.mode.value


MODE_SPECS: Mapping[AggregationMode, ModeSpec] = MappingProxyType(
    {
        AggregationMode.SECAGG: ModeSpec(
            mode=AggregationMode.SECAGG,
            summary="SecAgg+: pairwise masks that cancel in the sum of at least t survivors",
            server_sees="masked uploads, then only the weighted sum of the survivors",
            key_holder_sees="there is no key holder",
            trusts="fewer than the threshold of a neighbourhood collude with the server",
            how_to_opt_in="opt in with ClientPolicy(allowed_modes={'secagg', ...})",
            allowed_by_default=True,
            carries_client_dp=True,
        ),
        AggregationMode.CKKS: ModeSpec(
            mode=AggregationMode.CKKS,
            summary="CKKS: uploads encrypted under a key one enrolled client holds",
            server_sees="ciphertexts only; it sums them without the secret key",
            key_holder_sees="whatever the server relays: the mean, or one upload if the "
            "server colludes with it",
            trusts="the key-holding client does not collude with the server",
            how_to_opt_in=(
                "if the federation really runs CKKS (the key holder must not collude with "
                "the server), opt in with ClientPolicy(allowed_modes={'secagg', 'ckks'}) or "
                "`fedveil client --allow-mode ckks`"
            ),
            allowed_by_default=False,
            carries_client_dp=False,
        ),
        AggregationMode.PLAINTEXT: ModeSpec(
            mode=AggregationMode.PLAINTEXT,
            summary="plaintext: the unprotected baseline, for benchmarks only",
            server_sees="every upload in the clear",
            key_holder_sees="there is no key holder",
            trusts="the server with every update",
            how_to_opt_in=(
                "plaintext shows every update to the server and is for benchmarks only: opt "
                "in with ClientPolicy(allowed_modes={..., 'plaintext'}) or "
                "`fedveil client --allow-plaintext-for-benchmarks`"
            ),
            allowed_by_default=False,
            carries_client_dp=False,
        ),
    }
)

DEFAULT_ALLOWED_MODES: frozenset[AggregationMode] = frozenset(
    spec.mode for spec in MODE_SPECS.values() if spec.allowed_by_default
)


def mode_spec(mode: AggregationMode | str) -> ModeSpec:
    """The spec of `mode` (an AggregationMode or its spelling), or ConfigError naming the
    known modes."""
    return MODE_SPECS[parse_mode(mode)]


def parse_mode(value: object, what: str = "mode") -> AggregationMode:
    """`value` as an AggregationMode; ConfigError naming `what` and the choices otherwise."""
    if isinstance(value, AggregationMode):
        return value
    try:
        return AggregationMode(str(value)) if isinstance(value, str) else _refuse()
    except ValueError:
        choices = ", ".join(m.value for m in AggregationMode)
        raise ConfigError(f"{what} must be one of {choices}, got {value!r}") from None


def _refuse() -> AggregationMode:
    raise ValueError("not a mode name")


def parse_modes(
    values: Iterable[object], what: str = "allowed_modes"
) -> frozenset[AggregationMode]:
    return frozenset(parse_mode(v, what) for v in values)


def parse_dp_kind(
    value: object, what: str = "dp", allowed: Iterable[DPKind] = tuple(DPKind)
) -> DPKind:
    """`value` as a DPKind among `allowed`; ConfigError naming `what` and the choices."""
    choices = tuple(allowed)
    kind: DPKind | None
    try:
        kind = value if isinstance(value, DPKind) else DPKind(str(value))
    except ValueError:
        kind = None
    if not isinstance(value, str):
        kind = None
    if kind not in choices:
        names = ", ".join(k.value for k in choices)
        raise ConfigError(f"{what} must be one of {names}, got {value!r}")
    assert kind is not None
    return kind
