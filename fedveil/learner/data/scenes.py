"""Procedural street scenes: what is in a scene (`Scene`) and how it is drawn (`render`).

Why procedural: the parties' data must be private-looking yet reproducible offline, and
the metric must know the ground truth exactly. Why these shapes: at 64x64 pixels each
element has its own colour, shape and place (a yellow pipe along the kerb, a dark disc on
the road, a green lane strip, an all-black standing figure, a lying figure...), so a tiny
model can learn to see it; nothing is a difference of a pixel or two.

Everything random comes from a numpy Generator the caller seeds, so a scene is a pure
function of its seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from fedveil.learner.data.concepts import (
    DOMAIN_CONCEPTS,
    DOMAINS,
    HOUSE_COLOURS,
    PIPELINE_STATES,
    SKY_KINDS,
    Domain,
)

CANVAS = 64
"""Scenes are laid out on a 64x64 grid and resized when another size is asked for."""

Box = tuple[int, int, int, int]
RGB = tuple[int, int, int]

_HOUSE_RGB: dict[str, RGB] = {
    "red": (190, 60, 50),
    "blue": (70, 100, 190),
    "white": (235, 235, 228),
    "green": (80, 150, 80),
}
_SKY_RGB: dict[str, RGB] = {
    "blue": (110, 170, 235),
    "grey": (150, 155, 165),
    "orange": (240, 165, 95),
}
_SHIRTS: tuple[RGB, ...] = ((30, 110, 230), (225, 45, 45), (40, 180, 60), (150, 60, 200))
_CARS: tuple[RGB, ...] = ((205, 30, 30), (40, 70, 175), (225, 225, 225), (240, 140, 20))
_SKIN: RGB = (232, 190, 150)
_PIPE: RGB = (240, 200, 20)
_RUST: RGB = (140, 55, 15)
_WIDTHS = {"residents": 11, "loitering": 5, "fall": 10, "gate": 9, "street vendor": 12}
"""Footprints (pixels) of the elements standing or lying on the pavement."""


@dataclass(frozen=True)
class Scene:
    """One street scene: its generic look, its concepts, and where each element stands."""

    sky: str
    sun: bool
    clouds: bool
    house_colour: str
    house_x: int
    trees: tuple[int, ...]
    concepts: frozenset[str]
    pavement: tuple[tuple[str, int], ...]
    """(element, left x) of the elements on the pavement, non-overlapping."""
    road: tuple[tuple[str, int], ...]
    """(element, left x) of the well cover and the parked car, non-overlapping."""
    variant: int
    """Free choice of colours and small details (shirt, car colour, leak place)."""

    def placed(self, slots: tuple[tuple[str, int], ...]) -> list[tuple[str, int]]:
        """The slots whose element is present: `concepts` is the one source of truth."""
        return [(name, x) for name, x in slots if name in self.concepts]

    def concepts_of(self, domain: Domain) -> frozenset[str]:
        """The concepts of one domain present in the scene."""
        return frozenset(c for c in self.concepts if c in DOMAIN_CONCEPTS[domain])


def _place(
    rng: np.random.Generator, widths: dict[str, int], lo: int, hi: int
) -> list[tuple[str, int]]:
    """Non-overlapping left x for each element within [lo, hi); drops what cannot fit."""
    placed: list[tuple[str, int, int]] = []
    for name in sorted(widths, key=lambda n: -widths[n]):
        width = widths[name]
        for _ in range(50):
            x = int(rng.integers(lo, hi - width + 1))
            if all(x + width + 1 <= a or b + 1 <= x for _, a, b in placed):
                placed.append((name, x, x + width))
                break
    return sorted(((n, a) for n, a, _ in placed), key=lambda item: item[1])


def sample_scene(
    rng: np.random.Generator, presence: float = 0.45, domains: tuple[Domain, ...] = DOMAINS
) -> Scene:
    """A random scene; each concept of `domains` is present with probability `presence`.

    Generic scenes (the base model's pretraining world) pass `domains=()`.
    """
    concepts: set[str] = set()
    for domain in domains:
        for concept in DOMAIN_CONCEPTS[domain]:
            if concept not in PIPELINE_STATES and rng.random() < presence:
                concepts.add(concept)
    if "gas pipeline" in concepts:
        concepts.update(s for s in PIPELINE_STATES if rng.random() < 0.5)
    house_x = int(rng.integers(2, 38))
    free = [x for x in (4, 14, 46, 56) if x + 6 < house_x or x - 6 > house_x + 24]
    n_trees = int(rng.integers(0, min(2, len(free)) + 1))
    trees = tuple(sorted(int(x) for x in rng.choice(free, size=n_trees, replace=False)))
    pavement = _place(rng, {k: w for k, w in _WIDTHS.items() if k in concepts}, 1, 63)
    road_widths = {k: w for k, w in (("well cover", 9), ("parked car", 17)) if k in concepts}
    road = _place(rng, road_widths, 1, 63)
    placed = {name for name, _ in pavement} | {name for name, _ in road}
    dropped = {k for k in (set(_WIDTHS) | set(road_widths)) & concepts if k not in placed}
    return Scene(
        sky=str(rng.choice(SKY_KINDS)),
        sun=bool(rng.random() < 0.5),
        clouds=bool(rng.random() < 0.5),
        house_colour=str(rng.choice(HOUSE_COLOURS)),
        house_x=house_x,
        trees=trees,
        concepts=frozenset(concepts - dropped),
        pavement=tuple(pavement),
        road=tuple(road),
        variant=int(rng.integers(0, 1 << 16)),
    )


# --- drawing ---------------------------------------------------------------------------------


def _jitter(rgb: RGB, rng: np.random.Generator, amount: int = 12) -> RGB:
    r, g, b = (int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)
    return (r, g, b)


def _person(draw: ImageDraw.ImageDraw, x: int, shirt: RGB, head: RGB, legs: RGB) -> None:
    """An upright figure, 5 px wide, standing on the pavement (feet at y=41)."""
    draw.ellipse((x + 1, 24, x + 4, 27), fill=head)
    draw.rectangle((x, 28, x + 4, 35), fill=shirt)
    draw.rectangle((x + 1, 36, x + 3, 41), fill=legs)


def _draw_generic(draw: ImageDraw.ImageDraw, scene: Scene, rng: np.random.Generator) -> None:
    draw.rectangle((0, 0, 63, 37), fill=_jitter(_SKY_RGB[scene.sky], rng))
    if scene.clouds:
        for _ in range(2):
            cx, cy = int(rng.integers(0, 52)), int(rng.integers(1, 10))
            draw.ellipse((cx, cy, cx + 12, cy + 5), fill=(250, 250, 250))
    if scene.sun:  # drawn after the clouds, so it is never hidden
        sx = int(rng.integers(4, 56))
        draw.ellipse((sx, 2, sx + 7, 9), fill=(255, 225, 70))
    for tx in scene.trees:
        draw.rectangle((tx + 2, 28, tx + 4, 37), fill=(110, 70, 30))
        draw.ellipse((tx - 3, 16, tx + 9, 29), fill=_jitter((40, 130, 50), rng))
    hx = scene.house_x
    draw.polygon([(hx - 1, 20), (hx + 12, 11), (hx + 25, 20)], fill=(120, 40, 35))
    draw.rectangle((hx, 20, hx + 24, 37), fill=_jitter(_HOUSE_RGB[scene.house_colour], rng, 8))
    draw.rectangle((hx + 10, 28, hx + 14, 37), fill=(90, 55, 25))
    draw.rectangle((hx + 3, 23, hx + 7, 26), fill=(170, 210, 240))
    draw.rectangle((0, 38, 63, 46), fill=(188, 188, 182))
    draw.rectangle((0, 47, 63, 63), fill=(78, 78, 84))
    for lx in range(2, 64, 12):
        draw.rectangle((lx, 58, lx + 5, 58), fill=(220, 220, 220))


def _draw_energy(draw: ImageDraw.ImageDraw, scene: Scene, rng: np.random.Generator) -> None:
    c = scene.concepts
    if "gas pipeline" in c:
        draw.rectangle((0, 43, 63, 46), fill=_PIPE)
        draw.line((0, 43, 63, 43), fill=(150, 120, 0))
        if "corrosion" in c:
            for _ in range(4):
                rx = int(rng.integers(0, 60))
                draw.rectangle((rx, 44, rx + 3, 46), fill=_RUST)
        if "leak" in c:
            lx = int(rng.integers(6, 54))
            for k, (dx, dy, r) in enumerate(((0, -2, 3), (3, -6, 3), (-1, -10, 4))):
                shade = (200 + 10 * k, 245, 255)
                draw.ellipse((lx + dx - r, 42 + dy - r, lx + dx + r, 42 + dy + r), fill=shade)
    if "meter" in c:
        mx = scene.house_x + 1  # left of the door; the parcel sits right of it
        draw.rectangle((mx, 28, mx + 7, 35), fill=(45, 45, 50))
        draw.ellipse((mx + 1, 29, mx + 6, 34), fill=(255, 255, 255))
        draw.line((mx + 3, 32, mx + 5, 30), fill=(230, 0, 0))
    for name, x in scene.placed(scene.road):
        if name == "well cover":
            draw.ellipse((x, 53, x + 9, 62), fill=(35, 35, 35), outline=(150, 150, 150))
            draw.line((x + 2, 57, x + 7, 57), fill=(110, 110, 110))
            draw.line((x + 4, 55, x + 4, 60), fill=(110, 110, 110))


def _draw_residential(draw: ImageDraw.ImageDraw, scene: Scene, rng: np.random.Generator) -> None:
    shirt = _SHIRTS[scene.variant % len(_SHIRTS)]
    if "parcel" in scene.concepts:
        px = scene.house_x + 14
        draw.rectangle((px, 31, px + 7, 37), fill=(215, 160, 90))
        draw.line((px + 3, 31, px + 3, 37), fill=(120, 80, 30))
    for name, x in scene.placed(scene.pavement):
        if name == "residents":
            _person(draw, x, shirt, _SKIN, (30, 40, 110))
            _person(draw, x + 6, _SHIRTS[(scene.variant + 1) % len(_SHIRTS)], _SKIN, (30, 40, 110))
        elif name == "loitering":
            _person(draw, x, (20, 20, 20), (45, 45, 45), (15, 15, 15))
        elif name == "fall":
            draw.rectangle((x, 40, x + 7, 42), fill=shirt)
            draw.ellipse((x + 7, 39, x + 10, 42), fill=_SKIN)
        elif name == "gate":
            for bx in range(x, x + 9, 3):
                draw.rectangle((bx, 26, bx + 1, 41), fill=(110, 65, 25))
            draw.rectangle((x, 27, x + 8, 28), fill=(110, 65, 25))
            draw.rectangle((x, 34, x + 8, 35), fill=(110, 65, 25))


def _draw_urban(draw: ImageDraw.ImageDraw, scene: Scene, rng: np.random.Generator) -> None:
    if "bike lane" in scene.concepts:
        draw.rectangle((0, 48, 63, 51), fill=(40, 175, 85))
        for bx in range(4, 64, 16):
            draw.rectangle((bx, 49, bx + 3, 50), fill=(245, 245, 245))
    for name, x in scene.placed(scene.pavement):
        if name == "street vendor":
            draw.pieslice((x, 22, x + 12, 34), 180, 360, fill=(230, 30, 30))
            for sx in range(x + 2, x + 12, 4):
                draw.line((sx, 23, sx + 1, 28), fill=(255, 255, 255))
            draw.line((x + 6, 28, x + 6, 33), fill=(60, 60, 60))
            draw.rectangle((x + 1, 33, x + 11, 39), fill=(250, 250, 250), outline=(60, 60, 60))
            draw.ellipse((x + 2, 39, x + 5, 42), fill=(20, 20, 20))
    for name, x in scene.placed(scene.road):
        if name == "parked car":
            body = _CARS[(scene.variant // 7) % len(_CARS)]
            draw.rectangle((x + 4, 51, x + 12, 54), fill=body)
            draw.rectangle((x + 5, 52, x + 11, 53), fill=(160, 210, 240))
            draw.rectangle((x, 54, x + 17, 59), fill=body)
            draw.ellipse((x + 2, 58, x + 6, 62), fill=(10, 10, 10))
            draw.ellipse((x + 11, 58, x + 15, 62), fill=(10, 10, 10))


def render(scene: Scene, rng: np.random.Generator, size: int = CANVAS) -> Image.Image:
    """Draw the scene as an RGB image of `size` x `size` pixels."""
    image = Image.new("RGB", (CANVAS, CANVAS))
    draw = ImageDraw.Draw(image)
    _draw_generic(draw, scene, rng)
    _draw_energy(draw, scene, rng)
    _draw_residential(draw, scene, rng)
    _draw_urban(draw, scene, rng)
    if size != CANVAS:
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return image


def domains_present(scene: Scene) -> dict[Domain, frozenset[str]]:
    """Concepts per domain (empty sets included), the full caption's ground truth."""
    return {d: scene.concepts_of(d) for d in DOMAINS}
