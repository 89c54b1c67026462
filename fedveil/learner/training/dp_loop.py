"""Sample-level DP-SGD for a party's local rounds (Opacus, hooks mode, LoRA only).

Why per-sample losses: DP-SGD clips each record's gradient, so each record's loss must
depend on that record alone. A token mean over the whole batch (HF's `labels=` loss)
weighs a record by its share of the batch's tokens and couples records; here each
caption's loss is the mean cross-entropy over its own target tokens (prompt and padding
masked), and the batch loss is the mean of those (learner.dp_sgd averages).

Why one Opacus session per party, kept across rounds: wrapping a model twice stacks
Opacus' hooks, and one accountant per party composes every step it ever took. Each round
resets the optimiser state (as the non-private loop builds a fresh optimiser per round)
and the party's ledger is checked *before* the round trains: a round past the budget is
refused with PrivacyBudgetExceededError and leaves the adapter untouched.

Why calibrate for the whole run: the noise multiplier is the smallest z (secagg.dp's
PRV accountant, the one the ledger uses) with which `rounds` rounds of Poisson-sampled
steps (rate batch_size / n, ceil(n / batch_size) steps per round) stay within epsilon.

Why the round seed does not fix the noise: DP-SGD's noise and Poisson batches come from
the OS's cryptographically secure generator (learner.dp_sgd), so rerunning a round with
the same config seed draws fresh ones; the seed still fixes dropout. A private round is
therefore not reproducible, by design; a non-private one still is.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from fedveil.errors import ConfigError
from fedveil.learner.dp_sgd import DPSGDConfig, DPSGDSession, make_private, trainable_parameters
from fedveil.learner.training.batches import IGNORE_INDEX, EncodedCaptions, EncodedText
from fedveil.learner.training.loop import TrainConfig, TrainStats, torch_threads
from fedveil.secagg.dp import (
    AccountingMethod,
    GaussianEvent,
    PrivacyBudget,
    PrivacyLedger,
    calibrate_noise_multiplier,
)


@dataclass(frozen=True)
class DPTrainConfig:
    """A party's sample-level DP: per-sample clip, whole-run budget, planned rounds."""

    clip_norm: float = 1.0
    epsilon: float = 8.0
    """Budget over the whole run (all rounds); also the calibration target."""
    delta: float = 1e-5
    rounds: int = 20
    """Rounds the noise is calibrated for; the ledger refuses any round beyond them."""
    noise_multiplier: float | None = None
    """None: calibrate to (epsilon, delta) over `rounds`; else use this z (the ledger
    still enforces the budget)."""
    accountant: str = "prv"
    batch_size: int | None = None
    """Expected Poisson batch (None: the party's TrainConfig.batch_size). Larger batches
    mean fewer, less noisy steps: the noise on the mean gradient is z * clip / batch."""
    learning_rate: float | None = None
    """None: the party's TrainConfig.learning_rate."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.clip_norm) and self.clip_norm > 0):
            raise ConfigError(f"clip_norm must be finite and > 0, got {self.clip_norm!r}")
        PrivacyBudget(self.epsilon, self.delta)  # validates both
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 1:
            raise ConfigError(f"rounds must be a positive int, got {self.rounds!r}")
        if self.noise_multiplier is not None and not (
            math.isfinite(self.noise_multiplier) and self.noise_multiplier >= 0
        ):
            raise ConfigError(f"noise_multiplier must be >= 0, got {self.noise_multiplier!r}")
        AccountingMethod(self.accountant)
        if self.batch_size is not None and (
            isinstance(self.batch_size, bool)
            or not isinstance(self.batch_size, int)
            or self.batch_size < 1
        ):
            raise ConfigError(f"batch_size must be a positive int or None, got {self.batch_size!r}")
        if self.learning_rate is not None and not (
            math.isfinite(self.learning_rate) and self.learning_rate > 0
        ):
            raise ConfigError(f"learning_rate must be > 0 or None, got {self.learning_rate!r}")

    def training(self, train: TrainConfig) -> TrainConfig:
        """The party's TrainConfig with this config's batch size and learning rate."""
        return dataclasses.replace(
            train,
            batch_size=self.batch_size or train.batch_size,
            learning_rate=self.learning_rate or train.learning_rate,
        )


def per_sample_caption_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Shape (batch,): each sample's mean cross-entropy over its own target tokens."""
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs).logits
    if "input_ids" in batch:  # causal LM: position t predicts token t + 1
        logits, labels = logits[:, :-1], labels[:, 1:]
    tokens = F.cross_entropy(
        logits.transpose(1, 2).float(), labels, ignore_index=IGNORE_INDEX, reduction="none"
    )
    counts = (labels != IGNORE_INDEX).sum(dim=1).clamp(min=1)
    return tokens.sum(dim=1) / counts


def steps_per_round(examples: int, batch_size: int) -> int:
    return math.ceil(examples / batch_size)


def calibrate(dp: DPTrainConfig, examples: int, batch_size: int) -> float:
    """The noise multiplier for `dp.rounds` rounds over `examples` records."""
    if dp.noise_multiplier is not None:
        return dp.noise_multiplier
    steps = steps_per_round(examples, batch_size)
    rate = 1.0 / steps  # Opacus' Poisson rate: 1 / (batches per epoch)
    return calibrate_noise_multiplier(
        lambda z: [GaussianEvent(z, rate, steps * dp.rounds)],
        dp.epsilon,
        dp.delta,
        method=dp.accountant,
    )


