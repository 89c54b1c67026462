"""What a round of each aggregation mode is, as the server opens it.

Why apart from the coordinator: the coordinator owns time (stages close on quorum or
deadline, rounds follow one another); what a round *is* (its config, its published spec,
its state machine, and what must be kept once a stage closes) depends on the mode. Each
mode here builds its round from the settings, the round's roster and the model hash the
round is about; the coordinator calls `open` and never names a mode.

Why a table (ROUND_FACTORIES) keyed by AggregationMode: adding a mode is its definition
in secagg.modes plus one row here (and one in the client's clients.mode_driver.DRIVERS);
a test (tests/secagg/test_modes.py) checks that no mode lacks its row.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Protocol

from fedveil.errors import ConfigError
from fedveil.proto.convert import config_to_spec
from fedveil.proto.convert_ckks import ckks_config_to_spec
from fedveil.secagg.ckks.config import CkksRoundConfig
from fedveil.secagg.ckks.keys import key_epoch
from fedveil.secagg.ckks.server_round import CkksServerRound
from fedveil.secagg.crypto.identity import VerifyingIdentity
from fedveil.secagg.crypto.prg import SEED_BYTES
from fedveil.secagg.modes import AggregationMode, parse_mode
from fedveil.secagg.protocol.config import RoundConfig
from fedveil.secagg.protocol.consistency import consistency_quorum
from fedveil.secagg.protocol.dp import RoundDP
from fedveil.secagg.protocol.graph import default_neighbours, default_threshold, effective_degree
from fedveil.secagg.protocol.server import ServerRound
from fedveil.secagg.protocol.stages import Stage
from fedveil.secagg.protocol.upload import aligned_chunk_bytes
from fedveil.secagg.quantize import QuantizationConfig
from fedveil.server.active_round import ActiveRound
from fedveil.server.journal import RoundJournal
from fedveil.server.plaintext import PlaintextRound, plaintext_spec
from fedveil.server.settings import RoundSettings

Roster = Mapping[str, VerifyingIdentity]


def round_shape(settings: RoundSettings, cohort: int) -> tuple[int, int]:
    """The neighbour degree k and the threshold t of a SecAgg round of `cohort` clients."""
    k = settings.neighbours if settings.neighbours is not None else default_neighbours(cohort)
    t = settings.threshold if settings.threshold is not None else default_threshold(cohort, k)
    return k, t


def round_floor(settings: RoundSettings) -> int:
    """The fewest survivors a round may release: min_cohort, or a buffered round's K.

    Why K is published as the spec's min_cohort: every client already holds the result to
    at least that many survivors (clients.secagg_driver.secagg_limits), and a buffer of K
    is exactly a round whose cohort is the first K to arrive."""
    return settings.buffer_size or settings.min_cohort


def check_buffer(settings: RoundSettings, cohort: int) -> None:
    """Refuse a buffer size that cannot shape a round of this roster (one ConfigError line).

    Why each bound: K above the roster never fills; K below the threshold t or below the
    consistency quorum (a survivor set must be signed by more than half the roster,
    secagg.protocol.consistency) fails every round closed; and a sparse neighbour graph
    leaves some of the K without t neighbours among the other K, so their masks could not
    be removed: a buffer needs the complete graph (the default up to 8 clients)."""
    k = settings.buffer_size
    if k is None:
        return
    if k > cohort:
        raise ConfigError(
            f"round.buffer_size = {k} exceeds the roster's {cohort} clients: the buffer "
            "would never fill"
        )
    degree, t = round_shape(settings, cohort)
    if effective_degree(cohort, degree) < cohort - 1:
        raise ConfigError(
            f"round.buffer_size needs the complete neighbour graph (neighbours = "
            f"{cohort - 1} for {cohort} clients), got neighbours = {degree}: in a sparse "
            "graph some of the K buffered clients may lack t neighbours among the others"
        )
    quorum = consistency_quorum(cohort)
    if k < max(t, quorum):
        raise ConfigError(
            f"round.buffer_size = {k} is below what a round of {cohort} clients needs: "
            f"threshold t = {t} and a survivor set signed by more than half the roster "
            f"({quorum}); raise buffer_size to at least {max(t, quorum)}"
        )


class ModeRounds(Protocol):
    """The rounds of one aggregation mode."""

    def open(self, round_id: int, roster: Roster, model_hash: bytes) -> ActiveRound:
        """A new round of the mode over `roster`, about the model `model_hash`."""
        ...

    def check_roster(self, roster: Roster, round_id: int, model_hash: bytes) -> None:
        """Raise ConfigError when a changed roster no longer shapes a valid round."""
        ...

    def after_advance(self, active: ActiveRound, closed: Stage) -> None:
        """Keep what must outlive the stage `closed` just advanced from (lock held)."""
        ...


class SecAggRounds:
    """SecAgg+ rounds: pairwise masks over a k-regular graph, unmasked at threshold t."""

    def __init__(self, settings: RoundSettings, dp: RoundDP | None) -> None:
        self.settings = settings
        self.dp = dp

    def config(self, round_id: int, ids: tuple[str, ...], model_hash: bytes) -> RoundConfig:
        """The round's config over the sorted client ids `ids` (refuses a bad shape)."""
        s = self.settings
        k, t = round_shape(s, len(ids))
        quantization = (
            self.dp.config.quantization
            if self.dp is not None
            else QuantizationConfig(
                clip=s.clip, bits=s.bits, max_cohort=len(ids), max_weight=s.max_weight
            )
        )
        return RoundConfig(
            round_id=round_id,
            roster=ids,
            threshold=t,
            neighbours=k,
            dimension=s.dimension,
            quantization=quantization,
            model_hash=model_hash,
            dp=self.dp,
            min_survivors=s.buffer_size,
        )

    def open(self, round_id: int, roster: Roster, model_hash: bytes) -> ActiveRound:
        config = self.config(round_id, tuple(sorted(roster)), model_hash)
        chunk = aligned_chunk_bytes(config.quantization.bits, self.settings.chunk_bytes)
        spec = config_to_spec(
            config,
            min_cohort=round_floor(self.settings),
            chunk_bytes=chunk,
            stage_timeout_s=self.settings.stage_timeout_s,
        )
        central = config.dp is not None and config.dp.central
        seed = os.urandom(SEED_BYTES) if central else None
        server = ServerRound(
            config,
            roster,
            chunk_bytes=chunk,
            quorum=round_floor(self.settings),
            noise_seed=seed,
        )
        return ActiveRound(server, spec, noise_seed=seed)

    def check_roster(self, roster: Roster, round_id: int, model_hash: bytes) -> None:
        self.config(round_id, tuple(sorted(roster)), model_hash)  # the threshold and degree fit
        check_buffer(self.settings, len(roster))

    def after_advance(self, active: ActiveRound, closed: Stage) -> None:
        return None


