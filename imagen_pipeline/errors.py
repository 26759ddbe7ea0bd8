"""Error types shared by every layer.

Every error carries a message that is safe to show: it never contains a credential value.
``transient`` tells the Dagster layer whether a retry can help.
"""

from __future__ import annotations


class ImagenError(Exception):
    """Base class for expected, user-facing errors."""

    transient: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(ImagenError):
    """`imagen.yaml` is missing a value, has a wrong one, or names something unknown."""


class MissingCredentialError(ConfigError):
    """An env var named in the config for a secret is not set."""

    def __init__(self, env_var: str, field_path: str) -> None:
        super().__init__(
            f"{field_path}: environment variable {env_var} is not set "
            f"(the config names the variable; export it before running)"
        )
        self.env_var = env_var
        self.field_path = field_path


class InvalidRequestError(ImagenError):
    """A generation request has a field outside its allowed values."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class BackendError(ImagenError):
    """A backend could not produce an image."""


class TransientBackendError(BackendError):
    """The backend failed in a way a later attempt may not (timeouts, 429, 5xx, restarts)."""

    transient = True

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PermanentBackendError(BackendError):
    """The backend rejected the request; retrying the same request cannot succeed."""


class OutputError(ImagenError):
    """An image or sidecar could not be written where the config says."""
