"""Check that the model to register is the one that was evaluated, build its lineage, add it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops_cli.config.schema import ProjectConfig
from llmops_cli.errors import GateFailed, ModelMismatch, RegistryError
from llmops_cli.model.identity import same_base
from llmops_cli.registry.base import Version
from llmops_cli.registry.factory import open_registry
from llmops_cli.registry.lineage import build_manifest
from llmops_cli.utils import atomic_write_json


@dataclass
class RegisterResult:
    version: Version
    created: bool

    def to_dict(self) -> dict[str, Any]:
        return {"ok": True, "name": self.version.name, "version": self.version.version, "ref": self.version.ref,
                "digest": self.version.digest, "created": self.created, "forced": self.version.forced}


def _read_json(path: str, what: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise RegistryError(f"missing {what}: {p}", hint="run the earlier stages first (`dvc repro`)")
    return json.loads(p.read_text(encoding="utf-8"))


def register_model(cfg: ProjectConfig, force_reason: str | None = None) -> RegisterResult:
    """Register cfg.register.model_dir under cfg.project.name. Refused unless forced: failed gates, eval
    results that name no model, or name another model (content digest or base) than the one given."""
    rcfg = cfg.registry
    run = _read_json(str(Path(rcfg.model_dir) / "run_manifest.json"), "tune run manifest")
    evaluation = _read_json(rcfg.eval_metrics, "eval results")
    if "gates" not in evaluation and evaluation.get("results_file"):  # the DVC summary: follow it
        evaluation = _read_json(evaluation["results_file"], "eval results")
    if not evaluation.get("gates_passed", False) and force_reason is None:
        failed = [g["gate"] for g in evaluation.get("gates", []) if not g.get("passed")]
        raise GateFailed(f"eval gates failed ({'; '.join(failed) or 'see metrics'}): refusing to register",
                         hint="fix the model, or pass --force --reason TEXT to record an override")
    evaluated = evaluation.get("model") or {}
    if force_reason is None:
        _check_custody(rcfg.eval_metrics, evaluated, run)
    prep = json.loads(Path(rcfg.prep_report).read_text()) if Path(rcfg.prep_report).is_file() else {}
    manifest = build_manifest(cfg, Path(rcfg.model_dir), run, evaluation, prep)
    manifest["custody"] = {"evaluated": evaluated or None, "eval_metrics": rcfg.eval_metrics}
    version, created = open_registry(cfg).add(
        cfg.project.name, rcfg.model_dir, manifest, force_reason,
        expected_digest=None if force_reason is not None else evaluated["digest"])
    result = RegisterResult(version, created)
    atomic_write_json(rcfg.output, result.to_dict())
    return result


def _check_custody(metrics_file: str, evaluated: dict[str, Any], run: dict[str, Any]) -> None:
    """What can be checked before reading the weights: eval recorded a model, on the base tune used.
    The content digest itself is compared while the registry copies the files (one read)."""
    if not evaluated.get("digest"):
        raise ModelMismatch(f"{metrics_file} does not say which model it evaluated (no model digest; written "
                            "by an older llmops?)", hint="re-run `llmops eval`, or pass --force --reason TEXT")
    if not same_base(evaluated.get("base"), run.get("base_model")):
        raise ModelMismatch("the adapter was evaluated on another base model than it was trained on "
                            f"({(evaluated.get('base') or {}).get('id')} vs {(run.get('base_model') or {}).get('id')})",
                            hint="set model.base to the training base and re-run `llmops eval`")
