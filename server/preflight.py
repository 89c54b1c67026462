"""What `fedveil server` checks before it binds a port or writes a file.

Why: the coordinator refuses a round the roster cannot run (a threshold above the
cohort, a ring width out of range, a CKKS key holder that is not enrolled) only once
the state folder and the journal exist, and a missing roster surfaced as a traceback.
Here the same objects are built offline, from the settings and the roster alone, so a
bad configuration is one ConfigError line (exit 2) and nothing was bound or written.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from secagg.ckks.config import CkksRoundConfig
from secagg.dp.config import ClientDPConfig, Mechanism, NoisePlacement
from secagg.errors import ConfigError, FedveilError
from secagg.protocol.config import RoundConfig
from secagg.protocol.dp import RoundDP
from secagg.protocol.graph import default_neighbours, default_threshold
from secagg.quantize import QuantizationConfig
from server.keys_store import load_roster, load_server_credentials
from server.settings import RoundSettings, ServerSettings


def check_startup(settings: ServerSettings) -> None:
    """ConfigError (one line, naming what to fix) for anything that would stop the server
    after it bound its port or created its state; reads files, writes none."""
    if settings.keys_dir is None:
        raise ConfigError(
            "--insecure still needs the federation's roster: give --keys-dir (the server's "
            "folder with roster.json); without TLS it is the only list of who may take part"
        )
    keys_dir = Path(settings.keys_dir)
    if not keys_dir.is_dir():
        raise ConfigError(
            f"keys_dir {keys_dir} is not a directory: give the server's folder (roster.json, "
            "server.pem, server.key, ca.pem)"
        )
    state_dir = Path(settings.state_dir)
    if state_dir.exists() and not state_dir.is_dir():
        raise ConfigError(f"state_dir {state_dir} exists and is not a directory")
    roster = load_roster(keys_dir)
    if not settings.insecure:
        load_server_credentials(keys_dir)
    ids = tuple(sorted(roster.identities()))
    try:
        check_round(settings.round, ids)
    except ConfigError:
        raise
    except FedveilError as exc:
        raise ConfigError(str(exc)) from exc


def check_round(settings: RoundSettings, ids: tuple[str, ...]) -> None:
    """Build round 1 as the coordinator would (without calibrating DP noise): the config
    objects refuse what the roster of `ids` cannot run."""
    n = len(ids)
    if n < settings.min_cohort:
        raise ConfigError(
            f"round.min_cohort {settings.min_cohort} is above the roster's {n} clients: "
            "enrol more clients or lower min_cohort"
        )
    if settings.mode == "plaintext":
        return  # the unprotected baseline: nothing more is built from the roster
    model_hash = settings.model_hash or hashlib.sha256(b"").digest()
    try:
        if settings.mode == "ckks":
            if settings.ckks_key_holder is not None and settings.ckks_key_holder not in ids:
                raise ConfigError(
                    f"round.ckks_key_holder {settings.ckks_key_holder!r} is not on the roster; "
                    f"pick one of {list(ids)} (default: the first)"
                )
            CkksRoundConfig(
                round_id=1,
                roster=ids,
                dimension=settings.dimension,
                preset_name=settings.ckks_preset,
                key_epoch=0,
                key_holder=settings.ckks_key_holder or ids[0],
                max_weight=settings.max_weight,
                value_bound=settings.clip,
                min_cohort=settings.min_cohort,
                model_hash=model_hash,
                key_fingerprint=b"",
            )
            return
        k = settings.neighbours if settings.neighbours is not None else default_neighbours(n)
        t = settings.threshold if settings.threshold is not None else default_threshold(n, k)
        round_dp = None
        if settings.dp != "none":
            dp_config = ClientDPConfig(
                clip_norm=settings.dp_clip_norm,
                # the coordinator calibrates a target epsilon; any z checks the rest
                noise_multiplier=settings.dp_noise_multiplier or 1.0,
                min_clients=settings.dp_min_clients or t,
                max_cohort=n,
                dim=settings.dimension,
                bits=settings.bits,
                mechanism=Mechanism(settings.dp_mechanism),
                placement=(
                    NoisePlacement.SERVER if settings.dp == "central" else NoisePlacement.CLIENTS
                ),
                rotate=settings.dp_rotate,
            )
            round_dp = RoundDP(
                dp_config,
                sampling_prob=settings.dp_sampling_prob,
                delta=settings.dp_delta,
                planned_rounds=settings.dp_planned_rounds,
                target_epsilon=settings.dp_target_epsilon or 0.0,
            )
            quantization = dp_config.quantization
        else:
            quantization = QuantizationConfig(
                clip=settings.clip, bits=settings.bits, max_cohort=n, max_weight=settings.max_weight
            )
        RoundConfig(
            round_id=1,
            roster=ids,
            threshold=t,
            neighbours=k,
            dimension=settings.dimension,
            quantization=quantization,
            model_hash=model_hash,
            dp=round_dp,
        )
    except ConfigError as exc:
        raise ConfigError(f"the round does not fit the roster of {n} clients: {exc}") from exc
