import sys

import pytest
from transformers import LlamaConfig

from llmops_cli.tune.config import TuneSection
from llmops_cli.tune.memory import estimate

# Llama-3.2-1B shape with a 32k vocabulary: the model of the reference figures in ../shared/gpu/README.md.
LLAMA_1B = LlamaConfig(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=32000, tie_word_embeddings=True)


def test_parameter_counts_match_the_architecture():
    est = estimate(LLAMA_1B, TuneSection(lora={"r": 16}))
    assert est.total_params == pytest.approx(1.04e9, rel=0.01)
    # r * (in + out) for the 7 projections of each of 16 layers
    per_layer = 16 * ((2048 + 2048) + 2 * (2048 + 512) + (2048 + 2048) + 2 * (2048 + 8192) + (8192 + 2048))
    assert est.trainable_params == 16 * per_layer


@pytest.mark.parametrize("checkpointing,measured_gib", [(False, 19.4), (True, 6.2)])
def test_estimate_is_within_25_percent_of_the_reference_measurements(checkpointing, measured_gib):
    est = estimate(LLAMA_1B, TuneSection(batch_size=8, max_seq_length=1024, gradient_checkpointing=checkpointing))
    assert abs(est.total_gib - measured_gib) / measured_gib < 0.25


def test_methods_and_options_order_as_expected():
    base = dict(batch_size=8, max_seq_length=1024, gradient_checkpointing=True)
    lora, qlora, full = (estimate(LLAMA_1B, TuneSection(method=m, **base)).total_gib for m in ("lora", "qlora", "full"))
    assert qlora < lora < full
    assert estimate(LLAMA_1B, TuneSection(method="qlora", **base)).weights_gib < 0.6 * estimate(
        LLAMA_1B, TuneSection(**base)).weights_gib
    longer = estimate(LLAMA_1B, TuneSection(batch_size=8, max_seq_length=2048)).activations_gib
    shorter = estimate(LLAMA_1B, TuneSection(batch_size=8, max_seq_length=1024)).activations_gib
    assert longer == pytest.approx(2 * shorter)


# Tiny configs of the architectures issue #15 names, built locally (no download). Their field names differ:
# GPT-2 has n_embd/n_layer/n_head and n_inner=None (4 * n_embd); Qwen2 has q/k/v biases; Phi a dense MLP.
def _tiny_configs() -> dict[str, object]:
    from transformers import (
        GemmaConfig,
        GPT2Config,
        GPTNeoXConfig,
        MistralConfig,
        PhiConfig,
        Qwen2Config,
    )

    common = dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4, vocab_size=300)
    return {
        "llama": LlamaConfig(num_key_value_heads=2, **common),
        "mistral": MistralConfig(num_key_value_heads=2, **common),
        "qwen2": Qwen2Config(num_key_value_heads=2, **common),
        "gemma": GemmaConfig(num_key_value_heads=1, head_dim=16, **common),
        "phi": PhiConfig(**common),
        "gpt2": GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=300),
        "gpt_neox": GPTNeoXConfig(**common),
    }


@pytest.fixture(scope="module")
def tiny_configs() -> dict[str, object]:
    return _tiny_configs()


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2", "gemma", "phi", "gpt2", "gpt_neox"])
def test_every_architecture_is_estimated_with_the_counts_of_the_real_model(arch, tiny_configs):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    config = tiny_configs[arch]
    est = estimate(config, TuneSection(lora={"r": 4}, batch_size=2, max_seq_length=32))
    assert est.warning is None and est.basis == "meta-device model"
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    assert est.total_params == sum(p.numel() for p in model.parameters())
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    assert est.trainable_params == sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert est.total_gib > est.weights_gib > 0 and est.activations_gib > 0


def test_gpt2_without_intermediate_size_uses_four_times_n_embd(tiny_configs):
    from types import SimpleNamespace

    from llmops_cli.tune.memory import describe

    gpt2 = tiny_configs["gpt2"]
    assert describe(gpt2).intermediate == 4 * 64
    # The field-name table alone (what is used when transformers cannot build the model) reads GPT-2's names.
    fields = SimpleNamespace(model_type="gpt2", n_embd=64, n_layer=2, n_head=4, n_inner=None, vocab_size=300)
    arch = describe(fields)
    assert (arch.hidden, arch.layers, arch.intermediate, arch.vocab, arch.basis) == (64, 2, 256, 300, "config fields")
    assert estimate(fields, TuneSection()).total_gib > 0


