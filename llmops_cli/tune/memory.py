"""Memory pre-flight: estimate peak accelerator memory for a tune config before loading weights.

The estimate uses the model's config.json only (no weights): the model is built on the meta device to count
parameters and read every linear layer's shape (any architecture transformers knows; a table of config field
names is the fallback, and an unreadable config gives a warning instead of an estimate). From those: the
bytes each costs for the method (16-bit weights, 4-bit NF4 for QLoRA, fp32 master LoRA weights,
AdamW state, gradients), activations per token (with or without gradient checkpointing) and the
fp32 logits the loss is computed on, which dominate for large vocabularies.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from llmops_cli.errors import ConfigError
from llmops_cli.model.config import ModelSection
from llmops_cli.tune.config import TuneSection

GIB = 1024**3
# The names each size goes by in the configs of Llama, Mistral, Qwen2, Gemma, Phi, GPT-2, GPT-NeoX, Falcon, T5-style
# decoders: read when transformers cannot build the model (the shapes are then assumed Llama-like).
_FIELDS: dict[str, tuple[str, ...]] = {
    "hidden": ("hidden_size", "n_embd", "d_model", "dim", "model_dim"),
    "layers": ("num_hidden_layers", "n_layer", "num_layers", "n_layers"),
    "heads": ("num_attention_heads", "n_head", "num_heads", "n_heads"),
    "kv_heads": ("num_key_value_heads", "num_kv_heads", "n_kv_heads", "n_head_kv"),
    "intermediate": ("intermediate_size", "n_inner", "ffn_dim", "d_ff", "ffn_hidden_size"),
    "vocab": ("vocab_size", "padded_vocab_size", "n_vocab"),
}


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
    basis: str = "meta-device model"  # where the shapes came from: "meta-device model", "config fields" or "none"
    warning: str | None = None  # set when nothing could be estimated (then every size is 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def unknown(cls, model_type: str, tokens: int) -> MemoryEstimate:
        """No estimate: training goes ahead unchecked, and the caller shows the warning."""
        return cls(0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, tokens, basis="none",
                   warning=f"cannot estimate memory for {model_type}, running without pre-flight")


@dataclass(frozen=True)
class Architecture:
    """What the estimate needs to know about a model, whatever its config calls it."""

    model_type: str
    hidden: int
    layers: int
    intermediate: int
    vocab: int
    total_params: int
    linears: dict[str, tuple[int, int]]  # every linear layer LoRA can adapt (module name -> (in, out)), not lm_head
    basis: str
    activation: str = ""  # the MLP's activation function, as the config names it


class CannotEstimate(ValueError):
    """The config names no hidden size, layer count or vocabulary this module knows."""


def _field(config: Any, key: str) -> int | None:
    for name in _FIELDS[key]:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def describe(config: Any) -> Architecture:
    """Sizes and linear-layer shapes of the model `config` describes. The model is built on the meta device
    (no memory, no weights), so every architecture transformers knows is counted exactly; where that fails
    (remote code, a config that is only a namespace) Llama-like shapes are derived from the field table."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config  # multimodal: the LM part
    model_type = str(getattr(config, "model_type", None) or type(config).__name__)
    hidden, layers, vocab = _field(text, "hidden"), _field(text, "layers"), _field(text, "vocab")
    if hidden is None or layers is None or vocab is None:
        raise CannotEstimate(model_type)
    intermediate = _field(text, "intermediate") or 4 * hidden  # GPT-2's n_inner=None means 4 * n_embd
    activation = next((str(v) for k in ("hidden_act", "activation_function", "hidden_activation")
                       if (v := getattr(text, k, None))), "")
    built = _meta_model_shapes(config)
    if built is not None:
        total, linears = built
        return Architecture(model_type, hidden, layers, intermediate, vocab, total, linears, "meta-device model",
                            activation)
    linears = {f"layers.{i}.{name}": shape for i in range(layers)
               for name, shape in _llama_shapes(text, hidden, intermediate).items()}
    tied = getattr(text, "tie_word_embeddings", None) or getattr(config, "tie_word_embeddings", False)
    total = sum(i * o for i, o in linears.values()) + vocab * hidden * (1 if tied else 2) + layers * 2 * hidden + hidden
    return Architecture(model_type, hidden, layers, intermediate, vocab, total, linears, "config fields", activation)


def _meta_model_shapes(config: Any) -> tuple[int, dict[str, tuple[int, int]]] | None:
    """Parameter count and adaptable linear layers of the model built on the meta device, or None."""
    try:
        import torch
        from transformers import AutoModelForCausalLM

        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except Exception:  # noqa: BLE001 - any config transformers cannot build falls back to the field table
        return None
    return sum(p.numel() for p in model.parameters()), linear_layers(model)


def linear_layers(model: Any) -> dict[str, tuple[int, int]]:
    """(in, out) of every linear layer LoRA can adapt, by module name (the output layer left out)."""
    import torch
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    linears: dict[str, tuple[int, int]] = {}
    for name, module in model.named_modules():
        if module is head:
            continue  # PEFT's all-linear leaves the output layer alone, and bitsandbytes keeps it 16-bit
        if isinstance(module, torch.nn.Linear):
            linears[name] = (module.in_features, module.out_features)
        elif isinstance(module, Conv1D):  # GPT-2's linear layers store the weight as (in, out)
            linears[name] = (int(module.weight.shape[0]), int(module.weight.shape[1]))
    return linears


