"""The built-in captioner and model loading: build once, load offline, train reproducibly."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from fedveil.errors import ConfigError
from fedveil.learner.data import DOMAIN_PROMPTS, CityDataConfig, Domain, make_party_dataset
from fedveil.learner.data.text import load_jsonl_texts
from fedveil.learner.lora import LoraSettings, default_target_modules
from fedveil.learner.models import (
    MARKER,
    ModelKind,
    ModelLoadError,
    build_base_model,
    build_word_tokenizer,
    default_model_dir,
    is_built,
    load_model,
)
from fedveil.learner.training import TrainConfig, encode_captions, train
from fedveil.learner.training.party import Party, captioner_party, text_party
from tests.helpers import REPO_ROOT
from tests.helpers.captioner_fixtures import TINY, tiny_base, tiny_base_dir

REPO = REPO_ROOT
QUIET = TrainConfig(epochs=1, batch_size=8, learning_rate=1e-2, progress=False)


def test_build_is_cached_by_its_marker(tmp_path: Path) -> None:
    target = tmp_path / "base"
    built = build_base_model(target, TINY, progress=False)
    marker = json.loads((built / MARKER).read_text())
    assert (
        marker["config"] == TINY.to_json() and len(bytes.fromhex(marker["base_model_hash"])) == 32
    )
    stamp = (built / MARKER).stat().st_mtime_ns
    assert build_base_model(target, TINY, progress=False) == built
    assert (built / MARKER).stat().st_mtime_ns == stamp  # loaded, not rebuilt
    assert is_built(built, TINY)
    other = dataclasses.replace(TINY, samples=8)
    assert not is_built(built, other)
    build_base_model(target, other, progress=False)  # another config: the cache is rebuilt
    assert json.loads((built / MARKER).read_text())["config"] == other.to_json()


def test_a_directory_that_is_not_a_build_is_never_replaced(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ModelLoadError, match="not a finished fedveil base-model build"):
        build_base_model(tmp_path, TINY, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_default_cache_location_follows_fedveil_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDVEIL_HOME", "/somewhere")
    assert default_model_dir() == Path("/somewhere/models/tiny-captioner")
    monkeypatch.delenv("FEDVEIL_HOME")
    assert default_model_dir() == Path.home() / ".cache/fedveil/models/tiny-captioner"


_OFFLINE_SCRIPT = r"""
import json, sys
import torch
from transformers import AutoImageProcessor, AutoTokenizer, VisionEncoderDecoderModel
path = sys.argv[1]
model = VisionEncoderDecoderModel.from_pretrained(path)
tokenizer = AutoTokenizer.from_pretrained(path)
processor = AutoImageProcessor.from_pretrained(path)
from fedveil.learner.models import load_model
from fedveil.learner.evaluation import greedy_captions
loaded = load_model(path)
pixels = processor([torch.zeros(64, 64, 3, dtype=torch.uint8).numpy()], return_tensors="pt")
caption = greedy_captions(loaded.model, loaded.tokenizer, pixels["pixel_values"], "<scene>", 8)
try:
    AutoTokenizer.from_pretrained("gpt2")
    hub = "reachable"
except Exception as exc:
    hub = type(exc).__name__
print(json.dumps({"kind": loaded.kind.value, "vocab": len(tokenizer),
                  "caption": caption[0], "hub": hub,
                  "decoder": type(model.decoder).__name__}))
