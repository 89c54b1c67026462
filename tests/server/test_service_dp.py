"""Client-level and central DP over the real service: gRPC, mutual TLS, loopback."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import math
import os
import shlex
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from fedveil.clients.transport import AggregateResult
from fedveil.commands import server as server_command
from fedveil.commands.server import _ROUND_FLAGS
from fedveil.errors import ConfigError, PrivacyBudgetExceededError, PrivacyPolicyError
from fedveil.proto import aggregation_pb2 as pb
from fedveil.runners.simulation import Federation, make_config
from fedveil.secagg.crypto.identity import SigningIdentity
from fedveil.secagg.dp import (
    ClientDPConfig,
    GaussianEvent,
    NoisePlacement,
    PrivacyAccountant,
    PrivacyBudget,
    l2_clip,
)
from fedveil.secagg.protocol.server import ServerRound
from fedveil.server.coordinator import RoundCoordinator
from fedveil.server.journal import RoundJournal
from fedveil.server.replay import replay
from fedveil.server.settings import RoundSettings, load_settings
from tests.helpers.journalled_round import journalled_round
from tests.helpers.service_harness import client_for, make_keys, running_server, settings_for

DIM = 4096


def _variance_in_ci(samples: np.ndarray, variance: float, tail: float = 1e-6) -> bool:
    n = samples.shape[0]
    stat = (n - 1) * samples.var(ddof=1) / variance
    lo, hi = stats.chi2.ppf([tail, 1 - tail], n - 1)
    return bool(lo < stat < hi)


def _updates(ids: list[str], seed: int) -> dict[str, np.ndarray]:
    gen = np.random.default_rng(seed)
    # Norms ~0.6 to ~2.6: some clients are clipped to 1, some are not.
    return {c: (gen.normal(0, 0.01 + 0.01 * i, DIM)).astype(np.float32) for i, c in enumerate(ids)}


def _clipped_mean(updates: dict[str, np.ndarray], ids: tuple[str, ...], clip: float) -> np.ndarray:
    return np.mean([l2_clip(updates[c].astype(np.float64), clip).vector for c in ids], axis=0)


def test_client_dp_rounds_report_epsilon_and_noise_within_budget(tmp_path: Path) -> None:
    """4 clients, epsilon 8 at delta 1e-5 over 2 rounds: the server calibrates the noise;
    each result carries its privacy report and a mean that is the clipped mean plus noise
    of the reported std; each client's own ledger agrees and ends within its budget."""

    async def run() -> tuple[list[list[AggregateResult]], dict, list]:
        keys, ids = make_keys(tmp_path, 4)
        settings = settings_for(
            tmp_path,
            keys,
            dimension=DIM,
            rounds=2,
            dp="client",
            dp_target_epsilon=8.0,
            dp_delta=1e-5,
        )
        rounds: list[list[AggregateResult]] = []
        all_updates = []
        async with running_server(settings) as server:
            clients = [
                client_for(keys, c, server.port, privacy_budget=PrivacyBudget(8.0, 1e-5))
                for c in ids
            ]
            for number in range(2):
                updates = _updates(ids, seed=number)
                all_updates.append(updates)
                rounds.append(
                    await asyncio.gather(
                        *(
                            cl.run_round(updates[c], 10 + i)
                            for i, (cl, c) in enumerate(zip(clients, ids, strict=True))
                        )
                    )
                )
            ledgers = {cl.client_id: cl.privacy_ledger for cl in clients}
            for client in clients:
                await client.close()
        return rounds, ledgers, all_updates

    rounds, ledgers, all_updates = asyncio.run(run())
    previous = 0.0
    for number, (results, updates) in enumerate(zip(rounds, all_updates, strict=True), start=1):
        first = results[0]
        assert all(np.array_equal(r.weighted_mean, first.weighted_mean) for r in results)
        assert first.total_weight == 4  # unweighted: the weights 10..13 are not used
        privacy = first.privacy
        assert privacy is not None and privacy.kind == "client" and not privacy.trusts_server
        assert privacy.rounds == number and privacy.delta == 1e-5
        assert previous < privacy.epsilon <= 8.0
        assert privacy.round_epsilon <= privacy.epsilon
        assert privacy.clip_norm == 1.0 and privacy.noise_multiplier > 0
        assert privacy.accountant == "rdp" and privacy.rigorous  # discrete noise: RDP
        previous = privacy.epsilon
        for result in results:
            assert result.privacy_spent is not None
            assert result.privacy_spent.epsilon == pytest.approx(privacy.epsilon, rel=1e-9)
        # The mean is the clipped mean plus noise of the reported std (per element).
        error = first.weighted_mean - _clipped_mean(updates, first.survivors, 1.0)
        assert privacy.noise_std == pytest.approx(
            privacy.noise_multiplier / 4 * math.sqrt(4 / 3), rel=0.01
        )
        assert _variance_in_ci(error, privacy.noise_std**2)
        assert not _variance_in_ci(error, 1.2 * privacy.noise_std**2)
        assert np.abs(error).max() < 7 * privacy.noise_std
    # Whole-run epsilon: 8 at most, and the calibration did not waste budget.
    assert 7.0 < previous <= 8.0
    for ledger in ledgers.values():
        assert ledger is not None and ledger.rounds == 2
        assert ledger.spent_epsilon <= ledger.budget.epsilon
        # A third round would overspend: the client would refuse it.
        events = ledger.events[:1]
        with pytest.raises(PrivacyBudgetExceededError):
            ledger.check(events)


