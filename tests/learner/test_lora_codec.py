"""Adapter <-> flat update: layout, exact round trip, deltas, base-model hash, seeded init."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedveil.errors import ConfigError
from fedveil.learner.lora import (
    AdapterMismatchError,
    AggregationVariant,
    LoraSettings,
    adapter_delta,
    adapter_layout,
    adapter_vector,
    apply_lora,
    apply_mean_delta,
    base_model_hash,
    check_base,
    default_target_modules,
    load_adapter_vector,
)
from fedveil.learner.models import load_model
from tests.helpers.captioner_fixtures import tiny_base, tiny_base_dir

FEDAVG = LoraSettings(rank=4, alpha=8, variant=AggregationVariant.FEDAVG, seed=7)
FFA = LoraSettings(rank=4, alpha=8, variant=AggregationVariant.FFA, seed=7)


def _adapted(settings: LoraSettings) -> tuple[torch.nn.Module, bytes]:
    model = tiny_base().model
    base_hash = base_model_hash(model)
    return apply_lora(model, settings), base_hash


def _perturb(vector: np.ndarray, seed: int) -> np.ndarray:
    return (vector + np.random.default_rng(seed).normal(0, 0.05, vector.shape)).astype(np.float32)


def test_layout_is_sorted_contiguous_and_holds_trainable_adapter_tensors_only() -> None:
    model, base_hash = _adapted(FEDAVG)
    layout = adapter_layout(model, base_hash, FEDAVG.variant)
    names = list(layout.names)
    assert names == sorted(names)
    assert all(".lora_A." in n or ".lora_B." in n for n in names)
    assert not any("base_model.model" in n or ".default." in n for n in names)
    offset = 0
    for slot in layout.tensors.slots:
        assert slot.offset == offset
        offset += slot.size
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert layout.size == offset == trainable


def test_ffa_layout_carries_only_b_and_a_is_frozen() -> None:
    model, base_hash = _adapted(FFA)
    layout = adapter_layout(model, base_hash, FFA.variant)
    assert layout.names and all(".lora_B." in n for n in layout.names)
    frozen_a = [p for n, p in model.named_parameters() if ".lora_A." in n]
    assert frozen_a and not any(p.requires_grad for p in frozen_a)


def test_default_targets_cover_vit_gpt2_and_the_head() -> None:
    targets = set(default_target_modules(tiny_base().model))
    assert {"c_attn", "q_attn", "c_proj", "c_fc", "lm_head"} <= targets
    assert {"q_proj", "v_proj"} <= targets or {"query", "value"} <= targets


def test_extract_then_load_round_trips_bit_for_bit() -> None:
    model, base_hash = _adapted(FEDAVG)
    layout = adapter_layout(model, base_hash, FEDAVG.variant)
    target = _perturb(adapter_vector(model, layout), 1)
    load_adapter_vector(model, layout, target)
    assert adapter_vector(model, layout).tobytes() == target.tobytes()
    # Another party's model, loaded with the same vector, computes the same function.
    other, _ = _adapted(FEDAVG)
    load_adapter_vector(other, layout, target)
    pixels = torch.rand(2, 3, 64, 64)
    ids = torch.tensor([[1, 5, 9], [1, 6, 10]])
    with torch.no_grad():
        a = model(pixel_values=pixels, decoder_input_ids=ids).logits
        b = other(pixel_values=pixels, decoder_input_ids=ids).logits
    assert torch.equal(a, b)


def test_a_delta_applied_to_the_start_recovers_the_trained_adapter() -> None:
    model, base_hash = _adapted(FEDAVG)
    layout = adapter_layout(model, base_hash, FEDAVG.variant)
    start = adapter_vector(model, layout)
    trained = _perturb(start, 2)
    load_adapter_vector(model, layout, trained)
    delta = adapter_delta(model, layout, start)
    assert delta.dtype == np.float32
    fresh, _ = _adapted(FEDAVG)
    recovered = apply_mean_delta(fresh, layout, start, delta)
    # Within half an ulp of the float32 delta, plus the final rounding to float32.
    bound = np.spacing(np.abs(delta)) / 2 + np.spacing(np.abs(trained)) / 2
    assert np.all(np.abs(recovered.astype(np.float64) - trained) <= bound)
    assert np.array_equal(recovered[start == 0], trained[start == 0])  # B starts at 0: exact
    assert adapter_vector(fresh, layout).tobytes() == recovered.tobytes()


def test_every_party_starts_from_the_same_adapter_for_the_same_seed() -> None:
    a, h = _adapted(FEDAVG)
    b, _ = _adapted(FEDAVG)
    torch.manual_seed(12345)  # the global RNG must not matter
    c, _ = _adapted(LoraSettings(rank=4, alpha=8, variant=AggregationVariant.FEDAVG, seed=8))
    layout = adapter_layout(a, h, FEDAVG.variant)
    assert adapter_vector(a, layout).tobytes() == adapter_vector(b, layout).tobytes()
    assert adapter_vector(a, layout).tobytes() != adapter_vector(c, layout).tobytes()


def test_base_hash_survives_lora_and_a_save_load_and_sees_any_weight_change() -> None:
    loaded = tiny_base()
    before = base_model_hash(loaded.model)
    assert len(before) == 32
    assert base_model_hash(load_model(tiny_base_dir()).model) == before
    adapted = apply_lora(loaded.model, FEDAVG)
    assert base_model_hash(adapted) == before  # LoRA tensors and peft names are left out
    layout = adapter_layout(adapted, before, FEDAVG.variant)
    load_adapter_vector(adapted, layout, _perturb(adapter_vector(adapted, layout), 3))
    assert base_model_hash(adapted) == before  # training the adapter leaves the base alone
    changed = tiny_base().model
    with torch.no_grad():
        next(changed.parameters()).view(-1)[0] += 1e-6
    assert base_model_hash(changed) != before


def test_mismatched_updates_are_refused() -> None:
    model, base_hash = _adapted(FEDAVG)
    layout = adapter_layout(model, base_hash, FEDAVG.variant)
    start = adapter_vector(model, layout)
    with pytest.raises(AdapterMismatchError, match="needs"):
        load_adapter_vector(model, layout, start[:-1])
    bad = start.copy()
    bad[3] = np.nan
    with pytest.raises(AdapterMismatchError, match="NaN"):
        apply_mean_delta(model, layout, start, bad)
    ffa_model, _ = _adapted(FFA)
    with pytest.raises(AdapterMismatchError, match="does not match the layout"):
        adapter_vector(ffa_model, layout)
    with pytest.raises(AdapterMismatchError, match="base model"):
        check_base(layout, bytes(32))
    assert layout.fingerprint() != adapter_layout(ffa_model, base_hash, FFA.variant).fingerprint()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rank": 0}, "rank"),
        ({"alpha": -1.0}, "alpha"),
        ({"dropout": 1.0}, "dropout"),
        ({"target_modules": ()}, "target_modules"),
        ({"variant": "mean"}, "variant"),
        ({"seed": -2}, "seed"),
    ],
)
def test_lora_settings_name_the_bad_value(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        LoraSettings(**kwargs)  # type: ignore[arg-type]
