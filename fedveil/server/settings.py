"""Server and round settings: frozen, strictly validated, loadable from TOML and flags.

The models are StrictSettings (fedveil.settings_loader): a key the server does not know,
a value of the wrong type or out of range is one ConfigError line naming `round.<key>` or
`server.<key>`. Checks that involve several keys (DP needs SecAgg, exactly one of the
noise or the target epsilon...) are written out here, with messages that say what to fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from fedveil.errors import ConfigError
from fedveil.secagg.ckks.presets import DEFAULT_PRESET, preset
from fedveil.secagg.modes import AggregationMode, DPKind, parse_dp_kind, parse_mode
from fedveil.secagg.protocol.upload import DEFAULT_CHUNK_BYTES
from fedveil.server.federation_settings import FederationTable
from fedveil.settings_loader import StrictSettings, apply_overrides, check_values, read_toml
from fedveil.settings_loader import load_settings as load_model

MODES = tuple(mode.value for mode in AggregationMode)
SERVER_DP_KINDS = (DPKind.NONE, DPKind.CLIENT, DPKind.CENTRAL)  # SAMPLE runs in the learner
DP_KINDS = tuple(kind.value for kind in SERVER_DP_KINDS)
DP_MECHANISMS = ("discrete_gaussian", "skellam")
DP_ACCOUNTANTS = ("prv", "rdp", "pld")
CKKS_MESSAGE_BYTES = 4 << 20


class RoundSettings(StrictSettings):
    """How every round of this server is run; rounds follow each other in sequence."""

    settings_where: ClassVar[str] = "round"

    dimension: int = Field(ge=1)
    # secagg (pairwise masking), ckks (homomorphic encryption; the server never holds the
    # key) or plaintext (the unprotected baseline, for comparison only)
    mode: AggregationMode = AggregationMode.SECAGG
    threshold: int | None = None  # default: the smallest majority of a neighbourhood
    neighbours: int | None = None  # default: floor(2 log2 n + 1)
    bits: int = 32
    clip: float = 1.0
    max_weight: int = 100_000
    min_cohort: int = Field(default=3, ge=2)
    stage_timeout_s: float = Field(default=60.0, gt=0)
    rounds: int = Field(default=0, ge=0)  # 0: run rounds until stopped
    chunk_bytes: int = Field(default=DEFAULT_CHUNK_BYTES, ge=4096)
    # SHA-256 of the base model every client holds (e.g. learner.lora.base_model_hash):
    # required to run rounds, no default. Each round's model hash chains it with the
    # digest of the previous round's published result (secagg.protocol.model_chain).
    model_hash: bytes | None = None
    keep_results: int = Field(default=8, ge=1)
    # The federation plan ([federation] table, server.federation_settings): when given,
    # dimension, model_hash (the plan's digest) and rounds follow from it.
    federation: FederationTable | None = None
    ckks_preset: str = DEFAULT_PRESET
    ckks_rotate_every: int = Field(default=10, ge=1)  # rounds per CKKS key epoch
    ckks_key_holder: str | None = None  # default: the first client id of the sorted roster
    # Differential privacy (secagg mode): none; client (each client adds its share of the
    # noise before masking; the server never sees an un-noised sum); central (the server
    # adds the noise after unmasking: for comparison, it trusts the server). The noise is
    # dp_noise_multiplier, or calibrated so that dp_rounds (default: rounds) rounds spend
    # at most dp_target_epsilon at dp_delta. DP means are unweighted, and a DP round
    # quantises with its DP config: `clip` and `max_weight` are not used.
    dp: DPKind = DPKind.NONE
    dp_clip_norm: float = 1.0
    dp_noise_multiplier: float | None = None
    dp_target_epsilon: float | None = None
    dp_delta: float = Field(default=1e-5, gt=0, lt=1)
    dp_rounds: int = Field(default=0, ge=0)  # rounds the target epsilon covers; 0: `rounds`
    dp_min_clients: int | None = Field(default=None, ge=1)  # default: threshold
    dp_mechanism: Literal["discrete_gaussian", "skellam"] = "discrete_gaussian"
    dp_rotate: bool = True
    dp_sampling_prob: float = Field(default=1.0, gt=0, le=1)  # client sampling rate assumed
    dp_accountant: Literal["prv", "rdp", "pld"] = "prv"  # discrete noise: rdp whatever this says
    # Buffered (FedBuff) rounds, secagg mode: a round's key-advertisement stage closes as
    # soon as buffer_size clients have advertised, and the round runs among those K; a
    # client that comes later joins the next round (server.buffered). K is the round's
    # published min_cohort, so it is the survivor floor every client checks. None: a
    # stage waits for every roster member or its deadline.
    buffer_size: int | None = Field(default=None, ge=2)

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, value: object) -> AggregationMode:
        if not isinstance(value, str):
            raise ValueError("must be a string naming the mode")
        return parse_mode(value, "round.mode")

    @field_validator("dp", mode="before")
    @classmethod
    def _dp(cls, value: object) -> DPKind:
        if not isinstance(value, str):
            raise ValueError("must be a string naming the DP kind")
        return parse_dp_kind(value, "round.dp", SERVER_DP_KINDS)

    @field_validator("model_hash", mode="before")
    @classmethod
    def _model_hash(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                value = bytes.fromhex(value)
            except ValueError:
                raise ConfigError(f"round.model_hash is not hex: {value!r}") from None
        if value is None:
            return None
        if not isinstance(value, bytes):
            raise ValueError("must be a hex string")
        if len(value) != 32:
            raise ConfigError("round.model_hash must be 32 bytes (64 hex characters)")
        return value

    @field_validator("ckks_preset")
    @classmethod
    def _ckks_preset(cls, value: str) -> str:
        preset(value)  # raises, naming the known presets
        return value

    @model_validator(mode="after")
    def _check_plan(self) -> RoundSettings:
        if self.federation is None:
            return self
        plan = self.federation.plan()
        if self.dimension != plan.dimension:
            raise ConfigError(
                f"round.dimension = {self.dimension}, but the [federation] plan's adapter has "
                f"{plan.dimension} values; leave round.dimension out (it follows from the plan)"
            )
        if self.model_hash != plan.digest():
            raise ConfigError(
                "round.model_hash is not the [federation] plan's digest; leave it out (with "
                "a plan, every round's model hash chains the plan's digest)"
            )
        if self.rounds != plan.rounds:
            raise ConfigError(
                f"round.rounds = {self.rounds}, but federation.rounds = {plan.rounds}; "
                "give the number of rounds once, in [federation]"
            )
        return self

    @model_validator(mode="after")
    def _check_dp(self) -> RoundSettings:
        if self.dp_sampling_prob < 1:
            # Amplification by sampling holds only if the cohort is a secret random sample;
            # this server takes whoever joins, and no client can check how it chose, so a
            # rate below 1 would shrink the reported epsilon without the privacy behind it.
            raise ConfigError(
                f"round.dp_sampling_prob = {self.dp_sampling_prob} is refused: this server "
                "does not sample cohorts in a way clients can verify, so no amplification by "
                "sampling may be claimed; leave it at 1.0"
            )
        if self.dp == DPKind.NONE:
            return self
        if self.mode != AggregationMode.SECAGG:
            raise ConfigError(
                f'round.dp = {self.dp.value!r} needs mode = "secagg" (got {self.mode.value!r}): '
                "the DP noise is added inside secure aggregation"
            )
        if not self.dp_clip_norm > 0:
            raise ConfigError(f"round.dp_clip_norm must be > 0, got {self.dp_clip_norm}")
        given = (self.dp_noise_multiplier is not None, self.dp_target_epsilon is not None)
        if given == (True, True) or given == (False, False):
            raise ConfigError(
                "with round.dp set, give exactly one of dp_noise_multiplier (the noise) or "
                "dp_target_epsilon (calibrate the noise for dp_rounds rounds at dp_delta)"
            )
        if self.dp_noise_multiplier is not None and self.dp_noise_multiplier < 0:
            raise ConfigError(
                f"round.dp_noise_multiplier must be >= 0, got {self.dp_noise_multiplier}"
            )
        if self.dp_target_epsilon is not None:
            if not self.dp_target_epsilon > 0:
                raise ConfigError(
                    f"round.dp_target_epsilon must be > 0, got {self.dp_target_epsilon}"
                )
            if self.dp_planned_rounds < 1:
                raise ConfigError(
                    "round.dp_target_epsilon needs the number of rounds it covers: set "
                    "rounds (or dp_rounds) >= 1"
                )
        return self

    @model_validator(mode="after")
    def _check_buffer(self) -> RoundSettings:
        k = self.buffer_size
        if k is None:
            return self
        if self.mode != AggregationMode.SECAGG:
            raise ConfigError(
                f'round.buffer_size needs mode = "secagg" (got {self.mode.value!r}): a '
                "buffer is one secure round among the first K clients to arrive"
            )
        if k < self.min_cohort:
            raise ConfigError(
                f"round.buffer_size = {k} is below round.min_cohort = {self.min_cohort}: a "
                "buffer is a round's whole cohort, and no round may release a sum of fewer "
                "than min_cohort updates"
            )
        if self.threshold is not None and k < self.threshold:
            raise ConfigError(
                f"round.buffer_size = {k} is below round.threshold = {self.threshold}: a "
                "buffer of K clients cannot gather t shares to unmask"
            )
        if self.dp != DPKind.NONE and self.dp_min_clients is not None and k < self.dp_min_clients:
            raise ConfigError(
                f"round.buffer_size = {k} is below round.dp_min_clients = "
                f"{self.dp_min_clients}: a buffer would carry less than the accounted noise"
            )
        return self

    @property
    def dp_planned_rounds(self) -> int:
        """Rounds the DP target epsilon covers (dp_rounds, else rounds; 0: none planned)."""
        return self.dp_rounds or self.rounds


class ServerSettings(StrictSettings):
    """Where the service listens, what secures it, and where it keeps state."""

    settings_where: ClassVar[str] = "server"

    round: RoundSettings
    host: str = "127.0.0.1"
    port: int = Field(default=50051, ge=0, le=65535)
    # TOML spells paths as strings: the one place strictness gives way.
    keys_dir: Path | None = Field(default=None, strict=False)
    state_dir: Path = Field(default=Path(".fedveil-server"), strict=False)
    insecure: bool = False
    # Calls one client may have in flight at once (long polls, upload and result
    # streams, unary calls); past it: RESOURCE_EXHAUSTED. An honest client holds 1-2.
    max_calls_per_client: int = Field(default=8, ge=1, le=10_000)
    # gRPC server reflection lists the whole API to anyone who connects: off unless asked.
    reflection: bool = False
    # Prometheus metrics over plain HTTP (server.metrics): off unless a port is given
    # (0: any free port); loopback unless the operator binds it elsewhere, since the
    # endpoint has no authentication (it shows counts and times, never client data).
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"

    @model_validator(mode="after")
    def _tls(self) -> ServerSettings:
        if not self.insecure and self.keys_dir is None:
            raise ConfigError(
                "TLS is always on: give keys_dir (made by `fedveil keys init`), or pass "
                "--insecure explicitly for a local experiment"
            )
        return self

    @property
    def max_message_bytes(self) -> int:
        """Largest request accepted: one chunk plus framing; larger -> RESOURCE_EXHAUSTED.

        In CKKS mode also the key holder's publication (the public context plus the sealed
        secret context), which is larger than a chunk.
        """
        floor = CKKS_MESSAGE_BYTES if self.round.mode == AggregationMode.CKKS else 0
        return max(self.round.chunk_bytes, floor) + 64 * 1024


def _tables(path: Path | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The [server] and [round] tables of the TOML file (empty without one)."""
    data: dict[str, object] = {} if path is None else read_toml(path, "config file")
    unknown_tables = set(data) - {"server", "round", "federation"}
    if unknown_tables:
        raise ConfigError(
            f"unknown tables {sorted(unknown_tables)} in {path}; use [server], [round], "
            "[federation]"
        )
    tables: list[dict[str, Any]] = []
    for table in ("server", "round", "federation"):
        value = data.get(table, {})
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: [{table}] must be a table, got {value!r}")
        tables.append(dict(value))
    if "federation" in tables[1]:
        raise ConfigError(f"{path}: the plan is the [federation] table, not round.federation")
    if tables[2]:
        load_model(FederationTable, tables[2], "federation")  # errors name federation.<key>
        tables[1]["federation"] = tables[2]
    return tables[0], tables[1]


