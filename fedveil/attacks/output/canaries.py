"""Canaries: secret-like strings of known formats planted in a party's training texts.

Why canaries at all: a membership score means little on natural data, where members and
non-members differ in distribution (post-hoc member sets, e.g. "books before the cutoff
date", are separable by a bag of words alone). A canary is drawn from a format whose
randomness space R is known exactly, and each is planted with probability 1/2 by an
independent coin, so members and non-members come from *one* distribution and any
attack that separates them measures memorisation, nothing else. The same coins are
what the one-run audit (attacks.output.empirical_epsilon) needs, and |R| is what exposure
(attacks.output.metrics) needs.

Formats render as "{prefix} {secret}{suffix}": the prefix names a unique subject (a
person), so prompting with it asks the model for that subject's secret. Secrets and
subjects are products of slots (choices per position), so |R| is the product of the slot
sizes and a uniform candidate is one uniform choice per slot.

The auditor keeps the registry (`CanaryRegistry.to_json`): it is the ground truth
the attacks are scored against and the literal list the output filters ban.
"""

from __future__ import annotations

import json
import math
import string
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypedDict

import numpy as np

from fedveil.errors import ConfigError

INCLUSION_PROBABILITY = 0.5
"""Each canary is planted by an independent fair coin (the one-run audit assumes 1/2)."""

_DIGITS = tuple(string.digits)
FIRST_NAMES = (
    "anna", "ben", "clara", "david", "emma", "felix", "greta", "hugo", "ida", "jonas",
    "karla", "leon", "mia", "noah", "olga", "paul", "rosa", "simon", "tara", "ulf",
    "vera", "walter", "xenia", "yusuf",
)  # fmt: skip
LAST_NAMES = (
    "adler", "berg", "conrad", "dietz", "engel", "fischer", "graf", "hahn", "iske",
    "jung", "keller", "lang", "mayer", "neumann", "ost", "peters", "quast", "richter",
    "schulz", "thiel", "ulrich", "vogel", "weber", "zander",
)  # fmt: skip
STREET_NAMES = (
    "oak", "elm", "birch", "maple", "cedar", "pine", "willow", "ash", "linden", "rowan",
    "hazel", "alder", "juniper", "poplar", "chestnut", "holly",
)  # fmt: skip
STREET_KINDS = ("street", "lane", "road", "avenue")


class SlotSpaceJSON(TypedDict):
    """A SlotSpace in the registry's JSON file (CanaryRegistry.to_json, the one place it
    is written)."""

    template: str
    slots: list[list[str]]


class CanaryFormatJSON(TypedDict):
    """A CanaryFormat in the registry's JSON file."""

    name: str
    template: str
    subject: SlotSpaceJSON
    secret: SlotSpaceJSON
    pii: str


@dataclass(frozen=True)
class SlotSpace:
    """A product space: `template` with one `{}` per slot, each slot a tuple of choices.

    Why slots rather than a regex: the size of the space is the product of the slot
    sizes, exactly, and a uniform sample is one uniform choice per slot, which is what
    exposure's rank estimate needs.
    """

    template: str
    slots: tuple[tuple[str, ...], ...]

    def __post_init__(self) -> None:
        holes = self.template.count("{}")
        if holes != len(self.slots) or holes == 0:
            raise ConfigError(
                f"template {self.template!r} has {holes} '{{}}' holes but {len(self.slots)} "
                f"slots; give one slot (tuple of choices) per hole"
            )
        for i, slot in enumerate(self.slots):
            if not slot or len(set(slot)) != len(slot):
                raise ConfigError(f"slot {i} of {self.template!r} is empty or repeats a choice")

    @property
    def size(self) -> int:
        """|R|: the number of distinct values."""
        return math.prod(len(s) for s in self.slots)

    @property
    def log2_size(self) -> float:
        return sum(math.log2(len(s)) for s in self.slots)

    def render(self, choice: Sequence[int]) -> str:
        return self.template.format(*(s[i] for s, i in zip(self.slots, choice, strict=True)))

    def sample(self, rng: np.random.Generator, count: int = 1) -> list[str]:
        """`count` values, each slot uniform and independent (repeats possible)."""
        picks = [rng.integers(len(s), size=count) for s in self.slots]
        return [self.render([int(p[j]) for p in picks]) for j in range(count)]

    def enumerate(self) -> Iterator[str]:
        """Every value, in slot order (only sensible for small spaces)."""
        for flat in range(self.size):
            choice = []
            for slot in reversed(self.slots):
                flat, index = divmod(flat, len(slot))
                choice.append(index)
            yield self.render(choice[::-1])

    def words(self) -> set[str]:
        """Every whitespace-separated word the space can produce (for word vocabularies)."""
        out: set[str] = set(self.template.replace("{}", " ").split())
        for slot in self.slots:
            for choice in slot:
                out.update(choice.split())
        return out

    def to_dict(self) -> SlotSpaceJSON:
        return {"template": self.template, "slots": [list(s) for s in self.slots]}

    @classmethod
    def from_dict(cls, data: SlotSpaceJSON) -> SlotSpace:
        return cls(str(data["template"]), tuple(tuple(str(c) for c in s) for s in data["slots"]))


