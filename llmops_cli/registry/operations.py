"""Registry operations beyond adding a version: promote (with approval), rollback, diff, export."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops_cli.config.schema import ProjectConfig
from llmops_cli.errors import ApprovalRequired, ConfigError, LlmopsError, RegistryError
from llmops_cli.registry.base import COMPLETE_MARK, Registry, Version, check_alias, check_name
from llmops_cli.registry.base import actor as default_actor
from llmops_cli.registry.factory import open_registry
from llmops_cli.utils import flatten


@dataclass
class AliasChange:
    name: str
    alias: str
    version: int
    previous: int | None
    reload: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "ref": f"{self.name}@{self.alias}"}


@dataclass(frozen=True)
class Approval:
    """What a person said when moving an alias: checked against the alias's protection."""

    approve: bool = False
    by: str | None = None
    reason: str | None = None
    accept_forced: str | None = None  # why a version registered with --force may go to a protected alias


def promote(cfg: ProjectConfig, ref: str, alias: str, approval: Approval = Approval(), reload: bool = False
            ) -> AliasChange:
    """Point `alias` at the version `ref` names, after the protection checks (see `_guard`)."""
    registry = open_registry(cfg)
    _check_configured(cfg, alias)
    version = registry.resolve(ref, default_name=cfg.project.name)
    _guard(cfg, registry, version, alias, approval, "promotion")
    return _move(cfg, registry, version, alias, approval, _note(approval, "promote"), "promote", reload)


def _note(approval: Approval, action: str) -> str:
    note = approval.reason or action
    return f"approved: {note}" if approval.approve else note


def rollback(cfg: ProjectConfig, alias: str, name: str | None = None, approval: Approval = Approval(),
             reload: bool = False) -> AliasChange:
    """Restore the version `alias` pointed at before its current one, with the same checks as a promotion."""
    registry = open_registry(cfg)
    model = check_name(name or cfg.project.name)
    _check_configured(cfg, alias)
    target = registry.get(model, registry.rollback_target(model, alias))
    _guard(cfg, registry, target, alias, approval, "rollback")
    return _move(cfg, registry, target, alias, approval, _note(approval, "rollback"), "rollback", reload)


def _check_configured(cfg: ProjectConfig, alias: str) -> None:
    check_alias(alias)
    if alias not in cfg.registry.aliases:
        raise ConfigError(f"unknown alias {alias!r}",
                          hint=f"configured aliases: {', '.join(cfg.registry.aliases)} (register.aliases)")


def _guard(cfg: ProjectConfig, registry: Registry, version: Version, alias: str, approval: Approval,
           what: str) -> None:
    """Protected aliases take only approved, intact versions; a version registered with --force (its
    gates or its model check failed) needs its own flag and reason on top."""
    if alias in cfg.registry.protected_aliases:
        if not (approval.approve and approval.by and approval.reason):
            raise ApprovalRequired(f"{what} of {alias} requires an explicit approval",
                                   hint="pass --approve --by NAME --reason TEXT (recorded with the time)")
        if version.forced and not approval.accept_forced:
            raise ApprovalRequired(
                f"{version.ref} was registered with --force ({version.force_reason}): {what} to {alias} "
                "needs its own acceptance", hint="pass --accept-forced TEXT saying why it may serve anyway")
    problems = registry.verify(version)
    if problems:  # never point an alias at content that no longer matches its record
        raise RegistryError(f"{version.ref} failed verification: {'; '.join(problems[:3])}",
                            hint="`llmops register verify --all` lists every problem")


def _move(cfg: ProjectConfig, registry: Registry, version: Version, alias: str, approval: Approval, note: str,
          action: str, reload: bool) -> AliasChange:
    """Move the alias and, with reload, switch the server: both happen or neither. A missing server is
    found before the move; a reload that fails after it reverts the alias (recorded as `revert`)."""
    actor = approval.by or default_actor()
    if approval.accept_forced:
        note = f"{note} [accepted forced version: {approval.accept_forced}]"
    if reload:
        from llmops_cli.serving.lifecycle import running_endpoint

        running_endpoint(cfg.serve.endpoint_file)  # BackendUnavailable before anything changed
    if registry.aliases(version.name).get(alias) == version.version and action == "promote":
        # Already there (e.g. `make demo` re-run): nothing to record; a reload still syncs the server.
        change = AliasChange(version.name, alias, version.version, version.version)
        if reload:
            change.reload = _reload(cfg, f"{version.name}@{alias}")
        return change
    previous = registry.set_alias(version.name, alias, version.version, actor, note, action=action)
    change = AliasChange(version.name, alias, version.version, previous)
    if not reload:
        return change
    try:
        change.reload = _reload(cfg, f"{version.name}@{alias}")
    except LlmopsError as exc:
        why = f"reload failed: {exc.message}"
        if previous is None:
            registry.delete_alias(version.name, alias, actor, why)
        else:
            registry.set_alias(version.name, alias, previous, actor, why, action="revert")
        restored = f":{previous}" if previous is not None else "unset"
        raise type(exc)(f"{why}; {version.name}@{alias} is back at {restored} (nothing changed)",
                        hint=exc.hint) from None
    return change


