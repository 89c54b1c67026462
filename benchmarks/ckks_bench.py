"""CKKS aggregation cost: fedveil's add-only scheme against an NVIDIA FLARE-style baseline.

Why a baseline measured in the same run: CKKS seconds and bytes depend on the machine,
the TenSEAL build and the parameter set, so the figure that matters is fedveil's cost
relative to the scheme people already deploy, measured in the same process, on the same
inputs, interleaved repetition by repetition. The acceptance target at d = 4e6, n = 10:
fedveil's upload_bytes <= 0.6x and server_aggregate_s <= 0.3x the nvflare_style figures.

Usage: python benchmarks/ckks_bench.py [--quick] [--json OUT] [--repeats R]
       [--nvflare-tensor-size S] [--workers W]

Matrix: d in {1e5, 1e6, 4e6}, n = 10 (--quick: d = 1e6). Inputs: float32 N(0, 0.1^2) cast
to float64, one vector per client from numpy seeded by (--seed, d, client); weights
uniform integers in [1, 1000] seeded by (--seed, d). The exact reference is the float64
weighted mean sum_i w_i x_i / sum_i w_i.

The two schemes (both TenSEAL CKKS, poly_modulus_degree 8192, scale 2^40):

- fedveil: preset "add-only-8192" (coeff_mod_bit_sizes [60, 60]). The client calls
  secagg.ckks.encrypt_update (it multiplies by its own weight share w_i / 1000 before
  encrypting and adds the share as one more slot; one serialised ciphertext per
  4096-slot chunk); the server builds a CiphertextSum from the public keyring and, for
  every chunk of every client, parse()s it (fingerprint, index and size checks,
  deserialisation) and add()s it, then serialised(); the client runs decrypt_mean
  (deserialise, decrypt, divide by the decrypted total weight share).
- nvflare_style: NVIDIA FLARE's HE path (HEModelEncryptor +
  HEInTimeAccumulateWeightedAggregator) rebuilt here, as the baseline is not product
  code: coeff_mod_bit_sizes [60, 40, 40], global_scale 2^40. The client encrypts each
  tensor as ONE ts.ckks_vector (TenSEAL splits it into 4096-slot ciphertexts
  internally) of its raw update and sends ckks_vector.serialize() (no context). The
  server deserialises each with a public context, multiplies it by the client's
  plaintext weight share w_i / sum(w) (a scalar multiply, which consumes the one
  rescaling level the chain has) and adds it into the running total; then serialises
  the total. The client deserialises and decrypts (no divide: the shares sum to 1).
  By default the flat update is ONE tensor (--nvflare-tensor-size 0), the layout most
  favourable to the baseline (no partly-filled ciphertext per tensor).
  --nvflare-tensor-size S cuts it into tensors of S values instead, like a LoRA adapter
  (S = 6144: one rank-8 A or B matrix of a 768-wide layer; each then fills 1.5
  ciphertexts). Differences from FLARE, all in the baseline's favour: FLARE multiplies by
  (aggregation weight x local steps) per client and divides by the total afterwards,
  a second plaintext multiply that the [60, 40, 40] chain has no level left for
  (TenSEAL: "scale out of bounds"), so the normalised share is folded into the one
  multiply here; and the multiply and add run in place (mul_, add_) where FLARE builds
  new vectors.

Streaming: per repetition, client i's input is drawn, encrypted, handed to the server and
dropped before client i + 1 starts, so at most one upload (230 MB for nvflare_style at
d = 4e6) and the server's running sum are alive at once. All n clients are encrypted in
every repetition (the sum needs them); the two schemes alternate within a repetition.

Repetitions: R (default 3) per d. Every time below is the MINIMUM over the repetitions;
client_encrypt_s is the minimum over repetitions of the per-repetition median over the
n clients.

Fields of each JSON record (one per (d, scheme); the output is a JSON list):

- case ("acceptance" at d = 4e6, else "matrix"), d, n, scheme, repeats.
- poly_modulus_degree, coeff_mod_bit_sizes, scale_bits; tensors: tensors per upload
  (fedveil: 1 flat vector); ciphertexts: 4096-slot ciphertexts per upload.
- client_encrypt_s: one client's encryption, from its float64 update to its serialised
  upload (fedveil: encrypt_update(workers=1); nvflare_style: ts.ckks_vector(...) and
  .serialize() per tensor). client_encrypt_max_s: the slowest client, same minimum.
- client_encrypt_single_s (fedveil only): encrypt_update(workers=1) of client 0, once
  per repetition after the streamed round, right before the two parallel runs below, so
  the three are measured under the same conditions.
- client_encrypt_workers2_s (fedveil only; with --workers W the field is named
  client_encrypt_workers{W}_s): encrypt_update(workers=W) of client 0: W processes,
  each sent the serialised secret context; the pool start is included, as a real
  client pays it. process_speedup = client_encrypt_single_s / that.
- client_encrypt_threads2_s (fedveil only): the same chunks encrypted by 2 threads of
  a ThreadPoolExecutor sharing the context, to show that TenSEAL holds the GIL.
- server_aggregate_s: the server's own work summed over the n clients, from the
  clients' serialised bytes to the serialised aggregate (fedveil: CiphertextSum(...),
  parse + add of every chunk, serialised(); nvflare_style: ckks_vector_from + mul_ +
  add_ per tensor, serialize()). Client encryption between the server steps is not in
  it. server_per_client_s = server_aggregate_s / n.
- client_decrypt_s: deserialise + decrypt + divide (decrypt_mean for fedveil).
- upload_bytes: bytes of one client's serialised upload (ciphertext bytes, no framing),
  median over all clients and repetitions; upload_bytes_max: the largest (SEAL
  compresses serialised ciphertexts, so sizes vary by a few kB); fp32_bytes = 4 * d;
  upload_ratio = upload_bytes / fp32_bytes. aggregate_bytes: the serialised aggregate
  each client downloads (nvflare_style's is smaller: the multiply dropped a prime).
- max_abs_err: max |decrypted weighted mean - float64 weighted mean| over all d
  coordinates and repetitions; max_abs_x: max |x| over all clients' inputs;
  err_ok: max_abs_err <= 1e-6 * max_abs_x. total_weight_err (fedveil): |decrypted total
  weight - sum(w)|.
- upload_vs_nvflare, server_vs_nvflare (fedveil only): fedveil's upload_bytes and
  server_aggregate_s over nvflare_style's of the same d and run (targets <= 0.6 and
  <= 0.3 at d = 4e6).
- config_wall_s: wall time of the whole d (both schemes, all repetitions).
- peak_rss_bytes: the benchmark process's peak resident memory so far (ru_maxrss; it
  only grows, so read it at the largest d).
- machine: cpu_count, cpu_model, platform, python, numpy, cryptography, openssl, tenseal.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import tenseal as ts
from secagg_bench import machine_info, write_json

from fedveil.secagg.ckks import PRESETS, CiphertextSum, CkksKeyring, decrypt_mean, encrypt_update
from fedveil.secagg.ckks.codec import chunk_count
from fedveil.secagg.ckks.presets import CkksPreset

DIMENSIONS = (100_000, 1_000_000, 4_000_000)
QUICK_DIMENSION = 1_000_000
ACCEPTANCE_D = 4_000_000
CLIENTS = 10
MAX_WEIGHT = 1000
INPUT_STD = 0.1
FEDVEIL = "fedveil"
NVFLARE = "nvflare_style"
FEDVEIL_PRESET = PRESETS["add-only-8192"]
NVFLARE_PRESET = PRESETS["nvflare-8192"]  # [60, 40, 40], scale 2^40: FLARE's HE config
UPLOAD_TARGET = 0.6
SERVER_TARGET = 0.3
ERROR_TOLERANCE = 1e-6
"""fedveil's max_abs_err must stay within this fraction of max |x|."""


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Silence TenSEAL's C++ warning, printed to fd 1 for every vector over 4096 slots."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(devnull)
        os.close(saved)