def test_an_exhausted_client_sends_nothing_and_the_round_goes_on(tmp_path: Path) -> None:
    async def run() -> tuple[list, object, frozenset[str]]:
        keys, ids = make_keys(tmp_path, 4)
        settings = settings_for(
            tmp_path,
            keys,
            dimension=DIM,
            rounds=1,
            stage_timeout_s=1.5,
            dp="client",
            dp_noise_multiplier=1.0,
        )
        updates = _updates(ids, seed=3)
        async with running_server(settings) as server:
            poor = client_for(keys, ids[0], server.port, privacy_budget=PrivacyBudget(1e-3, 1e-5))
            others = [client_for(keys, c, server.port) for c in ids[1:]]
            outcomes = await asyncio.gather(
                poor.run_round(updates[ids[0]], 1),
                *(cl.run_round(updates[cl.client_id], 1) for cl in others),
                return_exceptions=True,
            )
            active = server.coordinator.rounds[1]
            assert active.server.stage.value == "done"
            advertised = active.server.advertised  # type: ignore[union-attr]
            for client in [poor, *others]:
                await client.close()
        return outcomes, poor.privacy_ledger, advertised

    outcomes, ledger, advertised = asyncio.run(run())
    refusal = outcomes[0]
    assert isinstance(refusal, PrivacyBudgetExceededError)
    assert "privacy budget exceeded for org-00" in str(refusal)
    assert "org-00" not in advertised  # not even its keys reached the server
    assert ledger is not None and ledger.rounds == 0  # type: ignore[attr-defined]
    results = outcomes[1:]
    assert all(isinstance(r, AggregateResult) for r in results)
    assert all(r.survivors == ("org-01", "org-02", "org-03") for r in results)
    privacy = results[0].privacy
    assert privacy is not None and privacy.contributors == 3 and privacy.noise_multiplier == 1.0


def test_central_dp_round_is_flagged_and_refused_by_a_budgeted_client(tmp_path: Path) -> None:
    async def run() -> tuple[list, dict]:
        keys, ids = make_keys(tmp_path, 4)
        settings = settings_for(
            tmp_path,
            keys,
            dimension=DIM,
            rounds=1,
            stage_timeout_s=1.5,
            dp="central",
            dp_noise_multiplier=0.5,
        )
        updates = _updates(ids, seed=4)
        async with running_server(settings) as server:
            wary = client_for(keys, ids[0], server.port, privacy_budget=PrivacyBudget(8, 1e-5))
            others = [client_for(keys, c, server.port) for c in ids[1:]]
            outcomes = await asyncio.gather(
                wary.run_round(updates[ids[0]], 1),
                *(cl.run_round(updates[cl.client_id], 1) for cl in others),
                return_exceptions=True,
            )
            for client in [wary, *others]:
                await client.close()
        return outcomes, updates

    outcomes, updates = asyncio.run(run())
    assert isinstance(outcomes[0], PrivacyPolicyError)
    assert "trusts the server" in str(outcomes[0])
    result = outcomes[1]
    assert isinstance(result, AggregateResult) and result.privacy is not None
    assert result.privacy.kind == "central" and result.privacy.trusts_server
    assert "trusts it" in result.privacy.note
    error = result.weighted_mean - _clipped_mean(updates, result.survivors, 1.0)
    # Central noise does not depend on min_clients: std z C / n per element of the mean.
    assert result.privacy.noise_std == pytest.approx(0.5 / 3, rel=0.01)
    assert _variance_in_ci(error, result.privacy.noise_std**2)


