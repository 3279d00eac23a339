"""Memory pre-flight: estimate peak accelerator memory for a tune config before loading weights.

The estimate uses the model's config.json only (no weights): parameter counts by layer shape, the
bytes each costs for the method (16-bit weights, 4-bit NF4 for QLoRA, fp32 master LoRA weights,
AdamW state, gradients), activations per token (with or without gradient checkpointing) and the
fp32 logits the loss is computed on, which dominate for large vocabularies.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from llmops_cli.model.config import ModelSection
from llmops_cli.tune.config import TuneSection

GIB = 1024**3
_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class MemoryEstimate:
    total_params: int
    trainable_params: int
    weights_gib: float
    trainable_gib: float
    optimizer_gib: float
    gradients_gib: float
    activations_gib: float
    logits_gib: float
    overhead_gib: float
    total_gib: float
    tokens_per_step: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def shapes(config: Any) -> dict[str, tuple[int, int]]:
    """(in, out) of each linear layer of one decoder block, Llama-style."""
    hidden = config.hidden_size
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    inter = config.intermediate_size
    return {
        "q_proj": (hidden, heads * head_dim), "k_proj": (hidden, kv * head_dim), "v_proj": (hidden, kv * head_dim),
        "o_proj": (heads * head_dim, hidden), "gate_proj": (hidden, inter), "up_proj": (hidden, inter),
        "down_proj": (inter, hidden),
    }


def estimate(config: Any, tune: TuneSection, dtype_bytes: int = 2) -> MemoryEstimate:
    """Peak memory of one training step for `tune` on a model with this transformers config."""
    layers = config.num_hidden_layers
    hidden, vocab = config.hidden_size, config.vocab_size
    linear = shapes(config)
    linear_params = layers * sum(i * o for i, o in linear.values())
    embed_params = vocab * hidden * (1 if getattr(config, "tie_word_embeddings", False) else 2)
    total = linear_params + embed_params + layers * 2 * hidden + hidden

    if tune.method == "qlora":
        # NF4: 0.5 byte/param + one fp32 absmax per 64 params (0.5 bit/param after double quantisation).
        scale_bits = 0.127 if tune.quant.double_quant else 0.5
        weights = linear_params * (0.5 + scale_bits / 8) + (total - linear_params) * 2
    else:
        weights = total * dtype_bytes

    targets = _LINEAR if tune.lora.target_modules == "all-linear" else [
        t for t in tune.lora.target_modules if t in linear]
    if tune.method == "full":
        trainable = total
        trainable_bytes = 0.0  # the weights themselves are trained
        grads = total * dtype_bytes
        opt_bytes = 8.0
    else:
        trainable = layers * sum(tune.lora.r * (linear[t][0] + linear[t][1]) for t in targets)
        if tune.lora.dora:
            trainable += layers * sum(linear[t][1] for t in targets)
        trainable_bytes = trainable * 4.0  # adapters train in fp32
        grads = trainable * 4.0
        opt_bytes = 2.0 if "8bit" in _optimizer(tune) else 8.0
    optimizer = trainable * opt_bytes

    tokens = tune.batch_size * tune.max_seq_length
    inter = config.intermediate_size
    # Saved tensors per token and layer (16-bit): inputs of the projections and norms, q/k/v and attention
    # output, and five intermediate-size MLP tensors (gate, up, act(gate), their product, the SiLU input);
    # SDPA/flash attention keeps no S x S matrix. Calibrated on the reference figures in
    # ../shared/gpu/README.md (1.04B Llama, LoRA r=16, 8 x 1024 tokens: 19.4 GiB, 6.2 GiB with checkpointing).
    per_layer_token = dtype_bytes * (10 * hidden + 5 * inter)
    if tune.gradient_checkpointing:
        activations = tokens * (layers * dtype_bytes * hidden + per_layer_token)
    else:
        activations = tokens * layers * per_layer_token
    logits = tokens * vocab * 4 * 2  # fp32 logits and their gradient
    overhead = 0.25 * GIB + 0.05 * weights  # allocator fragmentation and workspace
    total_bytes = weights + trainable_bytes + grads + optimizer + activations + logits + overhead
    return MemoryEstimate(
        total_params=int(total), trainable_params=int(trainable), weights_gib=weights / GIB,
        trainable_gib=trainable_bytes / GIB, optimizer_gib=optimizer / GIB, gradients_gib=grads / GIB,
        activations_gib=activations / GIB, logits_gib=logits / GIB, overhead_gib=overhead / GIB,
        total_gib=total_bytes / GIB, tokens_per_step=tokens,
    )


def _optimizer(tune: TuneSection) -> str:
    return "paged_adamw_8bit" if tune.method == "qlora" and tune.optimizer == "adamw_torch" else tune.optimizer


def estimate_for(model: ModelSection, tune: TuneSection, device: str) -> MemoryEstimate:
    """Load only the base model's config (no weights) and estimate."""
    from transformers import AutoConfig

    from llmops_cli.model.loading import _hub_kwargs

    config = AutoConfig.from_pretrained(model.base, **_hub_kwargs(model))
    return estimate(config, tune, dtype_bytes=4 if device == "cpu" and tune.precision in ("auto", "fp32") else 2)


def gpu_budget_gib(tune: TuneSection) -> float | None:
    """The memory the check compares against: the config's budget or the visible GPU's total."""
    if tune.gpu_memory_gib:
        return tune.gpu_memory_gib
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(0).total_memory / GIB
