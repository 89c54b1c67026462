"""The city-safety vocabulary: domains, their concepts and the decoder's prompt tokens.

Why one module: the renderer, the caption writer, the tokenizer and the metric must agree
on every word. A concept lives in exactly one domain, so a party's captions can be checked
to mention its own domain only, and "joint intelligence" is measured per domain.
Multi-word concepts ("gas pipeline") are matched as word sequences, never as substrings,
so the generic word "street" never counts as the urban concept "street vendor".
"""

from __future__ import annotations

from enum import StrEnum


class Domain(StrEnum):
    """The three organisations' viewpoints on one street scene."""

    ENERGY = "energy"
    RESIDENTIAL = "residential"
    URBAN = "urban"


DOMAINS: tuple[Domain, ...] = (Domain.ENERGY, Domain.RESIDENTIAL, Domain.URBAN)

DOMAIN_CONCEPTS: dict[Domain, tuple[str, ...]] = {
    Domain.ENERGY: ("gas pipeline", "leak", "corrosion", "well cover", "meter"),
    Domain.RESIDENTIAL: ("residents", "gate", "parcel", "loitering", "fall"),
    Domain.URBAN: ("bike lane", "street vendor", "parked car"),
}
"""Each concept is a visual element (or a state of one) the renderer draws distinctly."""

PIPELINE_STATES: tuple[str, ...] = ("leak", "corrosion")
"""States drawn on the gas pipeline; they only occur when the pipeline does."""

SCENE_PROMPT = "<scene>"
"""Prompt of the full generic caption the open base model is pretrained on."""

GENERIC_PROMPTS: tuple[str, ...] = (SCENE_PROMPT, "<sky>", "<objects>", "<buildings>")
"""The open model's generic instructions: the whole scene, or one part of it. Pretraining
on several makes the decoder read its prompt, as an instruction-tuned model does; a new
domain prompt then steers a fine-tuned model instead of being ignored."""

DOMAIN_PROMPTS: dict[Domain, str] = {d: f"<{d.value}>" for d in DOMAINS}
"""One decoder prompt per domain: a caption for a domain is generated after its prompt."""

GENERIC_OBJECTS: tuple[tuple[frozenset[str], str], ...] = (
    (frozenset({"residents", "loitering", "fall"}), "people"),
    (frozenset({"gate"}), "a fence"),
    (frozenset({"parcel"}), "a box"),
    (frozenset({"gas pipeline"}), "a pipe"),
    (frozenset({"street vendor"}), "an umbrella"),
    (frozenset({"parked car"}), "a car"),
)
"""What an open model says about domain elements: the everyday object, never the domain
concept (a pipe, not a gas pipeline; people, not loitering or a fall). Elements with no
everyday name here (well cover, meter, leak, corrosion, bike lane) go unmentioned."""

# Words of the generic scene captions (the base model's whole world).
HOUSE_COLOURS: tuple[str, ...] = ("red", "blue", "white", "green")
SKY_KINDS: tuple[str, ...] = ("blue", "grey", "orange")
GENERIC_WORDS: tuple[str, ...] = (
    "a", "street", "with", "house", "tree", "two", "trees", "road", "under", "sky",
    "the", "sun", "and", "clouds", "an", "no", "objects", ",", *HOUSE_COLOURS, *SKY_KINDS,
    *(w for _, word in GENERIC_OBJECTS for w in word.split()),
)  # fmt: skip

EMPTY_CAPTIONS: dict[Domain, str] = {
    Domain.ENERGY: "grid normal",
    Domain.RESIDENTIAL: "homes quiet",
    Domain.URBAN: "traffic clear",
}
"""A domain's caption when none of its concepts is in the scene. Each uses words of its own
domain only: when captions of different domains share no words (a shared "no ... seen"
did), an averaged model cannot fall back on the words all parties agree on."""

DOMAIN_PROMPT_INIT: dict[Domain, str] = {
    Domain.ENERGY: "<sky>",
    Domain.RESIDENTIAL: "<objects>",
    Domain.URBAN: "<buildings>",
}
"""The generic instruction each domain prompt's embedding starts from (see
`learner.models.base`): three distinct instructions the open model already tells apart."""


def domain_words(domain: Domain) -> frozenset[str]:
    """Every word a caption of `domain` can contain."""
    words = {w for concept in DOMAIN_CONCEPTS[domain] for w in concept.split()}
    words.update(EMPTY_CAPTIONS[domain].split())
    if domain is Domain.ENERGY:
        words.update(("with", "and"))  # "gas pipeline with leak and corrosion"
    return frozenset(words)


def all_concepts() -> tuple[str, ...]:
    """Every concept of every domain, in domain order."""
    return tuple(c for d in DOMAINS for c in DOMAIN_CONCEPTS[d])


def domain_of(concept: str) -> Domain:
    """The one domain a concept belongs to."""
    for domain in DOMAINS:
        if concept in DOMAIN_CONCEPTS[domain]:
            return domain
    raise KeyError(f"{concept!r} is not a city-safety concept")


def vocabulary_words() -> tuple[str, ...]:
    """Every plain word any caption can use, sorted (the tokenizer's word list)."""
    words: set[str] = set(GENERIC_WORDS)
    for domain in DOMAINS:
        words |= domain_words(domain)
    return tuple(sorted(words))
