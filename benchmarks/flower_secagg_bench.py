"""Flower's SecAgg+ server work on given inputs: the reference secagg_bench.py compares with.

Why a separate script: Flower is not a dependency of fedveil, so this runs under its own
virtual environment, as a subprocess of secagg_bench.py (`--flower-python PATH`), and
reads one JSON spec (the inputs and round shape secagg_bench.py used) and writes one JSON
object. Nothing here imports fedveil.

Reproduce (Flower in its own venv; never in fedveil's .venv):

    python3 -m venv /tmp/flwr-venv
    /tmp/flwr-venv/bin/pip install flwr==1.42.0 numpy
    .venv/bin/python benchmarks/secagg_bench.py --acceptance-only \\
        --flower-python /tmp/flwr-venv/bin/python --json benchmarks/results/secagg_limit.json

What runs: Flower's own stage functions, in the order its server workflow
(flwr/server/workflow/secure_aggregation/secaggplus_workflow.py, SecAggPlusWorkflow) calls
them, without its runtime (no Grid, no Message transport, no Strategy):

- clients: the client mod's stage functions (flwr/client/mod/secure_aggregation/
  secaggplus_mod.py: _setup, _share_keys, _collect_masked_vectors, _unmask) on one
  SecAggPlusState per client; their time is not reported.
- server, setup and share keys: the workflow's neighbour ring (shuffled node ids, each
  node with num_shares >> 1 on either side, itself included) and the envelope forwarding.
  num_shares must be odd (or n): setup_stage raises an even count by one for its ring
  only after it has sent the count to the clients, which then make one share too few
  and fail (IndexError in _share_keys). So secagg_bench.py passes k + 1 rounded up to
  odd: at fedveil's k = 7, Flower runs with degree 8 and rebuilds one more pairwise mask
  per dropped node than fedveil.
- server, aggregate (timed, `aggregate_s`): collect_masked_vectors_stage's loop:
  bytes_to_ndarray of every array a surviving client sent, parameters_addition into the
  running vector, then parameters_mod.
- server, unmask (timed, `unmask_s`): unmask_stage from collecting the revealed shares to
  the weighted-mean vector: combine_shares per node, pseudo_rand_gen +
  parameters_subtraction for each survivor's private mask, generate_shared_key +
  pseudo_rand_gen + parameters_addition/subtraction for each dropped node's neighbours,
  parameters_mod, factor_extract, dequantize, offset and ratio. Left out, in Flower's
  favour: the FitRes/Strategy compatibility steps (recorddict_to_fitres per client and
  strategy.aggregate_fit over the results).

Clients are processed one at a time, so one client's masked vector is alive at a time
(as fedveil's in-process bench does); the timed server loop body is the workflow's.
Inputs: float32 N(0, input_std^2) from numpy.random.default_rng([*seed, client_index]),
the same generator and seeds secagg_bench.py uses, weights given per client; dropped
clients take part in setup and share keys and never send their masked vector.

Output fields: aggregate_s, unmask_s, server_s = aggregate_s + unmask_s (each the minimum
over repeats; server_s is the minimum of the per-repeat sums), mean_error (max |decoded
weighted mean - exact weighted mean of the survivors' clipped inputs|), step (Flower's
quantisation step 2 * clip / quantization_range), survivors, flwr, numpy, python.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

try:
    import flwr
    from flwr.client.mod.secure_aggregation.secaggplus_mod import (
        SecAggPlusState,
        _collect_masked_vectors,
        _setup,
        _share_keys,
        _unmask,
    )
    from flwr.common import bytes_to_ndarray, ndarrays_to_parameters
    from flwr.common.secure_aggregation.crypto.shamir import combine_shares
    from flwr.common.secure_aggregation.crypto.symmetric_encryption import (
        generate_shared_key,
    )
    from flwr.common.secure_aggregation.ndarrays_arithmetic import (
        factor_extract,
        get_parameters_shape,
        parameters_addition,
        parameters_mod,
        parameters_subtraction,
    )
    from flwr.common.secure_aggregation.quantization import dequantize
    from flwr.common.secure_aggregation.secaggplus_constants import Key
    from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
    from flwr.supercore.primitives.asymmetric import bytes_to_private_key, bytes_to_public_key
except ImportError as exc:  # pragma: no cover - run under the Flower venv
    sys.exit(f"flower_secagg_bench.py needs flwr==1.42.0 in this interpreter: {exc}")

QUANTIZATION_RANGE = 1 << 22  # Flower's default
MODULUS_RANGE = 1 << 32  # Flower's default and largest; fedveil's benchmark ring is 2^32


@dataclass(frozen=True)
class Spec:
    """The round secagg_bench.py ran, in the terms Flower's workflow takes."""

    d: int
    n: int
    num_shares: int
    threshold: int
    seed: list[int]
    weights: list[int]
    dropped: list[int]
    input_std: float
    clip: float
    max_weight: float
    repeats: int

    def inputs(self, index: int) -> np.ndarray:
        rng = np.random.default_rng([*self.seed, index])
        x = rng.standard_normal(self.d, dtype=np.float32)
        x *= np.float32(self.input_std)
        return x


