"""report.json of `fedveil attack`: what the update attacks recovered from a team's delta,
and which of its records, ranked.

Schema "fedveil.attack/1" (bump on any incompatible change):
  schema, created (UTC ISO 8601), fedveil_version, seconds,
  model: {dir, kind, base_model_hash},
  adapter: {origin, rank, alpha, variant, target_modules, seed},
  delta: {file, stacked, clients, weights},
  threat_model, recovered_f1 (the per-record threshold),
  views: [{label, clients,
    attacks: [{attack, applies, reason | saturated, recovered_count, recovered
      (decoded, at most 5 sequences), scores, seconds, token_positions | token_ids, note}],
    records: [{rank, text, source, tokens, score, best_attack, recovered,
      attacks: {name: {recall, precision, f1}}}], ranked best first,
    baseline: {count, mean, max, <attack>.mean, <attack>.max},
    baseline_records: the same fields as records, for the data-free reference records}],
  recovered_records: ["<view>: <text> (<attack> F1 x, baseline max y)"],
  passed: true iff no given record counts as recovered in any view.
Infinite values are written as the strings "inf" / "-inf", as in the audit's report.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from fedveil.attacks.audit.report import clean_json
from fedveil.attacks.measure.records import JSONObject
from fedveil.attacks.own.per_record import RECOVERED_F1, baseline_summary
from fedveil.attacks.own.run import ViewResult

SCHEMA = "fedveil.attack/1"

THREAT_MODEL = (
    "an observer of the delta file: a plaintext server, or anyone who reads the upload, for a "
    "single delta or each client of a stacked file; a SecAgg server for the mean of a "
    "stacked file. It knows the base model and the adapter settings (the plan), never the "
    "records"
)


@dataclass(frozen=True)
class AttackReport:
    """One `fedveil attack` run; `to_json` is report.json."""

    created: str
    seconds: float
    model: JSONObject
    adapter: JSONObject
    delta: JSONObject
    views: tuple[ViewResult, ...]
    top: int | None = None

    @property
    def recovered_records(self) -> list[str]:
        lines = []
        for view in self.views:
            floor = baseline_summary(view.baseline).get("max", 0.0)
            for score in view.records:
                if score.recovered:
                    lines.append(
                        f"{view.label}: {score.record.text!r} ({score.best_attack} F1 "
                        f"{score.score:.2f}, baseline max {floor:.2f})"
                    )
        return lines

    @property
    def passed(self) -> bool:
        return not self.recovered_records

    def to_json(self) -> JSONObject:
        report: JSONObject = {
            "schema": SCHEMA,
            "created": self.created,
            "fedveil_version": _version(),
            "seconds": self.seconds,
            "model": self.model,
            "adapter": self.adapter,
            "delta": self.delta,
            "threat_model": THREAT_MODEL,
            "recovered_f1": RECOVERED_F1,
            "views": [self._view(v) for v in self.views],
            "recovered_records": self.recovered_records,
            "passed": self.passed,
        }
        cleaned = clean_json(report)
        assert isinstance(cleaned, dict)
        return cleaned

    def _view(self, view: ViewResult) -> JSONObject:
        records = view.records[: self.top] if self.top else view.records
        return {
            "label": view.label,
            "clients": view.clients,
            "attacks": [o.to_json() for o in view.outcomes],  # type: ignore[misc]
            "records": [r.to_json() for r in records],  # type: ignore[misc]
            "records_total": len(view.records),
            "baseline": baseline_summary(view.baseline),
            "baseline_records": [r.to_json() for r in view.baseline],  # type: ignore[misc]
        }


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _version() -> str:
    try:
        return metadata.version("fedveil")
    except metadata.PackageNotFoundError:
        return "unknown"


def write_json(report: AttackReport, path: Path) -> None:
    path.write_text(json.dumps(report.to_json(), indent=1, allow_nan=False) + "\n")
