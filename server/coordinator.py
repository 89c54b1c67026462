"""Round lifecycle on the event loop: stages close on quorum or deadline, rounds in sequence.

Why it is separate from the servicer: the servicer only translates protobuf; this class
owns time. A stage closes as soon as every expected client has answered, or when its
deadline passes, whichever is first; clients long-poll on the close. All access to a
ServerRound goes through one asyncio lock, and the heavy unmask step runs in a worker
thread under that lock so the event loop keeps serving other calls.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from proto import aggregation_pb2 as pb
from proto.convert import config_to_spec, dp_from_spec
from proto.convert_ckks import ckks_config_to_spec
from secagg.ckks.config import CkksRoundConfig
from secagg.ckks.keys import key_epoch
from secagg.ckks.messages import CkksResult
from secagg.ckks.server_round import CkksServerRound
from secagg.crypto.identity import VerifyingIdentity
from secagg.crypto.prg import SEED_BYTES
from secagg.dp.accounting import calibrate_noise_multiplier
from secagg.dp.config import ClientDPConfig, Mechanism, NoisePlacement
from secagg.dp.report import FederationAccountant, RoundPrivacyReport
from secagg.errors import (
    ConfigError,
    DuplicateSubmissionError,
    FedveilError,
    InvalidMessageError,
    StageError,
)
from secagg.protocol.config import RoundConfig
from secagg.protocol.dp import RoundDP
from secagg.protocol.graph import default_neighbours, default_threshold
from secagg.protocol.model_chain import ModelChain, result_digest
from secagg.protocol.server import ServerRound
from secagg.protocol.stages import ORDER, Stage
from secagg.protocol.upload import aligned_chunk_bytes
from secagg.quantize import QuantizationConfig
from server.errors import RoundFailedError, StageClosedError, UnknownRoundError
from server.journal import RoundJournal
from server.plaintext import PlaintextRound, plaintext_spec
from server.replay import encode_message, replay
from server.roster import Roster
from server.settings import RoundSettings

log = logging.getLogger(__name__)
T = TypeVar("T")


AnyRound = ServerRound | PlaintextRound | CkksServerRound


@dataclass
class ActiveRound:
    """One round and the events its waiting clients sleep on."""

    server: AnyRound
    spec: pb.RoundSpec
    closed: dict[Stage, asyncio.Event] = field(
        default_factory=lambda: {stage: asyncio.Event() for stage in ORDER}
    )
    deadline: asyncio.Task[None] | None = None
    result_pieces: list[bytes] | None = None
    result_digest: bytes = b""
    noise_seed: bytes | None = None  # central DP: keys the server's noise (journalled)
    privacy: RoundPrivacyReport | None = None  # DP rounds, once the result is released

    def serialised_result(self, chunk_bytes: int) -> tuple[list[bytes], bytes]:
        """The result as download chunks and the SHA-256 of their concatenation.

        SecAgg and plaintext: the float64 weighted mean cut into `chunk_bytes` pieces;
        CKKS: the summed ciphertexts, one per piece. Computed once per round, so n
        concurrent downloads share one copy instead of holding n.
        """
        if self.result_pieces is None:
            result = self.server.result
            assert result is not None
            if isinstance(result, CkksResult):
                pieces = list(result.ciphertexts)
            else:
                data = np.ascontiguousarray(result.estimate.weighted_mean, dtype="<f8").tobytes()
                view = memoryview(data)
                count = max(1, -(-len(data) // chunk_bytes))
                pieces = [
                    bytes(view[i * chunk_bytes : (i + 1) * chunk_bytes]) for i in range(count)
                ]
            digest = hashlib.sha256()
            for piece in pieces:
                digest.update(piece)
            self.result_pieces, self.result_digest = pieces, digest.digest()
        return self.result_pieces, self.result_digest

    def published_digest(self) -> bytes:
        """The digest of the result as every client downloads it (the header's round id,
        mode, survivors, total weight and error bound, and the SHA-256 of the chunks):
        the next round's model hash chains it (secagg.protocol.model_chain)."""
        result = self.server.result
        assert result is not None
        _, payload = self.serialised_result(int(self.spec.chunk_bytes))
        weight, bound = 0, 0.0
        if not isinstance(result, CkksResult):
            weight, bound = int(result.estimate.total_weight), float(result.estimate.error_bound)
        return result_digest(
            round_id=self.round_id,
            mode=pb.AggregationMode.Name(self.spec.mode).removeprefix("AGGREGATION_MODE_").lower(),
            survivors=result.survivors,
            total_weight=weight,
            error_bound=bound,
            payload_sha256=payload,
        )

    @property
    def round_id(self) -> int:
        return int(self.spec.round_id)


