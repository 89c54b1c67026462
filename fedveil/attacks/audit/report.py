"""report.json: the versioned, machine-checked result of one audit.

Schema "fedveil.audit/1" (bump the number on any incompatible change):
  schema, created (UTC ISO 8601), fedveil_version, profile, seconds,
  settings: threat_model, clients, parties, rounds, lora_rank, dp {clip_norm,
    noise_multiplier, sigma, delta, epsilon_per_round}, protections, attacks,
  thresholds, claims,
  cells: [{protection, attack, claimed_protected, status, metrics, baselines,
    checks [{metric, value, threshold, baseline, passed}], seconds, details}],
  breaches: ["BREACH <protection>/<attack>: <metric> = v exceeds the threshold t"],
  passed: true iff no breach.
Infinite values are the strings "inf" / "-inf" (JSON has no infinity).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from importlib import metadata
from pathlib import Path
from typing import Any

from fedveil.attacks.audit.config import AuditConfig
from fedveil.attacks.audit.evaluate import Cell, breach_lines

SCHEMA = "fedveil.audit/1"

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


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else ("-inf" if value < 0 else "nan")
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def build_report(
    config: AuditConfig, cells: list[Cell], seconds: float, lora_rank: int | None
) -> dict[str, Any]:
    settings = config.to_dict()
    settings["dp"]["epsilon_per_round"] = config.dp.epsilon(steps=1)
    breaches = breach_lines(cells)
    report = {
        "schema": SCHEMA,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "fedveil_version": _version(),
        "profile": config.profile,
        "seconds": round(seconds, 1),
        "settings": {
            "threat_model": THREAT_MODEL,
            "clients": config.clients,
            "parties": config.parties,
            "rounds": config.rounds,
            "lora_rank": lora_rank,
            "dp": settings["dp"],
            "protections": settings["protections"],
            "attacks": settings["attacks"],
            "seed": config.seed,
        },
        "thresholds": settings["thresholds"],
        "claims": settings["claims"],
        "cells": [c.to_dict() for c in cells],
        "breaches": breaches,
        "passed": not breaches,
    }
    return dict(_clean(report))


def write_report(report: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