# --- inputs --------------------------------------------------------------------------------


class Inputs:
    """Client updates drawn on demand, so no more than one float vector exists at a time."""

    def __init__(self, d: int, n: int, seed: int) -> None:
        self.d, self.n, self.seed = d, n, seed
        rng = np.random.default_rng([seed, d, 1 << 20])
        self.weights = [int(w) for w in rng.integers(1, MAX_WEIGHT + 1, size=n)]
        self.total_weight = sum(self.weights)

    def vector(self, client: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.d, client])
        x = rng.standard_normal(self.d, dtype=np.float32)
        x *= np.float32(INPUT_STD)
        return x.astype(np.float64)

    def reference(self) -> tuple[np.ndarray, float]:
        """(float64 weighted mean, max |x| over all clients)."""
        acc = np.zeros(self.d, dtype=np.float64)
        largest = 0.0
        for i, w in enumerate(self.weights):
            x = self.vector(i)
            largest = max(largest, float(np.max(np.abs(x))))
            acc += w * x
        return acc / self.total_weight, largest


# --- the two schemes -------------------------------------------------------------------------


class Scheme:
    """One aggregation scheme as client encrypt / server accept + finish / client decrypt."""

    name: str
    chosen: CkksPreset

    @property
    def tensors(self) -> int:
        raise NotImplementedError

    @property
    def ciphertexts(self) -> int:
        raise NotImplementedError

    def encrypt(self, x: np.ndarray, weight: int) -> list[bytes]:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def accept(self, upload: list[bytes], weight: int) -> None:
        raise NotImplementedError

    def finish(self) -> list[bytes]:
        raise NotImplementedError

    def decrypt(self, aggregate: list[bytes]) -> tuple[np.ndarray, float | None]:
        raise NotImplementedError