def _llama_shapes(config: Any, hidden: int, inter: int) -> dict[str, tuple[int, int]]:
    heads = _field(config, "heads") or 1
    kv = _field(config, "kv_heads") or heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    return {
        "q_proj": (hidden, heads * head_dim), "k_proj": (hidden, kv * head_dim), "v_proj": (hidden, kv * head_dim),
        "o_proj": (heads * head_dim, hidden), "gate_proj": (hidden, inter), "up_proj": (hidden, inter),
        "down_proj": (inter, hidden),
    }


def _matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)  # PEFT's rule for a list of target_modules


def unmatched_targets(linears: dict[str, tuple[int, int]], targets: list[str] | str) -> list[str]:
    """The entries of tune.lora.target_modules that name no linear layer of the model."""
    if targets == "all-linear":
        return []
    return [t for t in targets if not any(_matches(name, t) for name in linears)]


def check_target_modules(linears: dict[str, tuple[int, int]], targets: list[str] | str) -> None:
    """ConfigError when tune.lora.target_modules names a module the model does not have (or one that is not
    a linear layer), with the names it does have."""
    missing = unmatched_targets(linears, targets)
    if missing:
        names = sorted({name.rsplit(".", 1)[-1] for name in linears})
        raise ConfigError(
            f"tune.lora.target_modules: {', '.join(map(repr, missing))} names no linear layer of the model",
            hint=f"use all-linear or some of: {', '.join(names)}",
        )


def estimate(config: Any, tune: TuneSection, dtype_bytes: int = 2) -> MemoryEstimate:
    """Peak memory of one training step for `tune` on a model with this transformers config
    (an estimate with a warning and no sizes when the architecture cannot be read)."""
    tokens = tune.batch_size * tune.max_seq_length
    try:
        arch = describe(config)
    except CannotEstimate as exc:
        return MemoryEstimate.unknown(str(exc), tokens)
    if tune.method != "full" and arch.basis == "meta-device model":  # the fallback's layer names are guessed
        check_target_modules(arch.linears, tune.lora.target_modules)
    layers, hidden, vocab, inter = arch.layers, arch.hidden, arch.vocab, arch.intermediate
    total = arch.total_params
    linear_params = sum(i * o for i, o in arch.linears.values())

    if tune.method == "qlora":
        # NF4: 0.5 byte/param + one fp32 absmax per 64 params (0.5 bit/param after double quantisation).
        scale_bits = 0.127 if tune.quant.double_quant else 0.5
        weights = linear_params * (0.5 + scale_bits / 8) + (total - linear_params) * 2
    else:
        weights = total * dtype_bytes

    targets = [shape for name, shape in arch.linears.items() if tune.lora.target_modules == "all-linear"
               or any(_matches(name, t) for t in tune.lora.target_modules)]
    if tune.method == "full":
        trainable = total
        trainable_bytes = 0.0  # the weights themselves are trained
        grads = total * dtype_bytes
        opt_bytes = 8.0
    else:
        trainable = sum(tune.lora.r * (i + o) for i, o in targets)
        if tune.lora.dora:
            trainable += sum(o for _, o in targets)
        trainable_bytes = trainable * 4.0  # adapters train in fp32
        grads = trainable * 4.0
        opt_bytes = 2.0 if "8bit" in _optimizer(tune) else 8.0
    optimizer = trainable * opt_bytes

    # Saved tensors per token and layer (16-bit): inputs of the projections and norms, q/k/v and attention
    # output, and five intermediate-size MLP tensors (gate, up, act(gate), their product, the SiLU input);
    # SDPA/flash attention keeps no S x S matrix. Calibrated on the reference figures in
    # ../shared/gpu/README.md (1.04B Llama, LoRA r=16, 8 x 1024 tokens: 19.4 GiB, 6.2 GiB with checkpointing).
    per_layer_token = dtype_bytes * (10 * hidden + 5 * inter)
    if arch.activation == "gelu_new":
        # GPT-2's tanh GELU is composed of eight elementwise ops in Python, not one kernel: measured on CPU
        # (tests/unit/tune/test_memory.py) it keeps three more intermediate-size tensors per token and layer.
        per_layer_token += dtype_bytes * 3 * inter
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
        total_gib=total_bytes / GIB, tokens_per_step=tokens, basis=arch.basis,
    )


def _optimizer(tune: TuneSection) -> str:
    return "paged_adamw_8bit" if tune.method == "qlora" and tune.optimizer == "adamw_torch" else tune.optimizer


def estimate_for(model: ModelSection, tune: TuneSection, device: str) -> MemoryEstimate:
    """Load only the base model's config (no weights) and estimate."""
    from transformers import AutoConfig

    from llmops_cli.model.loading import _hub_kwargs, _not_found, check_source

    check_source(model.base, model.revision)
    try:
        config: Any = AutoConfig.from_pretrained(model.base, **_hub_kwargs(model))
    except OSError as exc:
        raise _not_found(model.base, exc) from None
    except (ValueError, KeyError):  # a model_type this transformers does not know: read config.json's fields
        config = _raw_config(model.base)
    return estimate(config, tune, dtype_bytes=4 if device == "cpu" and tune.precision in ("auto", "fp32") else 2)


def _raw_config(base: str) -> Any:
    import json
    from pathlib import Path
    from types import SimpleNamespace

    try:
        fields = json.loads((Path(base) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        fields = {}
    return SimpleNamespace(**fields) if isinstance(fields, dict) else SimpleNamespace()


def gpu_budget_gib(tune: TuneSection) -> float | None:
    """The memory the check compares against: the config's budget or the visible GPU's total."""
    if tune.gpu_memory_gib:
        return tune.gpu_memory_gib
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(0).total_memory / GIB
