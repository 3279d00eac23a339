"""Load a project config: YAML file + `--set key.path=value` overrides -> validated ProjectConfig.

Every problem is collected before raising, and each names where it came from (the file or the
--set flag), the key path, what is wrong and how to fix it.
"""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from llmops_cli.config.schema import ProjectConfig
from llmops_cli.errors import ConfigError

# Keys whose values are redacted by `config show`, belt and braces: the schema keeps only env var
# *names*, but a user may still paste a secret into a free-form string.
_SECRET_MARKERS = ("token", "secret", "password", "api_key", "apikey")


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> ProjectConfig:
    """Read, override and validate a project config; raise ConfigError listing every problem."""
    raw: dict[str, Any] = {}
    source = str(path) if path else "<defaults>"
    if path is not None:
        raw = _read_yaml(Path(path))
    override_paths: dict[tuple[str, ...], str] = {}
    problems: list[str] = []
    for item in overrides or []:
        try:
            keys, value = _parse_override(item)
        except ValueError as exc:
            problems.append(f"--set {item}: {exc}")
            continue
        override_paths[keys] = item
        _set_path(raw, keys, value)
    if problems:
        raise ConfigError(f"{source}: invalid --set override", problems=problems,
                          hint="use --set section.key=value, e.g. --set tune.epochs=2")
    try:
        return ProjectConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(
            f"{source}: {exc.error_count()} problem(s) in the config",
            problems=[_describe(err, source, override_paths) for err in exc.errors()],
            hint="`llmops config reference` lists every key with its type and default",
        ) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}", hint="pass --config FILE (see configs/demo.yaml)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}", hint="fix the YAML syntax") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}",
                          hint="start the file with sections such as `prep:` and `tune:`")
    return data


def _parse_override(item: str) -> tuple[tuple[str, ...], Any]:
    if "=" not in item:
        raise ValueError("expected key.path=value")
    key, _, text = item.partition("=")
    keys = tuple(k.strip() for k in key.strip().split("."))
    if not all(keys):
        raise ValueError(f"empty part in key path {key!r}")
    # Values are YAML scalars/flows so that `--set tune.epochs=2` is an int and `--set a=[x,y]` a list.
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    return keys, value


def _set_path(raw: dict[str, Any], keys: tuple[str, ...], value: Any) -> None:
    node = raw
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[keys[-1]] = value


def _describe(err: Any, source: str, override_paths: dict[tuple[str, ...], str]) -> str:
    loc = tuple(str(p) for p in err["loc"])
    dotted = ".".join(loc) or "<top level>"
    where = source
    for keys, item in override_paths.items():
        if loc[: len(keys)] == keys:
            where = f"--set {item}"
            break
    if err["type"] == "extra_forbidden":
        known = _field_names_at(ProjectConfig, loc[:-1])
        guess = difflib.get_close_matches(loc[-1], known, n=1)
        fix = f"did you mean '{guess[0]}'?" if guess else f"known keys here: {', '.join(sorted(known))}"
        return f"{where}: {dotted}: unknown key — {fix}"
    message = err["msg"]
    if err["type"] not in ("missing", "value_error", "assertion_error") and "input" in err:
        shown = repr(err["input"])
        message += f" (got {shown[:60]}{'…' if len(shown) > 60 else ''})"
    expected = _annotation_at(ProjectConfig, loc)
    if expected and err["type"] != "value_error":
        message += f"; expected {expected}"
    return f"{where}: {dotted}: {message}"


def _model_at(model: type[BaseModel], loc: tuple[str, ...]) -> type[BaseModel] | None:
    current: Any = model
    for part in loc:
        if part.isdigit():
            continue  # list index: stay on the list's item model
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = _fields_by_key(current).get(part)
        if field is None:
            return None
        current = _inner_model(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _inner_model(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (list, typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            inner = _inner_model(arg)
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
        return None
    return annotation


def _fields_by_key(model: type[BaseModel]) -> dict[str, Any]:
    """Fields keyed as they are spelled in YAML (the alias where one is set)."""
    return {field.alias or name: field for name, field in model.model_fields.items()}


def _field_names_at(model: type[BaseModel], loc: tuple[str, ...]) -> list[str]:
    target = _model_at(model, loc)
    return list(_fields_by_key(target)) if target else []


def _annotation_at(model: type[BaseModel], loc: tuple[str, ...]) -> str | None:
    parent = _model_at(model, loc[:-1]) if loc else None
    field = _fields_by_key(parent).get(loc[-1]) if parent else None
    if field is None:
        return None
    ann = field.annotation
    text = getattr(ann, "__name__", None) if isinstance(ann, type) else str(ann)
    return (text or str(ann)).replace("typing.", "")


def redact(data: Any) -> Any:
    """Copy of a config dict with secret-looking string values replaced (for `config show`)."""
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            lowered = str(key).lower()
            secret = any(m in lowered for m in _SECRET_MARKERS) and not lowered.endswith("_env")
            out[key] = "***" if secret and isinstance(value, str) and value else redact(value)
        return out
    if isinstance(data, list):
        return [redact(v) for v in data]
    return data
