"""load_image_captions: an organisation's (image, caption) JSONL, checked line by line.

Every refusal is one ConfigError naming `file:line` and what to fix; the images are
decoded as RGB only when read (RgbImages).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fedveil.errors import ConfigError
from fedveil.learner.data.image_captions import RgbImages, load_image_captions


def _png(path: Path, colour: tuple[int, int, int] = (200, 30, 30), mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 12), colour).convert(mode).save(path)
    return path


def _jsonl(path: Path, *lines: object) -> Path:
    text = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)
    path.write_text(text)
    return path


def _refusal(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_image_captions(path)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_relative_and_absolute_images_load_in_file_order(tmp_path: Path) -> None:
    _png(tmp_path / "photos" / "a.png")
    elsewhere = _png(tmp_path / "elsewhere" / "b.png", (20, 40, 200))
    source = _jsonl(
        tmp_path / "captions.jsonl",
        {"image": "photos/a.png", "caption": "a red house"},
        "",
        {"image": str(elsewhere), "caption": "a blue sky"},
        {"image": "photos/./a.png", "caption": "a house"},
    )
    pairs = load_image_captions(source)
    assert [p.caption for p in pairs] == ["a red house", "a blue sky", "a house"]
    assert [p.line for p in pairs] == [1, 3, 4]
    assert pairs[0].image == (tmp_path / "photos" / "a.png").absolute()
    assert pairs[1].image == elsewhere and pairs[1].where == f"{source}:3"


def test_images_are_decoded_as_rgb_only_when_read(tmp_path: Path) -> None:
    _png(tmp_path / "grey.png", (90, 90, 90), mode="L")
    _png(tmp_path / "rgba.png", (10, 200, 10), mode="RGBA")
    source = _jsonl(
        tmp_path / "captions.jsonl",
        {"image": "grey.png", "caption": "a grey sky"},
        {"image": "rgba.png", "caption": "a green house"},
    )
    images = RgbImages(load_image_captions(source))
    assert len(images) == 2
    grey, rgba = images[0], images[1]
    assert grey.shape == (12, 16, 3) and grey.dtype == np.uint8
    assert rgba.shape == (12, 16, 3) and tuple(rgba[0, 0]) == (10, 200, 10)
    assert [i.shape for i in images[0:2]] == [(12, 16, 3), (12, 16, 3)]


def test_a_relative_path_may_not_leave_the_folder(tmp_path: Path) -> None:
    _png(tmp_path / "outside.png")
    (tmp_path / "data").mkdir()
    source = _jsonl(
        tmp_path / "data" / "captions.jsonl", {"image": "../outside.png", "caption": "a red house"}
    )
    message = _refusal(source)
    assert f"{source}:1" in message and "leaves the folder" in message
    _jsonl(source, {"image": str(tmp_path / "outside.png"), "caption": "a red house"})
    assert load_image_captions(source)[0].image == tmp_path / "outside.png"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"image": "a.png", "caption": "a red', "not valid JSON"),
        ('["a.png", "a red house"]', "expected an object"),
        ('{"image": "a.png"}', 'missing key "caption"'),
        ('{"caption": "a red house"}', 'missing key "image"'),
        ('{"image": "a.png", "caption": "a red house", "label": 1}', "unknown key 'label'"),
        ('{"image": "a.png", "captions": "a red house"}', "unknown key 'captions'"),
        ('{"image": "a.png", "caption": "   "}', '"caption" must be a non-empty string'),
        ('{"image": "a.png", "caption": 3}', '"caption" must be a non-empty string'),
        ('{"image": "", "caption": "a red house"}', '"image" must be a non-empty path'),
        ('{"image": "missing.png", "caption": "a red house"}', "does not exist"),
        ('{"image": "notes.txt", "caption": "a red house"}', "is not an image"),
        ('{"image": "photos", "caption": "a red house"}', "is not a file"),
        ('{"image": "broken.png", "caption": "a red house"}', "is damaged"),
    ],
)
def test_each_bad_line_is_refused_naming_its_line(tmp_path: Path, line: str, expected: str) -> None:
    _png(tmp_path / "a.png")
    (tmp_path / "notes.txt").write_text("not a picture\n")
    (tmp_path / "photos").mkdir()
    png = bytearray((tmp_path / "a.png").read_bytes())
    png[-20] ^= 0xFF  # inside the image data: its chunk's CRC no longer matches
    (tmp_path / "broken.png").write_bytes(bytes(png))
    source = _jsonl(tmp_path / "captions.jsonl", {"image": "a.png", "caption": "ok"}, "", line)
    message = _refusal(source)
    assert message.startswith(f"{source}:3: ") and expected in message


def test_an_empty_or_missing_file_is_refused(tmp_path: Path) -> None:
    empty = _jsonl(tmp_path / "captions.jsonl", "", "  ")
    assert "holds no records" in _refusal(empty)
    assert "does not exist" in _refusal(tmp_path / "nope.jsonl")


def test_an_image_that_vanishes_before_encoding_names_its_line(tmp_path: Path) -> None:
    image = _png(tmp_path / "a.png")
    source = _jsonl(tmp_path / "captions.jsonl", {"image": "a.png", "caption": "a red house"})
    images = RgbImages(load_image_captions(source))
    image.write_bytes(b"gone")
    with pytest.raises(ConfigError, match=rf"{source}:1: image .* cannot be decoded"):
        images[0]
