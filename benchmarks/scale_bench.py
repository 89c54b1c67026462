"""SecAgg+ at scale: n simulated clients on Ray against the real server, and the slopes.

Why: the protocol claims the server's memory is O(d + n k) and its time grows about
linearly in n (plus the O(n^2) survivor-set work of the consistency check); this
measures both at n in {100, 300, 1000} with d = 1e6 and k = floor(2 log2 n + 1), fits the
slopes, and projects them to 10^4 and 10^5 clients per round. Every round is checked
exact (the decoded ring sum equals the sum of the survivors' quantised updates) and is
compared with same-run references:

- plaintext_sum_s: the float64 weighted sum of the same survivors' clipped vectors,
  timed in the same run (inside the actors, as each vector is drawn): what a server that
  sums plaintext updates pays for the additions alone.
- memory_reference_bytes = 8 d + n k * share_bytes, where share_bytes is the measured
  wire size of one encrypted share envelope (EncryptedShare: ids and ciphertext): a
  float64 model-sized vector plus one envelope per (client, neighbour) pair, the O(d + n k)
  the server is allowed. peak_over_reference is the measured peak divided by it.

Usage: python benchmarks/scale_bench.py [--quick] [--json OUT] [--sizes 100,300,1000]
       [--dimension D] [--workers 2] [--drop 0.1] [--seed 0] [--ray-address ADDR]

--quick: n in {20, 50, 100}, d = 1e4 (under a minute). Dropouts: round(drop n) clients,
each at a random stage the round survives (advertise-keys, share-keys, masked-input,
unmask; runners.scale_setup.SURVIVABLE_STAGES), from the seed.

Fields of each run record: n, d, k, t, workers, dropped, survivors, exact,
within_bound, round_s (wall, actors started to sums fetched), setup_s (actors, identities,
sessions), server_s (per stage: building requests, receiving replies, closing the stage),
server_total_s, server_peak_bytes (tracemalloc, see runners.ray_backend), share_bytes,
memory_reference_bytes, peak_over_reference, upload_bytes / download_bytes (median per
client, wire_bytes: payload bytes, framing excluded), masked_input_bytes,
plaintext_sum_s, client_s (per stage: mean and max per client, busiest worker).

"fit" holds the least-squares lines: server peak bytes = a + b (n k) and server seconds
= a + b n, and per stage the log-log slope between the two largest n (projected with at
least 1: no stage's per-client work shrinks with n). "projection" extends them to 10^4
and 10^5 clients (k from the same formula): memory from the linear fit, time from each
stage's power law (and, for comparison, from the linear fit). --refit recomputes both
from the runs already in --json, without running anything.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from fedveil.runners import ray_backend
from fedveil.runners.scale_report import ScaleReport
from fedveil.runners.scale_setup import ScaleOptions
from fedveil.secagg.protocol.graph import default_neighbours, default_threshold

FULL_SIZES = (100, 300, 1000)
QUICK_SIZES = (20, 50, 100)
PROJECTED = (10_000, 100_000)


def record(report: ScaleReport) -> dict[str, Any]:
    """One run, with its same-run references."""
    reference = 8 * report.d + report.n * report.k * report.envelope_bytes
    peak = report.server_peak_bytes or 0
    return {
        "n": report.n,
        "d": report.d,
        "k": report.k,
        "t": report.t,
        "workers": report.workers,
        "dropped": len(report.dropouts),
        "dropouts_by_stage": {
            s: sum(1 for v in report.dropouts.values() if v == s)
            for s in sorted(set(report.dropouts.values()))
        },
        "survivors": report.survivors,
        "final_stage": report.final_stage,
        "exact": report.exact,
        "within_bound": report.within_bound,
        "max_abs_error": report.max_abs_error,
        "error_bound": report.error_bound,
        "round_s": report.round_seconds,
        "setup_s": report.setup_seconds,
        "server_s": report.server_seconds,
        "server_total_s": report.server_total_seconds,
        "server_peak_bytes": peak,
        "share_bytes": report.envelope_bytes,
        "memory_reference_bytes": reference,
        "peak_over_reference": peak / reference if reference else None,
        "upload_bytes": report.upload_bytes["median"],
        "download_bytes": report.download_bytes["median"],
        "masked_input_bytes": report.masked_input_bytes,
        "plaintext_sum_s": report.plaintext_sum_seconds,
        "server_over_plaintext": (
            report.server_total_seconds / report.plaintext_sum_seconds
            if report.plaintext_sum_seconds
            else None
        ),
        "unmask_keystreams": report.unmask_keystreams,
        "client_s": {
            stage: {"mean": t.mean, "max": t.max, "worker_max": t.worker_max}
            for stage, t in report.client_seconds.items()
        },
    }


def _line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares a + b x."""
    b, a = np.polyfit(np.asarray(xs, dtype=float), np.asarray(ys, dtype=float), 1)
    return float(a), float(b)


