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
import logging
import sys
from argparse import SUPPRESS
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedveil.clients.credentials import ClientCredentials
from fedveil.clients.privacy_ledger import PersistentPrivacyLedger, federation_fingerprint
from fedveil.clients.transport import AggregateResult, AsyncAggregationClient
from fedveil.clients.update_guard import RepeatedUpdateGuard
from fedveil.commands import Command, SubParsers
from fedveil.commands.client_io import load_update, write_result, write_summary
from fedveil.commands.client_settings import ClientSettings, load_client_settings
from fedveil.commands.client_wiring import observed_security, trusted_roster
from fedveil.commands.logs import add_logging_flags, configure_logging
from fedveil.errors import ConfigError, FedveilError
from fedveil.secagg.protocol.stages import Stage

__all__ = ["COMMAND", "ClientSettings", "load_client_settings", "prepare", "run", "run_rounds"]

logger = logging.getLogger("fedveil.client")


# --- flags -----------------------------------------------------------------------------------

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
    roster = trusted_roster(settings.roster, settings.roster_fingerprint(), "--roster-sha256")
    update = load_update(settings.update)
    # With a privacy budget the SDK refuses every round without DP noise, so only then may
    # one update go to several rounds; otherwise refuse now, before anything is sent.
    guard = RepeatedUpdateGuard(dp_protected=settings.privacy_budget() is not None)
    guard.check_plan(update, settings.rounds)
    security = observed_security(credentials, settings.server_name, stop_before)
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
                write_summary(settings.summary_json, results)
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
