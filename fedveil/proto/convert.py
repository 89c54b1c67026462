"""Field-by-field conversion between secagg's protocol dataclasses and fedveil.v1 messages.

Why here: both the server and the client SDK speak protobuf on the wire and dataclasses to
the state machines, and one mapping keeps them in agreement. Nothing here decides
anything; validation stays in the state machines.
"""

from __future__ import annotations

from fedveil.errors import ConfigError, SessionMismatchError
from fedveil.proto import aggregation_pb2 as pb
from fedveil.secagg.crypto.envelope import AeadAlgorithm
from fedveil.secagg.dp.config import ClientDPConfig, Mechanism, NoisePlacement
from fedveil.secagg.dp.report import RoundPrivacyReport
from fedveil.secagg.modes import AggregationMode
from fedveil.secagg.protocol import messages as m
from fedveil.secagg.protocol.config import RoundConfig
from fedveil.secagg.protocol.dp import RoundDP
from fedveil.secagg.protocol.stages import Stage
from fedveil.secagg.quantize import QuantizationConfig

STAGE_TO_PB = {
    Stage.ADVERTISE_KEYS: pb.ROUND_STAGE_ADVERTISE_KEYS,
    Stage.SHARE_KEYS: pb.ROUND_STAGE_SHARE_KEYS,
    Stage.MASKED_INPUT: pb.ROUND_STAGE_MASKED_INPUT,
    Stage.CONSISTENCY_CHECK: pb.ROUND_STAGE_CONSISTENCY_CHECK,
    Stage.UNMASK: pb.ROUND_STAGE_UNMASK,
    Stage.DONE: pb.ROUND_STAGE_DONE,
    Stage.FAILED: pb.ROUND_STAGE_FAILED,
}

# The one table between the aggregation modes and their wire numbers (the `mode` of a
# RoundSpec and of a result header): nothing else names pb.AGGREGATION_MODE_* by mode.
MODE_TO_PB: dict[AggregationMode, pb.AggregationMode] = {
    AggregationMode.SECAGG: pb.AGGREGATION_MODE_SECAGG,
    AggregationMode.CKKS: pb.AGGREGATION_MODE_CKKS,
    AggregationMode.PLAINTEXT: pb.AGGREGATION_MODE_PLAINTEXT,
}
_MODE_FROM_PB: dict[int, AggregationMode] = {number: mode for mode, number in MODE_TO_PB.items()}


def mode_to_wire(mode: AggregationMode) -> pb.AggregationMode:
    """The protobuf number of `mode`."""
    return MODE_TO_PB[mode]


def mode_from_wire(number: int) -> AggregationMode | None:
    """The mode a wire number names; None for 0 (unset) or a number this build does not
    know, which a client refuses (it cannot know what such a mode reveals)."""
    return _MODE_FROM_PB.get(int(number))


def advertisement_to_pb(adv: m.KeyAdvertisement) -> pb.KeyAdvertisement:
    return pb.KeyAdvertisement(
        client_id=adv.client_id,
        encryption_key=adv.encryption_key,
        masking_key=adv.masking_key,
        self_mask_commitment=adv.self_mask_commitment,
        signature=adv.signature,
    )


def advertisement_from_pb(msg: pb.KeyAdvertisement) -> m.KeyAdvertisement:
    return m.KeyAdvertisement(
        client_id=msg.client_id,
        encryption_key=bytes(msg.encryption_key),
        masking_key=bytes(msg.masking_key),
        self_mask_commitment=bytes(msg.self_mask_commitment),
        signature=bytes(msg.signature),
    )


def share_to_pb(share: m.EncryptedShare) -> pb.EncryptedShare:
    return pb.EncryptedShare(
        sender=share.sender, recipient=share.recipient, ciphertext=share.ciphertext
    )


def share_from_pb(msg: pb.EncryptedShare) -> m.EncryptedShare:
    return m.EncryptedShare(msg.sender, msg.recipient, bytes(msg.ciphertext))


def neighbour_keys_to_pb(request: m.ShareKeysRequest) -> pb.NeighbourKeys:
    return pb.NeighbourKeys(advertisements=[advertisement_to_pb(a) for a in request.advertisements])


def neighbour_keys_from_pb(msg: pb.NeighbourKeys) -> m.ShareKeysRequest:
    return m.ShareKeysRequest(tuple(advertisement_from_pb(a) for a in msg.advertisements))


def share_keys_to_pb(round_id: int, response: m.ShareKeysResponse) -> pb.ShareKeysRequest:
    return pb.ShareKeysRequest(
        round_id=round_id,
        client_id=response.client_id,
        shares=[share_to_pb(s) for s in response.shares],
    )


def share_keys_from_pb(msg: pb.ShareKeysRequest) -> m.ShareKeysResponse:
    return m.ShareKeysResponse(msg.client_id, tuple(share_from_pb(s) for s in msg.shares))


def relayed_to_pb(request: m.MaskedInputRequest) -> pb.RelayedShares:
    return pb.RelayedShares(shares=[share_to_pb(s) for s in request.shares])


