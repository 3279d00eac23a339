"""Generate the config reference (README and `llmops config reference`) from the schema itself."""

from __future__ import annotations

import json
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from llmops_cli.config.schema import ProjectConfig


def reference_rows(model: type[BaseModel] = ProjectConfig, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key path, type, default, description) for every leaf field, depth first."""
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}"
        nested = _nested_model(field.annotation)
        if nested is not None and typing.get_origin(field.annotation) is not list:
            rows.extend(reference_rows(nested, prefix=f"{key}."))
            continue
        if nested is not None:  # a list of sub-models: document the item keys as key[].x
            rows.append((key, "list", _default(field), field.description or ""))
            rows.extend(reference_rows(nested, prefix=f"{key}[]."))
            continue
        rows.append((key, _type_name(field.annotation), _default(field), field.description or ""))
    return rows


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) is list:
        (arg,) = typing.get_args(annotation)
        return arg if isinstance(arg, type) and issubclass(arg, BaseModel) else None
    return None


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(str(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is list:
        return f"list[{', '.join(_type_name(a) for a in typing.get_args(annotation))}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: Any) -> str:
    if field.default is not PydanticUndefined:
        value = field.default
    elif field.default_factory is not None:
        value = field.default_factory()
    else:
        return "required"
    return json.dumps(value, default=_jsonable)


def _jsonable(obj: Any) -> Any:
    return obj.model_dump(exclude_defaults=True) if isinstance(obj, BaseModel) else str(obj)
