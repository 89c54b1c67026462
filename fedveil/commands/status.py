"""`fedveil status --server ADDR --credentials DIR`: ask a running server, as its
operator, which round and stage it is in, whom the stage waits for, when it closes at the
latest, who is connected and why the last round failed (`--json`: the same as JSON).

Why with operator credentials over mutual TLS: the answer names the federation's parties
and who is late, which is the operator's business and no party's; the server answers only
a certificate from `fedveil keys operator` (server.operators), over the same TLS as every
other call. Exit status: 0 answered; 1 the server refused or could not be reached (one
line naming the gRPC status); 2 bad flags or an unreadable credentials folder.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fedveil.commands import Command, SubParsers
from fedveil.errors import ConfigError
from fedveil.proto import aggregation_pb2 as pb
from fedveil.proto import aggregation_pb2_grpc as pb_grpc
from fedveil.proto.convert_status import status_to_dict
from fedveil.server.operators import OPERATOR_CA, OPERATOR_CERT, OPERATOR_KEY


def add_parser(sub: SubParsers) -> None:
    p = sub.add_parser("status", help="operator: the running server's round, stage and clients")
    p.add_argument("--server", required=True, help="host:port of the server, e.g. localhost:50051")
    p.add_argument(
        "--credentials",
        type=Path,
        required=True,
        help="the operator's folder from `fedveil keys operator` (operator.pem, .key, ca.pem)",
    )
    p.add_argument("--json", action="store_true", help="print the status as one JSON object")
    p.add_argument(
        "--timeout-s", type=float, default=10.0, help="give up after this many seconds (10)"
    )


def operator_channel_credentials(folder: Path) -> grpc.ChannelCredentials:
    """Mutual-TLS credentials from an operator's folder (ConfigError naming what is wrong)."""
    parts: dict[str, bytes] = {}
    for name in (OPERATOR_CERT, OPERATOR_KEY, OPERATOR_CA):
        try:
            parts[name] = (folder / name).read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"cannot read {folder / name} ({exc.strerror or exc}); make the folder with "
                "`fedveil keys operator --ca-dir CA --server-dir SERVER --name NAME --out DIR`"
            ) from exc
    try:
        x509.load_pem_x509_certificate(parts[OPERATOR_CERT])
        x509.load_pem_x509_certificate(parts[OPERATOR_CA])
        serialization.load_pem_private_key(parts[OPERATOR_KEY], password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"cannot parse the operator credentials in {folder}: {exc}") from exc
    return grpc.ssl_channel_credentials(
        root_certificates=parts[OPERATOR_CA],
        private_key=parts[OPERATOR_KEY],
        certificate_chain=parts[OPERATOR_CERT],
    )


def fetch_status(address: str, folder: Path, timeout_s: float = 10.0) -> pb.ServerStatus:
    """One GetStatus call; raises ConfigError (bad folder) or grpc.RpcError."""
    credentials = operator_channel_credentials(folder)
    with grpc.secure_channel(address, credentials) as channel:
        stub = pb_grpc.OperationsStub(channel)
        reply: pb.ServerStatus = stub.GetStatus(pb.StatusRequest(), timeout=timeout_s)
        return reply


def _when(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def format_status(data: dict[str, Any], now: float | None = None) -> str:
    """The status as a few lines for a terminal."""
    now = time.time() if now is None else now
    lines: list[str] = []
    current = data["round"]
    if current is None:
        lines.append(f"no round open ({data['mode']}): every configured round has run")
    else:
        lines.append(
            f"round {current['round_id']} ({data['mode']}): stage {current['stage']}, "
            f"{current['arrived_clients']} of {current['expected_clients']} clients arrived"
        )
        if current["missing_clients"]:
            lines.append(f"  waiting for: {', '.join(current['missing_clients'])}")
        left = current["stage_deadline"] - now
        lines.append(
            f"  stage opened {_when(current['stage_opened_at'])}, deadline "
            f"{_when(current['stage_deadline'])} ({max(0.0, left):.0f} s left)"
        )
    connected = ", ".join(data["connected_clients"]) or "none"
    lines.append(f"connected: {connected} (of {data['enrolled_clients']} enrolled)")
    lines.append(
        f"rounds opened {data['rounds_opened']} (this process), results published "
        f"{data['results_published']}"
    )
    failure = data["last_failure"]
    if failure is None:
        lines.append("last failure: none")
    else:
        where = f" at {failure['stage']}" if failure["stage"] else ""
        lines.append(f"last failure: round {failure['round_id']}{where}: {failure['reason']}")
    if data["dp_epsilon_spent"]:
        lines.append(f"DP epsilon spent: {data['dp_epsilon_spent']:.4g}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        status = fetch_status(args.server, args.credentials, args.timeout_s)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except grpc.RpcError as exc:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        details = " ".join(str(details).split())  # one line, whatever the TLS stack said
        name = code.name if code is not None else "ERROR"
        print(f"error: {args.server} answered {name}: {details}", file=sys.stderr)
        return 1
    data = status_to_dict(status)
    print(json.dumps(data, indent=2) if args.json else format_status(data))
    return 0


COMMAND = Command("status", add_parser, run)
