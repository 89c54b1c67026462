"""The client side of SecAgg+ as a state machine: typed message in, typed reply out.

Why a client checks so much: the server relays everything, so each rule a malicious
server could bend is enforced here, where the secret lives. Advertised keys must carry
the enrolled identity's signature (no key substitution); the client never reveals both
the self-mask share and the key share of one peer (no fake dropouts); it refuses rounds,
survivor sets and neighbourhoods below its own minimum cohort and threshold; every key
is bound to the session id (model inconsistency fails closed). Any violation moves the
session to FAILED and it answers nothing more: a client fails closed.

Under a DP round (config.dp) the client also encodes through the round's DP stage stack
(clip -> rotate -> quantise -> its share of the noise) instead of plain quantisation,
refuses to reveal a sum over fewer than min_clients + max_colluders survivors, and, when
it holds a privacy ledger, checks its budget before it sends anything and charges it
just before its noised update leaves (secagg.protocol.dp explains the weight-1 rule).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedveil.errors import (
    CohortTooSmallError,
    ConfigError,
    ConflictingShareRequestError,
    FedveilError,
    InvalidMessageError,
    InvalidSignatureError,
    KeySubstitutionError,
    PrivacyPolicyError,
    ProtocolError,
    SessionMismatchError,
    SurvivorQuorumError,
    SurvivorSetMismatchError,
    ThresholdNotMetError,
)
from fedveil.secagg.crypto import shamir
from fedveil.secagg.crypto.encoding import decode_fields, encode_fields
from fedveil.secagg.crypto.envelope import X25519_KEY_BYTES, EnvelopeContext, seal, unseal
from fedveil.secagg.crypto.identity import (
    SigningIdentity,
    VerifyingIdentity,
    advertisement_message,
    survivor_set_message,
)
from fedveil.secagg.crypto.prg import MaskExpander
from fedveil.secagg.dp.accounting import EpsilonReport
from fedveil.secagg.dp.budget import PrivacyLedger
from fedveil.secagg.dp.events import DpEvent
from fedveil.secagg.dp.stages import ClientDPPipeline
from fedveil.secagg.protocol.config import (
    ClientPolicy,
    RoundConfig,
    check_enrolment,
    check_round_floors,
)
from fedveil.secagg.protocol.consistency import (
    consistency_quorum,
    require_owner_signatures,
    require_unique_survivor_set,
)
from fedveil.secagg.protocol.dp import DPInputSummary
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
    EncryptedShare,
    KeyAdvertisement,
    MaskedInput,
    MaskedInputRequest,
    RevealedShare,
    ShareKeysRequest,
    ShareKeysResponse,
    UnmaskRequest,
    UnmaskResponse,
)
from fedveil.secagg.protocol.stages import Stage, check_transition, require_stage
from fedveil.secagg.quantize import QuantizedUpdate, pack, quantize

SHARE_STAGE_LABEL = "share-keys"
_SHARE_PLAINTEXT_TAG = b"fedveil-shares-v1"


def raw_private(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def raw_public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class ClientSession:
    """One client's participation in one SecAgg+ round."""

    def __init__(
        self,
        config: RoundConfig,
        client_id: str,
        identity: SigningIdentity,
        roster_identities: Mapping[str, VerifyingIdentity],
        policy: ClientPolicy | None = None,
        *,
        expected_model_hash: bytes | None = None,
        ledger: PrivacyLedger | None = None,
    ) -> None:
        """`ledger`: this client's privacy budget; with one, the client refuses rounds
        without DP (and central-DP rounds unless policy.accept_central_dp), and raises
        PrivacyBudgetExceededError here, before any message, if the round would overspend.
        """
        policy = policy or ClientPolicy()
        check_enrolment(config.roster, client_id, identity, roster_identities)
        if expected_model_hash is not None and expected_model_hash != config.model_hash:
            raise SessionMismatchError(
                "the round's global model hash differs from the model this client holds; "
                "refusing (model inconsistency)"
            )
        check_round_floors(config, policy)
        self._dp_pipeline: ClientDPPipeline | None = None
        self._dp_floor = 0
        self._ledger_events: tuple[DpEvent, ...] = ()
        self._check_dp(config, policy, ledger)
        self._ledger = ledger
        self.dp_input: DPInputSummary | None = None
        self.privacy_spent: EpsilonReport | None = None
        self.config = config
        self.client_id = client_id
        self.policy = policy
        self.stage = Stage.ADVERTISE_KEYS
        self._identity = identity
        self._identities = dict(roster_identities)
        self._neighbours = neighbour_graph(config.roster, config.neighbours, config.session_id)[
            client_id
        ]
        self._encryption_key = X25519PrivateKey.generate()
        self._masking_key = X25519PrivateKey.generate()
        self._self_mask_secret = os.urandom(shamir.SECRET_BYTES)
        self._peers: dict[str, KeyAdvertisement] = {}
        self._held: dict[str, tuple[shamir.Share, shamir.Share]] = {}
        self._mask_peers: frozenset[str] = frozenset()
        self._survivors: frozenset[str] | None = None
        self._revealed: dict[str, str] = {}
        self._input: QuantizedUpdate | None = None
        self._handlers: dict[type, tuple[Stage, Callable[[Any], Any]]] = {
            ShareKeysRequest: (Stage.SHARE_KEYS, self._on_share_keys),
            MaskedInputRequest: (Stage.MASKED_INPUT, self._on_masked_input),
            ConsistencyRequest: (Stage.CONSISTENCY_CHECK, self._on_consistency),
            UnmaskRequest: (Stage.UNMASK, self._on_unmask),
        }

    def _check_dp(
        self, config: RoundConfig, policy: ClientPolicy, ledger: PrivacyLedger | None
    ) -> None:
        """Refuse DP terms this client cannot accept, and a round that would overspend."""
        events = check_round_dp(config, policy, ledger)
        dp = config.dp
        if dp is None:
            return
        if not dp.central:
            self._dp_floor = dp.config.min_clients + policy.max_colluders
        self._dp_pipeline = dp.pipeline(config.session_id)
        self._ledger_events = events

    # --- public API --------------------------------------------------------------------

    @property
    def neighbours(self) -> frozenset[str]:
        return self._neighbours

    @property
    def session_id(self) -> bytes:
        return self.config.session_id

    def set_input(self, update: np.ndarray, weight: int) -> QuantizedUpdate:
        """Quantise this client's update (and its weight) ahead of the masked-input stage.

        In a DP round the update goes through the DP stages instead and `weight` is not
        used: DP means are unweighted, every client counts once (secagg.protocol.dp).
        """
        if self.stage not in (Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT):
            raise ProtocolError(f"input can no longer be set in stage {self.stage.value}")
        if update.ndim != 1 or update.shape[0] != self.config.dimension:
            raise ConfigError(
                f"update must be a 1-D vector of {self.config.dimension} values, "
                f"got shape {update.shape}"
            )
        if self._dp_pipeline is not None:
            if update.dtype.kind != "f":
                raise ConfigError(f"update must be a floating-point array, got {update.dtype}")
            encoding = self._dp_pipeline.client_encode(update.astype(np.float64, copy=False))
            self.dp_input = DPInputSummary(
                norm=encoding.clip.norm,
                clipped=encoding.clip.clipped,
                coordinates_clipped=encoding.coordinates_clipped,
                rounding_attempts=encoding.rounding_attempts,
            )
            self._input = encoding.quantized_update
            return self._input
        self._input = quantize(update, weight, self.config.quantization)
        return self._input

    def advertise(self) -> KeyAdvertisement:
        """Stage 1: sign and return this client's two X25519 public keys."""
        require_stage(self.stage, Stage.ADVERTISE_KEYS, "advertise")
        encryption, masking = raw_public(self._encryption_key), raw_public(self._masking_key)
        commitment = self_mask_commitment(self._self_mask_secret, self.session_id, self.client_id)
        message = advertisement_message(
            self.session_id, self.client_id, encryption, masking, commitment
        )
        self._move(Stage.SHARE_KEYS)
        return KeyAdvertisement(
            self.client_id, encryption, masking, commitment, self._identity.sign(message)
        )

    def handle(self, message: object) -> object:
        """Process one server message in the current stage and return the reply."""
        entry = self._handlers.get(type(message))
        if entry is None:
            raise InvalidMessageError(f"a client does not accept {type(message).__name__}")
        expected, handler = entry
        try:
            require_stage(self.stage, expected, type(message).__name__)
            if expected is Stage.MASKED_INPUT and self._input is None:
                raise ProtocolError(
                    "no input to mask: call set_input(update, weight) before the masked-input stage"
                )
            return handler(message)
        except FedveilError:
            self._fail()
            raise

    # --- stage handlers ----------------------------------------------------------------

    def _on_share_keys(self, request: ShareKeysRequest) -> ShareKeysResponse:
        peers: dict[str, KeyAdvertisement] = {}
        for adv in request.advertisements:
            if adv.client_id not in self._neighbours:
                raise InvalidMessageError(
                    f"advertisement of {adv.client_id!r}, who is not a neighbour of "
                    f"{self.client_id!r} in this session's graph"
                )
            if adv.client_id in peers:
                raise InvalidMessageError(f"two advertisements for {adv.client_id!r}")
            if (
                len(adv.encryption_key) != X25519_KEY_BYTES
                or len(adv.masking_key) != X25519_KEY_BYTES
            ):
                raise InvalidMessageError(f"advertised keys of {adv.client_id!r} are not 32 bytes")
            if len(adv.self_mask_commitment) != COMMITMENT_BYTES:
                raise InvalidMessageError(
                    f"self-mask commitment of {adv.client_id!r} is not {COMMITMENT_BYTES} bytes"
                )
            message = advertisement_message(
                self.session_id,
                adv.client_id,
                adv.encryption_key,
                adv.masking_key,
                adv.self_mask_commitment,
            )
            try:
                self._identities[adv.client_id].verify(adv.signature, message)
            except InvalidSignatureError as exc:
                raise KeySubstitutionError(
                    f"keys advertised for {adv.client_id!r} are not signed by its enrolled "
                    "identity for this session: substituted keys or a different session "
                    "(model inconsistency); refusing the round"
                ) from exc
            peers[adv.client_id] = adv
        self._require_neighbourhood(len(peers), "neighbours advertised keys")
        self._peers = peers
        holders = [*sorted(peers), self.client_id]
        points = [self.config.share_point(cid) for cid in holders]
        secrets = [self._self_mask_secret, raw_private(self._masking_key)]
        self_mask_shares, key_shares = shamir.split_many(secrets, self.config.threshold, points)
        envelopes = []
        for holder, b_share, s_share in zip(holders, self_mask_shares, key_shares, strict=True):
            if holder == self.client_id:
                self._held[holder] = (b_share, s_share)
                continue
            plaintext = encode_fields(
                _SHARE_PLAINTEXT_TAG, self.client_id, holder, b_share.y, s_share.y
            )
            context = EnvelopeContext(self.session_id, self.client_id, holder, SHARE_STAGE_LABEL)
            ciphertext = seal(
                self._encryption_key,
                peers[holder].encryption_key,
                plaintext,
                context,
                algorithm=self.config.aead,
            )
            envelopes.append(EncryptedShare(self.client_id, holder, ciphertext))
        self._move(Stage.MASKED_INPUT)
        return ShareKeysResponse(self.client_id, tuple(envelopes))

    def _on_masked_input(self, request: MaskedInputRequest) -> MaskedInput:
        received: set[str] = set()
        own_point = self.config.share_point(self.client_id)
        for item in request.shares:
            if item.recipient != self.client_id:
                raise InvalidMessageError(
                    f"share addressed to {item.recipient!r} relayed to {self.client_id!r}"
                )
            if item.sender not in self._peers:
                raise InvalidMessageError(
                    f"share from {item.sender!r}, who did not advertise to us"
                )
            if item.sender in received:
                raise InvalidMessageError(f"two shares from {item.sender!r}")
            context = EnvelopeContext(
                self.session_id, item.sender, self.client_id, SHARE_STAGE_LABEL
            )
            plaintext = unseal(
                self._encryption_key,
                self._peers[item.sender].encryption_key,
                item.ciphertext,
                context,
                algorithm=self.config.aead,
            )
            tag, owner, holder, b_share, s_share = decode_fields(plaintext, 5)
            if (
                tag != _SHARE_PLAINTEXT_TAG
                or owner.decode() != item.sender
                or holder.decode() != self.client_id
            ):
                raise InvalidMessageError(
                    f"share envelope from {item.sender!r} names other parties"
                )
            self._held[item.sender] = (
                shamir.Share(own_point, b_share),
                shamir.Share(own_point, s_share),
            )
            received.add(item.sender)
        self._require_neighbourhood(len(received), "neighbours sent shares")
        self._mask_peers = frozenset(received)
        assert self._input is not None
        if self._ledger is not None and self.config.dp is not None:
            # Spent once the noised update leaves, whether or not the round completes.
            self.privacy_spent = self._ledger.charge(self._ledger_events)
        masked = self._input.values.copy()
        expander = MaskExpander()
        expander.apply(
            masked, self_mask_seed(self._self_mask_secret, self.session_id, self.client_id)
        )
        for peer in sorted(self._mask_peers):
            seed = pairwise_mask_seed(
                self._masking_key,
                self.client_id,
                self._peers[peer].masking_key,
                peer,
                self.session_id,
            )
            expander.apply(masked, seed, subtract=client_subtracts(self.client_id, peer))
        ring = self.config.quantization.ring
        ring.reduce(masked)
        self._input = None  # the plain update is not kept past masking
        self._move(Stage.CONSISTENCY_CHECK)
        return MaskedInput(self.client_id, pack(masked, ring.bits))

    def _on_consistency(self, request: ConsistencyRequest) -> ConsistencySignature:
        survivors = self._check_survivor_set(request.survivors)
        self._survivors = survivors
        message = survivor_set_message(self.session_id, survivors)
        self._move(Stage.UNMASK)
        return ConsistencySignature(self.client_id, self._identity.sign(message))

    def _on_unmask(self, request: UnmaskRequest) -> UnmaskResponse:
        survivors = frozenset(request.survivors)
        if survivors != self._survivors or len(survivors) != len(request.survivors):
            raise SurvivorSetMismatchError(
                "the unmask request's survivor set differs from the one this client signed"
            )
        dropped = frozenset(request.dropped)
        both = sorted(survivors & dropped)
        if both:
            raise ConflictingShareRequestError(
                f"the server asks for both the self-mask share and the key share of {both}; "
                "revealing both would unmask their inputs, refusing"
            )
        signers = require_unique_survivor_set(
            self.session_id,
            self.config.size,
            self.policy.max_colluders,
            survivors,
            request.signatures,
            self._identities,
        )
        require_owner_signatures(frozenset(self._held) & survivors, signers)
        self_mask_shares, key_shares = [], []
        for owner, (b_share, s_share) in sorted(self._held.items()):
            if owner in survivors:
                self._record_reveal(owner, "self-mask")
                self_mask_shares.append(RevealedShare(owner, b_share.y))
            elif owner in dropped:
                self._record_reveal(owner, "masking-key")
                key_shares.append(RevealedShare(owner, s_share.y))
        self._move(Stage.DONE)
        self._wipe()
        return UnmaskResponse(self.client_id, tuple(self_mask_shares), tuple(key_shares))

    # --- helpers -----------------------------------------------------------------------

    def _check_survivor_set(self, listed: tuple[str, ...]) -> frozenset[str]:
        survivors = frozenset(listed)
        if len(survivors) != len(listed):
            raise InvalidMessageError("the survivor set lists a client twice")
        unknown = sorted(survivors - set(self.config.roster))
        if unknown:
            raise InvalidMessageError(f"survivor set names clients not on the roster: {unknown}")
        if self.client_id not in survivors:
            raise SurvivorSetMismatchError(
                f"{self.client_id!r} uploaded its masked input but is missing from the survivor set"
            )
        # A buffered round's K (config.min_survivors) is in the session: the server is held
        # to the smallest sum it announced, even when this client's own floor is lower.
        buffered = self.config.min_survivors or 0
        floor = max(self.config.threshold, self.policy.min_cohort, self._dp_floor, buffered)
        if len(survivors) < floor:
            raise CohortTooSmallError(
                f"survivor set of {len(survivors)} clients is below this client's floor of "
                f"{floor} (max of threshold, minimum cohort, a buffered round's K and, in a DP "
                "round, min_clients plus assumed colluders); refusing to sign"
            )
        quorum = consistency_quorum(self.config.size, self.policy.max_colluders)
        if len(survivors) < quorum:
            raise SurvivorQuorumError(
                f"survivor set of {len(survivors)} clients cannot gather the {quorum} signatures "
                f"(more than half of the roster of {self.config.size} plus "
                f"{self.policy.max_colluders} assumed colluders) that make it the round's only "
                "survivor set; refusing to sign"
            )
        strangers = sorted((survivors & self._neighbours) - self._mask_peers)
        if strangers:
            raise SurvivorSetMismatchError(
                f"survivors {strangers} are neighbours that never sent this client shares, so "
                "they cannot have masked with it: the server's views are inconsistent"
            )
        surviving_peers = len(survivors & self._mask_peers)
        if surviving_peers <= self.policy.max_colluders:
            raise CohortTooSmallError(
                f"{surviving_peers} of the neighbours this client masked with survive, not more "
                f"than the {self.policy.max_colluders} colluders it assumes: revealing its "
                "self-mask would let them and the server expose its update; refusing to sign"
            )
        return survivors

    def _require_neighbourhood(self, count: int, what: str) -> None:
        if count + 1 < self.config.threshold:
            raise ThresholdNotMetError(
                f"only {count} {what}; with this client that is {count + 1} share holders, "
                f"below the threshold {self.config.threshold}"
            )

    def _record_reveal(self, owner: str, kind: str) -> None:
        previous = self._revealed.setdefault(owner, kind)
        if previous != kind:
            raise ConflictingShareRequestError(
                f"already revealed the {previous} share of {owner!r}; refusing its {kind} share"
            )

    def _move(self, target: Stage) -> None:
        check_transition(self.stage, target)
        self.stage = target

    def _fail(self) -> None:
        if self.stage not in (Stage.DONE, Stage.FAILED):
            self.stage = Stage.FAILED
        self._wipe()

    def _wipe(self) -> None:
        """Drop every secret once the session can no longer use it."""
        self._held.clear()
        self._input = None


