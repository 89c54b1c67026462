"""CKKS round state machines, in memory: key hand-over, encrypted sum, and what each side refuses.

Why in memory: these are the protocol's claims without the transport — the server only
ever holds a public context, a substituted or swapped key is caught by the client, bad
uploads are refused without touching the sum, and dropouts need no recovery. The gRPC
tests (tests/server/test_service_ckks.py) check the same round over mutual TLS.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

import numpy as np
import pytest

from fedveil.errors import (
    CohortTooSmallError,
    ConfigError,
    CryptoError,
    DuplicateSubmissionError,
    InvalidMessageError,
    InvalidSignatureError,
    KeySubstitutionError,
    StageError,
    ThresholdNotMetError,
    UnknownClientError,
)
from fedveil.secagg.ckks.client_session import CkksClientSession, EpochKeyStore
from fedveil.secagg.ckks.config import CkksRoundConfig
from fedveil.secagg.ckks.keys import CkksKeyring
from fedveil.secagg.ckks.messages import CkksAdvertisement, KeyPublication
from fedveil.secagg.ckks.server_round import CkksServerRound
from fedveil.secagg.crypto.identity import SigningIdentity
from fedveil.secagg.protocol.config import ClientPolicy
from fedveil.secagg.protocol.stages import Stage

D = 5_000  # two ciphertexts at 4096 slots, the second one short
MAX_WEIGHT = 1000
IDS = ("c0", "c1", "c2", "c3")
POLICY = ClientPolicy(min_cohort=2, min_threshold=2)


def _config(round_id: int = 1, fingerprint: bytes = b"", epoch: int = 0) -> CkksRoundConfig:
    return CkksRoundConfig(
        round_id=round_id,
        roster=IDS,
        dimension=D,
        preset_name="add-only-8192",
        key_epoch=epoch,
        key_holder="c0",
        max_weight=MAX_WEIGHT,
        value_bound=1.0,
        min_cohort=2,
        model_hash=hashlib.sha256(b"model").digest(),
        key_fingerprint=fingerprint,
    )


@dataclass
class Federation:
    identities: dict[str, SigningIdentity]
    stores: dict[str, EpochKeyStore]
    updates: dict[str, np.ndarray]
    weights: dict[str, int]

    @property
    def roster(self) -> dict:
        return {c: i.verifying() for c, i in self.identities.items()}

    def sessions(self, config: CkksRoundConfig) -> dict[str, CkksClientSession]:
        return {
            c: CkksClientSession(config, c, self.identities[c], self.roster, self.stores[c], POLICY)
            for c in IDS
        }

    def expected_mean(self, contributors: tuple[str, ...]) -> np.ndarray:
        w = np.array([self.weights[c] for c in contributors], dtype=np.float64)
        x = np.stack([np.clip(self.updates[c], -1, 1) for c in contributors])
        return (w[:, None] * x).sum(0) / w.sum()


@pytest.fixture()
def federation() -> Federation:
    rng = np.random.default_rng(5)
    return Federation(
        identities={c: SigningIdentity.generate() for c in IDS},
        stores={c: EpochKeyStore() for c in IDS},
        updates={c: rng.uniform(-1.2, 1.2, D) for c in IDS},
        weights={c: int(rng.integers(1, MAX_WEIGHT)) for c in IDS},
    )


def _distribute(
    fed: Federation, server: CkksServerRound, sessions: dict[str, CkksClientSession]
) -> None:
    """Advertise -> publish -> deliver, every client honest."""
    for session in sessions.values():
        server.receive_advertisement(session.advertise())
    server.advance()
    publication = None
    for cid, session in sessions.items():
        answer = session.handle_advertisements(server.advertisements_for(cid))
        if answer is not None:
            publication = answer
    assert publication is not None
    server.publish(publication)
    server.advance()
    for cid, session in sessions.items():
        if not session.is_key_holder:
            session.handle_delivery(server.delivery_for(cid))


def _upload(server: CkksServerRound, session: CkksClientSession, chunks: list[bytes]) -> None:
    cid = session.client_id
    total = sum(len(c) for c in chunks)
    server.begin_upload(cid, total, session.fingerprint)
    for index, chunk in enumerate(chunks):
        server.add_chunk(cid, index, chunk)
    server.finish_upload(cid, hashlib.sha256(b"".join(chunks)).digest())


def _run_uploads(
    fed: Federation,
    server: CkksServerRound,
    sessions: dict[str, CkksClientSession],
    skip: tuple[str, ...] = (),
) -> None:
    for cid, session in sessions.items():
        if cid not in skip:
            _upload(server, session, session.encrypt(fed.updates[cid], fed.weights[cid]))
    server.advance()


def _check_mean(fed: Federation, server: CkksServerRound, session: CkksClientSession) -> None:
    assert server.stage is Stage.DONE and server.result is not None
    mean, total = session.decrypt(server.result)
    expected = fed.expected_mean(server.result.survivors)
    assert np.max(np.abs(mean - expected)) <= 1e-6
    assert round(total) == sum(fed.weights[c] for c in server.result.survivors)


def test_a_key_round_then_a_round_reusing_the_epoch_key(federation: Federation) -> None:
    config = _config()
    server = CkksServerRound(config, federation.roster)
    sessions = federation.sessions(config)
    _distribute(federation, server, sessions)
    fingerprints = {s.fingerprint for s in sessions.values()}
    assert len(fingerprints) == 1 and server.epoch is not None
    assert server.epoch.fingerprint in fingerprints
    _run_uploads(federation, server, sessions)
    assert server.result is not None and server.result.survivors == IDS
    for session in sessions.values():
        _check_mean(federation, server, session)

    # round 2, same epoch: no key stages, the stored keys encrypt and decrypt
    second = _config(2, server.epoch.fingerprint)
    server2 = CkksServerRound(second, federation.roster, server.epoch)
    assert server2.stage is Stage.MASKED_INPUT
    sessions2 = federation.sessions(second)
    assert all(s.has_key for s in sessions2.values())
    with pytest.raises(Exception, match="nothing to advertise"):
        sessions2["c1"].advertise()
    _run_uploads(federation, server2, sessions2, skip=("c3",))  # a dropout: nothing to recover
    assert server2.result is not None and server2.result.survivors == ("c0", "c1", "c2")
    _check_mean(federation, server2, sessions2["c3"])


def test_the_server_holds_only_a_public_context_and_cannot_decrypt(
    federation: Federation,
) -> None:
    config = _config()
    server = CkksServerRound(config, federation.roster)
    sessions = federation.sessions(config)
    _distribute(federation, server, sessions)
    assert server.epoch is not None
    public = CkksKeyring.from_bytes(server.epoch.public_context)
    assert public.is_private is False
    assert public.context.has_secret_key() is False
    assert server.uploads is not None
    _run_uploads(federation, server, sessions)
    assert server.result is not None
    from fedveil.secagg.ckks.codec import decrypt_mean

    with pytest.raises(ConfigError, match="secret"):
        decrypt_mean(public, list(server.result.ciphertexts), D, max_weight=MAX_WEIGHT)


def test_a_publication_holding_the_secret_key_is_refused(federation: Federation) -> None:
    config = _config()
    server = CkksServerRound(config, federation.roster)
    sessions = federation.sessions(config)
    for session in sessions.values():
        server.receive_advertisement(session.advertise())
    server.advance()
    publication = sessions["c0"].handle_advertisements(server.advertisements_for("c0"))
    assert publication is not None
    keyring = sessions["c0"]._keys.get(publication.fingerprint)
    assert keyring is not None
    leaky = dataclasses.replace(publication, public_context=keyring.to_bytes())
    with pytest.raises(CryptoError, match="secret key"):
        server.publish(leaky)
    server.publish(publication)  # the honest one is still accepted: nothing was spent
    assert server.publication == publication


@pytest.mark.parametrize("fault", ["not_holder", "epoch", "missing_recipient", "extra", "short"])
def test_the_server_refuses_a_malformed_publication(federation: Federation, fault: str) -> None:
    config = _config()
    server = CkksServerRound(config, federation.roster)
    sessions = federation.sessions(config)
    for session in sessions.values():
        server.receive_advertisement(session.advertise())
    server.advance()
    publication = sessions["c0"].handle_advertisements(server.advertisements_for("c0"))
    assert publication is not None
    wrapped = publication.wrapped_keys
    if fault == "not_holder":
        bad = dataclasses.replace(publication, client_id="c1")
    elif fault == "epoch":
        bad = dataclasses.replace(publication, key_epoch=7)
    elif fault == "missing_recipient":
        bad = dataclasses.replace(publication, wrapped_keys=wrapped[1:])
    elif fault == "extra":
        bad = dataclasses.replace(publication, wrapped_keys=(*wrapped, wrapped[0]))
    else:
        first = dataclasses.replace(wrapped[0], ciphertext=wrapped[0].ciphertext[:-1])
        bad = dataclasses.replace(publication, wrapped_keys=(first, *wrapped[1:]))
    with pytest.raises((InvalidMessageError, UnknownClientError)):
        server.publish(bad)
    assert server.publication is None and server.expected_senders() == {"c0"}


def test_a_substituted_advertisement_is_caught_by_the_server_and_the_clients(
    federation: Federation,
) -> None:
    config = _config()
    server = CkksServerRound(config, federation.roster)
    sessions = federation.sessions(config)
    honest = sessions["c1"].advertise()
    forged = CkksAdvertisement("c1", b"\x09" * 32, honest.signature)
    with pytest.raises(InvalidSignatureError):
        server.receive_advertisement(forged)
    # a malicious server relays the forged key anyway: the holder refuses to seal to it
    adverts = [s.advertise() for s in sessions.values()]
    adverts[1] = forged
    with pytest.raises(KeySubstitutionError):
        sessions["c0"].handle_advertisements(adverts)


def test_a_delivery_naming_another_holder_key_is_refused(federation: Federation) -> None:
    config = _config()
    server = CkksServerRound(config, federation.roster)
    sessions = federation.sessions(config)
    for session in sessions.values():
        server.receive_advertisement(session.advertise())
    server.advance()
    publication = None
    for cid, session in sessions.items():
        publication = session.handle_advertisements(server.advertisements_for(cid)) or publication
    assert publication is not None
    server.publish(publication)
    server.advance()
    delivery = server.delivery_for("c1")
    swapped = dataclasses.replace(delivery, holder=server.advertisements["c2"])
    with pytest.raises(KeySubstitutionError):
        sessions["c1"].handle_delivery(swapped)
    sessions["c1"].handle_delivery(delivery)
    assert sessions["c1"].has_key


@pytest.mark.parametrize("fault", ["fingerprint", "malformed", "short_count", "digest", "order"])
def test_a_bad_upload_is_refused_and_the_round_goes_on(federation: Federation, fault: str) -> None:
    config = _config()
    server = CkksServerRound(config, federation.roster)
    sessions = federation.sessions(config)
    _distribute(federation, server, sessions)
    bad = sessions["c3"]
    chunks = bad.encrypt(federation.updates["c3"], federation.weights["c3"])
    total = sum(len(c) for c in chunks)
    with pytest.raises(InvalidMessageError):
        if fault == "fingerprint":
            server.begin_upload("c3", total, b"\x01" * 32)
        elif fault == "malformed":
            server.begin_upload("c3", total, bad.fingerprint)
            server.add_chunk("c3", 0, b"\x00" * len(chunks[0]))
        elif fault == "short_count":
            server.begin_upload("c3", len(chunks[0]), bad.fingerprint)
            server.add_chunk("c3", 0, chunks[0])
            server.finish_upload("c3", hashlib.sha256(chunks[0]).digest())
        elif fault == "digest":
            server.begin_upload("c3", total, bad.fingerprint)
            for i, chunk in enumerate(chunks):
                server.add_chunk("c3", i, chunk)
            server.finish_upload("c3", b"\x00" * 32)
        else:
            server.begin_upload("c3", total, bad.fingerprint)
            server.add_chunk("c3", 1, chunks[1])
    # the coordinator rolls the broken upload back from the chunks it journalled
    server.abort_masked_input("c3", chunks)
    _run_uploads(federation, server, sessions, skip=("c3",))
    assert server.result is not None and server.result.survivors == ("c0", "c1", "c2")
    _check_mean(federation, server, sessions["c0"])


def test_rounds_fail_closed_without_holder_or_cohort(federation: Federation) -> None:
    config = _config()
    server = CkksServerRound(config, federation.roster)
    sessions = federation.sessions(config)
    for cid in ("c1", "c2", "c3"):
        server.receive_advertisement(sessions[cid].advertise())
    with pytest.raises(ThresholdNotMetError, match="key holder"):
        server.advance()
    assert server.stage is Stage.FAILED and server.failed_at is Stage.ADVERTISE_KEYS

    server = CkksServerRound(config, federation.roster)
    for session in sessions.values():
        server.receive_advertisement(session.advertise())
    server.advance()
    with pytest.raises(ThresholdNotMetError, match="did not publish"):
        server.advance()

    server = CkksServerRound(config, federation.roster)
    sessions = federation.sessions(config)
    _distribute(federation, server, sessions)
    only = sessions["c1"]
    _upload(server, only, only.encrypt(federation.updates["c1"], 5))
    with pytest.raises(ThresholdNotMetError, match="min_cohort"):
        server.advance()


def test_duplicates_and_stage_order_are_enforced(federation: Federation) -> None:
    config = _config()
    server = CkksServerRound(config, federation.roster)
    sessions = federation.sessions(config)
    advert = sessions["c1"].advertise()
    server.receive_advertisement(advert)
    assert server.is_resend(advert)
    with pytest.raises(DuplicateSubmissionError):
        server.receive_advertisement(sessions["c1"].advertise())
    with pytest.raises(StageError):
        server.begin_upload("c1", 10, b"\x00" * 32)
    with pytest.raises(UnknownClientError):
        server.receive_advertisement(CkksAdvertisement("mallory", b"\x01" * 32, b"\x00" * 64))


def test_clients_refuse_what_they_cannot_or_should_not_do(federation: Federation) -> None:
    config = _config()
    server = CkksServerRound(config, federation.roster)
    sessions = federation.sessions(config)
    _distribute(federation, server, sessions)
    assert server.epoch is not None
    # a client that lost its keys cannot encrypt in a later round of the epoch
    later = _config(2, server.epoch.fingerprint)
    stranger = CkksClientSession(
        later, "c2", federation.identities["c2"], federation.roster, EpochKeyStore(), POLICY
    )
    with pytest.raises(ConfigError, match="missed that epoch's key distribution"):
        stranger.encrypt(federation.updates["c2"], 3)
    # a "sum" of one upload is not decrypted
    _upload(server, sessions["c1"], sessions["c1"].encrypt(federation.updates["c1"], 4))
    _upload(server, sessions["c2"], sessions["c2"].encrypt(federation.updates["c2"], 4))
    server.advance()
    assert server.result is not None
    lone = dataclasses.replace(server.result, survivors=("c1",))
    with pytest.raises(CohortTooSmallError):
        sessions["c0"].decrypt(lone)
    # a round below the client's own minimum cohort is refused up front
    with pytest.raises(CohortTooSmallError):
        CkksClientSession(
            config,
            "c1",
            federation.identities["c1"],
            federation.roster,
            EpochKeyStore(),
            ClientPolicy(min_cohort=3),
        )


def test_config_refuses_a_value_bound_beyond_the_headroom() -> None:
    with pytest.raises(ConfigError, match="headroom"):
        dataclasses.replace(_config(), value_bound=1e6)
    with pytest.raises(ConfigError, match="key holder"):
        dataclasses.replace(_config(), key_holder="zed")
    assert _config().session_id != _config(2).session_id
    assert _config().session_id != dataclasses.replace(_config(), key_epoch=1).session_id


def test_publication_is_a_keypublication(federation: Federation) -> None:
    """The holder's answer carries one wrapped key per other advertised client."""
    config = _config()
    server = CkksServerRound(config, federation.roster)
    sessions = federation.sessions(config)
    for session in sessions.values():
        server.receive_advertisement(session.advertise())
    server.advance()
    publication = sessions["c0"].handle_advertisements(server.advertisements_for("c0"))
    assert isinstance(publication, KeyPublication)
    assert sorted(w.recipient for w in publication.wrapped_keys) == ["c1", "c2", "c3"]
    assert sessions["c1"].handle_advertisements(server.advertisements_for("c1")) is None
