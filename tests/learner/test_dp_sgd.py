"""Opacus DP-SGD on LoRA adapters of a tiny GPT-2: placement, per-sample grads, accounting."""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Iterator

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from transformers import GPT2Config, GPT2LMHeadModel

from fedveil.errors import ConfigError
from fedveil.learner.dp_sgd import (
    DPSGDConfig,
    DPSGDSession,
    check_lora_placement,
    make_private,
    prepare_lora_model,
    trainable_parameters,
)
from fedveil.secagg.dp import GaussianEvent, PrivacyAccountant, PrivacyBudget, PrivacyLedger

VOCAB, SEQ = 48, 8


@pytest.fixture(autouse=True)
def _quiet_single_thread() -> Iterator[None]:
    # A tiny model: more threads only contend on a shared machine. Restored afterwards.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        yield
    torch.set_num_threads(threads)


def _base() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        n_embd=32,
        n_layer=2,
        n_head=2,
        vocab_size=VOCAB,
        n_positions=16,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPT2LMHeadModel(config)


def _lora() -> LoraConfig:
    return LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], lora_dropout=0.0)


def _loader(n: int = 24, batch: int = 8) -> DataLoader:
    gen = torch.Generator().manual_seed(1)
    return DataLoader(TensorDataset(torch.randint(0, VOCAB, (n, SEQ), generator=gen)), batch)


def _per_sample_loss(model: nn.Module, batch: list[torch.Tensor]) -> torch.Tensor:
    (ids,) = batch
    logits = model(input_ids=ids).logits[:, :-1]
    token_losses = nn.functional.cross_entropy(
        logits.reshape(-1, VOCAB), ids[:, 1:].reshape(-1), reduction="none"
    )
    return token_losses.reshape(ids.shape[0], -1).mean(dim=1)


# --- placement (opacus issue 820) ----------------------------------------------------


def _assert_placed(model: nn.Module, device: str) -> None:
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert len(lora) == 4  # A and B in each of the 2 layers
    assert all(
        p.device.type == torch.device(device).type and p.requires_grad for p in lora.values()
    )
    base = [p for n, p in model.named_parameters() if "lora_" not in n]
    assert base and not any(p.requires_grad for p in base)
    assert all(p.device.type == torch.device(device).type for p in base)


def test_prepare_moves_base_first_then_adds_lora_on_meta_device() -> None:
    # "meta" stands in for an accelerator: a device other than where the model was built.
    model = prepare_lora_model(_base(), _lora(), "meta")
    _assert_placed(model, "meta")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_prepare_on_cuda_trains() -> None:
    model = prepare_lora_model(_base(), _lora(), "cuda")
    _assert_placed(model, "cuda")


def test_placement_check_catches_each_mistake() -> None:
    model = get_peft_model(_base(), _lora())  # built on CPU
    check_lora_placement(model, "cpu")
    with pytest.raises(ConfigError, match="LoRA parameters not on meta"):
        check_lora_placement(model, "meta")
    model.base_model.model.lm_head.weight.requires_grad_(True)
    with pytest.raises(ConfigError, match="base parameters that require grad"):
        check_lora_placement(model, "cpu")
    with pytest.raises(ConfigError, match="no LoRA parameters"):
        check_lora_placement(_base(), "cpu")


# --- DP-SGD --------------------------------------------------------------------------


def _session(noise: float = 1.0, accountant: str = "prv") -> DPSGDSession:
    model = prepare_lora_model(_base(), _lora(), "cpu")
    optimizer = torch.optim.SGD(trainable_parameters(model), lr=0.05)
    config = DPSGDConfig(max_grad_norm=0.5, noise_multiplier=noise, accountant=accountant)
    return make_private(model, optimizer, _loader(), config)


def test_dp_sgd_steps_give_per_sample_grads_and_keep_the_base_frozen() -> None:
    session = _session()
    named = dict(session.model.named_parameters())
    lora = {n: p for n, p in named.items() if "lora_" in n}
    base_before = {n: p.detach().clone() for n, p in named.items() if "lora_" not in n}
    lora_before = {n: p.detach().clone() for n, p in lora.items()}
    batch = next(iter(session.data_loader))
    size = batch[0].shape[0]
    assert size > 0
    session.optimizer.zero_grad()
    _per_sample_loss(session.model, batch).mean().backward()
    for name, param in lora.items():
        assert param.grad_sample is not None, name
        assert param.grad_sample.shape == (size, *param.shape)
    for name, param in named.items():
        if "lora_" not in name:
            assert param.grad is None and getattr(param, "grad_sample", None) is None, name
    session.optimizer.zero_grad()
    losses = session.train_epoch(_per_sample_loss)
    assert losses and all(loss > 0 for loss in losses)
    assert session.steps == len(session.data_loader)
    for name, param in named.items():
        if "lora_" in name:
            assert not torch.equal(param.detach(), lora_before[name]), name
        else:
            assert torch.equal(param.detach(), base_before[name]), name


