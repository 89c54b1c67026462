"""The audit's active-adversary rows against the real protocol, both ways: the defences
fedveil claims act (refused or detected), the open rows are reported as open, and a
defence that stops acting turns into a BREACH line."""

from __future__ import annotations

import pytest

from fedveil.attacks.active.crafted_aggregate import CraftedOutcome
from fedveil.attacks.audit import active_rows as rows_module
from fedveil.attacks.audit.active_rows import DETECTED, OPEN, REFUSED, active_rows


def test_defended_rows_are_refused_or_detected_and_open_rows_say_so() -> None:
    rows = {r.name: r for r in active_rows()}
    assert rows["imprint-beyond-bounds"].observed == REFUSED
    assert rows["split-results"].observed == DETECTED
    for name in ("invented-identity", "forged-advertisement", "cohort-below-floor"):
        assert rows[name].observed == REFUSED, name
    # what fedveil does not defend, stated: each attack recovers what it aims at
    for name in ("imprint-inside-bounds", "ckks-colluder", "enrolled-sybils"):
        row = rows[name]
        assert row.observed == OPEN and row.leak is not None and row.leak > 0.9, name
    assert not any(r.breached for r in rows.values())


def test_a_defence_that_does_not_act_is_a_breach(monkeypatch: pytest.MonkeyPatch) -> None:
    real = rows_module.crafted_aggregate_attack

    def bounds_off(name: str, *, scale: float = 0.5) -> CraftedOutcome:
        outcome = real(name, scale=scale)
        return CraftedOutcome(outcome.name, None, None, 1.0, 1.0)  # accepted, undetected

    monkeypatch.setattr(rows_module, "crafted_aggregate_attack", bounds_off)
    rows = {r.name: r for r in active_rows()}
    assert rows["imprint-beyond-bounds"].breached and rows["split-results"].breached
    assert (
        rows["imprint-beyond-bounds"]
        .breach_line()
        .startswith("BREACH active/imprint-beyond-bounds: expected refused")
    )


def test_seed_replay_row_is_refused_only_while_the_dp_noise_comes_from_the_os(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both ways at the same budget: the seeded control leaks and fedveil's step does not;
    with the OS-CSPRNG switch removed from make_private, the same row is a BREACH."""
    from fedveil.learner import dp_sgd

    rows = {r.name: r for r in active_rows()}
    row = rows["dp-sgd-seed-replay"]
    assert row.observed == REFUSED and not row.breached, row.detail
    assert "control (Opacus, torch seeded): 1.00" in row.detail

    monkeypatch.setattr(dp_sgd, "use_os_csprng", lambda optimizer, loader: None)
    row = {r.name: r for r in active_rows()}["dp-sgd-seed-replay"]
    assert row.observed == OPEN and row.breached and row.leak is not None and row.leak > 0.99
    assert row.breach_line().startswith("BREACH active/dp-sgd-seed-replay: expected refused")
