"""`llmops register` (add a version), `register list`, `register show`."""

from __future__ import annotations

from typing import Annotated

import typer

from llmops_cli.cli.common import ConfigOpt, JsonOpt, SetOpt, command, load_project, new_app

app = new_app(
    help="Model registry: add a version (default), list, show, diff, promote, rollback, verify, export, gc."
)


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
        for problem in result.version.manifest.get("serve_readiness", {}).get("reasons", []):
            console.warn(f"serve readiness: {problem}")
        verb = "registered" if result.created else "already registered (identical content)"
        console.result(result.to_dict(), f"{verb}: {result.version.ref} (sha256 {result.version.digest[:12]})")


@app.command("list")
def list_versions(
    ctx: typer.Context, 
    name: Annotated[str | None, typer.Argument(help="Only this model.")] = None,
    config: ConfigOpt = None, set_: SetOpt = None, json_: JsonOpt = False,
) -> None:
    """List registered versions."""
    with command(json_, ctx) as console:
        cfg = load_project(config, set_, ctx)
        from llmops_cli.registry.factory import open_registry

        registry = open_registry(cfg)
        versions = registry.list(name)
        aliases = {n: registry.aliases(n) for n in {v.name for v in versions}}
        tags = {(n, ver): [a for a, target in al.items() if target == ver] for n, al in aliases.items()
                for ver in al.values()}
        console.table("registered versions", ["ref", "aliases", "created", "by", "exact_match", "forced"], [
            [v.ref, ",".join(tags.get((v.name, v.version), [])), v.created_at, v.created_by,
             ((v.manifest.get("eval") or {}).get("tuned") or {}).get("exact_match", ""), v.forced]
            for v in versions
        ])
        console.result({"versions": [{"ref": v.ref, "created_at": v.created_at, "digest": v.digest,
                                      "aliases": tags.get((v.name, v.version), [])} for v in versions]})


@app.command("show")
def show(
    ctx: typer.Context, 
    ref: Annotated[str, typer.Argument(help="NAME[@alias|:version], or latest.")] = "latest",
    config: ConfigOpt = None, set_: SetOpt = None, json_: JsonOpt = False,
) -> None:
    """Show one version: lineage, metrics, files."""
    import json

    with command(json_, ctx) as console:
        cfg = load_project(config, set_, ctx)
        from llmops_cli.registry.factory import open_registry

        registry = open_registry(cfg)
        version = registry.resolve(ref, default_name=cfg.project.name)
        data = {**version.to_dict(), "aliases": {a: v for a, v in registry.aliases(version.name).items()},
                "alias_history": registry.alias_history(version.name)}
        if console.json_mode:  # --json given to the group counts too
            console.result(data)
        else:
            typer.echo(json.dumps(data, indent=2, default=str))


RefArg = Annotated[str, typer.Argument(help="NAME[@alias|:version], or latest.")]

@app.command("resolve")
def resolve(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="NAME[@alias|:version], or latest.")] = "@production",
    output: Annotated[str | None, typer.Option("--output", "-o", help="Also write the pointer to this file.")]
    = None,
    config: ConfigOpt = None, set_: SetOpt = None, json_: JsonOpt = False,
) -> None:
    """The version a reference points at, as {ref, version, digest} ({ref: null} when nothing is there).
    The demo's DVC pipeline writes @production this way, so eval re-runs when production moves."""
    with command(json_, ctx) as console:
        cfg = load_project(config, set_, ctx)
        from llmops_cli.errors import RefError
        from llmops_cli.registry.base import parse_ref
        from llmops_cli.registry.factory import open_registry
        from llmops_cli.utils import atomic_write_json

        parse_ref(ref, cfg.project.name)  # a malformed reference is a usage error, not "nothing there"
        try:
            version = open_registry(cfg).resolve(ref, default_name=cfg.project.name)
            pointer = {"ref": version.ref, "version": version.version, "digest": version.digest}
        except RefError:
            pointer = {"ref": None, "version": None, "digest": None}
        if output:
            atomic_write_json(output, {"requested": ref, **pointer})
        console.result({"ok": True, "requested": ref, **pointer},
                       f"{ref} -> {pointer['ref'] or 'nothing'}")


ReloadOpt = Annotated[bool, typer.Option("--reload", help="Switch the running server to the new target.")]
ByOpt = Annotated[str | None, typer.Option("--by", help="Who approves / performs the change (recorded).")]
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Why (recorded in the alias history).")]


ApproveOpt = Annotated[bool, typer.Option("--approve", help="Explicit approval (needed for protected aliases).")]
AcceptForcedOpt = Annotated[str | None, typer.Option(
    "--accept-forced", metavar="TEXT",
    help="Why a version registered with --force may go to a protected alias anyway (recorded).")]


@app.command("promote")
def promote(
    ctx: typer.Context,
    ref: RefArg,
    to: Annotated[str, typer.Option("--to", help="Alias (stage) to point at the version, e.g. production.")],
    approve: ApproveOpt = False, by: ByOpt = None, reason: ReasonOpt = None,
    accept_forced: AcceptForcedOpt = None, reload: ReloadOpt = False,
    config: ConfigOpt = None, set_: SetOpt = None, json_: JsonOpt = False,
) -> None:
    """Point an alias at a verified version; production needs --approve --by NAME --reason TEXT."""
    with command(json_, ctx) as console:
        cfg = load_project(config, set_, ctx)
        from llmops_cli.registry.operations import Approval
        from llmops_cli.registry.operations import promote as do_promote

        change = do_promote(cfg, ref, to, Approval(approve, by, reason, accept_forced), reload=reload)
        before = f" (was :{change.previous})" if change.previous else ""
        console.result({"ok": True, **change.to_dict()}, f"{change.name}@{change.alias} -> :{change.version}{before}")


