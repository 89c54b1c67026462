"""A peft adapter federated from the caller's own training loop, over the real service.

Three parties hold the same tiny GPT-2 with FFA-LoRA, each trains a couple of steps on its
own tokens, and a SecureRound sends each delta through a real gRPC server (mutual TLS,
SecAgg): every party must end with the same adapter, start + the weighted mean of the
deltas up to the quantisation bound the round reports, and the frozen weights untouched.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from fedveil.clients.transport import AggregationClient, AsyncAggregationClient
from fedveil.errors import ConfigError
from fedveil.learner.federation import (
    SecureRound,
    SecureRoundCallback,
    SecureRoundResult,
    infer_layout,
)
from fedveil.learner.lora import (
    AdapterMismatchError,
    AggregationVariant,
    LoraSettings,
    adapter_vector,
    apply_lora,
    base_model_hash,
    weighted_mean,
)
from tests.helpers.service_harness import client_for, make_keys, running_server, settings_for

VOCAB, SEQ = 48, 8
LORA = LoraSettings(rank=2, alpha=4, target_modules=("c_attn",), variant=AggregationVariant.FFA)
WEIGHTS = (8, 16, 24)


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_lora_model(lora: LoraSettings = LORA) -> torch.nn.Module:
    """The same tiny GPT-2 in every call (seeded), with LoRA seeded by `lora.seed`."""
    torch.manual_seed(0)
    base = GPT2LMHeadModel(
        GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=VOCAB, n_positions=16)
    )
    return apply_lora(base, lora)


def train_locally(model: torch.nn.Module, party: int, steps: int = 2) -> None:
    """A few Adam steps on this party's own random tokens."""
    generator = torch.Generator().manual_seed(100 + party)
    tokens = torch.randint(0, VOCAB, (WEIGHTS[party], SEQ), generator=generator)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=tokens, labels=tokens).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def frozen_state(model: torch.nn.Module, layout_names: set[str]) -> dict[str, torch.Tensor]:
    """Every parameter a round must not touch (all but the trainable adapter)."""
    from fedveil.learner.lora import canonical_name

    return {
        name: p.detach().clone()
        for name, p in model.named_parameters()
        if canonical_name(name) not in layout_names
    }


def test_three_parties_end_with_start_plus_the_weighted_mean_of_their_deltas(
    tmp_path: Path,
) -> None:
    models = [tiny_lora_model() for _ in range(3)]
    layout = infer_layout(models[0])
    assert layout.variant is AggregationVariant.FFA
    names = set(layout.names)
    assert all(".lora_B." in name for name in names), "FFA-LoRA sends B only"
    base_hash = base_model_hash(models[0])

    async def federate() -> tuple[list[SecureRound], list[np.ndarray], list[SecureRoundResult]]:
        keys, ids = make_keys(tmp_path, 3)
        settings = settings_for(
            tmp_path, keys, dimension=layout.size, model_hash=base_hash, rounds=1
        )
        async with running_server(settings) as server:
            clients = [client_for(keys, c, server.port, base_model_hash=base_hash) for c in ids]
            rounds = [SecureRound(m, c, layout) for m, c in zip(models, clients, strict=True)]
            for party, model in enumerate(models):
                train_locally(model, party)
            deltas = [r.delta() for r in rounds]
            try:
                results = await asyncio.gather(
                    *(r.run(w) for r, w in zip(rounds, WEIGHTS, strict=True))
                )
            finally:
                for client in clients:
                    await client.close()
        return rounds, deltas, list(results)

    start = adapter_vector(models[0], layout)
    frozen_before = [frozen_state(m, names) for m in models]
    rounds, deltas, results = asyncio.run(federate())

    assert all(np.any(d != 0) for d in deltas), "local training must move the adapter"
    expected = start.astype(np.float64) + weighted_mean(list(zip(deltas, WEIGHTS, strict=True)))
    finals = [adapter_vector(m, layout) for m in models]
    for final in finals[1:]:
        assert np.array_equal(final, finals[0]), "every party must hold the same aggregate"
    for result, secure_round in zip(results, rounds, strict=True):
        assert result.total_weight == sum(WEIGHTS)
        assert len(result.survivors) == 3
        bound = result.error_bound + 1e-6
        assert np.max(np.abs(finals[0] - expected)) <= bound
        assert np.array_equal(secure_round.start, finals[0]), "the next round starts here"
    for model, before in zip(models, frozen_before, strict=True):
        after = frozen_state(model, names)
        assert after.keys() == before.keys()
        assert all(torch.equal(after[n], before[n]) for n in before), "frozen weights changed"


def test_an_adapter_of_another_rank_is_refused_naming_both_sizes(tmp_path: Path) -> None:
    federation = infer_layout(tiny_lora_model())
    other = tiny_lora_model(LoraSettings(rank=4, alpha=8, target_modules=("c_attn",)))
    other_layout = infer_layout(other)
    assert other_layout.size != federation.size

    async def join() -> None:
        keys, ids = make_keys(tmp_path, 3)
        settings = settings_for(
            tmp_path, keys, dimension=federation.size, model_hash=federation.base_model_hash
        )
        async with running_server(settings) as server:
            client = client_for(
                keys, ids[0], server.port, base_model_hash=federation.base_model_hash
            )
            try:
                await SecureRound(other, client, other_layout).run(8, join_timeout_s=10)
            finally:
                await client.close()

    with pytest.raises(AdapterMismatchError) as caught:
        asyncio.run(join())
    message = str(caught.value)
    assert str(other_layout.size) in message and str(federation.size) in message
    assert "rank" in message


