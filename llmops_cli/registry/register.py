"""Build a version's lineage from the stage outputs and add it to the registry."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops_cli.config.schema import ProjectConfig
from llmops_cli.errors import GateFailed, RegistryError
from llmops_cli.registry.card import model_card, serve_readiness
from llmops_cli.registry.store import Version, open_registry
from llmops_cli.utils import atomic_write_json, git_commit, package_versions


@dataclass
class RegisterResult:
    version: Version
    created: bool

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.version.name, "version": self.version.version, "ref": self.version.ref,
                "digest": self.version.digest, "created": self.created, "forced": self.version.forced}


def _read_json(path: str, what: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise RegistryError(f"missing {what}: {p}", hint="run the earlier stages first (`dvc repro`)")
    return json.loads(p.read_text(encoding="utf-8"))


def register_model(cfg: ProjectConfig, force_reason: str | None = None) -> RegisterResult:
    """Register cfg.register.model_dir under cfg.project.name, refusing failed gates unless forced."""
    rcfg = cfg.registry
    run = _read_json(str(Path(rcfg.model_dir) / "run_manifest.json"), "tune run manifest")
    evaluation = _read_json(rcfg.eval_metrics, "eval metrics")
    if not evaluation.get("gates_passed", False) and force_reason is None:
        failed = [g["gate"] for g in evaluation.get("gates", []) if not g.get("passed")]
        raise GateFailed(f"eval gates failed ({'; '.join(failed) or 'see metrics'}): refusing to register",
                         hint="fix the model, or pass --force --reason TEXT to record an override")
    prep = json.loads(Path(rcfg.prep_report).read_text()) if Path(rcfg.prep_report).is_file() else {}
    manifest = {
        "base_model": run.get("base_model"),
        "adapter": (Path(rcfg.model_dir) / "adapter_config.json").is_file(),
        "training": {"config": run.get("config"), "metrics": run.get("metrics"), "data": run.get("data")},
        "data": {"prep_hashes": prep.get("hashes"), "splits": prep.get("splits")},
        "eval": {k: evaluation.get(k) for k in ("n", "base", "tuned", "delta", "gates", "gates_passed", "data")},
        "git_commit": git_commit(),
        "packages": package_versions(),
        "train_git_commit": run.get("git_commit"),
        "train_packages": run.get("packages"),
        "serve_readiness": serve_readiness(Path(rcfg.model_dir), prep),
    }
    # The card is part of the version's content (README.md, as on the hub), generated from the lineage.
    card = model_card(cfg.project.name, manifest).encode()
    version, created = open_registry(cfg).add(cfg.project.name, rcfg.model_dir, manifest, force_reason,
                                              extra_files={"README.md": card})
    result = RegisterResult(version, created)
    atomic_write_json(rcfg.output, result.to_dict())
    return result
