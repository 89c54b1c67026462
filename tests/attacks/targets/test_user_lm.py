"""The output audit on a USER's model directory and texts, not the built-in tiny GPT-2.

Everything is built offline: the "user's model" is a small GPT-2 trained as the built-in
scenario trains its base (public city sentences and canary-format sentences), saved with
save_pretrained together with the project's word-level tokenizer; the "user's texts" are
tiny-LM city sentences in a JSONL file. A LLaMA-style model (nn.Linear projections, no
bos, no pad) checks the architecture-dependent parts.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from fedveil.attacks import registry as attack_registry
from fedveil.attacks.measure.output_leakage import OutputLeakageSettings, output_leakage_records
from fedveil.attacks.output.canaries import CanaryConfig
from fedveil.attacks.output.reference_mia import REFERENCE_MIA_ATTACKS
from fedveil.attacks.protections import Aggregators
from fedveil.attacks.targets.canary_federation import FederationSettings, party_texts, release
from fedveil.attacks.targets.canary_lm import (
    CanaryLMConfig,
    CanaryScenario,
    build_scenario,
    build_tokenizer,
    encode_masked,
    per_sample_lm_loss,
    vocabulary_words,
)
from fedveil.attacks.targets.tiny_lm import sentences
from fedveil.attacks.targets.user_lm import MIN_TEXTS, split_texts, user_scenario, write_jsonl
from fedveil.errors import ConfigError
from fedveil.runners.aggregators import real_aggregators

N_TEXTS = 120
N_CANARIES = 32


@pytest.fixture(scope="module")
def user_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(model directory, texts.jsonl): a small pretrained GPT-2 and city sentences."""
    root = tmp_path_factory.mktemp("user")
    pretrained = build_scenario(
        CanaryLMConfig(
            canaries=CanaryConfig(n_canaries=8), n_public=300, n_private=8, base_epochs=8
        )
    )
    pretrained.base.save_pretrained(root / "model")
    pretrained.tokenizer.save_pretrained(root / "model")
    write_jsonl(root / "texts.jsonl", sentences(N_TEXTS, seed=123))
    return root / "model", root / "texts.jsonl"


@pytest.fixture(scope="module")
def scenario(user_files: tuple[Path, Path]) -> CanaryScenario:
    return user_scenario(*user_files, n_canaries=N_CANARIES, seed=0)


@pytest.fixture(scope="module")
def aggregators() -> Aggregators:
    return real_aggregators()


def test_scenario_splits_the_users_texts_and_picks_gpt2_targets(
    scenario: CanaryScenario, user_files: tuple[Path, Path]
) -> None:
    corpus = set(sentences(N_TEXTS, seed=123))
    members = {c.text for c in scenario.registry.members}
    private = set(scenario.private_texts) - members
    pool = set(scenario.party_pool or ())
    held = set(scenario.heldout_texts)
    assert private | pool | held == corpus
    assert not (private & pool or private & held or pool & held)
    assert members <= set(scenario.private_texts)
    assert not {c.text for c in scenario.registry.non_members} & set(scenario.private_texts)
    assert scenario.lora_targets == ("c_attn", "c_proj", "c_fc")
    assert scenario.fan_in_fan_out
    assert scenario.public_texts == []
    assert str(user_files[0]) in scenario.origin
    # Deterministic: the same files and seed give the same split and canaries.
    again = user_scenario(*user_files, n_canaries=N_CANARIES, seed=0)
    assert again.private_texts == scenario.private_texts
    assert again.heldout_texts == scenario.heldout_texts
    assert again.registry == scenario.registry
    assert user_scenario(*user_files, n_canaries=N_CANARIES, seed=1).heldout_texts != held