@dataclass(frozen=True)
class CanaryFormat:
    """One kind of secret: "{prefix} {secret}{suffix}" with prefix = template(subject).

    template must contain "{subject}" and end its prefix with " {secret}"; everything after
    {secret} is the suffix (punctuation, usually). pii: the PII family the secret belongs
    to (what a regex filter would have to recognise it as).
    """

    name: str
    template: str
    subject: SlotSpace
    secret: SlotSpace
    pii: str

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("a canary format needs a name")
        if self.template.count("{subject}") != 1 or self.template.count(" {secret}") != 1:
            raise ConfigError(
                f"format {self.name!r}: template {self.template!r} must contain '{{subject}}' "
                f"once and ' {{secret}}' (preceded by a space) once"
            )

    def split(self, subject: str) -> tuple[str, str]:
        """(prefix, suffix) around the secret for this subject."""
        before, after = self.template.split(" {secret}")
        return before.replace("{subject}", subject), after.replace("{subject}", subject)

    def render(self, subject: str, secret: str) -> str:
        prefix, suffix = self.split(subject)
        return f"{prefix} {secret}{suffix}"

    def words(self) -> set[str]:
        fixed = self.template.replace("{subject}", " ").replace("{secret}", " ").split()
        return set(fixed) | self.subject.words() | self.secret.words()

    def to_dict(self) -> CanaryFormatJSON:
        return {
            "name": self.name,
            "template": self.template,
            "subject": self.subject.to_dict(),
            "secret": self.secret.to_dict(),
            "pii": self.pii,
        }

    @classmethod
    def from_dict(cls, data: CanaryFormatJSON) -> CanaryFormat:
        return cls(
            name=str(data["name"]),
            template=str(data["template"]),
            subject=SlotSpace.from_dict(data["subject"]),
            secret=SlotSpace.from_dict(data["secret"]),
            pii=str(data["pii"]),
        )


_PERSON = SlotSpace("{} {}", (FIRST_NAMES, LAST_NAMES))
_HOUSE_NUMBERS = tuple(str(i) for i in range(1, 100))

FORMATS: dict[str, CanaryFormat] = {
    f.name: f
    for f in (
        CanaryFormat(
            "gate_code",
            "the gate code of {subject} is {secret}.",
            _PERSON,
            SlotSpace("{}{}{}{}", (_DIGITS,) * 4),
            "access_code",
        ),
        CanaryFormat(
            "phone",
            "you can reach {subject} on {secret}.",
            _PERSON,
            SlotSpace("{}{}{} {}{}{}{}", (_DIGITS,) * 7),
            "phone",
        ),
        CanaryFormat(
            "id_number",
            "the id number of {subject} is {secret}.",
            _PERSON,
            SlotSpace("{}{}{}-{}{}-{}{}{}{}", (_DIGITS,) * 9),
            "id_number",
        ),
        CanaryFormat(
            "address",
            "{subject} lives at {secret}.",
            _PERSON,
            SlotSpace("{} {} {}", (_HOUSE_NUMBERS, STREET_NAMES, STREET_KINDS)),
            "address",
        ),
    )
}
"""Built-in formats. |R|: gate_code 10^4, phone 10^7, id_number 10^9, address 6336."""


