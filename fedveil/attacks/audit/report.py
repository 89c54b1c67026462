"""report.json: the versioned, machine-checked result of one audit.

Schema "fedveil.audit/2" (bump the number on any incompatible change):
  schema, created (UTC ISO 8601), fedveil_version, profile, seconds,
  settings: threat_model, clients, parties, rounds, lora_rank, dp {clip_norm,
    noise_multiplier, sigma, delta, epsilon_per_round}, protections, attacks, seed,
    seeds (per update cell), confidence (family-wise level of each cell's interval),
    multiplicity (the correction), utility_margin (nats per token a DP model must gain),
  thresholds, claims,
  cells: [{protection, attack, claimed_protected, status, verdict (= status), reason,
    ci_metric, ci_low, ci_high, seeds, comparisons, positive_control, utility,
    metrics, baselines, checks [{metric, value, threshold, baseline, passed, ci_low,
    ci_high, level, outcome}], seconds, details}],
  breaches: ["BREACH <protection>/<attack>: <metric> = v exceeds the threshold t
    (<level> CI a to b)"], only conclusive breaches of claimed cells,
  notes: ["INCONCLUSIVE <cell>: <reason>", "VACUOUS <cell>: <reason>"],
  passed: true iff no breach,
  top_records: N, how many records each cell's details.exposed_records lists.
Membership and extraction cells whose records carry per-canary scores also have
details.exposed_records {ranked_by, records_total, records: [{rank, text, member, score,
extracted, exposure, above_non_members}] (the N most exposed), baseline} (additive: a
reader of version 2 that ignores unknown keys reads it unchanged).
Version 2 (from 1): verdicts with confidence intervals, positive controls, the utility
floor, settings.seeds/confidence/multiplicity/utility_margin, notes.
Infinite values are the strings "inf" / "-inf" (JSON has no infinity).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from importlib import metadata
from pathlib import Path

from fedveil.attacks.audit.active_rows import ActiveRow
from fedveil.attacks.audit.confidence import CONFIDENCE, MULTIPLICITY
from fedveil.attacks.audit.config import AuditConfig, Thresholds
from fedveil.attacks.audit.evaluate import Cell, breach_lines, note_lines
from fedveil.attacks.audit.jobs import seeds_of
from fedveil.attacks.audit.observer_rows import INCONCLUSIVE, ObserverRow
from fedveil.attacks.audit.output_cells import exposure_of
from fedveil.attacks.audit.utility import UTILITY_MARGIN
from fedveil.attacks.families import Family
from fedveil.attacks.measure.records import JSONObject, JSONValue
from fedveil.attacks.protections import Protection

SCHEMA = "fedveil.audit/2"

THREAT_MODEL = (
    "honest-but-curious server that sees what its protection lets it see (a plain update, "
    "the SecAgg+ aggregate, CKKS ciphertexts; a key-holding client decrypts the CKKS "
    "aggregate); anyone who queries the released model (log-probabilities for the "
    "likelihood attacks, sampled text only for the generation attacks)"
)


def _version() -> str:
    try:
        return metadata.version("fedveil")
    except metadata.PackageNotFoundError:
        return "unknown"


def _clean(value: object) -> JSONValue:
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else ("-inf" if value < 0 else "nan")
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"cannot write {type(value).__name__} into report.json")


def clean_json(value: object) -> JSONValue:
    """`value` as report.json may hold it (non-finite floats as strings); shared with
    `fedveil attack`'s report (attacks.own.report), which follows the same conventions."""
    return _clean(value)


@dataclass(frozen=True)
class DPSummary:
    """The DP mechanism the audit ran with: C, z, sigma = z*C, delta, epsilon of one release
    ([dp]: the update views and the epsilon column); `output` the released model's
    federation ([dp.output]: client DP per round, DP-SGD per step), so the report prints
    the one source both kinds of rows were run with."""

    clip_norm: float
    noise_multiplier: float
    sigma: float
    delta: float
    epsilon_per_round: float
    output: JSONObject | None = None

    def to_json(self) -> JSONObject:
        out: JSONObject = {
            "clip_norm": self.clip_norm,
            "noise_multiplier": self.noise_multiplier,
            "sigma": self.sigma,
            "delta": self.delta,
            "epsilon_per_round": self.epsilon_per_round,
        }
        if self.output is not None:
            out["output"] = self.output
        return out


@dataclass(frozen=True)
class ReportSettings:
    """What was audited and how (report.json's "settings")."""

    threat_model: str
    clients: int
    parties: int
    rounds: int | None
    lora_rank: int | None
    dp: DPSummary
    protections: Sequence[Protection]
    attacks: Sequence[Family]
    seed: int
    seeds: int = 1
    confidence: float = CONFIDENCE
    multiplicity: str = MULTIPLICITY
    utility_margin: float = UTILITY_MARGIN

    def to_json(self) -> JSONObject:
        return {
            "threat_model": self.threat_model,
            "clients": self.clients,
            "parties": self.parties,
            "rounds": self.rounds,
            "lora_rank": self.lora_rank,
            "dp": self.dp.to_json(),
            "protections": [p.value for p in self.protections],
            "attacks": [a.value for a in self.attacks],
            "seed": self.seed,
            "seeds": self.seeds,
            "confidence": self.confidence,
            "multiplicity": self.multiplicity,
            "utility_margin": self.utility_margin,
        }


