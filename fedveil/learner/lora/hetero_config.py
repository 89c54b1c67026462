"""Which party trains at which rank, and which trains text only: checked before training.

Why checked up front: a rank above the federation's maximum, a text-only party on a model
without an image encoder, or a federation where nobody trains the image side cannot run,
and the run would otherwise find out after the base model was built (minutes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from fedveil.errors import ConfigError

WEIGHTINGS = ("group", "tower", "plain")
"""learner.lora.hetero_layout.Weighting's values (kept here as text: this module is
checked before torch is imported)."""


@dataclass(frozen=True)
class HeteroConfig:
    """Per-party ranks (<= max_rank) and the parties that hold captions without images.

    ranks: party name -> LoRA rank; a party not named trains at max_rank.
    text_only: parties that train only the decoder-side (text) adapters.
    """

    max_rank: int
    ranks: Mapping[str, int] = field(default_factory=dict)
    text_only: frozenset[str] = frozenset()
    weighting: str = "group"
    """learner.lora.hetero_layout.Weighting: "group" (each coordinate over the parties
    that trained it), "tower" (over those that trained its tower), "plain" (the
    zero-padded mean)."""
    hold_global: bool = False
    """False: a rank-r party holds the global adapter truncated to rank r. True: it holds
    the whole rank-max adapter and trains only its first r columns (learner.lora.
    hetero_party.mask_gradients): the same upload, the rank-max forward pass."""

    def __post_init__(self) -> None:
        if isinstance(self.max_rank, bool) or not isinstance(self.max_rank, int):
            raise ConfigError(f"the maximum rank must be an int, got {self.max_rank!r}")
        if self.max_rank < 1:
            raise ConfigError(f"the maximum rank must be >= 1, got {self.max_rank}")
        for name, rank in self.ranks.items():
            if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
                raise ConfigError(f"party {name!r}: rank must be an int >= 1, got {rank!r}")
            if rank > self.max_rank:
                raise ConfigError(
                    f"party {name!r}: rank {rank} is above the federation's maximum rank "
                    f"{self.max_rank}"
                )
        if self.weighting not in WEIGHTINGS:
            raise ConfigError(
                f"weighting must be one of {', '.join(WEIGHTINGS)}, got {self.weighting!r}"
            )
        object.__setattr__(self, "ranks", dict(self.ranks))
        object.__setattr__(self, "text_only", frozenset(self.text_only))

    def rank_of(self, party: str) -> int:
        return int(self.ranks.get(party, self.max_rank))

    def check_parties(self, parties: Sequence[str], *, has_vision: bool) -> None:
        """Refuse names that are not parties, text-only parties on a model without an
        image encoder, and a federation with no party that trains images."""
        unknown = sorted((set(self.ranks) | self.text_only) - set(parties))
        if unknown:
            raise ConfigError(
                f"no party named {', '.join(unknown)} (parties: {', '.join(parties)})"
            )
        if self.text_only and not has_vision:
            raise ConfigError(
                "text-only parties need a model with an image encoder (a captioner); this "
                "model is text only, so every party already trains text only"
            )
        if has_vision and set(parties) <= self.text_only:
            raise ConfigError(
                "every party is text-only: nobody would train the image-side adapters; "
                "keep at least one party with images"
            )

    @property
    def is_uniform(self) -> bool:
        """Every party at the maximum rank and none text-only: the plain federation."""
        return not self.text_only and all(r == self.max_rank for r in self.ranks.values())

    def lone_bands(self, parties: Sequence[str], sides: Sequence[str]) -> list[str]:
        """Groups (side, rank indices) that exactly one party trains, as phrases.

        Why: the decoded aggregate of such a group is that party's own delta there;
        secure aggregation hides an update only inside a sum over several parties, so
        these coordinates are not protected (README, threat model: not claimed)."""
        found = []
        for side in sides:
            trainers = [
                (p, 0 if side == "vision" and p in self.text_only else self.rank_of(p))
                for p in parties
            ]
            for k in range(self.max_rank):
                who = [p for p, rank in trainers if rank > k]
                if len(who) == 1:
                    found.append(f"{side} rank index {k}: {who[0]}")
        return found
