"""Building backend instances from config blocks; credentials only as env var names."""

from __future__ import annotations

from typing import ClassVar

import pytest
from pydantic import Field

from imagen_pipeline.backends import registry
from imagen_pipeline.backends.contract import (
    GenerationContext,
    GenerationRequest,
    GenerationResult,
    ImageBackend,
)
from imagen_pipeline.backends.registry import build_backend
from imagen_pipeline.errors import ConfigError, MissingCredentialError


class TokenBackend(ImageBackend):
    """A backend that needs a secret, to exercise the credential rules."""

    credential_fields: ClassVar[tuple[str, ...]] = ("api_token_env",)
    api_token_env: str = Field(description="Env var holding the token.")

    def generate(self, request: GenerationRequest, context: GenerationContext) -> GenerationResult:
        """Never called in these tests."""
        raise NotImplementedError


@pytest.fixture
def token_backend_type(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(registry.BACKEND_TYPES, "token", TokenBackend)
    return "token"


def test_block_must_be_mapping_with_type() -> None:
    with pytest.raises(ConfigError, match=r"backends\.a: must be a mapping with a 'type' key"):
        build_backend("a", "mock")
    with pytest.raises(ConfigError, match=r"backends\.a\.type: missing; registered types: .*mock"):
        build_backend("a", {"model": "x"})


def test_credential_field_must_be_env_var_name_and_value_is_never_echoed(
    token_backend_type: str,
) -> None:
    secret = "r8_ThisLooksLikeAToken123"
    with pytest.raises(ConfigError) as error:
        build_backend("cloud", {"type": token_backend_type, "api_token_env": secret})
    assert "backends.cloud.api_token_env: must be the NAME of an environment variable" in str(
        error.value
    )
    assert secret not in str(error.value)


def test_missing_credential_names_variable_not_value(
    token_backend_type: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance = build_backend(
        "cloud", {"type": token_backend_type, "api_token_env": "IMAGEN_T_TOKEN"}
    )
    monkeypatch.delenv("IMAGEN_T_TOKEN", raising=False)
    assert instance.missing_credentials() == ["IMAGEN_T_TOKEN"]
    with pytest.raises(MissingCredentialError) as error:
        instance.require_credentials()
    assert "backends.cloud.api_token_env: environment variable IMAGEN_T_TOKEN is not set" in str(
        error.value
    )
    monkeypatch.setenv("IMAGEN_T_TOKEN", "s3cret-value")
    assert instance.missing_credentials() == []
    instance.require_credentials()
