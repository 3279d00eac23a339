"""The project config: one section per stage, each section's schema living next to its stage.

A project config (for example configs/demo.yaml) holds a section per stage, so that each DVC stage
can track exactly its own section as `params` and re-run only when that section changes.
Every field has a description: it feeds `llmops config reference` and the README's reference.
Secrets never live here: fields name the *environment variable* that holds them.
"""

from __future__ import annotations

from pydantic import ConfigDict, Field

from llmops_cli.config.base import Section
from llmops_cli.evaluate.config import EvalSection
from llmops_cli.model.config import ModelSection, ScaffoldSection
from llmops_cli.monitor.config import MonitorSection
from llmops_cli.prep.config import PrepSection
from llmops_cli.registry.config import RegisterSection
from llmops_cli.serving.config import ServeSection
from llmops_cli.tune.config import TuneSection

__all__ = [
    "EvalSection", "ModelSection", "MonitorSection", "PrepSection", "ProjectConfig", "ProjectSection",
    "RegisterSection", "ScaffoldSection", "ServeSection", "TuneSection",
]


class ProjectSection(Section):
    name: str = Field(
        "llmops-model",
        description="Model name in the registry and the served model id.",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
    )


class ProjectConfig(Section):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    project: ProjectSection = Field(default_factory=ProjectSection, description="Project identity.")
    model: ModelSection = Field(default_factory=ModelSection, description="Base model and how to load it.")
    scaffold: ScaffoldSection = Field(default_factory=ScaffoldSection, description="`llmops model scaffold`.")
    prep: PrepSection = Field(default_factory=PrepSection, description="`llmops prep`.")
    tune: TuneSection = Field(default_factory=TuneSection, description="`llmops tune`.")
    eval: EvalSection = Field(default_factory=EvalSection, description="`llmops eval`.")
    # `register` would shadow a BaseModel (ABC) attribute, so the attribute is `registry` and the
    # YAML key stays `register`.
    registry: RegisterSection = Field(
        default_factory=RegisterSection, alias="register", description="`llmops register`."
    )
    serve: ServeSection = Field(default_factory=ServeSection, description="`llmops serve`.")
    monitor: MonitorSection = Field(default_factory=MonitorSection, description="`llmops monitor`.")
