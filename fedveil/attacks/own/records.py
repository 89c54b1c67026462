"""The records a team suspects leak, and the data-free reference records beside them.

Format of `--records` (JSONL, one object per line, blank lines allowed): `{"text": ...}`
for a causal LM or `{"caption": ...}` for a captioner, optionally with the captioner's
`"prompt"` (its decoder reads bos, the prompt, then the caption) and the `"image"` of a
`fedveil train` captions file (ignored here: the attacks run on the delta, not on the
image), so that a team's training files can be passed as they are.

Why a baseline next to every score: a record of common words matches a little of any
recovered text; the same score for records the delta never saw says how much. They are
data-free: captions from the built-in captioner's public generator (learner.data) when
the model speaks its vocabulary, else token sequences drawn uniformly from the
tokenizer's vocabulary with the records' lengths. Not secret, so drawn from a fixed seed,
reproducible.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedveil.errors import ConfigError

KEYS = ("text", "caption", "prompt", "image")
BASELINE_SEED = 7_700_001
BASELINE_COUNT = 20


@dataclass(frozen=True)
class Record:
    """One record: its text and the content tokens the attacks are scored on."""

    text: str
    tokens: tuple[int, ...]
    source: str
    """`file:line` of a given record; "public generator" / "uniform tokens" for a reference."""


def read_records(path: Path, tokenizer: Any, *, key: str = "--records") -> list[Record]:
    """Every record of the JSONL in file order, tokenised; errors name `file:line` (and
    `key`, how the caller spells the option: a flag, or `[target] records` in audit.toml)."""
    if not path.is_file():
        raise ConfigError(f"{key} {path} does not exist")
    records: list[Record] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{where}: not valid JSON ({exc.msg})") from None
            records.append(_record(item, where, tokenizer))
    if not records:
        raise ConfigError(f"{key} {path} holds no records")
    return records


def _record(item: object, where: str, tokenizer: Any) -> Record:
    if not isinstance(item, dict):
        raise ConfigError(f'{where}: expected an object with "text" or "caption"')
    unknown = sorted(set(item) - set(KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(KEYS)})")
    texts = [k for k in ("text", "caption") if k in item]
    if len(texts) != 1 or not isinstance(item[texts[0]], str) or not item[texts[0]].strip():
        raise ConfigError(f'{where}: give exactly one non-empty "text" or "caption" string')
    prompt = item.get("prompt", "")
    if not isinstance(prompt, str):
        raise ConfigError(f'{where}: "prompt" must be a string')
    text = item[texts[0]]
    tokens = content_tokens(tokenizer, f"{prompt} {text}" if prompt else text)
    if not tokens:
        raise ConfigError(f"{where}: the text encodes to no tokens")
    return Record(text, tokens, where)


def content_tokens(tokenizer: Any, text: str) -> tuple[int, ...]:
    """The text's tokens without the tokenizer's specials (bos, eos), as trained on."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return tuple(int(i) for i in ids)


def baseline_records(
    tokenizer: Any, lengths: Sequence[int], *, count: int = BASELINE_COUNT
) -> list[Record]:
    """Records no delta was trained on: public-generator captions, else uniform tokens."""
    captions = _public_captions(tokenizer, count)
    if captions is not None:
        return captions
    rng = np.random.default_rng(BASELINE_SEED)
    specials = set(int(i) for i in tokenizer.all_special_ids)
    pool = np.array([i for i in range(len(tokenizer)) if i not in specials])
    sizes = list(lengths) or [8]
    out = []
    for i in range(count):
        tokens = tuple(int(t) for t in rng.choice(pool, size=sizes[i % len(sizes)]))
        out.append(Record(str(tokenizer.decode(list(tokens))), tokens, "uniform tokens"))
    return out


def _public_captions(tokenizer: Any, count: int) -> list[Record] | None:
    """Captions of learner.data's city generator, if the tokenizer spells all of them."""
    from fedveil.learner.data.concepts import DOMAINS
    from fedveil.learner.data.datasets import CityDataConfig, make_party_dataset

    unk = tokenizer.unk_token_id
    out = []
    for i in range(count):
        config = CityDataConfig(seed=BASELINE_SEED + i, image_size=16, samples_per_party=1)
        example = make_party_dataset(config, DOMAINS[i % len(DOMAINS)]).examples[0]
        tokens = content_tokens(tokenizer, example.caption)
        if not tokens or (unk is not None and int(unk) in tokens):
            return None
        out.append(Record(example.caption, tokens, "public generator"))
    return out
