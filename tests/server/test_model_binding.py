"""Per-round model binding and one result for everyone, over real gRPC with mutual TLS.

Attacker first: each test plays a malicious server against the real service and SDK.
- Model inconsistency: the server gives one party another model (here: a client that
  holds another base model, or a server that tells that client the hash of its own
  model). The client derives the round's model hash itself, so it either refuses before
  sending anything, or its signatures do not verify and every party refuses: no
  aggregate is accepted.
- Split results: the server returns a different aggregate to one client in round r (we
  tamper with what that client downloads while the real server runs). Each client binds
  the digest of the result it received into its next model hash, so round r + 1 fails
  closed for it, however the server announces that round.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import fedveil.clients.result as client_result
import fedveil.clients.secagg_driver as secagg_driver
from fedveil.clients.errors import TransportError
from fedveil.clients.streams import DownloadedMean
from fedveil.clients.transport import AggregateResult, AsyncAggregationClient
from fedveil.errors import (
    ConfigError,
    ImplausibleAggregateError,
    KeySubstitutionError,
    SessionMismatchError,
)
from fedveil.proto import aggregation_pb2 as pb
from fedveil.proto.convert import spec_to_config
from fedveil.secagg.protocol.model_chain import (
    ModelChain,
    mean_payload_digest,
    result_digest,
    round_model_hash,
)
from fedveil.secagg.protocol.server import ServerRound
from tests.helpers.service_harness import (
    BASE_MODEL_HASH,
    client_for,
    make_keys,
    running_server,
    settings_for,
)

D = 300
OTHER_MODEL = hashlib.sha256(b"a model the others do not hold").digest()


# --- the chain, unit ------------------------------------------------------------------------


def test_round_model_hash_chains_the_base_and_the_previous_result() -> None:
    first = round_model_hash(BASE_MODEL_HASH, None)
    assert first not in (BASE_MODEL_HASH, round_model_hash(OTHER_MODEL, None))
    digest = hashlib.sha256(b"result of round 1").digest()
    second = round_model_hash(BASE_MODEL_HASH, digest)
    assert second != first and second == round_model_hash(BASE_MODEL_HASH, digest)
    assert second != round_model_hash(BASE_MODEL_HASH, bytes(32))
    with pytest.raises(ConfigError, match="32 bytes"):
        round_model_hash(b"short", None)


def test_result_digest_covers_every_field_the_client_receives() -> None:
    fields: dict[str, Any] = {
        "round_id": 4,
        "mode": "secagg",
        "survivors": ("a", "b", "c"),
        "total_weight": 30,
        "error_bound": 1e-9,
        "payload_sha256": hashlib.sha256(b"mean").digest(),
    }
    digest = result_digest(**fields)
    assert result_digest(**{**fields, "survivors": ("c", "a", "b")}) == digest  # a set
    changes = {
        "round_id": 5,
        "mode": "ckks",
        "survivors": ("a", "b"),
        "total_weight": 31,
        "error_bound": 2e-9,
        "payload_sha256": hashlib.sha256(b"another mean").digest(),
    }
    for name, value in changes.items():
        assert result_digest(**{**fields, name: value}) != digest, name


def test_a_chain_refuses_other_models_replays_and_says_when_it_is_stale() -> None:
    chain = ModelChain(BASE_MODEL_HASH)
    chain.check(1, round_model_hash(BASE_MODEL_HASH, None))
    with pytest.raises(SessionMismatchError, match="model inconsistency"):
        chain.check(1, round_model_hash(OTHER_MODEL, None))
    digest = hashlib.sha256(b"round 1").digest()
    chain.advance(1, digest)
    chain.check(2, round_model_hash(BASE_MODEL_HASH, digest))
    with pytest.raises(SessionMismatchError, match="stale"):  # round 2 ran without it
        chain.check(3, round_model_hash(BASE_MODEL_HASH, hashlib.sha256(b"round 2").digest()))
    with pytest.raises(SessionMismatchError, match="replayed or reordered"):
        chain.check(1, chain.model_hash)
    with pytest.raises(ConfigError, match="not after"):
        chain.advance(1, digest)
    resumed = ModelChain(BASE_MODEL_HASH, result_digest=digest, round_id=1)
    assert resumed.model_hash == chain.model_hash


# --- over gRPC ---------------------------------------------------------------------------------


def inputs(ids: list[str], seed: int) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    rng = np.random.default_rng(seed)
    updates = {c: rng.normal(0, 0.1, D).astype(np.float32) for c in ids}
    weights = {c: int(rng.integers(1, 50)) for c in ids}
    return updates, weights


async def run_all(
    clients: dict[str, AsyncAggregationClient], seed: int
) -> dict[str, AggregateResult | BaseException]:
    updates, weights = inputs(list(clients), seed)
    outcomes = await asyncio.gather(
        *(c.run_round(updates[cid], weights[cid]) for cid, c in clients.items()),
        return_exceptions=True,
    )
    return dict(zip(clients, outcomes, strict=True))


def tamper_result_of(
    monkeypatch: pytest.MonkeyPatch, victim: str, change: Callable[[np.ndarray], np.ndarray]
) -> None:
    """The malicious server: `victim` downloads a changed mean; everyone else the real one."""
    real = secagg_driver.fetch_result

    async def fetch(stub: Any, request: pb.GetResultRequest, **kwargs: Any) -> Any:
        downloaded = await real(stub, request, **kwargs)
        if request.client_id != victim:
            return downloaded
        # what the victim would hash had the server streamed it these bytes
        mean = change(downloaded.mean.copy())
        return DownloadedMean(downloaded.header, mean, mean_payload_digest(mean))

    monkeypatch.setattr(secagg_driver, "fetch_result", fetch)


class AcceptsAnything:
    """What a malicious server puts in place of one client's enrolled identity."""

    def verify(self, signature: bytes, message: bytes) -> None:
        return None