def _follow_plan(round_data: dict[str, Any]) -> dict[str, Any]:
    """With a [federation] plan, the dimension, model hash and rounds follow from it
    (given values that disagree are refused by RoundSettings, naming both)."""
    table = round_data.get("federation")
    if table is None:
        return round_data
    plan = load_model(FederationTable, table, "federation").plan()
    derived = {"dimension": plan.dimension, "model_hash": plan.digest(), "rounds": plan.rounds}
    return {**derived, **round_data}


def load_settings(path: Path | None, overrides: Mapping[str, Any] | None = None) -> ServerSettings:
    """Read a TOML file ([server] and [round] tables), then apply non-None flag overrides.

    Override keys are field names; round fields may be given bare or as "round.<name>".
    """
    server_data, round_data = _tables(path)
    round_flags: dict[str, Any] = {}
    server_flags: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        name = key.removeprefix("round.")
        if name in RoundSettings.model_fields:
            round_flags[name] = value
        elif name in ServerSettings.model_fields and name != "round":
            server_flags[name] = value
        else:
            raise ConfigError(f"unknown setting {key!r}")
    check_values(ServerSettings, {k: v for k, v in server_data.items() if k != "round"}, "server")
    check_values(RoundSettings, round_data, "round")
    round_data = _follow_plan(apply_overrides(round_data, round_flags))
    server_data = apply_overrides(server_data, server_flags)
    if "round" in server_data:
        raise ConfigError(f"{path}: [server] round is not a setting; use the [round] table")
    if "dimension" not in round_data:
        raise ConfigError(
            "round.dimension is required (the length of the flat update), or a [federation] "
            "plan it follows from (`fedveil plan`)"
        )
    if "model_hash" not in round_data:
        raise ConfigError(
            "round.model_hash is required: the hex SHA-256 of the base model every client "
            "holds (clients pass the same hash; each round chains it with the previous "
            "round's result), or a [federation] plan (`fedveil plan`)"
        )
    round_settings = load_model(RoundSettings, round_data, "round")
    return load_model(ServerSettings, {**server_data, "round": round_settings}, "server")


def with_port(settings: ServerSettings, port: int) -> ServerSettings:
    return settings.replace(port=port)