class PlaintextRounds:
    """The unprotected baseline: the server sums the updates it sees in the clear."""

    def __init__(self, settings: RoundSettings) -> None:
        self.settings = settings

    def open(self, round_id: int, roster: Roster, model_hash: bytes) -> ActiveRound:
        s = self.settings
        spec = plaintext_spec(round_id, tuple(sorted(roster)), s, model_hash)
        server = PlaintextRound(
            round_id,
            spec.roster,
            s.dimension,
            quorum=spec.threshold,
            max_weight=s.max_weight,
            chunk_bytes=spec.chunk_bytes,
            clip=s.clip,
        )
        return ActiveRound(server, spec)

    def check_roster(self, roster: Roster, round_id: int, model_hash: bytes) -> None:
        return None

    def after_advance(self, active: ActiveRound, closed: Stage) -> None:
        return None


class CkksRounds:
    """CKKS rounds; the first of each key epoch distributes a fresh secret context, whose
    public part the journal keeps for the epoch's later rounds and across restarts."""

    def __init__(self, settings: RoundSettings, journal: RoundJournal) -> None:
        self.settings = settings
        self.journal = journal

    def open(self, round_id: int, roster: Roster, model_hash: bytes) -> ActiveRound:
        s = self.settings
        ids = tuple(sorted(roster))
        epoch = key_epoch(round_id, s.ckks_rotate_every)
        keys = self.journal.epoch_keys(epoch)
        config = CkksRoundConfig(
            round_id=round_id,
            roster=ids,
            dimension=s.dimension,
            preset_name=s.ckks_preset,
            key_epoch=epoch,
            key_holder=s.ckks_key_holder or ids[0],
            max_weight=s.max_weight,
            value_bound=s.clip,
            min_cohort=s.min_cohort,
            model_hash=model_hash,
            key_fingerprint=keys.fingerprint if keys else b"",
        )
        spec = ckks_config_to_spec(
            config,
            chunk_bytes=s.chunk_bytes,
            stage_timeout_s=s.stage_timeout_s,
            rotate_every=s.ckks_rotate_every,
        )
        return ActiveRound(CkksServerRound(config, roster, keys), spec)

    def check_roster(self, roster: Roster, round_id: int, model_hash: bytes) -> None:
        return None

    def after_advance(self, active: ActiveRound, closed: Stage) -> None:
        server = active.server
        if (
            isinstance(server, CkksServerRound)
            and closed is Stage.SHARE_KEYS
            and server.stage is Stage.MASKED_INPUT
            and server.epoch is not None
        ):
            self.journal.save_epoch_keys(server.epoch)


# The rounds of one mode, built from the settings, the journal (CKKS keeps its epoch keys
# there) and the round's DP terms (SecAgg only; validated by the settings).
RoundFactory = Callable[[RoundSettings, RoundJournal, RoundDP | None], ModeRounds]

ROUND_FACTORIES: Mapping[AggregationMode, RoundFactory] = MappingProxyType(
    {
        AggregationMode.SECAGG: lambda settings, journal, dp: SecAggRounds(settings, dp),
        AggregationMode.CKKS: lambda settings, journal, dp: CkksRounds(settings, journal),
        AggregationMode.PLAINTEXT: lambda settings, journal, dp: PlaintextRounds(settings),
    }
)


def rounds_for(settings: RoundSettings, journal: RoundJournal, dp: RoundDP | None) -> ModeRounds:
    """The rounds of the mode the settings name (ConfigError naming the modes otherwise)."""
    return ROUND_FACTORIES[parse_mode(settings.mode, "round.mode")](settings, journal, dp)
