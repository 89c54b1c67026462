"""`fedveil model-hash DIR`: the base-model hash every party and the server must agree on.

Why a command: each round's model hash is chained from the base model's hash
(secagg.protocol.model_chain), and the client and server both take it as `--model-hash`.
It must be computed from the weights a party really holds, by the same canonical form
the training code uses (learner.lora.hashing), not typed in or taken from the server.
"""

from __future__ import annotations

import argparse
import sys

from fedveil.commands import Command, SubParsers
from fedveil.errors import FedveilError


def add_parser(sub: SubParsers) -> None:
    p = sub.add_parser(
        "model-hash",
        help="print the SHA-256 base-model hash of a local model directory (for --model-hash)",
    )
    p.add_argument("model_dir", help="a local model directory saved with save_pretrained")


def run(args: argparse.Namespace) -> int:
    """Print the hex hash; a missing or unsupported directory exits 2 with one line."""
    from fedveil.learner.lora.hashing import base_model_hash
    from fedveil.learner.models.loading import load_model

    try:
        loaded = load_model(args.model_dir)
    except (FedveilError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(base_model_hash(loaded.model).hex())
    return 0


COMMAND = Command("model-hash", add_parser, run)
