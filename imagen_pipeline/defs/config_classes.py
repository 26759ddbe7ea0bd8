"""Dagster config classes made from the plain pydantic models of ``imagen.yaml``.

The settings are declared once, as pydantic models the plain modules validate and test
without Dagster (an adapter's block, ``output:``, ``cloud:``, ...). The Dagster layer needs
them as ``dagster.Config`` classes to make them resource fields: :func:`config_class`
makes one per model with the same fields, defaults and descriptions, so the resources page
and the launchpad show every setting as ``imagen.yaml`` names it. Types Dagster's config
system has no match for are widened: a ``Literal`` becomes ``str`` and a union of several
types ``Any``; the model validates the values again when the plain layer builds it.
"""

from __future__ import annotations

import types
import typing
from functools import cache
from typing import Any, Literal, get_args, get_origin

import dagster as dg
from pydantic import BaseModel, Field, create_model


def _config_type(annotation: Any) -> Any:
    """The Dagster-config counterpart of one field's type."""
    origin = get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return config_class(annotation)
    if origin is Literal:
        return str
    if origin in (typing.Union, types.UnionType):
        members = [member for member in get_args(annotation) if member is not type(None)]
        inner = _config_type(members[0]) if len(members) == 1 else Any
        return inner | None if type(None) in get_args(annotation) and inner is not Any else inner
    if origin is list:
        return list[_config_type(get_args(annotation)[0])]
    if origin is dict:
        key, value = get_args(annotation)
        return dict[key, _config_type(value)]
    return annotation


@cache
def config_class(model: type[BaseModel]) -> type[dg.Config]:
    """A ``dagster.Config`` with ``model``'s fields (ClassVars and validators left out)."""
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        factory = info.default_factory
        if isinstance(factory, type) and issubclass(factory, BaseModel):
            factory = config_class(factory)
        if factory is not None:
            default = Field(default_factory=factory, description=info.description)
        else:
            default = Field(default=info.default, description=info.description)
        fields[name] = (_config_type(info.annotation), default)
    created = create_model(  # type: ignore[call-overload]
        f"{model.__name__}Settings",
        __base__=dg.Config,
        __doc__=(model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else None,
        **fields,
    )
    return typing.cast(type[dg.Config], created)


def as_config(model: BaseModel) -> dg.Config:
    """``model``'s values as its config class."""
    return config_class(type(model))(**model.model_dump(mode="json"))
