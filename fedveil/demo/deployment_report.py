"""The deployment demo's table, from what the parties wrote: the same DemoReport as the
in-process demo, every figure a party's own evaluation.

Where each row comes from:
    base model      a party's "round": 0 line (the adapter before any round, B = 0, so
                    the base model's output): the federated run's when it writes one,
                    else the alone run's.
    NAME alone      the last line of NAME's `fedveil train --alone` metrics.
    federated       the last line of the federated metrics; every party scores the same
                    global adapter on the same held-out scenes, so the lines must agree:
                    the largest difference is reported (DeploymentFacts).
The service's rounds (survivors, total weight, the released mean's error bound) are read
from each party's train.log "aggregate applied" lines, which is where a party records
them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fedveil.demo.deployment import Deployment
from fedveil.demo.metrics_files import Record, as_report, read_metrics
from fedveil.demo.report import PartyRow, ServiceRound
from fedveil.errors import ConfigError
from fedveil.learner.evaluation.report import EvaluationReport
from fedveil.learner.federation.heldout import METRICS_FILE

_APPLIED = re.compile(
    r"round (?P<round>\d+)/\d+: aggregate applied: (?P<survivors>\d+) survivors, "
    r"total weight (?P<weight>\d+), .*error bound (?P<bound>\S+)"
)


@dataclass(frozen=True)
class PartyFigures:
    """The rows of the table, as the parties computed them."""

    base: EvaluationReport
    parties: tuple[PartyRow, ...]
    federated: EvaluationReport
    max_difference: float
    service_rounds: tuple[ServiceRound, ...]


def _complete(records: Mapping[int, Record], rounds: int, where: Path) -> Record:
    last = records.get(rounds)
    if last is None:
        done = max(records, default=None)
        raise ConfigError(
            f"{where} has no line for round {rounds} (last: {done}); the run did not finish"
        )
    return last


def _difference(a: EvaluationReport, b: EvaluationReport) -> float:
    values = [abs(a.mean_recall - b.mean_recall), abs(a.bleu - b.bleu)]
    for table_a, table_b in (
        (a.recall_by_domain, b.recall_by_domain),
        (a.precision_by_domain, b.precision_by_domain),
    ):
        if table_a.keys() != table_b.keys():
            return float("inf")
        values += [abs(table_a[k] - table_b[k]) for k in table_a]
    return max(values)


def applied_rounds(log: Path) -> dict[int, tuple[int, int, float]]:
    """Round number -> (survivors, total weight, error bound) from a party's train.log."""
    found: dict[int, tuple[int, int, float]] = {}
    if not log.is_file():
        return found
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        match = _APPLIED.search(line)
        if match:
            found[int(match["round"])] = (
                int(match["survivors"]),
                int(match["weight"]),
                float(match["bound"].rstrip(",")),
            )
    return found


def _service_rounds(
    deployment: Deployment, federated: Mapping[str, Mapping[int, Record]]
) -> tuple[ServiceRound, ...]:
    first = deployment.parties[0]
    applied = applied_rounds(deployment.workdir / deployment.train_log(first))
    rounds = []
    for number in range(1, deployment.rounds + 1):
        record = federated[first].get(number)
        if record is None or number not in applied:
            continue
        service_round = record.get("service_round")
        holders = tuple(name for name, recs in federated.items() if number in recs)
        _, weight, bound = applied[number]
        round_id = service_round if isinstance(service_round, int) else number
        rounds.append(ServiceRound(round_id, holders, weight, bound))
    return tuple(rounds)


def party_figures(deployment: Deployment) -> PartyFigures:
    """Every row of the table from the parties' metrics files (ConfigError naming the
    file when a run did not finish)."""
    root, rounds = deployment.workdir, deployment.rounds
    federated = {
        n: read_metrics(root / deployment.out_dir(n) / METRICS_FILE) for n in deployment.parties
    }
    alone = {
        n: read_metrics(root / deployment.alone_dir(n) / METRICS_FILE) for n in deployment.parties
    }
    finals = {}
    for name in deployment.parties:
        where = root / deployment.out_dir(name) / METRICS_FILE
        finals[name] = as_report(_complete(federated[name], rounds, where), str(where))
    rows = []
    for name in deployment.parties:
        where = root / deployment.alone_dir(name) / METRICS_FILE
        rows.append(PartyRow(name, as_report(_complete(alone[name], rounds, where), str(where))))
    base_lines = [recs[0] for recs in (*federated.values(), *alone.values()) if 0 in recs]
    if not base_lines:
        raise ConfigError("no party wrote a round-0 line (the base adapter's evaluation)")
    first = finals[deployment.parties[0]]
    return PartyFigures(
        base=as_report(base_lines[0], "a round-0 metrics line"),
        parties=tuple(rows),
        federated=first,
        max_difference=max(_difference(first, other) for other in finals.values()),
        service_rounds=_service_rounds(deployment, federated),
    )