def relayed_from_pb(msg: pb.RelayedShares) -> m.MaskedInputRequest:
    return m.MaskedInputRequest(tuple(share_from_pb(s) for s in msg.shares))


def survivors_to_pb(request: m.ConsistencyRequest) -> pb.SurvivorSet:
    return pb.SurvivorSet(survivors=list(request.survivors))


def survivors_from_pb(msg: pb.SurvivorSet) -> m.ConsistencyRequest:
    return m.ConsistencyRequest(tuple(msg.survivors))


def signature_to_pb(sig: m.ConsistencySignature) -> pb.SurvivorSignature:
    return pb.SurvivorSignature(client_id=sig.client_id, signature=sig.signature)


def signature_from_pb(msg: pb.SurvivorSignature) -> m.ConsistencySignature:
    return m.ConsistencySignature(msg.client_id, bytes(msg.signature))


def instructions_to_pb(request: m.UnmaskRequest) -> pb.UnmaskInstructions:
    return pb.UnmaskInstructions(
        survivors=list(request.survivors),
        dropped=list(request.dropped),
        signatures=[signature_to_pb(s) for s in request.signatures],
    )


def instructions_from_pb(msg: pb.UnmaskInstructions) -> m.UnmaskRequest:
    return m.UnmaskRequest(
        survivors=tuple(msg.survivors),
        dropped=tuple(msg.dropped),
        signatures=tuple(signature_from_pb(s) for s in msg.signatures),
    )


def unmask_to_pb(round_id: int, response: m.UnmaskResponse) -> pb.UnmaskRequest:
    return pb.UnmaskRequest(
        round_id=round_id,
        client_id=response.client_id,
        self_mask_shares=[
            pb.RevealedShare(owner=s.owner, share=s.share) for s in response.self_mask_shares
        ],
        key_shares=[pb.RevealedShare(owner=s.owner, share=s.share) for s in response.key_shares],
    )


def unmask_from_pb(msg: pb.UnmaskRequest) -> m.UnmaskResponse:
    return m.UnmaskResponse(
        client_id=msg.client_id,
        self_mask_shares=tuple(
            m.RevealedShare(s.owner, bytes(s.share)) for s in msg.self_mask_shares
        ),
        key_shares=tuple(m.RevealedShare(s.owner, bytes(s.share)) for s in msg.key_shares),
    )


# --- differential privacy ---------------------------------------------------------------

_MECHANISM_TO_PB = {
    Mechanism.DISCRETE_GAUSSIAN: pb.DP_MECHANISM_DISCRETE_GAUSSIAN,
    Mechanism.SKELLAM: pb.DP_MECHANISM_SKELLAM,
}
_MECHANISM_FROM_PB = {v: k for k, v in _MECHANISM_TO_PB.items()}
_KIND_TO_PB = {"client": pb.DP_KIND_CLIENT, "central": pb.DP_KIND_CENTRAL}
_KIND_FROM_PB = {v: k for k, v in _KIND_TO_PB.items()}


def dp_to_spec(dp: RoundDP) -> pb.DpSpec:
    c = dp.config
    return pb.DpSpec(
        kind=_KIND_TO_PB[dp.kind],
        noise_multiplier=c.noise_multiplier,
        clip_norm=c.clip_norm,
        target_epsilon=dp.target_epsilon,
        delta=dp.delta,
        mechanism=_MECHANISM_TO_PB[c.mechanism],
        min_clients=c.min_clients,
        rotate=c.rotate,
        scale=c.effective_scale,
        sampling_prob=dp.sampling_prob,
        planned_rounds=dp.planned_rounds,
        rounding_beta=c.rounding_beta,
        coordinate_clip_prob=c.coordinate_clip_prob,
        overflow_prob=c.overflow_prob,
    )


def dp_from_spec(spec: pb.RoundSpec) -> RoundDP | None:
    """The round's DP terms (None without client-level or central DP).

    The DP configuration is rebuilt and validated here, ring bound included, so a spec
    whose scale would let the noised sum wrap is refused before any key is derived.
    """
    dp = spec.dp
    if dp.kind not in _KIND_FROM_PB:
        return None  # no DP, or sample-level DP-SGD, which each client runs on its own
    if dp.mechanism not in _MECHANISM_FROM_PB:
        raise ConfigError(f"round {spec.round_id}: unknown DP mechanism {dp.mechanism}")
    placement = NoisePlacement.SERVER if dp.kind == pb.DP_KIND_CENTRAL else NoisePlacement.CLIENTS
    config = ClientDPConfig(
        clip_norm=dp.clip_norm,
        noise_multiplier=dp.noise_multiplier,
        min_clients=dp.min_clients,
        max_cohort=spec.quantization.max_cohort,
        dim=spec.dimension,
        bits=spec.quantization.bits,
        mechanism=_MECHANISM_FROM_PB[dp.mechanism],
        placement=placement,
        rotate=dp.rotate,
        scale=dp.scale,
        rounding_beta=dp.rounding_beta,
        coordinate_clip_prob=dp.coordinate_clip_prob,
        overflow_prob=dp.overflow_prob,
    )
    return RoundDP(
        config,
        sampling_prob=dp.sampling_prob,
        delta=dp.delta,
        planned_rounds=dp.planned_rounds,
        target_epsilon=dp.target_epsilon,
    )


