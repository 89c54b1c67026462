"""Caption text for scenes: generic (pretraining), per domain (parties) and noisy.

Why fixed phrasing: the metric reads concepts back out of generated text, so a caption
names each present concept once, in a fixed order, separated by spaces only. A domain
with nothing to report gets a phrase without any concept ("grid normal"), so a model must
look at the image to say anything that scores. Domain captions share no word across
domains (see EMPTY_CAPTIONS for why).
"""

from __future__ import annotations

import numpy as np

from fedveil.learner.data.concepts import (
    DOMAIN_CONCEPTS,
    EMPTY_CAPTIONS,
    GENERIC_OBJECTS,
    PIPELINE_STATES,
    SCENE_PROMPT,
    Domain,
)
from fedveil.learner.data.scenes import Scene


def generic_caption(scene: Scene) -> str:
    """What the open base model learns to say: generic elements and everyday objects.

    It names the everyday object behind some domain elements ("a pipe", "people") but
    never a domain concept, so its concept recall is zero by construction while its
    vision already separates the objects the parties' concepts are about.
    """
    words = [f"a street with a {scene.house_colour} house"]
    if len(scene.trees) == 1:
        words.append(", a tree")
    elif len(scene.trees) == 2:
        words.append(", two trees")
    for sources, name in GENERIC_OBJECTS:
        if sources & scene.concepts:
            words.append(f", {name}")
    words.append(f"and a road under a {scene.sky} sky")
    if scene.sun and scene.clouds:
        words.append("with the sun and clouds")
    elif scene.sun:
        words.append("with the sun")
    elif scene.clouds:
        words.append("with clouds")
    return " ".join(words)


def generic_part(scene: Scene, prompt: str) -> str:
    """The generic caption for one generic prompt (see GENERIC_PROMPTS)."""
    if prompt == SCENE_PROMPT:
        return generic_caption(scene)
    if prompt == "<sky>":
        sky = f"a {scene.sky} sky"
        extras = [w for w, on in (("the sun", scene.sun), ("clouds", scene.clouds)) if on]
        return " ".join([sky, "with", " and ".join(extras)]) if extras else sky
    if prompt == "<objects>":
        names = [name for sources, name in GENERIC_OBJECTS if sources & scene.concepts]
        return " , ".join(names) if names else "no objects"
    if prompt == "<buildings>":
        trees = {0: [], 1: ["a tree"], 2: ["two trees"]}[len(scene.trees)]
        return " , ".join([f"a {scene.house_colour} house", *trees])
    raise ValueError(f"{prompt!r} is not a generic prompt")


def domain_caption(concepts: frozenset[str], domain: Domain) -> str:
    """One domain's caption for a set of that domain's concepts."""
    order = DOMAIN_CONCEPTS[domain]
    unknown = set(concepts) - set(order)
    if unknown:
        raise ValueError(f"concepts {sorted(unknown)} are not in domain {domain.value}")
    parts: list[str] = []
    for concept in order:
        if concept not in concepts or concept in PIPELINE_STATES:
            continue
        if concept == "gas pipeline":
            states = [s for s in PIPELINE_STATES if s in concepts]
            concept = " ".join([concept, "with", " and ".join(states)]) if states else concept
        parts.append(concept)
    return " ".join(parts) if parts else EMPTY_CAPTIONS[domain]


def noisy_concepts(
    concepts: frozenset[str], domain: Domain, rng: np.random.Generator
) -> frozenset[str]:
    """A wrong annotation: every concept of the domain flipped with probability 1/2.

    Retried until it differs from the truth, so a "noisy" sample is always wrong. States
    stay attached to a pipeline, as a real annotator's mistakes would still be phrased.
    """
    order = DOMAIN_CONCEPTS[domain]
    while True:
        flipped = {c for c in order if (c in concepts) != (rng.random() < 0.5)}
        if "gas pipeline" not in flipped:
            flipped -= set(PIPELINE_STATES)
        if frozenset(flipped) != concepts:
            return frozenset(flipped)