def one_round(spec: Spec, shuffle_seed: int) -> dict[str, Any]:
    """Run the four stages once; return the timed server work and the decoded mean."""
    if spec.num_shares != spec.n and spec.num_shares % 2 == 0:
        raise SystemExit(f"num_shares must be odd or n (see the docstring), got {spec.num_shares}")
    node_ids = [1000 + i for i in range(spec.n)]
    index_of = {nid: i for i, nid in enumerate(node_ids)}
    dead_set = {node_ids[i] for i in spec.dropped}
    states = {nid: SecAggPlusState() for nid in node_ids}

    # setup_stage: configs to every node, public keys back; the neighbour ring.
    setup: dict[str, Any] = {
        Key.SAMPLE_NUMBER: spec.n,
        Key.SHARE_NUMBER: spec.num_shares,
        Key.THRESHOLD: spec.threshold,
        Key.CLIPPING_RANGE: spec.clip,
        Key.TARGET_RANGE: QUANTIZATION_RANGE,
        Key.MOD_RANGE: MODULUS_RANGE,
        Key.MAX_WEIGHT: spec.max_weight,
    }
    publickeys: dict[int, list[bytes]] = {}
    for nid, state in states.items():
        state.nid = nid
        res = _setup(state, setup)
        publickeys[nid] = [res[Key.PUBLIC_KEY_1], res[Key.PUBLIC_KEY_2]]
    order = list(node_ids)
    random.Random(shuffle_seed).shuffle(order)
    half = spec.num_shares >> 1
    neighbours = {
        nid: {order[(idx + off) % spec.n] for off in range(-half, half + 1)}
        for idx, nid in enumerate(order)
    }

    # share_keys_stage: each node gets its neighbours' keys, returns envelopes; forward.
    fwd_ct: dict[int, list[bytes]] = {nid: [] for nid in node_ids}
    fwd_src: dict[int, list[int]] = {nid: [] for nid in node_ids}
    for nid, state in states.items():
        keys_cfg: dict[str, Any] = {str(peer): publickeys[peer] for peer in neighbours[nid]}
        res = _share_keys(state, keys_cfg)
        for dst, ct in zip(res[Key.DESTINATION_LIST], res[Key.CIPHERTEXT_LIST], strict=True):
            fwd_ct[dst].append(ct)
            fwd_src[dst].append(nid)

    # collect_masked_vectors_stage: survivors mask and upload; the server sums (timed).
    aggregate_s = 0.0
    masked_vector: list[np.ndarray] | None = None
    for nid, state in states.items():
        if nid in dead_set:
            continue
        collect_cfg: dict[str, Any] = {
            Key.CIPHERTEXT_LIST: fwd_ct[nid],
            Key.SOURCE_LIST: fwd_src[nid],
        }
        params = ndarrays_to_parameters([spec.inputs(index_of[nid])])
        weight = spec.weights[index_of[nid]]
        res = _collect_masked_vectors(state, collect_cfg, weight, params)
        bytes_list = res[Key.MASKED_PARAMETERS]
        t0 = time.perf_counter()
        client_masked_vec = [bytes_to_ndarray(b) for b in bytes_list]
        if masked_vector is None:
            masked_vector = client_masked_vec
        else:
            masked_vector = parameters_addition(masked_vector, client_masked_vec)
        aggregate_s += time.perf_counter() - t0
        del res, bytes_list, client_masked_vec, params
    assert masked_vector is not None
    t0 = time.perf_counter()
    masked_vector = parameters_mod(masked_vector, MODULUS_RANGE)
    aggregate_s += time.perf_counter() - t0

    # unmask_stage: survivors reveal shares; the server removes the masks (timed).
    active = set(node_ids) - dead_set
    replies = []
    for nid in sorted(active):
        unmask_cfg: dict[str, Any] = {
            Key.ACTIVE_NODE_ID_LIST: list(neighbours[nid] & active),
            Key.DEAD_NODE_ID_LIST: list(neighbours[nid] & dead_set),
        }
        replies.append(_unmask(states[nid], unmask_cfg))
    t0 = time.perf_counter()
    collected: dict[int, list[bytes]] = {nid: [] for nid in node_ids}
    for res in replies:
        for owner, share in zip(res[Key.NODE_ID_LIST], res[Key.SHARE_LIST], strict=True):
            collected[owner].append(share)
    for nid, share_list in collected.items():
        if len(share_list) < spec.threshold:
            raise RuntimeError(f"not enough shares to rebuild node {nid}'s secret")
        secret = combine_shares(share_list)
        if nid in active:
            private_mask = pseudo_rand_gen(
                secret, MODULUS_RANGE, get_parameters_shape(masked_vector)
            )
            masked_vector = parameters_subtraction(masked_vector, private_mask)
        else:
            peers = neighbours[nid]
            peers.remove(nid)
            for peer in peers:
                shared_key = generate_shared_key(
                    bytes_to_private_key(secret), bytes_to_public_key(publickeys[peer][0])
                )
                pairwise_mask = pseudo_rand_gen(
                    shared_key, MODULUS_RANGE, get_parameters_shape(masked_vector)
                )
                if nid > peer:
                    masked_vector = parameters_addition(masked_vector, pairwise_mask)
                else:
                    masked_vector = parameters_subtraction(masked_vector, pairwise_mask)
    recon = parameters_mod(masked_vector, MODULUS_RANGE)
    q_total_ratio, recon = factor_extract(recon)
    inv_dq_total_ratio = QUANTIZATION_RANGE / q_total_ratio
    aggregated = dequantize(recon, spec.clip, QUANTIZATION_RANGE)
    offset = -(len(active) - 1) * spec.clip
    for vec in aggregated:
        vec += offset
        vec *= inv_dq_total_ratio
    unmask_s = time.perf_counter() - t0
    return {
        "aggregate_s": aggregate_s,
        "unmask_s": unmask_s,
        "mean": aggregated[0],
        "survivors": len(active),
    }