"""


def test_saved_model_loads_with_the_network_switched_off(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "empty-hf-home"),  # no cached hub files to fall back on
        "PYTHONPATH": str(REPO),
    }
    done = subprocess.run(
        [sys.executable, "-c", _OFFLINE_SCRIPT, str(tiny_base_dir())],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["kind"] == "captioner" and result["decoder"] == "GPT2LMHeadModel"
    assert result["vocab"] == len(tiny_base().tokenizer)
    assert isinstance(result["caption"], str)
    assert result["hub"] != "reachable"  # the control: a hub name really fails offline


def test_hub_names_are_refused_before_any_download() -> None:
    with pytest.raises(ModelLoadError, match="never downloads"):
        load_model("gpt2")


def test_tokenizer_is_word_level_with_stable_ids_and_special_prompts() -> None:
    tokenizer = build_word_tokenizer(["meter", "gas", "pipeline"], ["<scene>", "<energy>"])
    again = build_word_tokenizer(["pipeline", "gas", "meter"], ["<scene>", "<energy>"])
    assert tokenizer.get_vocab() == again.get_vocab()
    ids = tokenizer("<energy> gas pipeline , meter", add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["<energy>", "gas", "pipeline", "<unk>", "meter"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "gas pipeline meter"
    with pytest.raises(ConfigError, match="collide"):
        build_word_tokenizer(["<scene>"], ["<scene>"])


def test_domain_prompts_start_as_distinct_generic_instructions() -> None:
    loaded = tiny_base()
    vocab = loaded.tokenizer.get_vocab()
    decoder: Any = loaded.model.get_decoder()  # type: ignore[operator]
    rows = decoder.get_input_embeddings().weight
    prompts = [rows[vocab[p]] for p in DOMAIN_PROMPTS.values()]
    assert torch.equal(prompts[0], rows[vocab["<sky>"]])
    assert not torch.equal(prompts[0], prompts[1]) and not torch.equal(prompts[1], prompts[2])


def _party(seed: int = 0) -> Party:
    data = make_party_dataset(CityDataConfig(samples_per_party=16), Domain.ENERGY)
    return captioner_party(
        data, tiny_base(), LoraSettings(rank=2, alpha=4), dataclasses.replace(QUIET, seed=seed)
    )


def test_local_training_is_reproducible_from_its_seed() -> None:
    torch.manual_seed(99)  # the caller's random state must not matter
    a = _party().train_round(0)
    torch.manual_seed(7)
    b = _party().train_round(0)
    c = _party(seed=1).train_round(0)
    assert a.vector.tobytes() == b.vector.tobytes()
    assert a.vector.tobytes() != c.vector.tobytes()
    assert a.weight == 16 and a.stats.steps == 2 and np.any(a.vector != 0)


def test_training_restores_the_callers_random_state_and_threads() -> None:
    party = _party()
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    threads = torch.get_num_threads()
    party.train_round(0)
    assert torch.equal(torch.rand(3), expected)
    assert torch.get_num_threads() == threads


def test_caption_encoding_masks_prompt_and_padding() -> None:
    loaded = tiny_base()
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    enc = encode_captions(
        loaded.tokenizer,
        loaded.image_processor,
        [image, image],
        ["<energy>", "<urban>"],
        ["gas pipeline meter", "traffic clear"],
    )
    vocab = loaded.tokenizer.get_vocab()
    assert enc.input_ids[0, :2].tolist() == [vocab["<bos>"], vocab["<energy>"]]
    assert enc.labels[0].tolist()[:5] == [
        -100,
        vocab["gas"],
        vocab["pipeline"],
        vocab["meter"],
        vocab["<eos>"],
    ]
    assert enc.labels[1, 4:].eq(-100).all() and enc.attention_mask[1].tolist() == [1, 1, 1, 1, 0]


# --- causal language models -----------------------------------------------------------


def _save_causal_lm(path: Path, config: object, model_cls: type) -> Path:
    tokenizer = build_word_tokenizer(["the", "gate", "is", "open", "closed", "meter", "reads"], [])
    config.vocab_size = len(tokenizer)  # type: ignore[attr-defined]
    model = model_cls(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_a_causal_lm_directory_trains_with_lora_on_jsonl_text(tmp_path: Path) -> None:
    gpt2 = GPT2Config(
        n_embd=32,
        n_layer=1,
        n_head=2,
        n_positions=32,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    path = _save_causal_lm(tmp_path / "lm", gpt2, GPT2LMHeadModel)
    data = tmp_path / "texts.jsonl"
    data.write_text('{"text": "the gate is open"}\n\n{"text": "the meter reads"}\n')
    texts = load_jsonl_texts(data)
    assert texts == ["the gate is open", "the meter reads"]
    loaded = load_model(path)
    assert loaded.kind is ModelKind.CAUSAL_LM and loaded.image_processor is None
    assert set(default_target_modules(loaded.model)) == {"c_attn", "c_proj", "c_fc"}
    party = text_party("lm-party", texts, loaded, LoraSettings(rank=2, alpha=4), QUIET)
    before = float(
        train(party.model, party.data, dataclasses.replace(QUIET, learning_rate=1e-9)).mean_loss
    )
    update = party.train_round(0)
    assert update.weight == 2 and update.vector.shape == (party.layout.size,)
    party.apply_aggregate(update.vector.astype(np.float64))
    after = float(
        train(party.model, party.data, dataclasses.replace(QUIET, learning_rate=1e-9)).mean_loss
    )
    assert after < before


def test_llama_like_models_get_attention_and_mlp_targets(tmp_path: Path) -> None:
    llama = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=32,
    )
    loaded = load_model(_save_causal_lm(tmp_path / "llama", llama, LlamaForCausalLM))
    assert set(default_target_modules(loaded.model)) == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }


def test_jsonl_errors_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"txt": "wrong key"}\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl:2"):
        load_jsonl_texts(bad)
