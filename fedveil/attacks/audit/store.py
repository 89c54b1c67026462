"""Completed audit jobs on disk, so an interrupted audit resumes where it stopped.

Why a fingerprint: a job's records are reused only if they were computed with the same
settings (profile, seed, cohort, DP noise, code version); thresholds and claims are not
part of it, because judging records is cheap and re-judging must not retrain anything.
Each file is written to a temporary name and renamed, so a kill never leaves a torn
record behind.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def fingerprint(settings: dict[str, Any], key: str) -> str:
    blob = json.dumps({"settings": settings, "job": key}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


class JobStore:
    """DIR/work/<job>.json: {key, fingerprint, seconds, records}."""

    def __init__(self, out_dir: Path) -> None:
        self.root = out_dir / "work"
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)
        return self.root / f"{safe}.json"

    def load(self, key: str, expected: str) -> dict[str, Any] | None:
        """The stored result of `key`, or None if absent, unreadable or stale."""
        path = self._path(key)
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(stored, dict) or stored.get("fingerprint") != expected:
            return None
        return stored

    def save(self, key: str, fp: str, records: list[dict[str, Any]], seconds: float) -> None:
        path = self._path(key)
        tmp = path.with_suffix(".tmp")
        payload = {"key": key, "fingerprint": fp, "seconds": seconds, "records": records}
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
