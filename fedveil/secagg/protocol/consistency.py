"""One survivor set per round: the consistency quorum a client checks before it reveals.

Why this exists. In the unmask stage a holder reveals, for each owner whose shares it
holds, the self-mask share if the owner survived and the masking-key share if it
dropped. If a server could get two different survivor sets accepted, S1 shown to one
group of holders and S2 to another, it would ask the first group for the self-mask
share of a victim u in S1 and the second group for the key shares of u's neighbours,
listed as dropped in S2, and strip every mask off u's upload: its exact update and
weight. Requiring t signatures over the set does not stop this: t is a majority of one
neighbourhood of k + 1 << n clients, so disjoint groups of t honest signers exist
(`tests/attacks/test_survivor_partition.py` drives that attack through real sessions).

The rule. A client reveals only against a survivor set S carrying valid signatures over
(session id, S) from more than (n + c) / 2 distinct members of S, where n is the size
of the round's roster and c is the number of colluding clients the client assumes
(`ClientPolicy.max_colluders`; colluders sign anything the server asks).

The argument. Suppose honest clients accept two different sets S1 != S2 with signer
sets A1, A2, both drawn from the roster of n. |A1| + |A2| > n + c, so |A1 & A2| > c and
at least one client signed both that is not a colluder. An honest client signs exactly
one survivor set per session (its state machine signs once, in the consistency stage,
and never returns there) and the signature covers the session id (no other round's
signature counts). So no honest client signed both: a contradiction. Every honest
holder therefore reveals against the same S, and for each owner the honest holders
reveal one kind of share only; colluders hold at most c < t shares of the other kind.

Why n is the roster and not "the clients that advertised keys": the roster is bound
into the session id, so every client counts the same n; the set of clients that
advertised is the server's word and could be shown smaller to each group.

The cost. A round needs floor((n + c) / 2) + 1 survivors that sign, instead of t per
neighbourhood: it tolerates fewer than (n - c) / 2 clients dropping before the
consistency check, and each unmask request carries that many 64-byte signatures.
"""

from __future__ import annotations

from collections.abc import Mapping

from fedveil.errors import InvalidMessageError, SurvivorQuorumError, SurvivorSetMismatchError
from fedveil.secagg.crypto.identity import VerifyingIdentity, survivor_set_message
from fedveil.secagg.protocol.messages import ConsistencySignature


def consistency_quorum(roster_size: int, colluders: int = 0) -> int:
    """The fewest signers that make a survivor set the round's only one: > (n + c) / 2."""
    if roster_size < 1 or colluders < 0:
        raise ValueError(f"need roster_size >= 1, colluders >= 0; got {roster_size}, {colluders}")
    return (roster_size + colluders) // 2 + 1


def survivor_signers(
    session_id: bytes,
    survivors: frozenset[str],
    signatures: tuple[ConsistencySignature, ...],
    identities: Mapping[str, VerifyingIdentity],
) -> frozenset[str]:
    """Verify every signature over `survivors`; return the distinct signers.

    Any signature that fails, comes from a non-survivor or repeats a signer fails the
    whole request: an honest server relays only what verifies.
    """
    message = survivor_set_message(session_id, survivors)
    signers: set[str] = set()
    for item in signatures:
        if item.client_id not in survivors:
            raise SurvivorSetMismatchError(
                f"consistency signature from {item.client_id!r}, who is not a survivor"
            )
        if item.client_id in signers:
            raise InvalidMessageError(f"two consistency signatures from {item.client_id!r}")
        identities[item.client_id].verify(item.signature, message)
        signers.add(item.client_id)
    return frozenset(signers)


def require_unique_survivor_set(
    session_id: bytes,
    roster_size: int,
    colluders: int,
    survivors: frozenset[str],
    signatures: tuple[ConsistencySignature, ...],
    identities: Mapping[str, VerifyingIdentity],
) -> frozenset[str]:
    """Raise SurvivorQuorumError unless more than (n + c) / 2 members signed `survivors`;
    return the signers."""
    signers = survivor_signers(session_id, survivors, signatures, identities)
    needed = consistency_quorum(roster_size, colluders)
    if len(signers) < needed:
        raise SurvivorQuorumError(
            f"{len(signers)} valid consistency signatures over this survivor set, but {needed} "
            f"are required (more than half of the roster of {roster_size} plus the {colluders} "
            "colluders this client assumes): with fewer, the server could show another group "
            "a different survivor set; refusing to reveal any share"
        )
    return signers


def require_owner_signatures(held: frozenset[str], signers: frozenset[str]) -> None:
    """Refuse to reveal the self-mask share of a survivor that did not sign the set.

    Why: the owner's signature is its consent. A survivor signs only a set in which more
    of the neighbours it masked with survive than it assumes colluders; without that
    rule a server that relayed an owner only t - 1 neighbours' shares could list those
    neighbours as dropped, collect the owner's self-mask share from the others and the
    neighbours' key shares from everyone, and unmask the owner alone. The cost: a
    client that drops after uploading and before signing fails the round.
    """
    unsigned = sorted(held - signers)
    if unsigned:
        raise SurvivorSetMismatchError(
            f"survivors {unsigned[:5]} did not sign the survivor set: revealing their "
            "self-mask shares could expose an input its owner never agreed to release; "
            "refusing to reveal any share"
        )
