"""The common shape of every attack: what the attacker observes, what it knows, what it returns.

Why this split: a privacy claim is only as good as the view it was measured on. So an
attack never sees a client, a protocol or a ground truth; it gets exactly one observed
vector (`ObservedUpdate`: a plain update, a secure aggregate, a noised aggregate...), the
white-box knowledge any server has anyway (`Target`: the global model, its layout and
the public training recipe), and returns a `Reconstruction`. Scoring against the truth
happens afterwards (`attacks.update.run.run_attack(..., truth=...)`), so no attack can peek.

attacks/ does not import fedveil/: the composition (running a real SecAgg round, a DP
mechanism) happens in tests and benchmarks, which hand the resulting vector in here.
"""

from __future__ import annotations

import enum
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from fedveil.attacks.protections import Protection
from fedveil.errors import ConfigError, FedveilError


class AttackError(FedveilError, ValueError):
    """An attack was pointed at a view or target it cannot use (wrong size, no head...)."""

    grpc_status = "INVALID_ARGUMENT"


# --- what the attacker observes --------------------------------------------------------


class UpdateKind(enum.Enum):
    """Whether the observed vector is a gradient or a parameter delta after local steps."""

    GRADIENT = "gradient"
    DELTA = "delta"


@dataclass(frozen=True)
class ParameterLayout:
    """Names and shapes of the trainable parameters, in the order an update is flattened.

    Why it matters: clients upload one flat vector (only the trainable, i.e. adapter,
    parameters); the attacker must know which slice is which layer. The order is that of
    `model.named_parameters()` restricted to `requires_grad`, which the server knows
    because it distributed the model.
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.shapes):
            raise ConfigError(f"layout has {len(self.names)} names but {len(self.shapes)} shapes")
        if not self.names:
            raise ConfigError("layout is empty: the model has no trainable parameters")
        if len(set(self.names)) != len(self.names):
            raise ConfigError("layout lists a parameter name twice")

    @classmethod
    def of(cls, model: nn.Module) -> ParameterLayout:
        """The layout of `model`'s trainable parameters."""
        pairs = [(n, tuple(p.shape)) for n, p in model.named_parameters() if p.requires_grad]
        return cls(tuple(n for n, _ in pairs), tuple(s for _, s in pairs))

    def same_parameters(self, other: ParameterLayout) -> bool:
        """Same names and shapes, possibly in another order.

        The client SDK flattens adapters in sorted-name order; the attacks honour
        whatever order the observed layout states.
        """
        return sorted(zip(self.names, self.shapes, strict=True)) == sorted(
            zip(other.names, other.shapes, strict=True)
        )

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(math.prod(s) for s in self.shapes)

    @property
    def size(self) -> int:
        return sum(self.sizes)

    def slice_of(self, name: str) -> slice:
        """Where parameter `name` lives in the flat vector."""
        if name not in self.names:
            raise AttackError(f"{name!r} is not a trainable parameter of this layout")
        start = 0
        for n, size in zip(self.names, self.sizes, strict=True):
            if n == name:
                return slice(start, start + size)
            start += size
        raise AssertionError("unreachable")

    def split(self, vector: Tensor) -> dict[str, Tensor]:
        """Views of the flat `vector`, one per parameter, in their parameter shapes."""
        if vector.ndim != 1 or vector.shape[0] != self.size:
            raise AttackError(
                f"vector of shape {tuple(vector.shape)} does not match the layout's "
                f"{self.size} trainable elements; was it flattened from another model?"
            )
        parts = torch.split(vector, list(self.sizes))
        return {n: p.view(s) for n, p, s in zip(self.names, parts, self.shapes, strict=True)}

    def get(self, vector: Tensor, name: str) -> Tensor:
        """One parameter's block of the flat `vector`, in its parameter shape."""
        return vector[self.slice_of(name)].view(self.shapes[self.names.index(name)])

    @staticmethod
    def flatten(tensors: Sequence[Tensor]) -> Tensor:
        return torch.cat([t.reshape(-1) for t in tensors])


