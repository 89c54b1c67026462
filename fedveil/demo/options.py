"""What one demo run is: the service mode, rounds, parties, DP and where results go.

Why checked here: every field has a command-line flag, and a bad value must stop the
run before the base model is built (minutes) with one line saying what to fix.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from fedveil.demo.choices import DP_KINDS
from fedveil.errors import ConfigError
from fedveil.learner.data.concepts import DOMAINS, Domain
from fedveil.learner.data.datasets import CityDataConfig
from fedveil.learner.federated_local import CaptionerRecipe
from fedveil.learner.federation.server_step import ServerStep
from fedveil.learner.federation.staleness import StalenessWeight
from fedveil.learner.lora.config import AggregationVariant, LoraSettings
from fedveil.learner.lora.hetero_config import HeteroConfig
from fedveil.learner.training.dp_loop import DPTrainConfig
from fedveil.secagg.modes import AggregationMode, DPKind, mode_spec, parse_dp_kind, parse_mode

MAX_CLIENTS_PER_PARTY = CityDataConfig.samples_per_party
"""Each client holds at least one sample of its party's 240."""

SAMPLE_DP_BATCH = 64
SAMPLE_DP_LEARNING_RATE = 5e-2
"""--dp sample: a larger expected batch and Adam step than the non-private recipe. Under
DP-SGD every per-sample gradient is clipped (norms far above C = 1) and noised (std
z * C / batch on the mean), so steps are small and noisy. Chosen by a small sweep of batch
size and learning rate scored on the test set, so tuned on it (benchmarks/README.md,
"Recipe choices")."""


