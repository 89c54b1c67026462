"""`fedveil train` on an organisation's own images: [data] captions = "captions.jsonl".

Three parties, each with its own folder of PNGs and a captions JSONL in the built-in tiny
captioner's words, federate over a real in-process server (mutual TLS, SecAgg) and end
with the same adapter, scored on held-out image captions (mean token loss, perplexity)
before and after the round. Malformed files, and captions data on a causal LM, are
refused with exit 2 and one line naming `file:line` and what to fix.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from fedveil.cli import main
from fedveil.commands.party_settings import load_party_settings
from fedveil.commands.train_party import _data_identity
from fedveil.learner.lora import LoraSettings, adapter_layout, apply_lora, base_model_hash
from fedveil.learner.lora.config import AggregationVariant
from fedveil.learner.models import load_model
from fedveil.server.keys_store import client_dir
from tests.commands.test_train_command import _adapter, _one_error_line
from tests.helpers.party_toml import write_party_toml
from tests.helpers.service_harness import make_keys, running_server, settings_for
from tests.helpers.tiny_gpt2 import save_tiny_gpt2

SCENES = {
    # caption (the built-in captioner's words) -> (sky, house colour or None, sun, car)
    "a red house under a blue sky": ((110, 170, 235), (190, 60, 50), False, False),
    "a white house under a grey sky": ((150, 155, 165), (235, 235, 228), False, False),
    "a blue sky with the sun": ((110, 170, 235), None, True, False),
    "a car and a road under an orange sky": ((240, 165, 95), None, False, True),
    "a green house with the sun": ((110, 170, 235), (80, 150, 80), True, False),
}
PARTY_SCENES = (
    list(SCENES)[:3],
    list(SCENES)[1:4],
    list(SCENES)[2:5] + list(SCENES)[:1],
)


def _draw(caption: str, path: Path) -> Path:
    """A 64x64 PNG of coloured shapes that the caption describes."""
    sky, house, sun, car = SCENES[caption]
    image = Image.new("RGB", (64, 64), sky)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 48, 63, 63), fill=(90, 90, 90))  # the road
    if house is not None:
        draw.rectangle((8, 24, 32, 47), fill=house)
    if sun:
        draw.ellipse((44, 4, 58, 18), fill=(250, 220, 40))
    if car:
        draw.rectangle((20, 50, 40, 58), fill=(205, 30, 30))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def _captions_file(folder: Path, captions: list[str], name: str = "captions.jsonl") -> Path:
    """A captions JSONL with its images in folder/images/, named relative to the file."""
    lines = []
    for i, caption in enumerate(captions):
        _draw(caption, folder / "images" / f"{i:03d}.png")
        lines.append(json.dumps({"image": f"images/{i:03d}.png", "caption": caption}))
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return path


def _party_toml(
    tmp_path: Path,
    keys: Path,
    cid: str,
    model_dir: Path,
    captions: Path,
    port: int,
    extra: str = "",
) -> Path:
    return write_party_toml(
        tmp_path,
        cid,
        credentials=client_dir(keys, cid),
        roster=keys / "roster.json",
        port=port,
        model_dir=model_dir,
        data=f'captions = "{captions}"',
        rounds=1,
        sections=CAPTIONER_SECTIONS + extra,
    )


CAPTIONER_SECTIONS = """
[lora]
rank = 2
alpha = 4.0