@dataclass(frozen=True)
class Canary:
    """One planted (or withheld) secret. `member`: whether the coin planted it."""

    id: str
    format: str
    subject: str
    prefix: str
    secret: str
    suffix: str
    member: bool

    @property
    def text(self) -> str:
        return f"{self.prefix} {self.secret}{self.suffix}"


@dataclass(frozen=True)
class CanaryConfig:
    """How many canaries, of which formats, planted how.

    repetitions: copies of each member canary in the training set (1 = a single record,
      the unit DP-SGD protects; more copies make memorisation easier, and a DP claim then
      holds only by group privacy, see attacks.output.empirical_epsilon.group_privacy).
    placement: "insert" adds each copy as its own record at a random position;
      "append" appends it to a random existing text (a caption with a secret in it).
    Formats cycle over the canaries, so each format gets about the same count.
    """

    n_canaries: int = 64
    formats: tuple[str, ...] = ("gate_code", "address")
    repetitions: int = 1
    placement: str = "insert"
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.n_canaries, bool) or not isinstance(self.n_canaries, int):
            raise ConfigError(f"n_canaries must be an int, got {self.n_canaries!r}")
        if self.n_canaries < 2:
            raise ConfigError(
                f"n_canaries must be >= 2 (members and non-members), got {self.n_canaries}"
            )
        if not self.formats:
            raise ConfigError("formats must name at least one canary format")
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown:
            raise ConfigError(f"unknown canary formats {unknown}; built-in: {sorted(FORMATS)}")
        if isinstance(self.repetitions, bool) or not isinstance(self.repetitions, int):
            raise ConfigError(f"repetitions must be an int, got {self.repetitions!r}")
        if self.repetitions < 1:
            raise ConfigError(f"repetitions must be >= 1, got {self.repetitions}")
        if self.placement not in ("insert", "append"):
            raise ConfigError(f"placement must be 'insert' or 'append', got {self.placement!r}")


