"""SecAgg+ cost benchmark: client and server time against the unavoidable keystream work.

Why it compares against a limit measured on the spot: absolute seconds mean little
across machines, but the masked-input and unmask stages have a floor that no
implementation can beat: expanding each AES-256-CTR mask and adding it into the vector.
So every configuration measures that floor in the same process, on the same machine,
interleaved with the protocol rounds, and reports the ratio. A ratio near 1 means the
protocol adds little beyond the masks themselves; the acceptance target is <= 2.

Usage: python benchmarks/secagg_bench.py [--quick] [--json OUT] [--repeats R] [--bits M]
       [--case D,N,K,DROP ...] [--acceptance-only] [--flower-python PATH]

The upload stage has a limit of its own: the server must read every upload once (unpack,
add into the sum, and the Poly1305 checksum the stream is checked against:
secagg.protocol.upload_checksum), so its masked-input stage is compared with exactly that,
done the plain way, in the same process. With
--flower-python, Flower 1.42's SecAgg+ server (benchmarks/flower_secagg_bench.py, run by
that interpreter) is timed on the same inputs after each round. Reproduce the acceptance
case with Flower next to it:

    python3 -m venv /tmp/flwr-venv
    /tmp/flwr-venv/bin/pip install flwr==1.42.0 numpy
    .venv/bin/python benchmarks/secagg_bench.py --acceptance-only \
        --flower-python /tmp/flwr-venv/bin/python --json benchmarks/results/secagg_limit.json

Matrix (full): d in {1e5, 1e6, 4e6} x n in {10, 50} x k in {default_neighbours(n) =
floor(2 log2 n + 1), n - 1} x drop in {0, 0.1}, plus the acceptance case n=50, k=7,
d=4e6, drop=0.1. --quick: d=1e6, n in {10, 50}, k = default_neighbours(n), drop in
{0, 0.1}, plus n=50, k=7, drop=0.1. Inputs are float32 N(0, 0.1^2), weights uniform in
[1, 1000], both from numpy seeded by (--seed, d, n, k, drop); they are generated lazily
per client, so no more than one float input vector exists at a time.

Dropouts: round(drop * n) clients, chosen once per configuration, leave at the
masked-input stage: they advertised keys and shared their seeds but never upload. The
server must then rebuild each one's masking key and remove its pairwise masks with every
surviving neighbour: the expensive unmask case.

Repetitions: each configuration runs R rounds (default 3). After each round the two
limits are measured right away. Every time below is the MINIMUM over the R repetitions
(for client_s, the minimum over repetitions of the per-round median over clients), which
filters scheduler noise out of both sides of each ratio alike.

Fields of each JSON record (one per configuration; the output is a JSON list):

- d, n, k, t, drop: dimension, roster size, requested degree, Shamir threshold
  (default_threshold), dropout fraction. k_effective is the degree the graph has.
- bits: ring width m (upload bits per element); dropped: how many clients dropped.
- client_s: median over uploading clients of the masked-input stage time
  (RoundReport.client_seconds['masked-input']: decrypt the k share envelopes, derive k
  pairwise seeds, copy the quantised vector, expand and add k+1 masks, reduce, pack).
- client_limit_s: raw AES-256-CTR keystream for client_keystreams masks of
  (d+1) * itemsize bytes each (a fresh 32-byte key per mask,
  `Cipher(AES(key), CTR(0)).encryptor().update_into(zeros, out)` into a preallocated
  full-length buffer) plus one `np.add(acc, view, out=acc)` per mask over the whole
  (d+1)-element ring vector. This limit streams full-length buffers through memory, while
  the protocol's MaskExpander works in cache-sized chunks, so a ratio below 1 is possible.
- client_keystreams: k_effective + 1 masks (self mask + one per mask peer; every peer
  shared keys, since dropouts happen after the share-keys stage).
- client_ratio = client_s / client_limit_s.
- client_quantize_s: quantize() of one client's input (clip, scale, stochastic rounding,
  ring encoding), which run_round does in set_input before the stage; not in client_s.
- client_round_s: a client's time over all stages, as the sum of the per-stage medians.
- server_s: the server's unmask stage time, RoundReport.server_seconds['unmask']
  (validating the unmask responses, then advance(): rebuild the survivors' self-mask
  seeds and the dropouts' masking keys, remove those masks, reduce, dequantise).
- server_keystreams: masks the server expanded to unmask (RoundReport.unmask_keystreams:
  one self mask per survivor + one per (dropout, surviving neighbour) pair).
- server_limit_s: the same keystream + np.add limit for server_keystreams masks;
  server_ratio = server_s / server_limit_s.
- server_upload_s: server time of the masked-input stage
  (RoundReport.server_seconds['masked-input']: for every upload, check its chunks, add
  them into the running sum and feed them to the stream's Poly1305 checksum, then close the
  stage).
  server_accumulate_s is the same figure under its older name.
- server_upload_limit_s: reading the same number of uploads (the survivors') of the same
  size once each, the plain way: `upload_checksum(session_id, client_id, payload)` (the
  checksum the stream closes with: HKDF of the client's key, then Poly1305 over the whole
  payload) plus one `np.add(acc, np.frombuffer(payload, wire dtype), out=acc)` over the
  whole vector (for widths that are not 8/16/32 bits, `unpack(payload)` in place of the
  view). Each payload is a fresh bytes object written just before it is read (copied from
  a pool of two random payloads), as a client's upload is in the round.
  upload_limit_checksum_s and upload_limit_add_s are its two halves (before the checksum
  was Poly1305 the first half was the SHA-256, recorded as upload_limit_hash_s).
  server_upload_ratio = server_upload_s / server_upload_limit_s.
- server_total_s: the server's masked-input plus unmask stage time of one round (minimum
  over repetitions of the per-round sum).
- flower_aggregate_s, flower_unmask_s, flower_server_s (only with --flower-python): Flower
  1.42's SecAgg+ server on the same inputs, weights and dropouts, with num_shares =
  k_effective + 1 (Flower counts the node itself) rounded up to an odd number (an even
  one fails inside Flower: benchmarks/flower_secagg_bench.py), recorded as
  flower_num_shares; the same threshold t and clipping range CLIP; quantization_range
  2^22 and modulus 2^32 (Flower's defaults; 2^32 is its widest modulus). Timed: summing
  the masked vectors, and unmasking to the weighted mean (benchmarks/
  flower_secagg_bench.py says exactly what). One Flower round runs after each fedveil
  round and its limits; minima over the repetitions, flower_server_s being the minimum
  per-round sum. flower_mean_error: Flower's decoded mean against the exact one;
  flower_error_bound: survivors * quantisation step / the sum of the survivors' weight
  ratios (w / max_weight).
- server_vs_flower = flower_server_s / server_total_s: how many times less server time
  fedveil needs than Flower for the same round.
- server_round_s: server time over all stages.
- upload_bytes: bytes one client uploads over the whole round (RoundReport.upload_bytes
  counts every stage's payload bytes, framing excluded), median over the clients that
  completed the round (a dropout uploads less). masked_input_bytes: the masked vector
  alone. upload_key_bytes = upload_bytes - masked_input_bytes (keys, share envelopes,
  signatures, revealed shares).
- fp32_bytes = 4 * d: the same update sent as plain float32. upload_ratio =
  upload_bytes / fp32_bytes. upload_ok: upload_bytes <= (bits / 32) * fp32_bytes +
  KEY_ALLOWANCE_BYTES (the acceptance check; the masked vector also carries the weight).
- round_ok: every repetition finished (Stage.DONE), the unmasked total weight equals the
  survivors' weights, and the decoded weighted mean is within the round's error_bound of
  the exact weighted mean of the survivors' clipped inputs.
- aes_gbps, add_gbps: throughput of the two halves of the client limit measurement.
- config_wall_s: wall time of the whole configuration (all repetitions and limits).
- machine: cpu_count, cpu_model, aes_ni, platform, python, numpy, cryptography, openssl.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import cryptography
import numpy as np
from consistency_cost import MASK_DIMENSION, consistency_records
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fedveil.runners.simulation import (
    Federation,
    default_neighbours,
    make_config,
    random_dropouts,
    run_round,
)
from fedveil.secagg.protocol.graph import effective_degree
from fedveil.secagg.protocol.stages import Stage
from fedveil.secagg.protocol.upload import NATIVE_WIRE_DTYPES
from fedveil.secagg.protocol.upload_checksum import upload_checksum
from fedveil.secagg.quantize import dtype_for_bits, pack, packed_size, quantize, unpack

DIMENSIONS = (100_000, 1_000_000, 4_000_000)
COHORTS = (10, 50)
DROPS = (0.0, 0.1)
ACCEPTANCE = (4_000_000, 50, 7, 0.1)
QUICK_DIMENSION = 1_000_000
MAX_WEIGHT = 1000
CLIP = 1.0
INPUT_STD = 0.1
KEY_ALLOWANCE_BYTES = 4096
"""'A few kB of keys' in the upload acceptance check: adverts, envelopes, signatures."""

FLOWER_SCRIPT = Path(__file__).with_name("flower_secagg_bench.py")

MASKED = Stage.MASKED_INPUT.value
UNMASK = Stage.UNMASK.value


# --- machine and output ------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """What a reader needs to compare two runs: cores, CPU, AES-NI, library versions."""
    model, aes_ni = platform.processor() or "unknown", False
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name") and model in ("unknown", "", "x86_64"):
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    aes_ni = "aes" in line.split(":", 1)[1].split()
                    break
    except OSError:
        pass
    try:
        from cryptography.hazmat.backends.openssl.backend import backend

        openssl = backend.openssl_version_text()
    except Exception:  # pragma: no cover - depends on the cryptography build
        openssl = "unknown"
    try:
        usable: int | None = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    return {
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "cpu_model": model,
        "aes_ni": aes_ni,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cryptography": cryptography.__version__,
        "openssl": openssl,
    }


def write_json(path: Path, records: list[dict[str, Any]]) -> None:
    """Replace `path` atomically, so an interrupted run leaves the last complete list."""

    def finite(value: Any) -> Any:  # strict JSON has no NaN or Infinity
        return None if isinstance(value, float) and not math.isfinite(value) else value

    clean = [{key: finite(value) for key, value in record.items()} for record in records]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(clean, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)


# --- the limit -----------------------------------------------------------------------------


class KeystreamLimit:
    """Times the work a masking stage cannot avoid: AES-CTR keystream + one add per mask.

    Buffers are allocated and touched once per vector length, so the timed loop pays no
    page faults; each mask gets a fresh key, as every real mask does.
    """

    def __init__(self, elements: int, dtype: np.dtype) -> None:
        self.elements = elements
        self.dtype = np.dtype(dtype)
        self.nbytes = elements * self.dtype.itemsize
        self._zeros = bytes(self.nbytes)
        self._out = bytearray(self.nbytes + 16)  # update_into wants one spare block
        self._acc = np.zeros(elements, dtype=self.dtype)
        self._view = np.frombuffer(self._out, dtype=self.dtype, count=elements)
        self.seconds(1)  # warm-up: fault every page in

    def seconds(self, masks: int) -> tuple[float, float, float]:
        """(total, aes, add) seconds for `masks` full-length masks."""
        aes = add = 0.0
        for _ in range(masks):
            key = os.urandom(32)
            t0 = time.perf_counter()
            enc = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
            enc.update_into(self._zeros, self._out)
            t1 = time.perf_counter()
            np.add(self._acc, self._view, out=self._acc)
            t2 = time.perf_counter()
            aes += t1 - t0
            add += t2 - t1
        return aes + add, aes, add


class UploadLimit:
    """Times reading packed uploads once each: the stream's checksum + unpack + add.

    Why fresh payloads: in the round each upload is a bytes object the client has just
    written; reading one buffer over and over would time a cache, not the upload stage.
    """

    def __init__(self, elements: int, bits: int, seed: tuple[int, ...], session_id: bytes) -> None:
        self.elements = elements
        self.bits = bits
        self.session_id = session_id
        self.wire = NATIVE_WIRE_DTYPES.get(bits)
        rng = np.random.default_rng([*seed, 1 << 21])
        top = np.uint64((1 << bits) - 1)
        self._pool = [
            pack(rng.integers(0, top, size=elements, dtype=np.uint64, endpoint=True), bits)
            for _ in range(2)
        ]
        self.nbytes = packed_size(elements, bits)
        self._acc = np.zeros(elements, dtype=dtype_for_bits(bits))
        self.seconds(["warm-up"])  # fault the accumulator in

    def seconds(self, client_ids: list[str]) -> tuple[float, float, float]:
        """(total, checksum, add) seconds for reading one upload of each of `client_ids`."""
        checksummed = added = 0.0
        for i, client_id in enumerate(client_ids):
            payload = bytes(self._pool[i % 2])  # untimed: the client writes its upload
            t0 = time.perf_counter()
            upload_checksum(self.session_id, client_id, payload)
            t1 = time.perf_counter()
            if self.wire is not None:
                values = np.frombuffer(payload, dtype=self.wire)
            else:
                values = unpack(payload, self.bits, self.elements)
            np.add(self._acc, values, out=self._acc)
            t2 = time.perf_counter()
            checksummed += t1 - t0
            added += t2 - t1
        return checksummed + added, checksummed, added


# --- Flower on the same inputs -------------------------------------------------------------


def flower_round(python: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """One Flower SecAgg+ round (benchmarks/flower_secagg_bench.py) under `python`."""
    with tempfile.TemporaryDirectory(prefix="flower-secagg-") as tmp:
        spec_path, out_path = Path(tmp, "spec.json"), Path(tmp, "out.json")
        spec_path.write_text(json.dumps(spec))
        subprocess.run(
            [python, str(FLOWER_SCRIPT), "--spec", str(spec_path), "--json", str(out_path)],
            check=True,
        )
        result: dict[str, Any] = json.loads(out_path.read_text())
        return result


# --- inputs ------------------------------------------------------------------------------


class LazyInputs(Mapping[str, np.ndarray]):
    """Client inputs generated on demand, so n float vectors never coexist in memory.

    run_round reads each client's input once (in set_input); while doing so this mapping
    adds the survivors' weighted clipped inputs into a float64 reference sum, to check the
    round's decoded mean against.
    """

    def __init__(
        self,
        ids: tuple[str, ...],
        d: int,
        seed: tuple[int, ...],
        weights: Mapping[str, int],
        survivors: frozenset[str],
    ) -> None:
        self._index = {cid: i for i, cid in enumerate(ids)}
        self._d = d
        self._seed = seed
        self._weights = weights
        self._survivors = survivors
        self.reference = np.zeros(d, dtype=np.float64)

    def vector(self, cid: str) -> np.ndarray:
        rng = np.random.default_rng([*self._seed, self._index[cid]])
        x = rng.standard_normal(self._d, dtype=np.float32)
        x *= np.float32(INPUT_STD)
        return x

    def __getitem__(self, cid: str) -> np.ndarray:
        x = self.vector(cid)
        if cid in self._survivors:
            clipped = np.clip(x.astype(np.float64), -CLIP, CLIP)
            clipped *= self._weights[cid]
            self.reference += clipped
        return x

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


# --- one configuration -----------------------------------------------------------------


def config_seed(seed: int, d: int, n: int, k: int, drop: float) -> tuple[int, ...]:
    return (seed, d, n, k, round(drop * 1000))


def bench_config(
    d: int,
    n: int,
    k: int,
    drop: float,
    *,
    bits: int,
    repeats: int,
    seed: int,
    federation: Federation,
    machine: Mapping[str, Any],
    flower_python: str | None = None,
) -> dict[str, Any]:
    wall = time.perf_counter()
    config = make_config(federation, d, neighbours=k, bits=bits, clip=CLIP, max_weight=MAX_WEIGHT)
    ring = config.quantization.ring
    k_eff = effective_degree(n, k)
    base_seed = config_seed(seed, d, n, k, drop)
    rng = np.random.default_rng([*base_seed, 1 << 20])
    ids = federation.ids
    weights = {
        cid: int(w) for cid, w in zip(ids, rng.integers(1, MAX_WEIGHT + 1, size=n), strict=True)
    }
    dropouts = random_dropouts(ids, drop, rng, stages=(Stage.MASKED_INPUT,))
    survivors = frozenset(ids) - frozenset(dropouts)

    probe = LazyInputs(ids, d, base_seed, weights, frozenset())
    sample = probe.vector(ids[0])
    quantize(sample, weights[ids[0]], config.quantization)  # warm-up: allocator, page faults
    quantize_s = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        quantize(sample, weights[ids[0]], config.quantization)
        quantize_s = min(quantize_s, time.perf_counter() - t0)
    del sample, probe

    limit = KeystreamLimit(config.element_count, ring.dtype)
    client_keystreams = k_eff + 1
    limit.seconds(client_keystreams)  # warm-up at the measured size: caches, frequency
    upload_limit = UploadLimit(config.element_count, bits, base_seed, config.session_id)
    flower_spec = {
        "d": d,
        "n": n,
        "num_shares": k_eff + 1 if k_eff % 2 == 0 or k_eff == n - 1 else k_eff + 2,
        "threshold": config.threshold,
        "seed": list(base_seed),
        "weights": [weights[cid] for cid in ids],
        "dropped": sorted(ids.index(cid) for cid in dropouts),
        "input_std": INPUT_STD,
        "clip": CLIP,
        "max_weight": MAX_WEIGHT,
        "repeats": 1,
    }
    best: dict[str, float] = {}
    stats: dict[str, Any] = {}
    round_ok = True
    failure = None

    def keep_min(name: str, value: float) -> None:
        best[name] = min(best.get(name, math.inf), value)

    for _ in range(repeats):
        inputs = LazyInputs(ids, d, base_seed, weights, survivors)
        report = run_round(config, federation, inputs, weights, dropouts)
        ok = (
            report.failure is None
            and report.final_stage is Stage.DONE
            and report.result is not None
        )
        if ok:
            assert report.result is not None
            est = report.result.estimate
            total = sum(weights[c] for c in survivors)
            error = float(np.max(np.abs(est.weighted_mean - inputs.reference / total)))
            ok = (
                set(report.result.survivors) == survivors
                and est.total_weight == total
                and error <= est.error_bound * (1 + 1e-9)
            )
            stats["mean_error"] = max(stats.get("mean_error", 0.0), error)
            stats["error_bound"] = est.error_bound
        else:
            failure = repr(report.failure)
        round_ok = round_ok and ok
        uploaders = [c for c in ids if c in survivors]
        keep_min("client_s", statistics.median(report.client_seconds.get(MASKED, [math.nan])))
        keep_min("client_max_s", max(report.client_seconds.get(MASKED, [math.nan])))
        keep_min(
            "client_round_s",
            sum(statistics.median(times) for times in report.client_seconds.values() if times),
        )
        keep_min("server_s", report.server_seconds.get(UNMASK, math.nan))
        keep_min("server_upload_s", report.server_seconds.get(MASKED, math.nan))
        keep_min(
            "server_total_s",
            report.server_seconds.get(MASKED, math.nan)
            + report.server_seconds.get(UNMASK, math.nan),
        )
        keep_min("server_round_s", sum(report.server_seconds.values()))
        stats["upload_bytes"] = int(statistics.median(report.upload_bytes[c] for c in uploaders))
        stats["upload_bytes_max"] = max(report.upload_bytes[c] for c in uploaders)
        stats["download_bytes"] = int(
            statistics.median(report.download_bytes[c] for c in uploaders)
        )
        stats["masked_input_bytes"] = report.masked_input_bytes
        server_keystreams = report.unmask_keystreams
        if stats.setdefault("server_keystreams", server_keystreams) != server_keystreams:
            raise RuntimeError("the unmask keystream count changed between repetitions")
        del report, inputs  # model-sized arrays: free them before timing the limit

        client_total, aes, add = limit.seconds(client_keystreams)
        keep_min("client_limit_s", client_total)
        keep_min("limit_aes_s", aes)
        keep_min("limit_add_s", add)
        if server_keystreams:
            keep_min("server_limit_s", limit.seconds(server_keystreams)[0])
        upload_total, checksummed, added = upload_limit.seconds(sorted(survivors))
        keep_min("server_upload_limit_s", upload_total)
        keep_min("upload_limit_checksum_s", checksummed)
        keep_min("upload_limit_add_s", added)
        if flower_python is not None:
            flower = flower_round(flower_python, flower_spec)
            keep_min("flower_aggregate_s", flower["aggregate_s"])
            keep_min("flower_unmask_s", flower["unmask_s"])
            keep_min("flower_server_s", flower["server_s"])
            stats["flower_mean_error"] = max(
                stats.get("flower_mean_error", 0.0), flower["mean_error"]
            )
            ratio_total = sum(weights[c] / MAX_WEIGHT for c in survivors)
            stats["flower_error_bound"] = len(survivors) * flower["step"] / ratio_total
            stats["flwr"] = flower["flwr"]

    del upload_limit
    fp32_bytes = 4 * d
    upload = stats["upload_bytes"]
    flower_fields: dict[str, Any] = {}
    if flower_python is not None:
        flower_fields = {
            "flower_aggregate_s": best["flower_aggregate_s"],
            "flower_unmask_s": best["flower_unmask_s"],
            "flower_server_s": best["flower_server_s"],
            "server_vs_flower": best["flower_server_s"] / best["server_total_s"],
            "flower_mean_error": stats["flower_mean_error"],
            "flower_error_bound": stats["flower_error_bound"],
            "flower_num_shares": flower_spec["num_shares"],
            "flwr": stats["flwr"],
        }
    server_limit = best.get("server_limit_s", math.nan)
    gigabytes = client_keystreams * limit.nbytes / 1e9
    return {
        "case": "acceptance" if (d, n, k, drop) == ACCEPTANCE else "matrix",
        "d": d,
        "n": n,
        "k": k,
        "k_effective": k_eff,
        "t": config.threshold,
        "drop": drop,
        "dropped": len(dropouts),
        "bits": bits,
        "repeats": repeats,
        "client_s": best["client_s"],
        "client_max_s": best["client_max_s"],
        "client_limit_s": best["client_limit_s"],
        "client_ratio": best["client_s"] / best["client_limit_s"],
        "client_keystreams": client_keystreams,
        "client_quantize_s": quantize_s,
        "client_round_s": best.get("client_round_s", math.nan),
        "server_s": best["server_s"],
        "server_limit_s": server_limit,
        "server_ratio": best["server_s"] / server_limit,
        "server_keystreams": stats["server_keystreams"],
        "server_upload_s": best["server_upload_s"],
        "server_accumulate_s": best["server_upload_s"],
        "server_upload_limit_s": best["server_upload_limit_s"],
        "server_upload_ratio": best["server_upload_s"] / best["server_upload_limit_s"],
        "upload_limit_checksum_s": best["upload_limit_checksum_s"],
        "upload_limit_add_s": best["upload_limit_add_s"],
        "server_total_s": best["server_total_s"],
        **flower_fields,
        "server_round_s": best["server_round_s"],
        "upload_bytes": upload,
        "upload_bytes_max": stats["upload_bytes_max"],
        "masked_input_bytes": stats["masked_input_bytes"],
        "upload_key_bytes": upload - stats["masked_input_bytes"],
        "download_bytes": stats["download_bytes"],
        "fp32_bytes": fp32_bytes,
        "upload_ratio": upload / fp32_bytes,
        "upload_ok": upload <= bits / 32 * fp32_bytes + KEY_ALLOWANCE_BYTES,
        "round_ok": round_ok,
        "failure": failure,
        "mean_error": stats.get("mean_error"),
        "error_bound": stats.get("error_bound"),
        "aes_gbps": gigabytes / best["limit_aes_s"],
        "add_gbps": gigabytes / best["limit_add_s"],
        "config_wall_s": time.perf_counter() - wall,
        **machine,
    }


# --- matrix and table ----------------------------------------------------------------------


def matrix(quick: bool) -> list[tuple[int, int, int, float]]:
    if quick:
        cases = [
            (QUICK_DIMENSION, n, default_neighbours(n), drop) for n in COHORTS for drop in DROPS
        ]
        cases.append((QUICK_DIMENSION, 50, 7, 0.1))
    else:
        cases = [
            (d, n, k, drop)
            for d in DIMENSIONS
            for n in COHORTS
            for k in (default_neighbours(n), n - 1)
            for drop in DROPS
        ]
        cases.append(ACCEPTANCE)
    unique: list[tuple[int, int, int, float]] = []
    for case in cases:
        if case not in unique:
            unique.append(case)
    return unique


COLUMNS = (  # (record field, heading, width, format spec)
    ("d", "d", 9, "d"),
    ("n", "n", 3, "d"),
    ("k", "k", 3, "d"),
    ("t", "t", 3, "d"),
    ("drop", "drop", 4, ".1f"),
    ("client_s", "client_s", 9, ".4f"),
    ("client_limit_s", "c_limit", 9, ".4f"),
    ("client_ratio", "c_rat", 6, ".2f"),
    ("server_s", "server_s", 9, ".4f"),
    ("server_limit_s", "s_limit", 9, ".4f"),
    ("server_ratio", "s_rat", 6, ".2f"),
    ("client_keystreams", "c_ks", 4, "d"),
    ("server_keystreams", "s_ks", 4, "d"),
    ("server_upload_s", "upload_s", 8, ".4f"),
    ("server_upload_limit_s", "u_limit", 8, ".4f"),
    ("server_upload_ratio", "u_rat", 6, ".2f"),
    ("client_quantize_s", "quant_s", 8, ".4f"),
    ("upload_bytes", "upload_B", 10, "d"),
    ("upload_ratio", "up/fp32", 7, ".4f"),
    ("round_ok", "ok", 3, ""),
    ("config_wall_s", "wall_s", 7, ".1f"),
)


def table_header() -> str:
    return " ".join(f"{heading:>{width}}" for _, heading, width, _ in COLUMNS)


def table_row(record: Mapping[str, Any]) -> str:
    cells = []
    for name, _, width, spec in COLUMNS:
        value = record[name]
        cells.append(
            f"{value!s:>{width}}" if isinstance(value, bool) else f"{value:>{width}{spec}}"
        )
    return " ".join(cells)


def report_consistency(path: Path, bits: int, repeats: int, machine: dict[str, Any]) -> None:
    """The one-survivor-set rule's cost (benchmarks/consistency_cost.py), as a table + JSON."""
    limit = KeystreamLimit(MASK_DIMENSION + 1, dtype_for_bits(bits))
    rows = consistency_records(limit, repeats=repeats)
    print(
        "# consistency quorum: signatures, download bytes, verify time vs mask floor, "
        "dropout tolerance (old rule -> new rule)",
        flush=True,
    )
    for r in rows:
        print(
            f"# n={r['n']:3d} k={r['k']:2d} t={r['t']:2d} signatures {r['signatures_before']}"
            f" -> {r['signatures_after']}, instructions {r['instructions_bytes_before']} B -> "
            f"{r['instructions_bytes_after']} B, verify {r['verify_s_before'] * 1e3:.2f} ms -> "
            f"{r['verify_s_after'] * 1e3:.2f} ms = {r['verify_ratio_after']:.3f} x the "
            f"{r['mask_floor_s'] * 1e3:.1f} ms mask floor (d={r['mask_dimension']}), "
            f"tolerance {r['tolerance_before']:.2f} -> {r['tolerance_after']:.2f}",
            flush=True,
        )
    write_json(path, [{**r, "machine": machine} for r in rows])