def test_dp_sgd_epsilon_matches_opacus() -> None:
    session = _session(noise=1.1)
    session.train_epoch(_per_sample_loss)
    session.train_epoch(_per_sample_loss)
    delta = 1e-5
    opacus_eps = session.epsilon(delta)
    assert opacus_eps > 0
    (event,) = session.events()
    assert isinstance(event, GaussianEvent) and event.noise_multiplier == 1.1
    assert event.sampling_prob == pytest.approx(session.sample_rate) and event.sampling_prob < 1
    assert event.steps == session.steps == 2 * len(session.data_loader)
    ours = PrivacyAccountant("prv")
    for e in session.events():
        ours.compose(e)
    assert ours.epsilon(delta) == pytest.approx(opacus_eps, rel=1e-9)
    # Opacus' RDP accountant on the same history vs ours (different order grids).
    rdp_session = _session(noise=1.1, accountant="rdp")
    rdp_session.train_epoch(_per_sample_loss)
    ours_rdp = PrivacyAccountant("rdp")
    for e in rdp_session.events():
        ours_rdp.compose(e)
    assert ours_rdp.epsilon(delta) == pytest.approx(rdp_session.epsilon(delta), rel=0.03)
    ours_prv = PrivacyAccountant("prv")
    for e in rdp_session.events():
        ours_prv.compose(e)
    assert ours_rdp.epsilon(delta) > ours_prv.epsilon(delta) > 0
    # A client's ledger takes the per-round events.
    ledger = PrivacyLedger(PrivacyBudget(epsilon=opacus_eps * 1.01, delta=delta))
    ledger.charge(session.events_since(0))
    assert ledger.spent_epsilon == pytest.approx(opacus_eps, rel=1e-9)


def test_events_since_splits_rounds() -> None:
    session = _session()
    session.train_epoch(_per_sample_loss)
    mark = session.steps
    session.train_epoch(_per_sample_loss)
    (this_round,) = session.events_since(mark)
    assert this_round.steps == session.steps - mark > 0
    assert sum(e.steps for e in session.events_since(0)) == session.steps


def test_empty_poisson_batch_takes_a_noise_only_step() -> None:
    session = _session()
    empty = [torch.zeros((0, SEQ), dtype=torch.long)]
    before = [p.detach().clone() for p in session.optimizer.params]
    assert session.train_step(empty, _per_sample_loss) is None
    assert session.steps == 1  # accounted
    assert any(
        not torch.equal(b, p.detach())
        for b, p in zip(before, session.optimizer.params, strict=True)
    )


def test_per_sample_loss_must_be_per_sample() -> None:
    session = _session()
    batch = next(iter(session.data_loader))
    with pytest.raises(ConfigError, match="one loss per sample"):
        session.train_step(batch, lambda m, b: _per_sample_loss(m, b).mean())


@pytest.mark.skipif(
    importlib.util.find_spec("torchcsprng") is not None, reason="torchcsprng is installed"
)
def test_secure_mode_is_passed_through_and_fails_loudly_without_csprng() -> None:
    model = prepare_lora_model(_base(), _lora(), "cpu")
    optimizer = torch.optim.SGD(trainable_parameters(model), lr=0.05)
    config = DPSGDConfig(max_grad_norm=1.0, noise_multiplier=1.0, secure_mode=True)
    with pytest.raises(ConfigError, match="torchcsprng"):
        make_private(model, optimizer, _loader(), config)
    assert _session().privacy_engine.secure_mode is False


def test_target_epsilon_calibrates_noise() -> None:
    model = prepare_lora_model(_base(), _lora(), "cpu")
    optimizer = torch.optim.SGD(trainable_parameters(model), lr=0.05)
    config = DPSGDConfig(max_grad_norm=1.0, target_epsilon=3.0, epochs=2, accountant="rdp")
    session = make_private(model, optimizer, _loader(), config)
    assert session.noise_multiplier > 0
    session.train_epoch(_per_sample_loss)
    session.train_epoch(_per_sample_loss)
    assert 0 < session.epsilon(1e-5) <= 3.0 * 1.05


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        DPSGDConfig(max_grad_norm=1.0)
    with pytest.raises(ConfigError, match="exactly one"):
        DPSGDConfig(max_grad_norm=1.0, noise_multiplier=1.0, target_epsilon=2.0)
    with pytest.raises(ConfigError, match="max_grad_norm"):
        DPSGDConfig(max_grad_norm=0.0, noise_multiplier=1.0)
    with pytest.raises(ConfigError, match="accountant"):
        DPSGDConfig(max_grad_norm=1.0, noise_multiplier=1.0, accountant="moments")
    with pytest.raises(ConfigError, match="hooks"):
        DPSGDConfig(max_grad_norm=1.0, noise_multiplier=1.0, grad_sample_mode="ew")
