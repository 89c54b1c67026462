"""Sample-level DP-SGD on LoRA adapters with Opacus.

Why: secure aggregation hides a party's update from the server but not what the trained
model memorises about the party's own records. DP-SGD (per-sample clipping plus Gaussian
noise at each step, Abadi et al. 2016) bounds that per record, whoever later sees the
adapters: the server, the other parties, or users of the model.

Why this wrapper takes any nn.Module: the captioner, the tiny test GPT-2 and future
models all go through the same three calls:

    model = prepare_lora_model(base, lora_config, device)    # device first, then LoRA
    optimizer = torch.optim.SGD(trainable_parameters(model), lr=...)
    session = make_private(model, optimizer, loader, DPSGDConfig(max_grad_norm=1.0, ...))
    session.train_epoch(per_sample_loss)                       # loss of shape (batch,)
    ledger.charge(session.events_since(mark))                  # secagg.dp budget

Pitfall (opacus issue 820): a model moved to its device *after* get_peft_model, or after
make_private, can leave LoRA parameters, optimizer state and Opacus' hooks on different
tensors or devices; prepare_lora_model moves the base model first and then checks every
LoRA parameter is on the device, trainable, and the only trainable thing.

Randomness: the Gaussian noise and the Poisson batch masks, the two draws the privacy
claim rests on, come from the OS's cryptographically secure generator, never from torch's
seeded one (otherwise anyone who knows the config seed regenerates the noise and the
reported epsilon does not hold against them). secure_mode=True asks Opacus for its own
secure generator, which needs the `torchcsprng` package (not installed here: it fails
loudly, it is never silently dropped); by default make_private switches the session to
learner.dp_randomness (ChaCha20 keyed from os.urandom per draw, with Opacus' secure_mode
noise recipe). Opacus still warns "Secure RNG turned off" about its own generator, which
is then unused; its warnings are never silenced here. torch.manual_seed keeps governing
data order and dropout only. Fixed-size batches (poisson_sampling=False) are refused:
every accountant offered here assumes Poisson sampling.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from opacus import PrivacyEngine
from peft import PeftConfig, PeftModel, get_peft_model
from torch import nn
from torch.utils.data import DataLoader

from fedveil.errors import ConfigError
from fedveil.learner.dp_randomness import use_os_csprng
from fedveil.secagg.dp.events import GaussianEvent

PerSampleLoss = Callable[[nn.Module, Any], torch.Tensor]
"""(model, batch) -> loss of shape (batch_size,): each entry depends on its own sample only.
(A token mean over the whole batch, as HF's `labels=` loss computes, couples samples and
breaks the per-sample sensitivity; compute the loss per sample and let this module average.)"""

_ACCOUNTANTS = ("prv", "rdp", "gdp")
_POISSON_ACCOUNTANTS = frozenset(_ACCOUNTANTS)
"""Accountants whose epsilon assumes Poisson-subsampled steps (all of Opacus' three)."""


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters that require grad (the LoRA adapters after prepare_lora_model)."""
    return [p for p in model.parameters() if p.requires_grad]


def check_lora_placement(model: nn.Module, device: torch.device | str) -> None:
    """Raise ConfigError unless every LoRA parameter is on `device` and requires grad, and
    no other parameter does (the base model stays frozen)."""
    target = torch.device(device)
    lora, wrong_device, frozen_lora, trainable_base = 0, [], [], []
    for name, param in model.named_parameters():
        if "lora_" in name:
            lora += 1
            if not _same_device(param.device, target):
                wrong_device.append(f"{name} on {param.device}")
            if not param.requires_grad:
                frozen_lora.append(name)
        elif param.requires_grad:
            trainable_base.append(name)
    problems = []
    if lora == 0:
        problems.append("the model has no LoRA parameters (was get_peft_model applied?)")
    if wrong_device:
        problems.append(f"LoRA parameters not on {target}: {wrong_device[:3]}")
    if frozen_lora:
        problems.append(f"LoRA parameters that do not require grad: {frozen_lora[:3]}")
    if trainable_base:
        problems.append(f"base parameters that require grad: {trainable_base[:3]}")
    if problems:
        raise ConfigError(
            "LoRA placement check failed: " + "; ".join(problems) + ". Build the model with "
            "prepare_lora_model (move the base model to its device, then get_peft_model)"
        )


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    return a.index == b.index or a.index is None or b.index is None


def prepare_lora_model(
    base_model: nn.Module, lora_config: PeftConfig, device: torch.device | str
) -> PeftModel:
    """Move the base model to `device`, *then* add LoRA adapters (opacus issue 820), and
    check the result with check_lora_placement."""
    base_model.to(device)
    model = get_peft_model(base_model, lora_config)
    check_lora_placement(model, device)
    return model


@dataclass(frozen=True)
class DPSGDConfig:
    """Opacus settings. Give noise_multiplier, or target_epsilon (with target_delta and
    epochs) to let Opacus calibrate it."""

    max_grad_norm: float
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    target_delta: float = 1e-5
    epochs: int = 1
    accountant: str = "prv"
    secure_mode: bool = False
    """True: Opacus' own secure generator (needs torchcsprng). False: the OS CSPRNG via
    learner.dp_randomness. Either way no privacy draw comes from torch's generator."""
    poisson_sampling: bool = True
    grad_sample_mode: str = "hooks"

    def __post_init__(self) -> None:
        if not _positive(self.max_grad_norm):
            raise ConfigError(
                f"max_grad_norm must be a finite number > 0, got {self.max_grad_norm!r}"
            )
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ConfigError(
                "give exactly one of noise_multiplier and target_epsilon, got noise_multiplier="
                f"{self.noise_multiplier!r}, target_epsilon={self.target_epsilon!r}"
            )
        if self.noise_multiplier is not None and not (
            _positive(self.noise_multiplier) or self.noise_multiplier == 0
        ):
            raise ConfigError(f"noise_multiplier must be >= 0, got {self.noise_multiplier!r}")
        if self.target_epsilon is not None and not _positive(self.target_epsilon):
            raise ConfigError(f"target_epsilon must be > 0, got {self.target_epsilon!r}")
        if not 0 < self.target_delta < 1:
            raise ConfigError(f"target_delta must be in (0, 1), got {self.target_delta!r}")
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise ConfigError(f"epochs must be an integer >= 1, got {self.epochs!r}")
        if self.accountant not in _ACCOUNTANTS:
            raise ConfigError(f"accountant must be one of {_ACCOUNTANTS}, got {self.accountant!r}")
        if not self.poisson_sampling and self.accountant in _POISSON_ACCOUNTANTS:
            raise ConfigError(
                f"poisson_sampling=False with accountant {self.accountant!r}: that accountant "
                f"assumes Poisson sampling, so fixed-size batches would make the reported "
                f"epsilon wrong; keep poisson_sampling=True"
            )
        if self.grad_sample_mode != "hooks":
            raise ConfigError(
                f"grad_sample_mode must be 'hooks' (the mode LoRA layers are tested with), got "
                f"{self.grad_sample_mode!r}"
            )


def _positive(value: object) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and math.isfinite(value)
        and value > 0
    )