def privacy_to_pb(report: RoundPrivacyReport) -> pb.PrivacyReport:
    return pb.PrivacyReport(
        kind=_KIND_TO_PB[report.kind],
        epsilon=report.epsilon,
        delta=report.delta,
        round_epsilon=report.round_epsilon,
        rounds=report.rounds,
        noise_multiplier=report.noise_multiplier,
        clip_norm=report.clip_norm,
        mechanism=_MECHANISM_TO_PB[Mechanism(report.mechanism)],
        min_clients=report.min_clients,
        sampling_prob=report.sampling_prob,
        accountant=report.accountant,
        rigorous=report.rigorous,
        noise_std=report.noise_std,
        contributors=report.contributors,
        trusts_server=report.trusts_server,
        note=report.note,
    )


def privacy_from_pb(msg: pb.PrivacyReport) -> RoundPrivacyReport:
    if msg.kind not in _KIND_FROM_PB or msg.mechanism not in _MECHANISM_FROM_PB:
        raise ConfigError(
            f"the result's privacy report names DP kind {msg.kind} / mechanism {msg.mechanism}"
        )
    return RoundPrivacyReport(
        kind=_KIND_FROM_PB[msg.kind],
        epsilon=msg.epsilon,
        delta=msg.delta,
        round_epsilon=msg.round_epsilon,
        rounds=msg.rounds,
        noise_multiplier=msg.noise_multiplier,
        clip_norm=msg.clip_norm,
        mechanism=_MECHANISM_FROM_PB[msg.mechanism].value,
        min_clients=msg.min_clients,
        sampling_prob=msg.sampling_prob,
        accountant=msg.accountant,
        rigorous=msg.rigorous,
        noise_std=msg.noise_std,
        contributors=msg.contributors,
        trusts_server=msg.trusts_server,
        note=msg.note,
    )


# --- round specification ----------------------------------------------------------------

_AEADS = {a.value: a for a in AeadAlgorithm}


def config_to_spec(
    config: RoundConfig,
    *,
    min_cohort: int,
    chunk_bytes: int,
    stage_timeout_s: float,
) -> pb.RoundSpec:
    """The RoundSpec a server publishes for a SecAgg+ round."""
    q = config.quantization
    return pb.RoundSpec(
        round_id=config.round_id,
        mode=mode_to_wire(AggregationMode.SECAGG),
        dimension=config.dimension,
        quantization=pb.QuantizationSpec(
            clip=q.clip,
            bits=q.bits,
            max_cohort=q.max_cohort,
            max_weight=q.max_weight,
            scale=q.effective_scale,
        ),
        threshold=config.threshold,
        neighbours=config.neighbours,
        min_cohort=min_cohort,
        max_cohort=q.max_cohort,
        roster=list(config.roster),
        model_hash=config.model_hash,
        aead=config.aead.value,
        session_id=config.session_id,
        chunk_bytes=chunk_bytes,
        stage_timeout_s=stage_timeout_s,
        dp=dp_to_spec(config.dp) if config.dp is not None else None,
        buffer_size=config.min_survivors or 0,
    )


def spec_to_config(spec: pb.RoundSpec) -> RoundConfig:
    """Rebuild the RoundConfig from a published spec and check the server's session id.

    A client recomputes the session id from the fields it will bind into its keys; a spec
    whose session id disagrees is refused before any key is derived.
    """
    if mode_from_wire(spec.mode) is not AggregationMode.SECAGG:
        raise ConfigError(f"round {spec.round_id} is not a SecAgg round (mode {spec.mode})")
    if spec.aead not in _AEADS:
        raise ConfigError(f"unknown AEAD {spec.aead!r}; expected one of {sorted(_AEADS)}")
    q = spec.quantization
    dp = dp_from_spec(spec)
    quantization = (
        dp.config.quantization
        if dp is not None
        else QuantizationConfig(
            clip=q.clip, bits=q.bits, max_cohort=q.max_cohort, max_weight=q.max_weight
        )
    )
    config = RoundConfig(
        round_id=spec.round_id,
        roster=tuple(spec.roster),
        threshold=spec.threshold,
        neighbours=spec.neighbours,
        dimension=spec.dimension,
        quantization=quantization,
        model_hash=bytes(spec.model_hash),
        aead=_AEADS[spec.aead],
        dp=dp,
        min_survivors=int(spec.buffer_size) or None,
    )
    if config.session_id != bytes(spec.session_id):
        raise SessionMismatchError(
            f"round {spec.round_id}: the session id the server published does not match the "
            "one computed from the round's fields; refusing (model or config inconsistency)"
        )
    return config