def check_round_dp(
    config: RoundConfig, policy: ClientPolicy, ledger: PrivacyLedger | None
) -> tuple[DpEvent, ...]:
    """The round's DP terms as this client judges them, before it sends anything: the
    events its ledger would be charged (empty without DP), or the refusal. Refused: a
    round without DP noise when the client has a budget, central DP unless the policy
    accepts it, noise sized for fewer honest clients than the roster leaves after the
    colluders the client assumes, and a round that would overspend the ledger.

    A module function so that a party can ask before it trains (commands.train_rounds),
    with the very checks the session applies when the round starts."""
    dp = config.dp
    if dp is None:
        if ledger is not None:
            raise PrivacyPolicyError(
                f"round {config.round_id} adds no differential-privacy noise, but this "
                "client has a privacy budget: refusing to send an un-noised update; ask "
                'the operator to run the server with dp = "client"'
            )
        return ()
    if dp.central:
        if ledger is not None and not policy.accept_central_dp:
            raise PrivacyPolicyError(
                f"round {config.round_id} runs central DP: the server sees the exact sum "
                "and adds the noise itself (it trusts the server); this client's policy "
                "requires client-level DP (set accept_central_dp to take part)"
            )
    else:
        honest = config.size - policy.max_colluders
        if honest < dp.config.min_clients:
            raise CohortTooSmallError(
                f"round {config.round_id} sizes its noise for min_clients="
                f"{dp.config.min_clients} honest clients, but its roster of {config.size} "
                f"less the {policy.max_colluders} colluders this client assumes leaves "
                f"{honest}: the released sum could carry less noise than accounted"
            )
    if ledger is None:
        return ()
    if not isinstance(ledger, PrivacyLedger):
        raise ConfigError(f"ledger must be a PrivacyLedger, got {type(ledger).__name__}")
    events = dp.events(dp.sampling_prob if policy.trust_server_sampling else 1.0)
    ledger.check(events)
    return events
