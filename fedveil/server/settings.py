"""Server and round settings: frozen, validated, loadable from TOML, overridable by flags."""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import UnionType
from typing import Any, get_args, get_type_hints

from fedveil.errors import ConfigError
from fedveil.secagg.ckks.presets import DEFAULT_PRESET, preset
from fedveil.secagg.protocol.upload import DEFAULT_CHUNK_BYTES

MODES = ("secagg", "ckks", "plaintext")
DP_KINDS = ("none", "client", "central")
DP_MECHANISMS = ("discrete_gaussian", "skellam")
DP_ACCOUNTANTS = ("prv", "rdp", "pld")
CKKS_MESSAGE_BYTES = 4 << 20


@dataclass(frozen=True)
class RoundSettings:
    """How every round of this server is run; rounds follow each other in sequence."""

    dimension: int
    # "secagg" (pairwise masking), "ckks" (homomorphic encryption; the server never holds
    # the key) or "plaintext" (the unprotected baseline, for comparison only)
    mode: str = "secagg"
    threshold: int | None = None  # default: the smallest majority of a neighbourhood
    neighbours: int | None = None  # default: floor(2 log2 n + 1)
    bits: int = 32
    clip: float = 1.0
    max_weight: int = 100_000
    min_cohort: int = 3
    stage_timeout_s: float = 60.0
    rounds: int = 0  # 0: run rounds until stopped
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    # SHA-256 of the base model every client holds (e.g. learner.lora.base_model_hash):
    # required to run rounds, no default. Each round's model hash chains it with the
    # digest of the previous round's published result (secagg.protocol.model_chain).
    model_hash: bytes | None = None
    keep_results: int = 8
    ckks_preset: str = DEFAULT_PRESET
    ckks_rotate_every: int = 10  # rounds per CKKS key epoch
    ckks_key_holder: str | None = None  # default: the first client id of the sorted roster
    # Differential privacy (secagg mode): "none"; "client" (each client adds its share of
    # the noise before masking; the server never sees an un-noised sum); "central" (the
    # server adds the noise after unmasking: for comparison, it trusts the server). The
    # noise is dp_noise_multiplier, or calibrated so that dp_rounds (default: rounds)
    # rounds spend at most dp_target_epsilon at dp_delta. DP means are unweighted, and a
    # DP round quantises with its DP config: `clip` and `max_weight` are not used.
    dp: str = "none"
    dp_clip_norm: float = 1.0
    dp_noise_multiplier: float | None = None
    dp_target_epsilon: float | None = None
    dp_delta: float = 1e-5
    dp_rounds: int = 0  # rounds the target epsilon covers; 0: `rounds`
    dp_min_clients: int | None = None  # honest clients whose noise suffices; default: threshold
    dp_mechanism: str = "discrete_gaussian"
    dp_rotate: bool = True
    dp_sampling_prob: float = 1.0  # client sampling rate the accountant may assume
    dp_accountant: str = "prv"  # discrete noise is accounted with rdp whatever this says

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"round.mode must be one of {MODES}, got {self.mode!r}")
        self._check_dp()
        preset(self.ckks_preset)  # raises, naming the known presets
        if self.ckks_rotate_every < 1:
            raise ConfigError(
                f"round.ckks_rotate_every must be >= 1 round, got {self.ckks_rotate_every}"
            )
        if self.dimension < 1:
            raise ConfigError(f"round.dimension must be >= 1, got {self.dimension}")
        if self.min_cohort < 2:
            raise ConfigError(f"round.min_cohort must be >= 2, got {self.min_cohort}")
        if not self.stage_timeout_s > 0:
            raise ConfigError(f"round.stage_timeout_s must be > 0, got {self.stage_timeout_s}")
        if self.rounds < 0:
            raise ConfigError(f"round.rounds must be >= 0 (0 = unlimited), got {self.rounds}")
        if self.chunk_bytes < 4096:
            raise ConfigError(f"round.chunk_bytes must be >= 4096, got {self.chunk_bytes}")
        if self.model_hash is not None and (
            not isinstance(self.model_hash, bytes) or len(self.model_hash) != 32
        ):
            raise ConfigError("round.model_hash must be 32 bytes (64 hex characters)")
        if self.keep_results < 1:
            raise ConfigError(f"round.keep_results must be >= 1, got {self.keep_results}")

    @property
    def dp_planned_rounds(self) -> int:
        """Rounds the DP target epsilon covers (dp_rounds, else rounds; 0: none planned)."""
        return self.dp_rounds or self.rounds

    def _check_dp(self) -> None:
        if self.dp not in DP_KINDS:
            raise ConfigError(f"round.dp must be one of {DP_KINDS}, got {self.dp!r}")
        if self.dp_mechanism not in DP_MECHANISMS:
            raise ConfigError(
                f"round.dp_mechanism must be one of {DP_MECHANISMS}, got {self.dp_mechanism!r}"
            )
        if self.dp_accountant not in DP_ACCOUNTANTS:
            raise ConfigError(
                f"round.dp_accountant must be one of {DP_ACCOUNTANTS}, got {self.dp_accountant!r}"
            )
        if self.dp_rounds < 0:
            raise ConfigError(f"round.dp_rounds must be >= 0, got {self.dp_rounds}")
        if self.dp_min_clients is not None and self.dp_min_clients < 1:
            raise ConfigError(f"round.dp_min_clients must be >= 1, got {self.dp_min_clients}")
        if not 0 < self.dp_sampling_prob <= 1:
            raise ConfigError(
                f"round.dp_sampling_prob must be in (0, 1], got {self.dp_sampling_prob}"
            )
        if not 0 < self.dp_delta < 1:
            raise ConfigError(f"round.dp_delta must be in (0, 1), got {self.dp_delta}")
        if self.dp == "none":
            return
        if self.mode != "secagg":
            raise ConfigError(
                f'round.dp = {self.dp!r} needs mode = "secagg" (got {self.mode!r}): the DP '
                "noise is added inside secure aggregation"
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


@dataclass(frozen=True)
class ServerSettings:
    """Where the service listens, what secures it, and where it keeps state."""

    round: RoundSettings
    host: str = "127.0.0.1"
    port: int = 50051
    keys_dir: Path | None = None
    state_dir: Path = field(default_factory=lambda: Path(".fedveil-server"))
    insecure: bool = False
    # Calls one client may have in flight at once (long polls, upload and result
    # streams, unary calls); past it: RESOURCE_EXHAUSTED. An honest client holds 1-2.
    max_calls_per_client: int = 8
    # gRPC server reflection lists the whole API to anyone who connects: off unless asked.
    reflection: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be in [0, 65535], got {self.port}")
        cap = self.max_calls_per_client
        if isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap <= 10_000:
            raise ConfigError(
                f"server.max_calls_per_client must be an integer in [1, 10000], got {cap!r}"
            )
        if not isinstance(self.reflection, bool):
            raise ConfigError(f"server.reflection must be true or false, got {self.reflection!r}")
        if not self.insecure and self.keys_dir is None:
            raise ConfigError(
                "TLS is always on: give keys_dir (made by `fedveil keys init`), or pass "
                "--insecure explicitly for a local experiment"
            )

    @property
    def max_message_bytes(self) -> int:
        """Largest request accepted: one chunk plus framing; larger -> RESOURCE_EXHAUSTED.

        In CKKS mode also the key holder's publication (public context plus the sealed
        secret context: about 0.7 MB at 8192 slots, 1.3 MB at 16384).
        """
        floor = CKKS_MESSAGE_BYTES if self.round.mode == "ckks" else 0
        return max(self.round.chunk_bytes, floor) + 64 * 1024


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path} is not valid TOML: not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


