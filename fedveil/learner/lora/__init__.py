"""peft LoRA for federated fine-tuning: settings, adapters, flat updates, aggregation."""

from fedveil.learner.lora.adapter import apply_lora, canonical_name
from fedveil.learner.lora.aggregation import (
    Aggregator,
    WeightedUpdate,
    lora_pairs,
    low_rank_products,
    split_update,
    weighted_mean,
)
from fedveil.learner.lora.codec import (
    AdapterLayout,
    AdapterMismatchError,
    adapter_delta,
    adapter_layout,
    adapter_vector,
    apply_mean_delta,
    check_base,
    load_adapter_vector,
)
from fedveil.learner.lora.config import AggregationVariant, LoraSettings, default_target_modules
from fedveil.learner.lora.hashing import base_model_hash

__all__ = [
    "AdapterLayout",
    "AdapterMismatchError",
    "AggregationVariant",
    "Aggregator",
    "LoraSettings",
    "WeightedUpdate",
    "adapter_delta",
    "adapter_layout",
    "adapter_vector",
    "apply_lora",
    "apply_mean_delta",
    "base_model_hash",
    "canonical_name",
    "check_base",
    "default_target_modules",
    "load_adapter_vector",
    "low_rank_products",
    "lora_pairs",
    "split_update",
    "weighted_mean",
]