def parse_case(text: str) -> tuple[int, int, int, float]:
    """'1e6,50,7,0.1' -> (1000000, 50, 7, 0.1): one configuration for --case."""
    parts = text.split(",")
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"--case takes D,N,K,DROP, got {text!r}")
    return int(float(parts[0])), int(parts[1]), int(parts[2]), float(parts[3])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="d=1e6 and the default degree only")
    parser.add_argument("--json", type=Path, help="write the JSON list of records here")
    parser.add_argument(
        "--repeats", type=int, default=3, help="rounds per configuration (min taken)"
    )
    parser.add_argument(
        "--bits", type=int, default=32, help="ring width m (upload bits per element)"
    )
    parser.add_argument(
        "--seed", type=int, default=20240601, help="numpy seed for inputs and dropouts"
    )
    parser.add_argument(
        "--case",
        action="append",
        type=parse_case,
        metavar="D,N,K,DROP",
        help="run this configuration (repeatable) instead of the matrix, e.g. 1e6,50,7,0.1",
    )
    parser.add_argument(
        "--acceptance-only",
        action="store_true",
        help="run only the acceptance case (d=4e6, n=50, k=7, drop=0.1)",
    )
    parser.add_argument(
        "--flower-python",
        help="a Python with flwr==1.42.0 (its own venv): time Flower's SecAgg+ server too",
    )
    parser.add_argument(
        "--consistency-json",
        type=Path,
        help="also measure the consistency quorum's cost at n=50 and n=500 and write it here",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")

    machine = machine_info()
    print(
        f"# secagg_bench: {machine['cpu_count']} CPUs ({machine['cpu_model']}, AES-NI "
        f"{machine['aes_ni']}), Python {machine['python']}, numpy {machine['numpy']}, "
        f"cryptography {machine['cryptography']} ({machine['openssl']}); bits={args.bits}, "
        f"repeats={args.repeats} (times are minima over repeats)",
        flush=True,
    )
    print(table_header(), flush=True)
    federations: dict[int, Federation] = {}
    records: list[dict[str, Any]] = []
    start = time.perf_counter()
    cases = [ACCEPTANCE] if args.acceptance_only else (args.case or matrix(args.quick))
    for d, n, k, drop in cases:
        federation = federations.setdefault(n, Federation.enrol(n))
        record = bench_config(
            d,
            n,
            k,
            drop,
            bits=args.bits,
            repeats=args.repeats,
            seed=args.seed,
            federation=federation,
            machine=machine,
            flower_python=args.flower_python,
        )
        records.append(record)
        print(table_row(record), flush=True)
        if args.flower_python is not None:
            print(
                f"# d={d} n={n} k={k} drop={drop}: fedveil server {record['server_total_s']:.3f} s "
                f"(upload {record['server_upload_s']:.3f} + unmask {record['server_s']:.3f}), "
                f"Flower {record['flower_server_s']:.3f} s (aggregate "
                f"{record['flower_aggregate_s']:.3f} + unmask {record['flower_unmask_s']:.3f}): "
                f"{record['server_vs_flower']:.2f}x; Flower mean error "
                f"{record['flower_mean_error']:.2e} (bound {record['flower_error_bound']:.2e})",
                flush=True,
            )
        if args.json is not None:
            write_json(args.json, records)
    elapsed = time.perf_counter() - start
    print(f"# {len(records)} configurations in {elapsed:.1f} s", flush=True)
    if args.consistency_json is not None:
        report_consistency(args.consistency_json, args.bits, args.repeats, machine)
    failed = [r for r in records if not r["round_ok"]]
    for r in failed:
        print(
            f"# FAILED: d={r['d']} n={r['n']} k={r['k']} drop={r['drop']}: {r['failure']}",
            flush=True,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