class Fedveil(Scheme):
    name = FEDVEIL
    chosen = FEDVEIL_PRESET

    def __init__(self, d: int) -> None:
        self.d = d
        self.keyring = CkksKeyring.generate(self.chosen)
        self.public = self.keyring.public()
        self.fingerprint = self.keyring.fingerprint()  # once per key epoch, not per upload
        self._sum: CiphertextSum | None = None

    @property
    def tensors(self) -> int:
        return 1

    @property
    def ciphertexts(self) -> int:
        return chunk_count(self.d, self.chosen)

    def encrypt(self, x: np.ndarray, weight: int, workers: int = 1) -> list[bytes]:
        return encrypt_update(
            self.keyring, self.chosen, x, weight, max_weight=MAX_WEIGHT, workers=workers
        )

    def encrypt_threads(self, x: np.ndarray, weight: int, threads: int) -> list[bytes]:
        """encrypt_update's chunk layout, encrypted by threads sharing one context."""
        share = weight / MAX_WEIGHT
        values = np.concatenate([x * share, [share]])
        slots, context = self.chosen.slot_count, self.keyring.context
        starts = list(range(0, values.shape[0], slots))

        def part(mine: list[int]) -> list[bytes]:
            return [bytes(ts.ckks_vector(context, values[s : s + slots]).serialize()) for s in mine]

        with ThreadPoolExecutor(threads) as pool:
            parts = list(pool.map(part, [starts[k::threads] for k in range(threads)]))
        out: list[bytes] = [b""] * len(starts)
        for k, chunks in enumerate(parts):
            out[k::threads] = chunks
        return out

    def start(self) -> None:
        self._sum = CiphertextSum(self.public, self.chosen, self.d)

    def accept(self, upload: list[bytes], weight: int) -> None:
        del weight  # the server never sees it: it is inside the ciphertexts
        assert self._sum is not None
        for index, data in enumerate(upload):
            self._sum.add(index, self._sum.parse(index, data, self.fingerprint))

    def finish(self) -> list[bytes]:
        assert self._sum is not None
        out, self._sum = self._sum.serialised(), None
        return out

    def decrypt(self, aggregate: list[bytes]) -> tuple[np.ndarray, float | None]:
        return decrypt_mean(self.keyring, aggregate, self.d, max_weight=MAX_WEIGHT)


