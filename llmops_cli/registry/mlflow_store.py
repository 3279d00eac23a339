"""The MLflow backend: the same Registry interface on an MLflow Model Registry (aliases and tags).

Files are logged as run artifacts under `model/`, the version record as `llmops_manifest.json`, and
the run carries params (the training config), metrics (eval) and tags (git commit, data hashes) so an
MLflow user sees what they expect. The model version is created only after every artifact is logged,
so a crash leaves no half-visible version. Registration is idempotent by content digest even under
concurrency: after creating its version, a process looks for an older version with the same digest
and, if one exists, deletes its own. Alias history is one tag per event (never a read-modify-write of
one tag), so concurrent promotes lose nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from llmops_cli.errors import ModelMismatch, RefError, RegistryError
from llmops_cli.registry.base import (
    Version,
    actor,
    check_alias,
    check_name,
    model_files,
    now,
    os_user,
    parse_ref,
    rollback_target_from_history,
)
from llmops_cli.registry.store import copy_problems, make_read_only, remove_tree, write_card_and_mark
from llmops_cli.utils import check_hashes, copy_hashing, flatten, tree_digest

EXPERIMENT = "llmops-registry"
HISTORY_TAG = "llmops.alias_history"  # the single JSON tag of older releases, still read
EVENT_PREFIX = "llmops.alias_event."
_PARAM_LIMIT = 6000  # MLflow's maximum length of a param value
_RECORD_KEYS = ("created_at", "created_by", "forced", "force_reason")


@contextlib.contextmanager
def _mlflow_calls(what: str) -> Iterator[None]:
    """MLflow's chatter ("View run ... at") goes to stderr, keeping `--json` stdout clean; its
    exceptions become one-line RegistryErrors instead of tracebacks."""
    from mlflow.exceptions import MlflowException

    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    except MlflowException as exc:
        message = str(exc.message if hasattr(exc, "message") else exc).splitlines()[0][:300]
        raise RegistryError(f"MLflow {what} failed: {message}",
                            hint="check register.mlflow_tracking_uri and that the MLflow server is up") from None


def _retry_on_conflict(write: Callable[[], Any], attempts: int = 8) -> Any:
    """An idempotent write that lost an insert race on the server: MLflow's SQL stores upsert by
    select-then-insert and report the loser's unique-constraint violation as BAD_REQUEST, which the
    client does not retry (seen on 4 of 80 concurrent first sets of one alias)."""
    from mlflow.exceptions import MlflowException

    for attempt in range(attempts):
        try:
            return write()
        except MlflowException as exc:
            conflict = getattr(exc, "error_code", "") == "BAD_REQUEST" and "unique" in str(exc).lower()
            if not conflict or attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    return None


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
            expected_digest: str | None = None) -> tuple[Version, bool]:
        check_name(name)
        source = Path(source_dir)
        if not source.is_dir():
            raise RegistryError(f"nothing to register: {source} is not a directory", hint="run `llmops tune` first")
        self.cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.cache, prefix=".incoming-") as staging:
            files = _stage(source, Path(staging) / "model")
            digest = tree_digest(files)
            if expected_digest is not None and digest != expected_digest:
                raise ModelMismatch(
                    f"{source} is not the model that was evaluated: its content hash is {digest[:16]}, "
                    f"the eval results are for {expected_digest[:16]}",
                    hint="re-run `llmops eval` on this model, or pass --force --reason TEXT to register it anyway")
            with _mlflow_calls("registration"):
                existing = self._by_digest(name, digest)
                if existing is not None:
                    return existing, False
                record = json.loads(json.dumps(
                    {**manifest, "files": files, "registered_by_os_user": os_user(), "created_by": actor(),
                     "created_at": now(), "forced": forced_reason is not None, "force_reason": forced_reason},
                    sort_keys=True, default=str))
                (Path(staging) / "llmops_manifest.json").write_text(json.dumps(record, sort_keys=True))
                self._ensure_registered(name)
                run_id = self._log_run(name, Path(staging), record, digest)
                return self._create_version(name, run_id, digest, forced_reason)

    def _ensure_registered(self, name: str) -> None:
        from mlflow.exceptions import MlflowException

        if self._registered(name):
            return
        try:
            self.client.create_registered_model(name)
        except MlflowException as exc:  # a concurrent first registration won the race: fine
            if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                raise

    def _create_version(self, name: str, run_id: str, digest: str, forced_reason: str | None) -> tuple[Version, bool]:
        mv = self.client.create_model_version(
            name, source=f"runs:/{run_id}/model", run_id=run_id,
            tags={"llmops.digest": digest, "llmops.forced": str(forced_reason is not None)})
        number = int(mv.version)
        twins = sorted(int(v.version) for v in self.client.search_model_versions(f"name='{name}'")
                       if v.tags.get("llmops.digest") == digest)
        if twins and twins[0] < number:  # identical content registered concurrently: the oldest wins
            self.client.delete_model_version(name, str(number))
            self.client.delete_run(run_id)
            return self.get(name, twins[0]), False
        version = self.get(name, number)
        self.client.set_model_version_tag(name, str(number), "llmops.seal", version.seal())
        return version, True

    def _log_run(self, name: str, staging: Path, record: dict[str, Any], digest: str) -> str:
        experiment = self.client.get_experiment_by_name(EXPERIMENT)
        exp_id = experiment.experiment_id if experiment else self._create_experiment()
        run = self.client.create_run(exp_id, tags=_run_tags(name, record, digest))
        try:
            from mlflow.entities import Metric, Param

            stamp = int(time.time() * 1000)
            self.client.log_batch(run.info.run_id,
                                  params=[Param(k, v) for k, v in _run_params(record).items()],
                                  metrics=[Metric(k, v, stamp, 0) for k, v in _run_metrics(record).items()])
            self.client.log_artifacts(run.info.run_id, str(staging / "model"), artifact_path="model")
            self.client.log_artifact(run.info.run_id, str(staging / "llmops_manifest.json"))
        except BaseException:
            self.client.set_terminated(run.info.run_id, status="FAILED")
            self.client.delete_run(run.info.run_id)  # no orphan run left behind
            raise
        self.client.set_terminated(run.info.run_id)
        return run.info.run_id

    def _create_experiment(self) -> str:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.create_experiment(EXPERIMENT, artifact_location=self.artifact_location)
        except MlflowException:  # created concurrently
            return self.client.get_experiment_by_name(EXPERIMENT).experiment_id

    def set_alias(self, name: str, alias: str, version: int, actor: str, reason: str | None,
                  action: str = "promote") -> int | None:
        check_alias(alias)
        self.get(name, version)
        with _mlflow_calls("alias change"):
            previous = self.aliases(name).get(alias)
            _retry_on_conflict(lambda: self.client.set_registered_model_alias(name, alias, str(version)))
            self._record_event(name, {"alias": alias, "version": version, "previous": previous, "action": action,
                                      "actor": actor, "os_user": os_user(), "reason": reason, "at": now()})
        return previous

    def delete_alias(self, name: str, alias: str, actor: str, reason: str | None) -> None:
        with _mlflow_calls("alias change"):
            previous = self.aliases(name).get(alias)
            self.client.delete_registered_model_alias(name, alias)
            self._record_event(name, {"alias": alias, "version": None, "previous": previous, "action": "revert",
                                      "actor": actor, "os_user": os_user(), "reason": reason, "at": now()})

    def _record_event(self, name: str, event: dict[str, Any]) -> None:
        key = f"{EVENT_PREFIX}{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"  # sorts by time
        self.client.set_registered_model_tag(name, key, json.dumps(event))

    # -- reading ---------------------------------------------------------------------------------
    def get(self, name: str, version: int) -> Version:
        from mlflow.exceptions import MlflowException

        check_name(name)
        try:
            with contextlib.redirect_stdout(sys.stderr):
                mv = self.client.get_model_version(name, str(version))
        except MlflowException:
            raise RefError(f"no version {name}:{version}", hint="`llmops register list` shows versions") from None
        with _mlflow_calls("read"):
            manifest = self._manifest(mv.run_id)
        record = {k: manifest.pop(k, None) for k in _RECORD_KEYS}
        return Version(name, int(mv.version), mv.tags.get("llmops.digest", ""), record["created_at"] or "",
                       record["created_by"] or "", bool(record["forced"]), record["force_reason"], manifest)

    def _manifest(self, run_id: str) -> dict[str, Any]:
        target = self.cache / "manifests" / run_id
        path = target / "llmops_manifest.json"
        if not path.is_file():  # downloaded beside, then renamed: concurrent readers never see half a file
            target.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target, prefix=".incoming-") as tmp:
                self.client.download_artifacts(run_id, "llmops_manifest.json", tmp)
                os.replace(Path(tmp) / "llmops_manifest.json", path)
        return json.loads(path.read_text(encoding="utf-8"))

    def list(self, name: str | None = None) -> list[Version]:
        query = f"name='{check_name(name)}'" if name else ""
        with _mlflow_calls("list"):
            # A shared server holds other teams' models too: only versions llmops registered (they have a digest).
            found = [mv for mv in self.client.search_model_versions(query) if "llmops.digest" in (mv.tags or {})]
        return [self.get(mv.name, int(mv.version)) for mv in sorted(found, key=lambda m: (m.name, int(m.version)))]

    def resolve(self, ref: str, default_name: str | None = None) -> Version:
        from mlflow.exceptions import MlflowException

        name, alias, number = parse_ref(ref, default_name)
        if number is not None:
            return self.get(name, number)
        if alias in (None, "latest"):
            with _mlflow_calls("read"):
                versions = self.client.search_model_versions(f"name='{name}'") if self._registered(name) else []
            if not versions:
                raise RefError(f"nothing registered as {ref!r}", hint="run `llmops register` first")
            return self.get(name, max(int(v.version) for v in versions))
        try:
            with contextlib.redirect_stdout(sys.stderr):
                mv = self.client.get_model_version_by_alias(name, alias)
        except MlflowException:
            raise RefError(f"nothing registered as {ref!r}", hint="promote a version to it first") from None
        return self.get(name, int(mv.version))

    def aliases(self, name: str) -> dict[str, int]:
        with _mlflow_calls("read"):
            if not self._registered(name):
                return {}
            return {a: int(v) for a, v in self.client.get_registered_model(name).aliases.items()}

    def alias_history(self, name: str, alias: str | None = None) -> list[dict[str, Any]]:
        with _mlflow_calls("read"):
            if not self._registered(name):
                return []
            tags = self.client.get_registered_model(name).tags
        history = json.loads(tags.get(HISTORY_TAG, "[]"))
        for event in history:  # entries of older releases said "rollback" in their reason
            event.setdefault("action", "rollback" if (event.get("reason") or "").startswith("rollback") else "promote")
        history += [json.loads(tags[key]) for key in sorted(k for k in tags if k.startswith(EVENT_PREFIX))]
        return [h for h in history if alias is None or h["alias"] == alias]

    def rollback_target(self, name: str, alias: str) -> int:
        return rollback_target_from_history(self.aliases(name).get(alias), self.alias_history(name, alias),
                                            name, alias)

    # -- integrity -------------------------------------------------------------------------------
    def _record_problems(self, version: Version, require_seal: bool = True) -> list[str]:
        with _mlflow_calls("read"):
            seal = self.client.get_model_version(version.name, str(version.version)).tags.get("llmops.seal")
        problems = []
        if seal is None and require_seal:
            problems.append("version has no llmops.seal tag (registered before llmops sealed versions, or "
                            "still being registered)")
        elif seal is not None and seal != version.seal():
            problems.append("version record was modified after registration (its seal does not match)")
        if tree_digest(version.files) != version.digest:
            problems.append("the version digest does not match its file list")
        return problems

    def verify(self, version: Version) -> list[str]:
        problems = self._record_problems(version)
        with tempfile.TemporaryDirectory() as tmp:
            local = self._download(version, Path(tmp))
            problems += check_hashes(local, version.files, others=())
        copy = self._copy_dir(version)
        if copy.is_dir():
            problems += [f"materialized copy: {p}" for p in copy_problems(copy, version)]
        return problems

    def materialize(self, version: Version) -> Path:
        problems = self._record_problems(version, require_seal=False)
        if problems:
            raise RegistryError(f"{version.ref} failed verification: " + "; ".join(problems),
                                hint="the MLflow version's tags or manifest were modified")
        target = self._copy_dir(version)
        if target.is_dir() and not copy_problems(target, version):
            return target
        self.cache.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.cache, prefix=".materialize-"))
        try:
            local = self._download(version, staging)
            problems = check_hashes(local, version.files, others=())
            if problems:
                raise RegistryError(f"{version.ref} failed verification: " + "; ".join(problems[:5]),
                                    hint="the MLflow artifacts were modified or corrupted; re-register the model")
            write_card_and_mark(local, version)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                remove_tree(target)
            local.rename(target)
            make_read_only(target)
        finally:
            remove_tree(staging)
        return target

    def gc(self, dry_run: bool = False) -> dict[str, Any]:
        """Artifacts belong to the MLflow server; locally, leftovers of killed processes and copies of
        versions that no longer exist are reclaimed."""
        found = sorted(self.cache.glob(".incoming-*")) + sorted(self.cache.glob(".materialize-*"))
        copies = []
        for copy in sorted((self.cache / "materialized").glob("*/*")):
            try:
                live = self.get(copy.parent.name, int(copy.name)).digest
            except (RegistryError, ValueError):
                live = None
            mark = copy / ".complete"
            if live is None or not mark.is_file() or mark.read_text(encoding="utf-8").strip() != live:
                copies.append(copy)
        if not dry_run:
            for path in [*found, *copies]:
                remove_tree(path)
        return {"removed": 0, "leftovers": len(found), "copies": len(copies), "bytes": 0, "dry_run": dry_run,
                "referenced": None, "note": "artifact storage is managed by the MLflow server"}

    # -- helpers ---------------------------------------------------------------------------------
    def _copy_dir(self, version: Version) -> Path:
        return self.cache / "materialized" / version.name / str(version.version)

    def _download(self, version: Version, into: Path) -> Path:
        with _mlflow_calls("download"):
            mv = self.client.get_model_version(version.name, str(version.version))
            return Path(self.client.download_artifacts(mv.run_id, "model", str(into)))

    def _registered(self, name: str) -> bool:
        return bool(self.client.search_registered_models(f"name='{name}'"))

    def _by_digest(self, name: str, digest: str) -> Version | None:
        if not self._registered(name):
            return None
        twins = [int(mv.version) for mv in self.client.search_model_versions(f"name='{name}'")
                 if mv.tags.get("llmops.digest") == digest]
        return self.get(name, min(twins)) if twins else None


def _stage(source: Path, into: Path) -> dict[str, str]:
    """Copy the model's files into the staging dir, hashing while copying (each byte read once)."""
    files = {}
    for rel, path in model_files(source).items():
        (into / rel).parent.mkdir(parents=True, exist_ok=True)
        files[rel], _size = copy_hashing(path, into / rel)
    return files