DEMO_WEIGHTING = "tower"
"""--ranks / --text-only-party: every party holds the whole rank-max global adapter and
trains its first r columns (HeteroConfig.hold_global), and each coordinate is averaged
over the parties that train its tower (a text-only party never dilutes the image side;
a lower-rank party counts as zeros in the columns it does not train). Measured on the
demo's task (benchmarks/README.md, "Heterogeneous ranks"): the issue's per-group mean
with truncation learnt only the rank-16 party's domain at ranks 4/8/16."""


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
    clients_per_party: int = 1
    """Branch offices per organisation (--clients-per-party): each organisation's data is
    split into this many SecAgg clients (datasets.split_party_dataset); client-level DP
    protects each office. 1: one client per organisation, over the gRPC service; more:
    in-process SecAgg+ rounds (runners.aggregators.InProcessSecAgg), --in-process only."""
    ranks: tuple[int, ...] | None = None
    """--ranks: one LoRA rank per party, in party order; the largest is the federation's
    maximum rank (learner.lora.hetero_layout). None: every party at the recipe's rank."""
    text_only_party: tuple[str, ...] = ()
    """--text-only-party: parties holding captions without images; they train only the
    decoder-side adapters."""
    buffer: int | None = None
    """--buffer K: buffered (FedBuff) rounds in process, each a secure round among the first
    K parties to finish (learner.federation.buffered_local); `rounds` counts buffers.
    None: synchronous rounds."""
    slow_party: str | None = None
    """--slow-party: the organisation whose local run takes `slowdown` times as long."""
    slowdown: float = 5.0
    staleness: str = "polynomial"
    """--staleness: polynomial ((1 + tau)^-1/2, FedBuff's) or constant."""
    dp_rank: int | None = None
    """--dp-rank: the LoRA rank of a private office cohort's federation (alpha / rank kept
    at the recipe's), while each organisation alone keeps the recipe's. Why: the mean's
    DP noise has std about sqrt(2) z C / n on each of the adapter's d elements while the
    clipped signal is at most C long, so the noise's share grows as sqrt(d) / n; a lower
    rank cuts d (and, measured, what the adapter can learn: benchmarks/README.md,
    "Client-level DP vs cohort size"). None: the recipe's rank."""
    server_lr: float | None = None
    """--server-lr: the server's step size on each released mean, office cohorts only
    (learner.federation.server_step; post-processing, no privacy cost). None: 1."""
    server_momentum: float | None = None
    """--server-momentum: the server's momentum over released means, in [0, 1). None: 0."""

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
        self._check_clients()
        self._check_cohort_recipe()
        self._check_hetero()
        self._check_buffer()

    def _check_clients(self) -> None:
        """Many clients per party run SecAgg+ in process, with client DP or none."""
        n = self.clients_per_party
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"clients per party must be an int >= 1, got {n!r}")
        if n == 1:
            return
        if n > MAX_CLIENTS_PER_PARTY:
            raise ConfigError(
                f"clients per party must be <= {MAX_CLIENTS_PER_PARTY} (each client needs "
                f"at least one of its party's samples), got {n}"
            )
        if self.mode is not AggregationMode.SECAGG:
            raise ConfigError("--clients-per-party > 1 runs SecAgg+ in process: use --mode secagg")
        if self.dp is DPKind.SAMPLE:
            raise ConfigError(
                "--clients-per-party > 1 takes --dp client or none (sample-level DP-SGD "
                "runs one session per party)"
            )

    @property
    def private_cohort(self) -> bool:
        """Client DP over branch offices: the setting --dp-rank is for."""
        return self.dp is DPKind.CLIENT and self.clients_per_party > 1

    def _check_cohort_recipe(self) -> None:
        """--dp-rank / --server-lr / --server-momentum: office cohorts only, sane values."""
        given = [
            flag
            for flag, value in (
                ("--dp-rank", self.dp_rank),
                ("--server-lr", self.server_lr),
                ("--server-momentum", self.server_momentum),
            )
            if value is not None
        ]
        if given and self.clients_per_party == 1:
            raise ConfigError(f"{', '.join(given)} take --clients-per-party > 1")
        if self.dp_rank is not None and (
            isinstance(self.dp_rank, bool)
            or not isinstance(self.dp_rank, int)
            or not 1 <= self.dp_rank <= CaptionerRecipe().lora.rank
        ):
            raise ConfigError(
                f"--dp-rank must be an int in [1, {CaptionerRecipe().lora.rank}] (the "
                f"recipe's rank), got {self.dp_rank!r}"
            )
        if self.dp_rank is not None and not self.private_cohort:
            raise ConfigError("--dp-rank is for --dp client (the adapter DP noise must cover)")
        self.server_step()  # validates --server-lr and --server-momentum

    def server_step(self) -> ServerStep:
        """The server's step on each released mean (plain FedAvg unless set)."""
        lr = 1.0 if self.server_lr is None else self.server_lr
        momentum = 0.0 if self.server_momentum is None else self.server_momentum
        return ServerStep(lr, momentum)

    def federation_rank(self) -> int:
        """The federation's LoRA rank: --dp-rank, else the recipe's."""
        return CaptionerRecipe().lora.rank if self.dp_rank is None else self.dp_rank

    def _check_buffer(self) -> None:
        """Buffered rounds: in process, SecAgg+, 2 <= K <= parties, a known slow party."""
        names = [d.value for d in self.domains]
        if self.slow_party is not None and self.slow_party not in names:
            raise ConfigError(f"--slow-party {self.slow_party!r} is not one of {names}")
        if not (math.isfinite(self.slowdown) and self.slowdown >= 1):
            raise ConfigError(f"--slowdown must be a finite number >= 1, got {self.slowdown}")
        self.staleness_weight()  # validates --staleness
        if self.buffer is None:
            return
        if isinstance(self.buffer, bool) or not 2 <= self.buffer <= self.parties:
            raise ConfigError(
                f"--buffer must be in [2, {self.parties}] (the parties), got {self.buffer!r}"
            )
        if self.mode is not AggregationMode.SECAGG:
            raise ConfigError("--buffer runs SecAgg+ rounds in process: use --mode secagg")
        if self.dp is not DPKind.NONE or self.clients_per_party != 1 or self.hetero():
            raise ConfigError(
                "--buffer takes no --dp, --clients-per-party, --ranks or --text-only-party"
            )

    def staleness_weight(self) -> StalenessWeight:
        """--staleness as the weight function each party applies to its own weight."""
        return StalenessWeight(self.staleness)  # type: ignore[arg-type] # checked there

    def durations(self) -> dict[str, float]:
        """Simulated length of each party's local run: 1, `slowdown` for the slow one."""
        return {d.value: self.slowdown if d.value == self.slow_party else 1.0 for d in self.domains}

    def _check_hetero(self) -> None:
        """Ranks (one per party) and text-only parties: in process, no DP, one client each."""
        if self.ranks is None and not self.text_only_party:
            return
        if self.ranks is not None and len(self.ranks) != self.parties:
            raise ConfigError(
                f"--ranks needs one rank per party ({self.parties}), got {len(self.ranks)}"
            )
        if self.dp is not DPKind.NONE:
            raise ConfigError(
                "--ranks and --text-only-party run without --dp (under client DP the "
                "clipped indicator would reweight parties and carry noise in the divisor)"
            )
        if self.clients_per_party != 1:
            raise ConfigError("--ranks and --text-only-party take one client per party")
        self.hetero()

    def hetero(self) -> HeteroConfig | None:
        """The heterogeneous federation, checked against the parties (None: uniform)."""
        if self.ranks is None and not self.text_only_party:
            return None
        names = [d.value for d in self.domains]
        ranks = dict(zip(names, self.ranks, strict=True)) if self.ranks is not None else {}
        max_rank = max(ranks.values(), default=CaptionerRecipe().lora.rank)
        config = HeteroConfig(
            max_rank,
            ranks,
            frozenset(self.text_only_party),
            weighting=DEMO_WEIGHTING,
            hold_global=True,
        )
        config.check_parties(names, has_vision=True)
        return config

    @property
    def clients(self) -> int:
        """Secure-aggregation clients in the federation: parties x clients per party."""
        return self.parties * self.clients_per_party

    @property
    def domains(self) -> tuple[Domain, ...]:
        return tuple(DOMAINS[: self.parties])

    def alone_recipe(self) -> CaptionerRecipe:
        """What each organisation alone trains (office cohorts): the recipe at its own
        rank, uniform and non-private."""
        return dataclasses.replace(self.recipe(), dp=None, hetero=None, lora=self._lora())

    def _lora(self) -> LoraSettings:
        lora = CaptionerRecipe().lora
        return dataclasses.replace(lora, variant=self.variant, seed=self.seed)

    def recipe(self) -> CaptionerRecipe:
        """The federation's recipe (at federation_rank())."""
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
        hetero = self.hetero()
        lora = self._lora()
        # same scaling alpha / rank as the default at every rank
        rank = hetero.max_rank if hetero is not None else self.federation_rank()
        if rank != lora.rank:
            lora = dataclasses.replace(lora, rank=rank, alpha=lora.alpha * rank / lora.rank)
        return CaptionerRecipe(
            dp=dp,
            rounds=self.rounds,
            hetero=hetero,
            lora=lora,
            train=dataclasses.replace(default.train, seed=self.seed, progress=self.progress),
            data=dataclasses.replace(default.data, seed=self.seed),
        )
