"""Reading the parties' OUT/metrics.jsonl, whole (for the report) or as it grows (progress).

Why the parties' own files: in the deployment demo every figure in the table is one a
party computed on its own machine (learner.federation.heldout writes one JSON line per
evaluated round). The demo only reads them, the way an operator or a party's own tooling
would: a line is used once it is complete (ends with a newline), and when a round appears
twice (a party that crashed and resumed) the last line of that round wins.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from fedveil.errors import ConfigError
from fedveil.learner.evaluation.report import EvaluationReport

Record = dict[str, object]


def read_metrics(path: Path) -> dict[int, Record]:
    """Every complete line of `path`, keyed by its "round" (the last line of a round wins)."""
    if not path.is_file():
        return {}
    records: dict[int, Record] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(True), 1):
        if not line.endswith("\n"):
            break  # being written
        record = json.loads(line)
        if not isinstance(record, dict) or not isinstance(record.get("round"), int):
            raise ConfigError(f"{path}:{number} is not a metrics line (no integer round)")
        records[record["round"]] = record
    return records


def _number(value: object, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key} is not a number: {value!r}")
    return float(value)


def _by_domain(value: object, key: str) -> dict[str, float]:
    if not isinstance(value, dict):
        raise ConfigError(f"{key} is not a table of domains: {value!r}")
    return {str(k): _number(v, f"{key}.{k}") for k, v in value.items()}


def as_report(record: Record, where: str) -> EvaluationReport:
    """A captioner metrics line as the demo's EvaluationReport; ConfigError naming `where`
    for a line without the captioner's figures (e.g. a causal LM's)."""
    try:
        return EvaluationReport(
            recall_by_domain=_by_domain(record.get("recall_by_domain"), "recall_by_domain"),
            precision_by_domain=_by_domain(
                record.get("precision_by_domain"), "precision_by_domain"
            ),
            mean_recall=_number(record.get("mean_recall"), "mean_recall"),
            bleu=_number(record.get("bleu"), "bleu"),
        )
    except ConfigError as exc:
        raise ConfigError(f"{where} is not a captioner evaluation: {exc}") from None


def record_round(record: Record) -> int:
    """The "round" of a line read by read_metrics (an int there)."""
    number = record["round"]
    assert isinstance(number, int)
    return number


@dataclass
class MetricsTail:
    """The lines of one metrics file not yet seen, as they are appended."""

    path: Path
    seen: set[int] = field(default_factory=set)

    def new_records(self) -> list[Record]:
        fresh = [r for n, r in sorted(read_metrics(self.path).items()) if n not in self.seen]
        self.seen.update(record_round(r) for r in fresh)
        return fresh