@dataclass(frozen=True)
class AuditReport:
    """One audit's result; `to_json` is report.json (schema above), the one place it is
    written. breaches and passed follow from the cells."""

    created: str
    fedveil_version: str
    profile: str
    seconds: float
    settings: ReportSettings
    thresholds: Thresholds
    claims: Mapping[str, Sequence[str]]
    cells: Sequence[Cell]
    reused_jobs: Sequence[str] | None = None
    errors: Mapping[str, str] | None = None
    active: Sequence[ActiveRow] = ()
    top_records: int = 10
    schema: str = SCHEMA

    @property
    def breaches(self) -> list[str]:
        """The claimed cells' breaches, then every active row whose defence did not act."""
        return breach_lines(self.cells) + [r.breach_line() for r in self.active if r.breached]

    @property
    def passed(self) -> bool:
        """No conclusive breach of a claimed cell (inconclusive and vacuous cells do not
        fail the gate; they are listed by `notes`)."""
        return not self.breaches

    def notes(self) -> list[str]:
        """ "INCONCLUSIVE <cell>: <reason>" / "VACUOUS <cell>: <reason>" for every claimed
        cell, then every claimed observer row, that could not be judged a pass; the
        command prints them."""
        rows = [
            f"INCONCLUSIVE {r.name}: {r.reason or 'no reason recorded'}"
            for r in self.active
            if isinstance(r, ObserverRow) and r.claimed and r.observed == INCONCLUSIVE
        ]
        return note_lines(self.cells) + rows

    def to_json(self) -> JSONObject:
        report: JSONObject = {
            "schema": self.schema,
            "created": self.created,
            "fedveil_version": self.fedveil_version,
            "profile": self.profile,
            "seconds": self.seconds,
            "settings": self.settings.to_json(),
            "thresholds": {f.name: getattr(self.thresholds, f.name) for f in fields(Thresholds)},
            "claims": {str(p): [str(a) for a in attacks] for p, attacks in self.claims.items()},
            "cells": [self._cell(c) for c in self.cells],
            "active_adversaries": [r.to_json() for r in self.active],
            "breaches": self.breaches,
            "notes": self.notes(),
            "passed": self.passed,
            "top_records": self.top_records,
        }
        if self.reused_jobs is not None:
            report["reused_jobs"] = list(self.reused_jobs)
        if self.errors is not None:
            report["errors"] = dict(self.errors)
        cleaned = _clean(report)
        assert isinstance(cleaned, dict)
        return cleaned

    def _cell(self, cell: Cell) -> JSONObject:
        """The cell as report.json holds it, its ranked records cut to the top N."""
        out = cell.to_dict()
        exposure = exposure_of(cell)
        details = out.get("details")
        if exposure is not None and isinstance(details, dict):
            details["exposed_records"] = exposure.to_json(self.top_records)
        return out


def build_report(
    config: AuditConfig,
    cells: list[Cell],
    seconds: float,
    lora_rank: int | None,
    *,
    reused_jobs: Sequence[str] | None = None,
    errors: Mapping[str, str] | None = None,
    active: Sequence[ActiveRow] = (),
) -> AuditReport:
    dp = config.dp
    return AuditReport(
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        fedveil_version=_version(),
        profile=config.profile,
        seconds=round(seconds, 1),
        settings=ReportSettings(
            threat_model=THREAT_MODEL,
            clients=config.clients,
            parties=config.parties,
            rounds=config.rounds,
            lora_rank=lora_rank,
            dp=DPSummary(
                clip_norm=dp.clip_norm,
                noise_multiplier=dp.noise_multiplier,
                sigma=dp.clip_norm * dp.noise_multiplier,
                delta=dp.delta,
                epsilon_per_round=dp.epsilon(steps=1),
                output={
                    "client_clip_norm": config.dp_output.client.clip_norm,
                    "client_noise_multiplier": config.dp_output.client.noise_multiplier,
                    "sgd_clip_norm": config.dp_output.sgd.clip_norm,
                    "sgd_noise_multiplier": config.dp_output.sgd.noise_multiplier,
                },
            ),
            protections=list(config.protections),
            attacks=list(config.attacks),
            seed=config.seed,
            seeds=seeds_of(config.profile),
        ),
        thresholds=config.thresholds,
        claims={p: list(a) for p, a in config.claims.items()},
        cells=cells,
        reused_jobs=reused_jobs,
        errors=errors,
        active=tuple(active),
        top_records=config.top_records,
    )


def write_report(report: AuditReport, path: Path) -> None:
    path.write_text(json.dumps(report.to_json(), indent=1, allow_nan=False) + "\n")
