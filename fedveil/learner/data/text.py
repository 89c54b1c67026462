"""JSONL text datasets for causal language models: one `{"text": ...}` object per line.

Why strict: a party's private corpus is read once and trained on; a malformed line must
stop the run with its line number, not be skipped silently (which would change the
party's FedAvg weight without anyone noticing).
"""

from __future__ import annotations

import json
from pathlib import Path

from fedveil.errors import ConfigError


def load_jsonl_texts(path: str | Path, field: str = "text") -> list[str]:
    """The `field` strings of a JSONL file, in file order; blank lines are allowed."""
    source = Path(path)
    if not source.is_file():
        raise ConfigError(f"text dataset {source} does not exist")
    texts: list[str] = []
    with source.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{source}:{number}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get(field), str):
                raise ConfigError(f'{source}:{number}: expected an object with a string "{field}"')
            texts.append(record[field])
    if not texts:
        raise ConfigError(f"text dataset {source} holds no records")
    return texts