@app.command("rollback")
def rollback(
    ctx: typer.Context,
    alias: Annotated[str, typer.Argument(help="The alias to roll back, e.g. production.")],
    name: Annotated[str | None, typer.Option("--name", help="Model name (default: project.name).")] = None,
    approve: ApproveOpt = False, by: ByOpt = None, reason: ReasonOpt = None,
    accept_forced: AcceptForcedOpt = None, reload: ReloadOpt = False,
    config: ConfigOpt = None, set_: SetOpt = None, json_: JsonOpt = False,
) -> None:
    """Restore the version the alias pointed at before (verified; protected aliases need approval)."""
    with command(json_, ctx) as console:
        cfg = load_project(config, set_, ctx)
        from llmops_cli.registry.operations import Approval
        from llmops_cli.registry.operations import rollback as do_rollback

        change = do_rollback(cfg, alias, name=name, approval=Approval(approve, by, reason, accept_forced),
                             reload=reload)
        console.result({"ok": True, **change.to_dict()}, f"{change.name}@{change.alias} rolled back to "
                                                         f":{change.version} (from :{change.previous})")


@app.command("diff")
def diff(
    ctx: typer.Context,
    a: RefArg, b: RefArg, config: ConfigOpt = None, set_: SetOpt = None, json_: JsonOpt = False) -> None:
    """Metrics, config, data and file differences between two versions."""
    with command(json_, ctx) as console:
        cfg = load_project(config, set_, ctx)
        from llmops_cli.registry.factory import open_registry
        from llmops_cli.registry.operations import diff as do_diff

        registry = open_registry(cfg)
        result = do_diff(registry.resolve(a, cfg.project.name), registry.resolve(b, cfg.project.name))
        console.table(f"metrics {result['a']} -> {result['b']}", ["metric", "a", "b", "delta"],
                      [[k, v["a"], v["b"], v["delta"] if v["delta"] is not None else ""]
                       for k, v in result["metrics"].items()])
        for part in ("config", "data", "base_model"):
            if result[part]:
                console.table(f"{part} changes", ["key", "a", "b"],
                              [[k, v["a"], v["b"]] for k, v in result[part].items()])
        console.result(result, f"files: {len(result['files']['changed'])} changed, "
                               f"{len(result['files']['added'])} added, {len(result['files']['removed'])} removed")


@app.command("verify")
def verify(
    ctx: typer.Context,
    ref: RefArg = "latest", all_: Annotated[bool, typer.Option("--all", help="Every version.")] = False,
           config: ConfigOpt = None, set_: SetOpt = None, json_: JsonOpt = False) -> None:
    """Re-hash every file of a version (or all); exit 1 on tampering or corruption."""
    with command(json_, ctx) as console:
        cfg = load_project(config, set_, ctx)
        from llmops_cli.errors import RegistryError
        from llmops_cli.registry.factory import open_registry

        registry = open_registry(cfg)
        versions = registry.list() if all_ else [registry.resolve(ref, cfg.project.name)]
        report = {v.ref: registry.verify(v) for v in versions}
        bad = {k: v for k, v in report.items() if v}
        console.result({"verified": len(report), "problems": bad}, None if bad else f"{len(report)} version(s) intact",
                       ok=not bad)
        if bad:
            raise RegistryError("verification failed: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in bad.items()))


@app.command("export")
def export(
    ctx: typer.Context, 
    ref: RefArg,
    dest: Annotated[str, typer.Argument(help="An empty or new directory.")],
    merge: Annotated[bool, typer.Option("--merge", help="Merge a LoRA adapter into its base weights.")] = False,
    push_to_hub: Annotated[str | None, typer.Option("--push-to-hub", help="Also push to this hub repo.")] = None,
    config: ConfigOpt = None, set_: SetOpt = None, json_: JsonOpt = False,
) -> None:
    """Write a version as a plain Hugging Face directory (optionally merged, optionally pushed)."""
    with command(json_, ctx) as console:
        cfg = load_project(config, set_, ctx)
        from llmops_cli.registry.factory import open_registry
        from llmops_cli.registry.operations import export as do_export

        registry = open_registry(cfg)
        result = do_export(cfg, registry, registry.resolve(ref, cfg.project.name), dest, merge, push_to_hub)
        merged = " (merged)" if result["merged"] else ""
        console.result(result, f"exported {result['ref']} to {result['path']}{merged}")


@app.command("gc")
def gc(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only report what would be deleted.")] = False,
       config: ConfigOpt = None, set_: SetOpt = None, json_: JsonOpt = False) -> None:
    """Delete blobs that no version references."""
    with command(json_, ctx) as console:
        cfg = load_project(config, set_, ctx)
        from llmops_cli.registry.factory import open_registry

        result = open_registry(cfg).gc(dry_run=dry_run)
        verb = "would delete" if dry_run else "deleted"
        console.result(result, f"{verb} {result['removed']} blob(s), {result['bytes']:,} bytes")
