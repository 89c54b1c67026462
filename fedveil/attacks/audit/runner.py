"""Run an audit: plan the jobs, skip the ones already stored, run the rest on an
executor (attacks.audit.executors: two local lanes by default; Ray tasks through
runners.ray_audit), judge every cell (the update measurements once per seed; positive
controls across cells), run the active-adversary and multi-round observer rows, and
write report.json and report.html. A job that fails is reported on its cells and the
others go on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from fedveil.attacks.audit.active_rows import active_rows
from fedveil.attacks.audit.config import AuditConfig
from fedveil.attacks.audit.evaluate import Cell, evaluate_cells
from fedveil.attacks.audit.executors import JobExecutor, LocalLanes
from fedveil.attacks.audit.html import write_html
from fedveil.attacks.audit.jobs import AggregatorsFactory, JobContext, plan, seeds_for
from fedveil.attacks.audit.matrix import applies, jobs_of
from fedveil.attacks.audit.observer_rows import ERROR, ObserverRow, audit_observer_rows
from fedveil.attacks.audit.report import AuditReport, build_report, write_report
from fedveil.attacks.audit.store import JobStore, StoredJob, fingerprint
from fedveil.attacks.families import Family
from fedveil.attacks.measure.records import JobResult
from fedveil.attacks.protections import Protection


@dataclass
class AuditResult:
    """One run of the audit: the typed report (report.json is its `to_json`, written
    once by the runner), the judged cells, and what was reused or failed."""

    audit: AuditReport
    cells: list[Cell]
    reused: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.audit.passed and not self._claimed_errors()

    def _claimed_errors(self) -> list[str]:
        observers = [r.name for r in self.audit.active if isinstance(r, ObserverRow) and r.failed]
        return [c.name for c in self.cells if c.claimed and c.details.error is not None] + observers


def _seed_results(
    config: AuditConfig,
    protection: Protection,
    attack: Family,
    store: JobStore,
    fps: dict[str, str],
    errors: dict[str, str],
) -> list[JobResult] | None:
    """One JobResult per seed (the records of every job of the cell at that seed); None
    when nothing ran. A failed job is judged as "no records", never a pass."""
    by_seed: dict[int, list[StoredJob]] = {}
    failed = False
    for family in jobs_of(attack):
        for job in seeds_for(config, protection, family):
            stored = store.load(job.key, fps[job.key])
            failed = failed or job.key in errors
            if stored is not None:
                by_seed.setdefault(job.seed, []).append(stored)
    if not by_seed:
        return [JobResult([], 0.0)] if failed else None
    return [
        JobResult([r for s in seed for r in s.result.records], sum(s.result.seconds for s in seed))
        for _, seed in sorted(by_seed.items())
    ]


def run_audit(
    config: AuditConfig,
    out_dir: Path,
    aggregators_factory: AggregatorsFactory,
    *,
    workers: int = 2,
    progress: bool = True,
    lora_rank: int | None = 16,
    executor: JobExecutor | None = None,
) -> AuditResult:
    """Run (or resume) the audit of `config` into `out_dir`; the pending jobs run on
    `executor` (default: LocalLanes(workers), see attacks.audit.executors)."""
    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    store = JobStore(out_dir)
    # absolute, so the figure paths in the records resolve wherever report.html is built
    context = JobContext.of(config, out_dir.resolve(), aggregators_factory)
    context.figures.mkdir(parents=True, exist_ok=True)
    jobs = plan(config)
    fps = {job.key: fingerprint(context.settings(), job.key) for job in jobs}
    reused = [j.key for j in jobs if store.load(j.key, fps[j.key]) is not None]
    pending = [j for j in jobs if j.key not in reused]
    run_jobs = executor or LocalLanes(workers)
    with tqdm(total=len(jobs), initial=len(reused), desc="audit jobs", disable=not progress) as bar:

        def done(key: str) -> None:
            bar.set_postfix_str(key)
            bar.update(1)

        errors = run_jobs(pending, context, store, fps, done)
    cells = evaluate_cells(
        config,
        [
            (p, a, _seed_results(config, p, a, store, fps, errors) if applies(p, a) else None)
            for p in config.protections
            for a in config.attacks
        ],
    )
    for cell in cells:
        if not applies(cell.protection, cell.attack):
            cell.details.why = f"{cell.attack} has nothing to measure on {cell.protection}"
            continue
        keys = [j.key for f in jobs_of(cell.attack) for j in seeds_for(config, cell.protection, f)]
        failed = {k: errors[k] for k in keys if k in errors}
        if failed:
            cell.details.error = "; ".join(f"{k}: {e}" for k, e in failed.items())
    active = active_rows(config.seed)  # the real protocol against a malicious server
    observers = audit_observer_rows(config, aggregators_factory)  # a server keeping T rounds
    errors.update({r.name: r.detail for r in observers if r.observed == ERROR})
    report = build_report(
        config,
        cells,
        time.perf_counter() - start,
        lora_rank,
        reused_jobs=reused,
        errors=errors,
        active=[*active, *observers],
    )
    write_report(report, out_dir / "report.json")
    write_html(report, out_dir / "report.html", out_dir)
    return AuditResult(report, cells, reused, errors)
