"""The one place a registry backend is constructed."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmops_cli.config.schema import ProjectConfig
    from llmops_cli.registry.base import Registry


def open_registry(cfg: ProjectConfig) -> Registry:
    """The registry the config's `register` section selects (local store or MLflow)."""
    if cfg.registry.backend == "mlflow":
        from llmops_cli.registry.mlflow_store import MlflowRegistry

        return MlflowRegistry(cfg.registry.mlflow_tracking_uri, cache_root=cfg.registry.root,
                              artifact_location=cfg.registry.mlflow_artifact_location)
    from llmops_cli.registry.store import LocalRegistry

    return LocalRegistry(cfg.registry.root)
