"""The server side of SecAgg+ as a state machine over the whole cohort.

Why it is shaped like this: the server must survive any client's bad or missing message,
so `receive` validates one message and either records it or raises without touching the
round; only `advance`, called when a stage's quorum or deadline is reached, moves the
round on, and it fails the round (fail closed) when fewer than t clients remain. Masked
uploads are added into one running sum as they arrive, so memory is O(d), not O(n d).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedveil.errors import (
    ConfigError,
    DuplicateSubmissionError,
    FedveilError,
    InconsistentSharesError,
    InvalidMessageError,
    InvalidSignatureError,
    ProtocolError,
    ShareError,
    StageError,
    ThresholdNotMetError,
    UnknownClientError,
)
from fedveil.secagg.crypto import shamir
from fedveil.secagg.crypto.envelope import X25519_KEY_BYTES
from fedveil.secagg.crypto.identity import (
    VerifyingIdentity,
    advertisement_message,
    survivor_set_message,
)
from fedveil.secagg.crypto.prg import MaskExpander
from fedveil.secagg.dp.randomness import CryptoRandom
from fedveil.secagg.protocol.client import raw_public
from fedveil.secagg.protocol.config import RoundConfig
from fedveil.secagg.protocol.consistency import consistency_quorum
from fedveil.secagg.protocol.graph import neighbour_graph
from fedveil.secagg.protocol.masking import (
    COMMITMENT_BYTES,
    client_subtracts,
    pairwise_mask_seed,
    self_mask_commitment,
    self_mask_seed,
)
from fedveil.secagg.protocol.messages import (
    ConsistencyRequest,
    ConsistencySignature,
    KeyAdvertisement,
    MaskedInput,
    MaskedInputRequest,
    RoundResult,
    ShareKeysRequest,
    ShareKeysResponse,
    UnmaskRequest,
    UnmaskResponse,
)
from fedveil.secagg.protocol.stages import Stage, check_transition, require_stage
from fedveil.secagg.protocol.upload import (
    Chunk,
    UploadAccumulator,
    aligned_chunk_bytes,
    payload_chunks,
)
from fedveil.secagg.quantize import AggregateEstimate, dequantize_sum

MAX_ENVELOPE_BYTES = 1024


@dataclass(frozen=True)
class UnmaskWork:
    """How many masks the server had to expand to unmask: the stage's unavoidable work."""

    self_masks: int
    pairwise_masks: int

    @property
    def keystreams(self) -> int:
        return self.self_masks + self.pairwise_masks