class NvflareStyle(Scheme):
    name = NVFLARE
    chosen = NVFLARE_PRESET

    def __init__(self, d: int, total_weight: int, tensor_size: int) -> None:
        self.d = d
        self.total_weight = total_weight
        context = ts.context(
            ts.SCHEME_TYPE.CKKS,
            poly_modulus_degree=self.chosen.poly_modulus_degree,
            coeff_mod_bit_sizes=list(self.chosen.coeff_mod_bit_sizes),
        )
        context.global_scale = 2.0**self.chosen.scale_bits
        self.secret = context
        # The server gets the public context through bytes, as in FLARE's provisioning.
        self.public = ts.context_from(context.serialize(save_secret_key=False))
        size = tensor_size if tensor_size > 0 else d
        self.bounds = [(s, min(s + size, d)) for s in range(0, d, size)]
        self._total: list[ts.CKKSVector] | None = None

    @property
    def tensors(self) -> int:
        return len(self.bounds)

    @property
    def ciphertexts(self) -> int:
        slots = self.chosen.slot_count
        return sum(math.ceil((b - a) / slots) for a, b in self.bounds)

    def encrypt(self, x: np.ndarray, weight: int) -> list[bytes]:
        del weight  # FLARE's clients send the raw update; the weight travels in the clear
        with quiet_stdout():
            return [bytes(ts.ckks_vector(self.secret, x[a:b]).serialize()) for a, b in self.bounds]

    def start(self) -> None:
        self._total = None

    def accept(self, upload: list[bytes], weight: int) -> None:
        share = weight / self.total_weight
        weighted = []
        for data in upload:
            vector = ts.ckks_vector_from(self.public, data)
            vector.mul_(share)  # plaintext scalar multiply, then rescale
            weighted.append(vector)
        if self._total is None:
            self._total = weighted
        else:
            for total, vector in zip(self._total, weighted, strict=True):
                total.add_(vector)

    def finish(self) -> list[bytes]:
        assert self._total is not None
        out = [bytes(vector.serialize()) for vector in self._total]
        self._total = None
        return out

    def decrypt(self, aggregate: list[bytes]) -> tuple[np.ndarray, float | None]:
        parts = [
            np.asarray(ts.ckks_vector_from(self.secret, data).decrypt(), dtype=np.float64)
            for data in aggregate
        ]
        return np.concatenate(parts), None


# --- one dimension ---------------------------------------------------------------------------


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - t0


def run_scheme(scheme: Scheme, inputs: Inputs) -> dict[str, Any]:
    """One repetition: stream the n clients through the server, then decrypt."""
    encrypt_s: list[float] = []
    server_s = 0.0
    upload_bytes: list[int] = []
    _, dt = timed(scheme.start)
    server_s += dt
    for i, weight in enumerate(inputs.weights):
        x = inputs.vector(i)
        upload, dt = timed(scheme.encrypt, x, weight)
        encrypt_s.append(dt)
        upload_bytes.append(sum(len(chunk) for chunk in upload))
        del x
        _, dt = timed(scheme.accept, upload, weight)
        server_s += dt
        del upload
    aggregate, dt = timed(scheme.finish)
    server_s += dt
    aggregate_bytes = sum(len(chunk) for chunk in aggregate)
    (mean, total), decrypt_s = timed(scheme.decrypt, aggregate)
    return {
        "encrypt_s": statistics.median(encrypt_s),
        "encrypt_max_s": max(encrypt_s),
        "server_s": server_s,
        "decrypt_s": decrypt_s,
        "upload_bytes": upload_bytes,
        "aggregate_bytes": aggregate_bytes,
        "mean": mean,
        "total_weight": total,
    }


