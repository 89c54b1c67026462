"""`fedveil keys ...`: the federation's CA, the server's folder, enrolment and revocation.

Why a command rather than "bring your own certificates": mutual TLS plus a pinned roster
only protects anyone if every party gets correctly formed material, and the protocol's
defences against an active server only hold if nobody but a client ever holds that
client's keys. So the flow has no dealer (server/keys_store.py shows the folders):

    operator:      fedveil keys init --ca-dir CA --server-dir SERVER --hosts ...
    organisation:  fedveil keys request --client-id ID --dir DIR   (keys stay in DIR)
    operator:      fedveil keys enrol DIR/request.json --ca-dir CA --server-dir SERVER
    operator:      fedveil keys show --server-dir SERVER    (the roster's SHA-256)
    operator:      fedveil keys revoke ID --server-dir SERVER
    operator:      fedveil keys operator --ca-dir CA --server-dir SERVER --name NAME --out DIR
                   (a certificate for `fedveil status`; server/operators.py)
    operator:      fedveil keys revoke-operator NAME --server-dir SERVER
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedveil.clients.enrolment import REQUEST_FILE, request_enrolment
from fedveil.commands import Command, SubParsers
from fedveil.errors import FedveilError
from fedveil.server.keys_store import (
    CA_CERT,
    CA_KEY,
    ROSTER_FILE,
    enrol_request,
    init_federation,
    load_roster,
    read_request,
    revoke_client,
)
from fedveil.server.operators import (
    OPERATOR_CERT,
    OPERATOR_KEY,
    OPERATORS_FILE,
    issue_operator,
    revoke_operator,
)
from fedveil.server.pki import validate_client_id
from fedveil.server.roster import Roster


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def add_parser(
    subparsers: SubParsers,
) -> argparse.ArgumentParser:
    """Register `keys` and its sub-commands; dispatched by `run`."""
    keys = subparsers.add_parser(
        "keys", help="create the CA and server folder, enrol and revoke clients"
    )
    sub = keys.add_subparsers(dest="keys_command", required=True)

    init = sub.add_parser(
        "init", help="operator: create the CA folder and the server's runtime folder, apart"
    )
    init.add_argument("--ca-dir", type=Path, required=True, help="CA folder (keep it offline)")
    init.add_argument(
        "--server-dir",
        type=Path,
        required=True,
        help="the server's folder: its key pair, the CA certificate and the roster only",
    )
    init.add_argument(
        "--hosts",
        type=_csv,
        required=True,
        help="comma-separated DNS names / IP addresses clients dial, e.g. localhost,127.0.0.1",
    )
    init.add_argument(
        "--force",
        action="store_true",
        help="replace an existing CA (invalidates every certificate issued so far)",
    )

    request = sub.add_parser(
        "request",
        help="organisation: make this client's keys locally and an enrolment request",
    )
    request.add_argument("--client-id", required=True, help="this client's id")
    request.add_argument(
        "--dir", type=Path, required=True, help="this client's folder (its keys stay here)"
    )
    request.add_argument(
        "--force", action="store_true", help="replace existing keys (re-enrolment)"
    )

    enrol = sub.add_parser(
        "enrol", help="operator: sign a request's certificate and add it to the roster"
    )
    enrol.add_argument("request", type=Path, help="the request.json a client sent")
    enrol.add_argument("--ca-dir", type=Path, required=True, help="CA folder from `keys init`")
    enrol.add_argument(
        "--server-dir", type=Path, required=True, help="server folder from `keys init`"
    )
    enrol.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write client.pem and ca.pem for the client (default: beside REQUEST)",
    )
    enrol.add_argument(
        "--request-sha256",
        default=None,
        help="the request fingerprint the organisation gave you out of band; refuse others",
    )

    revoke = sub.add_parser("revoke", help="operator: remove a client from the roster")
    revoke.add_argument("client_id", help="the client to remove")
    revoke.add_argument(
        "--server-dir", type=Path, required=True, help="server folder from `keys init`"
    )

    show = sub.add_parser("show", help="print the roster and its SHA-256 for the clients")
    show.add_argument(
        "--server-dir", type=Path, required=True, help="server folder from `keys init`"
    )

    operator = sub.add_parser(
        "operator",
        help="operator: a certificate that may ask the server's status (`fedveil status`)",
    )
    operator.add_argument("--ca-dir", type=Path, required=True, help="CA folder from `keys init`")
    operator.add_argument(
        "--server-dir",
        type=Path,
        required=True,
        help="server folder from `keys init` (the certificate is pinned in its operators.json)",
    )
    operator.add_argument("--name", default="operator", help="the operator's name (operator)")
    operator.add_argument(
        "--out",
        type=Path,
        required=True,
        help="the operator's folder: operator.pem, operator.key and ca.pem (apart from both)",
    )

    revoke_op = sub.add_parser(
        "revoke-operator", help="operator: unpin an operator certificate (refused at once)"
    )
    revoke_op.add_argument("name", help="the operator to remove")
    revoke_op.add_argument(
        "--server-dir", type=Path, required=True, help="server folder from `keys init`"
    )
    return keys


def _print_roster(roster: Roster) -> None:
    if not roster:
        print("no clients enrolled")
    else:
        print(f"{'client id':<24} {'identity (Ed25519)':<64} certificate SHA-256")
        for cid in roster.ids():
            client = roster[cid]
            print(
                f"{cid:<24} {client.identity.public_bytes.hex()} {client.certificate_sha256.hex()}"
            )
    print(f"roster SHA-256 {roster.sha256().hex()}")


def _request(args: argparse.Namespace) -> None:
    validate_client_id(args.client_id)
    made = request_enrolment(args.dir, args.client_id, force=args.force)
    print(f"wrote {args.dir / REQUEST_FILE} for {made.client_id}: send it to the operator")
    print(f"request SHA-256 {made.sha256().hex()} (read it to the operator out of band)")
    print(f"keep {args.dir}/ on this machine: identity.key and client.key never leave it")


def _enrol(args: argparse.Namespace) -> None:
    request = read_request(args.request)
    if args.request_sha256 is not None and (
        args.request_sha256.strip().lower() != request.sha256().hex()
    ):
        raise FedveilError(
            f"{args.request} has SHA-256 {request.sha256().hex()}, not the "
            f"{args.request_sha256} the organisation gave; do not enrol it"
        )
    enrolled, out = enrol_request(args.request, args.ca_dir, args.server_dir, args.out)
    print(f"enrolled {enrolled.client_id} (request SHA-256 {request.sha256().hex()})")
    print(f"give {out / 'client.pem'} and {out / CA_CERT} back to {enrolled.client_id}")
    roster = load_roster(args.server_dir)
    print(
        f"roster SHA-256 {roster.sha256().hex()}: hand {args.server_dir / ROSTER_FILE} "
        "and this fingerprint to every client"
    )


def run(args: argparse.Namespace) -> int:
    """Run one `keys` sub-command; errors go to stderr with exit status 2."""
    try:
        if args.keys_command == "init":
            init_federation(args.ca_dir, args.server_dir, args.hosts, overwrite=args.force)
            print(f"created CA {args.ca_dir / CA_CERT} for hosts {', '.join(args.hosts)}")
            print(
                f"keep {args.ca_dir / CA_KEY} offline; run the server on {args.server_dir}/ "
                "only; enrol clients from their `fedveil keys request`"
            )
        elif args.keys_command == "request":
            _request(args)
        elif args.keys_command == "enrol":
            _enrol(args)
        elif args.keys_command == "revoke":
            roster = revoke_client(args.server_dir, args.client_id)
            print(
                f"revoked {args.client_id}: the server refuses its certificate from the next "
                "round it opens"
            )
            print(f"roster SHA-256 {roster.sha256().hex()}")
        elif args.keys_command == "show":
            _print_roster(load_roster(args.server_dir))
        elif args.keys_command == "operator":
            fingerprint = issue_operator(args.ca_dir, args.server_dir, args.name, args.out)
            print(
                f"issued operator {args.name!r}: {args.out / OPERATOR_CERT} and "
                f"{args.out / OPERATOR_KEY} (keep the key with the operator, not the server)"
            )
            print(
                f"pinned certificate SHA-256 {fingerprint.hex()} in "
                f"{args.server_dir / OPERATORS_FILE}; ask with `fedveil status --server "
                f"HOST:PORT --credentials {args.out}`"
            )
        elif args.keys_command == "revoke-operator":
            revoke_operator(args.server_dir, args.name)
            print(f"revoked operator {args.name!r}: the server refuses its certificate at once")
        else:
            print(f"error: unknown keys command {args.keys_command!r}", file=sys.stderr)
            return 2
    except FedveilError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


COMMAND = Command("keys", add_parser, run)
