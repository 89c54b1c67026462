"""What a demo run reports: the base model, each party alone and the federation, scored on
one test set, with the service's rounds, timings and the DP the run spent.

Why typed and frozen: the table, the `--json` file and the tests read the same figures;
as a dictionary each reader guessed at keys ("epsilon" present only under DP, "local_private"
only under sample DP). The JSON is produced here, in one place, with the keys the README
and earlier reports use.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from fedveil.learner.evaluation.report import EvaluationReport
from fedveil.learner.lora.config import AggregationVariant
from fedveil.secagg.modes import AggregationMode, DPKind


@dataclass(frozen=True)
class PartyDP:
    """What one party's DP-SGD spent in the federation (`--dp sample`)."""

    epsilon: float
    noise_multiplier: float
    sample_rate: float
    steps: int


@dataclass(frozen=True)
class PartyRow:
    """One party: its adapter trained alone (same budget, no DP), and under `--dp sample`
    what its private training in the federation spent."""

    name: str
    alone: EvaluationReport
    dp: PartyDP | None = None


@dataclass(frozen=True)
class ServiceRound:
    """One round as the aggregation service released it."""

    round_id: int
    survivors: tuple[str, ...]
    total_weight: int
    error_bound: float


@dataclass(frozen=True)
class RunPrivacy:
    """The DP the run spent, at `delta`.

    client: the service's report after the last round (epsilon cumulative over the run,
        noise_std per element of the released mean).
    sample: the worst party's DP-SGD spend (each party's own in `PartyRow.dp`), against
        the budget `epsilon_budget`, with the recipe's batch size and learning rate.
    """

    kind: DPKind
    epsilon: float
    delta: float
    noise_multiplier: float
    clip_norm: float
    noise_std: float | None = None
    epsilon_budget: float | None = None
    batch_size: int | None = None
    learning_rate: float | None = None


@dataclass(frozen=True)
class DemoTiming:
    """Wall-clock seconds: the whole run, building or loading the base model, and the
    mean federated round."""

    seconds: float
    base_model_seconds: float
    federated_round_seconds: float


@dataclass(frozen=True)
class DeploymentFacts:
    """How the deployment demo ran (`fedveil demo` without --in-process): where, how many
    processes, each phase's wall-clock seconds, and how far apart the parties' own
    evaluations of the final global adapter were (0 when they hold the same adapter)."""

    workdir: Path
    processes: int
    setup_seconds: float
    federated_seconds: float
    alone_seconds: float
    party_max_difference: float


@dataclass(frozen=True)
class HeteroFacts:
    """`--ranks` / `--text-only-party`: each party's LoRA rank (the global adapter is at
    the largest) and the parties that trained on captions without images."""

    ranks: dict[str, int]
    text_only: tuple[str, ...]
    lone_bands: tuple[str, ...] = ()
    """Groups one party trains alone: the aggregate there is that party's own delta."""


@dataclass(frozen=True)
class BufferedFacts:
    """`--buffer K`: buffered rounds on a simulated clock (one unit: a fast party's local
    run), each a secure round among the first K parties to finish."""

    buffer_size: int
    slow_party: str | None
    slowdown: float
    staleness: str
    simulated_time: float
    contributions: dict[str, int]
    """Buffers each party's update went into."""
    max_staleness: int


@dataclass(frozen=True)
class DemoReport:
    """One demo run's figures; `format_table` prints them, `write_json` saves them."""

    mode: AggregationMode
    variant: AggregationVariant
    dp: DPKind
    base: EvaluationReport
    parties: tuple[PartyRow, ...]
    federated: EvaluationReport
    rounds: int
    service_rounds: tuple[ServiceRound, ...]
    adapter_path: Path
    model_dir: Path
    adapter_size: int
    timing: DemoTiming
    privacy: RunPrivacy | None = None
    deployment: DeploymentFacts | None = None
    hetero: HeteroFacts | None = None
    buffered: BufferedFacts | None = None

    @property
    def best_local_mean_recall(self) -> float:
        return max(row.alone.mean_recall for row in self.parties)

    def json_text(self) -> str:
        """The `--json` report (its keys are what README and earlier reports use)."""
        return json.dumps(self._json_fields(), indent=2)

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.json_text())

    def _json_fields(self) -> dict[str, object]:
        fields: dict[str, object] = {
            "base": self.base.as_dict(),
            "local": {row.name: row.alone.as_dict() for row in self.parties},
            "federated": self.federated.as_dict(),
            "rounds": self.rounds,
            "mode": self.mode.value,
            "variant": self.variant.value,
            "dp": self.dp.value,
            "parties": [row.name for row in self.parties],
            "adapter_path": str(self.adapter_path),
            "model_dir": str(self.model_dir),
            "adapter_size": self.adapter_size,
            "service_rounds": [
                {
                    "round_id": r.round_id,
                    "survivors": list(r.survivors),
                    "total_weight": r.total_weight,
                    "error_bound": r.error_bound,
                }
                for r in self.service_rounds
            ],
            "seconds": self.timing.seconds,
            "base_model_seconds": self.timing.base_model_seconds,
            "federated_round_seconds": self.timing.federated_round_seconds,
        }
        if self.privacy is not None:
            fields.update(_privacy_fields(self.privacy, self.parties))
        if self.deployment is not None:
            fields.update(_deployment_fields(self.deployment))
        if self.buffered is not None:
            fields["buffered"] = dataclasses.asdict(self.buffered)
        if self.hetero is not None:
            fields["ranks"] = dict(self.hetero.ranks)
            fields["text_only"] = list(self.hetero.text_only)
            fields["lone_bands"] = list(self.hetero.lone_bands)
        return fields


def _deployment_fields(facts: DeploymentFacts) -> dict[str, object]:
    return {
        "deployment": True,
        "workdir": str(facts.workdir),
        "processes": facts.processes,
        "setup_seconds": facts.setup_seconds,
        "federated_seconds": facts.federated_seconds,
        "alone_seconds": facts.alone_seconds,
        "party_max_difference": facts.party_max_difference,
    }


def _privacy_fields(privacy: RunPrivacy, parties: tuple[PartyRow, ...]) -> dict[str, object]:
    if privacy.kind is not DPKind.SAMPLE:
        return {
            "epsilon": privacy.epsilon,
            "delta": privacy.delta,
            "noise_multiplier": privacy.noise_multiplier,
            "clip_norm": privacy.clip_norm,
            "noise_std": privacy.noise_std,
        }
    private = [(row.name, row.dp) for row in parties if row.dp is not None]
    return {
        "epsilon": privacy.epsilon,
        "delta": privacy.delta,
        "epsilon_budget": privacy.epsilon_budget,
        "noise_multiplier": privacy.noise_multiplier,
        "clip_norm": privacy.clip_norm,
        "sample_rates": {name: dp.sample_rate for name, dp in private},
        "dp_steps": {name: dp.steps for name, dp in private},
        "party_epsilon": {name: dp.epsilon for name, dp in private},
        "dp_batch_size": privacy.batch_size,
        "dp_learning_rate": privacy.learning_rate,
        "local_private": False,
    }
