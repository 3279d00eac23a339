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