def test_a_budgeted_client_refuses_a_round_without_dp(tmp_path: Path) -> None:
    async def run() -> tuple[BaseException | None, frozenset[str]]:
        keys, ids = make_keys(tmp_path, 3)
        settings = settings_for(tmp_path, keys, dimension=64, rounds=1, stage_timeout_s=1.0)
        async with running_server(settings) as server:
            client = client_for(keys, ids[0], server.port, privacy_budget=PrivacyBudget(8, 1e-5))
            try:
                await client.run_round(np.zeros(64, dtype=np.float32), 1)
                error = None
            except PrivacyPolicyError as exc:
                error = exc
            advertised = server.coordinator.rounds[1].server.advertised  # type: ignore[union-attr]
            await client.close()
        return error, advertised

    error, advertised = asyncio.run(run())
    assert error is not None and "adds no differential-privacy noise" in str(error)
    assert not advertised


# --- settings, flags, calibration, restart ---------------------------------------------------


def _roster(n: int) -> dict:
    return {f"org-{i:02d}": SigningIdentity.generate().verifying() for i in range(n)}


def test_round_settings_validate_the_dp_options() -> None:
    with pytest.raises(ConfigError, match="round.dp must be one of"):
        RoundSettings(dimension=10, dp="local")
    with pytest.raises(ConfigError, match="exactly one of dp_noise_multiplier"):
        RoundSettings(dimension=10, dp="client")
    with pytest.raises(ConfigError, match="exactly one of dp_noise_multiplier"):
        RoundSettings(dimension=10, dp="client", dp_noise_multiplier=1.0, dp_target_epsilon=8)
    with pytest.raises(ConfigError, match="rounds"):
        RoundSettings(dimension=10, dp="client", dp_target_epsilon=8)
    with pytest.raises(ConfigError, match='needs mode = "secagg"'):
        RoundSettings(dimension=10, mode="ckks", dp="client", dp_noise_multiplier=1.0)
    with pytest.raises(ConfigError, match="dp_mechanism"):
        RoundSettings(dimension=10, dp="client", dp_noise_multiplier=1.0, dp_mechanism="laplace")
    with pytest.raises(ConfigError, match="dp_delta"):
        RoundSettings(dimension=10, dp="client", dp_noise_multiplier=1.0, dp_delta=0)
    ok = RoundSettings(dimension=10, dp="client", dp_target_epsilon=8, rounds=0, dp_rounds=5)
    assert ok.dp_planned_rounds == 5


def test_a_sampling_rate_the_clients_cannot_verify_is_refused() -> None:
    """The attack: claim client sampling at q = 0.1 while taking every client that joins.
    The accountant would then report a far smaller epsilon than the rounds really spent;
    the server refuses the setting instead of reporting it."""
    honest = PrivacyAccountant("rdp")
    honest.compose(GaussianEvent(1.0, 1.0, 20))
    claimed = PrivacyAccountant("rdp")
    claimed.compose(GaussianEvent(1.0, 0.1, 20))
    assert claimed.epsilon(1e-5) < honest.epsilon(1e-5) / 4  # what the setting would claim
    with pytest.raises(ConfigError, match="dp_sampling_prob = 0.1 is refused"):
        RoundSettings(dimension=10, dp="client", dp_noise_multiplier=1.0, dp_sampling_prob=0.1)
    assert RoundSettings(dimension=10, dp="client", dp_noise_multiplier=1.0).dp_sampling_prob == 1


