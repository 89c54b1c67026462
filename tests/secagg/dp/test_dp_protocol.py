"""Client-level (and central) DP through the SecAgg+ protocol, in process.

What is checked through real rounds (fedveil.runners.simulation.run_round: every client masks,
the server unmasks): sigma = 0 gives the non-DP result; the noise in the released sum
has the configured variance; clipping bounds every contribution; every DP field is in the
session id; clients refuse rounds, survivor sets and budgets they must not accept.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy import stats

from fedveil.errors import (
    CohortTooSmallError,
    ConfigError,
    InvalidSignatureError,
    PrivacyBudgetExceededError,
    PrivacyPolicyError,
    SessionMismatchError,
    ThresholdNotMetError,
)
from fedveil.proto import aggregation_pb2 as pb
from fedveil.proto.convert import config_to_spec, spec_to_config
from fedveil.runners.simulation import Federation, make_config, run_round
from fedveil.secagg.crypto.kdf import Purpose
from fedveil.secagg.dp import (
    ClientDPConfig,
    ClientDPPipeline,
    FederationAccountant,
    Mechanism,
    NoisePlacement,
    PrivacyAccountant,
    PrivacyBudget,
    PrivacyLedger,
    l2_clip,
)
from fedveil.secagg.protocol.client import ClientSession
from fedveil.secagg.protocol.config import ClientPolicy, RoundConfig
from fedveil.secagg.protocol.dp import RoundDP, rotation_seed
from fedveil.secagg.protocol.server import ServerRound
from fedveil.secagg.protocol.stages import Stage

POLICY = ClientPolicy(min_cohort=2, min_threshold=2)


def _variance_in_ci(samples: np.ndarray, variance: float, tail: float = 1e-6) -> bool:
    """Whether the sample variance is consistent with `variance` (two-sided chi-square)."""
    n = samples.shape[0]
    stat = (n - 1) * samples.var(ddof=1) / variance
    lo, hi = stats.chi2.ppf([tail, 1 - tail], n - 1)
    return bool(lo < stat < hi)


def _inputs(federation: Federation, dim: int, scale: float, seed: int = 0) -> dict:
    # Update *data* may come from numpy's generator; DP noise never does.
    gen = np.random.default_rng(seed)
    return {cid: gen.normal(size=dim) * scale for cid in federation.ids}


def _clipped_sum(inputs: dict, clip_norm: float, ids: tuple[str, ...] | None = None) -> np.ndarray:
    chosen = inputs if ids is None else {c: inputs[c] for c in ids}
    return np.sum([l2_clip(x, clip_norm).vector for x in chosen.values()], axis=0)


# --- sigma = 0: the DP path is the plain path ---------------------------------------------


def test_zero_noise_dp_round_equals_the_plain_round_bit_for_bit() -> None:
    """Without rotation, on-grid inputs round deterministically: a DP round with no noise
    and a plain round with the same quantisation unmask to the same ring sum."""
    dim, scale = 300, 2.0**20
    federation = Federation.enrol(5)
    dp = ClientDPConfig(1.0, 0.0, min_clients=3, max_cohort=5, dim=dim, rotate=False, scale=scale)
    dp_config = make_config(federation, dim, dp=dp)
    plain_config = dataclasses.replace(dp_config, dp=None)
    assert plain_config.quantization == dp.quantization
    assert plain_config.session_id != dp_config.session_id  # different masks, same sum
    gen = np.random.default_rng(3)
    inputs = {c: gen.integers(-200, 201, dim) / scale for c in federation.ids}
    assert all(np.linalg.norm(x) < 1.0 for x in inputs.values())  # nothing is clipped
    dp_report = run_round(dp_config, federation, inputs, dict.fromkeys(federation.ids, 40))
    plain_report = run_round(plain_config, federation, inputs, dict.fromkeys(federation.ids, 1))
    assert dp_report.failure is None and plain_report.failure is None
    dp_result, plain_result = dp_report.result, plain_report.result
    assert dp_result is not None and plain_result is not None and dp_result.dp is not None
    assert np.array_equal(dp_result.ring_sum, plain_result.ring_sum)
    assert np.array_equal(dp_result.estimate.weighted_mean, plain_result.estimate.weighted_mean)
    assert np.array_equal(dp_result.dp.mean, plain_result.estimate.weighted_mean)
    exact = sum(inputs.values()) / 5
    assert np.max(np.abs(dp_result.dp.mean - exact)) == 0.0
    # DP means are unweighted: the weights (40 each) were not used.
    assert dp_result.estimate.total_weight == dp_result.dp.contributors == 5
    assert dp_result.dp.noise_std == 0.0


def test_zero_noise_rotated_round_is_the_clipped_mean_within_rounding() -> None:
    dim = 1000
    federation = Federation.enrol(4)
    dp = ClientDPConfig(1.0, 0.0, min_clients=3, max_cohort=4, dim=dim)
    config = make_config(federation, dim, dp=dp)
    assert config.element_count == dp.padded_dim + 1 == 1025
    inputs = _inputs(federation, dim, scale=0.05)  # norm ~1.6: every client is clipped
    report = run_round(config, federation, inputs)
    assert report.result is not None and report.result.dp is not None
    aggregate = report.result.dp
    clipped_mean = _clipped_sum(inputs, 1.0) / 4
    error = aggregate.mean - clipped_mean
    assert np.linalg.norm(error) <= aggregate.rounding_error_l2
    assert np.max(np.abs(error)) <= report.result.estimate.error_bound
    assert np.linalg.norm(error) > 0  # rounding happened; the bound is not vacuous
    unclipped_mean = sum(inputs.values()) / 4
    assert np.linalg.norm(aggregate.mean - unclipped_mean) > 100 * aggregate.rounding_error_l2


# --- clipping ------------------------------------------------------------------------------


def test_every_contribution_is_clipped_to_the_norm_bound() -> None:
    dim, clip = 512, 0.5
    federation = Federation.enrol(4)
    config = make_config(federation, dim, dp=ClientDPConfig(clip, 0.0, 3, 4, dim))
    gen = np.random.default_rng(11)
    inputs = {cid: gen.normal(size=dim) * 10.0 ** (i - 3) for i, cid in enumerate(federation.ids)}
    sessions = {}
    for cid in federation.ids:
        session = ClientSession(config, cid, federation.identities[cid], federation.roster, POLICY)
        session.set_input(inputs[cid], 1)
        sessions[cid] = session
    for cid, session in sessions.items():
        summary = session.dp_input
        assert summary is not None
        assert summary.norm == pytest.approx(np.linalg.norm(inputs[cid]))
        assert summary.clipped == (summary.norm > clip)
    assert [s.dp_input.clipped for s in sessions.values() if s.dp_input] == [
        False,
        False,
        True,
        True,
    ]
    # One client alone, through a full round with sigma = 0: what the server decodes for
    # the huge update has norm <= C (plus rounding), pointing the same way.
    report = run_round(config, federation, inputs)
    assert report.result is not None and report.result.dp is not None
    aggregate = report.result.dp
    clipped = {c: l2_clip(x, clip).vector for c, x in inputs.items()}
    assert all(np.linalg.norm(v) <= clip for v in clipped.values())
    assert np.linalg.norm(aggregate.sum) <= 4 * clip + 4 * aggregate.rounding_error_l2
    assert np.linalg.norm(aggregate.sum - sum(clipped.values())) <= 4 * aggregate.rounding_error_l2


# --- noise ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", list(Mechanism))
def test_released_sum_carries_the_configured_noise(mechanism: Mechanism) -> None:
    """n = min_clients: the noise in the unmasked sum has variance sigma^2 C^2 (levels:
    (z Delta_2)^2), in every coordinate, after unrotation."""
    dim, z, n = 16384, 0.5, 4
    federation = Federation.enrol(n)
    dp = ClientDPConfig(1.0, z, min_clients=n, max_cohort=n, dim=dim, mechanism=mechanism)
    inputs = _inputs(federation, dim, scale=0.005)
    report = run_round(make_config(federation, dim, dp=dp), federation, inputs)
    assert report.result is not None and report.result.dp is not None
    aggregate = report.result.dp
    error = aggregate.sum - _clipped_sum(inputs, 1.0)
    target = (z * dp.l2_sensitivity / dp.effective_scale) ** 2
    assert target == pytest.approx((z * 1.0) ** 2, rel=1e-2)  # sigma^2 C^2
    assert (aggregate.noise_std * n) ** 2 == pytest.approx(target)
    assert _variance_in_ci(error, target)
    assert abs(error.mean()) < 6 * math.sqrt(target / dim)  # unbiased
    # Power: a sum with the noise not split (n x), or halved, is rejected.
    assert not _variance_in_ci(error, n * target)
    assert not _variance_in_ci(error, target / 2)
    assert not _variance_in_ci(error, 1.1 * target)


def test_noise_scales_with_the_survivors_and_dropouts_are_survived() -> None:
    """min_clients = 3 of 5; one client drops before uploading: the sum holds 4 shares."""
    dim, z = 8192, 0.8
    federation = Federation.enrol(5)
    dp = ClientDPConfig(1.0, z, min_clients=3, max_cohort=5, dim=dim)
    config = make_config(federation, dim, dp=dp)
    inputs = _inputs(federation, dim, scale=0.005, seed=5)
    dropped = federation.ids[2]
    report = run_round(config, federation, inputs, dropouts={dropped: Stage.MASKED_INPUT})
    assert report.failure is None and report.result is not None and report.result.dp is not None
    survivors = report.result.survivors
    assert dropped not in survivors and len(survivors) == 4
    aggregate = report.result.dp
    error = aggregate.sum - _clipped_sum(inputs, 1.0, survivors)
    per_client = dp.client_noise_variance / dp.effective_scale**2
    assert _variance_in_ci(error, 4 * per_client)
    assert 4 * per_client == pytest.approx((aggregate.noise_std * 4) ** 2)
    assert not _variance_in_ci(error, 3 * per_client)  # the accounted minimum
    assert not _variance_in_ci(error, 5 * per_client)  # the dropped share is not there


def test_central_dp_noise_is_added_by_the_server_once() -> None:
    dim, z, n = 8192, 0.6, 4
    federation = Federation.enrol(n)
    dp = ClientDPConfig(1.0, z, 1, n, dim, placement=NoisePlacement.SERVER)
    config = make_config(federation, dim, dp=dp)
    inputs = _inputs(federation, dim, scale=0.005, seed=9)
    seed = bytes(range(32))
    first = run_round(config, federation, inputs, keep_quantized=True, noise_seed=seed)
    assert first.result is not None and first.result.dp is not None
    # Clients add no noise: each upload is within rounding of its own rotated clipped update.
    pipeline = dp_pipeline(config)
    for cid, values in first.quantized.items():
        levels = config.quantization.ring.to_signed(values[:-1]).astype(np.float64)
        assert pipeline.rotation is not None
        rotated = pipeline.rotation.encode(l2_clip(inputs[cid], 1.0).vector)
        assert np.max(np.abs(levels / dp.effective_scale - rotated)) <= 1 / dp.effective_scale
    error = first.result.dp.sum - _clipped_sum(inputs, 1.0)
    target = dp.server_noise_variance / dp.effective_scale**2
    assert target == pytest.approx(z**2, rel=1e-2)
    assert _variance_in_ci(error, target)
    # A replay with the journalled seed releases the same noise, not a second draw: the
    # sums differ only by the clients' fresh rounding.
    again = run_round(config, federation, inputs, noise_seed=seed)
    assert again.result is not None and again.result.dp is not None
    rounding = 2 * n * first.result.dp.rounding_error_l2
    assert np.linalg.norm(again.result.dp.sum - first.result.dp.sum) <= rounding
    fresh = run_round(config, federation, inputs)
    assert fresh.result is not None and fresh.result.dp is not None
    assert np.linalg.norm(fresh.result.dp.sum - first.result.dp.sum) > 100 * rounding


def dp_pipeline(config: RoundConfig) -> ClientDPPipeline:
    assert config.dp is not None
    return config.dp.pipeline(config.session_id)


# --- binding into the session id --------------------------------------------------------


def _dp_round(federation: Federation, **changes: object) -> RoundConfig:
    base: dict[str, object] = {
        "clip_norm": 1.0,
        "noise_multiplier": 1.0,
        "min_clients": 3,
        "max_cohort": 5,
        "dim": 100,
    }
    accounting = {
        k: changes.pop(k)
        for k in ("sampling_prob", "delta", "planned_rounds", "target_epsilon")
        if k in changes
    }
    base.update(changes)
    dp = RoundDP(ClientDPConfig(**base), **accounting)  # type: ignore[arg-type]  # test kwargs
    return make_config(federation, 100, dp=dp)


DP_VARIANTS: dict[str, dict[str, object]] = {
    "clip_norm": {"clip_norm": 1.5},
    "noise_multiplier": {"noise_multiplier": 1.01},
    "min_clients": {"min_clients": 4},
    "max_cohort": {"max_cohort": 6},
    "bits": {"bits": 40},
    "mechanism": {"mechanism": Mechanism.SKELLAM},
    "placement": {"placement": NoisePlacement.SERVER},
    "rotate": {"rotate": False},
    "scale": {"scale": 1000.0},
    "rounding_beta": {"rounding_beta": 0.1},
    "coordinate_clip_prob": {"coordinate_clip_prob": 1e-7},
    "overflow_prob": {"overflow_prob": 1e-10},
    "sampling_prob": {"sampling_prob": 0.5},
    "delta": {"delta": 1e-6},
    "planned_rounds": {"planned_rounds": 10},
    "target_epsilon": {"target_epsilon": 8.0},
}


def test_every_dp_field_changes_the_session_id() -> None:
    federation = Federation.enrol(5)
    base = _dp_round(federation)
    plain = dataclasses.replace(base, dp=None, quantization=base.quantization)
    ids = {"base": base.session_id, "no-dp": plain.session_id}
    for name, change in DP_VARIANTS.items():
        ids[name] = _dp_round(federation, **change).session_id
    assert len(set(ids.values())) == len(ids), "two DP configurations share a session id"
    assert _dp_round(federation).session_id == base.session_id  # deterministic


def _tamper_noise(s: pb.DpSpec) -> None:
    s.noise_multiplier *= 0.5


def _tamper_kind(s: pb.DpSpec) -> None:
    s.kind = pb.DP_KIND_CENTRAL


TAMPERS = {
    "noise_multiplier": _tamper_noise,
    "clip_norm": lambda s: setattr(s, "clip_norm", 2.0),
    "min_clients": lambda s: setattr(s, "min_clients", 2),
    "mechanism": lambda s: setattr(s, "mechanism", pb.DP_MECHANISM_SKELLAM),
    "rotate": lambda s: setattr(s, "rotate", False),
    "scale": lambda s: setattr(s, "scale", s.scale / 2),
    "sampling_prob": lambda s: setattr(s, "sampling_prob", 0.01),
    "delta": lambda s: setattr(s, "delta", 1e-3),
    "planned_rounds": lambda s: setattr(s, "planned_rounds", 1),
    "target_epsilon": lambda s: setattr(s, "target_epsilon", 100.0),
    "rounding_beta": lambda s: setattr(s, "rounding_beta", 0.2),
    "coordinate_clip_prob": lambda s: setattr(s, "coordinate_clip_prob", 1e-3),
    "overflow_prob": lambda s: setattr(s, "overflow_prob", 1e-3),
    "kind": _tamper_kind,
}


@pytest.mark.parametrize("field", sorted(TAMPERS))
def test_a_spec_with_tampered_dp_fields_is_refused(field: str) -> None:
    federation = Federation.enrol(5)
    # A quarter of the largest scale, so that every tampered variant still fits the ring
    # and is refused by the session id alone (one that does not fit is refused earlier).
    largest = _dp_round(federation).quantization.effective_scale
    config = _dp_round(federation, planned_rounds=5, target_epsilon=8.0, scale=largest / 4)
    spec = config_to_spec(config, min_cohort=3, chunk_bytes=4096, stage_timeout_s=5.0)
    rebuilt = spec_to_config(spec)
    assert rebuilt.session_id == config.session_id and rebuilt.dp == config.dp
    TAMPERS[field](spec.dp)
    with pytest.raises(SessionMismatchError, match="session id"):
        spec_to_config(spec)


def test_a_spec_with_dp_removed_is_refused() -> None:
    federation = Federation.enrol(5)
    spec = config_to_spec(_dp_round(federation), min_cohort=3, chunk_bytes=4096, stage_timeout_s=5)
    spec.dp.kind = pb.DP_KIND_NONE
    with pytest.raises(SessionMismatchError):
        spec_to_config(spec)


def test_a_client_shown_other_noise_cannot_join_the_round() -> None:
    """Divergent views (model inconsistency for DP): the client's signature is over its
    own session id, so the honest server (and every peer) refuses its keys."""
    federation = Federation.enrol(5)
    honest = _dp_round(federation)
    weaker = _dp_round(federation, noise_multiplier=0.1)
    victim = federation.ids[0]
    session = ClientSession(weaker, victim, federation.identities[victim], federation.roster)
    server = ServerRound(honest, federation.roster)
    with pytest.raises(InvalidSignatureError):
        server.receive(session.advertise())


def test_rotation_seed_is_fresh_per_session() -> None:
    federation = Federation.enrol(4)
    a = _dp_round(federation, max_cohort=4)
    b = dataclasses.replace(a, round_id=a.round_id + 1)
    assert rotation_seed(a.session_id) != rotation_seed(b.session_id)
    assert Purpose.DP_ROTATION.value == "dp-rotation"
    assert not np.array_equal(
        dp_pipeline(a).rotation.transform.signs,  # type: ignore[union-attr]
        dp_pipeline(b).rotation.transform.signs,  # type: ignore[union-attr]
    )


def test_round_config_validates_its_dp_terms() -> None:
    federation = Federation.enrol(4)
    dp = ClientDPConfig(1.0, 1.0, min_clients=3, max_cohort=4, dim=100)
    config = make_config(federation, 100, dp=dp)
    with pytest.raises(ConfigError, match="dimension"):
        dataclasses.replace(config, dimension=101)
    with pytest.raises(ConfigError, match="quantization=dp.config.quantization"):
        dataclasses.replace(config, quantization=make_config(federation, 100).quantization)
    too_many = ClientDPConfig(1.0, 1.0, min_clients=5, max_cohort=5, dim=100)
    with pytest.raises(ConfigError, match="min_clients=5 exceeds the roster size 4"):
        make_config(federation, 100, dp=too_many)
    with pytest.raises(ConfigError, match="sampling_prob"):
        RoundDP(dp, sampling_prob=0.0)
    with pytest.raises(ConfigError, match="delta"):
        RoundDP(dp, delta=1.0)


# --- what a client refuses ------------------------------------------------------------------


def test_server_quorum_is_at_least_min_clients() -> None:
    federation = Federation.enrol(6)
    dp = ClientDPConfig(1.0, 1.0, min_clients=5, max_cohort=6, dim=50)
    config = make_config(federation, 50, dp=dp, threshold=4, neighbours=5)
    assert ServerRound(config, federation.roster, quorum=3).quorum == 5
    central = make_config(
        federation, 50, dp=dataclasses.replace(dp, placement=NoisePlacement.SERVER)
    )
    assert ServerRound(central, federation.roster, quorum=3).quorum == central.threshold


def test_client_refuses_when_colluders_leave_too_few_honest_clients() -> None:
    federation = Federation.enrol(5)
    # t = 4 of 5: classic SecAgg needs 2t > n + c for the one colluder assumed below.
    config = make_config(federation, 50, threshold=4, dp=ClientDPConfig(1.0, 1.0, 4, 5, 50))
    cid = federation.ids[0]
    args = (config, cid, federation.identities[cid], federation.roster)
    ClientSession(*args, ClientPolicy(min_cohort=2, max_colluders=1))
    with pytest.raises(CohortTooSmallError, match="min_clients=4 honest clients"):
        ClientSession(*args, ClientPolicy(min_cohort=2, max_colluders=2))


def test_client_will_not_reveal_a_sum_of_too_few_honest_clients() -> None:
    """min_clients 4 + 1 assumed colluder: a survivor set of 4 is refused at signing."""
    dim = 64
    federation = Federation.enrol(6)
    # t = 4 of 6: classic SecAgg needs 2t > n + c for the one colluder assumed below.
    config = make_config(federation, dim, threshold=4, dp=ClientDPConfig(1.0, 1.0, 4, 6, dim))
    inputs = _inputs(federation, dim, scale=0.01)
    drops = {federation.ids[0]: Stage.MASKED_INPUT, federation.ids[1]: Stage.MASKED_INPUT}
    trusting = run_round(config, federation, inputs, dropouts=drops, policy=POLICY)
    assert trusting.failure is None and trusting.result is not None
    wary = ClientPolicy(min_cohort=2, min_threshold=2, max_colluders=1)
    refused = run_round(config, federation, inputs, dropouts=drops, policy=wary)
    assert refused.result is None and isinstance(refused.failure, ThresholdNotMetError)
    reasons = {str(exc) for exc in refused.refusals.values()}
    assert reasons and all("min_clients plus assumed colluders" in r for r in reasons)


def _ledgers_with(budget_rounds: int, config: RoundConfig, ids: tuple[str, ...]) -> dict:
    """Ledgers whose budget holds exactly `budget_rounds` rounds of `config`."""
    assert config.dp is not None
    events = config.dp.events(1.0)
    accountant = PrivacyAccountant()
    for _ in range(budget_rounds):
        for event in events:
            accountant.compose(event)
    allowed = max(accountant.epsilon(1e-5) * 1.0001, 1e-9)
    return {cid: PrivacyLedger(PrivacyBudget(allowed, 1e-5), owner=cid) for cid in ids}


def test_budget_exhaustion_refuses_participation_and_the_round_goes_on() -> None:
    dim = 256
    federation = Federation.enrol(5)
    config = make_config(federation, dim, dp=ClientDPConfig(1.0, 2.0, 3, 5, dim))
    inputs = _inputs(federation, dim, scale=0.01)
    poor = federation.ids[0]
    ledgers = _ledgers_with(3, config, federation.ids)
    ledgers[poor] = _ledgers_with(1, config, (poor,))[poor]
    first = run_round(config, federation, inputs, ledgers=ledgers)
    assert first.failure is None and poor in first.result.survivors  # type: ignore[union-attr]
    assert ledgers[poor].rounds == 1 and first.privacy_spent[poor].epsilon > 0
    second = run_round(dataclasses.replace(config, round_id=2), federation, inputs, ledgers=ledgers)
    assert isinstance(second.refusals[poor], PrivacyBudgetExceededError)
    assert "privacy budget exceeded" in str(second.refusals[poor])
    # It sent nothing: no bytes, no advertisement; the others finished without it.
    assert second.upload_bytes[poor] == 0 and second.download_bytes[poor] == 0
    assert second.failure is None and second.result is not None
    assert poor not in second.result.survivors and len(second.result.survivors) == 4
    assert ledgers[poor].rounds == 1  # nothing recorded for the refused round
    assert all(ledgers[c].rounds == 2 for c in federation.ids if c != poor)
    assert ledgers[poor].spent_epsilon <= ledgers[poor].budget.epsilon


def test_budget_exhaustion_of_too_many_clients_fails_the_round_closed() -> None:
    dim = 128
    federation = Federation.enrol(4)
    config = make_config(federation, dim, dp=ClientDPConfig(1.0, 2.0, 3, 4, dim))
    inputs = _inputs(federation, dim, scale=0.01)
    ledgers = _ledgers_with(0, config, federation.ids[:2])  # no budget for even one round
    report = run_round(config, federation, inputs, ledgers=ledgers)
    assert set(report.refusals) == set(federation.ids[:2])
    assert report.result is None and isinstance(report.failure, ThresholdNotMetError)
    assert "quorum is 3" in str(report.failure)


def test_a_client_is_charged_only_once_its_noised_update_leaves() -> None:
    dim = 64
    federation = Federation.enrol(5)
    config = make_config(federation, dim, dp=ClientDPConfig(1.0, 2.0, 3, 5, dim))
    ledgers = _ledgers_with(2, config, federation.ids)
    early, late = federation.ids[0], federation.ids[1]
    drops = {early: Stage.SHARE_KEYS, late: Stage.UNMASK}
    inputs = _inputs(federation, dim, 0.01)
    report = run_round(config, federation, inputs, dropouts=drops, ledgers=ledgers)
    assert report.result is not None
    assert ledgers[early].rounds == 0  # dropped before uploading: nothing spent
    assert ledgers[late].rounds == 1  # uploaded, signed, then vanished: spent all the same
    assert all(ledgers[c].rounds == 1 for c in federation.ids[2:])


def test_a_budgeted_client_refuses_rounds_without_client_level_dp() -> None:
    federation = Federation.enrol(4)
    cid = federation.ids[0]
    ledger = PrivacyLedger(PrivacyBudget(8.0, 1e-5))
    plain = make_config(federation, 50)
    with pytest.raises(PrivacyPolicyError, match="adds no differential-privacy noise"):
        ClientSession(plain, cid, federation.identities[cid], federation.roster, ledger=ledger)
    central = make_config(
        federation, 50, dp=ClientDPConfig(1.0, 1.0, 1, 4, 50, placement=NoisePlacement.SERVER)
    )
    with pytest.raises(PrivacyPolicyError, match="trusts the server"):
        ClientSession(central, cid, federation.identities[cid], federation.roster, ledger=ledger)
    accepting = ClientPolicy(accept_central_dp=True)
    ClientSession(
        central, cid, federation.identities[cid], federation.roster, accepting, ledger=ledger
    )
    assert ledger.rounds == 0  # checked, not charged


def test_the_ledger_uses_the_sampling_rate_only_when_trusted() -> None:
    dim = 64
    federation = Federation.enrol(4)
    dp = RoundDP(ClientDPConfig(1.0, 1.0, 3, 4, dim), sampling_prob=0.1)
    config = make_config(federation, dim, dp=dp)
    spent = {}
    for trust in (False, True):
        ledgers = {c: PrivacyLedger(PrivacyBudget(1e6, 1e-5)) for c in federation.ids}
        policy = ClientPolicy(min_cohort=2, trust_server_sampling=trust)
        report = run_round(
            config, federation, _inputs(federation, dim, 0.01), policy=policy, ledgers=ledgers
        )
        assert report.result is not None
        spent[trust] = {c: r.epsilon for c, r in report.privacy_spent.items()}
    for q, trust in ((1.0, False), (0.1, True)):
        independent = PrivacyAccountant()
        independent.compose(dp.config.events(q)[0])
        expected = independent.epsilon(1e-5)
        assert all(value == pytest.approx(expected) for value in spent[trust].values())
        assert len(spent[trust]) == 4
    assert max(spent[True].values()) < min(spent[False].values())


# --- accounting ----------------------------------------------------------------------------


def test_federation_accountant_reports_round_and_cumulative_epsilon() -> None:
    dp = ClientDPConfig(1.0, 1.2, min_clients=3, max_cohort=5, dim=1000)
    federation = FederationAccountant("rdp")
    reports = [
        federation.record(
            dp, dp.events(), delta=1e-5, sampling_prob=1.0, noise_std=0.1, contributors=4
        )
        for _ in range(3)
    ]
    single = PrivacyAccountant("rdp")
    single.compose(dp.events()[0])
    triple = PrivacyAccountant("rdp")
    triple.compose(dp.events()[0], 3)
    assert reports[0].epsilon == pytest.approx(single.epsilon(1e-5))
    assert reports[2].epsilon == pytest.approx(triple.epsilon(1e-5))
    assert all(r.round_epsilon == pytest.approx(single.epsilon(1e-5)) for r in reports)
    assert reports[0].epsilon < reports[1].epsilon < reports[2].epsilon
    assert [r.rounds for r in reports] == [1, 2, 3]
    as_dict = reports[2].to_dict()
    for key in ("epsilon", "delta", "noise_multiplier", "clip_norm"):
        assert key in as_dict
    assert as_dict["noise_multiplier"] == 1.2 and as_dict["kind"] == "client"
    assert not as_dict["trusts_server"]
    central = dataclasses.replace(dp, placement=NoisePlacement.SERVER)
    report = FederationAccountant("rdp").record(
        central, central.events(), delta=1e-5, sampling_prob=1.0, noise_std=0.1, contributors=4
    )
    assert report.trusts_server and "trusts it" in report.note


@pytest.mark.parametrize(
    "placement, z", [(NoisePlacement.SERVER, 1.0), (NoisePlacement.CLIENTS, 0.0)]
)
def test_large_updates_encode_when_the_scale_has_no_noise_to_leave_room_for(
    placement: NoisePlacement, z: float
) -> None:
    """Central DP and sigma = 0 derive the largest scale; at D = 2^18 it used to be so
    large that float64 could not check the rounded norm bound, and conditional rounding
    failed every draw. The derived scale now stays where the check is exact."""
    dim = 1 << 18
    config = ClientDPConfig(1.0, z, 1, 3, dim, placement=placement)
    assert config.clip_norm * config.effective_scale * config.padded_dim <= 2.0**48
    pipeline = RoundDP(config).pipeline(bytes(32))
    update = np.random.default_rng(0).normal(size=dim)
    update *= 1.0 / np.linalg.norm(update)  # exactly at the clip norm: the hardest case
    encoding = pipeline.client_encode(update)
    assert encoding.rounding_attempts < 20
    with pytest.raises(ConfigError, match="exceeds 2\\^48"):
        ClientDPConfig(1.0, z, 1, 3, dim, placement=placement, scale=2.0**48 / dim * 2)


def test_secure_dp_mean_is_the_clipped_noised_mean_the_server_decodes() -> None:
    from fedveil.runners.simulation import secure_dp_mean

    rng = np.random.default_rng(7)
    updates = [rng.normal(size=64) * 0.01 for _ in range(3)]
    exact = np.mean(updates, axis=0)
    quiet = ClientDPConfig(1.0, 0.0, min_clients=3, max_cohort=3, dim=64)
    mean, contributors = secure_dp_mean(updates, [1, 1, 1], dp=quiet)
    assert contributors == 3 and np.max(np.abs(mean - exact)) < 1e-6
    noisy = ClientDPConfig(1.0, 1.0, min_clients=3, max_cohort=3, dim=64)
    mean, _ = secure_dp_mean(updates, [1, 1, 1], dp=noisy)
    assert 0.15 < float(np.std(mean - exact)) < 0.6  # sum noise std ~C*z, divided by 3
