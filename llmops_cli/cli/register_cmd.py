"""`llmops register` (add a version), `register list`, `register show`."""

from __future__ import annotations

from typing import Annotated

import typer

from llmops_cli.cli.common import ConfigOpt, JsonOpt, SetOpt, command, load_project

app = typer.Typer(help="Model registry: add a version (default), list, show.")


@app.callback(invoke_without_command=True)
def register(
    ctx: typer.Context,
    config: ConfigOpt = None, set_: SetOpt = None, json_: JsonOpt = False,
    force: Annotated[bool, typer.Option("--force", help="Register even though eval gates failed.")] = False,
    reason: Annotated[str | None, typer.Option("--reason", help="Why --force was needed (recorded).")] = None,
) -> None:
    """Register the tuned model as a new immutable version, with its lineage and eval results."""
    if ctx.invoked_subcommand is not None:
        return
    with command(json_) as console:
        if force and not reason:
            raise typer.BadParameter("--force needs --reason TEXT (it is recorded with the version)")
        cfg = load_project(config, set_)
        from llmops_cli.registry.register import register_model

        result = register_model(cfg, force_reason=reason if force else None)
        verb = "registered" if result.created else "already registered (identical content)"
        console.result(result.to_dict(), f"{verb}: {result.version.ref} (sha256 {result.version.digest[:12]})")


@app.command("list")
def list_versions(
    name: Annotated[str | None, typer.Argument(help="Only this model.")] = None,
    config: ConfigOpt = None, set_: SetOpt = None, json_: JsonOpt = False,
) -> None:
    """List registered versions."""
    with command(json_) as console:
        cfg = load_project(config, set_)
        from llmops_cli.registry.store import LocalRegistry

        versions = LocalRegistry(cfg.registry.root).list(name)
        console.table("registered versions", ["ref", "created", "by", "exact_match", "forced"], [
            [v.ref, v.created_at, v.created_by,
             ((v.manifest.get("eval") or {}).get("tuned") or {}).get("exact_match", ""), v.forced]
            for v in versions
        ])
        console.result({"versions": [{"ref": v.ref, "created_at": v.created_at, "digest": v.digest}
                                     for v in versions]})


@app.command("show")
def show(
    ref: Annotated[str, typer.Argument(help="NAME[@alias|:version], or latest.")] = "latest",
    config: ConfigOpt = None, set_: SetOpt = None, json_: JsonOpt = False,
) -> None:
    """Show one version: lineage, metrics, files."""
    import json

    with command(json_) as console:
        cfg = load_project(config, set_)
        from llmops_cli.registry.store import LocalRegistry

        version = LocalRegistry(cfg.registry.root).resolve(ref, default_name=cfg.project.name)
        if json_:
            console.result(version.to_dict())
        else:
            typer.echo(json.dumps(version.to_dict(), indent=2, default=str))
