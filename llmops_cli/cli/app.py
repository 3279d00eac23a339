"""The `llmops` command tree. Sub-command modules are thin; heavy imports happen inside commands."""

from __future__ import annotations

from typing import Annotated

import typer

from llmops_cli import __version__
from llmops_cli.cli import (
    config_cmd,
    eval_cmd,
    model_cmd,
    monitor_cmd,
    prep_cmd,
    register_cmd,
    serve_cmd,
    tune_cmd,
)
from llmops_cli.cli.common import new_app, quiet_libraries

app = new_app(
    name="llmops",
    help="Take an open LLM through its operational life: prep, tune, eval, register, serve, monitor.",
    no_args_is_help=True,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"llmops {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """llmops: prep → tune → eval → register → serve → monitor, each driven by one YAML config."""


app.command("prep")(prep_cmd.prep)
app.add_typer(tune_cmd.app, name="tune")
app.command("eval")(eval_cmd.evaluate)
app.add_typer(register_cmd.app, name="register")
app.add_typer(serve_cmd.app, name="serve")
app.add_typer(monitor_cmd.app, name="monitor")
app.add_typer(config_cmd.app, name="config")
app.add_typer(model_cmd.app, name="model")


def main() -> None:
    quiet_libraries()
    app()