def announce_own_model_to(victim: AsyncAggregationClient, server: Any) -> None:
    """The malicious server tells `victim` the model hash `victim` expects (its own chain)
    instead of the round's, and relays its key advertisement without checking it."""
    real = victim.get_round

    async def tailored() -> pb.RoundInfo:
        info = await real()
        spec = info.spec
        if spec.mode == pb.AGGREGATION_MODE_SECAGG:
            config = dataclasses.replace(
                spec_to_config(spec), model_hash=victim.model_chain.model_hash
            )
            spec.model_hash, spec.session_id = config.model_hash, config.session_id
            active = server.coordinator.rounds[int(spec.round_id)].server
            assert isinstance(active, ServerRound)
            active._identities[victim.client_id] = AcceptsAnything()  # type: ignore[assignment]
        return info

    victim.get_round = tailored  # type: ignore[method-assign]


def refused(outcome: object, *kinds: type[BaseException]) -> bool:
    if isinstance(outcome, TransportError):  # the server passed the refusal on
        return True
    return isinstance(outcome, kinds)


@pytest.mark.parametrize("announcement", ["the round's model", "the victim's own model"])
def test_a_party_given_another_model_gets_no_aggregate(tmp_path: Path, announcement: str) -> None:
    """One party holds another base model. Told the round's model, it refuses before a byte
    leaves; told its own, its signatures do not verify for anyone: the round fails."""

    async def run() -> None:
        keys, ids = make_keys(tmp_path, 4)
        victim = ids[0]
        settings = settings_for(tmp_path, keys, dimension=D, stage_timeout_s=3.0, rounds=1)
        async with running_server(settings) as server:
            clients = {
                c: client_for(
                    keys,
                    c,
                    server.port,
                    base_model_hash=OTHER_MODEL if c == victim else BASE_MODEL_HASH,
                )
                for c in ids
            }
            if announcement == "the victim's own model":
                announce_own_model_to(clients[victim], server)
            outcomes = await run_all(clients, seed=1)
            active = server.coordinator.rounds[1].server
            assert isinstance(active, ServerRound)
            for client in clients.values():
                await client.close()
        assert isinstance(outcomes[victim], BaseException)
        assert clients[victim].model_chain.round_id is None  # nothing applied
        if announcement == "the round's model":
            assert isinstance(outcomes[victim], SessionMismatchError)
            assert "refusing before sending anything" in str(outcomes[victim])
            assert victim not in active.advertised  # not a byte of the round was sent
            for c in ids[1:]:  # the others, who agree, finish without it
                result = outcomes[c]
                assert isinstance(result, AggregateResult), result
                assert victim not in result.survivors
        else:
            # Every party derives another session id than the victim: its advertisement
            # does not verify for them, theirs do not verify for it. Nobody gets a result.
            for c in ids:
                assert refused(outcomes[c], KeySubstitutionError), (c, outcomes[c])
                assert clients[c].model_chain.round_id is None

    asyncio.run(run())


