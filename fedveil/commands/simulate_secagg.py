"""`fedveil simulate-secagg`: n SecAgg+ clients and the server in one process, timed."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

from fedveil.commands import Command, SubParsers
from fedveil.errors import FedveilError
from fedveil.runners.simulation import (
    CLIENT_STAGES,
    Federation,
    make_config,
    random_dropouts,
    run_round,
)
from fedveil.secagg.protocol.stages import Stage


def _stage_choice(value: str) -> tuple[Stage, ...]:
    if value == "any":
        return CLIENT_STAGES
    try:
        return (Stage(value),)
    except ValueError as exc:
        names = ", ".join(["any", *(s.value for s in CLIENT_STAGES)])
        raise argparse.ArgumentTypeError(
            f"unknown stage {value!r}; choose one of: {names}"
        ) from exc


def add_parser(sub: SubParsers) -> None:
    p = sub.add_parser(
        "simulate-secagg",
        help="run n SecAgg+ clients and a server in one process and time each stage",
    )
    p.add_argument("--clients", type=int, default=20, help="number of clients n (default 20)")
    p.add_argument("--dimension", type=int, default=1_000_000, help="update length d (default 1e6)")
    p.add_argument(
        "--dim", dest="dimension", type=int, default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    p.add_argument("--drop", type=float, default=0.1, help="fraction of clients that drop out")
    p.add_argument(
        "--drop-stage",
        type=_stage_choice,
        default=CLIENT_STAGES,
        help="stage at which dropped clients vanish: any (random per client) or a stage name",
    )
    p.add_argument("--neighbours", type=int, default=None, help="degree k (default 2 log2 n + 1)")
    p.add_argument("--threshold", type=int, default=None, help="threshold t (default majority)")
    p.add_argument("--bits", type=int, default=32, help="ring width m in bits (default 32)")
    p.add_argument("--clip", type=float, default=1.0, help="clipping bound c (default 1.0)")
    p.add_argument("--seed", type=int, default=0, help="seed for inputs and dropout schedule")
    p.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")


def run(args: argparse.Namespace) -> int:
    if args.clients < 2:
        print("error: --clients must be at least 2", file=sys.stderr)
        return 2
    if not 0.0 <= args.drop < 1.0:
        print("error: --drop must be in [0, 1)", file=sys.stderr)
        return 2
    federation = Federation.enrol(args.clients)
    try:
        config = make_config(
            federation,
            args.dimension,
            neighbours=args.neighbours,
            threshold=args.threshold,
            bits=args.bits,
            clip=args.clip,
        )
    except FedveilError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    inputs = {
        cid: (rng.standard_normal(args.dimension) * 0.1).astype(np.float32)
        for cid in federation.ids
    }
    weights = {cid: int(rng.integers(1, 1000)) for cid in federation.ids}
    dropouts = random_dropouts(federation.ids, args.drop, rng, args.drop_stage)
    print(
        f"SecAgg+ simulation: n={config.size} d={config.dimension} k={config.neighbours} "
        f"t={config.threshold} m={config.quantization.bits} bits, "
        f"{len(dropouts)} dropouts: "
        + (", ".join(f"{c}@{s.value}" for c, s in sorted(dropouts.items())) or "none")
    )
    report = run_round(config, federation, inputs, weights, dropouts)
    print(f"{'stage':<19}{'client mean s':>14}{'client max s':>14}{'server s':>11}")
    for stage in CLIENT_STAGES:
        times = report.client_seconds.get(stage.value, [])
        mean = statistics.fmean(times) if times else 0.0
        worst = max(times) if times else 0.0
        server = report.server_seconds.get(stage.value, 0.0)
        print(f"{stage.value:<19}{mean:>14.4f}{worst:>14.4f}{server:>11.4f}")
    uploads = [b for b in report.upload_bytes.values() if b]
    downloads = [b for b in report.download_bytes.values() if b]
    fp32 = 4 * args.dimension
    print(
        f"bytes per client: upload median {int(statistics.median(uploads))} "
        f"(fp32 update {fp32}, ratio {statistics.median(uploads) / fp32:.4f}), "
        f"download median {int(statistics.median(downloads)) if downloads else 0}"
    )
    record: dict[str, object] = {
        "n": config.size,
        "d": config.dimension,
        "k": config.neighbours,
        "t": config.threshold,
        "bits": config.quantization.bits,
        "dropouts": {c: s.value for c, s in dropouts.items()},
        "client_seconds": report.client_seconds,
        "server_seconds": report.server_seconds,
        "upload_bytes": report.upload_bytes,
        "download_bytes": report.download_bytes,
        "final_stage": report.final_stage.value,
    }
    if report.failure is not None:
        where = report.failed_at.value if report.failed_at else report.final_stage.value
        print(f"round FAILED at {where}: {report.failure}")
        record["failure"] = str(report.failure)
        status = 1
    else:
        assert report.result is not None
        est = report.result.estimate
        alive = report.result.survivors
        exact = sum(
            weights[c] * np.clip(inputs[c], -args.clip, args.clip).astype(np.float64) for c in alive
        )
        exact /= sum(weights[c] for c in alive)
        err = float(np.max(np.abs(est.weighted_mean - exact)))
        print(
            f"round DONE: {len(alive)} survivors, total weight {est.total_weight}, "
            f"max |error| of the weighted mean {err:.3e} (bound {est.error_bound:.3e})"
        )
        record.update(survivors=list(alive), max_abs_error=err, error_bound=est.error_bound)
        status = 0 if err <= est.error_bound else 1
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(record, fh, indent=2)
    return status


COMMAND = Command("simulate-secagg", add_parser, run)
