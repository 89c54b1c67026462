"""Target for the output attacks: the model a FEDERATION releases under each protection.

Why a federation and not one party: the question a deployment asks is not "does DP-SGD
protect one party's fine-tuning" but "what does the model the federation publishes
reveal about party 0's records, given how the rounds were protected". So several
parties fine-tune the same LoRA adapters on their own private texts (party 0 holds the
texts with the planted canaries, the others other city texts), and FedAvg averages
their adapter deltas round by round, the mean computed by the real round of the
protection (injected through `Aggregators`; attacks/ never imports fedveil/):

- none: a plain numpy weighted mean (no protection at all).
- secagg / ckks: the real SecAgg+ / CKKS round. They hide each party's delta from the
  server but release the same mean, so the released model memorises as much as with
  none: the benchmark shows it.
- secagg+client-dp: each party's delta clipped to C and distributed noise of std z*C on
  the sum (real SecAgg+ with client-level DP); epsilon per party over all rounds from
  the accountant (sampling rate 1, `rounds` Gaussian releases).
- dp-sgd: each party trains locally with Opacus DP-SGD (learner/dp_sgd.py, per-example
  clipping and noise), and the deltas are averaged by the real SecAgg+ round (the
  realistic deployment is secagg + dp-sgd; the mean is not the privacy mechanism here);
  epsilon is party 0's, composed over all its steps of all rounds.

The non-DP runs decay the learning rate linearly to zero over all rounds (each round
continues the decay where the previous stopped), as the single-party fine-tuning does,
because settling into the minimum is where memorisation happens.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters
from torch.utils.data import DataLoader, TensorDataset

from fedveil.attacks.output.canaries import CanaryConfig
from fedveil.attacks.output.language_model import cpu_threads, flush_denormals
from fedveil.attacks.protections import (
    Aggregator,
    Aggregators,
    DPSettings,
    Protection,
    parse_protection,
)
from fedveil.attacks.targets.canary_lm import (
    CanaryLMConfig,
    CanaryScenario,
    TrainedModel,
    adapted_base,
    canary_scenario,
    per_sample_lm_loss,
    train_lm,
)
from fedveil.attacks.targets.tiny_lm import sentences
from fedveil.errors import ConfigError
from fedveil.secagg.dp import GaussianEvent, PrivacyAccountant
from fedveil.secagg.modes import AggregationMode, DPKind


def _positive_int(owner: str, name: str, value: object, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{owner}.{name} must be an int >= {low}, got {value!r}")


def _positive_float(owner: str, name: str, value: object) -> None:
    if not (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    ):
        raise ConfigError(f"{owner}.{name} must be a finite number > 0, got {value!r}")


@dataclass(frozen=True)
class FederationSettings:
    """How the federation trains, and the noise of its two DP protections.

    parties: party 0 holds the canaries, the others `n_private` other city texts each
      (>= 2: a secure round needs a cohort). rounds x local_epochs: each party's epochs
      over its data (non-DP: AdamW at lr decayed linearly to zero over all rounds).
    client_dp: C and z of secagg+client-dp (per round, on each party's whole delta).
    dp_sgd: C and z of dp-sgd (per step, on each example's gradient), with Poisson
      batches of expected size dp_sgd_batch_size, Adam at dp_sgd_lr, dp_sgd_local_epochs
      epochs per round (DP-SGD needs fewer, noisier epochs for a useful epsilon).
    """

    parties: int = 3
    rounds: int = 20
    local_epochs: int = 15
    lr: float = 1e-2
    batch_size: int = 32
    client_dp: DPSettings = field(default_factory=lambda: DPSettings(0.02, 3.0))
    dp_sgd: DPSettings = field(default_factory=lambda: DPSettings(1.0, 2.0))
    dp_sgd_local_epochs: int = 2
    dp_sgd_batch_size: int = 16
    dp_sgd_lr: float = 3e-3
    seed: int = 0

    def __post_init__(self) -> None:
        owner = "FederationSettings"
        _positive_int(owner, "parties", self.parties, low=2)
        for name in ("rounds", "local_epochs", "batch_size", "dp_sgd_local_epochs"):
            _positive_int(owner, name, getattr(self, name))
        _positive_int(owner, "dp_sgd_batch_size", self.dp_sgd_batch_size)
        _positive_int(owner, "seed", self.seed, low=0)
        for name in ("lr", "dp_sgd_lr"):
            _positive_float(owner, name, getattr(self, name))
        for name in ("client_dp", "dp_sgd"):
            if not isinstance(getattr(self, name), DPSettings):
                raise ConfigError(
                    f"{owner}.{name} must be a DPSettings, got {getattr(self, name)!r}"
                )

    @classmethod
    def quick(cls) -> FederationSettings:
        """The benchmark's --quick federation: 20 rounds x 15 local epochs (300 epochs
        per party)."""
        return cls()

    @classmethod
    def full(cls) -> FederationSettings:
        """More rounds (450 epochs per party, 1.5x the training: more memorisation);
        DP-SGD one local epoch a round, so its 30 epochs keep a similar epsilon."""
        return cls(rounds=30, dp_sgd_local_epochs=1)


def adapter_vector(model: nn.Module) -> np.ndarray:
    """The trainable (LoRA) parameters, flattened in module order, as float64."""
    params = [p for p in model.parameters() if p.requires_grad]
    return parameters_to_vector(params).detach().to(torch.float64).numpy().copy()


def load_adapters(model: nn.Module, vector: np.ndarray) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    with torch.no_grad():
        vector_to_parameters(torch.from_numpy(vector).to(params[0].dtype), params)


def party_texts(scenario: CanaryScenario, settings: FederationSettings) -> list[list[str]]:
    """Party 0: the scenario's private texts with the members planted; the others:
    texts none of which is public, private or held out.

    Built-in scenario: fresh city sentences, `n_private` per party. A user's scenario
    (`party_pool` set): its own pool split in order into equal disjoint shares of at most
    `n_private` texts (a federation of more parties gets smaller shares, never a
    sentence the user did not give).
    """
    if scenario.party_pool is not None:
        return [list(scenario.private_texts), *_pool_shares(scenario, settings.parties)]
    taken = {*scenario.public_texts, *scenario.private_texts, *scenario.heldout_texts}
    count = scenario.config.n_private
    out = [list(scenario.private_texts)]
    for party in range(1, settings.parties):
        drawn = sentences(4 * count, seed=scenario.config.seed + 7919 * party)
        fresh = [t for t in dict.fromkeys(drawn) if t not in taken][:count]
        if len(fresh) < count:
            raise ConfigError(f"could not draw {count} fresh texts for party {party}")
        taken |= set(fresh)
        out.append(fresh)
    return out


def _pool_shares(scenario: CanaryScenario, parties: int) -> list[list[str]]:
    pool = list(scenario.party_pool or ())
    others = parties - 1
    count = min(scenario.config.n_private, len(pool) // others)
    if count < 1:
        raise ConfigError(
            f"{len(pool)} texts for the other parties cannot give each of {others} parties "
            f"a text; give more texts or run fewer parties"
        )
    return [pool[i * count : (i + 1) * count] for i in range(others)]


def _plain_mean(updates: Sequence[np.ndarray], weights: Sequence[int]) -> tuple[np.ndarray, int]:
    """No protection: the weighted mean, computed in the clear."""
    total = int(sum(weights))
    stacked = np.stack([np.asarray(u, dtype=np.float64) for u in updates])
    return np.asarray(weights, dtype=np.float64) @ stacked / total, total


def _mean_for(
    protection: Protection, aggregators: Aggregators | None, settings: FederationSettings, dim: int
) -> Aggregator:
    """The round the federation runs under `protection` (DP-SGD parties aggregate with
    SecAgg+: their noise is added in training, not in the round); aggregators None only
    for the plain mean."""
    spec = protection.spec
    if spec.dp is DPKind.NONE and spec.aggregation is AggregationMode.PLAINTEXT:
        return _plain_mean
    if aggregators is None:
        raise ConfigError(f"{protection.value} needs the real aggregation rounds")
    if spec.dp is DPKind.CLIENT:
        return aggregators.client_dp(settings.client_dp.client_dp_config(dim, settings.parties))
    if spec.aggregation is AggregationMode.PLAINTEXT:
        return _plain_mean
    return aggregators.secure(spec.aggregation)


LocalStep = Callable[[nn.Module, tuple[Tensor, Tensor], int, int], tuple[GaussianEvent, ...]]
"""(model, (ids, mask), round, party) -> the DP events of that local training (none if
no DP)."""


def _plain_step(scenario: CanaryScenario, settings: FederationSettings) -> LocalStep:
    def step(
        model: nn.Module, data: tuple[Tensor, Tensor], rnd: int, party: int
    ) -> tuple[GaussianEvent, ...]:
        lr = settings.lr
        ids, mask = data
        train_lm(
            model,
            ids,
            settings.local_epochs,
            lr * (1 - rnd / settings.rounds),
            settings.batch_size,
            settings.seed + 1000 * rnd + party,
            scenario.config.threads,
            lr_end=lr * (1 - (rnd + 1) / settings.rounds),
            mask=mask,
        )
        return ()

    return step


def _dp_sgd_step(scenario: CanaryScenario, settings: FederationSettings) -> LocalStep:
    def step(
        model: nn.Module, data: tuple[Tensor, Tensor], rnd: int, party: int
    ) -> tuple[GaussianEvent, ...]:
        from fedveil.learner.dp_sgd import DPSGDConfig, make_private

        loader = DataLoader(TensorDataset(*data), batch_size=settings.dp_sgd_batch_size)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=settings.dp_sgd_lr)
        dp = DPSGDConfig(
            max_grad_norm=settings.dp_sgd.clip_norm,
            noise_multiplier=settings.dp_sgd.noise_multiplier,
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            session = make_private(model, optimizer, loader, dp)
            with flush_denormals(), cpu_threads(scenario.config.threads):
                for _ in range(settings.dp_sgd_local_epochs):
                    session.train_epoch(per_sample_lm_loss)
        wrapped: Any = session.model
        if hasattr(wrapped, "_close"):  # Opacus' hooks off: the adapters are read plainly
            wrapped._close()
        model.eval()
        return session.events()

    return step


def _federate(
    protection: Protection,
    scenario: CanaryScenario,
    aggregators: Aggregators | None,
    settings: FederationSettings,
    texts: list[list[str]] | None = None,
) -> TrainedModel:
    config = scenario.config
    texts = party_texts(scenario, settings) if texts is None else texts
    data = [scenario.encode(t) for t in texts]
    weights = [len(t) for t in texts]
    local = (
        _dp_sgd_step(scenario, settings)
        if protection.spec.dp is DPKind.SAMPLE
        else _plain_step(scenario, settings)
    )
    events: list[GaussianEvent] = []
    start = time.perf_counter()
    with torch.random.fork_rng():
        torch.manual_seed(settings.seed + 11)
        global_model = adapted_base(scenario)
        current = adapter_vector(global_model)
        mean = _mean_for(protection, aggregators, settings, current.size)
        for rnd in range(settings.rounds):
            deltas = []
            for party, party_data in enumerate(data):
                torch.manual_seed(settings.seed + 1000 * rnd + party)
                model = adapted_base(scenario)
                load_adapters(model, current)
                party_events = local(model, party_data, rnd, party)
                if party == 0:
                    events += party_events
                deltas.append(adapter_vector(model) - current)
            update, _ = mean(deltas, weights)
            current = current + np.asarray(update, dtype=np.float64)
        load_adapters(global_model, current)
        global_model.eval()
        with torch.no_grad(), flush_denormals():
            loss = float(per_sample_lm_loss(global_model, data[0]).mean())
    seconds = time.perf_counter() - start
    epsilon, delta, claimed = _claim(protection, settings, events, config.dp_delta)
    return TrainedModel(protection, global_model, epsilon, delta, claimed, loss, seconds)


def _claim(
    protection: Protection,
    settings: FederationSettings,
    party0_events: list[GaussianEvent],
    default_delta: float,
) -> tuple[float, float, tuple[GaussianEvent, ...]]:
    """(epsilon, delta, events) party 0's records get from the protection, for the
    neighbouring relation the output attacks test: one canary record of party 0 in or out.

    Client-level DP is calibrated for a whole client in or out (sensitivity C, the clip).
    One record of party 0 in or out can move party 0's clipped update from any point of
    the C-ball to any other, so its sensitivity is 2C: the same noise z C gives that
    record the guarantee of noise multiplier z / 2, a larger epsilon than the federation
    reports. The audit must hold the record-level attack to this claim, not the client-level
    one."""
    if protection.spec.dp is DPKind.CLIENT:
        dp = settings.client_dp
        record_level = GaussianEvent(dp.noise_multiplier / 2, 1.0, settings.rounds)
        accountant = PrivacyAccountant("rdp")
        accountant.compose(record_level)
        return float(accountant.epsilon(dp.delta)), dp.delta, (record_level,)
    if protection.spec.dp is DPKind.SAMPLE:
        accountant = PrivacyAccountant("prv")
        for event in party0_events:
            accountant.compose(event)
        delta = settings.dp_sgd.delta
        return float(accountant.epsilon(delta)), delta, tuple(party0_events)
    return math.inf, default_delta, ()


def release(
    protection: Protection | str,
    scenario: CanaryScenario,
    aggregators: Aggregators,
    settings: FederationSettings | None = None,
) -> TrainedModel:
    """The model the federation releases under `protection`, cached per (protection,
    settings) on the scenario (the aggregators are assumed to be the real rounds, so
    they are not part of the key). `TrainedModel.train_seconds` is the training time."""
    protection = parse_protection(protection)
    settings = settings or FederationSettings()
    key = (protection, settings)
    if key not in scenario.federated:
        scenario.federated[key] = _federate(protection, scenario, aggregators, settings)
    return scenario.federated[key]


def federate_texts(
    texts: list[list[str]], scenario: CanaryScenario, settings: FederationSettings
) -> TrainedModel:
    """The plain (unprotected) federation's model trained on `texts`, one list per party,
    by exactly the recipe `release` uses: the hook the auditor's reference models
    (attacks.output.references) are trained through, so that they differ from the
    released model only in their data. Not cached: the caller owns its models."""
    if len(texts) != settings.parties:
        raise ConfigError(f"{len(texts)} parties' texts for a federation of {settings.parties}")
    return _federate(Protection.NONE, scenario, None, settings, texts)


def federation_of(scenario: CanaryScenario, trained: TrainedModel) -> FederationSettings | None:
    """The settings `release` trained `trained` with on `scenario` (None: not one of its
    releases, e.g. a single party's `scenario.released(...)`)."""
    for (_, settings), model in scenario.federated.items():
        if model is trained and isinstance(settings, FederationSettings):
            return settings
    return None


def federation_scenario(
    quick: bool, seed: int = 0, n_canaries: int | None = None
) -> CanaryScenario:
    """The scenario the benchmark and the audit share: 48 canaries (quick) or 128."""
    n_canaries = n_canaries or (48 if quick else 128)
    return canary_scenario(CanaryLMConfig(canaries=CanaryConfig(n_canaries=n_canaries), seed=seed))
