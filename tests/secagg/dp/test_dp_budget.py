"""Privacy budgets: a client refuses the round that would overspend, with a clear error."""

from __future__ import annotations

import pytest

from fedveil.errors import ConfigError, FedveilError, PrivacyBudgetExceededError
from fedveil.secagg.dp import (
    AccountingMethod,
    ClientDPConfig,
    GaussianEvent,
    PrivacyAccountant,
    PrivacyBudget,
    PrivacyLedger,
)


def test_ledger_charges_until_the_budget_and_then_refuses() -> None:
    round_events = [GaussianEvent(1.0, sampling_prob=0.05, steps=20)]
    ledger = PrivacyLedger(PrivacyBudget(epsilon=8.0, delta=1e-5), method="rdp", owner="party-a")
    spent = [ledger.charge(round_events).epsilon for _ in range(3)]
    assert spent == sorted(spent) and spent[-1] <= 8.0
    rounds_ok = ledger.rounds
    while True:
        try:
            ledger.charge(round_events)
        except PrivacyBudgetExceededError as exc:
            error = exc
            break
        assert ledger.spent_epsilon <= 8.0
    assert ledger.rounds >= rounds_ok
    # The refused round is not recorded, and the numbers in the message are the real ones.
    before = ledger.spent_epsilon
    projected = ledger.projected(round_events).epsilon
    assert before <= 8.0 < projected
    message = str(error)
    assert "party-a" in message and "budget epsilon 8" in message
    assert f"{before:.4g}" in message and f"{projected:.4g}" in message
    assert "delta 1e-05" in message and "Refusing" in message
    assert error.grpc_status == "RESOURCE_EXHAUSTED"
    assert isinstance(error, FedveilError)
    with pytest.raises(PrivacyBudgetExceededError):
        ledger.check(round_events)
    assert ledger.spent_epsilon == before
    # Taking part in nothing is always allowed.
    assert ledger.check([]).epsilon == pytest.approx(before)


def test_ledger_matches_a_plain_accountant() -> None:
    cfg = ClientDPConfig(1.0, 1.0, min_clients=4, max_cohort=10, dim=1000)
    events = cfg.events(sampling_prob=0.3)
    ledger = PrivacyLedger(PrivacyBudget(100.0, 1e-6))
    for _ in range(5):
        ledger.charge(events)
    accountant = PrivacyAccountant("prv")
    accountant.compose(events[0], 5)
    report = ledger.report()
    assert report.epsilon == accountant.epsilon(1e-6) > 0
    assert report.method is AccountingMethod.RDP  # discrete events: proven bounds only


def test_budget_validation() -> None:
    with pytest.raises(ConfigError, match="epsilon"):
        PrivacyBudget(0.0, 1e-5)
    with pytest.raises(ConfigError, match="delta"):
        PrivacyBudget(1.0, 1.5)
    with pytest.raises(ConfigError, match="PrivacyBudget"):
        PrivacyLedger((1.0, 1e-5))  # type: ignore[arg-type]


def test_a_round_without_noise_is_refused_outright() -> None:
    ledger = PrivacyLedger(PrivacyBudget(1e6, 1e-5))
    with pytest.raises(PrivacyBudgetExceededError, match="inf"):
        ledger.charge([GaussianEvent(0.0, 1.0, 1)])
    assert ledger.rounds == 0
