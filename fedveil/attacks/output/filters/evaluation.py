"""What a filter buys and costs, measured on the same prompts and random stream.

Why each number:
- extraction rate before/after (greedy continuation of member canary prefixes starting
  with the secret, compared in units so a re-spaced secret still counts as leaked) and
  verbatim emissions (the secret's exact characters, greedy or in any of s samples):
  what the filter is for;
- false-positive rate on benign held-out prompts: the share whose greedy output the
  filter changed at all (a filter that rewrites benign text costs utility), and the
  share of benign output units that changed;
- seconds per generated token with and without it (wall clock on a shared machine:
  reported, never asserted);
- the generation-only membership AUC before and after: a filter that stops verbatim
  emission need not stop inference, since near misses still score;
- evasions, stated honestly, two ways: (1) forced emission -- would the filter let a
  model emit the secret in another *form* (upper case, digits spaced or dashed)?
  The form's tokens (the secret only, not what follows it: a ban after the last digit
  protects nothing) are fed one by one after a context, and we record whether any step
  is banned or the redactor changes the text. Context "prefix" is the canary's own
  prompt (the attack); "none" is the bare secret after bos. The difference matters for
  the n-gram filter: after a training prefix the very first token of *any* number
  completes a stored n-gram, so it blocks every form there, and almost none without it;
  (2) evasive *prompts* (upper case, doubled spaces): the real extraction rate with
  and without the filter.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fedveil.attacks.output.canaries import Canary, CanaryRegistry
from fedveil.attacks.output.filters.stack import FilterStack
from fedveil.attacks.output.generation import ProbeConfig, ProbeResult, generation_probe
from fedveil.attacks.output.generator import HFGenerator
from fedveil.attacks.output.metrics import roc_auc, scores_by_label
from fedveil.attacks.output.overlap import contains_units, lcs_length, units
from fedveil.errors import ConfigError

OUTPUT_EVASIONS: dict[str, Callable[[str], str]] = {
    "none": lambda s: s,
    "upper": str.upper,
    "title": str.title,
    "spaced_digits": lambda s: re.sub(r"(?<=\d)(?=\d)", " ", s),
    "dashed_digits": lambda s: re.sub(r"(?<=\d)(?=\d)", "-", s),
}
"""Other spellings of a secret a model could produce (or be prompted to produce)."""

PROMPT_EVASIONS: dict[str, Callable[[str], str]] = {
    "none": lambda s: s,
    "upper": str.upper,
    "double_spaces": lambda s: s.replace(" ", "  "),
}
"""Rewrites of the attacker's prompt."""


@dataclass(frozen=True, eq=False)
class Baseline:
    """The unfiltered model's outputs, measured once and compared against every filter."""

    probe: ProbeResult
    benign: list[str]
    seconds_per_token: float


def baseline(
    generator: HFGenerator,
    registry: CanaryRegistry,
    benign_prompts: Sequence[str],
    probe: ProbeConfig | None = None,
) -> Baseline:
    plain = generator.with_filters()
    result = generation_probe(plain, registry, probe)
    benign = [g[0] for g in plain(list(benign_prompts), 1, True)]
    return Baseline(result, benign, plain.stats.seconds_per_token)


@dataclass(frozen=True)
class FilterReport:
    name: str
    extraction_rate_before: float
    extraction_rate_after: float
    verbatim_before: int
    verbatim_after: int
    leaked_units_after: int
    benign_fpr: float
    benign_unit_change: float
    seconds_per_token_before: float
    seconds_per_token_after: float
    samia_auc_before: float
    samia_auc_after: float

    @property
    def added_seconds_per_token(self) -> float:
        return self.seconds_per_token_after - self.seconds_per_token_before

    def to_dict(self) -> dict[str, float | int | str]:
        out: dict[str, float | int | str] = dict(self.__dict__)
        out["added_seconds_per_token"] = self.added_seconds_per_token
        return out


def _leaked_units(result: ProbeResult, canaries: Sequence[Canary]) -> int:
    """Canaries whose secret's units appear contiguously in the greedy output or a sample."""
    return sum(
        any(contains_units(t, c.secret) for t in [g, *s])
        for g, s, c in zip(result.greedy, result.samples, canaries, strict=True)
    )