def fit_and_project(runs: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Slopes of memory and server time against n, and their values at PROJECTED."""
    ns = [float(r["n"]) for r in runs]
    nks = [float(r["n"]) * float(r["k"]) for r in runs]
    peaks = [float(r["server_peak_bytes"]) for r in runs]
    totals = [float(r["server_total_s"]) for r in runs]
    mem_a, mem_b = _line(nks, peaks)
    time_a, time_b = _line(ns, totals)
    big, bigger = sorted(runs, key=lambda r: r["n"])[-2:]
    exponents: dict[str, float] = {}
    for stage, seconds in bigger["server_s"].items():
        before = big["server_s"].get(stage, 0.0)
        if before > 0 and seconds > 0:
            exponents[stage] = math.log(seconds / before) / math.log(bigger["n"] / big["n"])
    # Every stage does some work per client, so none gets cheaper per client as n grows:
    # a measured exponent below 1 is fixed cost or noise, and projects as 1.
    used = {stage: max(1.0, e) for stage, e in exponents.items()}
    d = int(runs[0]["d"])
    fit = {
        "memory": {"intercept_bytes": mem_a, "bytes_per_nk": mem_b, "intercept_per_d": mem_a / d},
        "server_time_linear": {"intercept_s": time_a, "seconds_per_client": time_b},
        "server_stage_exponents": exponents,
        "server_stage_exponents_used": used,
    }
    projection: list[dict[str, Any]] = []
    for n in PROJECTED:
        k = default_neighbours(n)
        per_stage = {
            stage: seconds * (n / bigger["n"]) ** used.get(stage, 1.0)
            for stage, seconds in bigger["server_s"].items()
        }
        projection.append(
            {
                "n": n,
                "d": d,
                "k": k,
                "t": default_threshold(n, k),
                "server_peak_bytes": mem_a + mem_b * n * k,
                "memory_reference_bytes": 8 * d + n * k * int(bigger["share_bytes"]),
                "server_s_power_law": sum(per_stage.values()),
                "server_s_by_stage": per_stage,
                "server_s_linear": time_a + time_b * n,
            }
        )
    return fit, projection


def machine() -> dict[str, Any]:
    import ray

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "ray": ray.__version__,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n in {20,50,100}, d = 1e4")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/scale.json"))
    parser.add_argument("--sizes", default=None, help="comma-separated n (overrides the set)")
    parser.add_argument("--dimension", type=int, default=None, help="d (default 1e6, quick 1e4)")
    parser.add_argument("--workers", type=int, default=2, help="Ray actors (default 2)")
    parser.add_argument("--drop", type=float, default=0.1, help="dropout fraction (default 0.1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ray-address", default=None)
    parser.add_argument(
        "--refit", action="store_true", help="recompute fit and projection of --json's runs only"
    )
    args = parser.parse_args()
    if args.refit:
        out = json.loads(args.json.read_text())
        out["fit"], out["projection"] = fit_and_project(out["runs"])
        args.json.write_text(json.dumps(out, indent=2) + "\n")
        print(f"refitted {args.json}", file=sys.stderr)
        return 0
    sizes = (
        tuple(int(s) for s in args.sizes.split(","))
        if args.sizes
        else (QUICK_SIZES if args.quick else FULL_SIZES)
    )
    d = args.dimension or (10_000 if args.quick else 1_000_000)
    started = ray_backend.connect(args.ray_address)
    runs: list[dict[str, Any]] = []
    wall = time.perf_counter()
    try:
        for n in sizes:
            options = ScaleOptions(clients=n, dimension=d, drop=args.drop, seed=args.seed)
            report = ray_backend.run_ray_round(options, workers=args.workers)
            runs.append(record(report))
            print(report.summary_line(), file=sys.stderr, flush=True)
        info = machine()
    finally:
        if started:
            ray_backend.shutdown()
    fit, projection = fit_and_project(runs) if len(runs) >= 2 else ({}, [])
    out = {
        "date": datetime.date.today().isoformat(),
        "command": " ".join(["python", *sys.argv]),
        "machine": info,
        "wall_s": time.perf_counter() - wall,
        "runs": runs,
        "fit": fit,
        "projection": projection,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.json}", file=sys.stderr)
    return 0 if all(r["exact"] and r["within_bound"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
