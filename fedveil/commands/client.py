"""`fedveil client`: take part in aggregation rounds as one enrolled client process.

Why a command next to the SDK: an organisation (or a supervising test) must be able to
run a client as its own process with nothing but the folder `fedveil keys` gave it, the
federation's roster and an update file, and tell from the exit status and the log how
far it got. Every stage the client enters is logged as one stable line on stderr::

    stage advertise-keys: submitted (round 1)
    stage advertise-keys: answered (round 1)

(`submitted`: the message is handed to gRPC and the client now waits in that stage's
long poll; `answered`: the server closed the stage and replied.) These lines come from a
gRPC interceptor on the client's own channel, so they name the stage RPCs of the wire
contract rather than depend on the SDK's log wording.

Options come from flags, or from a TOML file whose [client] table uses the same names
(`min_cohort` or `min-cohort`); flags override the file. Relative paths are taken from
the working directory, as `fedveil server` does. Exit status: 0 when every round ended
with a result, 1 when a round failed, the service refused, or this client refused the
server (a protection mode it does not allow: ModeDowngradeError; the reason on stderr),
2 for bad arguments, configuration or input files (including `--rounds` > 1 without
DP, which would send one update twice: RepeatedUpdateError).

`--model-hash` (required) is the SHA-256 of the base model this client holds. Each round's
model hash is derived from it and the results this process accepted (never from the
server), so a round about another model, or after results this client did not get, is
refused before anything is sent (SessionMismatchError, exit 1); an aggregate no honest
cohort could produce is refused too (ImplausibleAggregateError, exit 1). A later run
resumes the chain with `--previous-result ROUND:DIGEST` from the last summary.

`--privacy-epsilon` (a client-level DP budget) needs `--privacy-ledger PATH`: a JSON file
(clients.privacy_ledger) that records every round this client was charged for, written
and fsync'd before each noised upload leaves, and loaded by the next run, so a restart
does not start the budget from zero. It is bound to the federation (the CA certificate's
SHA-256), the client and the budget: any mismatch, or a corrupt file, exits 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import signal
import sys
import tomllib
from argparse import SUPPRESS
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from fedveil.clients.credentials import ClientCredentials
from fedveil.clients.mode_policy import allowed_modes_from_flags
from fedveil.clients.privacy_ledger import PersistentPrivacyLedger, federation_fingerprint
from fedveil.clients.roster_file import load_roster_identities
from fedveil.clients.streams import as_update_vector
from fedveil.clients.transport import AggregateResult, AsyncAggregationClient, TransportSecurity
from fedveil.clients.update_guard import RepeatedUpdateGuard
from fedveil.clients.weights import WeightMode
from fedveil.commands import Command, SubParsers
from fedveil.commands.logs import LOG_FORMATS, add_logging_flags, configure_logging
from fedveil.durable import write_atomically
from fedveil.errors import ConfigError, FedveilError
from fedveil.secagg.dp.budget import PrivacyBudget
from fedveil.secagg.protocol.config import ClientPolicy
from fedveil.secagg.protocol.model_chain import ModelChain
from fedveil.secagg.protocol.stages import Stage

logger = logging.getLogger("fedveil.client")

UPDATE_SUFFIXES = (".npy", ".npz", ".safetensors")
OUT_SUFFIXES = (".npy", ".npz")
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


# --- settings --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientSettings:
    """One `fedveil client` run, validated before anything touches the network."""

    server: str
    credentials: Path
    roster: Path
    update: Path
    weight: int
    roster_sha256: str | None = None
    rounds: int = 1
    out: Path | None = None
    summary_json: Path | None = None
    min_cohort: int = 3
    min_threshold: int = 2
    join_timeout_s: float = 60.0
    server_name: str | None = None
    model_hash: str | None = None
    previous_result: str | None = None
    log_level: str = "INFO"
    log_format: str = "text"
    privacy_epsilon: float | None = None
    privacy_delta: float = 1e-5
    privacy_ledger: Path | None = None
    max_colluders: int = 0
    allow_mode: tuple[str, ...] = ()
    allow_plaintext_for_benchmarks: bool = False
    weight_mode: str = WeightMode.EXACT.value

    def __post_init__(self) -> None:
        host, sep, port = self.server.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                f"server must be HOST:PORT with a port in 1..65535, got {self.server!r}"
            )
        self.roster_fingerprint()  # a malformed --roster-sha256 is named before any I/O
        if not _is_int(self.weight) or self.weight < 0:
            raise ConfigError(f"weight must be a non-negative example count, got {self.weight!r}")
        if not _is_int(self.rounds) or self.rounds < 1:
            raise ConfigError(f"rounds must be >= 1, got {self.rounds!r}")
        if self.update.suffix.lower() not in UPDATE_SUFFIXES:
            raise ConfigError(
                f"update {self.update} must be one of {', '.join(UPDATE_SUFFIXES)} (a flat "
                ".npy vector or named tensors)"
            )
        if self.out is not None and self.out.suffix.lower() not in OUT_SUFFIXES:
            raise ConfigError(f"out {self.out} must end in .npy (flat mean) or .npz (named)")
        if not isinstance(self.join_timeout_s, int | float) or not (
            math.isfinite(self.join_timeout_s) and self.join_timeout_s > 0
        ):
            raise ConfigError(f"join_timeout_s must be > 0, got {self.join_timeout_s!r}")
        if self.model_hash is not None:
            try:
                size = len(bytes.fromhex(self.model_hash))
            except ValueError:
                size = -1
            if size != 32:
                raise ConfigError(f"model_hash must be 64 hex characters, got {self.model_hash!r}")
        if self.previous_result is not None:
            self.model_chain(bytes(32))  # names a bad value itself
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(
                f"log_level must be DEBUG, INFO, WARNING or ERROR, not {self.log_level!r}"
            )
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"log_format must be text or json, not {self.log_format!r}")
        if not isinstance(self.allow_mode, list | tuple) or not all(
            isinstance(mode, str) for mode in self.allow_mode
        ):
            raise ConfigError(f"allow_mode must be a list of mode names, got {self.allow_mode!r}")
        object.__setattr__(self, "allow_mode", tuple(self.allow_mode))
        WeightMode.parse(self.weight_mode)
        # ClientPolicy and PrivacyBudget name a bad value themselves.
        self.policy()
        self.privacy_budget()
        if self.privacy_epsilon is not None and self.privacy_ledger is None:
            raise ConfigError(
                "privacy_epsilon needs --privacy-ledger PATH, the file that records the "
                "privacy this client spends (e.g. privacy-ledger.json in its credentials "
                "folder): without it a restart would start the budget from zero"
            )
        if self.privacy_ledger is not None and self.privacy_epsilon is None:
            raise ConfigError(
                "privacy_ledger needs --privacy-epsilon (and --privacy-delta): the budget "
                "the ledger enforces, the same on every run"
            )

    def roster_fingerprint(self) -> bytes | None:
        """The roster SHA-256 given out of band (`fedveil keys show`), if any."""
        if self.roster_sha256 is None:
            return None
        text = self.roster_sha256.strip().lower()
        if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
            raise ConfigError(
                f"roster_sha256 must be 64 hex digits (from `fedveil keys show`), "
                f"got {self.roster_sha256!r}"
            )
        return bytes.fromhex(text)

    def policy(self) -> ClientPolicy:
        return ClientPolicy(
            min_cohort=self.min_cohort,
            min_threshold=self.min_threshold,
            max_colluders=self.max_colluders,
            allowed_modes=allowed_modes_from_flags(
                self.allow_mode, self.allow_plaintext_for_benchmarks
            ),
        )

    def model_chain(self, base_model_hash: bytes) -> ModelChain:
        """The chain this run starts from: the base model, plus the last result a previous
        run applied when --previous-result ROUND:DIGEST is given."""
        if self.previous_result is None:
            return ModelChain(base_model_hash)
        round_text, sep, digest_text = self.previous_result.partition(":")
        try:
            digest = bytes.fromhex(digest_text)
        except ValueError:
            digest = b""
        if not sep or not round_text.isdigit() or len(digest) != 32:
            raise ConfigError(
                "previous_result must be ROUND:DIGEST (the round id and the 64-hex "
                f"result_digest of the last round applied), got {self.previous_result!r}"
            )
        return ModelChain(base_model_hash, result_digest=digest, round_id=int(round_text))

    def privacy_budget(self) -> PrivacyBudget | None:
        """The client-level DP budget over this run, if one was given."""
        if self.privacy_epsilon is None:
            return None
        return PrivacyBudget(self.privacy_epsilon, self.privacy_delta)

    def out_path(self, round_id: int) -> Path | None:
        """`--out` with `{round}` replaced, so several rounds can keep every result."""
        if self.out is None:
            return None
        return Path(str(self.out).replace("{round}", str(round_id)))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_REQUIRED = ("server", "credentials", "roster", "update", "weight")
_PATHS = frozenset({"credentials", "roster", "update", "out", "summary_json", "privacy_ledger"})
_FLAG_TYPES: dict[str, tuple[type, str]] = {
    "server": (str, "HOST:PORT of the aggregation service"),
    "credentials": (Path, "this client's folder (`fedveil keys request --dir`, plus client.pem)"),
    "roster": (Path, "the federation's roster.json (the operator's SERVER/roster.json)"),
    "roster_sha256": (
        str,
        "the roster's SHA-256 the operator gave out of band (`fedveil keys show`); a "
        "roster with another one is refused",
    ),
    "update": (Path, "the update: a flat .npy vector, or named tensors in .npz/.safetensors"),
    "weight": (int, "this client's weight (example count) in the weighted mean"),
    "rounds": (int, "rounds to take part in, one after another (default 1)"),
    "out": (Path, "write the weighted mean here (.npy flat, .npz named; '{round}' is replaced)"),
    "summary_json": (Path, "write round id, survivors, total weight, error bound as JSON"),
    "min_cohort": (int, "refuse rounds with fewer enrolled clients than this (default 3)"),
    "min_threshold": (int, "refuse rounds whose threshold t is below this (default 2)"),
    "join_timeout_s": (float, "seconds to wait for a round to open (default 60)"),
    "server_name": (str, "TLS name to expect in the server certificate, if not the host"),
    "model_hash": (
        str,
        "hex SHA-256 of the base model this client holds (required; the server's "
        "round.model_hash); each round's model hash chains it with the results applied",
    ),
    "previous_result": (
        str,
        "ROUND:DIGEST of the last round result this client applied in an earlier run (its "
        "summary's result_digest), to resume the model chain",
    ),
    "log_level": (str, "DEBUG, INFO (default), WARNING or ERROR"),
    "log_format": (str, "text (default) or json: one JSON object per log line"),
    "privacy_epsilon": (
        float,
        "client-level DP budget: take part only in DP rounds, and stop before epsilon "
        "over the run would exceed this",
    ),
    "privacy_delta": (float, "delta of the privacy budget (default 1e-5)"),
    "privacy_ledger": (
        Path,
        "the file that records the privacy spent (required with --privacy-epsilon; "
        "written at the first charge, fsync'd before each noised upload, bound to the CA and "
        "the budget)",
    ),
    "max_colluders": (int, "DP rounds: clients assumed to collude with the server (default 0)"),
    "allow_mode": (
        list,
        "also take part in rounds of this protection mode (ckks; repeatable); SecAgg only "
        "by default, any other mode the server announces is refused",
    ),
    "allow_plaintext_for_benchmarks": (
        bool,
        "also take part in PLAINTEXT rounds, where the server sees the update (benchmarks only)",
    ),
    "weight_mode": (
        str,
        "exact (default: the example count), fixed (1) or bucketed (next power of two): "
        "how much of the example count the round's total weight reveals",
    ),
}

_LOGGING_SETTINGS = frozenset({"log_level", "log_format"})  # flags from commands.logs


def add_parser(
    subparsers: SubParsers,
) -> argparse.ArgumentParser:
    """Register `client`; dispatched by `run`."""
    p = subparsers.add_parser(
        "client",
        help="take part in aggregation rounds as one enrolled client",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("--config", type=Path, default=None, help="TOML file with a [client] table")
    add_logging_flags(p, default_level=None)  # None: the [client] table's log_level
    for name, (kind, text) in _FLAG_TYPES.items():
        if name in _LOGGING_SETTINGS:
            continue
        if name == "summary_json":  # --json, as every other command names its JSON report
            p.add_argument("--json", dest=name, type=kind, default=None, help=text)
            p.add_argument(  # the name before that; kept, not shown
                "--summary-json", dest=name, type=kind, default=argparse.SUPPRESS, help=SUPPRESS
            )
            continue
        flag = f"--{name.replace('_', '-')}"
        if kind is list:
            p.add_argument(flag, action="append", default=None, help=text)
        elif kind is bool:
            p.add_argument(flag, action="store_true", default=None, help=text)
        else:
            p.add_argument(flag, type=kind, default=None, help=text)
    p.add_argument(
        "--stop-before-stage",
        type=Stage,
        default=None,
        help=argparse.SUPPRESS,  # fault injection for tests; see _StageWatcher
    )
    return p


def load_client_settings(path: Path | None, overrides: Mapping[str, Any]) -> ClientSettings:
    """The [client] table of `path` (if any), then every non-None flag on top."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} does not exist") from exc
        except OSError as exc:
            raise ConfigError(f"cannot read the config file {path}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"{path} is not valid TOML: not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
        unknown_tables = sorted(set(data) - {"client"})
        if unknown_tables:
            raise ConfigError(f"{path}: unknown tables {unknown_tables}; use [client]")
        table = data.get("client", {})
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [client] must be a table")
        for key, value in table.items():
            name = key.replace("-", "_")
            if name not in _FLAG_TYPES:
                raise ConfigError(
                    f"{path}: unknown [client] setting {key!r}; known: {sorted(_FLAG_TYPES)}"
                )
            values[name] = _coerce(name, value, str(path))
    values.update({k: v for k, v in overrides.items() if v is not None})
    missing = [name for name in _REQUIRED if name not in values]
    if missing:
        flags = ", ".join(f"--{name.replace('_', '-')}" for name in missing)
        raise ConfigError(f"missing {flags} (give them as flags or in the [client] table)")
    known = {f.name for f in fields(ClientSettings)}
    return ClientSettings(**{k: v for k, v in values.items() if k in known})


def _coerce(name: str, value: Any, source: str) -> Any:
    kind = _FLAG_TYPES[name][0]
    if kind is Path:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: {name} must be a path string, got {value!r}")
        return Path(value)
    if kind is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{source}: {name} must be a list of strings, got {value!r}")
        return tuple(value)
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {name} must be true or false, got {value!r}")
        return value
    if kind is float and _is_int(value):
        return float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ConfigError(f"{source}: {name} must be {kind.__name__}, got {value!r}")
    return value


# --- input and output ------------------------------------------------------------------------


def load_update(path: Path) -> np.ndarray | dict[str, np.ndarray]:
    """The update as a flat vector (.npy) or named tensors (.npz, .safetensors); no pickle."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise ConfigError(f"update file {path} does not exist")
    try:
        if suffix == ".npy":
            loaded = np.load(path, allow_pickle=False)
            if not isinstance(loaded, np.ndarray):
                raise ConfigError(f"{path} does not hold a single array")
            update: np.ndarray | dict[str, np.ndarray] = loaded
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                update = {name: archive[name] for name in archive.files}
        else:
            try:
                from safetensors.numpy import load_file
            except ImportError as exc:
                raise ConfigError(
                    "reading .safetensors needs the `safetensors` package; install it or "
                    "save the update as .npz"
                ) from exc
            update = dict(load_file(str(path)))
    except ConfigError:
        raise
    except (ValueError, OSError, EOFError, TypeError) as exc:
        raise ConfigError(f"cannot read the update {path}: {exc}") from exc
    _check_update(update, path)
    return update


def _check_update(update: np.ndarray | dict[str, np.ndarray], path: Path) -> None:
    arrays = update.values() if isinstance(update, dict) else [update]
    for array in arrays:
        if array.dtype.kind not in "fiu":
            raise ConfigError(f"{path}: the update must be numeric, found dtype {array.dtype}")
    vector, _ = as_update_vector(update)  # the SDK's own checks (1-D, named, non-empty)
    if vector.size == 0:
        raise ConfigError(f"{path}: the update is empty")
    if not np.all(np.isfinite(vector)):
        raise ConfigError(f"{path}: the update holds NaN or infinite values")


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Write via a temporary file, so a reader never sees a half-written result."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, write)


def write_result(path: Path, result: AggregateResult) -> None:
    if path.suffix.lower() == ".npz":
        # ConfigError when the round has no tensor names; float64 arrays never need pickle.
        tensors: dict[str, Any] = dict(result.as_tensors())
        _atomic_write(path, lambda fh: np.savez(fh, **tensors))
    else:
        _atomic_write(path, lambda fh: np.save(fh, result.weighted_mean, allow_pickle=False))


def _summary(result: AggregateResult) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "round_id": result.round_id,
        "survivors": list(result.survivors),
        "total_weight": result.total_weight,
        "error_bound": result.error_bound,
        "dimension": int(result.weighted_mean.shape[0]),
        # resume a later run after this round with --previous-result ROUND:DIGEST
        "result_digest": result.result_digest.hex() if result.result_digest else None,
    }
    if result.privacy is not None:
        summary["privacy"] = result.privacy.to_dict()
    if result.privacy_spent is not None:
        summary["privacy_spent"] = result.privacy_spent.to_dict()
    return summary


def _write_summary(path: Path, results: list[AggregateResult]) -> None:
    text = json.dumps([_summary(r) for r in results], indent=2).encode() + b"\n"

    def write(fh: Any) -> None:
        fh.write(text)

    _atomic_write(path, write)


# --- stage logging ---------------------------------------------------------------------------


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


# --- running ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Prepared:
    settings: ClientSettings
    client: AsyncAggregationClient
    update: np.ndarray | dict[str, np.ndarray]
    guard: RepeatedUpdateGuard = field(
        default_factory=lambda: RepeatedUpdateGuard(dp_protected=False)
    )


def _base_model_hash(settings: ClientSettings) -> bytes:
    """The base model hash (required): each round's model hash is derived from it and the
    results this process accepted, never taken from the server."""
    if settings.model_hash is None:
        raise ConfigError(
            "missing --model-hash: the hex SHA-256 of the base model this client holds (the "
            "server's round.model_hash); every round must be about that model plus the "
            "results this client applied"
        )
    return bytes.fromhex(settings.model_hash)


def prepare(settings: ClientSettings, stop_before: Stage | None = None) -> _Prepared:
    """Everything that can be checked offline: credentials, roster, update, the client."""
    credentials = ClientCredentials.load(settings.credentials)
    roster = load_roster_identities(settings.roster, settings.roster_fingerprint())
    if settings.roster_sha256 is None:
        logger.warning(
            "no --roster-sha256: the roster %s is trusted as given; pass the fingerprint "
            "the operator printed with `fedveil keys show`",
            settings.roster,
        )
    update = load_update(settings.update)
    # With a privacy budget the SDK refuses every round without DP noise, so only then may
    # one update go to several rounds; otherwise refuse now, before anything is sent.
    guard = RepeatedUpdateGuard(dp_protected=settings.privacy_budget() is not None)
    guard.check_plan(update, settings.rounds)
    security = ObservedTransportSecurity(
        ca_pem=credentials.ca_pem,
        cert_pem=credentials.cert_pem,
        key_pem=credentials.key_pem,
        server_name_override=settings.server_name,
        stop_before=stop_before,
    )
    base = _base_model_hash(settings)
    ledger = _open_ledger(settings, credentials)
    try:
        client = AsyncAggregationClient(
            settings.server,
            credentials.client_id,
            credentials.identity,
            roster,
            security,
            policy=settings.policy(),
            base_model_hash=base,
            model_chain=settings.model_chain(base),
            privacy_budget=ledger,
        )
    except BaseException:
        _close_ledger(ledger)
        raise
    return _Prepared(settings, client, update, guard)


def _open_ledger(
    settings: ClientSettings, credentials: ClientCredentials
) -> PersistentPrivacyLedger | None:
    """The privacy ledger file (loaded if it exists; written at the first charge)."""
    budget = settings.privacy_budget()
    if budget is None or settings.privacy_ledger is None:
        return None
    ledger = PersistentPrivacyLedger.open(
        settings.privacy_ledger,
        budget,
        federation=federation_fingerprint(credentials.ca_pem),
        owner=credentials.client_id,
    )
    spent = f"epsilon {ledger.spent_epsilon:.4g}" if ledger.rounds else "nothing"
    logger.info(
        "privacy ledger %s: %s spent over %d round(s), budget epsilon %g at delta %g",
        settings.privacy_ledger,
        spent,
        ledger.rounds,
        budget.epsilon,
        budget.delta,
    )
    return ledger


async def run_rounds(prepared: _Prepared) -> list[AggregateResult]:
    settings, client = prepared.settings, prepared.client
    results: list[AggregateResult] = []
    async with client:
        for number in range(1, settings.rounds + 1):
            logger.info(
                "client %s: waiting for round %d of %d at %s",
                client.client_id,
                number,
                settings.rounds,
                settings.server,
            )
            prepared.guard.admit(prepared.update)
            result = await client.run_round(
                prepared.update,
                settings.weight,
                join_timeout_s=settings.join_timeout_s,
                weight_mode=settings.weight_mode,
            )
            results.append(result)
            privacy = (
                f" epsilon={result.privacy.epsilon:.4g} delta={result.privacy.delta:g}"
                if result.privacy is not None
                else ""
            )
            print(
                f"round {result.round_id} done: survivors={len(result.survivors)} "
                f"total_weight={result.total_weight} error_bound={result.error_bound:.6g}"
                f"{privacy}",
                flush=True,
            )
            out = settings.out_path(result.round_id)
            if out is not None:
                write_result(out, result)
                logger.info("round %d: weighted mean written to %s", result.round_id, out)
            if settings.summary_json is not None:
                _write_summary(settings.summary_json, results)
    return results


def run(args: argparse.Namespace) -> int:
    """Run `fedveil client`; the exit status is documented in the module docstring."""
    overrides = {name: getattr(args, name, None) for name in _FLAG_TYPES}
    try:
        settings = load_client_settings(args.config, overrides)
        configure_logging(settings.log_level, settings.log_format)
        prepared = prepare(settings, getattr(args, "stop_before_stage", None))
    except (FedveilError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(run_rounds(prepared))
    except (FedveilError, OSError) as exc:
        # TransportError is a FedveilError: its text is "STATUS: the server's message".
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    finally:
        _close_ledger(prepared.client.privacy_ledger)
    return 0


def _close_ledger(ledger: object) -> None:
    """Release the ledger file's lock (every charge is already on disk)."""
    if isinstance(ledger, PersistentPrivacyLedger):
        ledger.close()


COMMAND = Command("client", add_parser, run)
