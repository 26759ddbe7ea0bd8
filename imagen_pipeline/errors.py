"""Error types shared by every layer.

Every error carries a message that is safe to show to the operator: it never contains a
credential value. ``transient`` tells the Dagster layer whether a retry can help.

``public`` is what a web user who queued the job may read in ``imagen.jobs.error``: one
sentence with no class names, no server paths and none of the server's configuration. Errors
about the user's own request say what is wrong with it; errors the user cannot fix say what
went wrong in general terms, and the full message stays in the Dagster run.
"""

from __future__ import annotations

from typing import ClassVar, Literal

Fault = Literal["request", "outage", "server"]
"""Whose failure a failed step is, which decides what becomes of a queued job:

- ``request``: the job's own request (a field out of range, a prompt the backend refuses,
  its owner's own daily limit); the job fails and the attempt counts;
- ``outage``: a part the pipeline depends on was away (a backend, a database, Storage, the
  broker, a worker); the job waits and runs again when it is back, the attempt not counted;
- ``server``: the server's set-up or code (imagen.yaml, a missing credential, a bug, the
  operator's daily budget); the job fails, the attempt is not counted and the operator is
  alerted.
"""

SEE_THE_RUN = "the operators can see the details in the job's Dagster run"


class ImagenError(Exception):
    """Base class for expected, user-facing errors."""

    transient: bool = False
    public_summary: ClassVar[str | None] = None
    """What a web user is told; None: the message itself is safe to show."""

    def __init__(self, message: str, *, public: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self._public = public

    def __str__(self) -> str:
        return self.message

    def add_context(self, prefix: str) -> None:
        """Put where the error happened (e.g. ``backend 'gpu' (comfyui): ``) in front of the
        message, once, so every report of it has the same shape."""
        if prefix and not self.message.startswith(prefix):
            self.message = f"{prefix}{self.message}"
            self.args = (self.message,)

    @property
    def public(self) -> str:
        """The error as a web user may read it (see the module docstring)."""
        return self._public or self.public_summary or self.message

    @property
    def fault(self) -> Fault:
        """Whose failure this is (:data:`Fault`): a transient error is an outage, any other
        the server's unless a subclass says the request caused it."""
        return "outage" if self.transient else "server"


class MaybeTransientError(ImagenError):
    """An error that a retry may or may not help with, as the place that raises it says
    (``transient``, e.g. Storage away, or an object that is wrong); a web user reads
    ``public_transient`` or ``public_summary`` accordingly."""

    public_transient: ClassVar[str]

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient

    @property
    def public(self) -> str:
        """``public_transient`` when a retry may help, else ``public_summary``."""
        return self.public_transient if self.transient else super().public


class ConfigError(ImagenError):
    """`imagen.yaml` is missing a value, has a wrong one, or names something unknown."""

    public_summary = f"the server is not set up for this request; {SEE_THE_RUN}"


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
    """A generation request has a field outside its allowed values.

    The message names the field and what is allowed; ``detail`` is extra context for the
    operator only (such as where the server's config lives), left out of ``public``.
    """

    def __init__(self, field: str, message: str, *, detail: str | None = None) -> None:
        super().__init__(f"{field}: {message}" + (f" ({detail})" if detail else ""))
        self.field = field
        self._public = f"{field}: {message}"

    @property
    def fault(self) -> Fault:
        """Always the request's."""
        return "request"


class BackendError(ImagenError):
    """A backend could not produce an image."""


class TransientBackendError(BackendError):
    """The backend failed in a way a later attempt may not (timeouts, 429, 5xx, restarts)."""

    transient = True
    public_summary = (
        "the image backend did not answer or was overloaded, even after retries; "
        "retry the job later"
    )

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class BackendUnavailableError(TransientBackendError):
    """The backend cannot take the job now (every server down, or no queue slot free in
    time): its ``fallback`` instances may. ``summary`` says why in a few words."""

    def __init__(
        self, message: str, retry_after_s: float | None = None, *, summary: str | None = None
    ) -> None:
        super().__init__(message, retry_after_s)
        self.summary = summary or message


class UnreachableBackendError(BackendUnavailableError):
    """The server did not answer, or lost the job (it restarted): another server of the same
    backend may take the job at once."""


class PermanentBackendError(BackendError):
    """The backend rejected the request; retrying the same request cannot succeed.

    Pass ``public`` when the rejection is about the request itself (content policy, an
    option the model does not take), so the web user learns what to change.
    """

    public_summary = f"the image backend could not make this image; {SEE_THE_RUN}"

    @property
    def fault(self) -> Fault:
        """The request's when the rejection is about it (a ``public`` sentence was given),
        else the server's (a request the pipeline built wrongly)."""
        return "request" if self._public else "server"


class OutputError(ImagenError):
    """An image or sidecar could not be written where the config says."""

    public_summary = f"the server could not save the image; {SEE_THE_RUN}"
