"""An organisation's own images and their captions: one JSONL line per (image, caption).

Format (one object per line, blank lines allowed)::

    {"image": "photos/0001.png", "caption": "a red house under a blue sky"}

- "image": a path relative to the JSONL file's folder, or an absolute path. A relative
  path may not leave that folder (`../other/x.png` is refused, judged on the path as
  written, before any symbolic link is followed): the folder is what an organisation
  hands over, and a relative path that climbs out of it usually means a file copied
  without its images. An absolute path is taken as meant and may point anywhere. The
  same image may appear on several lines (several captions of one picture).
- "caption": a non-empty string, what the captioner learns to say about the image.
- No other key: a misspelled key ("captions") must not silently drop the caption.

Why strict, like `learner.data.text`: a party's private data is read once and trained on;
a malformed line must stop the run with `file:line` and what to fix before any model is
loaded, never be skipped (which would change the party's FedAvg weight unnoticed). Every
image is opened and checked (`PIL.Image.verify`) up front, so a missing or damaged file
is named at start-up rather than after minutes of model loading.

Images are decoded only when they are encoded (`RgbImages`), converted to RGB (a
greyscale, palette or RGBA file becomes three channels, as the image processor expects),
one chunk at a time: a large folder is never held in memory decoded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import overload

import numpy as np
from PIL import Image, UnidentifiedImageError

from fedveil.errors import ConfigError

KEYS = ("image", "caption")
FORMAT_HINT = '{"image": "<path relative to this file\'s folder>", "caption": "<text>"}'


@dataclass(frozen=True)
class ImageCaption:
    """One validated line: the image file (absolute) and its caption."""

    image: Path
    caption: str
    source: Path
    line: int

    @property
    def where(self) -> str:
        """`file:line`, the prefix of every error about this pair."""
        return f"{self.source}:{self.line}"

    def load_rgb(self) -> np.ndarray:
        """The image as a uint8 (H, W, 3) array, however it is stored on disk."""
        try:
            with Image.open(self.image) as opened:
                return np.asarray(opened.convert("RGB"), dtype=np.uint8)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise ConfigError(
                f"{self.where}: image {self.image} cannot be decoded ({exc}); "
                "replace the file or remove the line"
            ) from None


class RgbImages(Sequence[np.ndarray]):
    """The pairs' images as a sequence that decodes each one only when it is read, so
    an encoder that reads them in chunks never holds the whole folder in memory."""

    def __init__(self, pairs: Sequence[ImageCaption]) -> None:
        self._pairs = tuple(pairs)

    def __len__(self) -> int:
        return len(self._pairs)

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...

    @overload
    def __getitem__(self, index: slice) -> list[np.ndarray]: ...

    def __getitem__(self, index: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(index, slice):
            return [pair.load_rgb() for pair in self._pairs[index]]
        return self._pairs[index].load_rgb()


def load_image_captions(path: str | Path) -> list[ImageCaption]:
    """The (image, caption) pairs of a JSONL file, in file order, every line checked
    (see the module docstring); ConfigError `file:line: ...` on the first bad line."""
    source = Path(path)
    if not source.is_file():
        raise ConfigError(f"image captions file {source} does not exist")
    folder = source.parent
    pairs: list[ImageCaption] = []
    with source.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                pairs.append(_parse_line(line, source, folder, number))
    if not pairs:
        raise ConfigError(
            f"image captions file {source} holds no records; give one {FORMAT_HINT} per line"
        )
    return pairs


def _parse_line(line: str, source: Path, folder: Path, number: int) -> ImageCaption:
    where = f"{source}:{number}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not valid JSON ({exc.msg}); expected {FORMAT_HINT}") from None
    if not isinstance(record, dict):
        raise ConfigError(f"{where}: expected an object {FORMAT_HINT}")
    _check_keys(record, where)
    caption = record["caption"]
    if not isinstance(caption, str) or not caption.strip():
        raise ConfigError(f'{where}: "caption" must be a non-empty string')
    image = _image_path(record["image"], folder, where)
    _check_image(image, where)
    return ImageCaption(image, caption, source, number)


def _check_keys(record: dict[str, object], where: str) -> None:
    unknown = sorted(set(record) - set(KEYS))
    if unknown:
        raise ConfigError(
            f'{where}: unknown key {unknown[0]!r}; a line holds only "image" and "caption"'
        )
    missing = [key for key in KEYS if key not in record]
    if missing:
        raise ConfigError(f'{where}: missing key "{missing[0]}"; expected {FORMAT_HINT}')


def _image_path(value: object, folder: Path, where: str) -> Path:
    """The image's absolute path; a relative one must stay inside `folder`."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f'{where}: "image" must be a non-empty path string')
    given = Path(value)
    if given.is_absolute():
        return given
    if os.path.normpath(value).split(os.sep)[0] == os.pardir:
        raise ConfigError(
            f"{where}: image path {value!r} leaves the folder of the captions file; give "
            "a path inside that folder, or an absolute path"
        )
    return (folder / given).absolute()


def _check_image(image: Path, where: str) -> None:
    """The file exists, can be read, and PIL recognises it as an intact image."""
    if not image.exists():
        raise ConfigError(f"{where}: image {image} does not exist")
    if not image.is_file():
        raise ConfigError(f"{where}: image {image} is not a file")
    try:
        with Image.open(image) as opened:
            opened.verify()
    except PermissionError:
        raise ConfigError(f"{where}: image {image} cannot be read (permission denied)") from None
    except UnidentifiedImageError:
        raise ConfigError(
            f"{where}: {image} is not an image PIL can read (PNG, JPEG, ...)"
        ) from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ConfigError(f"{where}: image {image} is damaged ({exc})") from None
