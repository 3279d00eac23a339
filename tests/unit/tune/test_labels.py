"""The loss must fall on the assistant's answer (and its EOS) only: prove it on a rendered example."""

from llmops_cli.config.loader import load_config
from llmops_cli.model.loading import load_tokenizer
from llmops_cli.tune.dataset import TrainingData, _render
from llmops_cli.tune.train import build_trainer

ROW = {"id": "1", "system": "Classify the ticket.", "prompt": "I was charged twice for my laptop",
       "completion": "billing"}


def test_labels_cover_only_the_completion_and_eos(tmp_path, tiny_model):
    from llmops_cli.prep.render import ChatRenderer

    cfg = load_config(None, [f"model.base={tiny_model}", f"tune.output_dir={tmp_path}"])
    tok = load_tokenizer(cfg.model)
    example = _render(ChatRenderer(tok, tok.chat_template, "tokenizer", str(tiny_model)), ROW)
    trainer = build_trainer(cfg, TrainingData([example], [], tok.chat_template, "tokenizer", "test"), tok)
    example = trainer.train_dataset[0]
    ids, labels = example["input_ids"], example["labels"]
    trained = [t for t, lab in zip(ids, labels, strict=True) if lab != -100]
    assert tok.decode(trained) == "billing<|im_end|>"
    assert trained[-1] == tok.eos_token_id  # the model learns to stop
    prompt_part = tok.decode([t for t, lab in zip(ids, labels, strict=True) if lab == -100])
    assert "I was charged twice" in prompt_part and "Classify the ticket." in prompt_part
    assert labels[: len(ids) - len(trained)] == [-100] * (len(ids) - len(trained))