def test_an_unknown_architecture_is_a_warning_not_a_traceback():
    from types import SimpleNamespace

    est = estimate(SimpleNamespace(model_type="mystery", width=3), TuneSection())
    assert est.warning == "cannot estimate memory for mystery, running without pre-flight"
    assert est.total_gib == 0 and est.basis == "none"


def test_target_modules_that_name_nothing_are_reported(tiny_configs):
    from llmops_cli.tune.memory import describe, unmatched_targets

    arch = describe(tiny_configs["gpt2"])
    assert unmatched_targets(arch.linears, ["c_attn", "q_proj"]) == ["q_proj"]
    assert unmatched_targets(arch.linears, "all-linear") == []


# One LoRA training step (forward, backward, AdamW step) measured on this CPU in fp32, in a fresh process.
# What is measured: the rise of the process's peak RSS (VmHWM, reset through /proc/self/clear_refs just before
# the step) over its RSS before the step, with glibc's mmap threshold fixed at 64 KiB so freed tensors go back
# to the OS instead of an arena. Weights and LoRA weights are already resident before the step, so the measured
# rise is compared with the estimate's step-time parts only: activations + logits + gradients + optimizer
# state. The fixed GPU overhead (CUDA context, fragmentation) does not exist on CPU and is left out.
_MEASURE = r"""
import gc, json, sys
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

torch.set_num_threads(1)
def status(key):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(key))
results = []
for kind, kwargs, checkpointing, batch, seq in json.loads(sys.argv[1]):
    config = {"llama": LlamaConfig, "gpt2": GPT2Config}[kind](**kwargs)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model = get_peft_model(model, LoraConfig(r=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, config.vocab_size, (batch, seq))
    gc.collect()
    before = status("VmRSS:")
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # the peak RSS restarts from the current RSS
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    results.append(status("VmHWM:") - before)
    del model, optimizer, ids
    gc.collect()
print(json.dumps(results))
"""
_MEASURED_CASES = [
    ("llama", dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                   num_key_value_heads=2, vocab_size=512, max_position_embeddings=1024)),
    # GPT-2 as configured by default: n_inner None (4 * n_embd), gelu_new, dropout 0.1
    ("gpt2", dict(n_embd=128, n_layer=2, n_head=2, vocab_size=512, n_positions=1024, bos_token_id=0, eos_token_id=0)),
]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_estimate_is_within_a_factor_of_1_5_of_a_step_measured_on_cpu():
    import json
    import os
    import subprocess

    from transformers import GPT2Config

    from llmops_cli.tune.memory import GIB

    cases = [(kind, kwargs, ckpt, 8, 512) for kind, kwargs in _MEASURED_CASES for ckpt in (False, True)]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _MEASURE, json.dumps(cases)], capture_output=True, text=True,
                          env=env, timeout=300)
    if proc.returncode and "clear_refs" in proc.stderr:
        pytest.skip("this kernel does not let a process reset its peak RSS")
    assert proc.returncode == 0, proc.stderr[-2000:]
    measured = json.loads(proc.stdout.splitlines()[-1])
    ratios = []
    for (kind, kwargs, ckpt, batch, seq), peak in zip(cases, measured, strict=True):
        config = {"llama": LlamaConfig, "gpt2": GPT2Config}[kind](**kwargs)
        est = estimate(config, TuneSection(batch_size=batch, max_seq_length=seq, gradient_checkpointing=ckpt),
                       dtype_bytes=4)
        step = (est.activations_gib + est.logits_gib + est.gradients_gib + est.optimizer_gib) * GIB
        ratios.append((kind, ckpt, round(peak / step, 2)))
    # measured / estimated when written (torch 2.13, CPU, 8 x 512 tokens), without and with gradient checkpointing:
    # llama 1.04 and 0.83, gpt2 1.32 and 1.25. GPT-2 is above 1 because its attention dropout (0.1) sends CPU
    # attention to the math kernel, which keeps the S x S matrix; GPU flash/efficient kernels do not.
    assert all(1 / 1.5 <= r <= 1.5 for _, _, r in ratios), ratios