@pytest.mark.parametrize("announcement", ["the round's model", "the victim's own model"])
def test_split_results_are_caught_at_the_next_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, announcement: str
) -> None:
    """Round 1: the server hands the victim a different (but plausible) aggregate; the
    victim accepts it. Round 2: the victim's model hash chains what it received, so it
    refuses (told the round's model) or nobody's signatures verify (told its own)."""

    def shifted(mean: np.ndarray) -> np.ndarray:
        mean[0] += 0.01  # inside every bound: only the chain can see it
        return mean

    async def run() -> None:
        keys, ids = make_keys(tmp_path, 4)
        victim = ids[0]
        settings = settings_for(tmp_path, keys, dimension=D, stage_timeout_s=3.0, rounds=2)
        async with running_server(settings) as server:
            clients = {c: client_for(keys, c, server.port) for c in ids}
            with monkeypatch.context() as patch:
                tamper_result_of(patch, victim, shifted)
                first = await run_all(clients, seed=1)
            results = {c: r for c, r in first.items() if isinstance(r, AggregateResult)}
            assert len(results) == 4, first  # the split itself goes unnoticed in round 1
            assert not np.array_equal(results[victim].weighted_mean, results[ids[1]].weighted_mean)
            honest = {results[c].result_digest for c in ids[1:]}
            assert honest == {server.coordinator.chain.result_digest}
            assert results[victim].result_digest not in honest
            if announcement == "the victim's own model":
                announce_own_model_to(clients[victim], server)
            second = await run_all(clients, seed=2)
            active = server.coordinator.rounds[2].server
            assert isinstance(active, ServerRound)
            for client in clients.values():
                await client.close()
        assert clients[victim].model_chain.round_id == 1  # round 2 not applied
        if announcement == "the round's model":
            assert isinstance(second[victim], SessionMismatchError), second[victim]
            assert "different results" in str(second[victim])
            assert victim not in active.advertised
            for c in ids[1:]:
                result = second[c]
                assert isinstance(result, AggregateResult), result
                assert victim not in result.survivors
        else:
            for c in ids:
                assert refused(second[c], KeySubstitutionError), (c, second[c])

    asyncio.run(run())


def test_the_chain_survives_a_server_restart_and_a_client_restart(tmp_path: Path) -> None:
    """The server journals the digest it chains; a client resumes with its saved chain."""

    async def run() -> None:
        keys, ids = make_keys(tmp_path, 4)
        settings = settings_for(tmp_path, keys, dimension=D, stage_timeout_s=3.0, rounds=1)
        async with running_server(settings) as server:
            clients = {c: client_for(keys, c, server.port) for c in ids}
            first = await run_all(clients, seed=1)
            for client in clients.values():
                await client.close()
        assert all(isinstance(r, AggregateResult) for r in first.values()), first
        saved = {c: dataclasses.replace(clients[c].model_chain) for c in ids}
        async with running_server(settings) as again:  # same state folder: round 2
            fresh = {c: client_for(keys, c, again.port, model_chain=saved[c]) for c in ids[:3]}
            # the fourth restarts without its chain: told why it cannot take part
            fresh[ids[3]] = client_for(keys, ids[3], again.port)
            second = await run_all(fresh, seed=2)
            for client in fresh.values():
                await client.close()
        for c in ids[:3]:
            result = second[c]
            assert isinstance(result, AggregateResult) and result.round_id == 2, result
        assert isinstance(second[ids[3]], SessionMismatchError)
        assert "stale" in str(second[ids[3]])

    asyncio.run(run())


