"""The audit's active-adversary rows: a malicious server, a colluding client, Sybils.

Why rows of their own: the matrix models an honest-but-curious server for one round. These
attacks run against the real protocol code (attacks/active: the clients' own acceptance of
a result, the model chain, the roster) and each row states what it expects: `refused` or
`detected` where fedveil has a defence, `open` where it has none (said plainly, so a reader
sees what remains). A defended row that is not refused or detected is a BREACH; an open row
never gates, it reports.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedveil.attacks.active.ckks_colluder import run_ckks_colluder
from fedveil.attacks.active.crafted_aggregate import crafted_aggregate_attack
from fedveil.attacks.active.seed_replay_step import run_seed_replay
from fedveil.attacks.active.sybil import roster_refusals, run_sybil_round
from fedveil.attacks.measure.records import JSONObject

REFUSED, DETECTED, OPEN = "refused", "detected", "open"


@dataclass(frozen=True)
class ActiveRow:
    """One active attack: what is expected, what happened, and what the attack got.

    leak: the attack's own score on what it obtained (share of records rebuilt, |cosine|,
    or 1 - relative error of a recovered update), where it got anything."""

    name: str
    attack: str
    expected: str
    observed: str
    by: str | None
    leak: float | None
    detail: str

    @property
    def breached(self) -> bool:
        """A defence fedveil claims did not act."""
        return self.expected != OPEN and self.observed == OPEN

    def breach_line(self) -> str:
        return (
            f"BREACH active/{self.name}: expected {self.expected}, the attack was accepted "
            f"({self.detail})"
        )

    def to_json(self) -> JSONObject:
        return {
            "name": self.name,
            "attack": self.attack,
            "expected": self.expected,
            "observed": self.observed,
            "by": self.by,
            "leak": None if self.leak is None else round(float(self.leak), 6),
            "detail": self.detail,
        }


def _crafted(name: str, attack: str, scale: float, expected: str) -> ActiveRow:
    outcome = crafted_aggregate_attack(attack, scale=scale)
    if outcome.refused_by is not None:
        observed, by = REFUSED, outcome.refused_by
    elif outcome.detected_by is not None:
        observed, by = DETECTED, outcome.detected_by
    else:
        observed, by = OPEN, None
    leak = outcome.leak_on_aggregate if observed == OPEN else None
    would = "scores" if observed == OPEN else "would have scored"
    detail = (
        f"crafted result x{scale:g}: {observed}"
        + (f" by {by}" if by else "")
        + f"; the next round {would} {outcome.leak_on_victim_update:.2f} on the victim's "
        f"update, {outcome.leak_on_aggregate:.2f} on the SecAgg aggregate"
    )
    return ActiveRow(name, f"crafted aggregate ({attack})", expected, observed, by, leak, detail)


def _recovery(error: float, truth: np.ndarray) -> float:
    scale = float(np.max(np.abs(truth))) or 1.0
    return max(0.0, 1.0 - error / scale)


def active_rows(seed: int = 0) -> list[ActiveRow]:
    """Run every active attack once (a few seconds on the toy adapter and small vectors)."""
    rng = np.random.default_rng(seed)
    rows = [
        _crafted("imprint-beyond-bounds", "imprint", 50.0, REFUSED),
        _crafted("imprint-inside-bounds", "imprint", 0.5, OPEN),
        _crafted("zero-others-lora", "zero-others", 0.5, OPEN),
        _crafted("split-results", "inconsistent", 0.5, DETECTED),
    ]
    updates = [rng.normal(0, 0.5, 64) for _ in range(3)]
    colluder = run_ckks_colluder(updates, victim=0, colluder=1)
    rows.append(
        ActiveRow(
            "ckks-colluder",
            "server + one enrolled CKKS client decrypt one upload",
            OPEN,
            OPEN,
            None,
            _recovery(colluder.max_abs_error, colluder.clipped_truth),
            f"the victim's update decrypted to max error {colluder.max_abs_error:.2g} "
            "(every CKKS client holds the secret key)",
        )
    )
    sybil = run_sybil_round(rng.normal(0, 0.5, 32), 5, cohort=4, seed=seed)
    rows.append(
        ActiveRow(
            "enrolled-sybils",
            f"{sybil.sybils} enrolled Sybils in a cohort of {sybil.cohort}",
            OPEN,
            OPEN,
            None,
            _recovery(sybil.max_abs_error, sybil.clipped_truth),
            "the sum minus the Sybils' own inputs is the victim's update (error "
            f"{sybil.max_abs_error:.2g}); enrolment is the operator's act",
        )
    )
    refusals = roster_refusals()
    for name, reason in (
        ("invented-identity", refusals.invented_identity),
        ("forged-advertisement", refusals.forged_advertisement),
        ("cohort-below-floor", refusals.cohort_below_floor),
    ):
        rows.append(
            ActiveRow(
                name,
                "the server adds clients the roster does not enrol",
                REFUSED,
                REFUSED if reason else OPEN,
                reason,
                None,
                f"the victim's ClientSession: {reason or 'accepted'}",
            )
        )
    rows.append(_seed_replay())
    return rows


def _seed_replay() -> ActiveRow:
    """DP-SGD noise replayed from a guessed seed: refused when fedveil's noise keeps its
    energy; the detail carries the positive control (Opacus' seeded generator), which must
    leak at the same budget or the row could not have failed."""
    outcome = run_seed_replay()
    ours, control = outcome.fedveil, outcome.control
    observed = OPEN if ours.leaked or not control.leaked else REFUSED
    by = "the OS CSPRNG (learner.dp_randomness)" if observed == REFUSED else None
    detail = (
        f"best of {ours.guesses} seed guesses removed {ours.noise_removed:.2f} of the noise's "
        f"energy from fedveil's DP-SGD step; control (Opacus, torch seeded): "
        f"{control.noise_removed:.2f}"
        + ("" if control.leaked else " - the control did not leak, so nothing was shown")
    )
    return ActiveRow(
        "dp-sgd-seed-replay",
        "replay a party's DP-SGD noise from a guessed seed",
        REFUSED,
        observed,
        by,
        max(0.0, ours.noise_removed),
        detail,
    )