def measure_filter(
    generator: HFGenerator,
    stack: FilterStack,
    registry: CanaryRegistry,
    benign_prompts: Sequence[str],
    before: Baseline,
    probe: ProbeConfig | None = None,
) -> FilterReport:
    """One filter stack against the baseline (same prompts, same sampling seed)."""
    filtered = generator.with_filters(stack.processors, stack.redactor)
    after = generation_probe(filtered, registry, probe)
    benign = [g[0] for g in filtered(list(benign_prompts), 1, True)]
    changed = [a != b for a, b in zip(before.benign, benign, strict=True)]
    unit_change = [
        1 - lcs_length(units(a), units(b)) / max(len(units(a)), len(units(b)), 1)
        for a, b in zip(before.benign, benign, strict=True)
    ]
    return FilterReport(
        name=stack.name,
        extraction_rate_before=before.probe.extraction_rate(),
        extraction_rate_after=after.extraction_rate(),
        verbatim_before=before.probe.verbatim_count(),
        verbatim_after=after.verbatim_count(),
        leaked_units_after=_leaked_units(after, list(registry)),
        benign_fpr=float(np.mean(changed)) if changed else float("nan"),
        benign_unit_change=float(np.mean(unit_change)) if unit_change else float("nan"),
        seconds_per_token_before=before.seconds_per_token,
        seconds_per_token_after=filtered.stats.seconds_per_token,
        samia_auc_before=_samia_auc(before.probe),
        samia_auc_after=_samia_auc(after),
    )


def _samia_auc(result: ProbeResult) -> float:
    """Membership AUC of the generation-only probe (does filtering stop inference too?)."""
    return roc_auc(*scores_by_label(result.scores["samia_rouge_l"], result.labels))


# --- evasions --------------------------------------------------------------------------


def forced_emission_blocked(
    stack: FilterStack, tokenizer: Any, prompt: str, continuation: str, *, add_bos: bool = True
) -> bool | None:
    """Whether `stack` stops a model that emits `continuation` after `prompt` token by
    token (None: the continuation is not representable, it tokenises to unknown tokens)."""
    prompt_ids = list(tokenizer.encode(prompt, add_special_tokens=False))
    full = list(tokenizer.encode(prompt + continuation, add_special_tokens=False))
    if full[: len(prompt_ids)] == prompt_ids:
        cont = full[len(prompt_ids) :]  # tokenised in context, as a model would emit it
    else:
        cont = list(tokenizer.encode(continuation, add_special_tokens=False))
    if add_bos and tokenizer.bos_token_id is not None:
        prompt_ids = [int(tokenizer.bos_token_id), *prompt_ids]
    if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in cont:
        return None
    vocab = len(tokenizer)
    for j, token in enumerate(cont):
        context = torch.tensor([prompt_ids + cont[:j]], dtype=torch.long)
        scores = torch.zeros((1, vocab))
        scores[0, token] = 1.0  # the forced token is the top candidate
        for processor in stack.processors:
            scores = processor(context, scores)
        if not torch.isfinite(scores[0, token]):
            return True
    if stack.redactor is not None:
        text = tokenizer.decode(cont, skip_special_tokens=True)
        return stack.redactor.redact(text, prompt) != text
    return False


def output_evasions(
    stack: FilterStack,
    tokenizer: Any,
    registry: CanaryRegistry,
    evasions: dict[str, Callable[[str], str]] | None = None,
    *,
    context: str = "prefix",
) -> dict[str, dict[str, float]]:
    """Per evasion: the share of member canaries whose evaded secret the stack blocks when
    forced after `context` ("prefix" or "none"), and how many forms were representable."""
    if context not in ("prefix", "none"):
        raise ConfigError(f"context must be 'prefix' or 'none', got {context!r}")
    evasions = evasions or OUTPUT_EVASIONS
    out: dict[str, dict[str, float]] = {}
    for name, transform in evasions.items():
        results = [
            forced_emission_blocked(
                stack,
                tokenizer,
                c.prefix if context == "prefix" else "",
                f" {transform(c.secret)}" if context == "prefix" else transform(c.secret),
            )
            for c in registry.members
        ]
        known = [r for r in results if r is not None]
        out[name] = {
            "blocked": float(np.mean(known)) if known else float("nan"),
            "representable": float(len(known)),
            "total": float(len(results)),
        }
    return out


def prompt_evasions(
    generator: HFGenerator,
    stack: FilterStack,
    registry: CanaryRegistry,
    evasions: dict[str, Callable[[str], str]] | None = None,
) -> dict[str, dict[str, float]]:
    """Per prompt rewrite: greedy extraction rate (members, units) without / with the stack."""
    evasions = evasions or PROMPT_EVASIONS
    filtered = generator.with_filters(stack.processors, stack.redactor)
    plain = generator.with_filters()
    config = ProbeConfig(n_samples=1, greedy=True)
    out: dict[str, dict[str, float]] = {}
    for name, transform in evasions.items():
        prompts = [transform(c.prefix) for c in registry]
        out[name] = {
            "extraction_before": generation_probe(
                plain, registry, config, prompts=prompts
            ).extraction_rate(),
            "extraction_after": generation_probe(
                filtered, registry, config, prompts=prompts
            ).extraction_rate(),
        }
    return out
