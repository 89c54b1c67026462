"""`fedveil keys ...`: create and extend the federation's CA, certificates and roster.

Why a command rather than "bring your own certificates": mutual TLS plus a pinned roster
only protects anyone if every party gets correctly formed material; one command that
writes the whole layout (see server/keys_store.py) removes the hand-made openssl steps
where such setups usually go wrong.
"""

from __future__ import annotations

import argparse
import sys

from secagg.errors import FedveilError
from server.keys_store import CA_CERT, add_client, client_dir, init_keys, load_roster
from server.roster import Roster


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def add_keys_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Register `keys` and its sub-commands; dispatch the result with `run_keys`."""
    keys = subparsers.add_parser(
        "keys", help="create the CA, server and client certificates and the client roster"
    )
    sub = keys.add_subparsers(dest="keys_command", required=True)

    init = sub.add_parser("init", help="create a new CA, server certificate and clients")
    init.add_argument("--dir", required=True, help="keys folder to create")
    init.add_argument(
        "--hosts",
        type=_csv,
        required=True,
        help="comma-separated DNS names / IP addresses clients dial, e.g. localhost,127.0.0.1",
    )
    init.add_argument(
        "--clients", type=_csv, default=[], help="comma-separated client ids to enrol"
    )
    init.add_argument(
        "--force",
        action="store_true",
        help="replace an existing CA (invalidates every certificate issued so far)",
    )

    add = sub.add_parser("add-client", help="enrol one more client with the existing CA")
    add.add_argument("--dir", required=True, help="keys folder created by `keys init`")
    add.add_argument("--id", required=True, dest="client_id", help="the new client's id")

    show = sub.add_parser("show", help="print the roster: client ids and fingerprints")
    show.add_argument("--dir", required=True, help="keys folder created by `keys init`")
    keys.set_defaults(handler=run_keys)
    return keys


def _print_roster(roster: Roster) -> None:
    if not roster:
        print("no clients enrolled")
        return
    print(f"{'client id':<24} {'identity (Ed25519)':<64} certificate SHA-256")
    for cid in roster.ids():
        client = roster[cid]
        print(f"{cid:<24} {client.identity.public_bytes.hex()} {client.certificate_sha256.hex()}")


def run_keys(args: argparse.Namespace) -> int:
    """Run one `keys` sub-command; errors go to stderr with exit status 2."""
    try:
        if args.keys_command == "init":
            roster = init_keys(args.dir, args.hosts, args.clients, overwrite=args.force)
            print(f"created CA {args.dir}/{CA_CERT} for hosts {', '.join(args.hosts)}")
            print(f"keep {args.dir}/ca.key offline; give {args.dir}/server/ to the server")
            _print_roster(roster)
        elif args.keys_command == "add-client":
            enrolled = add_client(args.dir, args.client_id)
            print(
                f"enrolled {enrolled.client_id}: give {client_dir(args.dir, args.client_id)}/ "
                "to that client"
            )
            print(f"certificate SHA-256 {enrolled.certificate_sha256.hex()}")
        elif args.keys_command == "show":
            _print_roster(load_roster(args.dir))
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
