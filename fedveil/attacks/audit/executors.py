"""Where the audit's pending jobs run: the executor the runner is given.

Why injected: the attack suite never imports the runners (an import-linter contract), yet
an auditor with a cluster wants seeds x cells spread over it. So the runner takes any
`JobExecutor`; this module has the local one (two lanes of worker processes, the default
on the two-core machines this must fit on) and `fedveil.runners.ray_audit` has one that
runs every job as a Ray task, on a local Ray or an existing cluster.

Contract: an executor runs every job of `pending`, leaves each finished job's result in
the store under its fingerprint, calls `done(key)` as each one is stored (the progress
bar), and returns {job key: one-line error} for the jobs that failed; one failed job
never stops the others.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import traceback
from collections.abc import Callable
from typing import Protocol

from fedveil.attacks.audit.jobs import Job, JobContext, run_job
from fedveil.attacks.audit.store import JobStore

Done = Callable[[str], None]


class JobExecutor(Protocol):
    def __call__(
        self,
        pending: list[Job],
        context: JobContext,
        store: JobStore,
        fps: dict[str, str],
        done: Done,
    ) -> dict[str, str]: ...


def describe_failure(exc: BaseException) -> str:
    """A failed job as the report and the command print it."""
    return f"{type(exc).__name__}: {exc}"


def run_lane(
    jobs: list[Job], context: JobContext, store: JobStore, fps: dict[str, str]
) -> dict[str, str]:
    """Run jobs one after another in this process; {job key: error} for the failures."""
    errors: dict[str, str] = {}
    for job in jobs:
        try:
            store.save(job.key, fps[job.key], run_job(job, context))
        except Exception as exc:  # one failed job must not lose the others
            errors[job.key] = describe_failure(exc)
            traceback.print_exc()
    return errors


def lanes(pending: list[Job], workers: int) -> list[list[Job]]:
    """One lane trains and probes the released models (the scenario's base model is
    built once per process), the other runs the update attacks; without output jobs the
    update jobs are split over the workers."""
    if workers <= 1:
        return [pending]
    output = [j for j in pending if j.lane == "output"]
    update = [j for j in pending if j.lane == "update"]
    if not output:
        return [update[i::workers] for i in range(workers) if update[i::workers]]
    return [lane for lane in (output, update) if lane]


class LocalLanes:
    """The default executor: `workers` spawned processes (1: inline, job by job)."""

    def __init__(self, workers: int = 2) -> None:
        self.workers = workers

    def __call__(
        self,
        pending: list[Job],
        context: JobContext,
        store: JobStore,
        fps: dict[str, str],
        done: Done,
    ) -> dict[str, str]:
        errors: dict[str, str] = {}
        split = lanes(pending, self.workers)
        if self.workers <= 1 or len(split) <= 1:
            for job in pending:
                errors |= run_lane([job], context, store, fps)
                done(job.key)
            return errors
        spawn = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(len(split), mp_context=spawn) as pool:
            futures = [pool.submit(run_lane, lane, context, store, fps) for lane in split]
            reported: set[str] = set()
            while True:
                finished, _ = cf.wait(futures, timeout=2.0)
                for job in pending:
                    if job.key not in reported and store.load(job.key, fps[job.key]) is not None:
                        reported.add(job.key)
                        done(job.key)
                if len(finished) == len(futures):
                    break
            for future in futures:
                errors |= future.result()
        return errors