def test_server_flags_turn_on_client_dp() -> None:
    parser = argparse.ArgumentParser()
    server_command.add_parser(parser.add_subparsers(dest="command"))
    flags = (
        "server --insecure --dimension 100 --rounds 5 --dp client --dp-target-epsilon 8 "
        "--dp-delta 1e-5 --dp-clip-norm 0.5 --dp-min-clients 3 --dp-mechanism skellam "
        "--dp-rotate false --dp-accountant rdp --model-hash " + "ab" * 32
    )
    args = parser.parse_args(shlex.split(flags))
    overrides = {name: getattr(args, name) for name, _, _ in _ROUND_FLAGS}
    settings = load_settings(None, {**overrides, "insecure": True}).round
    assert (settings.dp, settings.dp_target_epsilon, settings.dp_delta) == ("client", 8.0, 1e-5)
    assert settings.dp_clip_norm == 0.5 and settings.dp_min_clients == 3
    assert settings.dp_mechanism == "skellam" and settings.dp_rotate is False
    assert settings.dp_accountant == "rdp" and settings.dp_planned_rounds == 5


def test_coordinator_calibrates_to_the_target_and_restores_after_restart(tmp_path: Path) -> None:
    async def run() -> None:
        settings = RoundSettings(
            dimension=1000,
            rounds=10,
            dp="client",
            dp_target_epsilon=4.0,
            dp_delta=1e-5,
            model_hash=bytes(32),
        )
        roster = _roster(5)
        journal = RoundJournal(tmp_path / "journal.sqlite3")
        coordinator = RoundCoordinator(settings, roster, journal)
        dp = coordinator.round_dp
        assert dp is not None and dp.planned_rounds == 10 and dp.target_epsilon == 4.0
        assert dp.config.min_clients == 3  # the threshold of 5 clients
        z = dp.config.noise_multiplier

        def whole_run(multiplier: float) -> float:
            accountant = PrivacyAccountant()
            config = dataclasses.replace(dp.config, noise_multiplier=multiplier)
            accountant.compose(config.events(1.0, steps=10)[0])
            return accountant.epsilon(1e-5)

        assert whole_run(z) <= 4.0 < whole_run(0.99 * z)
        active = coordinator.open_next_round()
        assert active is not None and active.spec.dp.kind == pb.DP_KIND_CLIENT
        assert active.spec.dp.target_epsilon == 4.0 and active.spec.dp.planned_rounds == 10
        journal.end_round(active.round_id, "done")
        await coordinator.shutdown()
        # A restarted server composes the released round into the federation's epsilon.
        again = RoundCoordinator(settings, roster, journal)
        assert again.privacy.rounds == 1
        await again.shutdown()
        journal.close()

    asyncio.run(run())


def test_a_central_dp_round_replays_to_the_same_release(tmp_path: Path) -> None:
    """A server restarted mid-round replays the journal; the journalled noise key makes the
    replayed central-DP release the same one, not a second, independent draw."""
    dim = 3000
    federation = Federation.enrol(4)
    dp = ClientDPConfig(1.0, 0.5, 1, 4, dim, placement=NoisePlacement.SERVER)
    config = make_config(federation, dim, dp=dp)
    gen = np.random.default_rng(2)
    run = journalled_round(
        tmp_path / "journal.sqlite3",
        federation,
        config,
        {cid: (gen.normal(0, 0.02, dim), 1) for cid in config.roster},
        noise_seed=os.urandom(32),
    )
    run.run_to_uploads()
    run.run_to_result()
    journal, server, roster, rid = run.journal, run.server, federation.roster, run.rid
    assert server.result is not None and server.result.dp is not None
    (record,) = journal.open_rounds()
    replayed, replayed_spec = replay(journal, record, roster)
    assert replayed_spec.dp.kind == pb.DP_KIND_CENTRAL
    assert isinstance(replayed, ServerRound) and replayed.result is not None
    assert replayed.result.dp is not None
    assert np.array_equal(replayed.result.dp.sum, server.result.dp.sum)
    # Without the journalled key the replay would release a different draw.
    unkeyed = RoundJournal(tmp_path / "other.sqlite3")
    unkeyed.begin_round(rid, run.spec_bytes)
    for event in record.events:
        if event.kind == "chunk":
            index = int(event.payload.decode())
            unkeyed.record_chunk(
                rid, event.client_id, index, journal.chunk(rid, event.client_id, index)
            )
        elif event.kind != "dp-noise-seed":
            unkeyed.record(rid, event.kind, event.client_id, event.payload)
    (other,) = unkeyed.open_rounds()
    fresh, _ = replay(unkeyed, other, roster)
    assert fresh.result is not None and fresh.result.dp is not None  # type: ignore[union-attr]
    assert not np.array_equal(fresh.result.dp.sum, server.result.dp.sum)  # type: ignore[union-attr]
    journal.close()
    unkeyed.close()
