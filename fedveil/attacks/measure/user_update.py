"""The text column's update measurement on a team's own model and records (`[target]
records`): what each protection's round reveals of the records its parties train on.

How, per protection row and seed: the `[federation] clients` cohort, client i holding
one of the team's records (attacks.targets.user_update.cohort_records: consecutive
records from an offset the seed moves, so seeds are fresh draws where the file is long
enough). Each client computes its adapter delta as one plain SGD step (USER_TRAINING)
on its record with the team's adapter, from the same round-start adapter. Why one SGD
step and not `fedveil train`'s AdamW recipe: it is the attacker's best case (the span
structure DAGER reads holds exactly for SGD; Adam's per-coordinate scaling fills the
rank, attacks.measure.text_leakage), so a pass under a protection is a statement about
the protection, not about the optimiser happening to blur the update; and it is the
update `fedveil attack`'s own tests attack. The server's view is then built by
attacks.measure.observe through the injected real rounds (one client's delta for none,
the SecAgg+/CKKS mean of the n deltas, the same with client-level DP noise, a DP-SGD
delta), and attacked and scored exactly as `fedveil attack` does (attacks.own.run:
DAGER's span check and ranking, the LM head's token bag where it is adapted;
attacks.own.per_record: each record's best F1 over the attacks, against records the
update never saw).

Records per attack (the text cells' metrics): token_f1, token_precision, token_recall
(and exact_seq for the positional attacks) are the mean over the cohort's records of
how much of each record the attack recovered from the view it is in; baseline_value is
the same mean over the never-seen reference records (attacks.own.records.
baseline_records) scored against the same views. So a cell's "token F1 over baseline"
is what the view gives away of the records trained on beyond what it "gives away" of
records nobody trained on. params["records"] ranks the cohort's records, most exposed
first (the report lists it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fedveil.attacks.measure.observe import UpdateLeakageSettings, View, leak_record
from fedveil.attacks.measure.records import JSONObject, JSONValue, LeakRecord
from fedveil.attacks.measure.text_leakage import client_views, view_params
from fedveil.attacks.own.per_record import Match, RecordScore, rank_records
from fedveil.attacks.own.records import Record, baseline_records
from fedveil.attacks.own.run import attack_view
from fedveil.attacks.protections import Aggregators
from fedveil.attacks.targets.user_update import (
    UpdateTargetSpec,
    UserUpdateTarget,
    cohort_records,
    load_update_target,
)
from fedveil.attacks.update.base import LocalTraining, UpdateKind

USER_TRAINING = LocalTraining(steps=1, lr=0.5)
"""Each client's update: one plain SGD step on its record (see the module docstring)."""

RANKED_RECORDS = 20
"""How many of the cohort's records, most exposed first, a record's params list."""

METRICS = ("token_f1", "token_precision", "token_recall", "exact_seq")


@dataclass
class _Scores:
    """One attack's per-record matches over every view: the cohort's and the reference's."""

    positional: bool
    given: list[Match] = field(default_factory=list)
    reference: list[Match] = field(default_factory=list)
    saturated: int = 0
    seconds: float = 0.0


def _metric(matches: Sequence[Match], metric: str) -> float:
    if not matches:
        return 0.0
    values = {
        "token_f1": [m.f1 for m in matches],
        "token_precision": [m.precision for m in matches],
        "token_recall": [m.recall for m in matches],
        "exact_seq": [float(m.recall >= 1.0) for m in matches],
    }[metric]
    return float(np.mean(values))


def _ranking(scored: list[tuple[int, RecordScore]]) -> list[JSONValue]:
    """The cohort's records, most exposed first: (client, record, score, best attack)."""
    order = sorted(scored, key=lambda item: (-item[1].score, item[0]))
    out: list[JSONValue] = []
    for rank, (client, s) in enumerate(order[:RANKED_RECORDS], start=1):
        out.append(
            {
                "rank": rank,
                "client": client,
                "text": s.record.text,
                "source": s.record.source,
                "score": round(s.score, 4),
                "best_attack": s.best_attack,
                "recovered": s.recovered,
            }
        )
    return out


def user_text_records(
    protection: str,
    settings: UpdateLeakageSettings,
    aggregators: Aggregators,
    spec: UpdateTargetSpec,
) -> list[LeakRecord]:
    """The text cells' records of `protection` on the team's model and records."""
    target = load_update_target(spec)
    return measure(protection, settings, aggregators, target)


def measure(
    protection: str,
    settings: UpdateLeakageSettings,
    aggregators: Aggregators,
    target: UserUpdateTarget,
) -> list[LeakRecord]:
    """user_text_records on an already loaded target."""
    chosen = cohort_records(target.records, settings.n_clients, settings.seed)
    held = [target.records[i] for i in chosen]
    clients = [target.client_data(r) for r in held]
    views: list[tuple[View, list[int]]] = client_views(
        protection, target.token, clients, settings, aggregators, UpdateKind.DELTA, USER_TRAINING
    )
    reference = baseline_records(target.own.tokenizer, [len(r.tokens) for r in held])
    scores: dict[str, _Scores] = {}
    scored: list[tuple[int, RecordScore]] = []
    floor = 0.0
    for view, idx in views:
        outcomes = attack_view(target.own, view.observed, target.token, "")
        found = [o.recovered for o in outcomes if o.recovered is not None]
        given: list[Record] = [held[i] for i in idx]
        ranked, ref = rank_records(given, reference, found)
        floor = max([floor, *(s.score for s in ref)])
        by_text = {id(s.record): s for s in ranked}
        scored += [(i, by_text[id(held[i])]) for i in idx]
        for o in outcomes:
            if o.recovered is None:
                continue
            entry = scores.setdefault(o.attack, _Scores(o.recovered.positional))
            entry.given += [s.matches[o.attack] for s in ranked]
            entry.reference += [s.matches[o.attack] for s in ref]
            entry.saturated += int(o.saturated)
            entry.seconds += o.seconds
    return _rows(target, protection, views, scores, scored, floor, len(held))


def _rows(
    target: UserUpdateTarget,
    protection: str,
    views: list[tuple[View, list[int]]],
    scores: dict[str, _Scores],
    scored: list[tuple[int, RecordScore]],
    floor: float,
    clients: int,
) -> list[LeakRecord]:
    settings = target.own.source.settings
    n = views[0][0].observed.n_clients
    common: JSONObject = {
        "rank": settings.rank,
        "variant": settings.variant.value,
        "update": "sgd-delta",
        "local_steps": USER_TRAINING.steps,
        "lr": USER_TRAINING.lr,
        "clients": clients,
        "views": len(views),
        "records_file": str(target.records[0].source.rsplit(":", 1)[0]),
        "baseline_records": "records the update never saw (attacks.own.records.baseline_records)",
        "baseline_max": round(floor, 4),
        "recovered_records": sum(1 for _, s in scored if s.recovered),
        "records": _ranking(scored),
        **view_params(views),
    }
    name = f"user-{target.own.loaded.path.name}"
    rows: list[LeakRecord] = []
    for attack, entry in scores.items():
        metrics = METRICS if entry.positional else METRICS[:3]
        for metric in metrics:
            rows.append(
                leak_record(
                    name, protection, n, metric, _metric(entry.given, metric),
                    _metric(entry.reference, metric), entry.seconds / len(views),
                    attack=attack, saturated_views=entry.saturated, **common,
                )
            )  # fmt: skip
    return rows


__all__ = ["RANKED_RECORDS", "USER_TRAINING", "measure", "user_text_records"]