def _ledger_for(dp: DPTrainConfig, owner: str, ledger: PrivacyLedger | None) -> PrivacyLedger:
    """`ledger` when it enforces `dp`'s budget with `dp`'s accountant; else ConfigError."""
    budget = PrivacyBudget(dp.epsilon, dp.delta)
    if ledger is None:
        return PrivacyLedger(budget, method=dp.accountant, owner=owner)
    if ledger.budget != budget or ledger.method is not AccountingMethod(dp.accountant):
        raise ConfigError(
            f"the privacy ledger enforces epsilon={ledger.budget.epsilon:g} "
            f"delta={ledger.budget.delta:g} ({ledger.method.value}), but DP-SGD is set for "
            f"epsilon={budget.epsilon:g} delta={budget.delta:g} ({dp.accountant})"
        )
    return ledger


class DPTrainer:
    """One party's private trainer: an Opacus session and a ledger, for all its rounds."""

    def __init__(
        self,
        model: torch.nn.Module,
        data: EncodedCaptions | EncodedText,
        train_config: TrainConfig,
        dp: DPTrainConfig,
        owner: str,
        ledger: PrivacyLedger | None = None,
    ) -> None:
        """`ledger`: where the rounds are charged; None, a fresh in-memory one for `dp`'s
        budget. Give one (e.g. clients.privacy_ledger's file-backed ledger) so a restarted
        party starts from what it already spent; it must enforce `dp`'s budget and
        accountant, or the trainer would check one budget and calibrate for another."""
        params = trainable_parameters(model)
        if not params:
            raise ConfigError("the model has no trainable parameters; apply LoRA first")
        self.data = data
        self.dp = dp
        train_config = dp.training(train_config)
        self.noise_multiplier = calibrate(dp, len(data), train_config.batch_size)
        self.ledger = _ledger_for(dp, owner, ledger)
        indices = TensorDataset(torch.arange(len(data)))
        loader = DataLoader(indices, batch_size=train_config.batch_size, shuffle=False)
        optimizer = torch.optim.AdamW(
            params, lr=train_config.learning_rate, weight_decay=train_config.weight_decay
        )
        # Noise and Poisson batches from the OS CSPRNG (learner.dp_sgd); Opacus' warnings,
        # "Secure RNG turned off" about its own unused generator included, are left on.
        self.session: DPSGDSession = make_private(
            model,
            optimizer,
            loader,
            DPSGDConfig(
                max_grad_norm=dp.clip_norm,
                noise_multiplier=self.noise_multiplier,
                target_delta=dp.delta,
                accountant=dp.accountant,
            ),
        )
        self.steps_per_round = steps_per_round(len(data), train_config.batch_size)

    @property
    def sample_rate(self) -> float:
        return self.session.sample_rate

    def planned_events(self) -> list[GaussianEvent]:
        """One round's events, as they will be charged."""
        return [GaussianEvent(self.noise_multiplier, self.sample_rate, self.steps_per_round)]

    def epsilon(self) -> float:
        """Epsilon spent so far at the budget's delta (0 before any round)."""
        return self.ledger.spent_epsilon if self.ledger.rounds else 0.0

    def check_round(self) -> float:
        """Epsilon after one more round, or PrivacyBudgetExceededError past the budget."""
        return self.ledger.check(self.planned_events()).epsilon

    def train_round(self, config: TrainConfig, desc: str) -> TrainStats:
        """One round (one pass of the Poisson loader); refused if it would overspend."""
        self.check_round()
        mark = self.session.steps
        self.session.optimizer.original_optimizer.state.clear()  # fresh AdamW per round
        model = self.session.model
        was_training = model.training
        model.train()
        losses: list[float] = []
        started = time.perf_counter()
        seen = 0
        with (
            torch_threads(config.threads),
            torch.random.fork_rng(devices=[]),
            warnings.catch_warnings(),
        ):
            # inputs of the frozen base never require grad; Opacus' hooks still fire on the
            # LoRA modules' outputs, which is all they need.
            warnings.filterwarnings("ignore", message=".*Full backward hook is firing.*")
            # Dropout only: the noise and the Poisson batches come from the OS CSPRNG, so
            # knowing this seed does not replay them (learner.dp_randomness).
            torch.manual_seed(config.seed)
            with tqdm(
                total=self.steps_per_round, desc=desc, disable=not config.progress, leave=False
            ) as bar:
                for (index,) in self.session.data_loader:
                    batch = self.data.rows(index) if len(index) else {"index": index}
                    seen += len(index)
                    loss = self.session.train_step(batch, per_sample_caption_loss)
                    if loss is not None:
                        losses.append(loss)
                        bar.set_postfix(loss=f"{loss:.3f}")
                    bar.update(1)
        model.train(was_training)
        events = self.session.events_since(mark)
        self.ledger.charge(events)
        mean = sum(losses) / len(losses) if losses else float("nan")
        return TrainStats(
            steps=self.session.steps - mark,
            examples=seen,
            mean_loss=mean,
            last_loss=losses[-1] if losses else float("nan"),
            seconds=time.perf_counter() - started,
        )
