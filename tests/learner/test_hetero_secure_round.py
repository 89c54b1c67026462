"""Heterogeneous ranks through SecureRound over the real service (mutual TLS, SecAgg+).

Three parties hold one tiny GPT-2 with FFA-LoRA at ranks 1, 2 and 2 (the federation's
maximum 2). Each sends its extended delta; every party must end holding the same rank-max
global adapter, the round start plus the per-group weighted mean (column 1 of each B is
the mean over the two rank-2 parties only) within the bound the decode derives from the
round's error bound, and its own model must be that adapter cut to its rank. The plan
binds the heterogeneous layout: its digest and fingerprint differ from the uniform plan.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from fedveil.errors import ConfigError
from fedveil.learner.federation import SecureRound
from fedveil.learner.federation.plan_local import local_hetero_plan, local_plan
from fedveil.learner.lora import (
    AdapterMismatchError,
    AggregationVariant,
    LoraSettings,
    adapter_vector,
    apply_lora,
)
from fedveil.learner.lora.codec import adapter_layout
from fedveil.learner.lora.hashing import base_model_hash
from fedveil.learner.lora.hetero_layout import hetero_weighted_mean
from fedveil.learner.lora.hetero_party import (
    align_to_reference,
    party_settings,
    reference_adapter,
)
from fedveil.proto.convert_plan import plan_to_pb
from fedveil.secagg.protocol.plan import plan_mismatches
from tests.helpers.service_harness import client_for, make_keys, running_server, settings_for

VOCAB, SEQ = 48, 8
FEDERATION = LoraSettings(rank=2, alpha=4, target_modules=("c_attn",))
RANKS = (1, 2, 2)
WEIGHTS = (8, 16, 24)


def base() -> torch.nn.Module:
    torch.manual_seed(0)
    return GPT2LMHeadModel(
        GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=VOCAB, n_positions=16)
    )


def party_model(rank: int, reference: torch.nn.Module) -> torch.nn.Module:
    model = apply_lora(base(), party_settings(FEDERATION, rank))
    align_to_reference(model, reference)
    return model


def train_locally(model: torch.nn.Module, party: int) -> None:
    generator = torch.Generator().manual_seed(100 + party)
    tokens = torch.randint(0, VOCAB, (WEIGHTS[party], SEQ), generator=generator)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        model(input_ids=tokens, labels=tokens).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def test_three_ranks_end_with_the_per_group_mean_over_the_service(tmp_path: Path) -> None:
    base_hash = base_model_hash(base())
    reference, hetero = reference_adapter(base(), FEDERATION, base_hash)
    models = [party_model(r, reference) for r in RANKS]
    layouts = [adapter_layout(m, base_hash, FEDERATION.variant) for m in models]
    assert [lay.size for lay in layouts] == [
        hetero.full.size // 2,
        hetero.full.size,
        hetero.full.size,
    ]
    plan = local_hetero_plan(models[0], hetero, FEDERATION, name="f", base_model="t", rounds=1)
    assert plan.dimension == hetero.size and plan.lora.heterogeneous

    async def federate() -> tuple[list[SecureRound], list[np.ndarray], list[float]]:
        keys, ids = make_keys(tmp_path, 3)
        settings = settings_for(
            tmp_path, keys, dimension=hetero.size, model_hash=plan.digest(), rounds=1
        )
        async with running_server(settings) as server:
            clients = [client_for(keys, c, server.port, base_model_hash=plan.digest()) for c in ids]
            rounds = [
                SecureRound(m, c, lay, plan, hetero=hetero)
                for m, c, lay in zip(models, clients, layouts, strict=True)
            ]
            for party, model in enumerate(models):
                train_locally(model, party)
            deltas = [
                adapter_vector(m, lay) - r.start
                for m, lay, r in zip(models, layouts, rounds, strict=True)
            ]
            try:
                results = await asyncio.gather(
                    *(r.run(w) for r, w in zip(rounds, WEIGHTS, strict=True))
                )
            finally:
                for client in clients:
                    await client.close()
        return rounds, deltas, [res.error_bound for res in results]

    rounds, deltas, bounds = asyncio.run(federate())
    exact = hetero_weighted_mean(hetero, list(zip(layouts, deltas, WEIGHTS, strict=True)))
    finals = [r.global_vector for r in rounds]
    for final in finals[1:]:
        assert np.array_equal(final, finals[0]), "every party holds the same rank-max adapter"
    assert max(bounds) > 0
    tolerance = 4 * max(bounds) * 3 + 1e-6  # the decode's 1/share growth, float32 storage
    assert np.max(np.abs(finals[0] - exact)) <= tolerance
    naive = sum(w * hetero.pad(lay, d) for lay, d, w in zip(layouts, deltas, WEIGHTS, strict=True))
    assert np.max(np.abs(naive / sum(WEIGHTS) - exact)) > 10 * tolerance
    for model, layout in zip(models, layouts, strict=True):
        assert np.array_equal(adapter_vector(model, layout), hetero.truncate(layout, finals[0]))


def test_the_plan_binds_the_heterogeneous_layout() -> None:
    base_hash = base_model_hash(base())
    reference, hetero = reference_adapter(base(), FEDERATION, base_hash)
    uniform = local_plan(reference, hetero.full, FEDERATION, name="f", base_model="t", rounds=1)
    mixed = local_hetero_plan(reference, hetero, FEDERATION, name="f", base_model="t", rounds=1)
    assert mixed.digest() != uniform.digest()
    differ = plan_mismatches(uniform, mixed)
    assert any(d.startswith("lora.heterogeneous") for d in differ)
    assert any(d.startswith("layout_sha256") for d in differ)
    with pytest.raises(ConfigError, match="maximum"):
        local_hetero_plan(
            reference, hetero, party_settings(FEDERATION, 1), name="f", base_model="t", rounds=1
        )
    # until aggregation.proto carries LoraPlan.heterogeneous, serving one fails closed
    from fedveil.proto import aggregation_pb2 as pb

    if "heterogeneous" not in pb.LoraPlan.DESCRIPTOR.fields_by_name:
        with pytest.raises(ConfigError, match="heterogeneous"):
            plan_to_pb(mixed)
    else:
        assert plan_to_pb(mixed).lora.heterogeneous


def test_a_party_not_aligned_to_the_reference_or_a_uniform_plan_is_refused(tmp_path: Path) -> None:
    base_hash = base_model_hash(base())
    # FedAvg: A travels, so a party whose A is not the reference's first rows is caught
    # (under FFA the frozen A never travels; align_to_reference is what makes it right)
    fedavg = dataclasses.replace(FEDERATION, variant=AggregationVariant.FEDAVG)
    fedavg_reference, fedavg_hetero = reference_adapter(base(), fedavg, base_hash)
    unaligned = apply_lora(base(), party_settings(fedavg, 1))
    with torch.no_grad():  # an A that is not the reference's first row
        for name, param in unaligned.named_parameters():
            if ".lora_A." in name:
                param.add_(0.1)
    keys, ids = make_keys(tmp_path, 3)
    client = client_for(keys, ids[0], 1, base_model_hash=base_hash)
    start = adapter_vector(fedavg_reference, fedavg_hetero.full)
    with pytest.raises(AdapterMismatchError, match="align"):
        SecureRound(unaligned, client, hetero=fedavg_hetero, hetero_start=start)
    align_to_reference(unaligned, fedavg_reference)
    SecureRound(unaligned, client, hetero=fedavg_hetero, hetero_start=start)
    reference, hetero = reference_adapter(base(), FEDERATION, base_hash)
    aligned = party_model(1, reference)
    uniform = local_plan(reference, hetero.full, FEDERATION, name="f", base_model="t", rounds=1)
    client = client_for(keys, ids[0], 1, base_model_hash=uniform.digest())
    with pytest.raises(AdapterMismatchError, match="heterogeneous"):
        SecureRound(aligned, client, plan=uniform, hetero=hetero)
