"""The LoRA adapter flags `fedveil plan` and `fedveil attack` share: one spelling of
--rank, --alpha, --target-modules, --variant and --lora-seed.

Why `unset_defaults`: `fedveil plan` writes a plan, so its flags carry the defaults;
`fedveil attack` also takes the adapter from a file (--lora-config) and must tell "not
given" from "given as the default" to refuse both at once, so its flags default to None.
"""

from __future__ import annotations

import argparse

RANK, ALPHA, VARIANT, LORA_SEED = 8, 16.0, "ffa", 0
"""What a plan uses when the flags are not given."""


def module_names(value: str) -> tuple[str, ...]:
    """--target-modules a,b,c: at least one module name."""
    names = tuple(part.strip() for part in value.split(",") if part.strip())
    if not names:
        raise argparse.ArgumentTypeError("give at least one module name")
    return names


def add_lora_flags(p: argparse.ArgumentParser, *, unset_defaults: bool = False) -> None:
    """Register the adapter flags on `p` (defaults None with `unset_defaults`)."""

    def default(value: object) -> object:
        return None if unset_defaults else value

    p.add_argument("--rank", type=int, default=default(RANK), help=f"LoRA rank (default {RANK})")
    p.add_argument(
        "--alpha", type=float, default=default(ALPHA), help=f"LoRA alpha (default {ALPHA:g})"
    )
    p.add_argument(
        "--target-modules",
        type=module_names,
        default=None,
        help="comma-separated module names (default: the model's usual LoRA targets)",
    )
    p.add_argument(
        "--variant",
        default=default(VARIANT),
        help=f"ffa (B only travels) or fedavg (default {VARIANT})",
    )
    p.add_argument(
        "--lora-seed",
        type=int,
        default=default(LORA_SEED),
        help=f"shared seed of the frozen factors (default {LORA_SEED})",
    )
