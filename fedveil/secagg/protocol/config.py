"""Round configuration and the session id that binds it into every key.

Why the session id: it is SHA-256 over the round id, the round configuration, the global
model hash and the sorted roster. Every signature, envelope and mask seed is derived
with it, so a server that shows two clients different models or rosters (model
inconsistency) gets signatures that do not verify and masks that do not cancel: the round
fails closed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

from fedveil.errors import CohortTooSmallError, ConfigError, RingOverflowError
from fedveil.secagg.crypto.encoding import encode_fields
from fedveil.secagg.crypto.envelope import AeadAlgorithm
from fedveil.secagg.crypto.identity import SigningIdentity, VerifyingIdentity
from fedveil.secagg.dp.config import NoisePlacement
from fedveil.secagg.modes import DEFAULT_ALLOWED_MODES, AggregationMode, parse_modes
from fedveil.secagg.protocol.dp import RoundDP
from fedveil.secagg.protocol.graph import effective_degree
from fedveil.secagg.quantize import QuantizationConfig

MODEL_HASH_BYTES = 32
MAX_CLIENT_ID_CHARS = 128
MAX_DIMENSION = 1 << 31
_SESSION_TAG = b"fedveil-session-v1"
_BUFFER_TAG = b"fedveil-buffered-round-v1"


@dataclass(frozen=True)
class RoundConfig:
    """Everything the parties must agree on for one SecAgg+ round.

    `neighbours` is k, the degree of the neighbour graph (k = n - 1 is classic SecAgg
    with a complete graph); `threshold` t applies within each neighbourhood of k + 1
    share holders and must be a strict majority of it, so a server cannot collect both
    kinds of share for one client from two disjoint groups of holders.

    `dp` (optional) makes it a differentially private round (secagg.protocol.dp): the
    quantisation must then be `dp.config.quantization` (weight 1, the DP scale), each
    upload holds `dp.config.padded_dim` values, and every DP field is in the session id.
    """

    round_id: int
    roster: tuple[str, ...]
    threshold: int
    neighbours: int
    dimension: int
    quantization: QuantizationConfig
    model_hash: bytes
    aead: AeadAlgorithm = field(default=AeadAlgorithm.AES_256_GCM)
    dp: RoundDP | None = None
    min_survivors: int | None = None
    """A buffered round's K (server round.buffer_size): the round runs among the first K
    clients to arrive and releases no sum of fewer. Bound into the session id (only when
    set, so other rounds keep theirs), so every client signs the same K; each refuses a
    K below its own minimum cohort before any key leaves (check_round_floors) and a
    survivor set below K (secagg.protocol.client)."""

    def __post_init__(self) -> None:
        if not isinstance(self.round_id, int) or self.round_id < 0:
            raise ConfigError(f"round_id must be a non-negative int, got {self.round_id!r}")
        roster = tuple(self.roster)
        if len(roster) < 2:
            raise ConfigError(f"a round needs at least 2 clients on its roster, got {len(roster)}")
        if len(set(roster)) != len(roster):
            raise ConfigError("roster lists a client id twice; client ids must be unique")
        for client_id in roster:
            if not isinstance(client_id, str) or not 0 < len(client_id) <= MAX_CLIENT_ID_CHARS:
                raise ConfigError(
                    f"client ids must be non-empty strings of at most {MAX_CLIENT_ID_CHARS} "
                    f"characters, got {client_id!r}"
                )
        object.__setattr__(self, "roster", tuple(sorted(roster)))
        n = len(roster)
        if not 1 <= self.neighbours <= n - 1:
            raise ConfigError(
                f"neighbours k must be in [1, n-1] = [1, {n - 1}], got {self.neighbours}"
            )
        holders = self.neighbourhood_size
        if not 2 <= self.threshold <= holders:
            raise ConfigError(
                f"threshold t={self.threshold} must be in [2, {holders}] "
                f"(the neighbourhood holds {holders} shares)"
            )
        if 2 * self.threshold <= holders:
            raise ConfigError(
                f"threshold t={self.threshold} must be a strict majority of the {holders} share "
                f"holders (t > {holders // 2}); otherwise a server could rebuild both secrets "
                "of one client from two disjoint groups"
            )
        if not 1 <= self.dimension <= MAX_DIMENSION:
            raise ConfigError(f"dimension must be in [1, {MAX_DIMENSION}], got {self.dimension}")
        if self.quantization.max_cohort < n:
            raise RingOverflowError(
                f"quantization.max_cohort={self.quantization.max_cohort} is below the roster "
                f"size {n}: the sum of {n} uploads could overflow the ring; raise max_cohort "
                "(and bits if needed)"
            )
        if not isinstance(self.model_hash, bytes) or len(self.model_hash) != MODEL_HASH_BYTES:
            raise ConfigError(f"model_hash must be {MODEL_HASH_BYTES} bytes (SHA-256)")
        if self.dp is not None:
            self._check_dp(self.dp)
        k = self.min_survivors
        if k is not None and (
            isinstance(k, bool) or not isinstance(k, int) or not self.threshold <= k <= n
        ):
            raise ConfigError(
                f"min_survivors (the buffer size K) must be an int in [threshold, roster] = "
                f"[{self.threshold}, {n}], got {k!r}"
            )

    def _check_dp(self, dp: RoundDP) -> None:
        if not isinstance(dp, RoundDP):
            raise ConfigError(f"dp must be a RoundDP or None, got {type(dp).__name__}")
        c = dp.config
        if c.dim != self.dimension:
            raise ConfigError(
                f"dp.config.dim={c.dim} differs from the round's dimension {self.dimension}"
            )
        q, expected = self.quantization, c.quantization
        mine = (q.clip, q.bits, q.max_cohort, q.max_weight, q.effective_scale)
        theirs = (
            expected.clip,
            expected.bits,
            expected.max_cohort,
            expected.max_weight,
            expected.effective_scale,
        )
        if mine != theirs:
            raise ConfigError(
                f"a DP round quantises with its DP config: pass quantization="
                f"dp.config.quantization (clip, bits, max_cohort, max_weight, scale = "
                f"{theirs}), got {mine}"
            )
        if c.placement is NoisePlacement.CLIENTS and c.min_clients > self.size:
            raise ConfigError(
                f"dp.config.min_clients={c.min_clients} exceeds the roster size {self.size}: "
                "no aggregate of this round could carry the accounted noise"
            )

    @property
    def size(self) -> int:
        return len(self.roster)

    @property
    def neighbourhood_size(self) -> int:
        """Share holders per client: its effective degree plus itself."""
        return effective_degree(self.size, self.neighbours) + 1

    @property
    def element_count(self) -> int:
        """Ring elements per upload: the update (padded for the DP rotation) plus the
        masked weight element."""
        if self.dp is not None:
            return self.dp.config.padded_dim + 1
        return self.dimension + 1

    def canonical_bytes(self) -> bytes:
        q = self.quantization
        dp_fields = self.dp.canonical_fields() if self.dp is not None else ()
        fields = encode_fields(
            self.threshold,
            self.neighbours,
            self.dimension,
            repr(float(q.clip)),
            q.bits,
            q.max_cohort,
            q.max_weight,
            repr(float(q.effective_scale)),
            self.aead.value,
            *dp_fields,
        )
        if self.min_survivors is None:
            return fields
        # Wrapped rather than appended: a tagged outer encoding cannot equal any
        # unbuffered one, whatever the number of DP fields.
        return encode_fields(_BUFFER_TAG, fields, self.min_survivors)

    @cached_property
    def session_id(self) -> bytes:
        return hashlib.sha256(
            encode_fields(
                _SESSION_TAG,
                self.round_id,
                self.canonical_bytes(),
                self.model_hash,
                *self.roster,
            )
        ).digest()

    def share_point(self, client_id: str) -> int:
        """The Shamir evaluation point of a client: its 1-based index in the roster."""
        try:
            return self.roster.index(client_id) + 1
        except ValueError as exc:
            raise ConfigError(f"client {client_id!r} is not on the roster") from exc


@dataclass(frozen=True)
class ClientPolicy:
    """A client's own limits, checked against whatever round the server proposes.

    DP rounds (they matter only when the round has `dp`):
    max_colluders: how many other clients this one assumes may collude with the server
        (their noise can be subtracted); it refuses to reveal a sum over fewer than
        dp.min_clients + max_colluders survivors.
    trust_server_sampling: account its own privacy with the round's published client
        sampling rate (amplification by sampling, which only holds if the server really
        samples at random and keeps the sample secret); False accounts every round as if
        sampled with probability 1.
    accept_central_dp: with a privacy budget, take part in central-DP rounds, whose noise
        the server adds after seeing the exact sum (it trusts the server).

    Every round:
    max_colluders also sizes the consistency quorum: shares are revealed only against a
        survivor set signed by more than (roster + max_colluders) / 2 members
        (secagg.protocol.consistency), and a threshold must exceed it.
    allowed_modes: the protection modes this client takes part in; a server announcing any
        other gets nothing (ModeDowngradeError). Callers may pass the modes' spellings
        ("secagg", ...); they are stored as AggregationMode. SecAgg only by default
        (secagg.modes.DEFAULT_ALLOWED_MODES): CKKS trusts the key holder not to collude with
        the server, plaintext shows the update to the server and is for benchmarks only.
    min_neighbours: the smallest neighbour-graph degree k this client accepts (k >= 2
        keeps the Harary graph connected).
    """

    min_cohort: int = 3
    min_threshold: int = 2
    max_dimension: int = MAX_DIMENSION
    max_colluders: int = 0
    trust_server_sampling: bool = False
    accept_central_dp: bool = False
    allowed_modes: frozenset[AggregationMode] = DEFAULT_ALLOWED_MODES
    min_neighbours: int = 2

    def __post_init__(self) -> None:
        if self.min_cohort < 2:
            raise ConfigError(f"min_cohort must be >= 2, got {self.min_cohort}")
        if self.min_threshold < 2:
            raise ConfigError(f"min_threshold must be >= 2, got {self.min_threshold}")
        if self.max_dimension < 1:
            raise ConfigError(f"max_dimension must be >= 1, got {self.max_dimension}")
        if (
            isinstance(self.max_colluders, bool)
            or not isinstance(self.max_colluders, int)
            or self.max_colluders < 0
        ):
            raise ConfigError(f"max_colluders must be an integer >= 0, got {self.max_colluders!r}")
        object.__setattr__(self, "allowed_modes", _allowed_modes(self.allowed_modes))
        if isinstance(self.min_neighbours, bool) or not isinstance(self.min_neighbours, int):
            raise ConfigError(f"min_neighbours must be an integer, got {self.min_neighbours!r}")
        if self.min_neighbours < 2:
            raise ConfigError(
                f"min_neighbours must be >= 2 (k = 1 pairs clients off into a disconnected "
                f"graph), got {self.min_neighbours}"
            )


def _allowed_modes(values: Iterable[object]) -> frozenset[AggregationMode]:
    """`values` (modes or their spellings) as a non-empty set of AggregationMode."""
    if isinstance(values, str):  # its characters are not modes
        raise ConfigError(
            f"allowed_modes must be a set of modes, e.g. {{{values!r}}}, got {values!r}"
        )
    modes = parse_modes(values)
    if not modes:
        choices = sorted(m.value for m in AggregationMode)
        raise ConfigError(f"allowed_modes must be a non-empty subset of {choices}, got []")
    return modes


def check_enrolment(
    roster: tuple[str, ...],
    client_id: str,
    identity: SigningIdentity,
    roster_identities: Mapping[str, VerifyingIdentity],
) -> None:
    """Refuse to act for a client that is not on the round's roster, signs with another
    identity than its enrolment, or whose peers lack enrolled identities to check."""
    if client_id not in roster:
        raise ConfigError(f"client {client_id!r} is not on this round's roster")
    missing = [cid for cid in roster if cid not in roster_identities]
    if missing:
        raise ConfigError(f"no enrolled identity for roster members {missing}")
    if roster_identities[client_id] != identity.verifying():
        raise ConfigError(f"the signing identity given does not match {client_id!r}'s enrolment")


def check_round_floors(config: RoundConfig, policy: ClientPolicy) -> None:
    """Refuse a round shaped below this client's own floors, before any key leaves.

    Why each floor: a small roster or threshold makes the sum close to one input; a
    degree below 2 (beyond two clients) splits the Harary graph into pairs; a threshold
    of at most `max_colluders` lets the colluders alone rebuild a neighbour's secrets;
    and in classic SecAgg (complete graph) 2t <= n + c is Bonawitz et al.'s bound below
    which the active-adversary argument fails, so it is refused outright.
    """
    n, t, c = config.size, config.threshold, policy.max_colluders
    if n < policy.min_cohort:
        raise CohortTooSmallError(
            f"round roster has {n} clients, below this client's minimum cohort {policy.min_cohort}"
        )
    k = config.min_survivors
    if k is not None and k < policy.min_cohort:
        raise CohortTooSmallError(
            f"round buffers K={k} clients, below this client's minimum cohort "
            f"{policy.min_cohort}: it could release a sum of only {k} updates"
        )
    if t < policy.min_threshold:
        raise CohortTooSmallError(
            f"round threshold {t} is below this client's minimum threshold {policy.min_threshold}"
        )
    if config.dimension > policy.max_dimension:
        raise ConfigError(
            f"round dimension {config.dimension} exceeds this client's limit {policy.max_dimension}"
        )
    degree = effective_degree(n, config.neighbours)
    if degree < min(policy.min_neighbours, n - 1):
        raise CohortTooSmallError(
            f"round neighbour degree k={degree} is below this client's floor "
            f"{policy.min_neighbours}: the neighbour graph would fall apart into small groups"
        )
    if t <= c:
        raise CohortTooSmallError(
            f"round threshold {t} does not exceed the {c} colluders this client assumes: they "
            "could rebuild its secrets on their own"
        )
    if degree == n - 1 and 2 * t <= n + c:
        raise CohortTooSmallError(
            f"classic SecAgg round (complete graph of {n}) with threshold {t}: with {c} assumed "
            f"colluders it needs 2t > n + c, i.e. t >= {(n + c) // 2 + 1}"
        )
