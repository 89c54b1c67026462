"""`fedveil plan --model-dir DIR --out federation.toml`: the operator writes the federation plan.

Why from the base model itself: the plan binds the base model by the hash of its
weights, and the adapter by the layout peft builds on that model (tensor names, shapes,
the frozen factors of the shared seed), from which the dimension of every update
follows. Computing them here, with the same code every party runs on its own copy
(learner.federation.plan_local), means nobody types a dimension or a hash. The server
then reads the file without the training stack (`fedveil server --config federation.toml`).

Exit status: 0 when the file was written; 2 for bad arguments, a model directory that
cannot be loaded, LoRA settings the model does not fit, or an existing file without
--force.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedveil.commands import Command, SubParsers
from fedveil.commands.lora_flags import add_lora_flags
from fedveil.errors import ConfigError, FedveilError
from fedveil.secagg.modes import parse_mode
from fedveil.secagg.protocol.plan import VARIANTS


def add_parser(sub: SubParsers) -> argparse.ArgumentParser:
    """Register `plan`; dispatched by `run`."""
    p = sub.add_parser(
        "plan",
        help="operator: write federation.toml (base model hash, adapter, layout) from a model",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("--model-dir", type=Path, required=True, help="the base model (local folder)")
    p.add_argument("--out", type=Path, required=True, help="the federation.toml to write")
    p.add_argument("--name", default="federation", help="the federation's name")
    p.add_argument("--rounds", type=int, default=20, help="rounds (0: until stopped)")
    p.add_argument("--mode", default="secagg", help="secagg, ckks or plaintext")
    add_lora_flags(p)
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    return p


def run(args: argparse.Namespace) -> int:
    """Write the plan; the exit status is documented in the module docstring."""
    try:
        mode = parse_mode(args.mode, "--mode")
        if args.variant not in VARIANTS:
            raise ConfigError(
                f"--variant must be one of {', '.join(VARIANTS)}, got {args.variant!r}"
            )
        if args.rounds < 0:
            raise ConfigError(f"--rounds must be >= 0, got {args.rounds}")
        if args.out.exists() and not args.force:
            raise ConfigError(f"{args.out} exists; pass --force to replace it")
        from fedveil.commands.plan_model import plan_from_model  # torch: only here

        plan = plan_from_model(
            args.model_dir,
            name=args.name,
            rounds=args.rounds,
            rank=args.rank,
            alpha=args.alpha,
            target_modules=args.target_modules,
            variant=args.variant,
            seed=args.lora_seed,
        )
        from fedveil.commands.plan_file import render_plan

        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(render_plan(plan, mode), encoding="utf-8")
    except (FedveilError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {args.out}: federation {plan.name!r}, base model {plan.base_model} "
        f"({plan.base_model_hash.hex()[:16]}...), LoRA rank {plan.lora.rank} on "
        f"{len(plan.lora.target_modules)} module names ({plan.lora.variant}), "
        f"{plan.dimension} values per update, {plan.rounds} rounds, mode {mode.value}"
    )
    return 0


COMMAND = Command("plan", add_parser, run)
