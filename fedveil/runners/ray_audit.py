"""The audit's jobs as Ray tasks: seeds x cells in parallel on a local Ray or a cluster.

Why one task per job (not two lanes as on a two-core machine): on a cluster every job is
independent and the scheduler should spread them; a job asks for one CPU because each
runs one torch thread (attacks.audit.jobs.run_job).

What crosses the process boundary: the job and the context go out (our own frozen
dataclasses, created by this driver); what comes back is JSON-shaped data, the records as
`records_to_json` writes them and the bytes of the figures they name, so nothing returned
is unpickled into our own types. The driver alone writes the store and the figures, so a
cluster node needs no shared file system: a figure is written on the node (under the
driver's absolute figures path), read back into the reply and written again here.

Ray is imported only when a job runs through this executor.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

from fedveil.attacks.audit.executors import Done, describe_failure
from fedveil.attacks.audit.jobs import Job, JobContext, run_job
from fedveil.attacks.audit.store import JobStore
from fedveil.attacks.measure.records import (
    JobResult,
    LeakRecord,
    records_from_json,
    records_to_json,
)
from fedveil.errors import ConfigError
from fedveil.runners.ray_backend import available_cpus, connect, shutdown

Reply = dict[str, Any]
"""{"records": JSON list, "seconds": float, "figures": {absolute path: PNG bytes}}, or
{"error": one line}."""


def run_remote_job(job: Job, context: JobContext) -> Reply:
    """The body of one Ray task: run the job, return its records as JSON and its figures."""
    try:
        result = run_job(job, context)
    except Exception as exc:  # reported on the job's cells; the other tasks go on
        traceback.print_exc()
        return {"error": describe_failure(exc)}
    figures: dict[str, bytes] = {}
    for record in result.records:
        name = record.figure if isinstance(record, LeakRecord) else None
        if name and Path(name).is_file():
            figures[name] = Path(name).read_bytes()
    return {
        "records": records_to_json(result.records),
        "seconds": result.seconds,
        "figures": figures,
    }


def store_reply(reply: Reply, job: Job, store: JobStore, fp: str, figures_root: Path) -> None:
    """Write one task's figures (only under the audit's own figures folder) and results."""
    root = figures_root.resolve()
    for name, data in reply.get("figures", {}).items():
        path = Path(name).resolve()
        if not path.is_relative_to(root):
            raise ValueError(f"job {job.key} returned a figure outside {root}: {name}")
        if not path.is_file() or path.read_bytes() != data:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    result = JobResult(records_from_json(reply["records"]), float(reply["seconds"]))
    store.save(job.key, fp, result)


class RayJobs:
    """Run the audit's pending jobs as Ray tasks (one CPU each).

    `address`: an existing cluster (host:port, ray://host:port or "auto"); None starts a
    local Ray (at most 2 CPUs, as runners.ray_backend does) and stops it afterwards.
    """

    def __init__(self, address: str | None = None) -> None:
        self.address = address

    def __call__(
        self,
        pending: list[Job],
        context: JobContext,
        store: JobStore,
        fps: dict[str, str],
        done: Done,
    ) -> dict[str, str]:
        import ray

        started = connect(self.address)
        try:
            if available_cpus() < 1:
                raise ConfigError("the Ray cluster has no CPU to run audit jobs on")
            task = ray.remote(num_cpus=1, max_retries=0)(run_remote_job)
            running = {task.remote(job, context): job for job in pending}
            return _collect(ray, running, store, fps, context.figures, done)
        finally:
            if started:
                shutdown()


def _collect(
    ray: Any,
    running: dict[Any, Job],
    store: JobStore,
    fps: dict[str, str],
    figures_root: Path,
    done: Done,
) -> dict[str, str]:
    """Store each task's reply as it finishes; {job key: error} for the failed ones."""
    errors: dict[str, str] = {}
    while running:
        ready, _ = ray.wait(list(running), num_returns=1)
        for ref in ready:
            job = running.pop(ref)
            try:
                reply = ray.get(ref)
                if "error" in reply:
                    errors[job.key] = str(reply["error"])
                else:
                    store_reply(reply, job, store, fps[job.key], figures_root)
            except Exception as exc:  # a lost worker or a malformed reply: this job only
                errors[job.key] = describe_failure(exc)
            done(job.key)
    return errors
