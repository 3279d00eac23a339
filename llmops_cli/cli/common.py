"""Options every command shares, and the one place where errors become exit codes."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from llmops_cli.console import Console
from llmops_cli.errors import LlmopsError

if TYPE_CHECKING:
    from llmops_cli.config.schema import ProjectConfig

DEFAULT_CONFIG = "llmops.yaml"


def new_app(**kwargs: Any) -> typer.Typer:
    """Every command group is made here, so help renders the same everywhere: plain Click help, where
    text such as NAME[@alias|:version] is shown as written (rich markup ate the brackets) and flags
    show no `<bool>` metavar; tracebacks never print locals (config values, secrets)."""
    return typer.Typer(rich_markup_mode=None, pretty_exceptions_show_locals=False,
                       context_settings={"help_option_names": ["-h", "--help"]}, **kwargs)

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", envvar="LLMOPS_CONFIG", show_default=False,
        help=f"Project config YAML (default: $LLMOPS_CONFIG, else ./{DEFAULT_CONFIG} if present).",
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", metavar="KEY.PATH=VALUE",
                 help="Override a config value, e.g. --set tune.epochs=2 (repeatable)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a machine-readable result object on stdout.")]


def load_project(config: Path | None, overrides: list[str] | None, ctx: typer.Context | None = None) -> ProjectConfig:
    """The project config. With `ctx`, options given to the command group before the subcommand
    (`llmops serve -c other.yaml stop`) count too: the subcommand's own `-c` wins, `--set`s add up."""
    from llmops_cli.config.loader import load_config

    config = config_path(config, ctx)
    overrides = [*(_group_params(ctx).get("set_") or []), *(overrides or [])]
    if config is None:
        # Built-in defaults point at demo paths: a run on them by accident must not look like a run on yours.
        Console().warn(f"no config file loaded (no -c, $LLMOPS_CONFIG unset, no ./{DEFAULT_CONFIG}): "
                       "using built-in defaults" + (" and --set overrides" if overrides else ""))
    return load_config(config, overrides)


def config_path(config: Path | None, ctx: typer.Context | None = None) -> Path | None:
    """The config file a command reads: its -c, the group's -c, $LLMOPS_CONFIG (via -c's envvar), else
    ./llmops.yaml if present, else None (built-in defaults)."""
    config = config or _group_params(ctx).get("config")
    if config is None and Path(DEFAULT_CONFIG).is_file():
        config = Path(DEFAULT_CONFIG)
    return config


def _group_params(ctx: typer.Context | None) -> dict:
    return dict(ctx.parent.params) if ctx is not None and ctx.parent is not None else {}


@contextmanager
def command(json_mode: bool = False, ctx: typer.Context | None = None) -> Iterator[Console]:
    """Give a command its Console and turn LlmopsError into a clean message and its exit code.
    With `ctx`, a `--json` given to the group before the subcommand counts too."""
    json_mode = json_mode or bool(_group_params(ctx).get("json_"))
    console = Console(json_mode=json_mode)
    try:
        yield console
    except LlmopsError as exc:
        console.error(str(exc))
        if json_mode and not console.result_printed:
            console.result({"ok": False, "error": exc.message, "hint": exc.hint,
                            "type": type(exc).__name__})
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        console.error("interrupted")
        raise typer.Exit(130) from None


def quiet_libraries() -> None:
    """Silence download/progress chatter of HF libraries; called once from the CLI entry point."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_VERBOSITY", "error")  # its retry warnings would precede our one-line error
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Deprecation notices from the ML stack are for us, not for users running a pipeline.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
