"""`fedveil server`: run the aggregation service from a TOML file, every option also a flag."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

from fedveil.commands import Command, SubParsers
from fedveil.commands.logs import add_logging_flags, configure_logging
from fedveil.errors import FedveilError
from fedveil.server.app import start_server
from fedveil.server.keys_store import check_server_folders
from fedveil.server.preflight import check_startup
from fedveil.server.settings import load_settings


def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "yes", "1", "on"):
        return True
    if value in ("false", "no", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


_ROUND_FLAGS: tuple[tuple[str, Any, str], ...] = (
    ("dimension", int, "length of the flat update (required unless in the config)"),
    ("mode", str, "secagg (default), ckks, or plaintext (the unprotected baseline)"),
    ("ckks_preset", str, "ckks mode: parameter preset (add-only-8192, add-only-16384)"),
    ("ckks_rotate_every", int, "ckks mode: rounds per key epoch (default 10)"),
    ("ckks_key_holder", str, "ckks mode: client that creates each epoch's key (default: first)"),
    ("threshold", int, "Shamir threshold t (default: majority of a neighbourhood)"),
    ("neighbours", int, "neighbour-graph degree k (default: 2 log2 n + 1)"),
    ("bits", int, "ring width m in bits per uploaded element"),
    ("clip", float, "clipping bound c"),
    ("max_weight", int, "largest example count a client may claim"),
    ("min_cohort", int, "fewest enrolled clients the server will run rounds with"),
    ("stage_timeout_s", float, "seconds each stage waits for missing clients"),
    ("rounds", int, "number of rounds to run (0: until stopped)"),
    (
        "buffer_size",
        int,
        "secagg: buffered (FedBuff) rounds of K clients: a round starts with the first K "
        "to advertise keys; later ones join the next round",
    ),
    ("chunk_bytes", int, "upload/download chunk size in bytes"),
    (
        "model_hash",
        str,
        "hex SHA-256 of the base model every client holds (required); each round's model "
        "hash chains it with the previous round's published result",
    ),
    (
        "dp",
        str,
        "differential privacy: none (default), client (each client adds its share of the "
        "noise before masking) or central (the server adds it: trusts the server)",
    ),
    ("dp_clip_norm", float, "DP: L2 clip norm of each client's update (default 1.0)"),
    ("dp_noise_multiplier", float, "DP: noise std / clip norm (or give --dp-target-epsilon)"),
    ("dp_target_epsilon", float, "DP: calibrate the noise to this epsilon over the run"),
    ("dp_delta", float, "DP: delta epsilon is reported and calibrated at (default 1e-5)"),
    ("dp_rounds", int, "DP: rounds the target epsilon covers (default: --rounds)"),
    ("dp_min_clients", int, "DP: honest clients whose noise suffices (default: threshold)"),
    ("dp_mechanism", str, "DP: discrete_gaussian (default) or skellam"),
    ("dp_rotate", _boolean, "DP: randomised Hadamard rotation before quantising (true)"),
    ("dp_sampling_prob", float, "DP: client sampling rate the accountant assumes (1.0)"),
    ("dp_accountant", str, "DP: prv (default), rdp or pld"),
)


def add_parser(sub: SubParsers) -> None:
    p = sub.add_parser("server", help="run the aggregation service")
    p.add_argument("--config", type=Path, default=None, help="TOML file with [server] and [round]")
    p.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port to bind (default 50051)")
    p.add_argument("--keys-dir", type=Path, default=None, help="folder made by `fedveil keys init`")
    p.add_argument("--state-dir", type=Path, default=None, help="where the server keeps its state")
    p.add_argument(
        "--insecure",
        action="store_const",
        const=True,
        default=None,
        help="run WITHOUT TLS (local experiments only; logged as a warning at every start)",
    )
    p.add_argument(
        "--reflection",
        action="store_const",
        const=True,
        default=None,
        help="serve gRPC reflection (off by default: it lists the whole API to anyone)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics on this port (off by default; 0: any free port)",
    )
    p.add_argument(
        "--metrics-host",
        default=None,
        help="address the metrics endpoint binds (default 127.0.0.1: it has no authentication)",
    )
    p.add_argument(
        "--shutdown-drain-s",
        type=float,
        default=0.0,
        help="on SIGTERM/SIGINT, report NOT_SERVING on health this long before stopping "
        "(time for a load balancer's probes to notice; default 0)",
    )
    p.add_argument(
        "--max-calls-per-client",
        type=int,
        default=None,
        help="calls one client may have in flight at once (default 8; past it RESOURCE_EXHAUSTED)",
    )
    add_logging_flags(p, default_level="INFO")
    for name, kind, text in _ROUND_FLAGS:
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None, help=text)


def run(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "keys_dir": args.keys_dir,
        "state_dir": args.state_dir,
        "insecure": args.insecure,
        "reflection": args.reflection,
        "max_calls_per_client": args.max_calls_per_client,
        "metrics_port": args.metrics_port,
        "metrics_host": args.metrics_host,
    }
    overrides.update({name: getattr(args, name) for name, _, _ in _ROUND_FLAGS})
    if not args.shutdown_drain_s >= 0:
        print("error: --shutdown-drain-s must be >= 0", file=sys.stderr)
        return 2
    try:
        settings = load_settings(args.config, overrides)
        # No CA or client private key readable by the server (no dealer): before any bind.
        check_server_folders(settings.keys_dir, settings.state_dir)
        check_startup(settings)  # the roster, and a round it can run: before any bind
    except (FedveilError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(args.log_level, args.log_format)

    async def serve() -> None:
        running = await start_server(settings)
        print(f"fedveil server listening on {settings.host}:{running.port}", flush=True)
        if running.metrics_port is not None:
            print(
                f"metrics on http://{settings.metrics_host}:{running.metrics_port}/metrics",
                flush=True,
            )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        done = asyncio.ensure_future(running.wait_for_rounds())
        halt = asyncio.ensure_future(stop.wait())
        await asyncio.wait({done, halt}, return_when=asyncio.FIRST_COMPLETED)
        await running.stop(grace_s=2.0, drain_s=args.shutdown_drain_s)

    try:
        asyncio.run(serve())
    except (FedveilError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


COMMAND = Command("server", add_parser, run)