def batch_size(batch: Any) -> int:
    """Leading dimension of the first tensor in a batch (tensor, sequence or mapping)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    items: Iterable[Any] = batch.values() if isinstance(batch, Mapping) else batch
    for item in items:
        if isinstance(item, torch.Tensor):
            return int(item.shape[0])
    raise ConfigError(f"cannot find a tensor in the batch ({type(batch).__name__})")


class DPSGDSession:
    """A model, optimizer and loader made private by Opacus, plus the events they emitted."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: Any,
        data_loader: DataLoader,
        privacy_engine: PrivacyEngine,
        config: DPSGDConfig,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.data_loader = data_loader
        self.privacy_engine = privacy_engine
        self.config = config

    @property
    def noise_multiplier(self) -> float:
        return float(self.optimizer.noise_multiplier)

    @property
    def sample_rate(self) -> float:
        """Poisson sampling rate of the private loader (batch size / dataset size)."""
        return float(getattr(self.data_loader, "sample_rate", 1 / len(self.data_loader)))

    @property
    def steps(self) -> int:
        return sum(int(steps) for _, _, steps in self.privacy_engine.accountant.history)

    def epsilon(self, delta: float) -> float:
        """Opacus' own answer (its accountant, its defaults)."""
        return float(self.privacy_engine.get_epsilon(delta))

    def events(self) -> tuple[GaussianEvent, ...]:
        """Every step so far, as events for secagg.dp's accountant / ledger."""
        return tuple(
            GaussianEvent(float(z), float(q), int(steps))
            for z, q, steps in self.privacy_engine.accountant.history
        )

    def events_since(self, steps_before: int) -> tuple[GaussianEvent, ...]:
        """Events of the steps taken after `steps_before` (e.g. this round's)."""
        out: list[GaussianEvent] = []
        seen = 0
        for z, q, steps in self.privacy_engine.accountant.history:
            new = max(0, seen + int(steps) - max(seen, steps_before))
            if new:
                out.append(GaussianEvent(float(z), float(q), new))
            seen += int(steps)
        return tuple(out)

    def train_step(self, batch: Any, per_sample_loss: PerSampleLoss) -> float | None:
        """One DP-SGD step; returns the mean loss, or None for an empty Poisson batch
        (which still takes a noise-only step, as the privacy analysis assumes)."""
        self.optimizer.zero_grad(set_to_none=True)
        size = batch_size(batch)
        if size == 0:
            for param in self.optimizer.params:
                param.grad_sample = torch.zeros(
                    (0, *param.shape), dtype=param.dtype, device=param.device
                )
            self.optimizer.step()
            return None
        losses = per_sample_loss(self.model, batch)
        if losses.shape != (size,):
            raise ConfigError(
                f"per_sample_loss must return shape ({size},) (one loss per sample), got "
                f"{tuple(losses.shape)}"
            )
        loss = losses.mean()
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def train_epoch(self, per_sample_loss: PerSampleLoss) -> list[float]:
        """One pass of the private loader; the mean loss of each non-empty step."""
        self.model.train()
        losses = []
        for batch in self.data_loader:
            loss = self.train_step(batch, per_sample_loss)
            if loss is not None:
                losses.append(loss)
        return losses