@dataclass(frozen=True)
class LocalTraining:
    """The client's public local-training recipe (FedAvg): plain SGD steps on its data.

    steps: local SGD steps; lr: their step size; batch_size: examples per step (None: the
    whole local batch every step; else consecutive slices, wrapping around). The server
    sets these in the round config, so an attacker may assume them.
    """

    steps: int = 1
    lr: float = 0.1
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 1:
            raise ConfigError(f"LocalTraining.steps must be an int >= 1, got {self.steps!r}")
        if not math.isfinite(self.lr) or self.lr <= 0:
            raise ConfigError(f"LocalTraining.lr must be a finite number > 0, got {self.lr!r}")
        if self.batch_size is not None and (
            not isinstance(self.batch_size, int) or self.batch_size < 1
        ):
            raise ConfigError(
                f"LocalTraining.batch_size must be None or an int >= 1, got {self.batch_size!r}"
            )


@dataclass(frozen=True, eq=False)
class ObservedUpdate:
    """One vector as an observer sees it, and what the protocol reveals alongside it.

    vector: flat float update over `layout`; for an aggregate, the weighted mean.
    examples: the example count the observer learns (a plain upload's weight, or the
      SecAgg total weight); gradient matching reconstructs that many inputs by default.
    n_clients: how many clients' updates are summed in `vector`.
    training: for DELTA views, the local recipe that produced the delta.
    """

    vector: Tensor
    layout: ParameterLayout
    kind: UpdateKind = UpdateKind.GRADIENT
    protection: Protection = Protection.NONE
    n_clients: int = 1
    examples: int = 1
    training: LocalTraining | None = None
    notes: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        vec = self.vector
        if isinstance(vec, np.ndarray):
            vec = torch.from_numpy(np.ascontiguousarray(vec))
        if not isinstance(vec, Tensor) or vec.ndim != 1 or not vec.is_floating_point():
            raise ConfigError("ObservedUpdate.vector must be a 1-D float tensor or array")
        if vec.shape[0] != self.layout.size:
            raise ConfigError(
                f"ObservedUpdate.vector has {vec.shape[0]} elements, the layout "
                f"{self.layout.size}; flatten the update over the trainable parameters"
            )
        if not bool(torch.isfinite(vec).all()):
            raise ConfigError("ObservedUpdate.vector has non-finite values")
        object.__setattr__(self, "vector", vec.detach().to(torch.float64))
        for name in ("n_clients", "examples"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"ObservedUpdate.{name} must be an int >= 1, got {value!r}")
        if self.kind is UpdateKind.DELTA and self.training is None:
            raise ConfigError(
                "a DELTA view needs `training` (steps, lr): the attacker must know the "
                "local recipe to simulate it"
            )

    def parameter(self, name: str) -> Tensor:
        """One parameter's block of the observed vector."""
        return self.layout.get(self.vector, name)


# --- what the attacker knows -----------------------------------------------------------


LossFn = Callable[[Callable[..., Any], Tensor, Tensor], Tensor]
"""loss(model_call, inputs, labels) -> scalar mean over the batch."""


