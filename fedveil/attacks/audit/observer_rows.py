"""The audit's multi-round observer rows: an honest-but-curious server that keeps rounds.

Why rows of their own: every matrix cell is one round, and one SecAgg+ round of a cohort
with more distinct tokens than the LoRA rank hides them from DAGER. A server that keeps
T rounds of FedAvg-LoRA stacks their A rows (attacks.update.multi_round_observer) and
gets the cohort's distinct words back; under FFA-LoRA (A frozen, fedveil's default) the
stacked B rows stay at rank r. So the rows state both: `fedavg-multi-round` is expected
open (the README's threat model does not claim `--variant fedavg` against it) and is
reported, never gates; `ffa-multi-round` is claimed to hold, and a leak there is a BREACH.

How a row is judged: the same attack at the same budget on both variants, over the
audit's seeds (fresh draws of the cohort's data), each metric's excess over the public
generator's guess with a Student t interval at the Bonferroni level of the metrics judged
(attacks.audit.confidence), against the text column's threshold. A low end above it is a
leak (observed "open"); every high end under it holds; anything else is inconclusive.
The FFA row holds only if the FedAvg run leaked at the same budget (its positive
control); otherwise it is inconclusive, never a pass.

Rendering: the rows are `ActiveRow`s (report.json's active_adversaries, the summary's and
report.html's active table, the audit's BREACH lines); the claimed row is a JUnit test.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from pydantic import Field, field_validator

from fedveil.attacks.audit.active_rows import OPEN, ActiveRow
from fedveil.attacks.audit.confidence import corrected_level, t_interval
from fedveil.attacks.families import Family
from fedveil.attacks.measure.records import JSONObject
from fedveil.attacks.protections import Aggregator, Protection
from fedveil.settings_loader import StrictSettings

if TYPE_CHECKING:
    from fedveil.attacks.audit.config import AuditConfig
    from fedveil.attacks.audit.jobs import AggregatorsFactory
    from fedveil.attacks.audit.observer_job import Measured

HELD, INCONCLUSIVE, ERROR = "held", "inconclusive", "error"
FEDAVG_ROW, FFA_ROW = "fedavg-multi-round", "ffa-multi-round"
ROWS: Mapping[str, str] = {FEDAVG_ROW: "fedavg", FFA_ROW: "ffa"}
"""Row -> fedveil.learner.lora AggregationVariant value."""
EXPECTED: Mapping[str, str] = {FEDAVG_ROW: OPEN, FFA_ROW: HELD}
METRICS = ("bag_f1", "token_f1")
"""Judged, each as its excess over the prior: the distinct words, the sentences' tokens."""
DATA_BASE = 700
"""The cohort's data draw: DATA_BASE + clients, disjoint per seed (as the update cells')."""


class ObserverSettings(StrictSettings):
    """[observer]: the rows to run and the cohort they observe (a few seconds in all)."""

    settings_where: ClassVar[str] = "observer"

    rows: tuple[str, ...] = (FEDAVG_ROW, FFA_ROW)
    clients: int = Field(default=5, ge=2, le=100)
    rounds: int = Field(default=5, ge=1, le=50)
    rank: int = Field(default=16, ge=1, le=64)  # the tiny GPT-2 is 64 wide

    @field_validator("rows", mode="before")
    @classmethod
    def _rows(cls, value: object) -> tuple[str, ...]:
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ValueError("must be a list of strings")
        unknown = [v for v in value if v not in ROWS]
        if unknown:
            raise ValueError(f"unknown row {unknown[0]!r}; rows are {list(ROWS)} ([] for none)")
        if len(set(value)) != len(value):
            raise ValueError(f"has duplicates: {list(value)}")
        return tuple(value)


@dataclass(frozen=True)
class ObserverRow(ActiveRow):
    """One variant's multi-round observer, judged over seeds (see the module docstring).

    metrics / baselines: means over seeds of the observer's score and of the prior
    guess's; intervals: each metric's excess over its baseline, at `level`."""

    clients: int = 0
    rounds: int = 0
    rank: int = 0
    seeds: int = 0
    metrics: Mapping[str, float] = field(default_factory=dict)
    baselines: Mapping[str, float] = field(default_factory=dict)
    intervals: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    level: float = 0.0
    threshold: float = 0.0
    positive_control: bool | None = None
    reason: str | None = None

    @property
    def claimed(self) -> bool:
        """Claimed to hold: it gates the audit (a JUnit test); an open row only reports."""
        return self.expected != OPEN

    @property
    def failed(self) -> bool:
        """A claimed row that could not be measured (the audit fails, as for a job)."""
        return self.claimed and self.observed == ERROR

    def breach_line(self) -> str:
        crossed = [m for m in METRICS if self._low(m) > self.threshold] or list(METRICS[:1])
        metric = crossed[0]
        low, high = self.intervals.get(metric, (math.nan, math.nan))
        excess = self.metrics.get(metric, math.nan) - self.baselines.get(metric, math.nan)
        return (
            f"BREACH {self.name}: {metric}_over_baseline = {excess:.4g} exceeds the threshold "
            f"{self.threshold:.4g} ({self.level:.4g} CI {low:.4g} to {high:.4g}); {self.detail}"
        )

    def _low(self, metric: str) -> float:
        return self.intervals.get(metric, (-math.inf, math.inf))[0]

    def to_json(self) -> JSONObject:
        out = super().to_json()
        out.update(
            {
                "kind": "multi-round observer",
                "clients": self.clients,
                "rounds": self.rounds,
                "rank": self.rank,
                "seeds": self.seeds,
                "metrics": {k: round(v, 6) for k, v in self.metrics.items()},
                "baselines": {k: round(v, 6) for k, v in self.baselines.items()},
                "excess_intervals": {
                    k: [round(lo, 6), round(hi, 6)] for k, (lo, hi) in self.intervals.items()
                },
                "level": round(self.level, 6),
                "threshold": self.threshold,
                "positive_control": self.positive_control,
                "reason": self.reason,
            }
        )
        return out


