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

from fedveil.clients.errors import TransportError
from fedveil.clients.transport import AggregationClient
from fedveil.commands.party_client import build_client, fetch_served_plan, load_credentials
from fedveil.commands.party_settings import PartySettings
from fedveil.commands.train_party import (
    build_heldout,
    build_party,
    load_heldout_texts,
    lora_settings,
    settings_fingerprint,
    stored_lora,
)
from fedveil.errors import ConfigError
from fedveil.learner.federation.checkpoint import (
    CHECKPOINT_FILE,
    PartyCheckpoint,
    read_checkpoint,
    read_fingerprint,
    write_checkpoint,
)
from fedveil.learner.federation.heldout import METRICS_FILE, HeldOut, append_metrics
from fedveil.learner.federation.plan_local import local_plan
from fedveil.learner.federation.rejoin import catch_up_adapter_sync
from fedveil.learner.federation.secure_round import SecureRound
from fedveil.learner.lora.codec import load_adapter_vector
from fedveil.learner.lora.config import LoraSettings
from fedveil.learner.training.party import Party
from fedveil.proto import aggregation_pb2 as pb
from fedveil.secagg.protocol.model_chain import ModelChain
from fedveil.secagg.protocol.plan import FederationPlan, plan_mismatches

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
    rounds: int
    """Rounds in all: party.rounds, else the served plan's."""
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
    """Everything before the first round: credentials, the served plan, model + LoRA,
    data, the checkpoint (if any, for these settings), the client. ConfigError names
    anything to fix, e.g. each field where this party's model or adapter is not the plan's.

    What can be refused locally is refused before the service is asked for its plan: a
    malformed data line, a checkpoint of other settings."""
    credentials = load_credentials(settings.party)
    heldout_texts = load_heldout_texts(settings)  # a malformed line: before the model
    path = settings.party.out / CHECKPOINT_FILE
    stored = read_fingerprint(path)
    served = None
    if settings.lora is not None:
        lora = lora_settings(settings)
    elif stored is not None:
        lora = stored_lora(stored)  # the adapter adopted when the run started
    else:
        served = fetch_served_plan(settings.party, credentials)
        lora = lora_settings(settings, served)
    party = build_party(credentials.client_id, settings, lora)
    if stored is not None:
        local = settings_fingerprint(settings, party, credentials.client_id, lora)
        _check_same_settings(path, {**stored, "plan": None}, local)
    if served is None:
        served = fetch_served_plan(settings.party, credentials)
    plan = None if served is None else _own_plan(party, lora, served)
    rounds = _rounds(settings, plan)
    heldout = build_heldout(settings, party, heldout_texts)
    fingerprint = settings_fingerprint(settings, party, credentials.client_id, lora, plan)
    path = settings.party.out / CHECKPOINT_FILE
    checkpoint = read_checkpoint(path, party.layout)
    root = party.base_hash if plan is None else plan.digest()
    chain, rounds_done = ModelChain(root), 0
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
        secure_round = SecureRound(party.model, client, party.layout, plan=plan)
    except BaseException:
        client.close()
        raise
    logger.info(
        "%s: %s from %s, %d examples, adapter of %d values (%s), base model %s...%s",
        credentials.client_id,
        party.loaded.kind.value,
        party.loaded.path,
        party.weight,
        party.layout.size,
        party.layout.variant.value,
        party.base_hash.hex()[:16],
        "" if plan is None else f", federation {plan.name!r} plan matches",
    )
    return PartyRun(
        settings, party, client, secure_round, fingerprint, rounds_done, rounds, heldout
    )


def _own_plan(party: Party, lora: LoraSettings, served: FederationPlan) -> FederationPlan:
    """The plan of what this party built; refused, field by field, unless it is the
    served one. Its digest roots the party's model chain (secagg.protocol.plan)."""
    mine = local_plan(
        party.model,
        party.layout,
        lora,
        name=served.name,
        base_model=served.base_model,
        rounds=served.rounds,
    )
    differ = plan_mismatches(served, mine)
    if differ:
        raise ConfigError(
            f"federation {served.name!r} needs another model or adapter than this party "
            f"holds: {'; '.join(differ)}. Use the plan's base model (base_model "
            f"{served.base_model!r}) and leave out [lora] to adopt its adapter"
        )
    return mine


def _rounds(settings: PartySettings, plan: FederationPlan | None) -> int:
    if settings.party.rounds is not None:
        return settings.party.rounds
    if plan is not None and plan.rounds > 0:
        return plan.rounds
    raise ConfigError(
        "party.rounds is required: the service serves no federation plan with a number "
        "of rounds"
    )