def make_private(
    model: nn.Module, optimizer: torch.optim.Optimizer, data_loader: DataLoader, config: DPSGDConfig
) -> DPSGDSession:
    """Wrap with Opacus (hooks mode): per-sample clipping to max_grad_norm, Gaussian noise,
    Poisson sampling, the chosen accountant. The model must already be on its device.
    The noise and the Poisson batches come from a CSPRNG seeded by the OS: Opacus' own
    with secure_mode, else learner.dp_randomness (torch's generator draws neither)."""
    try:
        engine = PrivacyEngine(accountant=config.accountant, secure_mode=config.secure_mode)
    except ImportError as exc:
        raise ConfigError(
            f"secure_mode=True needs the torchcsprng package, which is not installed ({exc}); "
            f"install it, or run with secure_mode=False for experiments only"
        ) from exc
    common: dict[str, Any] = {
        "module": model,
        "optimizer": optimizer,
        "data_loader": data_loader,
        "max_grad_norm": config.max_grad_norm,
        "poisson_sampling": config.poisson_sampling,
        "grad_sample_mode": config.grad_sample_mode,
    }
    if config.target_epsilon is not None:
        private = engine.make_private_with_epsilon(
            target_epsilon=config.target_epsilon,
            target_delta=config.target_delta,
            epochs=config.epochs,
            **common,
        )
    else:
        private = engine.make_private(noise_multiplier=config.noise_multiplier, **common)
    module, dp_optimizer, loader = private[0], private[1], private[-1]
    if not config.secure_mode:
        use_os_csprng(dp_optimizer, loader)
    return DPSGDSession(module, dp_optimizer, loader, engine, config)
