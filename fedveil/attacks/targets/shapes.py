"""Procedurally drawn 32x32 colour images: the stand-in for CIFAR in the inversion tests.

Why drawn, not downloaded: nothing in fedveil fetches data at run time, and a test must
be deterministic offline. Why shapes on textured, graded backgrounds: a reconstruction
of flat noise or of a single colour would make PSNR meaningless; these images have
edges, several colours and a mean far from mid-grey in places, like natural photos, so
the grey baseline is a fair floor. Labels are the dominant shape's kind (a real signal
a classifier could learn), which makes label leakage measurable too.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

SHAPE_CLASSES = (
    "disc",
    "square",
    "triangle",
    "ring",
    "bar",
    "cross",
    "diamond",
    "stripes",
    "dots",
    "star",
)
"""Class names: the dominant foreground element of each image (10 classes)."""


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    c = rng.integers(0, 256, size=3)
    return int(c[0]), int(c[1]), int(c[2])


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """A two-colour linear gradient plus low-amplitude noise texture."""
    a = np.array(_colour(rng), dtype=np.float64)
    b = np.array(_colour(rng), dtype=np.float64)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    t = np.cos(angle) * xx + np.sin(angle) * yy
    t = (t - t.min()) / (t.max() - t.min() + 1e-9)
    img = a[None, None, :] * (1 - t[..., None]) + b[None, None, :] * t[..., None]
    img += rng.normal(0, 8, size=img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def _draw_element(
    draw: ImageDraw.ImageDraw, kind: str, rng: np.random.Generator, size: int
) -> None:
    c = _colour(rng)
    cx, cy = (int(v) for v in rng.integers(size // 4, 3 * size // 4, size=2))
    r = int(rng.integers(size // 6, size // 3))
    box = (cx - r, cy - r, cx + r, cy + r)
    if kind == "disc":
        draw.ellipse(box, fill=c)
    elif kind == "square":
        draw.rectangle(box, fill=c)
    elif kind == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=c)
    elif kind == "ring":
        draw.ellipse(box, outline=c, width=max(2, r // 3))
    elif kind == "bar":
        draw.rectangle((0, cy - r // 2, size, cy + r // 2), fill=c)
    elif kind == "cross":
        w = max(2, r // 3)
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=c)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=c)
    elif kind == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=c)
    elif kind == "stripes":
        for x in range(0, size, 6):
            draw.rectangle((x, 0, x + 2, size), fill=c)
    elif kind == "dots":
        for _ in range(6):
            x, y = (int(v) for v in rng.integers(2, size - 2, size=2))
            draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=c)
    elif kind == "star":
        angles = np.linspace(0, 2 * np.pi, 11)[:-1] + rng.uniform(0, np.pi)
        radii = np.where(np.arange(10) % 2 == 0, r, r / 2.5)
        draw.polygon(
            [
                (cx + float(rr * np.cos(a)), cy + float(rr * np.sin(a)))
                for a, rr in zip(angles, radii, strict=True)
            ],
            fill=c,
        )
    else:  # pragma: no cover - the kinds are a fixed tuple
        raise AssertionError(kind)


def draw_image(seed: int, label: int, size: int = 32) -> np.ndarray:
    """One image (H, W, 3) uint8: a textured background, a distractor, then the labelled shape."""
    rng = np.random.default_rng(seed)
    img = _background(rng, size)
    draw = ImageDraw.Draw(img)
    others = [k for k in SHAPE_CLASSES if k != SHAPE_CLASSES[label]]
    _draw_element(draw, others[int(rng.integers(len(others)))], rng, size)
    _draw_element(draw, SHAPE_CLASSES[label], rng, size)
    return np.asarray(img, dtype=np.uint8)


def shape_images(
    count: int, seed: int = 0, size: int = 32, num_classes: int = len(SHAPE_CLASSES)
) -> tuple[Tensor, Tensor]:
    """`count` images as a float tensor (N, 3, size, size) in [0, 1] and their labels (N,)."""
    if not 1 <= num_classes <= len(SHAPE_CLASSES):
        raise ValueError(f"num_classes must be in [1, {len(SHAPE_CLASSES)}], got {num_classes}")
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=count)
    seeds = rng.integers(0, 2**31 - 1, size=count)
    images = np.stack(
        [draw_image(int(s), int(lab), size) for s, lab in zip(seeds, labels, strict=True)]
    )
    x = torch.from_numpy(images).permute(0, 3, 1, 2).to(torch.float32) / 255.0
    return x.contiguous(), torch.from_numpy(labels).to(torch.long)
