"""Secrets come only from environment variables named in the config."""

from __future__ import annotations

import os
import re

from imagen_pipeline.errors import MissingCredentialError

ENV_VAR_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


def is_env_var_name(value: str) -> bool:
    """True if ``value`` looks like an env var name (upper case, digits, underscores)."""
    return bool(ENV_VAR_NAME.fullmatch(value))


def resolve_secret(env_var: str, field_path: str) -> str:
    """Return the value of ``env_var`` or fail naming the variable (never a value)."""
    value = os.environ.get(env_var)
    if not value:
        raise MissingCredentialError(env_var, field_path)
    return value