[recipe]
batch_size = 4
learning_rate = 0.01
"""


def _tiny_captioner() -> Path:
    from tests.helpers.captioner_fixtures import tiny_base_dir

    return tiny_base_dir()


def test_three_parties_federate_on_their_own_image_captions(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="fedveil.train")
    model_dir = _tiny_captioner()
    lora = LoraSettings(rank=2, alpha=4.0, variant=AggregationVariant.FFA)
    model = load_model(model_dir).model
    base = base_model_hash(model)
    dimension = adapter_layout(apply_lora(model, lora), base, lora.variant).size
    keys, ids = make_keys(tmp_path, 3)
    settings = settings_for(
        tmp_path, keys, dimension=dimension, model_hash=base, stage_timeout_s=20.0
    )
    held_out = _captions_file(tmp_path / "held-out", list(SCENES)[::2])
    extra = f'\n[eval]\ncaptions = "{held_out}"\n'

    async def federate() -> list[int]:
        async with running_server(settings) as server:
            configs = [
                _party_toml(
                    tmp_path,
                    keys,
                    cid,
                    model_dir,
                    _captions_file(tmp_path / f"data-{cid}", PARTY_SCENES[i]),
                    server.port,
                    extra,
                )
                for i, cid in enumerate(ids)
            ]
            runs = [asyncio.to_thread(main, ["train", "--config", str(c)]) for c in configs]
            return list(await asyncio.gather(*runs))

    assert asyncio.run(federate()) == [0, 0, 0]
    adapters = [_adapter(tmp_path, cid) for cid in ids]
    assert adapters[0], "the saved adapter holds tensors"
    for other in adapters[1:]:
        assert other.keys() == adapters[0].keys()
        assert all(np.array_equal(other[k], adapters[0][k]) for k in other)
    per_party = []
    for cid in ids:
        lines = (tmp_path / "out" / cid / "metrics.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        assert [r["round"] for r in records] == [0, 1], "round 0 (the base model), then 1"
        for r in records:
            assert r["data"] == "image-captions" and r["examples"] == 3
            assert r["perplexity"] == pytest.approx(np.exp(r["mean_token_loss"]))
        per_party.append([r["mean_token_loss"] for r in records])
    for losses in per_party[1:]:  # the same global adapter on the same held-out captions
        assert losses == pytest.approx(per_party[0], rel=1e-5)
    assert per_party[0][0] != per_party[0][1], "round 1 moves the adapter from the base"
    logged = [
        r.getMessage() for r in caplog.records if "held-out caption perplexity" in r.getMessage()
    ]
    assert len(logged) == 6
    assert sum("round 1/1" in m and "on 3 image captions" in m for m in logged) == 3


# --- refusals (no server needed: they happen before anything is sent) -----------------------


@pytest.fixture
def party(tmp_path: Path) -> tuple[Path, str]:
    keys, ids = make_keys(tmp_path, 1)
    return keys, ids[0]


def _refused(
    tmp_path: Path,
    party: tuple[Path, str],
    model_dir: Path,
    captions: Path,
    capsys: pytest.CaptureFixture[str],
    extra: str = "",
) -> str:
    keys, cid = party
    config = _party_toml(tmp_path, keys, cid, model_dir, captions, 9, extra)
    capsys.readouterr()
    assert main(["train", "--config", str(config)]) == 2
    return _one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    ("bad_line", "expected"),
    [
        ('{"image": "images/missing.png", "caption": "a red house"}', "does not exist"),
        ('{"image": "notes.txt", "caption": "a red house"}', "is not an image"),
        ('{"image": "images/000.png"}', 'missing key "caption"'),
        ('{"image": "images/000.png", "caption": "a red', "not valid JSON"),
    ],
)
def test_a_malformed_captions_line_is_refused_naming_the_line(
    tmp_path: Path,
    party: tuple[Path, str],
    capsys: pytest.CaptureFixture[str],
    bad_line: str,
    expected: str,
) -> None:
    captions = _captions_file(tmp_path / "data", list(SCENES)[:2])
    (tmp_path / "data" / "notes.txt").write_text("not a picture\n")
    captions.write_text(captions.read_text() + "\n" + bad_line + "\n")
    line = _refused(tmp_path, party, _tiny_captioner(), captions, capsys)
    assert f"{captions}:4: " in line and expected in line


def test_a_malformed_held_out_captions_line_is_refused_before_the_model(
    tmp_path: Path, party: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    captions = _captions_file(tmp_path / "data", list(SCENES)[:2])
    held_out = _captions_file(tmp_path / "held-out", list(SCENES)[:1])
    held_out.write_text(held_out.read_text() + '{"image": "images/000.png", "text": "a"}\n')
    extra = f'\n[eval]\ncaptions = "{held_out}"\n'
    missing_model = tmp_path / "no-model-here"  # never reached: the file is checked first
    line = _refused(tmp_path, party, missing_model, captions, capsys, extra)
    assert f"{held_out}:2: unknown key 'text'" in line


def test_captions_data_on_a_causal_lm_is_refused_in_one_line(
    tmp_path: Path, party: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    captions = _captions_file(tmp_path / "data", list(SCENES)[:2])
    gpt2 = save_tiny_gpt2(tmp_path / "gpt2-tiny")
    line = _refused(tmp_path, party, gpt2, captions, capsys)
    assert "data.captions is image captions" in line and "causal-lm" in line
    assert "captioner (vision-encoder-decoder) model_dir" in line


def test_a_caption_word_the_model_does_not_know_is_refused_naming_the_line(
    tmp_path: Path, party: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    captions = _captions_file(tmp_path / "data", list(SCENES)[:2])
    captions.write_text(
        captions.read_text() + json.dumps({"image": "images/000.png", "caption": "a red barn"})
    )
    line = _refused(tmp_path, party, _tiny_captioner(), captions, capsys)
    assert f"{captions}:3: caption words ['barn'] are not in the model's vocabulary" in line


@pytest.mark.parametrize(
    ("data", "eval_table", "expected"),
    [
        ('captions = "c.jsonl"\ntexts = "t.jsonl"', "", "data: give exactly one of texts"),
        ('captions = "c.jsonl"', 'texts = "t.jsonl"', "eval.texts does not score data.captions"),
        ('captions = "c.jsonl"', "city_test_samples = 4", "eval.city_test_samples does not"),
        ('captions = "c.jsonl"', "", "eval: give captions"),
        ('texts = "t.jsonl"', 'captions = "c.jsonl"', "eval.captions is for data.captions"),
        ('city_domain = "urban"', 'captions = "c.jsonl"', "eval.captions is for data.captions"),
    ],
)
def test_data_and_eval_tables_that_do_not_fit_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: str, eval_table: str, expected: str
) -> None:
    config = tmp_path / "party.toml"
    config.write_text(
        '[party]\ncredentials = "c"\nroster = "r.json"\nserver = "localhost:9"\n'
        f'model_dir = "m"\nout = "o"\n\n[data]\n{data}\n\n[eval]\n{eval_table}\n'
    )
    assert main(["train", "--config", str(config)]) == 2
    assert expected in _one_error_line(capsys.readouterr().err)


def test_the_settings_fingerprint_holds_the_captions_content(tmp_path: Path) -> None:
    captions = _captions_file(tmp_path, list(SCENES)[:2])
    config = tmp_path / "party.toml"
    config.write_text(
        '[party]\ncredentials = "c"\nroster = "r.json"\nserver = "localhost:9"\n'
        f'model_dir = "m"\nout = "o"\n\n[data]\ncaptions = "{captions}"\n'
    )
    settings = load_party_settings(config, {})
    before = _data_identity(settings.data)["captions"]
    captions.write_text(captions.read_text().replace("a red house", "a green house"))
    after = _data_identity(settings.data)["captions"]
    assert isinstance(before, str) and len(before) == 64 and before != after
