"""The MLflow backend: the same registry interface on an MLflow Model Registry (aliases and tags).

Files are logged as run artifacts under `model/`, the lineage manifest as `llmops_manifest.json`, and
the model version is created only after every artifact is logged, so a crash leaves no half-visible
version. The content digest is a version tag, which keeps registration idempotent as in the local
backend. MLflow keeps no history of alias moves, so it is kept as a JSON tag on the registered model.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from llmops_cli.errors import RegistryError
from llmops_cli.registry.store import Version, _actor, _now, _parse_ref, check_alias, check_name
from llmops_cli.utils import check_hashes, hash_tree, tree_digest

EXPERIMENT = "llmops-registry"
HISTORY_TAG = "llmops.alias_history"


class MlflowRegistry:
    """Registry operations over MLflow; `cache_root` holds downloaded (materialised) versions."""

    def __init__(self, tracking_uri: str | None, cache_root: str | Path, artifact_location: str | None = None) -> None:
        if not tracking_uri:
            raise RegistryError("register.backend=mlflow needs register.mlflow_tracking_uri",
                                hint="e.g. sqlite:///mlflow.db, or http://mlflow.internal:5000")
        try:
            from mlflow import MlflowClient
        except ImportError:
            raise RegistryError("the mlflow backend needs the mlflow package",
                                hint="pip install 'llmops-cli[mlflow]'") from None
        self.uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self.cache = Path(cache_root) / "mlflow-cache"
        self.artifact_location = artifact_location

    # -- writing ---------------------------------------------------------------------------------
    def add(self, name: str, source_dir: str | Path, manifest: dict[str, Any], forced_reason: str | None = None,
            extra_files: dict[str, bytes] | None = None) -> tuple[Version, bool]:
        check_name(name)
        source = Path(source_dir)
        if not source.is_dir():
            raise RegistryError(f"nothing to register: {source} is not a directory", hint="run `llmops tune` first")
        with tempfile.TemporaryDirectory() as staging:
            model = Path(staging) / "model"
            shutil.copytree(source, model, ignore=shutil.ignore_patterns("checkpoints"))
            for rel, data in (extra_files or {}).items():
                (model / rel).write_bytes(data)
            files = hash_tree(model)
            digest = tree_digest(files)
            existing = self._by_digest(name, digest)
            if existing is not None:
                return existing, False
            full = {**manifest, "files": files, "created_by": _actor(), "created_at": _now(),
                    "forced": forced_reason is not None, "force_reason": forced_reason}
            (Path(staging) / "llmops_manifest.json").write_text(json.dumps(full, sort_keys=True, default=str))
            run_id = self._log_run(name, Path(staging))
        if not self._registered(name):
            self.client.create_registered_model(name)
        mv = self.client.create_model_version(
            name, source=f"runs:/{run_id}/model", run_id=run_id,
            tags={"llmops.digest": digest, "llmops.forced": str(forced_reason is not None)},
        )
        return self.get(name, int(mv.version)), True

    def _log_run(self, name: str, staging: Path) -> str:
        experiment = self.client.get_experiment_by_name(EXPERIMENT)
        exp_id = experiment.experiment_id if experiment else self.client.create_experiment(
            EXPERIMENT, artifact_location=self.artifact_location)
        run = self.client.create_run(exp_id, tags={"llmops.model": name})
        try:
            self.client.log_artifacts(run.info.run_id, str(staging / "model"), artifact_path="model")
            self.client.log_artifact(run.info.run_id, str(staging / "llmops_manifest.json"))
        except BaseException:
            self.client.set_terminated(run.info.run_id, status="FAILED")
            raise
        self.client.set_terminated(run.info.run_id)
        return run.info.run_id

    def set_alias(self, name: str, alias: str, version: int, actor: str, reason: str | None) -> int | None:
        check_alias(alias)
        self.get(name, version)
        previous = self.aliases(name).get(alias)
        self.client.set_registered_model_alias(name, alias, str(version))
        history = self.alias_history(name)
        history.append({"alias": alias, "version": version, "previous": previous, "actor": actor, "reason": reason,
                        "at": _now()})
        self.client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
        return previous

    # -- reading ---------------------------------------------------------------------------------
    def get(self, name: str, version: int) -> Version:
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version(name, str(version))
        except MlflowException:
            raise RegistryError(f"no version {name}:{version}", hint="`llmops register list` shows versions") from None
        manifest = self._manifest(mv.run_id)
        return Version(name, int(mv.version), mv.tags.get("llmops.digest", ""), manifest.pop("created_at", ""),
                       manifest.pop("created_by", ""), bool(manifest.pop("forced", False)),
                       manifest.pop("force_reason", None), manifest)

    def _manifest(self, run_id: str) -> dict[str, Any]:
        target = self.cache / "manifests" / run_id
        path = target / "llmops_manifest.json"
        if not path.is_file():
            target.mkdir(parents=True, exist_ok=True)
            self.client.download_artifacts(run_id, "llmops_manifest.json", str(target))
        return json.loads(path.read_text(encoding="utf-8"))

    def list(self, name: str | None = None) -> list[Version]:
        query = f"name='{check_name(name)}'" if name else ""
        found = self.client.search_model_versions(query)
        return [self.get(mv.name, int(mv.version)) for mv in sorted(found, key=lambda m: (m.name, int(m.version)))]

    def resolve(self, ref: str, default_name: str | None = None) -> Version:
        from mlflow.exceptions import MlflowException

        name, alias, number = _parse_ref(ref, default_name)
        check_name(name)
        if number is not None:
            return self.get(name, number)
        if alias in (None, "latest"):
            versions = self.client.search_model_versions(f"name='{name}'") if self._registered(name) else []
            if not versions:
                raise RegistryError(f"nothing registered as {ref!r}", hint="run `llmops register` first")
            return self.get(name, max(int(v.version) for v in versions))
        try:
            mv = self.client.get_model_version_by_alias(name, alias)
        except MlflowException:
            raise RegistryError(f"nothing registered as {ref!r}", hint="promote a version to it first") from None
        return self.get(name, int(mv.version))

    def aliases(self, name: str) -> dict[str, int]:
        if not self._registered(name):
            return {}
        return {a: int(v) for a, v in self.client.get_registered_model(name).aliases.items()}

    def alias_history(self, name: str, alias: str | None = None) -> list[dict[str, Any]]:
        if not self._registered(name):
            return []
        history = json.loads(self.client.get_registered_model(name).tags.get(HISTORY_TAG, "[]"))
        return [h for h in history if alias is None or h["alias"] == alias]

    def rollback_target(self, name: str, alias: str) -> int:
        from llmops_cli.registry.store import LocalRegistry

        return LocalRegistry._rollback_from_history(self.aliases(name).get(alias), self.alias_history(name, alias),
                                                    name, alias)

    def verify(self, version: Version) -> list[str]:
        with tempfile.TemporaryDirectory() as tmp:
            local = self._download(version, Path(tmp))
            return check_hashes(local, version.manifest.get("files", {}))

    def materialize(self, version: Version, dest: str | Path | None = None) -> Path:
        target = Path(dest) if dest else self.cache / "materialized" / version.name / str(version.version)
        if (target / ".complete").is_file() and not check_hashes(target, version.manifest.get("files", {})):
            return target
        staging = Path(tempfile.mkdtemp(dir=self.cache.parent if self.cache.parent.exists() else None))
        try:
            local = self._download(version, staging)
            problems = check_hashes(local, version.manifest.get("files", {}))
            if problems:
                raise RegistryError(f"{version.ref} failed verification: " + "; ".join(problems[:5]),
                                    hint="the MLflow artifacts were modified or corrupted; re-register the model")
            (local / ".complete").write_text(version.digest)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                shutil.rmtree(target)
            shutil.move(str(local), target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def gc(self, dry_run: bool = False) -> dict[str, Any]:
        return {"removed": 0, "bytes": 0, "dry_run": dry_run, "referenced": None,
                "note": "artifact storage is managed by the MLflow server"}

    # -- helpers ---------------------------------------------------------------------------------
    def _download(self, version: Version, into: Path) -> Path:
        mv = self.client.get_model_version(version.name, str(version.version))
        return Path(self.client.download_artifacts(mv.run_id, "model", str(into)))

    def _registered(self, name: str) -> bool:
        return bool(self.client.search_registered_models(f"name='{name}'"))

    def _by_digest(self, name: str, digest: str) -> Version | None:
        if not self._registered(name):
            return None
        for mv in self.client.search_model_versions(f"name='{name}'"):
            if mv.tags.get("llmops.digest") == digest:
                return self.get(name, int(mv.version))
        return None