def _announced(run: PartyRun, tag: str) -> pb.RoundInfo | None:
    """The round open for joining, checked against this party's plan and adapter; None
    after catching up on rounds this party missed (their results are then applied,
    checkpointed and evaluated, and the caller starts over from the new global adapter)."""
    info = run.client.wait_for_round(timeout_s=run.settings.party.join_timeout_s)
    caught = catch_up_adapter_sync(run.secure_round, info)
    if caught:
        run.party.global_vector = run.secure_round.start
        run.rounds_done += len(caught)
        tag = f"{run.client.client_id} round {run.rounds_done}/{run.rounds}"
        logger.info(
            "%s: caught up on %d missed round(s) (service rounds %s): their results applied",
            tag,
            len(caught),
            ", ".join(str(r.round_id) for r in caught),
        )
        _save_round(run, run.rounds_done, tag)
        return None
    spec = info.spec
    run.client.model_chain.check(int(spec.round_id), bytes(spec.model_hash))
    logger.info(
        "%s: plan checked: service round %d, dimension %d, model hash %s... matches",
        tag,
        spec.round_id,
        spec.dimension,
        bytes(spec.model_hash).hex()[:16],
    )
    return info


def run_round(run: PartyRun, number: int) -> bool:
    """One round: train from the global adapter, check, send, apply, checkpoint.

    False when the party found it had missed rounds instead (it caught up on them, and
    the local training of this attempt is dropped: it started from a stale adapter)."""
    party, secure_round, total = run.party, run.secure_round, run.rounds
    tag = f"{run.client.client_id} round {number}/{total}"
    if _announced(run, tag) is None:
        return False
    load_adapter_vector(party.model, party.layout, party.global_vector)
    secure_round.begin()
    logger.info("%s: training on %d examples", tag, party.weight)
    stats = party.train_round(number - 1).stats  # 0-based, as the in-process federation
    logger.info(
        "%s: trained %d steps, mean loss %.4f (%.1fs)",
        tag,
        stats.steps,
        stats.mean_loss,
        stats.seconds,
    )
    if _announced(run, tag) is None:  # rounds ran without this party while it trained
        return False
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
    run.rounds_done = number
    _save_round(run, number, tag)
    return True


def _save_round(run: PartyRun, number: int, tag: str) -> None:
    """Evaluate (with [eval]) and checkpoint the global adapter after `number` rounds."""
    metrics = _evaluate(run, number, tag)
    checkpoint = PartyCheckpoint(
        number, run.party.global_vector, run.client.model_chain, run.fingerprint, metrics
    )
    write_checkpoint(run.checkpoint_path, run.party.layout, checkpoint)
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
    """The rounds not yet done, then the adapter in peft's format; returns its folder.

    A fresh start with [eval] first scores the starting adapter (round 0 of
    OUT/metrics.jsonl: the base model, since LoRA starts with B = 0)."""
    total = run.rounds
    if run.rounds_done >= total:
        logger.info(
            "%s: the checkpoint already holds %d of %d rounds",
            run.client.client_id,
            run.rounds_done,
            total,
        )
    elif run.rounds_done == 0 and run.heldout is not None:
        run.metrics_path.unlink(missing_ok=True)  # lines of a run that left no checkpoint
        metrics = _evaluate(run, 0, f"{run.client.client_id} round 0/{total}")
        assert metrics is not None
        append_metrics(run.metrics_path, metrics)
    failures = 0
    while run.rounds_done < total:
        number = run.rounds_done + 1
        try:
            run_round(run, number)
        except TransportError as exc:
            # The round failed (too few parties, a stage deadline, a lost connection): the
            # global adapter and the chain are unchanged, so the next round is tried afresh.
            failures += 1
            if failures > run.settings.party.max_failed_rounds:
                raise
            logger.warning(
                "%s round %d/%d: the round failed (%s); trying the next one (%d of %d "
                "failures allowed)",
                run.client.client_id,
                number,
                total,
                exc,
                failures,
                run.settings.party.max_failed_rounds,
            )
    target = run.party.save_adapter(run.settings.party.out / ADAPTER_DIR)
    logger.info(
        "%s: adapter after %d rounds saved to %s (PeftModel.from_pretrained(base, %s))",
        run.client.client_id,
        run.rounds_done,
        target,
        target,
    )
    return target
