"""Journal encoding of accepted messages, and the replay that rebuilds an open round.

Why apart from the coordinator: what is written and how it is read back must stay in
lockstep; keeping both directions in one small file makes a mismatch obvious.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from fedveil.errors import FedveilError
from fedveil.proto import aggregation_pb2 as pb
from fedveil.proto import convert, convert_ckks
from fedveil.secagg.ckks.messages import CkksAdvertisement, KeyPublication
from fedveil.secagg.ckks.server_round import CkksServerRound
from fedveil.secagg.crypto.identity import VerifyingIdentity
from fedveil.secagg.modes import AggregationMode
from fedveil.secagg.protocol import messages as m
from fedveil.secagg.protocol.server import ServerRound
from fedveil.server.journal import OpenRound, RoundJournal
from fedveil.server.plaintext import PlaintextRound


def encode_message(round_id: int, message: object) -> tuple[str, str, bytes]:
    """(kind, client_id, protobuf bytes) of a message the round accepted."""
    if isinstance(message, CkksAdvertisement):
        payload = convert_ckks.advertisement_to_pb(message).SerializeToString()
        return "ckks-advertise", message.client_id, payload
    if isinstance(message, KeyPublication):
        payload = convert_ckks.publication_to_pb(round_id, message).SerializeToString()
        return "ckks-publish", message.client_id, payload
    if isinstance(message, m.KeyAdvertisement):
        return (
            "advertise",
            message.client_id,
            convert.advertisement_to_pb(message).SerializeToString(),
        )
    if isinstance(message, m.ShareKeysResponse):
        payload = convert.share_keys_to_pb(round_id, message).SerializeToString()
        return "share-keys", message.client_id, payload
    if isinstance(message, m.ConsistencySignature):
        return "signature", message.client_id, convert.signature_to_pb(message).SerializeToString()
    if isinstance(message, m.UnmaskResponse):
        return (
            "unmask",
            message.client_id,
            convert.unmask_to_pb(round_id, message).SerializeToString(),
        )
    raise TypeError(f"no journal encoding for {type(message).__name__}")


def _decode(kind: str, payload: bytes) -> object:
    if kind == "advertise":
        return convert.advertisement_from_pb(pb.KeyAdvertisement.FromString(payload))
    if kind == "share-keys":
        return convert.share_keys_from_pb(pb.ShareKeysRequest.FromString(payload))
    if kind == "signature":
        return convert.signature_from_pb(pb.SurvivorSignature.FromString(payload))
    if kind == "unmask":
        return convert.unmask_from_pb(pb.UnmaskRequest.FromString(payload))
    raise ValueError(f"unknown journal event kind {kind!r}")


def replay(
    journal: RoundJournal, record: OpenRound, roster: Mapping[str, VerifyingIdentity]
) -> tuple[ServerRound | PlaintextRound | CkksServerRound, pb.RoundSpec]:
    """Rebuild a ServerRound by feeding it the journalled events in their original order.

    Uploads that were rolled back were erased from the journal; every event goes through
    the same validating entry points as when it first arrived, so a corrupted journal
    raises instead of producing a wrong sum.
    """
    spec = pb.RoundSpec.FromString(record.spec)
    mode = convert.mode_from_wire(spec.mode)
    if mode is AggregationMode.PLAINTEXT:
        return _replay_plaintext(journal, record, spec), spec
    if mode is AggregationMode.CKKS:
        return _replay_ckks(journal, record, spec, roster), spec
    config = convert.spec_to_config(spec)
    seeds = [event.payload for event in record.events if event.kind == "dp-noise-seed"]
    server = ServerRound(
        config,
        roster,
        chunk_bytes=spec.chunk_bytes,
        quorum=int(spec.min_cohort),
        noise_seed=seeds[0] if seeds else None,
    )
    for event in record.events:
        if event.kind == "dp-noise-seed":
            continue  # central DP: the server's noise key, used above
        if event.kind == "chunk":
            index = int(event.payload.decode())
            server.begin_masked_input(event.client_id, server.uploads.total_bytes)
            server.add_masked_chunk(
                event.client_id, index, journal.chunk(record.round_id, event.client_id, index)
            )
        elif event.kind == "finish":
            server.finish_masked_input(event.client_id, event.payload)
        elif event.kind == "advance":
            # A stage close that failed the round the first time fails it again: FAILED.
            with contextlib.suppress(FedveilError):
                server.advance()
        else:
            server.receive(_decode(event.kind, event.payload))
    return server, spec


def _replay_plaintext(
    journal: RoundJournal, record: OpenRound, spec: pb.RoundSpec
) -> PlaintextRound:
    server = PlaintextRound(
        int(spec.round_id),
        spec.roster,
        int(spec.dimension),
        quorum=int(spec.threshold),
        max_weight=int(spec.quantization.max_weight),
        chunk_bytes=int(spec.chunk_bytes),
        clip=float(spec.quantization.clip),
    )
    for event in record.events:
        if event.kind == "plain-begin":
            server.begin_upload(event.client_id, server.uploads.total_bytes, int(event.payload))
        elif event.kind == "chunk":
            index = int(event.payload.decode())
            data = journal.chunk(record.round_id, event.client_id, index)
            server.add_chunk(event.client_id, index, data)
        elif event.kind == "finish":
            server.finish_upload(event.client_id, event.payload)
        elif event.kind == "advance":
            with contextlib.suppress(FedveilError):
                server.advance()
    return server


def _replay_ckks(
    journal: RoundJournal,
    record: OpenRound,
    spec: pb.RoundSpec,
    roster: Mapping[str, VerifyingIdentity],
) -> CkksServerRound:
    config = convert_ckks.spec_to_ckks_config(spec)
    epoch = None if config.distributes_keys else journal.epoch_keys(config.key_epoch)
    server = CkksServerRound(config, roster, epoch)
    for event in record.events:
        if event.kind == "ckks-advertise":
            advert = pb.KeyAdvertisement.FromString(event.payload)
            server.receive_advertisement(convert_ckks.advertisement_from_pb(advert))
        elif event.kind == "ckks-publish":
            publication = pb.CkksKeyPublication.FromString(event.payload)
            server.publish(convert_ckks.publication_from_pb(publication))
        elif event.kind == "ckks-begin":
            total = int(event.payload.decode())
            server.begin_upload(event.client_id, total, _epoch_fingerprint(server))
        elif event.kind == "chunk":
            index = int(event.payload.decode())
            data = journal.chunk(record.round_id, event.client_id, index)
            server.add_chunk(event.client_id, index, data)
        elif event.kind == "finish":
            server.finish_upload(event.client_id, event.payload)
        elif event.kind == "advance":
            with contextlib.suppress(FedveilError):
                server.advance()
    return server


def _epoch_fingerprint(server: CkksServerRound) -> bytes:
    """The key the round's uploads are under (known once the epoch's keys are)."""
    if server.epoch is None:
        raise ValueError("journal holds a ciphertext upload before the epoch's keys")
    return server.epoch.fingerprint
