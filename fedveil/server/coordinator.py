"""Round lifecycle on the event loop: stages close on quorum or deadline, rounds in sequence.

Why it is separate from the servicer: the servicer only translates protobuf; this class
owns time. A stage closes as soon as every expected client has answered, or when its
deadline passes, whichever is first; clients long-poll on the close. All access to a
ServerRound goes through one asyncio lock, and the heavy unmask step runs in a worker
thread under that lock so the event loop keeps serving other calls. What a round of each
mode is comes from server.round_modes, the federation's noise and privacy account from
server.dp_policy: the coordinator never names a mode.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TypeVar

from fedveil.errors import (
    ConfigError,
    DuplicateSubmissionError,
    FedveilError,
)
from fedveil.proto.convert_plan import plan_to_pb
from fedveil.secagg.crypto.identity import VerifyingIdentity
from fedveil.secagg.dp.report import FederationAccountant
from fedveil.secagg.protocol.dp import RoundDP
from fedveil.secagg.protocol.model_chain import ModelChain
from fedveil.secagg.protocol.server import ServerRound
from fedveil.secagg.protocol.stages import ORDER, Stage
from fedveil.server.active_round import ActiveRound, AnyRound
from fedveil.server.downloads import ResultDownloads
from fedveil.server.dp_policy import FederationDP
from fedveil.server.errors import RoundFailedError, StageClosedError, UnknownRoundError
from fedveil.server.journal import RoundJournal
from fedveil.server.replay import encode_message, replay
from fedveil.server.roster import Roster
from fedveil.server.roster_watch import RosterWatch
from fedveil.server.round_modes import check_buffer, round_shape, rounds_for
from fedveil.server.settings import RoundSettings
from fedveil.server.status_events import FailureNote, RoundObserver
from fedveil.server.stored_results import keep_result
from fedveil.server.uploads import StreamedUploads

log = logging.getLogger(__name__)
T = TypeVar("T")


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
        # What an operator watches (server.metrics; a no-op without --metrics-port) and the
        # last failure `fedveil status` reports.
        self.observer = RoundObserver()
        self.last_failure: FailureNote | None = self._journalled_failure()
        self.lock = asyncio.Lock()
        self.rounds: OrderedDict[int, ActiveRound] = OrderedDict()
        self.current: ActiveRound | None = None
        self._next_round_id = journal.last_round_id() + 1
        self._opened = 0
        self._published = len(journal.round_specs("done"))  # results, before a restart too
        self._published_here = 0
        self.finished = asyncio.Event()
        self.downloads = ResultDownloads()
        self._background: set[asyncio.Task[None]] = set()
        _, threshold = round_shape(settings, len(self.roster))
        check_buffer(settings, len(self.roster))
        # The federation's DP policy: every round's noise, and what released rounds spent.
        self.dp = FederationDP(settings, cohort=len(self.roster), threshold=threshold)
        self.dp.restore(journal)
        self.mode_rounds = rounds_for(settings, journal, self.dp.round_dp)
        self.uploads = StreamedUploads(journal, self.lock)
        self._roster_watch: RosterWatch | None = None

    # --- the roster (revocation, re-enrolment) -----------------------------------------

    def follow_roster(
        self, load: Callable[[], Roster], on_change: Callable[[Roster], None]
    ) -> None:
        """Re-read the roster with `load` at every round open and hand it to `on_change`
        (the servicer's authorisation): a client revoked with `fedveil keys revoke` is
        refused from the next round on, and one re-enrolled takes part with its new
        certificate and identity."""
        self._roster_watch = RosterWatch(load, on_change)

    def _reload_roster(self, round_id: int) -> bool:
        """False (and nothing changed) when the roster cannot be used for the next round:
        the server then opens no more rounds, rather than keep a revoked client in."""
        if self._roster_watch is None:
            return True
        identities = self._roster_watch.reload(self.roster, round_id, self._check_roster)
        if identities is None:
            return False
        self.roster = identities
        return True

    def _check_roster(self, identities: dict[str, VerifyingIdentity], round_id: int) -> None:
        """A changed roster must still shape a valid round."""
        s = self.settings
        if len(identities) < s.min_cohort:
            raise ConfigError(
                f"the roster has {len(identities)} clients, below min_cohort {s.min_cohort}"
            )
        self.dp.check_cohort(len(identities))
        self.mode_rounds.check_roster(identities, round_id, self.chain.model_hash)

    @property
    def opened(self) -> int:
        """Rounds opened (or resumed) by this process."""
        return self._opened

    @property
    def published(self) -> int:
        """Results published over the journal's lifetime."""
        return self._published

    def _journalled_failure(self, lookback: int = 64) -> FailureNote | None:
        """The last failed round among the journal's most recent `lookback`, so a
        restarted server still tells its operator why (the stage is not journalled)."""
        last = self.journal.last_round_id()
        for round_id in range(last, max(0, last - lookback), -1):
            status = self.journal.round_status(round_id)
            if status is not None and status[0] == Stage.FAILED.value:
                return FailureNote(round_id, None, status[1] or "failed", "journal")
        return None

    def _note_failure(self, note: FailureNote) -> None:
        self.last_failure = note
        self.observer.round_ended(note.round_id, note)

    @property
    def round_dp(self) -> RoundDP | None:
        """Every round's DP terms (None without DP), calibrated when the server started."""
        return self.dp.round_dp

    @property
    def privacy(self) -> FederationAccountant:
        """The federation's privacy account over every released DP round."""
        return self.dp.accountant

    # --- rounds -----------------------------------------------------------------------

    def open_next_round(self) -> ActiveRound | None:
        """Open the next round unless the configured number of rounds has run."""
        if self._enough_rounds():
            self.current = None
            self.finished.set()
            return None
        round_id = self._next_round_id
        if not self._reload_roster(round_id):
            self.current = None
            self.finished.set()
            return None
        active = self.mode_rounds.open(round_id, self.roster, self.chain.model_hash)
        if self.settings.federation is not None:
            # Served for the parties to compare with what they hold; bound through the
            # model hash, whose chain each party roots in its own plan digest.
            active.spec.plan.CopyFrom(plan_to_pb(self.settings.federation.plan()))
        self.journal.begin_round(round_id, active.spec.SerializeToString())
        if active.noise_seed is not None:
            self.journal.record(round_id, "dp-noise-seed", "", active.noise_seed)
        self._keep(active)
        self._next_round_id += 1
        self._opened += 1
        self._arm_deadline(active)
        self.observer.round_opened(round_id)
        log.info("round %d open (%s): %s", round_id, self.settings.mode, active.spec.dimension)
        return active

    def _enough_rounds(self) -> bool:
        """Without a plan, `rounds` counts the rounds opened. A federation plan asks for
        `rounds` results: a round that failed (a party dropped out, a deadline passed) is
        tried again, up to as many failures as there are rounds, so that every party ends
        with the plan's number of aggregation steps."""
        rounds = self.settings.rounds
        if not rounds:
            return False
        if self.settings.federation is None:
            return self._opened >= rounds
        return self._published >= rounds or self._opened - self._published_here >= rounds

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
                self._note_failure(FailureNote(record.round_id, None, reason, "restart"))
                continue
            self._next_round_id = max(self._next_round_id, record.round_id + 1)
            if server.stage in (Stage.DONE, Stage.FAILED):
                privacy = None
                if self.dp.released(server):
                    assert isinstance(server, ServerRound)
                    # it may have been served before the crash
                    privacy = self.dp.account(server)
                if server.stage is Stage.DONE:
                    # Keep serving the result, and chain it: its survivors may hold it. A
                    # result journalled before the crash stays the one that is served.
                    finished = ActiveRound(server, spec, privacy=privacy)
                    for event in finished.closed.values():
                        event.set()
                    self._publish(finished, keep_result(self.journal, finished))
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
            if self._buffer_full(active):  # its K advertisements were journalled
                self._close_in_background(active, active.server.stage)
            self.observer.round_opened(record.round_id)
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
            active.check_stage(stage)
            if stage is Stage.ADVERTISE_KEYS and self._buffer_full(active):
                # The K-th advertisement's close is queued behind this lock: the buffer is
                # exactly K, not whoever else slips in before the close runs.
                raise StageClosedError(
                    f"round {round_id} already buffered {self.settings.buffer_size} clients; "
                    "this client is out of the round — join the next one"
                )
            result = action(active.server)
            if message is not None:
                self.journal.record(active.round_id, *encode_message(active.round_id, message))
            if active.server.stage is stage and (
                active.server.stage_complete() or self._buffer_full(active)
            ):
                self._close_in_background(active, stage)
            return active, result

    def _buffer_full(self, active: ActiveRound) -> bool:
        """Buffered rounds (round.buffer_size = K): the key-advertisement stage closes as
        soon as K clients have advertised, and the round runs among exactly those K.

        Why only that stage: the cohort is fixed once keys are shared (a client that
        arrives later gets StageClosedError, DEADLINE_EXCEEDED, "join the next one", and
        its next GetRound poll finds the next round); every later stage still waits for
        all of the K or its deadline, as any round does."""
        k = self.settings.buffer_size
        server = active.server
        return (
            k is not None
            and isinstance(server, ServerRound)
            and server.stage is Stage.ADVERTISE_KEYS
            and len(server.advertised) >= k
        )

    async def _close_stage(self, active: ActiveRound) -> None:
        """Close the round's current stage (lock held)."""
        server, stage = active.server, active.server.stage
        if active.deadline is not None and active.deadline is not asyncio.current_task():
            active.deadline.cancel()
        # Whom the stage heard from, before advancing moves on to the next stage's pool.
        answered = len(active.stage_expected - server.expected_senders())
        if stage is Stage.MASKED_INPUT:
            for client_id in sorted(server.uploads_in_flight()):
                self.uploads.roll_back(active, client_id)
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
        if self.dp.released(server):
            assert isinstance(server, ServerRound)
            try:
                active.privacy = await asyncio.to_thread(self.dp.account, server)
            except Exception:  # noqa: BLE001 - the result is still released, without a report
                log.exception("round %d: privacy accounting failed", active.round_id)
        self.journal.record(active.round_id, "advance", "", stage.value.encode())
        self.mode_rounds.after_advance(active, stage)
        seconds = asyncio.get_running_loop().time() - active.stage_opened_clock
        expected = len(active.stage_expected)
        self.observer.stage_closed(active.round_id, stage, seconds, answered, expected)
        if active.privacy is not None and server.stage is Stage.DONE:
            self.observer.privacy_spent(active.privacy.epsilon)
        if server.stage is Stage.DONE:
            # Before any client downloads it or the next round opens (whose model hash
            # chains it); the serialised result is cached for the downloads and journalled
            # for a party that fetches it later (server.stored_results).
            self._publish(active, await asyncio.to_thread(keep_result, self.journal, active))
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
            if server.stage is Stage.FAILED:
                failure = server.failure
                self._note_failure(
                    FailureNote(
                        active.round_id,
                        server.failed_at,
                        str(failure or "failed"),
                        type(failure).__name__ if failure is not None else "unknown",
                    )
                )
            else:
                self.observer.round_ended(active.round_id, None)
            if active is self.current:
                self.open_next_round()
        else:
            self._arm_deadline(active)

    def _publish(self, active: ActiveRound, digest: bytes) -> None:
        """Chain a released result into the model hash of the rounds after it.

        `digest` comes from server.stored_results.keep_result, which has journalled the
        result itself first: a round whose digest is chained can always be fetched.
        """
        self.journal.record_result_digest(active.round_id, digest)
        if self.chain.round_id is None or active.round_id > self.chain.round_id:
            self.chain.advance(active.round_id, digest)
            self._published += 1
            self._published_here += 1

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
        """The current stage opens now: its deadline, and what status and metrics read."""
        stage = active.server.stage
        loop = asyncio.get_running_loop()
        active.stage_opened_at, active.stage_opened_clock = time.time(), loop.time()
        active.stage_expected = frozenset(active.server.expected_senders())
        active.deadline = loop.create_task(self._deadline(active, stage))

    async def _deadline(self, active: ActiveRound, stage: Stage) -> None:
        await asyncio.sleep(self.settings.stage_timeout_s)
        async with self.lock:
            if active.server.stage is stage:
                log.info("round %d: stage %s deadline passed", active.round_id, stage.value)
                await self._close_stage(active)

    async def drain(self, timeout_s: float) -> None:
        """After the last round, keep serving until every survivor has fetched its result
        (or `timeout_s` passes), so `--rounds R` does not cut clients off."""
        await self.downloads.drain(self.rounds, timeout_s)

    async def shutdown(self) -> None:
        """Stop the deadlines and let stage closes already under way finish (they write
        the journal, which the caller closes next)."""
        for active in self.rounds.values():
            if active.deadline is not None:
                active.deadline.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
