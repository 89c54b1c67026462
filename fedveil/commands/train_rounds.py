"""The round loop of `fedveil train`: train, check, send, apply, checkpoint; then save.

Why the adapter is loaded into the model before each round: the party trains from the
round-start (global) adapter, and SecureRound takes the delta against that same snapshot,
so the update is what the in-process federation would send. After the aggregate is
applied, every party holds the identical global adapter, and the checkpoint keeps it with
the client's model chain, so a re-run derives the next round's model hash and resumes.
With an [eval] table, that global adapter is scored on the party's held-out data after
each round (learner.federation.heldout): one log line, the checkpoint's metadata, and one
line of OUT/metrics.jsonl.

One log line per stage (`org-00 round 1/2: trained ...`); a progress bar while training
only when stderr is a terminal.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from fedveil.clients.transport import AggregationClient
from fedveil.commands.party_client import build_client, load_credentials
from fedveil.commands.party_settings import PartySettings
from fedveil.commands.train_party import (
    build_heldout,
    build_party,
    load_heldout_texts,
    settings_fingerprint,
)
from fedveil.errors import ConfigError
from fedveil.learner.federation.checkpoint import (
    CHECKPOINT_FILE,
    PartyCheckpoint,
    read_checkpoint,
    write_checkpoint,
)
from fedveil.learner.federation.heldout import METRICS_FILE, HeldOut, append_metrics
from fedveil.learner.federation.secure_round import SecureRound
from fedveil.learner.lora.codec import load_adapter_vector
from fedveil.learner.training.party import Party
from fedveil.secagg.protocol.model_chain import ModelChain

logger = logging.getLogger("fedveil.train")

ADAPTER_DIR = "adapter"


@dataclass(eq=False)
class PartyRun:
    """One prepared party: model, client and the round it resumes after."""

    settings: PartySettings
    party: Party
    client: AggregationClient
    secure_round: SecureRound
    fingerprint: dict[str, object]
    rounds_done: int
    heldout: HeldOut | None = None

    @property
    def checkpoint_path(self) -> Path:
        return self.settings.party.out / CHECKPOINT_FILE

    @property
    def metrics_path(self) -> Path:
        return self.settings.party.out / METRICS_FILE

    def close(self) -> None:
        self.client.close()


def _check_same_settings(path: Path, stored: dict[str, object], now: dict[str, object]) -> None:
    differ = sorted(key for key in now.keys() | stored.keys() if stored.get(key) != now.get(key))
    if differ:
        raise ConfigError(
            f"the checkpoint {path} was written with other settings ({', '.join(differ)} "
            "differ); resume with the settings it was started with, or use another party.out"
        )


def prepare(settings: PartySettings) -> PartyRun:
    """Everything before the first round: credentials, model + LoRA, data, the checkpoint
    (if any, for these settings), the client. ConfigError names anything to fix."""
    credentials = load_credentials(settings.party)
    heldout_texts = load_heldout_texts(settings)  # a malformed line: before the model
    party = build_party(credentials.client_id, settings)
    heldout = build_heldout(settings, party, heldout_texts)
    fingerprint = settings_fingerprint(settings, party, credentials.client_id)
    path = settings.party.out / CHECKPOINT_FILE
    checkpoint = read_checkpoint(path, party.layout)
    chain, rounds_done = ModelChain(party.base_hash), 0
    if checkpoint is not None:
        _check_same_settings(path, checkpoint.fingerprint, fingerprint)
        party.global_vector = checkpoint.adapter.copy()
        load_adapter_vector(party.model, party.layout, party.global_vector)
        chain, rounds_done = checkpoint.chain, checkpoint.rounds_done
        logger.info(
            "%s: resuming from %s after round %d (service round %s)",
            credentials.client_id,
            path,
            rounds_done,
            chain.round_id,
        )
    client = build_client(settings.party, credentials, chain)
    try:
        secure_round = SecureRound(party.model, client, party.layout)
    except BaseException:
        client.close()
        raise
    logger.info(
        "%s: %s from %s, %d examples, adapter of %d values (%s), base model %s...",
        credentials.client_id,
        party.loaded.kind.value,
        party.loaded.path,
        party.weight,
        party.layout.size,
        party.layout.variant.value,
        party.base_hash.hex()[:16],
    )
    return PartyRun(settings, party, client, secure_round, fingerprint, rounds_done, heldout)


def _check_plan(run: PartyRun, tag: str) -> None:
    """The round the service announces must fit this adapter and this party's chain."""
    options = run.settings.party
    info = run.client.wait_for_round(timeout_s=options.join_timeout_s)
    spec = info.spec
    run.secure_round.check_spec(spec)
    run.client.model_chain.check(int(spec.round_id), bytes(spec.model_hash))
    logger.info(
        "%s: plan checked: service round %d, dimension %d, model hash %s... matches",
        tag,
        spec.round_id,
        spec.dimension,
        bytes(spec.model_hash).hex()[:16],
    )


def run_round(run: PartyRun, number: int) -> None:
    """One round: train from the global adapter, check, send, apply, checkpoint."""
    party, secure_round, total = run.party, run.secure_round, run.settings.party.rounds
    tag = f"{run.client.client_id} round {number}/{total}"
    load_adapter_vector(party.model, party.layout, party.global_vector)
    secure_round.begin()
    logger.info("%s: training on %d examples", tag, party.weight)
    stats = party.train_round(number).stats
    logger.info(
        "%s: trained %d steps, mean loss %.4f (%.1fs)",
        tag,
        stats.steps,
        stats.mean_loss,
        stats.seconds,
    )
    _check_plan(run, tag)
    logger.info("%s: sending the adapter delta (weight %d)", tag, party.weight)
    result = secure_round.run_sync(party.weight, join_timeout_s=run.settings.party.join_timeout_s)
    party.global_vector = secure_round.start
    logger.info(
        "%s: aggregate applied: %d survivors, total weight %d, |mean delta| %.4g, error bound %.3g",
        tag,
        len(result.survivors),
        result.total_weight,
        result.delta_norm,
        result.error_bound,
    )
    metrics = _evaluate(run, number, tag)
    checkpoint = PartyCheckpoint(
        number, party.global_vector, run.client.model_chain, run.fingerprint, metrics
    )
    write_checkpoint(run.checkpoint_path, party.layout, checkpoint)
    logger.info("%s: checkpoint written to %s", tag, run.checkpoint_path)
    if metrics is not None:
        append_metrics(run.metrics_path, metrics)


def _evaluate(run: PartyRun, number: int, tag: str) -> dict[str, object] | None:
    """The global adapter on this party's held-out data ([eval]), as one metrics record."""
    if run.heldout is None:
        return None
    result = run.heldout.evaluate(run.party)
    logger.info("%s: %s", tag, result.summary())
    return {
        "round": number,
        "service_round": run.client.model_chain.round_id,
        "client_id": run.client.client_id,
        **result.as_dict(),
    }


def run_rounds(run: PartyRun) -> Path:
    """The rounds not yet done, then the adapter in peft's format; returns its folder."""
    total = run.settings.party.rounds
    if run.rounds_done >= total:
        logger.info(
            "%s: the checkpoint already holds %d of %d rounds",
            run.client.client_id,
            run.rounds_done,
            total,
        )
    for number in range(run.rounds_done + 1, total + 1):
        run_round(run, number)
        run.rounds_done = number
    target = run.party.save_adapter(run.settings.party.out / ADAPTER_DIR)
    logger.info(
        "%s: adapter after %d rounds saved to %s (PeftModel.from_pretrained(base, %s))",
        run.client.client_id,
        run.rounds_done,
        target,
        target,
    )
    return target