class ServerRound:
    """One SecAgg+ round seen from the server: it relays, sums and unmasks, never decrypts."""

    def __init__(
        self,
        config: RoundConfig,
        roster_identities: Mapping[str, VerifyingIdentity],
        *,
        chunk_bytes: int | None = None,
        quorum: int | None = None,
        noise_seed: bytes | None = None,
    ) -> None:
        """`quorum` (default: the threshold) is the fewest clients each stage must keep;
        a deployment sets it to its minimum cohort, never below the threshold (nor, in a
        client-level DP round, below dp.min_clients).

        `noise_seed` (central DP only): 32 bytes keying the server's noise, so a round
        replayed after a restart releases the same noised sum rather than a second draw;
        None draws fresh OS randomness.
        """
        missing = [cid for cid in config.roster if cid not in roster_identities]
        if missing:
            raise ConfigError(f"no enrolled identity for roster members {missing}")
        self.config = config
        dp_floor = 0
        if config.dp is not None and not config.dp.central:
            dp_floor = config.dp.config.min_clients
        self.quorum = max(config.threshold, quorum or 0, dp_floor)
        self._noise_seed = noise_seed
        self.stage = Stage.ADVERTISE_KEYS
        self.failure: FedveilError | None = None
        self.failed_at: Stage | None = None
        self.result: RoundResult | None = None
        self.unmask_work: UnmaskWork | None = None
        self.graph = neighbour_graph(config.roster, config.neighbours, config.session_id)
        self._identities = dict(roster_identities)
        self._adverts: dict[str, KeyAdvertisement] = {}
        self._share_responses: dict[str, ShareKeysResponse] = {}
        self._shared: frozenset[str] = frozenset()
        self._sum = config.quantization.ring.zeros(config.element_count)
        bits = config.quantization.bits
        self.uploads = UploadAccumulator(
            self._sum,
            bits,
            config.element_count,
            chunk_bytes if chunk_bytes is not None else aligned_chunk_bytes(bits),
            session_id=config.session_id,
        )
        self._uploaded: set[str] = set()
        self._survivors: frozenset[str] = frozenset()
        self._signatures: dict[str, ConsistencySignature] = {}
        self._reveals: dict[str, UnmaskResponse] = {}
        # Views that stay fixed once a stage has closed, computed once when the next stage
        # opens (_freeze_views) rather than once per client message: with n clients a
        # per-message O(n) rebuild makes a stage O(n^2) on the server.
        self._roster_set = frozenset(config.roster)
        self._advertised: frozenset[str] | None = None
        self._survivor_order: tuple[str, ...] = ()
        self._survivor_message = b""
        self._signers: frozenset[str] = frozenset()
        self._unmask_request: UnmaskRequest | None = None
        self._receivers: dict[type, tuple[Stage, Callable[[Any], None]]] = {
            KeyAdvertisement: (Stage.ADVERTISE_KEYS, self._on_advertisement),
            ShareKeysResponse: (Stage.SHARE_KEYS, self._on_share_keys),
            MaskedInput: (Stage.MASKED_INPUT, self._on_masked_input),
            ConsistencySignature: (Stage.CONSISTENCY_CHECK, self._on_signature),
            UnmaskResponse: (Stage.UNMASK, self._on_unmask),
        }

    # --- who is where ----------------------------------------------------------------

    @property
    def advertised(self) -> frozenset[str]:
        if self._advertised is not None:
            return self._advertised
        return frozenset(self._adverts)

    @property
    def shared(self) -> frozenset[str]:
        return self._shared

    @property
    def survivors(self) -> frozenset[str]:
        return self._survivors

    @property
    def uploaded(self) -> frozenset[str]:
        """Clients whose masked input arrived complete (so far, in this stage)."""
        return frozenset(self._uploaded)

    def expected_senders(self) -> frozenset[str]:
        """The clients from whom the current stage still accepts a message."""
        pools = {
            Stage.ADVERTISE_KEYS: frozenset(self.config.roster),
            Stage.SHARE_KEYS: self.advertised,
            Stage.MASKED_INPUT: self._shared,
            Stage.CONSISTENCY_CHECK: self._survivors,
            Stage.UNMASK: self._signers,
        }
        done = {
            Stage.ADVERTISE_KEYS: set(self._adverts),
            Stage.SHARE_KEYS: set(self._share_responses),
            Stage.MASKED_INPUT: self._uploaded,
            Stage.CONSISTENCY_CHECK: set(self._signatures),
            Stage.UNMASK: set(self._reveals),
        }
        return pools.get(self.stage, frozenset()) - done.get(self.stage, set())

    def stage_complete(self) -> bool:
        """Whether every client the current stage expects has answered: O(1), for a
        caller that asks after each message (expected_senders() builds the set)."""
        answered, pool = {
            Stage.ADVERTISE_KEYS: (len(self._adverts), len(self._roster_set)),
            Stage.SHARE_KEYS: (len(self._share_responses), len(self.advertised)),
            Stage.MASKED_INPUT: (len(self._uploaded), len(self._shared)),
            Stage.CONSISTENCY_CHECK: (len(self._signatures), len(self._survivors)),
            Stage.UNMASK: (len(self._reveals), len(self._signers)),
        }.get(self.stage, (0, 0))
        return answered >= pool  # each answer was checked to come from the pool

    # --- incoming --------------------------------------------------------------------

    def is_resend(self, message: object) -> bool:
        """Whether `message` is exactly what its sender already submitted this round.

        A client whose long poll broke resends the same message; the transport answers it
        with the current request instead of an ALREADY_EXISTS error. A different message
        from the same sender is still a duplicate submission.
        """
        recorded: Mapping[str, object] = {}
        sender = getattr(message, "client_id", None)
        if isinstance(message, KeyAdvertisement):
            recorded = self._adverts
        elif isinstance(message, ShareKeysResponse):
            recorded = self._share_responses
        elif isinstance(message, ConsistencySignature):
            recorded = self._signatures
        elif isinstance(message, UnmaskResponse):
            recorded = self._reveals
        return sender is not None and recorded.get(sender) == message

    def already_submitted(self, message: object) -> bool:
        """Whether the sender of `message` already has a message of that kind recorded."""
        sender = getattr(message, "client_id", None)
        books: dict[type, Mapping[str, object]] = {
            KeyAdvertisement: self._adverts,
            ShareKeysResponse: self._share_responses,
            ConsistencySignature: self._signatures,
            UnmaskResponse: self._reveals,
        }
        return sender in books.get(type(message), {})

    def receive(self, message: object) -> None:
        """Validate and record one client message; a bad one raises and changes nothing."""
        entry = self._receivers.get(type(message))
        if entry is None:
            raise InvalidMessageError(f"the server does not accept {type(message).__name__}")
        expected, receiver = entry
        require_stage(self.stage, expected, type(message).__name__)
        receiver(message)

    def _sender_check(
        self,
        client_id: str,
        pool: frozenset[str] | set[str],
        seen: Mapping[str, Any] | set[str],
        what: str,
    ) -> None:
        if client_id not in self.config.roster:
            raise UnknownClientError(f"{client_id!r} is not on this round's roster")
        if client_id not in pool:
            raise ProtocolError(
                f"{client_id!r} dropped out of this round at an earlier stage "
                f"and cannot send {what}"
            )
        if client_id in seen:
            raise DuplicateSubmissionError(f"{client_id!r} already sent its {what} in this round")

    def _on_advertisement(self, adv: KeyAdvertisement) -> None:
        self._sender_check(adv.client_id, self._roster_set, self._adverts, "key advertisement")
        if len(adv.encryption_key) != X25519_KEY_BYTES or len(adv.masking_key) != X25519_KEY_BYTES:
            raise InvalidMessageError("advertised X25519 public keys must be 32 bytes each")
        if adv.encryption_key == adv.masking_key:
            raise InvalidMessageError("the encryption and masking keys must be distinct keys")
        if len(adv.self_mask_commitment) != COMMITMENT_BYTES:
            raise InvalidMessageError(f"the self-mask commitment must be {COMMITMENT_BYTES} bytes")
        message = advertisement_message(
            self.config.session_id,
            adv.client_id,
            adv.encryption_key,
            adv.masking_key,
            adv.self_mask_commitment,
        )
        try:
            self._identities[adv.client_id].verify(adv.signature, message)
        except InvalidSignatureError as exc:
            raise InvalidSignatureError(
                f"the key advertisement of {adv.client_id!r} is not signed by its enrolled "
                "Ed25519 identity over this round's session id: sign it with the identity key "
                "from enrolment, for the round spec the server published"
            ) from exc
        self._adverts[adv.client_id] = adv

    def _on_share_keys(self, response: ShareKeysResponse) -> None:
        sender = response.client_id
        self._sender_check(sender, self.advertised, self._share_responses, "shares")
        expected = self.graph[sender] & self.advertised
        recipients = [item.recipient for item in response.shares]
        if len(set(recipients)) != len(recipients) or set(recipients) != expected:
            raise InvalidMessageError(
                f"{sender!r} must send exactly one share to each advertised neighbour "
                f"{sorted(expected)}, got {sorted(recipients)}"
            )
        for item in response.shares:
            if item.sender != sender:
                raise InvalidMessageError(
                    f"share inside {sender!r}'s message claims sender {item.sender!r}"
                )
            if not 0 < len(item.ciphertext) <= MAX_ENVELOPE_BYTES:
                raise InvalidMessageError(
                    f"share envelope of {len(item.ciphertext)} bytes; limit {MAX_ENVELOPE_BYTES}"
                )
        self._share_responses[sender] = response

    def _on_masked_input(self, upload: MaskedInput) -> None:
        """A whole payload at once: the streaming path with every chunk in one call.

        The chunks are views of the payload, not copies, and the digest the stream's
        sender would send is the one the accumulator computed while adding: the payload
        is read once, as a streamed upload is.
        """
        client, payload = upload.client_id, upload.payload
        self.begin_masked_input(client, len(payload))
        chunks = payload_chunks(payload, self.uploads.chunk_bytes)
        try:
            for index, chunk in enumerate(chunks):
                self.add_masked_chunk(client, index, chunk)
            self.finish_masked_input(client, self.uploads.running_digest(client))
        except FedveilError:
            self.abort_masked_input(client, chunks)
            raise

    # --- streamed masked input ---------------------------------------------------------

    def begin_masked_input(self, client_id: str, total_bytes: int) -> None:
        """Open (or resume) a streamed upload of `total_bytes` from `client_id`."""
        require_stage(self.stage, Stage.MASKED_INPUT, "a masked-input upload")
        self._sender_check(client_id, self._shared, self._uploaded, "masked input")
        self.uploads.begin(client_id, total_bytes)

    def add_masked_chunk(self, client_id: str, index: int, data: Chunk) -> None:
        """Validate chunk `index` and add it into the running sum."""
        require_stage(self.stage, Stage.MASKED_INPUT, "a masked-input chunk")
        self.uploads.add_chunk(client_id, index, data)

    def finish_masked_input(self, client_id: str, digest: bytes) -> None:
        """Complete a streamed upload; only now does the client count as a survivor."""
        require_stage(self.stage, Stage.MASKED_INPUT, "the end of a masked-input upload")
        self.uploads.finish(client_id, digest)
        self._uploaded.add(client_id)

    def abort_masked_input(self, client_id: str, chunks: Iterable[Chunk]) -> None:
        """Remove an unfinished upload from the sum, given the chunks that were added."""
        self.uploads.abort(client_id, chunks)

    def uploads_in_flight(self) -> frozenset[str]:
        return frozenset(cid for cid in self._shared if self.uploads.progress(cid) is not None)

    def _on_signature(self, item: ConsistencySignature) -> None:
        self._sender_check(
            item.client_id, self._survivors, self._signatures, "consistency signature"
        )
        message = self._survivor_message
        try:
            self._identities[item.client_id].verify(item.signature, message)
        except InvalidSignatureError as exc:
            raise InvalidSignatureError(
                f"the survivor-set signature of {item.client_id!r} does not verify: sign the "
                "survivor set this server sent, with the enrolled Ed25519 identity"
            ) from exc
        self._signatures[item.client_id] = item

    def _on_unmask(self, response: UnmaskResponse) -> None:
        holder = response.client_id
        self._sender_check(holder, self._signers, self._reveals, "unmask shares")
        held = {holder} | (self.graph[holder] & self._shared)  # k + 1 ids: cheap to intersect
        self._check_reveal(holder, response.self_mask_shares, held & self._survivors, "self-mask")
        # held - survivors: the shared (so held) neighbours that dropped before uploading
        self._check_reveal(holder, response.key_shares, held - self._survivors, "masking-key")
        self._reveals[holder] = response

    @staticmethod
    def _check_reveal(
        holder: str, shares: tuple[Any, ...], expected: frozenset[str] | set[str], kind: str
    ) -> None:
        owners = [item.owner for item in shares]
        if len(set(owners)) != len(owners) or set(owners) != set(expected):
            raise InvalidMessageError(
                f"{holder!r} must reveal {kind} shares for exactly {sorted(expected)}, "
                f"got {sorted(owners)}"
            )
        for item in shares:
            if len(item.share) != shamir.SHARE_BYTES:
                raise InvalidMessageError(
                    f"a share is {shamir.SHARE_BYTES} bytes, got {len(item.share)}"
                )

    # --- outgoing --------------------------------------------------------------------

    def request_for(
        self, client_id: str
    ) -> ShareKeysRequest | MaskedInputRequest | ConsistencyRequest | UnmaskRequest:
        """The message the current stage sends to `client_id`."""
        if client_id not in self.config.roster:
            raise UnknownClientError(f"{client_id!r} is not on this round's roster")
        if self.stage is Stage.SHARE_KEYS:
            self._require_member(client_id, self.advertised)
            peers = sorted(self.graph[client_id] & self.advertised)
            return ShareKeysRequest(tuple(self._adverts[p] for p in peers))
        if self.stage is Stage.MASKED_INPUT:
            self._require_member(client_id, self._shared)
            inbox = [
                item
                for sender in sorted(self.graph[client_id] & self._shared)
                for item in self._share_responses[sender].shares
                if item.recipient == client_id
            ]
            return MaskedInputRequest(tuple(inbox))
        if self.stage is Stage.CONSISTENCY_CHECK:
            self._require_member(client_id, self._survivors)
            return ConsistencyRequest(self._survivor_order)
        if self.stage is Stage.UNMASK:
            self._require_member(client_id, self._signers)
            assert self._unmask_request is not None
            return self._unmask_request  # one frozen message, the same for every signer
        raise StageError(f"no request to send in stage {self.stage.value}")

    def _require_member(self, client_id: str, pool: frozenset[str]) -> None:
        if client_id not in pool:
            raise ProtocolError(
                f"{client_id!r} is not part of stage {self.stage.value}: it dropped out earlier"
            )

    # --- stage closing ---------------------------------------------------------------

    def advance(self) -> Stage:
        """Close the current stage (quorum reached or deadline passed) and open the next."""
        if self.stage in (Stage.DONE, Stage.FAILED):
            raise StageError(f"the round is already {self.stage.value}")
        pending = sorted(self.uploads_in_flight()) if self.stage is Stage.MASKED_INPUT else []
        if pending:
            raise StageError(
                f"uploads from {pending} are unfinished: abort_masked_input() them before "
                "closing the stage (the round is unchanged)"
            )
        try:
            if self.stage is Stage.ADVERTISE_KEYS:
                self._quorum(len(self._adverts), "clients advertised keys")
                self._move(Stage.SHARE_KEYS)
            elif self.stage is Stage.SHARE_KEYS:
                self._quorum(len(self._share_responses), "clients shared keys")
                self._shared = frozenset(self._share_responses)
                self._move(Stage.MASKED_INPUT)
            elif self.stage is Stage.MASKED_INPUT:
                self._quorum(len(self._uploaded), "clients uploaded masked input")
                self._signer_quorum(len(self._uploaded), "clients uploaded masked input")
                self._survivors = frozenset(self._uploaded)
                self._move(Stage.CONSISTENCY_CHECK)
            elif self.stage is Stage.CONSISTENCY_CHECK:
                self._quorum(len(self._signatures), "clients signed the survivor set")
                self._signer_quorum(len(self._signatures), "clients signed the survivor set")
                unsigned = sorted(self._survivors - set(self._signatures))
                if unsigned:
                    raise ThresholdNotMetError(
                        f"round {self.config.round_id} failed at stage {self.stage.value}: "
                        f"survivors {unsigned[:5]} uploaded but did not sign the survivor set, "
                        "and clients reveal self-mask shares only for survivors that signed"
                    )
                self._move(Stage.UNMASK)
            elif self.stage is Stage.UNMASK:
                self._quorum(len(self._reveals), "clients revealed shares")
                self._finalize()
                self._move(Stage.DONE)
        except FedveilError as exc:
            self.failure = exc
            self.failed_at = self.stage
            self._move(Stage.FAILED)
            raise
        return self.stage

    def _quorum(self, count: int, what: str) -> None:
        if count < self.quorum:
            raise ThresholdNotMetError(
                f"round {self.config.round_id} failed at stage {self.stage.value}: only {count} "
                f"{what}, the quorum is {self.quorum} (threshold {self.config.threshold})"
            )

    def _signer_quorum(self, count: int, what: str) -> None:
        """Fail now rather than let every client refuse: no client reveals against a
        survivor set signed by half the roster or fewer (secagg.protocol.consistency)."""
        needed = consistency_quorum(self.config.size)
        if count < needed:
            raise ThresholdNotMetError(
                f"round {self.config.round_id} failed at stage {self.stage.value}: only {count} "
                f"{what}; clients reveal shares only for a survivor set signed by more than "
                f"half of the roster of {self.config.size} ({needed})"
            )

    def _move(self, target: Stage) -> None:
        check_transition(self.stage, target)
        self.stage = target
        self._freeze_views(target)

    def _freeze_views(self, opened: Stage) -> None:
        """What the stage just closed has fixed, computed once for the stage that opens."""
        if opened is Stage.SHARE_KEYS:
            self._advertised = frozenset(self._adverts)
        elif opened is Stage.CONSISTENCY_CHECK:
            self._survivor_order = tuple(sorted(self._survivors))
            self._survivor_message = survivor_set_message(self.config.session_id, self._survivors)
        elif opened is Stage.UNMASK:
            self._signers = frozenset(self._signatures)
            self._unmask_request = UnmaskRequest(
                survivors=self._survivor_order,
                dropped=tuple(sorted(self._shared - self._survivors)),
                signatures=tuple(self._signatures[c] for c in sorted(self._signatures)),
            )

    # --- unmasking -------------------------------------------------------------------

    def _gather(self, owner: str, kind: str) -> list[shamir.Share]:
        shares = []
        for holder, response in sorted(self._reveals.items()):
            items = response.self_mask_shares if kind == "self-mask" else response.key_shares
            for item in items:
                if item.owner == owner:
                    shares.append(shamir.Share(self.config.share_point(holder), item.share))
        return shares

    def _rebuild(self, owner: str, kind: str, verify: Callable[[bytes], bool]) -> bytes:
        """Rebuild one secret from t shares and check it against its signed commitment.

        Only when that check fails are the extra shares used, leaving one of the first t
        out at a time, to locate a single wrong share; the common case costs one
        interpolation, whatever the neighbourhood size.
        """
        shares = self._gather(owner, kind)
        t = self.config.threshold
        if len(shares) < t:
            raise ThresholdNotMetError(
                f"only {len(shares)} holders revealed {owner!r}'s {kind} share, threshold is {t}: "
                "too many of its neighbours dropped out"
            )
        candidates = [shares[:t]]
        if len(shares) > t:
            candidates += [(shares[:i] + shares[i + 1 :])[:t] for i in range(t)]
        last_error: ShareError | None = None
        for subset in candidates:
            try:
                secret = shamir.combine(subset, t)
            except ShareError as exc:
                last_error = exc
                continue
            if verify(secret):
                return secret
            last_error = InconsistentSharesError(
                f"rebuilt {kind} of {owner!r} does not match its signed commitment"
            )
        raise InconsistentSharesError(
            f"the {kind} shares of {owner!r} are inconsistent; the round fails closed"
        ) from last_error

    def _finalize(self) -> None:
        expander = MaskExpander()
        session = self.config.session_id
        for owner in sorted(self._survivors):
            commitment = self._adverts[owner].self_mask_commitment

            def committed(raw: bytes, owner: str = owner, commitment: bytes = commitment) -> bool:
                return self_mask_commitment(raw, session, owner) == commitment

            secret = self._rebuild(owner, "self-mask", committed)
            expander.apply(self._sum, self_mask_seed(secret, session, owner), subtract=True)
        pairwise = 0
        for dropped in sorted(self._shared - self._survivors):
            partners = sorted(self.graph[dropped] & self._survivors)
            if not partners:
                continue
            advertised = self._adverts[dropped].masking_key

            def matches(raw: bytes, advertised: bytes = advertised) -> bool:
                return raw_public(X25519PrivateKey.from_private_bytes(raw)) == advertised

            key = X25519PrivateKey.from_private_bytes(
                self._rebuild(dropped, "masking-key", matches)
            )
            for partner in partners:
                seed = pairwise_mask_seed(
                    key, dropped, self._adverts[partner].masking_key, partner, session
                )
                # The partner applied the opposite sign of the dropped client; undo it.
                expander.apply(self._sum, seed, subtract=not client_subtracts(partner, dropped))
                pairwise += 1
        ring = self.config.quantization.ring
        ring.reduce(self._sum)
        self.unmask_work = UnmaskWork(self_masks=len(self._survivors), pairwise_masks=pairwise)
        survivors = tuple(sorted(self._survivors))
        dp = self.config.dp
        if dp is None:
            estimate = dequantize_sum(self._sum, self.config.quantization, len(survivors))
            self.result = RoundResult(survivors, self._sum, estimate)
            return
        # Central DP: the server adds the noise here, after seeing the exact sum.
        rng = CryptoRandom(self._noise_seed) if dp.central else None
        aggregate = dp.pipeline(session).server_decode(self._sum, len(survivors), rng=rng)
        # Per element: the rotated rounding error is bounded coordinate-wise; rotating back
        # spreads it, and |e_i| <= ||e||_2 is what remains.
        plain_bound = aggregate.rounding_error_l2 / math.sqrt(dp.config.padded_dim)
        bound = aggregate.rounding_error_l2 if dp.config.rotate else plain_bound
        estimate = AggregateEstimate(
            weighted_sum=aggregate.sum,
            total_weight=aggregate.contributors,
            weighted_mean=aggregate.mean,
            error_bound=bound,
        )
        self.result = RoundResult(survivors, self._sum, estimate, aggregate)