def test_party_texts_come_from_the_users_pool(scenario: CanaryScenario) -> None:
    pool = list(scenario.party_pool or ())
    three = party_texts(scenario, FederationSettings(parties=3))
    assert three[0] == scenario.private_texts
    assert three[1] + three[2] == pool[: 2 * len(three[1])]
    assert len(three[1]) == min(scenario.config.n_private, len(pool) // 2)
    five = party_texts(scenario, FederationSettings(parties=5))
    assert len({len(t) for t in five[1:]}) == 1
    assert not set().union(*map(set, five[1:])) - set(pool)
    with pytest.raises(ConfigError, match="fewer parties"):
        party_texts(scenario, FederationSettings(parties=len(pool) + 2))


def test_secagg_release_of_a_user_model_leaks_and_filters_stop_extraction(
    scenario: CanaryScenario, aggregators: Aggregators
) -> None:
    trained = release("secagg", scenario, aggregators, FederationSettings(rounds=20))
    records = output_leakage_records(
        scenario,
        trained,
        OutputLeakageSettings(
            n_samples=4, exposure_candidates=64, bootstrap=50, evasions=False, reference_models=0
        ),
    )
    by_name = {r.attack: r for r in records}
    # without reference models (K = 0) every attack but RMIA / LiRA runs
    assert set(by_name) == set(attack_registry.available(kind=attack_registry.Kind.OUTPUT)) - set(
        REFERENCE_MIA_ATTACKS
    )
    assert {r.attack_family for r in records} == set(attack_registry.MEMBERSHIP_FAMILIES)
    # Not a DP run: the planted members are found (1.0 measured; loose bound).
    assert by_name["reference"].auc > 0.7
    assert by_name["loss"].auc > 0.55
    for record in records:
        assert record.protection == "secagg"
        assert record.epsilon_claimed == math.inf
        assert record.to_json()["epsilon_claimed"] == "inf"
        assert record.extraction_rate_filtered == 0.0
        assert record.details.n_canaries == N_CANARIES
        assert math.isfinite(record.details.heldout_loss)


def _llama_files(root: Path) -> tuple[Path, Path]:
    """A tiny LLaMA (nn.Linear projections) whose tokenizer has neither bos nor pad."""
    tokenizer = build_tokenizer(vocabulary_words())
    tokenizer.bos_token = None
    tokenizer.pad_token = None
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(root / "llama")
    tokenizer.save_pretrained(root / "llama")
    write_jsonl(root / "texts.jsonl", sentences(40, seed=5))
    return root / "llama", root / "texts.jsonl"


def test_llama_style_model_gets_linear_targets_and_masks_eos_padding(
    tmp_path: Path, aggregators: Aggregators
) -> None:
    scenario = user_scenario(*_llama_files(tmp_path), n_canaries=8)
    assert scenario.lora_targets is not None and "q_proj" in scenario.lora_targets
    assert not scenario.fan_in_fan_out
    tokenizer = scenario.tokenizer
    assert tokenizer.bos_token_id == tokenizer.eos_token_id == tokenizer.pad_token_id
    # Padding with eos must not change a text's loss: the mask, not the pad id, decides.
    short, long = sorted(scenario.private_texts[:2], key=len)
    long = long + " and another wet dog moves near one wall"
    alone = per_sample_lm_loss(scenario.base, encode_masked(tokenizer, [short], 40))
    padded = per_sample_lm_loss(scenario.base, encode_masked(tokenizer, [short, long], 40))
    torch.testing.assert_close(alone[0], padded[0], rtol=1e-5, atol=1e-5)
    trained = release("none", scenario, aggregators, FederationSettings(rounds=1, local_epochs=1))
    assert math.isfinite(trained.final_loss)


@pytest.mark.parametrize("protection", ["none", "ckks", "secagg+client-dp", "dp-sgd"])
def test_every_protection_releases_a_user_model(
    scenario: CanaryScenario, aggregators: Aggregators, protection: str
) -> None:
    settings = FederationSettings(rounds=2, local_epochs=2, dp_sgd_local_epochs=1)
    trained = release(protection, scenario, aggregators, settings)
    records = output_leakage_records(
        scenario,
        trained,
        OutputLeakageSettings(n_samples=2, exposure_candidates=16, bootstrap=10, evasions=False),
    )
    assert {r.attack for r in records} == set(
        attack_registry.available(kind=attack_registry.Kind.OUTPUT)
    )
    dp = protection in ("secagg+client-dp", "dp-sgd")
    assert math.isfinite(trained.epsilon) == dp


def test_missing_directory_and_hub_names_are_refused(tmp_path: Path) -> None:
    texts = tmp_path / "texts.jsonl"
    write_jsonl(texts, sentences(MIN_TEXTS, seed=1))
    with pytest.raises(ConfigError, match="not a local model directory"):
        user_scenario(tmp_path / "missing", texts)
    with pytest.raises(ConfigError, match="never downloads"):
        user_scenario(Path("openai-community/gpt2"), texts)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        user_scenario(tmp_path / "empty", texts)


def test_captioner_directory_is_refused(tmp_path: Path) -> None:
    captioner = tmp_path / "captioner"
    captioner.mkdir()
    (captioner / "config.json").write_text(json.dumps({"model_type": "vision-encoder-decoder"}))
    texts = tmp_path / "texts.jsonl"
    write_jsonl(texts, sentences(MIN_TEXTS, seed=1))
    with pytest.raises(ConfigError, match="captioner model; the output audit needs a causal"):
        user_scenario(captioner, texts)


def test_bad_texts_are_refused_with_their_line(
    tmp_path: Path, user_files: tuple[Path, Path]
) -> None:
    model_dir = user_files[0]
    good = [json.dumps({"text": t}) for t in sentences(MIN_TEXTS, seed=1)]
    cases = {
        "broken": (["", good[0], "{not json"], r":3: not valid JSON"),
        "field": (
            [good[0], json.dumps({"txt": "a"})],
            r':2: expected an object with a string "text"',
        ),
        "empty": ([good[0], "", json.dumps({"text": "  "})], r':3: "text" is empty'),
        "few": (good[: MIN_TEXTS - 1], "too few to audit"),
        "dupes": ([good[0]] * MIN_TEXTS, "1 distinct non-empty texts"),
    }
    for name, (lines, message) in cases.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_text("\n".join(lines) + "\n")
        with pytest.raises(ConfigError, match=message):
            user_scenario(model_dir, path)
    with pytest.raises(ConfigError, match="does not exist"):
        user_scenario(model_dir, tmp_path / "missing.jsonl")


def test_lengths_and_canary_counts_are_checked(user_files: tuple[Path, Path]) -> None:
    with pytest.raises(ConfigError, match="exceed max_length=8"):
        user_scenario(*user_files, max_length=8)
    with pytest.raises(ConfigError, match="exceed the model's context of 32"):
        user_scenario(*user_files, max_length=40)
    with pytest.raises(ConfigError, match="n_canaries must be >= 2"):
        user_scenario(*user_files, n_canaries=1)
    assert user_scenario(*user_files, n_canaries=4, max_length=32).config.max_length == 32


def test_split_is_disjoint_and_seeded() -> None:
    corpus = [f"text {i}" for i in range(50)]
    held, private, pool = split_texts(corpus, seed=3)
    assert sorted(held + private + pool) == sorted(corpus)
    assert (len(held), len(private), len(pool)) == (10, 13, 27)
    assert split_texts(corpus, seed=3) == (held, private, pool)
