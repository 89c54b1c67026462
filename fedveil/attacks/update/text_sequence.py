"""DAGER's second-layer sequence search: which of the recovered tokens form which sentence.

Why layer 0 is not enough for a batch: a layer-0 input is a normalised sum of a token
and a position embedding, a linear map of (token, position), so once the span holds
(t, p), (t', p) and (t, p') it holds (t', p') too. With one sentence no position has
two tokens and the span check returns it exactly; with several sentences sharing
positions every recovered token passes at every position some other recovered token
shares, and `text_recovery.assemble` can only guess the split.

Why layer 1 decides: the second adapted layer reads the hidden state after block 0,
which at position p depends on the whole prefix (tokens 0..p) through attention, not
linearly. Its LoRA A rows span the batch's layer-1 inputs exactly as layer 0's span
the embeddings (the gradient argument of text_recovery), so a prefix is a real prefix
when its layer-1 input at its last position lies in that span. The search (Petrov et
al. 2024, section 4 for decoders) grows prefixes position by position: every kept
prefix times every token the layer-0 check found at the next position, kept when the
layer-1 check passes; a prefix with no passing extension is a finished sentence. The
attacker runs the global model on each candidate prefix (white-box, as every server
can) and reads the layer-1 input with a hook on the adapted module.

Limits: exact for a gradient (or a one-step delta); a multi-step delta's layer-1 rows
mix the inputs under every local step's adapter, which drift from the global one the
attacker runs, so the tolerance must absorb that drift (`layer1_tolerance`). Layer 1
has its own rank bound: the batch must have fewer tokens than r there too. Where layer
0 finds nothing (an aggregate of many clients) there is nothing to search.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from fedveil.attacks.update.base import (
    Attack,
    AttackError,
    ObservedUpdate,
    Reconstruction,
    Target,
    TokenTarget,
)
from fedveil.attacks.update.text_recovery import (
    TextRecoveryConfig,
    candidate_inputs,
    observed_rows,
    span_distances,
)
from fedveil.errors import ConfigError


@dataclass(frozen=True)
class SequenceSearchConfig(TextRecoveryConfig):
    """layer1_a: the layout name of the second adapted layer's lora_A (None: the first's
    name with block "h.0." replaced by "h.1.", GPT-2's naming); layer1_tolerance: an
    extension is kept when its layer-1 input's relative residual to the layer-1 span is
    below it; layer1_rank_tolerance: the numerical rank of the layer-1 rows, finer than
    layer 0's (a position whose layer-1 output barely moves the loss, the last one of a
    sentence in particular, leaves a true direction orders of magnitude below the
    largest, still well above float32 round-off); max_beam: the search stops (and
    reports it) past this many live prefixes, the sign that layer 1 tells nothing apart."""

    layer1_a: str | None = None
    layer1_tolerance: float = 1e-2
    layer1_rank_tolerance: float = 1e-5
    max_beam: int = 4096

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("layer1_tolerance", "layer1_rank_tolerance"):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise ConfigError(f"SequenceSearchConfig.{name} must be in (0, 1), got {value!r}")
        beam = self.max_beam
        if isinstance(beam, bool) or not isinstance(beam, int) or beam < 1:
            raise ConfigError(f"SequenceSearchConfig.max_beam must be an int >= 1, got {beam!r}")


def span_basis(rows: Tensor, rank_tolerance: float) -> Tensor:
    """Orthonormal rows spanning `rows` at its numerical rank (empty when all zero)."""
    _, singular, basis = torch.linalg.svd(rows.to(torch.float64), full_matrices=False)
    if singular.numel() == 0 or float(singular[0]) == 0.0:
        return basis[:0]
    return basis[: int((singular > rank_tolerance * singular[0]).sum())]


def _layer1_names(target: TokenTarget, config: SequenceSearchConfig) -> tuple[str, str, str]:
    """(lora_a, lora_b, module path) of the second adapted layer."""
    lora_a = config.layer1_a or target.lora_a.replace(".h.0.", ".h.1.")
    if lora_a == target.lora_a or lora_a not in dict(target.model.named_parameters()):
        raise AttackError(
            f"no second adapted layer {lora_a!r} in target {target.name!r}; set layer1_a "
            "to the layout name of the lora_A that reads block 0's output"
        )
    module = lora_a.split(".lora_A")[0]
    return lora_a, lora_a.replace("lora_A", "lora_B"), module


class _Layer1Inputs:
    """What the second adapted layer reads at the last position of each prefix, under the
    global model (a forward pre-hook on its module)."""

    def __init__(self, target: TokenTarget, module: str) -> None:
        self.model = target.model
        self.module: nn.Module = target.model.get_submodule(module)

    def __call__(self, prefixes: Tensor) -> Tensor:
        seen: list[Tensor] = []

        def hook(_: nn.Module, args: tuple[Any, ...]) -> None:
            seen.append(args[0].detach())

        handle = self.module.register_forward_pre_hook(hook)
        try:
            with torch.no_grad():
                self.model(input_ids=prefixes, attention_mask=torch.ones_like(prefixes))
        finally:
            handle.remove()
        if len(seen) != 1:
            raise AttackError(f"the layer-1 module ran {len(seen)} times for one forward pass")
        return seen[0][:, -1, :].to(torch.float64)


class SequenceSearch(Attack[SequenceSearchConfig]):
    """Layer-0 span check for the tokens, then DAGER's layer-1 search for the sentences.
    Side information `bag` (token ids) filters the layer-0 candidates."""

    name = "dager_sequence"
    config_type = SequenceSearchConfig

    def reconstruct(self, observed: ObservedUpdate, target: Target, **side: Any) -> Reconstruction:
        if not isinstance(target, TokenTarget) or target.candidates is None:
            raise AttackError(f"the sequence search needs a TokenTarget, got {target.name!r}")
        lora_a1, lora_b1, module = _layer1_names(target, self.config)
        found = self._layer0(observed, target, side.get("bag"))
        layer1 = TokenTarget(
            name=f"{target.name}-layer1", model=target.model, loss=target.loss,
            lora_a=lora_a1, lora_b=lora_b1, candidates=target.candidates,
            max_length=target.max_length,
        )  # fmt: skip
        rows, projection, _ = observed_rows(observed, layer1, self.config.factor)
        basis = span_basis(rows, self.config.layer1_rank_tolerance)
        inputs = _Layer1Inputs(target, module)
        sequences, exploded = self._search(found, basis, projection, inputs)
        eos = target.eos_id if self.config.infer_eos else None
        if eos is not None:
            sequences = [s if s and s[-1] == eos else [*s, eos] for s in sequences]
        return Reconstruction(
            attack=self.name,
            tokens=sequences,
            token_positions=sorted((t, p) for p, ts in found.items() for t in ts),
            scores={
                "layer0_kept": float(sum(len(v) for v in found.values())),
                "layer1_rank": float(basis.shape[0]),
                "sequences": float(len(sequences)),
                "exploded": float(exploded),
            },
        )

    def _layer0(
        self, observed: ObservedUpdate, target: TokenTarget, bag: Collection[int] | None
    ) -> dict[int, list[int]]:
        """Per position, the tokens whose layer-0 input lies in the layer-0 span."""
        rows, projection, _ = observed_rows(observed, target, self.config.factor)
        inputs, ids = candidate_inputs(target, projection, bag)
        basis = span_basis(rows, self.config.rank_tolerance)
        found: dict[int, list[int]] = {}
        if 0 < basis.shape[0] < inputs.shape[1]:  # a full span tells nothing apart
            keep = span_distances(inputs, basis) < self.config.span_tolerance
            for token, position in ids[keep].tolist():
                found.setdefault(int(position), []).append(int(token))
        return found

    def _search(
        self,
        found: dict[int, list[int]],
        basis: Tensor,
        projection: Tensor | None,
        layer1: _Layer1Inputs,
    ) -> tuple[list[list[int]], bool]:
        """Grow prefixes position by position; (finished sentences, whether it stopped)."""
        if not found or not 0 < basis.shape[0] < basis.shape[1]:
            return [], False  # nothing found, or layer 1's span is empty or its whole space
        beam: list[list[int]] = [[]]
        finished: list[list[int]] = []
        for position in range(max(found) + 1):
            tokens = found.get(position, [])
            extensions = [[*prefix, t] for prefix in beam for t in tokens]
            kept: list[list[int]] = []
            if extensions:
                x = layer1(torch.tensor(extensions, dtype=torch.long))
                if projection is not None:
                    x = x @ projection.T
                passed = span_distances(x, basis) < self.config.layer1_tolerance
                kept = [e for e, ok in zip(extensions, passed.tolist(), strict=True) if ok]
            extended = {tuple(e[:-1]) for e in kept}
            finished += [p for p in beam if p and tuple(p) not in extended]
            if len(kept) > self.config.max_beam:
                return finished, True
            beam = kept
            if not beam:
                break
        return finished + [p for p in beam if p], False


__all__ = ["SequenceSearch", "SequenceSearchConfig", "span_basis"]
