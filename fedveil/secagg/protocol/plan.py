"""The federation plan: what every party of a federation must hold, bound into each round.

Why a plan: parties fine-tune one adapter together, so they must agree on the base model
(its content hash, not only its name), on the adapter (LoRA rank, alpha, target modules,
FFA or FedAvg, the shared seed of the frozen factors) and hence on the tensor layout and
the dimension of every update. The operator writes the plan once (`fedveil plan`, from the
base model directory); the server serves it in every RoundSpec, and each party compares
it, field by field, with what it holds before it trains or sends anything, so a mismatch
is refused with a message that names it.

Why a digest in the model chain: the comparison above trusts the served plan only to
report a mismatch. What binds the plan is that each party derives the root of its model
chain (secagg.protocol.model_chain) from *its own* base model hash, adapter settings and
layout: `plan_digest` replaces the bare base model hash there. The round's model hash is
part of every session id, so parties that disagree on any field derive different session
ids, their signatures do not verify and their masks do not cancel: the round fails closed
even if a server served each of them a plan that matched what it holds.

Nothing here is secret; the module is pure (no I/O, no torch).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields

from fedveil.errors import ConfigError
from fedveil.secagg.crypto.encoding import encode_fields

_PLAN_TAG = b"fedveil-federation-plan-v1"
_HETERO_TAG = b"heterogeneous-ranks-and-towers-v1"
HASH_BYTES = 32
VARIANTS = ("ffa", "fedavg")


@dataclass(frozen=True)
class AdapterPlan:
    """The LoRA adapter every party trains (peft's LoraConfig fields that change the
    aggregate; dropout and the local recipe are each party's own)."""

    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    """Resolved module names (sorted), as peft applied them to the base model."""
    variant: str
    """"ffa" (A frozen from the shared seed, only B travels) or "fedavg" (A and B)."""
    seed: int
    heterogeneous: bool = False
    """Parties may train any rank <= `rank` and any subset of the towers (text-only
    parties): each sends its delta padded to rank `rank` with an indicator section
    (learner.lora.hetero_layout), and `layout_sha256` is that extended layout's
    fingerprint. False: every party trains exactly this adapter."""

    def __post_init__(self) -> None:
        if not isinstance(self.heterogeneous, bool):
            raise ConfigError(
                f"federation.lora.heterogeneous must be a bool, got {self.heterogeneous!r}"
            )
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ConfigError(f"federation.lora.rank must be a positive int, got {self.rank!r}")
        if not float(self.alpha) > 0:
            raise ConfigError(f"federation.lora.alpha must be > 0, got {self.alpha!r}")
        if not self.target_modules or not all(
            isinstance(name, str) and name for name in self.target_modules
        ):
            raise ConfigError("federation.lora.target_modules must name at least one module")
        if self.variant not in VARIANTS:
            raise ConfigError(
                f"federation.lora.variant must be one of {', '.join(VARIANTS)}, "
                f"got {self.variant!r}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"federation.lora.seed must be an int >= 0, got {self.seed!r}")
        object.__setattr__(self, "alpha", float(self.alpha))
        object.__setattr__(self, "target_modules", tuple(sorted(set(self.target_modules))))


@dataclass(frozen=True)
class FederationPlan:
    """One federation: its base model, adapter, layout and length."""

    name: str
    base_model: str
    """A name for people (e.g. the model directory's name); the hash is what binds."""
    base_model_hash: bytes
    lora: AdapterPlan
    dimension: int
    """Trainable adapter values each party sends per round (follows from the layout)."""
    layout_sha256: bytes
    """learner.lora.codec.AdapterLayout.fingerprint(): names, shapes, offsets, variant,
    frozen factors and base model of the adapter."""
    rounds: int
    """Rounds of the federation (0: until the operator stops the server)."""

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ConfigError("federation.name must be a non-empty string")
        for name in ("base_model_hash", "layout_sha256"):
            value = getattr(self, name)
            if not isinstance(value, bytes | bytearray) or len(value) != HASH_BYTES:
                raise ConfigError(f"federation.{name} must be {HASH_BYTES} bytes (SHA-256)")
            object.__setattr__(self, name, bytes(value))
        if isinstance(self.dimension, bool) or not isinstance(self.dimension, int):
            raise ConfigError(f"federation.dimension must be an int, got {self.dimension!r}")
        if self.dimension < 1:
            raise ConfigError(f"federation.dimension must be >= 1, got {self.dimension}")
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 0:
            raise ConfigError(f"federation.rounds must be an int >= 0, got {self.rounds!r}")

    def digest(self) -> bytes:
        """The root of every party's model chain: equal iff the plans are equal.

        A heterogeneous plan appends its marker, so plans without it keep the digests
        they had before the field existed."""
        lora = self.lora
        extra = (_HETERO_TAG,) if lora.heterogeneous else ()
        return hashlib.sha256(
            encode_fields(
                _PLAN_TAG,
                self.name,
                self.base_model,
                self.base_model_hash,
                lora.rank,
                float(lora.alpha).hex(),
                len(lora.target_modules),
                *lora.target_modules,
                lora.variant,
                lora.seed,
                self.dimension,
                self.layout_sha256,
                self.rounds,
                *extra,
            )
        ).digest()


def plan_mismatches(served: FederationPlan, local: FederationPlan) -> list[str]:
    """What a party holds that differs from the served plan, one phrase per field
    (`lora.rank: this party 4, the federation 8`); empty when they agree."""
    found = []
    for field in ("base_model_hash", "dimension", "layout_sha256"):
        mine, theirs = getattr(local, field), getattr(served, field)
        if mine != theirs:
            found.append(f"{field}: this party {_show(mine)}, the federation {_show(theirs)}")
    for spec in fields(AdapterPlan):
        mine, theirs = getattr(local.lora, spec.name), getattr(served.lora, spec.name)
        if mine != theirs:
            found.append(
                f"lora.{spec.name}: this party {_show(mine)}, the federation {_show(theirs)}"
            )
    return found


def _show(value: object) -> str:
    if isinstance(value, bytes):
        return value.hex()[:16] + "..."
    if isinstance(value, tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)