def applies(config: AuditConfig) -> bool:
    """The rows extend the text column of the secagg row on the built-in target: they run
    when those are audited (a user update target is a model they do not observe)."""
    return (
        bool(config.observer.rows)
        and Family.TEXT in config.attacks
        and Protection.SECAGG in config.protections
        and config.update_target is None
    )


def audit_observer_rows(config: AuditConfig, factory: AggregatorsFactory) -> list[ObserverRow]:
    """The configured rows of `config` ([] where they do not apply)."""
    if not applies(config):
        return []
    from fedveil.attacks.audit.jobs import seeds_of

    return observer_rows(
        config.observer,
        seed=config.seed,
        seeds=seeds_of(config.profile),
        threshold=config.thresholds.max_token_f1_over_baseline,
        aggregate=factory().secagg,
    )


def observer_rows(
    settings: ObserverSettings,
    *,
    seed: int,
    seeds: int,
    threshold: float,
    aggregate: Aggregator,
) -> list[ObserverRow]:
    """Measure both variants (the FedAvg run is also the FFA row's control) over `seeds`
    seeds and judge the rows of `settings`."""
    from fedveil.attacks.audit.observer_job import measure
    from fedveil.learner.lora.config import AggregationVariant

    data_seeds = [DATA_BASE + settings.clients + 1_000_003 * (seed + i) for i in range(seeds)]
    runs: dict[str, list[Measured] | str] = {}
    for row in dict.fromkeys((FEDAVG_ROW, *settings.rows)):
        try:
            runs[row] = measure(
                AggregationVariant(ROWS[row]),
                clients=settings.clients,
                rounds=settings.rounds,
                rank=settings.rank,
                data_seeds=data_seeds,
                aggregate=aggregate,
            )
        except Exception as exc:  # reported on the row, as a failed job on its cells
            runs[row] = f"{type(exc).__name__}: {exc}"
    level = corrected_level(len(METRICS))
    control = _judge(runs[FEDAVG_ROW], threshold, level)[0]
    return [_row(name, runs[name], settings, threshold, level, control) for name in settings.rows]


def _judge(
    measured: Sequence[Measured] | str, threshold: float, level: float
) -> tuple[str, dict[str, tuple[float, float]]]:
    """(observed, each metric's excess interval) of one variant's seeds."""
    if isinstance(measured, str):
        return ERROR, {}
    intervals = {
        m: t_interval([getattr(r, m) - getattr(r, f"{m}_baseline") for r in measured], level)
        for m in METRICS
    }
    if any(low > threshold for low, _ in intervals.values()):
        return OPEN, intervals
    if all(high <= threshold for _, high in intervals.values()):
        return HELD, intervals
    return INCONCLUSIVE, intervals


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def _row(
    name: str,
    measured: Sequence[Measured] | str,
    settings: ObserverSettings,
    threshold: float,
    level: float,
    control: str,
) -> ObserverRow:
    observed, intervals = _judge(measured, threshold, level)
    expected = EXPECTED[name]
    variant = "FedAvg-LoRA" if ROWS[name] == "fedavg" else "FFA-LoRA"
    metrics: dict[str, float] = {}
    baselines: dict[str, float] = {}
    positive_control: bool | None = None
    reason: str | None = None
    if isinstance(measured, str):
        detail = f"the run failed: {measured}"
    else:
        metrics = {m: _mean([getattr(r, m) for r in measured]) for m in METRICS}
        baselines = {m: _mean([getattr(r, f"{m}_baseline") for r in measured]) for m in METRICS}
        if expected != OPEN:
            positive_control = control == OPEN
            if observed == HELD and not positive_control:
                observed = INCONCLUSIVE
                reason = (
                    f"the observer did not leak on FedAvg-LoRA at the same budget ({control}): "
                    "positive control failed"
                )
            elif observed == INCONCLUSIVE:
                reason = f"an excess interval straddles the threshold {threshold:g}"
        detail = _detail(measured, metrics, baselines, intervals, level, reason)
    return ObserverRow(
        name=f"observer/{name}",
        attack=(
            f"a server keeps {settings.rounds} SecAgg+ rounds of {settings.clients} clients "
            f"({variant}, rank {settings.rank}) and stacks their first-layer rows"
        ),
        expected=expected,
        observed=observed,
        by=None,
        leak=metrics.get("bag_f1"),
        detail=detail,
        clients=settings.clients,
        rounds=settings.rounds,
        rank=settings.rank,
        seeds=0 if isinstance(measured, str) else len(measured),
        metrics=metrics,
        baselines=baselines,
        intervals=intervals,
        level=level,
        threshold=threshold,
        positive_control=positive_control,
        reason=reason,
    )


def _detail(
    measured: Sequence[Measured],
    metrics: Mapping[str, float],
    baselines: Mapping[str, float],
    intervals: Mapping[str, tuple[float, float]],
    level: float,
    reason: str | None,
) -> str:
    ranks = sorted({int(r.rank) for r in measured})
    return (
        "; ".join(
            f"{m.replace('_', ' ')} {metrics[m]:.2f} vs prior {baselines[m]:.2f} "
            f"(excess {level:.4g} CI {intervals[m][0]:.2f} to {intervals[m][1]:.2f})"
            for m in METRICS
        )
        + f"; {len(measured)} seeds, stacked rank {'/'.join(map(str, ranks))}"
        + ("" if all(r.trains_a for r in measured) else " (A frozen: B rows)")
        + ("" if reason is None else f"; {reason}")
    )