def reference_mean(spec: Spec) -> np.ndarray:
    """Exact weighted mean of the survivors' clipped inputs, in float64."""
    total = np.zeros(spec.d, dtype=np.float64)
    weight = 0
    for i in range(spec.n):
        if i in spec.dropped:
            continue
        total += spec.weights[i] * np.clip(spec.inputs(i).astype(np.float64), -spec.clip, spec.clip)
        weight += spec.weights[i]
    return total / weight


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, required=True, help="JSON spec from secagg_bench")
    parser.add_argument("--json", type=Path, required=True, help="write the result object here")
    args = parser.parse_args(argv)
    spec = Spec(**json.loads(args.spec.read_text()))
    best: dict[str, float] = {}
    error = 0.0
    survivors = 0
    for rep in range(spec.repeats):
        out = one_round(spec, shuffle_seed=rep)
        for name in ("aggregate_s", "unmask_s"):
            best[name] = min(best.get(name, math.inf), out[name])
        total = out["aggregate_s"] + out["unmask_s"]
        best["server_s"] = min(best.get("server_s", math.inf), total)
        error = max(error, float(np.max(np.abs(out["mean"] - reference_mean(spec)))))
        survivors = out["survivors"]
    result = {
        **best,
        "mean_error": error,
        "step": 2 * spec.clip / QUANTIZATION_RANGE,
        "survivors": survivors,
        "flwr": flwr.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