def bench_dimension(
    d: int,
    n: int,
    *,
    repeats: int,
    seed: int,
    tensor_size: int,
    workers: int,
    machine: Mapping[str, Any],
) -> list[dict[str, Any]]:
    wall = time.perf_counter()
    inputs = Inputs(d, n, seed)
    reference, max_abs_x = inputs.reference()
    fedveil = Fedveil(d)
    nvflare = NvflareStyle(d, inputs.total_weight, tensor_size)
    schemes: list[Scheme] = [fedveil, nvflare]
    best: dict[str, dict[str, float]] = {s.name: {} for s in schemes}
    stats: dict[str, dict[str, Any]] = {s.name: {"max_abs_err": 0.0} for s in schemes}

    def keep_min(name: str, key: str, value: float) -> None:
        best[name][key] = min(best[name].get(key, math.inf), value)

    workers_key = f"client_encrypt_workers{workers}_s"
    for _ in range(repeats):
        for scheme in schemes:
            result = run_scheme(scheme, inputs)
            name = scheme.name
            for key in ("encrypt_s", "encrypt_max_s", "server_s", "decrypt_s"):
                keep_min(name, key, result[key])
            error = float(np.max(np.abs(result["mean"] - reference)))
            stats[name]["max_abs_err"] = max(stats[name]["max_abs_err"], error)
            stats[name].setdefault("uploads", []).extend(result["upload_bytes"])
            stats[name]["aggregate_bytes"] = result["aggregate_bytes"]
            if result["total_weight"] is not None:
                stats[name]["total_weight_err"] = max(
                    stats[name].get("total_weight_err", 0.0),
                    abs(result["total_weight"] - inputs.total_weight),
                )
            del result
        x0, w0 = inputs.vector(0), inputs.weights[0]
        _, dt = timed(fedveil.encrypt, x0, w0)  # paired with the parallel runs below
        keep_min(FEDVEIL, "client_encrypt_single_s", dt)
        _, dt = timed(fedveil.encrypt, x0, w0, workers=workers)
        keep_min(FEDVEIL, workers_key, dt)
        _, dt = timed(fedveil.encrypt_threads, x0, w0, 2)
        keep_min(FEDVEIL, "client_encrypt_threads2_s", dt)
        del x0

    config_wall = time.perf_counter() - wall
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    records = []
    for scheme in schemes:
        name, b, s = scheme.name, best[scheme.name], stats[scheme.name]
        record: dict[str, Any] = {
            "case": "acceptance" if d == ACCEPTANCE_D else "matrix",
            "d": d,
            "n": n,
            "scheme": name,
            "repeats": repeats,
            "poly_modulus_degree": scheme.chosen.poly_modulus_degree,
            "coeff_mod_bit_sizes": list(scheme.chosen.coeff_mod_bit_sizes),
            "scale_bits": scheme.chosen.scale_bits,
            "tensors": scheme.tensors,
            "ciphertexts": scheme.ciphertexts,
            "client_encrypt_s": b["encrypt_s"],
            "client_encrypt_max_s": b["encrypt_max_s"],
            "client_encrypt_single_s": b.get("client_encrypt_single_s"),
            workers_key: b.get(workers_key),
            "client_encrypt_threads2_s": b.get("client_encrypt_threads2_s"),
            "process_speedup": (
                b["client_encrypt_single_s"] / b[workers_key] if workers_key in b else None
            ),
            "server_aggregate_s": b["server_s"],
            "server_per_client_s": b["server_s"] / n,
            "client_decrypt_s": b["decrypt_s"],
            "upload_bytes": int(statistics.median(s["uploads"])),
            "upload_bytes_max": max(s["uploads"]),
            "fp32_bytes": 4 * d,
            "upload_ratio": statistics.median(s["uploads"]) / (4 * d),
            "aggregate_bytes": s["aggregate_bytes"],
            "max_abs_err": s["max_abs_err"],
            "max_abs_x": max_abs_x,
            "err_ok": s["max_abs_err"] <= ERROR_TOLERANCE * max_abs_x,
            "total_weight_err": s.get("total_weight_err"),
            "upload_vs_nvflare": None,
            "server_vs_nvflare": None,
            "config_wall_s": config_wall,
            "peak_rss_bytes": peak_rss,
            **machine,
        }
        records.append(record)
    fed, nvf = records
    fed["upload_vs_nvflare"] = fed["upload_bytes"] / nvf["upload_bytes"]
    fed["server_vs_nvflare"] = fed["server_aggregate_s"] / nvf["server_aggregate_s"]
    return records


# --- table -----------------------------------------------------------------------------------


def table_columns(workers: int) -> tuple[tuple[str, str, int, str], ...]:
    """(record field, heading, width, format spec) per column."""
    return (
        ("d", "d", 8, "d"),
        ("n", "n", 3, "d"),
        ("scheme", "scheme", 13, ""),
        ("ciphertexts", "cts", 5, "d"),
        ("client_encrypt_s", "enc_s", 7, ".3f"),
        ("client_encrypt_single_s", "enc_1_s", 7, ".3f"),
        (f"client_encrypt_workers{workers}_s", f"enc_p{workers}_s", 8, ".3f"),
        ("client_encrypt_threads2_s", "enc_t2_s", 8, ".3f"),
        ("server_aggregate_s", "server_s", 8, ".3f"),
        ("client_decrypt_s", "dec_s", 6, ".3f"),
        ("upload_bytes", "upload_B", 11, "d"),
        ("upload_ratio", "up/fp32", 7, ".2f"),
        ("aggregate_bytes", "agg_B", 11, "d"),
        ("max_abs_err", "max_err", 8, ".1e"),
        ("max_abs_x", "max|x|", 6, ".3f"),
        ("err_ok", "ok", 5, ""),
        ("config_wall_s", "wall_s", 7, ".1f"),
    )


def table_header(columns: tuple[tuple[str, str, int, str], ...]) -> str:
    return " ".join(f"{heading:>{width}}" for _, heading, width, _ in columns)


def table_row(columns: tuple[tuple[str, str, int, str], ...], record: Mapping[str, Any]) -> str:
    cells = []
    for name, _, width, spec in columns:
        value = record.get(name)
        if value is None or isinstance(value, bool | str):
            cells.append(f"{'-' if value is None else str(value):>{width}}")
        else:
            cells.append(f"{value:>{width}{spec}}")
    return " ".join(cells)


