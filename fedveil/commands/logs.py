"""`--log-level` and `--log-format text|json`: one implementation for every long-running
command (server, client, demo, audit).

json writes one JSON object per record (time, level, logger, message, and the traceback
if any) on one line, so a log shipper needs no multi-line parsing.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import UTC, datetime
from typing import TextIO

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _level(text: str) -> str:
    value = text.strip().upper()
    if value not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f"unknown log level {text!r}; choose one of: {', '.join(LOG_LEVELS)}"
        )
    return value


def add_logging_flags(parser: argparse.ArgumentParser, default_level: str | None) -> None:
    """Add `--log-level` and `--log-format`. `default_level` None leaves the level to the
    command's settings (the client's [client] log_level)."""
    parser.add_argument(
        "--log-level",
        type=_level,
        default=default_level,
        help=f"{', '.join(LOG_LEVELS)} (default {default_level or 'INFO'})",
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=None,
        help="text (default) or json: one JSON object per line",
    )


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(
    level: str | None, log_format: str | None, stream: TextIO | None = None
) -> None:
    """Configure the root logger once, as logging.basicConfig does (a no-op when the
    process already configured it, e.g. under pytest)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    if (log_format or "text") == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=(level or "INFO").upper(), handlers=[handler])
