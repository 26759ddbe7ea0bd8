"""The HTTP side of OpenAI's image API: the one POST of a generation (JSON) or an edit
(multipart/form-data: the body's fields, ``image[]`` per source image, an optional ``mask``),
the headers, the error body and how each failure is classified. The key never appears in a
message."""

from __future__ import annotations

import base64
import binascii
import re
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from imagen_pipeline.backends.http_transport import (
    USER_AGENT,
    is_transient_status,
    retry_after_header_s,
)
from imagen_pipeline.errors import BackendError, PermanentBackendError, TransientBackendError

CONTENT_POLICY_CODES = frozenset({"content_policy_violation", "moderation_blocked"})
RETRYABLE_STATUSES = frozenset({408, 409, 429})
"""4xx answers worth a retry (every 5xx is)."""
API_KEY_LIKE = re.compile(r"\bsk-[A-Za-z0-9_*\-]{4,}")
TRY_AGAIN = re.compile(r"try again in (?:(\d+)m)?(\d+(?:\.\d+)?)(ms|s)\b", re.IGNORECASE)


def retry_after_s(response: httpx.Response, message: str) -> float | None:
    """Seconds to wait: ``retry-after-ms``, ``Retry-After`` (seconds or date), else the body."""
    milliseconds = response.headers.get("retry-after-ms", "").strip()
    if milliseconds:
        try:
            return max(0.0, float(milliseconds) / 1000)
        except ValueError:
            pass
    from_header = retry_after_header_s(response.headers.get("retry-after", ""))
    if from_header is not None:
        return from_header
    match = TRY_AGAIN.search(message)
    if match is None:
        return None
    minutes, amount, unit = match.groups()
    seconds = float(amount) / (1000 if unit.lower() == "ms" else 1)
    return seconds + 60 * int(minutes or 0)


def redact(text: str, key: str) -> str:
    """``text`` without the API key, whole or masked the way OpenAI echoes it (``sk-...``)."""
    if key:
        text = text.replace(key, "***")
    return API_KEY_LIKE.sub("sk-***", text)


@dataclass(frozen=True)
class ApiError:
    """The ``error`` object of an OpenAI error response."""

    message: str
    type: str | None
    code: str | None
    param: str | None


def parse_api_error(response: httpx.Response) -> ApiError:
    """``{"error": {"message", "type", "param", "code"}}``, or the body text when not JSON."""
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):

        def text(key: str) -> str | None:
            value = error.get(key)
            return None if value is None or value == "" else str(value)

        message = " ".join(str(error.get("message") or "").split())
        return ApiError(
            message=message or response.reason_phrase,
            type=text("type"),
            code=text("code"),
            param=text("param"),
        )
    message = " ".join(response.text.split())[:300] or response.reason_phrase
    return ApiError(message=message, type=None, code=None, param=None)


@dataclass(frozen=True)
class EditFile:
    """One file part of an edit: the checked local copy, its name in the form and type."""

    path: Path
    filename: str
    mime: str


