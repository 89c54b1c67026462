"""One `fedveil attack` run from files to report: read, check, attack, rank.

Why the order: every file is read and checked (the adapter against the model, the delta
against the adapter, every record line) before any attack runs, so a mistake costs
seconds and names what to fix, never a traceback after the work.
"""

from __future__ import annotations

import time
from pathlib import Path

from fedveil.attacks.own.delta_file import match_delta, read_tensors
from fedveil.attacks.own.lora_source import AdapterSource
from fedveil.attacks.own.model_target import load_own_model
from fedveil.attacks.own.records import read_records
from fedveil.attacks.own.report import AttackReport, now
from fedveil.attacks.own.run import run_views


def attack_files(
    model_dir: Path,
    delta_path: Path,
    source: AdapterSource,
    records_path: Path | None = None,
    *,
    views: str = "both",
    max_length: int | None = None,
    top: int | None = None,
) -> AttackReport:
    """Attack the delta in `delta_path` on the model in `model_dir` with `source`'s adapter."""
    started = time.perf_counter()
    tensors = read_tensors(delta_path)
    model = load_own_model(model_dir, source)
    settings = source.settings
    delta = match_delta(
        delta_path,
        tensors,
        model.expected(),
        model.frozen,
        rank=settings.rank,
        variant=settings.variant.value,
    )
    records = read_records(records_path, model.tokenizer) if records_path is not None else None
    results = run_views(model, delta, records, which=views, max_length=max_length)
    modules = sorted({name.split(".lora_")[0].rsplit(".", 1)[-1] for name in model.expected()})
    return AttackReport(
        created=now(),
        seconds=round(time.perf_counter() - started, 1),
        model={
            "dir": str(model_dir),
            "kind": model.kind.value,
            "base_model_hash": model.base_hash.hex(),
        },
        adapter={
            "origin": source.origin,
            "rank": settings.rank,
            "alpha": settings.alpha,
            "variant": settings.variant.value,
            "target_modules": modules,
            "seed": settings.seed,
        },
        delta={
            "file": str(delta_path),
            "stacked": delta.stacked,
            "clients": len(delta.clients),
            "weights": list(delta.weights),
        },
        views=tuple(results),
        top=top,
    )
