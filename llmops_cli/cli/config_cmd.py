"""`llmops config show|validate|reference`."""

from __future__ import annotations

from typing import Annotated

import typer

from llmops_cli.cli.common import ConfigOpt, JsonOpt, SetOpt, command, load_project, new_app

app = new_app(help="Show, validate and document project configs.", no_args_is_help=True)


@app.command("show")
def show(config: ConfigOpt = None, set_: SetOpt = None, json_: JsonOpt = False,
         section: Annotated[str | None, typer.Argument(help="Only this section, e.g. tune.")] = None) -> None:
    """Print the fully resolved config (defaults and --set applied; secrets redacted)."""
    import yaml

    from llmops_cli.config.loader import redact

    with command(json_) as console:
        data = redact(load_project(config, set_).model_dump(by_alias=True, mode="json"))
        if section:
            if section not in data:
                from llmops_cli.errors import ConfigError

                raise ConfigError(f"no section {section!r}", hint=f"sections: {', '.join(data)}")
            data = {section: data[section]}
        if json_:
            console.result(data)
        else:
            typer.echo(yaml.safe_dump(data, sort_keys=False).rstrip())


@app.command("validate")
def validate(
    files: Annotated[list[str] | None, typer.Argument(help="Config files to validate (default: --config).")] = None,
    config: ConfigOpt = None, set_: SetOpt = None, json_: JsonOpt = False,
) -> None:
    """Validate one or more configs; exits 2 listing every problem found."""
    from pathlib import Path

    from llmops_cli.config.loader import load_config
    from llmops_cli.errors import ConfigError

    targets = [Path(f) for f in files] if files else [config]
    with command(json_) as console:
        problems: list[str] = []
        for target in targets:
            try:
                load_config(target, set_) if target else load_project(None, set_)
                console.success(f"{target or 'defaults'}: valid")
            except ConfigError as exc:
                problems.append(str(exc))
        if problems:
            raise ConfigError(f"{len(problems)} of {len(targets)} config(s) invalid", problems=problems)
        console.result({"ok": True, "validated": [str(t) for t in targets]})


@app.command("reference")
def reference(markdown: Annotated[bool, typer.Option("--markdown", help="Emit a Markdown table.")] = False) -> None:
    """Every config key with its type, default and description."""
    from llmops_cli.config.reference import reference_rows

    rows = reference_rows()
    if markdown:
        typer.echo("| key | type | default | description |\n|---|---|---|---|")
        for key, kind, default, desc in rows:
            typer.echo(f"| `{key}` | {kind} | `{default}` | {desc} |")
        return
    for key, kind, default, desc in rows:
        typer.echo(f"{key} ({kind}, default {default}): {desc}")