def _reload(cfg: ProjectConfig, ref: str) -> dict[str, Any]:
    from llmops_cli.serving.lifecycle import reload_server

    return reload_server(cfg, ref)


def diff(a: Version, b: Version) -> dict[str, Any]:
    """What differs between two versions: metrics (with deltas), config, data hashes and files."""
    def changes(x: Any, y: Any) -> dict[str, Any]:
        fx, fy = flatten(x or {}), flatten(y or {})
        return {k: {"a": fx.get(k), "b": fy.get(k)} for k in sorted(set(fx) | set(fy)) if fx.get(k) != fy.get(k)}

    metrics = {}
    for model in ("tuned", "base", "delta"):
        ma = (a.manifest.get("eval") or {}).get(model) or {}
        mb = (b.manifest.get("eval") or {}).get(model) or {}
        for key in sorted(set(ma) | set(mb)):
            va, vb = ma.get(key), mb.get(key)
            delta = vb - va if isinstance(va, int | float) and isinstance(vb, int | float) else None
            metrics[f"{model}.{key}"] = {"a": va, "b": vb, "delta": delta}
    fa, fb = a.manifest.get("files", {}), b.manifest.get("files", {})
    return {
        "a": a.ref, "b": b.ref,
        "metrics": metrics,
        "config": changes((a.manifest.get("training") or {}).get("config"),
                          (b.manifest.get("training") or {}).get("config")),
        "data": changes(a.manifest.get("data"), b.manifest.get("data")),
        "base_model": changes(a.manifest.get("base_model"), b.manifest.get("base_model")),
        "files": {"added": sorted(set(fb) - set(fa)), "removed": sorted(set(fa) - set(fb)),
                  "changed": sorted(k for k in set(fa) & set(fb) if fa[k] != fb[k])},
    }


def export(cfg: ProjectConfig, registry: Registry, version: Version, dest: str, merge: bool = False,
           push_to_hub: str | None = None) -> dict[str, Any]:
    """Write a plain Hugging Face directory (the adapter as stored, or merged weights); optionally push it."""
    out = Path(dest)
    if out.exists() and any(out.iterdir()):
        raise RegistryError(f"{out} exists and is not empty", hint="choose an empty or new directory")
    source = registry.materialize(version)
    is_adapter = "adapter_config.json" in version.manifest.get("files", {})
    if merge and is_adapter:
        _export_merged(cfg, version, source, out)
    else:  # plain copies: the materialised copy is read-only, the export is the user's to edit
        shutil.copytree(source, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns(COMPLETE_MARK),
                        copy_function=shutil.copyfile)
        for path in [out, *out.rglob("*")]:
            if path.is_dir():
                path.chmod(0o755)
    result: dict[str, Any] = {"ref": version.ref, "path": str(out), "merged": bool(merge and is_adapter)}
    if push_to_hub:
        result["hub"] = _push(out, push_to_hub)
    return result


def _export_merged(cfg: ProjectConfig, version: Version, adapter_dir: Path, out: Path) -> None:
    from llmops_cli.model.config import ModelSection
    from llmops_cli.model.loading import load_causal_lm, load_tokenizer

    trained = ((version.manifest.get("training") or {}).get("config") or {}).get("model") or {}
    base = ModelSection(**trained) if trained else cfg.model
    model = load_causal_lm(base, device="cpu", adapter=str(adapter_dir), merge=True)
    model.save_pretrained(out, safe_serialization=True)
    load_tokenizer(base, path=str(adapter_dir)).save_pretrained(out)
    if (adapter_dir / "README.md").is_file():
        shutil.copy2(adapter_dir / "README.md", out / "README.md")


def _push(folder: Path, repo_id: str) -> str:
    import os

    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise RegistryError("cannot push to the hub: HF_HUB_OFFLINE=1", hint="unset it on a machine with hub access")
    try:
        from huggingface_hub import HfApi

        api = HfApi(token=os.environ.get("HF_TOKEN"))
        api.create_repo(repo_id, exist_ok=True, private=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id)
    except Exception as exc:  # network and auth failures become one clear message
        raise RegistryError(f"push to {repo_id} failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
                            hint="check network access to the hub and HF_TOKEN") from None
    return f"https://huggingface.co/{repo_id}"
