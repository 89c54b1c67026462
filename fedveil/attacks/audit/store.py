"""Completed audit jobs on disk, so an interrupted audit resumes where it stopped.

Why a fingerprint: a job's records are reused only if they were computed with the same
settings (profile, seed, cohort, DP noise), the same code (a digest of the package's
source files that jobs execute) and the same versions of fedveil, torch, transformers,
peft, opacus and numpy; changed attack code is recomputed, never silently reused.
Thresholds, claims and the judging and reporting modules (attacks/audit/ except jobs.py,
commands, cli, demo) are not part of it, because judging records is cheap and
re-judging must not retrain anything.
Each file is written to a temporary name and renamed, so a kill never leaves a torn
record behind. Records go through attacks.measure.records (the one place that reads and
writes them as JSON); a stored file whose records do not match their schema is stale.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from fedveil.attacks.measure.records import (
    JobResult,
    JSONObject,
    JSONValue,
    RecordError,
    records_from_json,
    records_to_json,
)

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
DEPENDENCIES = ("fedveil", "torch", "transformers", "peft", "opacus", "numpy")
# Relative to the package: code no job runs (judging, reporting, the command line).
NOT_JOB_CODE = ("cli.py", "commands/", "demo/", "attacks/audit/")
JOB_CODE_EXCEPTIONS = ("attacks/audit/jobs.py",)


def is_job_code(relative: str) -> bool:
    """Whether a .py file (path relative to the package, "/"-separated) can change a
    job's records. Everything not listed as judging or reporting counts, so a new
    package is recomputed rather than silently reused."""
    if relative in JOB_CODE_EXCEPTIONS:
        return True
    return not any(relative == p or relative.startswith(p) for p in NOT_JOB_CODE)


def tree_digest(root: Path) -> str:
    """sha256 over the job code under `root`: each file's relative path and contents,
    in sorted path order (so a rename or a moved function changes it too)."""
    digest = hashlib.sha256()
    files = sorted((p.relative_to(root).as_posix(), p) for p in root.rglob("*.py"))
    for relative, path in files:
        if is_job_code(relative):
            digest.update(relative.encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


@functools.cache
def source_digest() -> str:
    """The digest of this installation's job code, computed once per process."""
    return tree_digest(PACKAGE_ROOT)


@functools.cache
def dependency_versions() -> dict[str, str | None]:
    """The installed versions of the packages jobs run on (None: not installed)."""
    versions: dict[str, str | None] = {}
    for name in DEPENDENCIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def code_identity() -> JSONObject:
    """What code a job ran with: stored next to its records and part of its fingerprint."""
    return {"source": source_digest(), "versions": dict(dependency_versions())}


def fingerprint(settings: Mapping[str, JSONValue], key: str) -> str:
    """A job's identity: its settings, its key, and the code and dependency versions."""
    blob = json.dumps(
        {"settings": settings, "job": key, "code": code_identity()}, sort_keys=True
    ).encode()
    return hashlib.sha256(blob).hexdigest()


@dataclass(frozen=True)
class StoredJob:
    """One DIR/work/<job>.json: {key, fingerprint, code, seconds, records}."""

    key: str
    fingerprint: str
    result: JobResult


class JobStore:
    """DIR/work/<job>.json: {key, fingerprint, code (see code_identity), seconds,
    records}."""

    def __init__(self, out_dir: Path) -> None:
        self.root = out_dir / "work"
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)
        return self.root / f"{safe}.json"

    def load(self, key: str, expected: str) -> StoredJob | None:
        """The stored result of `key`, or None if absent, unreadable, stale or written
        with another record schema (then the job is recomputed)."""
        path = self._path(key)
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(stored, dict) or stored.get("fingerprint") != expected:
            return None
        try:
            records = records_from_json(stored.get("records"))
            seconds = float(stored.get("seconds", 0.0))
        except (RecordError, TypeError, ValueError):
            return None
        return StoredJob(key, expected, JobResult(records, seconds))

    def save(self, key: str, fp: str, result: JobResult) -> None:
        path = self._path(key)
        tmp = path.with_suffix(".tmp")
        payload = {
            "key": key,
            "fingerprint": fp,
            "code": code_identity(),
            "seconds": result.seconds,
            "records": records_to_json(result.records),
        }
        tmp.write_text(json.dumps(payload, indent=1, default=_jsonable) + "\n")
        os.replace(tmp, path)


def _jsonable(value: object) -> object:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in an audit record")