def test_a_client_for_another_base_model_is_refused_before_any_round(tmp_path: Path) -> None:
    model = tiny_lora_model()
    keys, ids = make_keys(tmp_path, 3)
    client = client_for(keys, ids[0], 1)  # the harness's own base hash, not this model's
    with pytest.raises(AdapterMismatchError, match="base_model_hash"):
        SecureRound(model, client)


def test_run_sync_needs_the_blocking_client_and_weights_must_be_positive(
    tmp_path: Path,
) -> None:
    model = tiny_lora_model()
    base_hash = base_model_hash(model)
    keys, ids = make_keys(tmp_path, 3)
    client = client_for(keys, ids[0], 1, base_model_hash=base_hash)
    assert isinstance(client, AsyncAggregationClient)
    secure_round = SecureRound(model, client)
    with pytest.raises(ConfigError, match="AggregationClient"):
        secure_round.run_sync(8)
    blocking = AggregationClient.from_options(client.options)
    try:
        for bad in (0, -3, 2.5, True):
            with pytest.raises(ConfigError, match="weight"):
                SecureRound(model, blocking).run_sync(bad)  # type: ignore[arg-type]
    finally:
        blocking.close()


class _Tokens(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    """A party's own random token rows, as a Trainer reads them."""

    def __init__(self, party: int, rows: int) -> None:
        generator = torch.Generator().manual_seed(200 + party)
        self.tokens = torch.randint(0, VOCAB, (rows, SEQ), generator=generator)

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.tokens[index], "labels": self.tokens[index]}


@pytest.mark.parametrize(
    ("schedule", "rows_per_epoch"),
    [({"every_steps": 1}, 8), ({"every_epoch": True}, 4)],
    ids=["every-step", "every-epoch"],
)
def test_trainer_callback_runs_rounds_in_three_concurrent_trainers(
    tmp_path: Path, schedule: dict[str, object], rows_per_epoch: int
) -> None:
    """Two optimiser steps per trainer, a round after each (one step per epoch in the
    every-epoch case): both rounds complete and every trainer ends on the aggregate."""
    from transformers import Trainer, TrainingArguments

    models = [tiny_lora_model() for _ in range(3)]
    layout = infer_layout(models[0])
    base_hash = base_model_hash(models[0])
    start = adapter_vector(models[0], layout)
    batch = 4

    # TrainingArguments resets accelerate's process-wide state when it is built: build the
    # three trainers one at a time, and start training only once all three exist.
    building = threading.Lock()
    built = threading.Barrier(3)

    def train_party(party: int, keys: Path, client_id: str, port: int) -> SecureRoundCallback:
        options = client_for(keys, client_id, port, base_model_hash=base_hash).options
        with AggregationClient.from_options(options) as client:
            callback = SecureRoundCallback(client, join_timeout_s=30, **schedule)  # type: ignore[arg-type]
            building.acquire()
            args = TrainingArguments(
                output_dir=str(tmp_path / f"party-{party}"),
                per_device_train_batch_size=batch,
                max_steps=2,
                learning_rate=1e-2,
                report_to=[],
                save_strategy="no",
                logging_strategy="no",
                use_cpu=True,
                disable_tqdm=True,
                seed=party,
            )
            trainer = Trainer(
                model=models[party],
                args=args,
                train_dataset=_Tokens(party, rows=rows_per_epoch),
                callbacks=[callback],
            )
            building.release()
            built.wait(timeout=60)
            trainer.train()
        return callback

    async def federate() -> list[SecureRoundCallback]:
        keys, ids = make_keys(tmp_path, 3)
        settings = settings_for(
            tmp_path, keys, dimension=layout.size, model_hash=base_hash, rounds=2
        )
        async with running_server(settings) as server:
            return list(
                await asyncio.gather(
                    *(
                        asyncio.to_thread(train_party, party, keys, cid, server.port)
                        for party, cid in enumerate(ids)
                    )
                )
            )

    callbacks = asyncio.run(federate())
    finals = [adapter_vector(m, layout) for m in models]
    assert not np.array_equal(finals[0], start), "the federation must move the adapter"
    for final in finals[1:]:
        assert np.array_equal(final, finals[0]), "every trainer must continue from the aggregate"
    for callback in callbacks:
        assert [r.round_id for r in callback.results] == [1, 2]
        assert all(r.total_weight == 3 * batch for r in callback.results)
        assert all(len(r.survivors) == 3 for r in callback.results)


def test_the_callback_needs_a_schedule_and_the_blocking_client(tmp_path: Path) -> None:

    keys, ids = make_keys(tmp_path, 3)
    client = client_for(keys, ids[0], 1)
    with pytest.raises(ConfigError, match="blocking"):
        SecureRoundCallback(client, every_steps=1)  # type: ignore[arg-type]
    with AggregationClient.from_options(client.options) as blocking:
        with pytest.raises(ConfigError, match="every_steps"):
            SecureRoundCallback(blocking)
        with pytest.raises(ConfigError, match="every_steps"):
            SecureRoundCallback(blocking, every_steps=0)
