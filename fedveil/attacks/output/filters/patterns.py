"""What the output filters block: literal strings (the canary registry) and PII regexes.

Why both: literals block exactly the secrets the auditor knows about (and nothing
else), regexes block whole families (any phone number, any ID number), including
secrets nobody registered, at the price of blocking benign numbers too. A literal is
also turned into a *flexible* pattern over its units (attacks.output.overlap):
"4719" becomes 4[\\W_]{0,3}7[\\W_]{0,3}1[\\W_]{0,3}9, case-insensitive, so "4 7 1 9"
and "4-7-1-9" are caught at the text level where the exact token sequence is not.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from fedveil.attacks.output.canaries import CanaryRegistry
from fedveil.attacks.output.overlap import units
from fedveil.errors import ConfigError

PII_PATTERNS: dict[str, str] = {
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
    "phone": r"(?<!\d)(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?)?\d{3}[ .-]?\d{4}(?!\d)",
    "id_number": r"(?<!\d)\d{3}[ -]?\d{2}[ -]?\d{4}(?!\d)",
    "access_code": r"(?i)\b(?:code|pin|passcode|password)\b[^.\n]{0,40}?(?<!\d)\d{4,8}(?!\d)",
    "street_address": r"(?i)(?<!\d)\d{1,5}\s+[a-z]+\s+(?:street|lane|road|avenue|st|rd|ave)\b",
}
"""Regexes for the PII families the canaries imitate. They are matched on decoded text
with the end of the text so far as a boundary, so a pattern fires on the first token
that makes any match possible (the 7th digit of a phone number), not after it."""

_SEPARATOR = r"[\W_]{0,3}"


def literal_pattern(literal: str) -> str:
    """The flexible regex of a literal: its units joined by up to 3 non-word characters,
    matched case-insensitively (so spacing, punctuation and casing do not evade it)."""
    parts = units(literal)
    if not parts:
        raise ConfigError(f"literal {literal!r} has no letters, digits or punctuation")
    return "(?i)" + _SEPARATOR.join(re.escape(p) for p in parts)


@dataclass(frozen=True)
class BlockList:
    """Literals (exact strings) and regex sources to keep out of generated text.

    flexible_literals: text-level filters (the decode-time text check and the redactor)
    also match each literal's flexible pattern; the token-sequence ban always uses the
    literals' exact tokenisations.
    """

    literals: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    flexible_literals: bool = True

    def __post_init__(self) -> None:
        if any(not lit for lit in self.literals):
            raise ConfigError("empty literal in the block list")
        for source in self.patterns:
            try:
                compiled = re.compile(source)
            except re.error as exc:
                raise ConfigError(f"bad regex {source!r} in the block list: {exc}") from exc
            if compiled.match(""):
                raise ConfigError(
                    f"regex {source!r} matches the empty string; it would block everything"
                )

    def compiled(self) -> list[re.Pattern[str]]:
        """Every text-level pattern: the regexes, then the literals (flexible or escaped)."""
        sources = list(self.patterns)
        for lit in self.literals:
            sources.append(literal_pattern(lit) if self.flexible_literals else re.escape(lit))
        return [re.compile(s) for s in dict.fromkeys(sources)]

    @classmethod
    def from_registry(
        cls,
        registry: CanaryRegistry,
        *,
        pii: Sequence[str] = (),
        members_only: bool = False,
        flexible_literals: bool = True,
    ) -> BlockList:
        """The registry's secrets as literals, plus the named PII patterns.

        members_only=False blocks every registered secret: the blacklist of an owner who
        knows which secrets exist, not which were trained on.
        """
        unknown = [p for p in pii if p not in PII_PATTERNS]
        if unknown:
            raise ConfigError(f"unknown PII patterns {unknown}; known: {sorted(PII_PATTERNS)}")
        chosen = registry.members if members_only else tuple(registry)
        return cls(
            literals=tuple(dict.fromkeys(c.secret for c in chosen)),
            patterns=tuple(PII_PATTERNS[p] for p in pii),
            flexible_literals=flexible_literals,
        )


def new_match(pattern: re.Pattern[str], text: str, old_length: int) -> bool:
    """Whether `pattern` matches somewhere in `text` ending after `old_length` characters,
    i.e. the text appended since then completes a match.

    Every start position that has a match is visited (searching again from start + 1),
    so a match hidden behind an older overlapping one is still found; at each start the
    regex engine's preferred match is the one tested.
    """
    pos = 0
    while pos <= len(text):
        found = pattern.search(text, pos)
        if found is None:
            return False
        if found.end() > old_length and found.end() > found.start():
            return True
        pos = found.start() + 1
    return False
