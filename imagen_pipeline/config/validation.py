"""Turn pydantic validation errors into messages that name the key path and allowed values."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from pydantic import BaseModel, ValidationError


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    current: type[BaseModel] = model
    for part in loc[:-1]:
        field = current.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            current = annotation
        else:
            return []
    return sorted(current.model_fields)


def describe_validation_error(
    error: ValidationError,
    model: type[BaseModel],
    prefix: str = "",
    secret_fields: Collection[str] = (),
) -> str:
    """One line per problem: ``<key.path>: <what is wrong>``; never echoes secret fields."""
    lines = []
    for item in error.errors():
        loc = tuple(item["loc"])
        path = ".".join(str(part) for part in (*([prefix] if prefix else []), *loc))
        if item["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc)
            hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
            lines.append(f"{path}: unknown key{hint}")
            continue
        message = item["msg"]
        if loc and str(loc[0]) not in secret_fields and item["type"] != "missing":
            message = f"{message} (got {item.get('input')!r})"
        lines.append(f"{path}: {message}")
    return "\n".join(lines)
