"""The coordinator's buffer: the key stage closes at exactly K advertisements.

Driven with real ClientSession advertisements against the real coordinator (no gRPC:
the race the test needs, a (K+1)-th advertisement that arrives after the K-th but before
the queued close runs, is deterministic only here). Both directions: with buffer_size
the fourth is refused and the round runs among three; without it the same three leave
the stage open and the fourth is taken.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fedveil.proto.convert import spec_to_config
from fedveil.secagg.crypto.identity import SigningIdentity
from fedveil.secagg.protocol.client import ClientSession
from fedveil.secagg.protocol.config import ClientPolicy
from fedveil.secagg.protocol.messages import KeyAdvertisement
from fedveil.secagg.protocol.server import ServerRound
from fedveil.secagg.protocol.stages import Stage
from fedveil.server.active_round import ActiveRound, AnyRound
from fedveil.server.coordinator import RoundCoordinator
from fedveil.server.errors import StageClosedError
from fedveil.server.journal import RoundJournal
from fedveil.server.settings import RoundSettings

IDS = ("c0", "c1", "c2", "c3")


def _secagg(server: AnyRound) -> ServerRound:
    assert isinstance(server, ServerRound)
    return server


async def _advertise(
    coordinator: RoundCoordinator, round_id: int, advert: KeyAdvertisement
) -> None:
    await coordinator.submit(
        round_id,
        Stage.ADVERTISE_KEYS,
        lambda server: _secagg(server).receive(advert),
        message=advert,
    )


def _settings(buffer_size: int | None) -> RoundSettings:
    return RoundSettings(
        dimension=8, model_hash=bytes(32), buffer_size=buffer_size, stage_timeout_s=600.0
    )


async def _round(
    tmp_path: Path, buffer_size: int | None
) -> tuple[RoundCoordinator, ActiveRound, list[KeyAdvertisement], RoundJournal]:
    identities = {cid: SigningIdentity.generate() for cid in IDS}
    roster = {cid: identity.verifying() for cid, identity in identities.items()}
    journal = RoundJournal(tmp_path / "journal.sqlite3")
    coordinator = RoundCoordinator(_settings(buffer_size), roster, journal)
    active = coordinator.open_next_round()
    assert active is not None
    config = spec_to_config(active.spec)
    adverts = [
        ClientSession(config, cid, identities[cid], roster, ClientPolicy(min_cohort=3)).advertise()
        for cid in IDS
    ]
    return coordinator, active, adverts, journal


def test_the_buffer_is_exactly_k_even_when_more_arrive_before_the_close(tmp_path: Path) -> None:
    async def run() -> None:
        coordinator, active, adverts, journal = await _round(tmp_path, buffer_size=3)
        assert active.spec.min_cohort == 3  # K is the round's published floor
        for advert in adverts[:3]:
            await _advertise(coordinator, active.round_id, advert)
        # The K-th advertisement queued the close; the fourth comes before it runs.
        with pytest.raises(StageClosedError, match="already buffered 3 clients"):
            await _advertise(coordinator, active.round_id, adverts[3])
        await asyncio.wait_for(active.closed[Stage.ADVERTISE_KEYS].wait(), 60)
        assert active.server.stage is Stage.SHARE_KEYS
        assert _secagg(active.server).advertised == frozenset(IDS[:3])
        with pytest.raises(StageClosedError, match="join the next one"):
            await _advertise(coordinator, active.round_id, adverts[3])
        await coordinator.shutdown()
        journal.close()

    asyncio.run(run())


def test_without_a_buffer_the_stage_waits_for_the_fourth(tmp_path: Path) -> None:
    async def run() -> None:
        coordinator, active, adverts, journal = await _round(tmp_path, buffer_size=None)
        for advert in adverts[:3]:
            await _advertise(coordinator, active.round_id, advert)
        for _ in range(5):
            await asyncio.sleep(0)  # any queued close would run here
        assert active.server.stage is Stage.ADVERTISE_KEYS
        await _advertise(coordinator, active.round_id, adverts[3])
        await asyncio.wait_for(active.closed[Stage.ADVERTISE_KEYS].wait(), 60)
        assert _secagg(active.server).advertised == frozenset(IDS)
        await coordinator.shutdown()
        journal.close()

    asyncio.run(run())


@pytest.mark.parametrize("buffered", [True, False])
def test_a_restarted_server_closes_a_full_buffer_it_resumes(tmp_path: Path, buffered: bool) -> None:
    """Three advertisements journalled, then the server restarts: a buffered server
    closes the key stage on resuming (no deadline to wait out); an unbuffered one keeps
    it open for the fourth."""

    async def run() -> None:
        coordinator, active, adverts, journal = await _round(tmp_path, buffer_size=None)
        for advert in adverts[:3]:
            await _advertise(coordinator, active.round_id, advert)
        await coordinator.shutdown()
        again = RoundCoordinator(_settings(3 if buffered else None), coordinator.roster, journal)
        resumed = again.recover()
        assert resumed is not None and resumed.server.stage is Stage.ADVERTISE_KEYS
        for _ in range(5):
            await asyncio.sleep(0)  # a queued close runs here
        if buffered:
            await asyncio.wait_for(resumed.closed[Stage.ADVERTISE_KEYS].wait(), 60)
            assert _secagg(resumed.server).advertised == frozenset(IDS[:3])
        else:
            assert resumed.server.stage is Stage.ADVERTISE_KEYS
        await again.shutdown()
        journal.close()

    asyncio.run(run())