_WANTED = {
    bool: "true or false",
    int: "an integer",
    float: "a finite number",
    str: "a string",
    Path: "a path string",
    bytes: "a hex string",
}


def _check_type(key: str, value: Any, hint: Any) -> Any:
    """`value` if it has the field's type (an integer also for a float); else ConfigError
    naming the key, so a TOML `dimension = "1000"` or `bits = 32.5` is one clear line."""
    options = get_args(hint) if isinstance(hint, UnionType) else (hint,)
    kinds = [k for k in options if k is not type(None)]
    if value is None and len(kinds) < len(options):
        return value
    kind = kinds[0] if len(kinds) == 1 else None
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = number and isinstance(value, int)
    elif kind is float:
        ok = number and math.isfinite(value)
    elif kind is str:
        ok = isinstance(value, str)
    elif kind is Path:
        ok = isinstance(value, str | Path)
    elif kind is bytes:
        ok = isinstance(value, str | bytes)
    else:
        return value
    if ok:
        return value
    fix = ""
    if isinstance(value, str) and kind in (int, float):
        try:
            float(value)
            fix = f" (write {key.split('.')[-1]} = {value.strip()}, without quotes)"
        except ValueError:
            pass
    raise ConfigError(f"{key} must be {_WANTED[kind]}, got {value!r}{fix}")


