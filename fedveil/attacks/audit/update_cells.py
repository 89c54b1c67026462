"""Update cells (inversion, labels, text) from several seeds' records.

Why select on one seed and confirm on the others: a cell is judged on its strongest attack
run (target, cohort, attack, position in the job), and picking the maximum of k runs on the
same data that then judges it overstates the leak (the multiplicity problem). So the first
seed only selects the run (the largest excess over its data-free baseline); the remaining
seeds, fresh draws of the private data, give that run's Student t interval, corrected only
for the metrics the cell judges (Bonferroni over 1-2 comparisons, not over every run). With
fewer than three seeds there is nothing to confirm on: the interval of the maximum is then
[max of the lows, max of the highs] at the Bonferroni level of all k runs x metrics, which
holds whenever all k intervals do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from fedveil.attacks.audit.cells import Cell, Check, StrongestRun
from fedveil.attacks.audit.confidence import corrected_level, t_interval
from fedveil.attacks.audit.config import Thresholds
from fedveil.attacks.families import Family
from fedveil.attacks.measure.records import LeakRecord

RunKey = tuple[str, int, str, str, int]


@dataclass(frozen=True)
class Run:
    """One attack run's records of one metric, one per seed (first: the first seed's)."""

    records: tuple[LeakRecord, ...]

    @property
    def first(self) -> LeakRecord:
        return self.records[0]

    def excesses(self) -> list[float]:
        return [r.value - r.baseline_value for r in self.records]

    def mean(self, values: Sequence[float]) -> float:
        return math.fsum(values) / len(values)


def runs(seeds: Sequence[Sequence[LeakRecord]], metric: str) -> list[Run]:
    """The attack runs of `metric`, their records matched across seeds by (target,
    cohort, metric, attack, n-th such record of the seed)."""
    grouped: dict[RunKey, list[LeakRecord]] = {}
    for records in seeds:
        seen: dict[tuple[str, int, str, str], int] = {}
        for r in records:
            if r.metric != metric:
                continue
            base = (r.target, r.n_clients, r.metric, r.attack or "")
            seen[base] = seen.get(base, -1) + 1
            grouped.setdefault((*base, seen[base]), []).append(r)
    return [Run(tuple(rs)) for rs in grouped.values()]


CONFIRMING_SEEDS = 2
"""Seeds beyond the selecting one needed to confirm on held-out draws (else: Bonferroni)."""


def _judge(cell: Cell, found: list[Run], metric: str, limit: float, level: float) -> None:
    if not found:
        return
    seeds = min(len(run.records) for run in found)
    if seeds > CONFIRMING_SEEDS:
        # select on the first seed, judge the selected run on the held-out seeds
        best = max(range(len(found)), key=lambda i: found[i].excesses()[0])
        held_out = found[best].excesses()[1:]
        excess = found[best].mean(held_out)
        ci_low, ci_high = t_interval(held_out, level)
    else:
        means = [run.mean(run.excesses()) for run in found]
        intervals = [t_interval(run.excesses(), level) for run in found]
        best = max(range(len(found)), key=lambda i: means[i])
        excess = means[best]
        ci_low = max(low for low, _ in intervals)
        ci_high = max(high for _, high in intervals)
    run = found[best]
    cell.metrics[metric] = run.mean([r.value for r in run.records])
    baseline = run.mean([r.baseline_value for r in run.records])
    cell.baselines[metric] = baseline
    cell.checks.append(
        Check(
            f"{metric}_over_baseline",
            excess,
            limit,
            excess <= limit,
            baseline,
            ci_low=ci_low,
            ci_high=ci_high,
            level=level,
        )
    )
    if cell.details.strongest is None:
        cell.details.strongest = {}
    first = run.first
    cell.details.strongest[metric] = StrongestRun(first.target, first.n_clients, dict(first.params))


def _judged(attack: Family, t: Thresholds) -> list[tuple[str, float]]:
    if attack is Family.INVERSION:
        return [("psnr", t.max_psnr_over_baseline_db), ("ssim", t.max_ssim_over_baseline)]
    if attack is Family.LABELS:  # who had which label; the counts are the aggregate's own
        return [("label_attribution_acc", t.max_label_acc_over_chance)]
    return [("token_f1", t.max_token_f1_over_baseline)]


def update_cell(cell: Cell, seeds: Sequence[Sequence[LeakRecord]], t: Thresholds) -> None:
    """Fill `cell` from one record list per seed."""
    judged = [(metric, limit, runs(seeds, metric)) for metric, limit in _judged(cell.attack, t)]
    confirmed = all(
        min(len(run.records) for run in found) > CONFIRMING_SEEDS for _, _, found in judged if found
    )
    # selected on one seed and confirmed on the others: one comparison per judged metric
    cell.comparisons = (
        sum(1 for _, _, found in judged if found)
        if confirmed
        else sum(len(found) for _, _, found in judged)
    )
    level = corrected_level(max(cell.comparisons, 1))
    for metric, limit, found in judged:
        _judge(cell, found, metric, limit, level)
    first = seeds[0] if seeds else []
    if cell.attack is Family.INVERSION:
        figures = {r.figure for records in seeds for r in records if r.metric == "psnr"}
        cell.details.figures = sorted(f for f in figures if f)
    elif cell.attack is Family.LABELS:
        multiset = runs(seeds, "label_multiset_acc")
        if multiset:  # reported, not judged: the aggregate's own content
            cell.metrics["label_multiset_acc"] = max(
                r.mean([x.value for x in r.records]) for r in multiset
            )
    elif cell.attack is Family.TEXT and cell.details.strongest:
        # precision, recall, exact sequences of that same attack run (first seed)
        strongest = cell.details.strongest.get("token_f1")
        params = None if strongest is None else strongest.params
        best = [r for r in first if r.metric == "token_f1" and dict(r.params) == params]
        if best:
            run = best[0].run_key()
            wanted = ("token_precision", "token_recall", "exact_seq")
            for r in first:
                if r.metric in wanted and r.run_key() == run:
                    cell.metrics[r.metric] = r.value
                    cell.baselines[r.metric] = r.baseline_value