@dataclass(frozen=True)
class ImagesApi:
    """Where and how the adapter calls the image API (the block's connection settings)."""

    base_url: str
    key_env: str
    """Name of the env var holding the key, for messages."""
    organization: str | None
    project: str | None
    timeout_s: float
    """Longest wait for the answer of a generation."""
    request_timeout_s: float
    """Connect timeout."""

    def headers(self, key: str) -> dict[str, str]:
        """Authorization, User-Agent and the optional organization and project headers."""
        headers = {"Authorization": f"Bearer {key}", "User-Agent": USER_AGENT}
        if self.organization:
            headers["OpenAI-Organization"] = self.organization
        if self.project:
            headers["OpenAI-Project"] = self.project
        return headers

    def generate(self, body: dict[str, Any], key: str) -> httpx.Response:
        """POST one generation; every failure raised classified, the key in no message."""
        return self._post("/images/generations", key, json=body)

    def edit(
        self,
        body: dict[str, Any],
        images: list[EditFile],
        mask: EditFile | None,
        key: str,
    ) -> httpx.Response:
        """POST one edit as multipart/form-data: ``body``'s parameters as fields, each image
        as an ``image[]`` part, the mask as ``mask``."""
        fields = {name: str(value) for name, value in body.items()}
        with ExitStack() as stack:
            parts = [
                (name, (item.filename, stack.enter_context(item.path.open("rb")), item.mime))
                for name, item in [
                    *(("image[]", image) for image in images),
                    *([("mask", mask)] if mask else []),
                ]
            ]
            return self._post("/images/edits", key, data=fields, files=parts)

    def _post(self, path: str, key: str, **content: Any) -> httpx.Response:
        url = f"{self.base_url}{path}"
        timeout = httpx.Timeout(self.timeout_s, connect=self.request_timeout_s)
        try:
            response = httpx.post(url, headers=self.headers(key), timeout=timeout, **content)
        except httpx.ConnectTimeout:
            raise TransientBackendError(
                f"OpenAI images: cannot reach {self.base_url}: connect timed out after "
                f"{self.request_timeout_s:g}s"
            ) from None
        except httpx.TimeoutException as error:
            raise TransientBackendError(
                f"OpenAI images: no answer within {self.timeout_s:g}s ({type(error).__name__}); "
                "OpenAI may still generate and bill that image"
            ) from None
        except httpx.TransportError as error:
            raise TransientBackendError(
                f"OpenAI images: cannot reach {self.base_url}: {type(error).__name__}: "
                f"{redact(str(error), key)}"
            ) from None
        if not response.is_success:
            raise self.error(response, key)
        return response

    def error(self, response: httpx.Response, key: str) -> BackendError:
        """The transient or permanent error for a non-success answer."""
        status = response.status_code
        error = parse_api_error(response)
        message = redact(error.message, key)
        tags = [str(status), *(item for item in (error.code, error.param) if item)]
        request_id = response.headers.get("x-request-id")
        where = f" [request {request_id}]" if request_id else ""
        label = f"OpenAI images ({', '.join(tags)})"
        if status == 429 and "insufficient_quota" in (error.code, error.type):
            return PermanentBackendError(f"{label}: quota exhausted: {message}{where}")
        if is_transient_status(status, RETRYABLE_STATUSES):
            return TransientBackendError(
                f"{label}: {message}{where}", retry_after_s=retry_after_s(response, message)
            )
        if error.code in CONTENT_POLICY_CODES:
            return PermanentBackendError(
                f"{label}: rejected by OpenAI's safety system: {message}{where}",
                public=f"OpenAI's safety system rejected the request: {message}",
            )
        if status == 401:
            return PermanentBackendError(
                f"{label}: the key in ${self.key_env} was refused: {message}{where}"
            )
        return PermanentBackendError(f"{label}: {message}{where}")


def image_payload(response: httpx.Response) -> tuple[dict[str, Any], dict[str, Any]]:
    """The answer's body and its first ``data`` item, which must hold ``b64_json``."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    data = payload.get("data") if isinstance(payload, dict) else None
    first = data[0] if isinstance(data, list) and data else None
    if not isinstance(payload, dict) or not isinstance(first, dict):
        raise TransientBackendError(
            f"OpenAI images: HTTP {response.status_code} without an image in the body"
        )
    if not isinstance(first.get("b64_json"), str):
        raise PermanentBackendError(
            "OpenAI images: the answer has no b64_json image"
            + (" (it has a URL; this backend asks for b64_json)" if first.get("url") else "")
        )
    return payload, first


def decode_image(image_data: dict[str, Any]) -> bytes:
    """The bytes of a ``data`` item's ``b64_json``; invalid base64 is permanent."""
    try:
        return base64.b64decode(image_data["b64_json"], validate=True)
    except binascii.Error as error:
        raise PermanentBackendError(f"OpenAI images: b64_json is invalid: {error}") from None
