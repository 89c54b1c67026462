"""`fedveil demo`: three organisations fine-tune one captioner over the secure service.

Why this shape: it is the case study of the design. An open general model (built once,
offline) knows generic street scenes; the energy, residential and urban parties each
hold captions of their own domain only. Trained alone, a party's adapter describes its
own domain; trained together over the aggregation service (SecAgg+ by default, every
party a real mutual-TLS client), the shared adapter describes a scene from all three
viewpoints. The table puts the base model, each party alone (same rounds, same local
budget) and the federation side by side on the full-caption test set.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clients.data.concepts import DOMAINS, Domain
from clients.data.datasets import CityDataConfig, make_party_datasets, make_test_set
from clients.evaluation.report import EvaluationReport
from clients.federated_local import run_federated
from clients.lora.config import AggregationVariant, LoraSettings
from clients.models.base import build_base_model
from clients.models.loading import load_model
from clients.training.batches import encode_images
from clients.training.loop import TrainConfig
from clients.training.party import Party, captioner_party
from fedveil.service_aggregator import ServiceAggregator
from secagg.errors import ConfigError

MODES = ("secagg", "ckks", "plaintext")


@dataclass(frozen=True)
class DemoOptions:
    """One demo run; every field has a command-line flag."""

    mode: str = "secagg"
    rounds: int = 4
    parties: int = 3
    model_dir: Path | None = None
    adapter_dir: Path = Path("fedveil-demo-adapter")
    json_out: Path | None = None
    variant: AggregationVariant = AggregationVariant.FEDAVG
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not isinstance(self.rounds, int) or self.rounds < 1:
            raise ConfigError(f"rounds must be >= 1, got {self.rounds!r}")
        if not 2 <= self.parties <= len(DOMAINS):
            raise ConfigError(
                f"parties must be in [2, {len(DOMAINS)}] (one per domain), got {self.parties}"
            )

    @property
    def domains(self) -> tuple[Domain, ...]:
        return tuple(DOMAINS[: self.parties])


def _parties(
    datasets: dict[str, Any], names: Sequence[str], base: Path, options: DemoOptions
) -> list[Party]:
    lora = LoraSettings(variant=options.variant, seed=options.seed)
    train = TrainConfig(seed=options.seed, progress=options.progress)
    return [captioner_party(datasets[name], base, lora, train) for name in names]


def run_demo(options: DemoOptions) -> dict[str, Any]:
    """Build or load the base model, run the baselines and the federation, report."""
    started = time.perf_counter()
    base_dir = build_base_model(options.model_dir, progress=options.progress)
    loaded = load_model(base_dir)
    data_config = CityDataConfig(seed=options.seed)
    datasets = make_party_datasets(data_config, options.domains)
    test_set = make_test_set(data_config)
    pixels = encode_images(loaded.image_processor, [s.image for s in test_set])
    names = list(datasets)

    def evaluate(party: Party) -> EvaluationReport:
        return party.evaluate(test_set, pixel_values=pixels)

    timings: dict[str, float] = {"base_model": time.perf_counter() - started}
    reference = _parties(datasets, names[:1], base_dir, options)[0]
    base_report = evaluate(reference)  # the initial adapter leaves the base model unchanged

    local: dict[str, EvaluationReport] = {}
    mark = time.perf_counter()
    for name in names:
        alone = _parties(datasets, [name], base_dir, options)
        run_federated(alone, options.rounds, progress=options.progress)
        local[name] = evaluate(alone[0])
    timings["local_baselines"] = time.perf_counter() - mark

    mark = time.perf_counter()
    parties = _parties(datasets, names, base_dir, options)
    with ServiceAggregator(
        names,
        parties[0].layout.size,
        mode=options.mode,
        rounds=options.rounds,
        progress=options.progress,
    ) as service:
        run_federated(parties, options.rounds, aggregate=service, progress=options.progress)
        rounds = [
            {
                "round_id": r.round_id,
                "survivors": list(r.survivors),
                "total_weight": r.total_weight,
                "error_bound": r.error_bound,
            }
            for r in service.results
        ]
    federated = evaluate(parties[0])
    timings["federated"] = time.perf_counter() - mark
    adapter_path = parties[0].save_adapter(options.adapter_dir)

    report: dict[str, Any] = {
        "base": base_report.as_dict(),
        "local": {name: r.as_dict() for name, r in local.items()},
        "federated": federated.as_dict(),
        "rounds": options.rounds,
        "mode": options.mode,
        "variant": options.variant.value,
        "parties": names,
        "adapter_path": str(adapter_path),
        "model_dir": str(base_dir),
        "adapter_size": parties[0].layout.size,
        "service_rounds": rounds,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "seconds": round(time.perf_counter() - started, 2),
    }
    if options.json_out is not None:
        options.json_out.parent.mkdir(parents=True, exist_ok=True)
        options.json_out.write_text(json.dumps(report, indent=2))
    return report


def format_table(report: dict[str, Any]) -> str:
    """The demo's table: per-domain concept recall, mean recall and BLEU per model."""
    domains = [d.value for d in DOMAINS]
    rows = [("base model", report["base"])]
    rows += [(f"{name} alone", r) for name, r in report["local"].items()]
    rows.append((f"federated ({report['mode']})", report["federated"]))
    header = f"{'model':<22}" + "".join(f"{d:>13}" for d in domains) + f"{'mean':>8}{'BLEU':>8}"
    lines = [
        "concept recall on the full-caption test set",
        header,
        "-" * len(header),
    ]
    for label, r in rows:
        recalls = "".join(f"{r['recall_by_domain'].get(d, 0.0):>13.3f}" for d in domains)
        lines.append(f"{label:<22}{recalls}{r['mean_recall']:>8.3f}{r['bleu']:>8.1f}")
    best_local = max(r["mean_recall"] for r in report["local"].values())
    lines.append(
        f"federated - best single party: {report['federated']['mean_recall'] - best_local:+.3f} "
        f"mean recall; {report['rounds']} rounds in {report['seconds']:.0f} s "
        f"(timings {report['timings_s']})"
    )
    return "\n".join(lines)