def classification_loss(model_call: Callable[..., Any], inputs: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy; `labels` may be class indices or (soft) probability rows."""
    return nn.functional.cross_entropy(model_call(inputs), labels)


@dataclass(eq=False)
class Target:
    """White-box knowledge of the attacked model: the global model every client starts from.

    Subclasses add what a family of attacks needs (an input space for inversion, the
    first adapted layer for text recovery); an attack states which it accepts. `loss`
    is the public training objective, loss(model_call, inputs, labels), which both the
    victim's simulated client and the attacker's unrolled copy use.
    """

    name: str
    model: nn.Module
    loss: LossFn = field(default=classification_loss)

    @property
    def layout(self) -> ParameterLayout:
        return ParameterLayout.of(self.model)

    def check(self, observed: ObservedUpdate) -> None:
        """Refuse a view flattened over another model's parameters (any order is fine)."""
        if not observed.layout.same_parameters(self.layout):
            raise AttackError(
                f"observed update's layout does not match target {self.name!r}'s trainable "
                f"parameters ({observed.layout.size} vs {self.layout.size} elements, or "
                f"different names/shapes)"
            )


@dataclass(eq=False)
class InversionTarget(Target):
    """A model whose continuous inputs gradient matching optimises (images, embeddings).

    input_shape: one example's shape. num_classes: when labels are classes (so DLG may
    optimise soft labels and the head gradient may leak them); None otherwise, e.g. the
    captioner, whose labels are caption tokens supplied as side information.
    head_weight / head_bias: layout names of the classification head, if it is trained.
    """

    input_shape: tuple[int, ...] = ()
    num_classes: int | None = None
    input_bounds: tuple[float, float] = (0.0, 1.0)
    head_weight: str | None = None
    head_bias: str | None = None

    def __post_init__(self) -> None:
        if not self.input_shape or any(d < 1 for d in self.input_shape):
            raise ConfigError(f"input_shape must be non-empty and positive, got {self.input_shape}")
        lo, hi = self.input_bounds
        if not lo < hi:
            raise ConfigError(f"input_bounds must satisfy low < high, got {self.input_bounds}")


@dataclass(eq=False)
class TokenTarget(Target):
    """A LoRA-adapted language model whose first adapted layer reads per-token inputs.

    Why these fields: text recovery (DAGER) only needs to know where the first adapted
    layer's LoRA factors sit in the flat update (`lora_a`, `lora_b`: layout names) and
    what that layer's input would be for every candidate token at every position
    (`candidates()`: inputs (N, d_in) and their (token, position) ids (N, 2)). For a
    GPT-2 block 0 that is ln_1(wte[token] + wpe[position]); the captioner's decoder plugs
    in its own function. eos_id: sequences end with it, and the last token of a causal
    LM sequence gets no gradient, so an attacker may infer it.
    """

    lora_a: str = ""
    lora_b: str = ""
    candidates: Callable[[], tuple[Tensor, Tensor]] | None = None
    max_length: int = 0
    eos_id: int | None = None
    pad_id: int | None = None

    def __post_init__(self) -> None:
        if not self.lora_a or not self.lora_b:
            raise ConfigError("TokenTarget needs the layout names of lora_a and lora_b")
        if self.candidates is None:
            raise ConfigError("TokenTarget needs a candidates() function")
        if self.max_length < 1:
            raise ConfigError(f"TokenTarget.max_length must be >= 1, got {self.max_length!r}")


# --- what the attacker returns ---------------------------------------------------------


@dataclass(eq=False)
class Reconstruction:
    """What an attack produced, before and after scoring.

    Exactly the fields the attack family produces are set: `inputs` (images in the
    target's input space), `labels` (class indices), `tokens` (one list of ids per
    recovered sequence) and `token_positions` ((token, position) pairs found).
    `metrics` is empty until scored against a truth; `seconds` is the attack's runtime.
    """

    attack: str
    inputs: Tensor | None = None
    labels: Tensor | None = None
    tokens: list[list[int]] | None = None
    token_positions: list[tuple[int, int]] | None = None
    scores: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Truth:
    """The ground truth a reconstruction is scored against (never shown to the attack)."""

    inputs: Tensor | None = None
    labels: Tensor | None = None
    tokens: list[list[int]] | None = None


C = TypeVar("C")


class Attack(ABC, Generic[C]):
    """An attack: a frozen config plus `reconstruct(observed, target)`.

    Subclasses set `name` (the registry key) and `config_type`, and may accept side
    information (e.g. labels recovered by another attack) through keyword arguments.
    """

    name: ClassVar[str]
    config_type: ClassVar[type]

    def __init__(self, config: C | None = None) -> None:
        self.config: C = self.config_type() if config is None else config
        if not isinstance(self.config, self.config_type):
            raise ConfigError(
                f"{type(self).__name__} takes a {self.config_type.__name__}, "
                f"got {type(self.config).__name__}"
            )

    @abstractmethod
    def reconstruct(self, observed: ObservedUpdate, target: Target, **side: Any) -> Reconstruction:
        """Reconstruct private data from `observed` using only `target`'s public knowledge."""
