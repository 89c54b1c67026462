"""The server's side of one CKKS round: relay keys, add ciphertexts, never decrypt.

Stages: a round that starts a key epoch runs ADVERTISE_KEYS (clients' signed X25519
keys) -> SHARE_KEYS (the key holder publishes the public context and the sealed secret
context) -> MASKED_INPUT (ciphertext uploads) -> DONE; later rounds of the epoch start at
MASKED_INPUT. There is nothing to recover after a dropout: the sum simply holds the
uploads that finished, so a stage closes when everyone expected answered or its
deadline passed, and the round succeeds with at least `min_cohort` uploads.

The object holds only public material; its duck-typed interface (stage, advance,
expected_senders, uploads, result, ...) is the one the service's coordinator drives for
every mode.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from fedveil.errors import (
    ConfigError,
    DuplicateSubmissionError,
    InvalidMessageError,
    ProtocolError,
    StageError,
    ThresholdNotMetError,
    UnknownClientError,
)
from fedveil.secagg.ckks.codec import CiphertextSum
from fedveil.secagg.ckks.config import CkksRoundConfig
from fedveil.secagg.ckks.distribution import WRAPPED_KEY_BYTES, ckks_advertisement_message
from fedveil.secagg.ckks.keys import CkksKeyring, load_public_context
from fedveil.secagg.ckks.messages import (
    CkksAdvertisement,
    CkksResult,
    EpochKeys,
    KeyDelivery,
    KeyPublication,
)
from fedveil.secagg.ckks.uploads import CiphertextUploads
from fedveil.secagg.crypto.envelope import X25519_KEY_BYTES
from fedveil.secagg.crypto.identity import VerifyingIdentity
from fedveil.secagg.protocol.stages import Stage

MAX_SEALED_CONTEXT_BYTES = 8 << 20
_NEXT = {
    Stage.ADVERTISE_KEYS: Stage.SHARE_KEYS,
    Stage.SHARE_KEYS: Stage.MASKED_INPUT,
    Stage.MASKED_INPUT: Stage.DONE,
}


class CkksServerRound:
    """One CKKS round as the server runs it."""

    def __init__(
        self,
        config: CkksRoundConfig,
        roster: Mapping[str, VerifyingIdentity],
        epoch: EpochKeys | None = None,
    ) -> None:
        missing = set(config.roster) - set(roster)
        if missing:
            raise ConfigError(f"no enrolled identity for {sorted(missing)}")
        self.config = config
        self.round_id = config.round_id
        self._roster = roster
        self.failure: Exception | None = None
        self.failed_at: Stage | None = None
        self.result: CkksResult | None = None
        self.advertisements: dict[str, CkksAdvertisement] = {}
        self.publication: KeyPublication | None = None
        self._uploaded: set[str] = set()
        self.epoch: EpochKeys | None = None
        self.uploads: CiphertextUploads | None = None
        if config.distributes_keys:
            self.stage = Stage.ADVERTISE_KEYS
        else:
            if epoch is None or epoch.fingerprint != config.key_fingerprint:
                raise ConfigError(
                    f"round {config.round_id} names key epoch {config.key_epoch} with a "
                    "fingerprint the server holds no public context for"
                )
            self.stage = Stage.MASKED_INPUT
            self._open_uploads(epoch, load_public_context(epoch.public_context, config.preset))

    # --- what the coordinator asks ----------------------------------------------------

    @property
    def uploaded(self) -> frozenset[str]:
        return frozenset(self._uploaded)

    @property
    def members(self) -> frozenset[str]:
        """Who holds the epoch's key, so who may upload (empty before publication)."""
        return self.epoch.members if self.epoch is not None else frozenset()

    def expected_senders(self) -> frozenset[str]:
        if self.stage is Stage.ADVERTISE_KEYS:
            return frozenset(self.config.roster) - set(self.advertisements)
        if self.stage is Stage.SHARE_KEYS:
            return frozenset() if self.publication else frozenset({self.config.key_holder})
        if self.stage is Stage.MASKED_INPUT:
            return self.members - self._uploaded
        return frozenset()

    def stage_complete(self) -> bool:
        """Whether the current stage has heard from everyone it expects (CKKS cohorts are
        small: the set difference is cheap here)."""
        return not self.expected_senders()

    def uploads_in_flight(self) -> frozenset[str]:
        if self.uploads is None:
            return frozenset()
        return frozenset(c for c in self.members if self.uploads.progress(c) is not None)

    def is_resend(self, message: object) -> bool:
        """An exact repeat of an accepted advertisement or publication (a broken poll)."""
        if isinstance(message, CkksAdvertisement):
            return self.advertisements.get(message.client_id) == message
        if isinstance(message, KeyPublication):
            return self.publication == message
        return False

    def already_submitted(self, message: object) -> bool:
        if isinstance(message, CkksAdvertisement):
            return message.client_id in self.advertisements
        if isinstance(message, KeyPublication):
            return self.publication is not None
        return False

    # --- key epoch ------------------------------------------------------------------------

    def _require(self, stage: Stage, action: str) -> None:
        if self.stage is not stage:
            raise StageError(
                f"{action} is accepted in stage {stage.value}; round {self.round_id} is at "
                f"{self.stage.value}"
            )

    def _require_enrolled(self, client_id: str) -> None:
        if client_id not in self.config.roster:
            raise UnknownClientError(f"{client_id!r} is not on round {self.round_id}'s roster")

    def receive_advertisement(self, advert: CkksAdvertisement) -> None:
        self._require(Stage.ADVERTISE_KEYS, "a key advertisement")
        self._require_enrolled(advert.client_id)
        if advert.client_id in self.advertisements:
            raise DuplicateSubmissionError(f"{advert.client_id!r} already advertised its key")
        if len(advert.encryption_key) != X25519_KEY_BYTES:
            raise InvalidMessageError(
                f"encryption_key must be a raw X25519 public key of {X25519_KEY_BYTES} bytes"
            )
        message = ckks_advertisement_message(
            self.config.session_id, advert.client_id, advert.encryption_key
        )
        self._roster[advert.client_id].verify(advert.signature, message)
        self.advertisements[advert.client_id] = advert

    def advertisements_for(self, client_id: str) -> tuple[CkksAdvertisement, ...]:
        """Every advertisement: the holder needs them all, the others need the holder's."""
        self._require_enrolled(client_id)
        if client_id not in self.advertisements:
            raise StageError(f"{client_id!r} did not advertise a key in time for this epoch")
        return tuple(self.advertisements[c] for c in sorted(self.advertisements))

    def publish(self, publication: KeyPublication) -> None:
        """Accept the holder's hand-over after checking everything the server can check."""
        self._require(Stage.SHARE_KEYS, "the key publication")
        cfg = self.config
        if publication.client_id != cfg.key_holder:
            raise UnknownClientError(
                f"only the key holder {cfg.key_holder!r} publishes the epoch's keys, not "
                f"{publication.client_id!r}"
            )
        if self.publication is not None:
            raise DuplicateSubmissionError("the keys of this epoch are already published")
        if publication.key_epoch != cfg.key_epoch:
            raise InvalidMessageError(
                f"keys for epoch {publication.key_epoch} published in a round of epoch "
                f"{cfg.key_epoch}"
            )
        if not 0 < len(publication.sealed_context) <= MAX_SEALED_CONTEXT_BYTES:
            raise InvalidMessageError(
                f"the sealed context must hold 1..{MAX_SEALED_CONTEXT_BYTES} bytes"
            )
        recipients = set(self.advertisements) - {cfg.key_holder}
        wrapped = {w.recipient: w.ciphertext for w in publication.wrapped_keys}
        if len(wrapped) != len(publication.wrapped_keys) or set(wrapped) != recipients:
            raise InvalidMessageError(
                f"wrap the content key exactly once for each advertised client "
                f"{sorted(recipients)}; got {sorted(w.recipient for w in publication.wrapped_keys)}"
            )
        if any(len(c) != WRAPPED_KEY_BYTES for c in wrapped.values()):
            raise InvalidMessageError(f"each wrapped key is {WRAPPED_KEY_BYTES} bytes")
        public = load_public_context(publication.public_context, cfg.preset)
        if public.fingerprint() != publication.fingerprint:
            raise InvalidMessageError("the published fingerprint is not the public context's")
        epoch = EpochKeys(
            key_epoch=cfg.key_epoch,
            fingerprint=publication.fingerprint,
            public_context=publication.public_context,
            members=frozenset(self.advertisements),
            key_round=cfg.round_id,
        )
        self.publication = publication
        self._open_uploads(epoch, public)

    def delivery_for(self, client_id: str) -> KeyDelivery:
        """The sealed context and this client's wrapped key, once published."""
        publication = self.publication
        if publication is None:
            raise StageError(f"the keys of epoch {self.config.key_epoch} were not published")
        wrapped = {w.recipient: w.ciphertext for w in publication.wrapped_keys}
        if client_id not in wrapped:
            raise UnknownClientError(
                f"{client_id!r} has no key in epoch {self.config.key_epoch} (it did not "
                "advertise in time, or it is the key holder)"
            )
        return KeyDelivery(
            key_epoch=publication.key_epoch,
            fingerprint=publication.fingerprint,
            holder=self.advertisements[self.config.key_holder],
            sealed_context=publication.sealed_context,
            wrapped_key=wrapped[client_id],
        )

    def _open_uploads(self, epoch: EpochKeys, public: CkksKeyring) -> None:
        """Start the encrypted sum under the epoch's (already validated) public context."""
        encrypted_sum = CiphertextSum(
            public,
            self.config.preset,
            self.config.dimension,
            max_cohort=len(self.config.roster),
            value_bound=self.config.value_bound,
            weight_scale=self.config.weight_scale,
        )
        self.epoch = epoch
        self.uploads = CiphertextUploads(encrypted_sum, epoch.fingerprint)

    # --- uploads ------------------------------------------------------------------------

    def _collecting(self, client_id: str) -> CiphertextUploads:
        self._require(Stage.MASKED_INPUT, "a ciphertext upload")
        self._require_enrolled(client_id)
        if client_id not in self.members:
            raise UnknownClientError(
                f"{client_id!r} holds no key of epoch {self.config.key_epoch}: it missed the "
                "key distribution and takes part again from the next epoch"
            )
        if client_id in self._uploaded:
            raise DuplicateSubmissionError(f"{client_id!r} already uploaded in this round")
        assert self.uploads is not None
        return self.uploads

    def begin_upload(self, client_id: str, total_bytes: int, fingerprint: bytes) -> None:
        self._collecting(client_id).begin(client_id, total_bytes, fingerprint)

    def add_chunk(self, client_id: str, index: int, data: bytes) -> None:
        self._collecting(client_id).add_chunk(client_id, index, data)

    def finish_upload(self, client_id: str, digest: bytes) -> None:
        self._collecting(client_id).finish(client_id, digest)
        self._uploaded.add(client_id)

    def abort_masked_input(self, client_id: str, chunks: Iterable[bytes]) -> None:
        if self.uploads is not None:
            self.uploads.abort(client_id, chunks)

    # --- stage close ----------------------------------------------------------------------

    def advance(self) -> Stage:
        """Close the current stage; a stage that cannot go on fails the round (raised)."""
        if self.stage not in _NEXT:
            raise StageError(f"round {self.round_id} is already {self.stage.value}")
        problem = self._blocker()
        if problem is not None:
            self.failure = problem
            self.failed_at, self.stage = self.stage, Stage.FAILED
            raise problem
        self.stage = _NEXT[self.stage]
        if self.stage is Stage.DONE:
            assert self.uploads is not None
            self.result = CkksResult(
                tuple(sorted(self._uploaded)), tuple(self.uploads.sum.serialised())
            )
        return self.stage

    def _blocker(self) -> ProtocolError | None:
        cfg = self.config
        if self.stage is Stage.ADVERTISE_KEYS:
            if cfg.key_holder not in self.advertisements:
                return ThresholdNotMetError(
                    f"round {self.round_id}: the key holder {cfg.key_holder!r} did not "
                    "advertise; the epoch's keys are distributed again next round"
                )
            if len(self.advertisements) < cfg.min_cohort:
                return ThresholdNotMetError(
                    f"round {self.round_id}: {len(self.advertisements)} clients advertised "
                    f"keys, below min_cohort {cfg.min_cohort}"
                )
        elif self.stage is Stage.SHARE_KEYS and self.publication is None:
            return ThresholdNotMetError(
                f"round {self.round_id}: the key holder {cfg.key_holder!r} did not publish "
                "the epoch's keys in time"
            )
        elif self.stage is Stage.MASKED_INPUT and len(self._uploaded) < cfg.min_cohort:
            return ThresholdNotMetError(
                f"round {self.round_id}: {len(self._uploaded)} ciphertext uploads, below "
                f"min_cohort {cfg.min_cohort}"
            )
        return None
