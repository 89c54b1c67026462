"""The SecAgg+ neighbour graph, derived from the session id rather than chosen by the server.

Why derived: if the server picked each client's neighbours it could surround a victim
with clients it controls. Here the roster is ordered by an HKDF-derived pseudorandom key
of the session id, and each client is joined to the k clients nearest to it on that ring
(a Harary graph): every client has the same degree and nobody chooses the placement.

Degree: k even gives offsets +-1..+-k/2. k odd with n even adds the diametric offset
n/2. k odd with n odd has no k-regular graph, so the degree is rounded up to k + 1.
"""

from __future__ import annotations

import math

from fedveil.secagg.crypto.kdf import Purpose, derive_key


def effective_degree(n: int, k: int) -> int:
    """The degree the graph really has for n clients and requested degree k."""
    if k >= n - 1:
        return n - 1
    if k % 2 == 1 and n % 2 == 1:
        return k + 1
    return k


def ring_order(roster: tuple[str, ...], session_id: bytes) -> list[str]:
    """The roster sorted by a pseudorandom per-client key derived from the session id."""
    return sorted(
        roster, key=lambda cid: derive_key(session_id, Purpose.NEIGHBOUR_GRAPH, session_id, cid)
    )


def neighbour_graph(
    roster: tuple[str, ...], k: int, session_id: bytes
) -> dict[str, frozenset[str]]:
    """Each client's neighbours (never itself); symmetric and effective_degree-regular."""
    n = len(roster)
    degree = effective_degree(n, k)
    order = ring_order(roster, session_id)
    if degree == n - 1:
        everyone = frozenset(order)
        return {cid: everyone - {cid} for cid in order}
    offsets = set()
    for step in range(1, degree // 2 + 1):
        offsets.update({step, n - step})
    if degree % 2 == 1:
        offsets.add(n // 2)
    return {
        cid: frozenset(order[(pos + off) % n] for off in offsets) for pos, cid in enumerate(order)
    }


def default_neighbours(n: int) -> int:
    """SecAgg+'s logarithmic degree, k = floor(2 log2 n + 1), capped at n - 1."""
    return min(n - 1, int(2 * math.log2(n) + 1))


def default_threshold(n: int, k: int) -> int:
    """The smallest strict majority of a neighbourhood: t = floor((k+1)/2) + 1."""
    return (effective_degree(n, k) + 1) // 2 + 1
