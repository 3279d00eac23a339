"""`llmops model scaffold`: build the offline base model."""

from __future__ import annotations

from llmops_cli.cli.common import ConfigOpt, JsonOpt, SetOpt, command, load_project, new_app

app = new_app(help="Base-model utilities.", no_args_is_help=True)


@app.command("scaffold")
def scaffold(config: ConfigOpt = None, set_: SetOpt = None, json_: JsonOpt = False) -> None:
    """Build a small random-initialised Llama + BPE tokenizer (trained on scaffold.corpus), offline."""
    with command(json_) as console:
        cfg = load_project(config, set_)
        from llmops_cli.model.scaffold import scaffold_model

        console.info(f"training a {cfg.scaffold.vocab_size}-token BPE tokenizer and building the model")
        result = scaffold_model(cfg.scaffold)
        console.result(result.__dict__, f"base model with {result.parameters:,} parameters and "
                                        f"{result.vocab_size} tokens written to {result.output}")