def short(d: int) -> str:
    """4000000 -> '4e6'."""
    return f"{d:.0e}".replace("e+0", "e").replace("e+", "e")


def summary(records: list[dict[str, Any]]) -> tuple[list[str], bool]:
    """The acceptance ratios at the largest d run, and fedveil's error check."""
    d = max(r["d"] for r in records)
    fed = next(r for r in records if r["d"] == d and r["scheme"] == FEDVEIL)
    up, srv = fed["upload_vs_nvflare"], fed["server_vs_nvflare"]
    verdict = "PASS" if up <= UPLOAD_TARGET and srv <= SERVER_TARGET else "FAIL"
    note = "" if d == ACCEPTANCE_D else f" (acceptance is at d={short(ACCEPTANCE_D)}; informative)"
    lines = [
        f"# acceptance at d={short(d)}, n={fed['n']}: fedveil/nvflare_style upload_bytes "
        f"{up:.3f} (target <= {UPLOAD_TARGET}), server_aggregate_s {srv:.3f} "
        f"(target <= {SERVER_TARGET}): {verdict}{note}"
    ]
    fed_rows = [r for r in records if r["scheme"] == FEDVEIL]
    errors_ok = all(r["err_ok"] for r in fed_rows)
    worst = max(fed_rows, key=lambda r: r["max_abs_err"] / r["max_abs_x"])
    lines.append(
        f"# fedveil max_abs_err <= {ERROR_TOLERANCE:g} * max|x| at every d: "
        f"{'PASS' if errors_ok else 'FAIL'} (worst: {worst['max_abs_err']:.2e} <= "
        f"{ERROR_TOLERANCE * worst['max_abs_x']:.2e} at d={short(worst['d'])})"
    )
    return lines, errors_ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="d=1e6 only")
    parser.add_argument("--json", type=Path, help="write the JSON list of records here")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions per d (min taken)")
    parser.add_argument("--clients", type=int, default=CLIENTS, help="n clients per round")
    parser.add_argument(
        "--nvflare-tensor-size",
        type=int,
        default=0,
        help="values per nvflare_style tensor (0: the flat update is one tensor)",
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="processes for the parallel fedveil encryption"
    )
    parser.add_argument("--seed", type=int, default=20240601, help="numpy seed for inputs")
    args = parser.parse_args(argv)
    bounds = (
        ("--repeats", args.repeats, 1),
        ("--clients", args.clients, 1),
        ("--workers", args.workers, 2),
        ("--nvflare-tensor-size", args.nvflare_tensor_size, 0),
    )
    for flag, value, low in bounds:
        if value < low:
            parser.error(f"{flag} must be >= {low}, got {value}")
    columns = table_columns(args.workers)

    machine = {**machine_info(), "tenseal": ts.__version__}
    layout = (
        "one tensor"
        if args.nvflare_tensor_size == 0
        else f"tensors of {args.nvflare_tensor_size} values"
    )
    print(
        f"# ckks_bench: {machine['cpu_count']} CPUs ({machine['cpu_model']}), Python "
        f"{machine['python']}, numpy {machine['numpy']}, TenSEAL {machine['tenseal']}; "
        f"n={args.clients}, repeats={args.repeats} (times are minima over repeats), "
        f"nvflare_style layout: {layout}",
        flush=True,
    )
    print(table_header(columns), flush=True)
    records: list[dict[str, Any]] = []
    start = time.perf_counter()
    for d in (QUICK_DIMENSION,) if args.quick else DIMENSIONS:
        rows = bench_dimension(
            d,
            args.clients,
            repeats=args.repeats,
            seed=args.seed,
            tensor_size=args.nvflare_tensor_size,
            workers=args.workers,
            machine=machine,
        )
        records.extend(rows)
        for row in rows:
            print(table_row(columns, row), flush=True)
        if args.json is not None:
            write_json(args.json, records)
    peak_mb = records[-1]["peak_rss_bytes"] / 2**20
    elapsed = time.perf_counter() - start
    print(
        f"# {len(records) // 2} dimensions in {elapsed:.1f} s, peak RSS {peak_mb:.0f} MiB",
        flush=True,
    )
    lines, errors_ok = summary(records)
    for line in lines:
        print(line, flush=True)
    return 0 if errors_ok else 1


if __name__ == "__main__":
    sys.exit(main())
