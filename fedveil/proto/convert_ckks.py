"""Conversions between the CKKS-mode protocol dataclasses and fedveil.v1 protobuf messages.

Apart from proto/convert.py because the two modes share no message shapes beyond the
round spec's common fields; each direction of each message lives next to its inverse.
"""

from __future__ import annotations

from fedveil.errors import ConfigError, InvalidMessageError, SessionMismatchError
from fedveil.proto import aggregation_pb2 as pb
from fedveil.secagg.ckks.config import CkksRoundConfig
from fedveil.secagg.ckks.messages import (
    CkksAdvertisement,
    KeyDelivery,
    KeyPublication,
    WrappedKey,
)
from fedveil.secagg.crypto.envelope import AeadAlgorithm

_AEADS = {a.value: a for a in AeadAlgorithm}


def ckks_config_to_spec(
    config: CkksRoundConfig,
    *,
    chunk_bytes: int,
    stage_timeout_s: float,
    rotate_every: int,
) -> pb.RoundSpec:
    """The RoundSpec a server publishes for a CKKS round."""
    return pb.RoundSpec(
        round_id=config.round_id,
        mode=pb.AGGREGATION_MODE_CKKS,
        dimension=config.dimension,
        quantization=pb.QuantizationSpec(clip=config.value_bound, max_weight=config.max_weight),
        threshold=config.min_cohort,
        min_cohort=config.min_cohort,
        max_cohort=len(config.roster),
        roster=list(config.roster),
        model_hash=config.model_hash,
        aead=config.aead.value,
        session_id=config.session_id,
        chunk_bytes=chunk_bytes,
        stage_timeout_s=stage_timeout_s,
        ckks=pb.CkksSpec(
            preset=config.preset_name,
            key_epoch=config.key_epoch,
            key_holder=config.key_holder,
            key_fingerprint=config.key_fingerprint,
            value_bound=config.value_bound,
            rotate_every=rotate_every,
            chunk_count=config.chunk_count,
        ),
    )


def spec_to_ckks_config(spec: pb.RoundSpec) -> CkksRoundConfig:
    """Rebuild the round's configuration and check the server's session id."""
    if spec.mode != pb.AGGREGATION_MODE_CKKS:
        raise ConfigError(f"round {spec.round_id} is not a CKKS round (mode {spec.mode})")
    if spec.aead not in _AEADS:
        raise ConfigError(f"unknown AEAD {spec.aead!r}; expected one of {sorted(_AEADS)}")
    c = spec.ckks
    config = CkksRoundConfig(
        round_id=int(spec.round_id),
        roster=tuple(spec.roster),
        dimension=int(spec.dimension),
        preset_name=c.preset,
        key_epoch=int(c.key_epoch),
        key_holder=c.key_holder,
        max_weight=int(spec.quantization.max_weight),
        value_bound=float(c.value_bound),
        min_cohort=int(spec.min_cohort),
        model_hash=bytes(spec.model_hash),
        key_fingerprint=bytes(c.key_fingerprint),
        aead=_AEADS[spec.aead],
    )
    if config.session_id != bytes(spec.session_id):
        raise SessionMismatchError(
            f"round {spec.round_id}: the session id the server published does not match the "
            "one computed from the round's fields; refusing (config inconsistency)"
        )
    if c.chunk_count != config.chunk_count:
        raise ConfigError(
            f"round {spec.round_id} announces {c.chunk_count} ciphertexts per upload; the "
            f"preset and dimension give {config.chunk_count}"
        )
    return config


def advertisement_to_pb(advert: CkksAdvertisement) -> pb.KeyAdvertisement:
    """A CKKS advertisement travels as a KeyAdvertisement with only one key set."""
    return pb.KeyAdvertisement(
        client_id=advert.client_id,
        encryption_key=advert.encryption_key,
        signature=advert.signature,
    )


def advertisement_from_pb(msg: pb.KeyAdvertisement) -> CkksAdvertisement:
    if msg.masking_key or msg.self_mask_commitment:
        raise InvalidMessageError(
            "a CKKS round advertises one encryption key: leave masking_key and "
            "self_mask_commitment empty"
        )
    return CkksAdvertisement(msg.client_id, bytes(msg.encryption_key), bytes(msg.signature))


def publication_to_pb(round_id: int, publication: KeyPublication) -> pb.CkksKeyPublication:
    return pb.CkksKeyPublication(
        round_id=round_id,
        client_id=publication.client_id,
        key_epoch=publication.key_epoch,
        key_fingerprint=publication.fingerprint,
        public_context=publication.public_context,
        sealed_context=publication.sealed_context,
        wrapped_keys=[
            pb.CkksWrappedKey(recipient=w.recipient, ciphertext=w.ciphertext)
            for w in publication.wrapped_keys
        ],
    )


def publication_from_pb(msg: pb.CkksKeyPublication) -> KeyPublication:
    return KeyPublication(
        client_id=msg.client_id,
        key_epoch=int(msg.key_epoch),
        fingerprint=bytes(msg.key_fingerprint),
        public_context=bytes(msg.public_context),
        sealed_context=bytes(msg.sealed_context),
        wrapped_keys=tuple(WrappedKey(w.recipient, bytes(w.ciphertext)) for w in msg.wrapped_keys),
    )


def delivery_to_pb(delivery: KeyDelivery) -> pb.CkksKeyDelivery:
    return pb.CkksKeyDelivery(
        key_epoch=delivery.key_epoch,
        key_fingerprint=delivery.fingerprint,
        holder=advertisement_to_pb(delivery.holder),
        sealed_context=delivery.sealed_context,
        wrapped_key=delivery.wrapped_key,
    )


def delivery_from_pb(msg: pb.CkksKeyDelivery) -> KeyDelivery:
    return KeyDelivery(
        key_epoch=int(msg.key_epoch),
        fingerprint=bytes(msg.key_fingerprint),
        holder=advertisement_from_pb(msg.holder),
        sealed_context=bytes(msg.sealed_context),
        wrapped_key=bytes(msg.wrapped_key),
    )