def _run_params(record: dict[str, Any]) -> dict[str, str]:
    """The training config as MLflow params (tune.learning_rate, model.base, ...)."""
    config = (record.get("training") or {}).get("config") or {}
    return {k[:250]: json.dumps(v)[:_PARAM_LIMIT] if not isinstance(v, str) else v[:_PARAM_LIMIT]
            for k, v in sorted(flatten(config).items()) if k}


def _run_metrics(record: dict[str, Any]) -> dict[str, float]:
    evaluation = record.get("eval") or {}
    metrics = {}
    for model in ("tuned", "base", "delta", "delta_production"):
        for key, value in (evaluation.get(model) or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                metrics[f"{model}.{key}"] = float(value)
    for key, value in ((record.get("training") or {}).get("metrics") or {}).items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            metrics[f"train.{key}"] = float(value)
    return metrics


def _run_tags(name: str, record: dict[str, Any], digest: str) -> dict[str, str]:
    tags = {"llmops.model": name, "llmops.digest": digest, "mlflow.runName": f"register-{name}-{digest[:8]}",
            "llmops.gates_passed": str((record.get("eval") or {}).get("gates_passed"))}
    if record.get("git_commit"):
        tags["mlflow.source.git.commit"] = str(record["git_commit"])
    for key, value in sorted(((record.get("data") or {}).get("prep_hashes") or {}).items()):
        tags[f"llmops.data.{key}"[:250]] = str(value)[:5000]
    for source in (record.get("data") or {}).get("sources") or []:
        if isinstance(source, dict) and source.get("path") and source.get("sha256"):
            tags[f"llmops.source.{Path(str(source['path'])).name}"[:250]] = str(source["sha256"])
    return tags
