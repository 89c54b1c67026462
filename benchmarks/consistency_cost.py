"""What one survivor set per round costs: signatures, bytes, time and dropout tolerance.

Why measured next to the masking floor: a client's unmask stage now verifies more than
half the roster's Ed25519 signatures instead of t. The figure that matters is how that
compares with the work a client cannot avoid in the same round (expanding its k + 1
AES-CTR masks over the update), measured in the same process with the same
KeystreamLimit secagg_bench.py uses.

Per cohort n (k, t the server's defaults), a record holds:

- signatures_before / signatures_after: t (the old rule) and floor(n / 2) + 1 (the
  consistency quorum with no assumed colluders).
- instructions_bytes_before / _after: the serialised UnmaskInstructions one client
  downloads (survivor list, dropped list, signatures), with t or quorum signatures.
- verify_s_before / _after: a client checking that many real signatures
  (secagg.protocol.consistency.survivor_signers), minimum over repeats.
- mask_floor_s: the AES-CTR + add floor for k + 1 masks of d = MASK_DIMENSION elements;
  verify_ratio_after = verify_s_after / mask_floor_s.
- tolerance_before / _after: the largest fraction of clients dropping between sharing
  keys and uploading at which at least 99% of TRIALS random dropout draws still let the
  round finish (old rule: every survivor's and every dropout's neighbourhood keeps t live
  holders; new rule: that, and more than half the roster survives to sign).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from fedveil.proto.convert import instructions_to_pb
from fedveil.runners.simulation import Federation
from fedveil.secagg.crypto.identity import survivor_set_message
from fedveil.secagg.protocol.consistency import consistency_quorum, survivor_signers
from fedveil.secagg.protocol.graph import default_neighbours, default_threshold, neighbour_graph
from fedveil.secagg.protocol.messages import ConsistencySignature, UnmaskRequest

COHORTS = (50, 500)
MASK_DIMENSION = 1_000_000
TRIALS = 400
DROP_GRID = tuple(round(0.01 * i, 2) for i in range(0, 71))
SESSION = bytes(range(32))


def _signatures(
    federation: Federation, survivors: frozenset[str], count: int
) -> tuple[ConsistencySignature, ...]:
    message = survivor_set_message(SESSION, survivors)
    signers = sorted(survivors)[:count]
    return tuple(
        ConsistencySignature(cid, federation.identities[cid].sign(message)) for cid in signers
    )


def _verify_seconds(
    federation: Federation,
    survivors: frozenset[str],
    signatures: tuple[ConsistencySignature, ...],
    repeats: int,
) -> float:
    roster = federation.roster
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        survivor_signers(SESSION, survivors, signatures, roster)
        best = min(best, time.perf_counter() - start)
    return best


def closed_adjacency(ids: tuple[str, ...], k: int) -> np.ndarray:
    graph = neighbour_graph(ids, k, SESSION)
    index = {cid: i for i, cid in enumerate(ids)}
    adjacency = np.eye(len(ids), dtype=np.int32)
    for cid, peers in graph.items():
        for peer in peers:
            adjacency[index[cid], index[peer]] = 1
    return adjacency


def success_rates(
    adjacency: np.ndarray, t: int, quorum: int, drop: float, trials: int, rng: np.random.Generator
) -> tuple[float, float]:
    """(old rule, new rule) success rates for `drop` of the clients leaving before upload."""
    n = adjacency.shape[0]
    gone = max(0, round(drop * n))
    old = new = 0
    for _ in range(trials):
        live = np.ones(n, dtype=np.int32)
        live[rng.choice(n, size=gone, replace=False)] = 0
        holders = adjacency @ live  # live members of each client's closed neighbourhood
        # Whose secret must be rebuilt: every survivor (its self-mask) and every dropout
        # with a surviving neighbour (its masking key); for a dropout, holders counts
        # exactly its live neighbours.
        needed = live.astype(bool) | (holders > 0)
        ok = bool(np.all(holders[needed] >= t))
        old += ok
        new += ok and int(live.sum()) >= quorum
    return old / trials, new / trials


def tolerance(rates: list[tuple[float, float, float]], which: int) -> float:
    best = 0.0
    for drop, *pair in rates:
        if pair[which] >= 0.99:
            best = drop
        else:
            break
    return best


def consistency_records(
    keystream_limit: Any, repeats: int = 3, seed: int = 7
) -> list[dict[str, Any]]:
    """One record per cohort in COHORTS (see the module docstring for the fields)."""
    records = []
    rng = np.random.default_rng(seed)
    for n in COHORTS:
        federation = Federation.enrol(n)
        ids = federation.ids
        k = default_neighbours(n)
        t = default_threshold(n, k)
        quorum = consistency_quorum(n)
        survivors = frozenset(ids)
        few, many = (
            _signatures(federation, survivors, t),
            _signatures(federation, survivors, quorum),
        )

        def size(signatures: tuple[ConsistencySignature, ...], ids: tuple[str, ...] = ids) -> int:
            request = UnmaskRequest(ids, (), signatures)
            return len(instructions_to_pb(request).SerializeToString())

        floor_s = min(keystream_limit.seconds(k + 1)[0] for _ in range(repeats))
        verify_after = _verify_seconds(federation, survivors, many, repeats)
        adjacency = closed_adjacency(ids, k)
        rates = []
        for drop in DROP_GRID:
            old, new = success_rates(adjacency, t, quorum, drop, TRIALS, rng)
            rates.append((drop, old, new))
            if old < 0.99 and new < 0.99:
                break
        records.append(
            {
                "n": n,
                "k": k,
                "t": t,
                "signatures_before": t,
                "signatures_after": quorum,
                "instructions_bytes_before": size(few),
                "instructions_bytes_after": size(many),
                "verify_s_before": _verify_seconds(federation, survivors, few, repeats),
                "verify_s_after": verify_after,
                "mask_floor_s": floor_s,
                "mask_dimension": MASK_DIMENSION,
                "verify_ratio_after": verify_after / floor_s,
                "tolerance_before": tolerance(rates, 0),
                "tolerance_after": tolerance(rates, 1),
                "trials": TRIALS,
            }
        )
    return records
