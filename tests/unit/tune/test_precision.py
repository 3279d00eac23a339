"""Full fine-tuning on a GPU keeps fp32 master weights under bf16/fp16 autocast (#15)."""

import pytest

from llmops_cli.config.loader import load_config
from llmops_cli.tune.train import _precision, weights_dtype


def test_full_fine_tuning_on_gpu_loads_fp32_weights_and_trains_mixed_precision():
    full = load_config(None, ["tune.method=full", "tune.precision=bf16"])
    assert weights_dtype(full, "cuda") == "float32"
    assert _precision(full.tune, "cuda") == {"bf16": True, "fp16": False}  # autocast over fp32 weights
    assert weights_dtype(load_config(None, ["tune.method=lora"]), "cuda") is None  # the 16-bit base saves memory
    assert weights_dtype(load_config(None, ["tune.method=full", "model.dtype=bfloat16"]), "cuda") is None  # asked
    assert weights_dtype(full, "cpu") is None  # CPU loads fp32 anyway


@pytest.mark.gpu
def test_full_fine_tuning_trains_fp32_parameters_on_gpu(tmp_path, tiny_model):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from llmops_cli.model.loading import load_tokenizer
    from llmops_cli.prep.render import ChatRenderer
    from llmops_cli.tune.dataset import TrainingData, _render
    from llmops_cli.tune.train import build_trainer

    cfg = load_config(None, [f"model.base={tiny_model}", f"tune.output_dir={tmp_path}", "tune.method=full",
                             "tune.max_steps=2"])
    tok = load_tokenizer(cfg.model)
    row = {"id": "1", "prompt": "I was charged twice", "completion": "billing"}
    example = _render(ChatRenderer(tok, tok.chat_template, "tokenizer", str(tiny_model)), row)
    trainer = build_trainer(cfg, TrainingData([example] * 8, [], tok.chat_template, "tokenizer", "test"), tok)
    trainer.train()
    assert {p.dtype for p in trainer.model.parameters()} == {torch.float32}
    assert trainer.args.bf16 or trainer.args.fp16