@dataclass(frozen=True)
class CanaryRegistry:
    """Every drawn canary with its coin, and the formats (so |R| travels with it)."""

    canaries: tuple[Canary, ...]
    formats: dict[str, CanaryFormat] = field(default_factory=dict)
    repetitions: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        ids = [c.id for c in self.canaries]
        if len(set(ids)) != len(ids):
            raise ConfigError("canary ids must be unique")
        prefixes = [c.prefix for c in self.canaries]
        if len(set(prefixes)) != len(prefixes):
            raise ConfigError("canary prefixes must be unique: a prompt must name one canary")
        missing = {c.format for c in self.canaries} - set(self.formats)
        if missing:
            raise ConfigError(f"registry lacks the definitions of formats {sorted(missing)}")

    def __len__(self) -> int:
        return len(self.canaries)

    def __iter__(self) -> Iterator[Canary]:
        return iter(self.canaries)

    @property
    def members(self) -> tuple[Canary, ...]:
        return tuple(c for c in self.canaries if c.member)

    @property
    def non_members(self) -> tuple[Canary, ...]:
        return tuple(c for c in self.canaries if not c.member)

    def labels(self) -> np.ndarray:
        """The coins, in canary order (True: planted)."""
        return np.array([c.member for c in self.canaries], dtype=bool)

    def format_of(self, canary: Canary) -> CanaryFormat:
        return self.formats[canary.format]

    def training_copies(self) -> list[str]:
        """The texts that go into training: `repetitions` copies of each member."""
        return [c.text for c in self.members for _ in range(self.repetitions)]

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": 1,
                "seed": self.seed,
                "repetitions": self.repetitions,
                "inclusion_probability": INCLUSION_PROBABILITY,
                "formats": {k: f.to_dict() for k, f in sorted(self.formats.items())},
                "canaries": [asdict(c) for c in self.canaries],
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> CanaryRegistry:
        try:
            data = json.loads(text)
            if data.get("version") != 1:
                raise ConfigError(f"unsupported canary registry version {data.get('version')!r}")
            return cls(
                canaries=tuple(Canary(**c) for c in data["canaries"]),
                formats={k: CanaryFormat.from_dict(v) for k, v in data["formats"].items()},
                repetitions=int(data["repetitions"]),
                seed=int(data["seed"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"not a canary registry: {exc}") from exc

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> CanaryRegistry:
        return cls.from_json(Path(path).read_text())


def draw_registry(config: CanaryConfig) -> CanaryRegistry:
    """Draw the canaries and their coins from `config.seed` (subjects never repeat)."""
    rng = np.random.default_rng([config.seed, 0xCA7A])
    formats = {name: FORMATS[name] for name in config.formats}
    people = _PERSON.size
    if config.n_canaries > people:
        raise ConfigError(f"at most {people} canaries (distinct subjects), got {config.n_canaries}")
    order = rng.permutation(people)[: config.n_canaries]
    coins = rng.random(config.n_canaries) < INCLUSION_PROBABILITY
    canaries = []
    for i, (flat, member) in enumerate(zip(order, coins, strict=True)):
        fmt = formats[config.formats[i % len(config.formats)]]
        subject = _PERSON.render(divmod(int(flat), len(LAST_NAMES)))
        secret = fmt.secret.sample(rng)[0]
        prefix, suffix = fmt.split(subject)
        canaries.append(
            Canary(f"c{i:04d}", fmt.name, subject, prefix, secret, suffix, bool(member))
        )
    return CanaryRegistry(tuple(canaries), formats, config.repetitions, config.seed)


def plant_registry(
    texts: Sequence[str], registry: CanaryRegistry, *, placement: str = "insert", seed: int = 0
) -> list[str]:
    """`texts` with the registry's member copies planted (non-members never appear)."""
    if placement not in ("insert", "append"):
        raise ConfigError(f"placement must be 'insert' or 'append', got {placement!r}")
    rng = np.random.default_rng([seed, 0x91A7])
    copies = registry.training_copies()
    out = list(texts)
    if placement == "append":
        if not out:
            raise ConfigError("placement='append' needs at least one text to append to")
        for copy in copies:
            i = int(rng.integers(len(out)))
            out[i] = f"{out[i].rstrip()} {copy}"
        return out
    for copy in copies:
        out.insert(int(rng.integers(len(out) + 1)), copy)
    return out


def plant_canaries(
    texts: Sequence[str], config: CanaryConfig | None = None
) -> tuple[list[str], CanaryRegistry]:
    """Draw a registry from `config` and plant its members into `texts`.

    Returns (planted texts, registry); the registry goes to the auditor, the texts to
    the party's training.
    """
    config = config or CanaryConfig()
    registry = draw_registry(config)
    planted = plant_registry(texts, registry, placement=config.placement, seed=config.seed)
    return planted, registry


def format_sentences(
    formats: Sequence[str], count: int, seed: int, *, exclude: Sequence[str] = ()
) -> list[str]:
    """Public sentences in the canary formats with fresh random subjects and secrets.

    Why: the open base model should know what a gate code or an address looks like (any
    real base model does), so that a fine-tuned model's extra confidence on a member's
    secret is memorisation of that secret, not of the format. `exclude`: subjects never
    used (the canaries'), so public text gives away no canary's subject.
    """
    rng = np.random.default_rng([seed, 0x5E17])
    banned = set(exclude)
    out: list[str] = []
    while len(out) < count:
        fmt = FORMATS[formats[int(rng.integers(len(formats)))]]
        subject = fmt.subject.sample(rng)[0]
        if subject in banned:
            continue
        out.append(fmt.render(subject, fmt.secret.sample(rng)[0]))
    return out