def _coerce(name: str, value: Any) -> Any:
    if name == "model_hash" and isinstance(value, str):
        try:
            return bytes.fromhex(value)
        except ValueError as exc:
            raise ConfigError(f"round.model_hash is not hex: {value!r}") from exc
    if name in ("keys_dir", "state_dir") and value is not None:
        return Path(value)
    return value


def load_settings(path: Path | None, overrides: dict[str, Any] | None = None) -> ServerSettings:
    """Read a TOML file ([server] and [round] tables), then apply non-None flag overrides.

    Override keys are field names; round fields may be given bare or as "round.<name>".
    """
    data: dict[str, Any] = {} if path is None else _read_toml(path)
    unknown_tables = set(data) - {"server", "round"}
    if unknown_tables:
        raise ConfigError(
            f"unknown tables {sorted(unknown_tables)} in {path}; use [server], [round]"
        )
    for table in ("server", "round"):
        if not isinstance(data.get(table, {}), dict):
            raise ConfigError(f"{path}: [{table}] must be a table, got {data[table]!r}")
    server_data = dict(data.get("server", {}))
    round_data = dict(data.get("round", {}))
    round_names = {f.name for f in fields(RoundSettings)}
    server_names = {f.name for f in fields(ServerSettings)} - {"round"}
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        name = key.removeprefix("round.")
        if name in round_names:
            round_data[name] = value
        elif name in server_names:
            server_data[name] = value
        else:
            raise ConfigError(f"unknown setting {key!r}")
    for table, names in (("server", server_names), ("round", round_names)):
        source = server_data if table == "server" else round_data
        bad = set(source) - names
        if bad:
            raise ConfigError(f"unknown [{table}] settings {sorted(bad)}; known: {sorted(names)}")
    for table, source, kind in (
        ("server", server_data, ServerSettings),
        ("round", round_data, RoundSettings),
    ):
        hints = get_type_hints(kind)
        for name, value in source.items():
            source[name] = _check_type(f"{table}.{name}", value, hints[name])
    if "dimension" not in round_data:
        raise ConfigError("round.dimension is required (the length of the flat update)")
    if "model_hash" not in round_data:
        raise ConfigError(
            "round.model_hash is required: the hex SHA-256 of the base model every client "
            "holds (clients pass the same hash; each round chains it with the previous "
            "round's result)"
        )
    round_settings = RoundSettings(**{k: _coerce(k, v) for k, v in round_data.items()})
    return ServerSettings(
        round=round_settings, **{k: _coerce(k, v) for k, v in server_data.items()}
    )


def with_port(settings: ServerSettings, port: int) -> ServerSettings:
    return replace(settings, port=port)
