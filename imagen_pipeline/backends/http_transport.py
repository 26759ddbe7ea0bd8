"""What the HTTP adapters share about talking to a server: who they say they are, which
transport errors may hide a request that arrived, how long a server asks them to wait, which
HTTP statuses are worth a retry, and the ``imagen backends --check`` probe of an API that
takes a secret."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import cache

import httpx

from imagen_pipeline.backends.contract import BackendCheck
from imagen_pipeline.config.secrets import resolve_secret
from imagen_pipeline.errors import (
    BackendError,
    MissingCredentialError,
    PermanentBackendError,
    TransientBackendError,
)

USER_AGENT = "imagen-pipeline"


@cache
def tls_context() -> ssl.SSLContext:
    """The process's one TLS context for ``httpx.Client(verify=...)``: httpx's default
    (certifi's CA bundle, ``SSL_CERT_FILE``/``SSL_CERT_DIR`` honoured), built once instead
    of per client, since loading the CA bundle takes about 40 ms and a ComfyUI generation
    opens a client per server it talks to."""
    return httpx.create_ssl_context()


LOST_RESPONSE_ERRORS = (
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)
"""Transport errors after which the request may have reached the server (only the answer
was lost), so a create or submit must not simply be sent again."""


def retry_after_header_s(value: str) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delay seconds or an HTTP date), else None."""
    value = value.strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def is_transient_status(status: int, retryable: Collection[int]) -> bool:
    """True if a later attempt may get past HTTP ``status``: every 5xx, and the 4xx statuses
    an API answers for passing conditions (``retryable``, e.g. 408 and 429)."""
    return status >= 500 or status in retryable


def status_error(
    status: int,
    message: str,
    *,
    retryable: Collection[int],
    retry_after_s: float | None = None,
    public: str | None = None,
) -> BackendError:
    """The error for a non-success HTTP ``status``: transient (waiting ``retry_after_s``) if
    :func:`is_transient_status`, else permanent (``public``: what a web user may read)."""
    if is_transient_status(status, retryable):
        return TransientBackendError(message, retry_after_s=retry_after_s)
    return PermanentBackendError(message, public=public)


def probe_model(
    base_url: str,
    path: str,
    *,
    secret_env: str,
    secret_field: str,
    headers: Callable[[str], dict[str, str]],
    timeout_s: float,
    error_detail: Callable[[httpx.Response], str],
    redact: Callable[[str, str], str],
    model: str,
    found: str,
    refused: str,
    model_present: bool | None = True,
) -> BackendCheck:
    """``GET base_url + path`` with the secret from ``secret_env``: reachable, secret
    accepted, model present.

    ``headers`` builds the request headers for the secret, ``error_detail`` reads the API's
    error body and ``redact`` removes the secret from a text. A 200 reports ``found`` (and
    ``model_present``), a 401/403 ``"<refused> (<status>): <detail>"``, a 404 the model as
    not found; an unset secret is reported without sending anything.
    """
    try:
        secret = resolve_secret(secret_env, secret_field)
    except MissingCredentialError as error:
        return BackendCheck(
            reachable=None, credentials=False, model_present=None, detail=str(error)
        )
    try:
        response = httpx.get(base_url + path, headers=headers(secret), timeout=timeout_s)
    except httpx.HTTPError as error:
        return BackendCheck(
            reachable=False,
            credentials=None,
            model_present=None,
            detail=f"cannot reach {base_url}: {type(error).__name__}: {redact(str(error), secret)}",
        )
    detail = redact(error_detail(response), secret)
    status = response.status_code
    if status == 200:
        return BackendCheck(
            reachable=True, credentials=True, model_present=model_present, detail=found
        )
    if status in (401, 403):
        return BackendCheck(
            reachable=True,
            credentials=False,
            model_present=None,
            detail=f"{refused} ({status}): {detail}",
        )
    if status == 404:
        return BackendCheck(
            reachable=True,
            credentials=True,
            model_present=False,
            detail=f"model {model} not found: {detail}",
        )
    return BackendCheck(
        reachable=True, credentials=None, model_present=None, detail=f"HTTP {status}: {detail}"
    )
