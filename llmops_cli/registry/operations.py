"""Registry operations beyond adding a version: promote (with approval), rollback, diff, export."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops_cli.config.schema import ProjectConfig
from llmops_cli.errors import ConfigError, RegistryError
from llmops_cli.registry.store import LocalRegistry, Version, check_alias, open_registry


@dataclass
class AliasChange:
    name: str
    alias: str
    version: int
    previous: int | None
    reload: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "ref": f"{self.name}@{self.alias}"}


def promote(cfg: ProjectConfig, ref: str, alias: str, approve: bool = False, by: str | None = None,
            reason: str | None = None, reload: bool = False) -> AliasChange:
    """Point `alias` at the version `ref` names. Protected aliases (production) need an explicit approval."""
    registry = open_registry(cfg)
    check_alias(alias)
    if alias not in cfg.registry.aliases:
        raise ConfigError(f"unknown alias {alias!r}", hint=f"configured aliases: {', '.join(cfg.registry.aliases)} "
                                                            "(register.aliases)")
    if alias in cfg.registry.protected_aliases and not (approve and by and reason):
        raise RegistryError(f"promotion to {alias} requires an explicit approval",
                            hint="pass --approve --by NAME --reason TEXT (recorded with the time)")
    version = registry.resolve(ref, default_name=cfg.project.name)
    problems = registry.verify(version)
    if problems:  # never point production at content that no longer matches its hashes
        raise RegistryError(f"{version.ref} failed verification: {'; '.join(problems[:3])}")
    actor = by or _default_actor()
    note = reason or "promote"
    if approve:
        note = f"approved: {note}"
    previous = registry.set_alias(version.name, alias, version.version, actor, note)
    change = AliasChange(version.name, alias, version.version, previous)
    if reload:
        change.reload = _reload(cfg, f"{version.name}@{alias}")
    return change


def rollback(cfg: ProjectConfig, alias: str, name: str | None = None, by: str | None = None,
             reason: str | None = None, reload: bool = False) -> AliasChange:
    """Restore the version `alias` pointed at before its current one."""
    registry = open_registry(cfg)
    model = name or cfg.project.name
    check_alias(alias)
    target = registry.rollback_target(model, alias)
    previous = registry.set_alias(model, alias, target, by or _default_actor(), f"rollback: {reason or ''}".strip())
    change = AliasChange(model, alias, target, previous)
    if reload:
        change.reload = _reload(cfg, f"{model}@{alias}")
    return change


def _reload(cfg: ProjectConfig, ref: str) -> dict[str, Any]:
    from llmops_cli.serving.lifecycle import reload_server

    return reload_server(cfg, ref)


def _default_actor() -> str:
    from llmops_cli.registry.store import _actor

    return _actor()


def diff(a: Version, b: Version) -> dict[str, Any]:
    """What differs between two versions: metrics (with deltas), config, data hashes and files."""
    def flat(obj: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(obj, dict):
            out: dict[str, Any] = {}
            for key, value in obj.items():
                out.update(flat(value, f"{prefix}{key}."))
            return out
        return {prefix[:-1]: obj}

    def changes(x: Any, y: Any) -> dict[str, Any]:
        fx, fy = flat(x or {}), flat(y or {})
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


def export(cfg: ProjectConfig, registry: LocalRegistry, version: Version, dest: str, merge: bool = False,
           push_to_hub: str | None = None) -> dict[str, Any]:
    """Write a plain Hugging Face directory (the adapter as stored, or merged weights); optionally push it."""
    out = Path(dest)
    if out.exists() and any(out.iterdir()):
        raise RegistryError(f"{out} exists and is not empty", hint="choose an empty or new directory")
    source = registry.materialize(version)
    is_adapter = "adapter_config.json" in version.manifest.get("files", {})
    if merge and is_adapter:
        _export_merged(cfg, version, source, out)
    else:
        shutil.copytree(source, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".complete"))
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