class RoundCoordinator:
    """Opens rounds one after another and closes their stages on time."""

    def __init__(
        self,
        settings: RoundSettings,
        roster: Mapping[str, VerifyingIdentity],
        journal: RoundJournal,
    ) -> None:
        if len(roster) < settings.min_cohort:
            raise FedveilError(
                f"the roster has {len(roster)} clients, below min_cohort {settings.min_cohort}"
            )
        if settings.model_hash is None:
            raise ConfigError(
                "round.model_hash is required: the SHA-256 of the base model every client "
                "holds (each round's model hash chains it with the previous result)"
            )
        self.settings = settings
        self.roster = dict(roster)
        self.journal = journal
        last = journal.last_result_digest()
        # The model every client should hold at the next round: the base model plus every
        # result this server published (secagg.protocol.model_chain).
        self.chain = ModelChain(
            settings.model_hash,
            result_digest=last[1] if last else None,
            round_id=last[0] if last else None,
        )
        self.failed_rounds: dict[int, str] = {}
        self.lock = asyncio.Lock()
        self.rounds: OrderedDict[int, ActiveRound] = OrderedDict()
        self.current: ActiveRound | None = None
        self._next_round_id = journal.last_round_id() + 1
        self._opened = 0
        self.finished = asyncio.Event()
        self.downloads: dict[int, set[str]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.round_dp = self._build_dp()
        self.privacy = FederationAccountant(settings.dp_accountant)
        self._restore_privacy()
        self._roster_source: tuple[Callable[[], Roster], Callable[[Roster], None]] | None = None

    # --- the roster (revocation, re-enrolment) -----------------------------------------

    def follow_roster(
        self, load: Callable[[], Roster], on_change: Callable[[Roster], None]
    ) -> None:
        """Re-read the roster with `load` at every round open and hand it to `on_change`
        (the servicer's authorisation): a client revoked with `fedveil keys revoke` is
        refused from the next round on, and one re-enrolled takes part with its new
        certificate and identity."""
        self._roster_source = (load, on_change)

    def _reload_roster(self, round_id: int) -> bool:
        """False (and nothing changed) when the roster cannot be used for the next round:
        the server then opens no more rounds, rather than keep a revoked client in."""
        if self._roster_source is None:
            return True
        load, on_change = self._roster_source
        previous = self.roster
        try:
            roster = load()
            identities = roster.identities()
            if identities != previous:
                self._check_roster(identities, round_id)
        except (ConfigError, OSError) as exc:
            self.roster = previous
            log.error(
                "round %d not opened, no further rounds: the roster cannot be used (%s); "
                "fix it and restart the server",
                round_id,
                exc,
            )
            return False
        if identities != previous:
            removed = sorted(set(previous) - set(identities))
            rekeyed = sorted(
                c for c in identities if c in previous and identities[c] != previous[c]
            )
            added = sorted(set(identities) - set(previous))
            log.info(
                "roster changed before round %d: removed %s, re-keyed %s, added %s",
                round_id,
                removed,
                rekeyed,
                added,
            )
        self.roster = identities
        on_change(roster)
        return True

    def _check_roster(self, identities: dict[str, VerifyingIdentity], round_id: int) -> None:
        """A changed roster must still shape a valid round (sets self.roster on success)."""
        s = self.settings
        if len(identities) < s.min_cohort:
            raise ConfigError(
                f"the roster has {len(identities)} clients, below min_cohort {s.min_cohort}"
            )
        if self.round_dp is not None and len(identities) > self.round_dp.config.max_cohort:
            raise ConfigError(
                f"the roster grew to {len(identities)} clients, past the "
                f"{self.round_dp.config.max_cohort} the DP noise was calibrated for"
            )
        self.roster = identities
        if s.mode == "secagg":
            self._round_config(round_id)  # the threshold and degree still fit

    # --- differential privacy -----------------------------------------------------------

    def _shape(self) -> tuple[tuple[str, ...], int, int]:
        """The roster, the neighbour degree k and the threshold t of every round."""
        s = self.settings
        ids = tuple(sorted(self.roster))
        n = len(ids)
        k = s.neighbours if s.neighbours is not None else default_neighbours(n)
        t = s.threshold if s.threshold is not None else default_threshold(n, k)
        return ids, k, t

    def _build_dp(self) -> RoundDP | None:
        """Every round's DP terms, the noise multiplier calibrated here if not given."""
        s = self.settings
        if s.dp == "none":
            return None
        ids, _, t = self._shape()

        def config_for(z: float) -> ClientDPConfig:
            return ClientDPConfig(
                clip_norm=s.dp_clip_norm,
                noise_multiplier=z,
                min_clients=s.dp_min_clients or t,
                max_cohort=len(ids),
                dim=s.dimension,
                bits=s.bits,
                mechanism=Mechanism(s.dp_mechanism),
                placement=NoisePlacement.SERVER if s.dp == "central" else NoisePlacement.CLIENTS,
                rotate=s.dp_rotate,
            )

        if s.dp_noise_multiplier is not None:
            z = s.dp_noise_multiplier
        else:
            assert s.dp_target_epsilon is not None
            rounds = s.dp_planned_rounds
            z = calibrate_noise_multiplier(
                lambda z: config_for(z).events(s.dp_sampling_prob, steps=rounds),
                s.dp_target_epsilon,
                s.dp_delta,
                method=s.dp_accountant,
            )
            log.info(
                "dp: noise multiplier %.4g spends epsilon <= %g at delta %g over %d rounds",
                z,
                s.dp_target_epsilon,
                s.dp_delta,
                rounds,
            )
        return RoundDP(
            config_for(z),
            sampling_prob=s.dp_sampling_prob,
            delta=s.dp_delta,
            planned_rounds=s.dp_planned_rounds,
            target_epsilon=s.dp_target_epsilon or 0.0,
        )

    def _restore_privacy(self) -> None:
        """Compose the DP rounds this federation released before a restart."""
        for spec_bytes in self.journal.round_specs("done"):
            spec = pb.RoundSpec.FromString(spec_bytes)
            if spec.mode != pb.AGGREGATION_MODE_SECAGG:
                continue
            dp = dp_from_spec(spec)
            if dp is not None:
                self.privacy.restore(dp.events())

    def _account(self, server: ServerRound) -> RoundPrivacyReport:
        """The privacy report of a released DP round (composes it into the federation's)."""
        dp, result = server.config.dp, server.result
        assert dp is not None and result is not None and result.dp is not None
        return self.privacy.record(
            dp.config,
            dp.events(),
            delta=dp.delta,
            sampling_prob=dp.sampling_prob,
            noise_std=result.dp.noise_std,
            contributors=result.dp.contributors,
        )

    # --- rounds -----------------------------------------------------------------------

    def _round_config(self, round_id: int) -> RoundConfig:
        s = self.settings
        ids, k, t = self._shape()
        dp = self.round_dp
        quantization = (
            dp.config.quantization
            if dp is not None
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
            model_hash=self.chain.model_hash,
            dp=dp,
        )

    def open_next_round(self) -> ActiveRound | None:
        """Open the next round unless the configured number of rounds has run."""
        if self.settings.rounds and self._opened >= self.settings.rounds:
            self.current = None
            self.finished.set()
            return None
        round_id = self._next_round_id
        if not self._reload_roster(round_id):
            self.current = None
            self.finished.set()
            return None
        opener = {
            "plaintext": self._plaintext_round,
            "ckks": self._ckks_round,
            "secagg": self._secagg_round,
        }[self.settings.mode]
        active = opener(round_id)
        self.journal.begin_round(round_id, active.spec.SerializeToString())
        if active.noise_seed is not None:
            self.journal.record(round_id, "dp-noise-seed", "", active.noise_seed)
        self._keep(active)
        self._next_round_id += 1
        self._opened += 1
        self._arm_deadline(active)
        log.info("round %d open (%s): %s", round_id, self.settings.mode, active.spec.dimension)
        return active

    def _secagg_round(self, round_id: int) -> ActiveRound:
        config = self._round_config(round_id)
        chunk = aligned_chunk_bytes(config.quantization.bits, self.settings.chunk_bytes)
        spec = config_to_spec(
            config,
            min_cohort=self.settings.min_cohort,
            chunk_bytes=chunk,
            stage_timeout_s=self.settings.stage_timeout_s,
        )
        central = config.dp is not None and config.dp.central
        seed = os.urandom(SEED_BYTES) if central else None
        server = ServerRound(
            config,
            self.roster,
            chunk_bytes=chunk,
            quorum=self.settings.min_cohort,
            noise_seed=seed,
        )
        return ActiveRound(server, spec, noise_seed=seed)

    def _plaintext_round(self, round_id: int) -> ActiveRound:
        s = self.settings
        spec = plaintext_spec(round_id, tuple(sorted(self.roster)), s, self.chain.model_hash)
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

    def _ckks_round(self, round_id: int) -> ActiveRound:
        """A CKKS round; the first of each key epoch distributes a fresh secret context."""
        s = self.settings
        ids = tuple(sorted(self.roster))
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
            model_hash=self.chain.model_hash,
            key_fingerprint=keys.fingerprint if keys else b"",
        )
        spec = ckks_config_to_spec(
            config,
            chunk_bytes=s.chunk_bytes,
            stage_timeout_s=s.stage_timeout_s,
            rotate_every=s.ckks_rotate_every,
        )
        return ActiveRound(CkksServerRound(config, self.roster, keys), spec)

    def _keep(self, active: ActiveRound) -> None:
        self.rounds[active.round_id] = active
        while len(self.rounds) > self.settings.keep_results:
            self.rounds.popitem(last=False)
        self.current = active

    def recover(self) -> ActiveRound | None:
        """Resume the round a killed server left open, or fail it explicitly.

        Returns the resumed round (now current), or None when nothing could be resumed;
        the caller then opens the next round.
        """
        for record in self.journal.open_rounds():
            try:
                server, spec = replay(self.journal, record, self.roster)
            except Exception as exc:  # noqa: BLE001 - any replay failure fails the round closed
                reason = f"server restarted and could not resume round {record.round_id}: {exc}"
                log.error(reason)
                self.journal.end_round(record.round_id, "failed", reason)
                self.failed_rounds[record.round_id] = reason
                continue
            self._next_round_id = max(self._next_round_id, record.round_id + 1)
            if server.stage in (Stage.DONE, Stage.FAILED):
                if self._released_dp(server):
                    assert isinstance(server, ServerRound)
                    self._account(server)  # it may have been served before the crash
                if server.stage is Stage.DONE:
                    # Keep serving the result, and chain it: its survivors may hold it.
                    finished = ActiveRound(server, spec)
                    for event in finished.closed.values():
                        event.set()
                    self._publish(finished, finished.published_digest())
                    self.rounds[finished.round_id] = finished
                self.journal.end_round(
                    record.round_id, server.stage.value, str(server.failure or "")
                )
                continue
            active = ActiveRound(server, spec)
            for stage in ORDER[: ORDER.index(server.stage)]:
                active.closed[stage].set()
            self._keep(active)
            self._opened += 1
            self._arm_deadline(active)
            log.warning(
                "round %d resumed after restart at stage %s", record.round_id, server.stage.value
            )
            return active
        return None

    def get(self, round_id: int) -> ActiveRound:
        if round_id in self.failed_rounds:
            raise RoundFailedError(self.failed_rounds[round_id])
        try:
            return self.rounds[round_id]
        except KeyError:
            current = self.current.round_id if self.current else None
            raise UnknownRoundError(
                f"round {round_id} is unknown to this server; the open round is {current} "
                "(call GetRound)"
            ) from None

    # --- stages -----------------------------------------------------------------------

    @staticmethod
    def check_stage(active: ActiveRound, stage: Stage) -> None:
        """Raise the specific error for a message that does not fit the round's stage."""
        current = active.server.stage
        if current is stage:
            return
        if current is Stage.FAILED:
            raise RoundFailedError(f"round {active.round_id} failed: {active.server.failure}")
        if ORDER.index(current) > ORDER.index(stage):
            raise StageClosedError(
                f"stage {stage.value} of round {active.round_id} is closed (the round is at "
                f"{current.value}); this client is out of the round — join the next one"
            )
        raise StageError(
            f"round {active.round_id} is at stage {current.value}; {stage.value} is not open yet"
        )

    async def submit(
        self,
        round_id: int,
        stage: Stage,
        action: Callable[[AnyRound], T],
        *,
        message: object = None,
    ) -> tuple[ActiveRound, T | None]:
        """Apply one validated client action in `stage`; close the stage if all answered.

        An exact resend of an accepted `message` (a client whose long poll broke) is not
        applied again; it rejoins the wait, also just after its stage closed.
        """
        async with self.lock:
            active = self.get(round_id)
            if message is not None and active.server.is_resend(message):
                current = active.server.stage
                if current is stage or (
                    current in ORDER and ORDER.index(current) == ORDER.index(stage) + 1
                ):
                    return active, None
            if message is not None and active.server.already_submitted(message):
                raise DuplicateSubmissionError(
                    f"{getattr(message, 'client_id', '?')!r} already sent a different "
                    f"{type(message).__name__} in round {round_id}; only an exact resend is "
                    "accepted"
                )
            self.check_stage(active, stage)
            result = action(active.server)
            if message is not None:
                self.journal.record(active.round_id, *encode_message(active.round_id, message))
            if active.server.stage is stage and not active.server.expected_senders():
                self._close_in_background(active, stage)
            return active, result

    async def wait_closed(self, active: ActiveRound, stage: Stage) -> None:
        """Sleep until `stage` closes; raise if the round failed."""
        await active.closed[stage].wait()
        if active.server.stage is Stage.FAILED:
            raise RoundFailedError(
                f"round {active.round_id} failed at stage "
                f"{active.server.failed_at.value if active.server.failed_at else '?'}: "
                f"{active.server.failure}"
            )

    async def _close_stage(self, active: ActiveRound) -> None:
        """Close the round's current stage (lock held)."""
        server, stage = active.server, active.server.stage
        if active.deadline is not None and active.deadline is not asyncio.current_task():
            active.deadline.cancel()
        if stage is Stage.MASKED_INPUT:
            for client_id in sorted(server.uploads_in_flight()):
                self.roll_back_upload(active, client_id)
                log.info(
                    "round %d: rolled back unfinished upload of %s", active.round_id, client_id
                )
        try:
            if stage is Stage.UNMASK:
                await asyncio.to_thread(server.advance)
            else:
                server.advance()
        except FedveilError as exc:
            log.warning("round %d failed at %s: %s", active.round_id, stage.value, exc)
        if self._released_dp(server):
            assert isinstance(server, ServerRound)
            try:
                active.privacy = await asyncio.to_thread(self._account, server)
            except Exception:  # noqa: BLE001 - the result is still released, without a report
                log.exception("round %d: privacy accounting failed", active.round_id)
        self.journal.record(active.round_id, "advance", "", stage.value.encode())
        if (
            isinstance(server, CkksServerRound)
            and stage is Stage.SHARE_KEYS
            and server.stage is Stage.MASKED_INPUT
            and server.epoch is not None
        ):
            self.journal.save_epoch_keys(server.epoch)
        if server.stage is Stage.DONE:
            # Before any client downloads it or the next round opens (whose model hash
            # chains it); the serialised result is cached for the downloads.
            self._publish(active, await asyncio.to_thread(active.published_digest))
        active.closed[stage].set()
        if server.stage in (Stage.DONE, Stage.FAILED):
            for event in active.closed.values():
                event.set()
            # Dropping a round's chunks can take a second at d = 4e6; not on the event loop.
            await asyncio.to_thread(
                self.journal.end_round,
                active.round_id,
                server.stage.value,
                str(server.failure or ""),
            )
            log.info("round %d %s", active.round_id, server.stage.value)
            if active is self.current:
                self.open_next_round()
        else:
            self._arm_deadline(active)

    def _publish(self, active: ActiveRound, digest: bytes) -> None:
        """Chain a released result into the model hash of the rounds after it."""
        self.journal.record_result_digest(active.round_id, digest)
        if self.chain.round_id is None or active.round_id > self.chain.round_id:
            self.chain.advance(active.round_id, digest)

    @staticmethod
    def _released_dp(server: AnyRound) -> bool:
        return (
            isinstance(server, ServerRound)
            and server.stage is Stage.DONE
            and server.config.dp is not None
        )

    def roll_back_upload(self, active: ActiveRound, client_id: str) -> None:
        """Subtract an unfinished upload from the sum and erase it from the journal (lock held)."""
        chunks = list(self.journal.chunks(active.round_id, client_id))
        active.server.abort_masked_input(client_id, chunks)
        self.journal.forget_upload(active.round_id, client_id)

    def finish_if_last(
        self,
        active: ActiveRound,
        client_id: str,
        digest: bytes,
        finish: Callable[[str, bytes], None],
    ) -> bool:
        """After a chunk (lock held): on the last one, which carries the digest, close the
        upload and journal it, or roll it back whole; True once the upload is complete."""
        if not digest:
            return False
        try:
            finish(client_id, digest)
        except InvalidMessageError as exc:
            self.roll_back_upload(active, client_id)
            raise InvalidMessageError(
                f"{exc}; the upload was discarded: re-send it from chunk 0"
            ) from exc
        self.journal.record(active.round_id, "finish", client_id, digest)
        return True

    async def rejoin_complete_upload(self, active: ActiveRound, client_id: str) -> bool:
        """The "already complete" marker: a client whose stream broke after its last chunk
        (or after a server restart) only rejoins the wait, like a resend."""
        async with self.lock:
            if client_id in active.server.uploaded:
                return True
        raise InvalidMessageError("the upload is not complete: resume from GetUploadStatus")

    def _close_in_background(self, active: ActiveRound, stage: Stage) -> None:
        """Close `stage` in a task of its own, not in the RPC handler of the last sender.

        If that client disconnects, gRPC cancels its handler; a close running inside it
        would stop half-way and leave every other client waiting forever.
        """
        task = asyncio.get_running_loop().create_task(self._close_if_still(active, stage))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _close_if_still(self, active: ActiveRound, stage: Stage) -> None:
        async with self.lock:
            if active.server.stage is stage:
                await self._close_stage(active)

    def _arm_deadline(self, active: ActiveRound) -> None:
        stage = active.server.stage
        active.deadline = asyncio.get_running_loop().create_task(self._deadline(active, stage))

    async def _deadline(self, active: ActiveRound, stage: Stage) -> None:
        await asyncio.sleep(self.settings.stage_timeout_s)
        async with self.lock:
            if active.server.stage is stage:
                log.info("round %d: stage %s deadline passed", active.round_id, stage.value)
                await self._close_stage(active)

    def record_download(self, round_id: int, client_id: str) -> None:
        self.downloads.setdefault(round_id, set()).add(client_id)

    async def drain(self, timeout_s: float, poll_s: float = 0.05) -> None:
        """After the last round, keep serving until every survivor has fetched its result
        (or `timeout_s` passes), so `--rounds R` does not cut clients off."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            pending = [
                rid
                for rid, active in self.rounds.items()
                if active.server.result is not None
                and not set(active.server.result.survivors) <= self.downloads.get(rid, set())
            ]
            if not pending:
                return
            await asyncio.sleep(poll_s)

    async def shutdown(self) -> None:
        """Stop the deadlines and let stage closes already under way finish (they write
        the journal, which the caller closes next)."""
        for active in self.rounds.values():
            if active.deadline is not None:
                active.deadline.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