def test_ckks_rounds_are_bound_to_the_chain_too(tmp_path: Path) -> None:
    """A CKKS client whose chain diverged (it received another round-1 result) refuses
    round 2 before encrypting or sending anything."""

    async def run() -> None:
        keys, ids = make_keys(tmp_path, 4)
        victim = ids[0]
        settings = settings_for(
            tmp_path, keys, dimension=D, stage_timeout_s=3.0, rounds=2, mode="ckks"
        )
        async with running_server(settings) as server:
            clients = {
                c: client_for(keys, c, server.port, allowed_modes={"secagg", "ckks"}) for c in ids
            }
            first = await run_all(clients, seed=1)
            assert all(isinstance(r, AggregateResult) for r in first.values()), first
            digests = {r.result_digest for r in first.values() if isinstance(r, AggregateResult)}
            assert digests == {server.coordinator.chain.result_digest}
            # as if the server had returned the victim other ciphertexts in round 1
            clients[victim].model_chain.result_digest = hashlib.sha256(b"other").digest()
            second = await run_all(clients, seed=2)
            for client in clients.values():
                await client.close()
        assert isinstance(second[victim], SessionMismatchError), second[victim]
        for c in ids[1:]:
            result = second[c]
            assert isinstance(result, AggregateResult) and result.round_id == 2, result
            assert victim not in result.survivors

    asyncio.run(run())


@pytest.mark.parametrize("defended", [False, True])
def test_a_crafted_aggregate_beyond_the_clip_is_not_applied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, defended: bool
) -> None:
    """The server returns one client a mean no clipped cohort could sum to. Without the
    sanity bound (defended=False: the checks switched off) the client applies it; with
    it, ImplausibleAggregateError and the chain does not advance."""

    def crafted(mean: np.ndarray) -> np.ndarray:
        mean[5] = 40.0  # clip is 1.0
        return mean

    if not defended:
        monkeypatch.setattr(client_result, "check_values", lambda *args: None)

    async def run() -> None:
        keys, ids = make_keys(tmp_path, 3)
        victim = ids[0]
        settings = settings_for(tmp_path, keys, dimension=D, stage_timeout_s=3.0, rounds=1)
        async with running_server(settings) as server:
            clients = {c: client_for(keys, c, server.port) for c in ids}
            tamper_result_of(monkeypatch, victim, crafted)
            outcomes = await run_all(clients, seed=3)
            for client in clients.values():
                await client.close()
        for c in ids[1:]:
            assert isinstance(outcomes[c], AggregateResult), outcomes[c]
        if defended:
            assert isinstance(outcomes[victim], ImplausibleAggregateError), outcomes[victim]
            assert "coordinate 5" in str(outcomes[victim])
            assert clients[victim].model_chain.round_id is None
        else:
            result = outcomes[victim]
            assert isinstance(result, AggregateResult) and result.weighted_mean[5] == 40.0

    asyncio.run(run())


# --- no default model ----------------------------------------------------------------------


def test_server_and_client_commands_require_the_base_model_hash(tmp_path: Path) -> None:
    from fedveil.commands import client as client_command
    from fedveil.server.coordinator import RoundCoordinator
    from fedveil.server.journal import RoundJournal
    from fedveil.server.keys_store import client_dir, load_roster
    from fedveil.server.settings import RoundSettings, load_settings

    with pytest.raises(ConfigError, match="round.model_hash is required"):
        load_settings(None, {"dimension": 10, "insecure": True})
    settings = load_settings(None, {"dimension": 10, "insecure": True, "model_hash": "ab" * 32})
    assert settings.round.model_hash == bytes.fromhex("ab" * 32)
    keys, ids = make_keys(tmp_path, 3)
    roster = load_roster(keys).identities()
    journal = RoundJournal(tmp_path / "journal.sqlite3")
    try:
        with pytest.raises(ConfigError, match="model_hash is required"):
            RoundCoordinator(RoundSettings(dimension=10), roster, journal)
    finally:
        journal.close()
    update = tmp_path / "u.npy"
    np.save(update, np.zeros(10, dtype=np.float32))
    flags: dict[str, Any] = {
        "server": "localhost:1",
        "credentials": client_dir(keys, ids[0]),
        "roster": keys / "roster.json",
        "update": update,
        "weight": 1,
    }
    with pytest.raises(ConfigError, match="missing --model-hash"):
        client_command.prepare(client_command.load_client_settings(None, flags))
    resumed = client_command.load_client_settings(
        None,
        {**flags, "model_hash": BASE_MODEL_HASH.hex(), "previous_result": "4:" + "cd" * 32},
    )
    prepared = client_command.prepare(resumed)
    chain = prepared.client.model_chain
    assert (chain.round_id, chain.result_digest) == (4, bytes.fromhex("cd" * 32))
    with pytest.raises(ConfigError, match="ROUND:DIGEST"):
        client_command.load_client_settings(None, {**flags, "previous_result": "4:zz"})
