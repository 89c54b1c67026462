"""Completed audit jobs on disk, so an interrupted audit resumes where it stopped.

Why a fingerprint: a job's records are reused only if they were computed with the same
settings (profile, seed, cohort, DP noise, code version); thresholds and claims are not
part of it, because judging records is cheap and re-judging must not retrain anything.
Each file is written to a temporary name and renamed, so a kill never leaves a torn
record behind. Records go through attacks.measure.records (the one place that reads and
writes them as JSON); a stored file whose records do not match their schema is stale.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fedveil.attacks.measure.records import (
    JobResult,
    JSONValue,
    RecordError,
    records_from_json,
    records_to_json,
)


def fingerprint(settings: Mapping[str, JSONValue], key: str) -> str:
    blob = json.dumps({"settings": settings, "job": key}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


@dataclass(frozen=True)
class StoredJob:
    """One DIR/work/<job>.json: {key, fingerprint, seconds, records}."""

    key: str
    fingerprint: str
    result: JobResult


class JobStore:
    """DIR/work/<job>.json: {key, fingerprint, seconds, records}."""

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
