"""The HTTP calls of one Replicate generation, with every failure classified.

Upload large source images with the Files API, create a prediction (``Prefer: wait``),
recover one whose create response was lost by listing recent predictions, poll ``urls.get``,
cancel, classify the end state, download the output with a size cap and a timeout, and
delete the uploaded files once the prediction has ended. The token is only ever sent below
the base URL and never appears in a message.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from imagen_pipeline.backends.http_transport import (
    LOST_RESPONSE_ERRORS,
    USER_AGENT,
    retry_after_header_s,
    status_error,
    tls_context,
)
from imagen_pipeline.backends.replicate.files import (
    FILE_INPUTS,
    TERMINAL_STATUSES,
    ReplicateFiles,
    problem_detail,
)
from imagen_pipeline.backends.replicate.models import ModelRef
from imagen_pipeline.errors import BackendError, PermanentBackendError, TransientBackendError

RETRYABLE_STATUSES = frozenset({408, 409, 425, 429})
"""4xx answers of the API worth a retry (every 5xx is)."""
DOWNLOAD_RETRYABLE_STATUSES = frozenset({429})
"""4xx answers of an output download worth a retry (every 5xx is)."""

NOT_ADOPTABLE_STATUSES = frozenset({"failed", "canceled", "aborted"})

CONTENT_POLICY_MARKERS = ("nsfw", "flagged as sensitive", "(e005)", "content moderat")
"""Lower-case fragments of Replicate's content-policy failures (permanent)."""

TRANSIENT_FAILURE_MARKERS = ("e1000", "e6716", "prediction interrupted", "please retry")
"""Lower-case fragments of failures a new prediction may not hit (transient)."""

RATE_LIMIT_RESET = re.compile(r"resets in ~?(\d+(?:\.\d+)?)\s*s")


def redact(text: str, token: str) -> str:
    """``text`` with the token blanked out (defence in depth for echoed bodies)."""
    return text.replace(token, "***")


def retry_after_s(response: httpx.Response, detail: str) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or HTTP date), else from the 429 body."""
    from_header = retry_after_header_s(response.headers.get("Retry-After", ""))
    if from_header is not None:
        return from_header
    match = RATE_LIMIT_RESET.search(detail)
    return float(match.group(1)) if match else None


@dataclass(frozen=True)
class ApiSettings:
    """What the calls need of the instance's settings (``imagen.yaml``'s block)."""

    base_url: str
    api_token_env: str
    request_timeout_s: float
    sync_wait_s: int
    poll_interval_s: float
    timeout_s: float
    download_timeout_s: float
    max_download_bytes: int
    recovery_window_s: float
    recovery_max_pages: int


class ReplicateApi(ReplicateFiles):
    """The HTTP calls of one generation. The token stays in here, out of every message."""

    def __init__(self, settings: ApiSettings, token: str, log: Any) -> None:
        self.settings = settings
        self.base_url = settings.base_url
        self.log = log
        self._token = token
        self._auth = {"Authorization": f"Bearer {token}"}
        self.create_unanswered = False
        """A create was sent and its response lost: a prediction may exist unseen."""
        self._client = httpx.Client(
            headers={"User-Agent": USER_AGENT},
            timeout=httpx.Timeout(settings.request_timeout_s),
            verify=tls_context(),
        )

    def close(self) -> None:
        """Release the connection pool."""
        self._client.close()

    def __enter__(self) -> ReplicateApi:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def redact(self, text: str) -> str:
        """``text`` with the token blanked out (defence in depth for echoed bodies)."""
        return redact(text, self._token)

    def api_url(self, candidate: Any, fallback_path: str) -> str:
        """``candidate`` if it lies under the base URL, else base URL + ``fallback_path``.

        The token is only ever sent below the configured base URL.
        """
        if isinstance(candidate, str) and candidate.startswith(self.base_url + "/"):
            return candidate
        return self.base_url + fallback_path

    def error(self, response: httpx.Response, what: str) -> BackendError:
        """The transient or permanent error for a non-success API response."""
        status = response.status_code
        detail = self.redact(problem_detail(response))
        public = None
        if status == 429:
            reason = "rate limited (429)"
        elif status in (401, 403):
            reason = f"the token in ${self.settings.api_token_env} was refused ({status})"
        elif status == 404:
            reason = "not found (404)"
        elif status == 413:
            reason = "too large (413)"
        elif status == 422:
            reason = "invalid request (422)"
            public = f"the backend refused the request as invalid: {detail}"
        else:
            reason = f"HTTP {status}"
        return status_error(
            status,
            f"Replicate {what}: {reason}: {detail}",
            retryable=RETRYABLE_STATUSES,
            retry_after_s=retry_after_s(response, detail) if status == 429 else None,
            public=public,
        )

    def prediction_json(self, response: httpx.Response, what: str) -> dict[str, Any]:
        """The prediction in a success response; a malformed one is transient."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("id"), str)
            or not isinstance(body.get("status"), str)
        ):
            raise TransientBackendError(f"Replicate {what}: response is not a prediction")
        return body

    def call(self, method: str, url: str, what: str) -> httpx.Response:
        """One API request without a body; transport failures are transient."""
        try:
            response = self._client.request(method, url, headers=self._auth)
        except httpx.TimeoutException as error:
            raise TransientBackendError(
                f"Replicate {what}: timed out ({type(error).__name__})"
            ) from None
        except httpx.TransportError as error:
            raise self.unreachable(what, error) from None
        if not response.is_success:
            raise self.error(response, what)
        return response

    def create(self, ref: ModelRef, data: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """POST the prediction; returns it and whether it was recovered after a lost response."""
        body: dict[str, Any] = {"input": data}
        if ref.version is not None:
            body["version"] = ref.version
        headers = dict(self._auth)
        wait = self.settings.sync_wait_s
        if wait:
            headers["Prefer"] = f"wait={wait}"
        timeout = httpx.Timeout(
            self.settings.request_timeout_s, read=self.settings.request_timeout_s + wait
        )
        try:
            response = self._client.post(
                self.base_url + ref.create_path, json=body, headers=headers, timeout=timeout
            )
        except LOST_RESPONSE_ERRORS as error:
            self.create_unanswered = True
            self.log.warning(
                f"Replicate create prediction: response lost ({type(error).__name__}); "
                "looking for the prediction before creating another"
            )
            found = self.find_existing(ref, data)
            if found is None:
                raise TransientBackendError(
                    "Replicate create prediction: the response was lost and no matching "
                    "prediction is listed yet; the retry looks again before creating one"
                ) from None
            return found, True
        except httpx.TransportError as error:
            raise TransientBackendError(
                f"Replicate create prediction: cannot reach {self.base_url}: "
                f"{type(error).__name__}: {self.redact(str(error))}"
            ) from None
        if not response.is_success:
            raise self.error(response, "create prediction")
        return self.prediction_json(response, "create prediction"), False

    def find_existing(self, ref: ModelRef, data: dict[str, Any]) -> dict[str, Any] | None:
        """The newest live prediction of this model with exactly this input, if one is listed."""
        since = datetime.now(UTC) - timedelta(seconds=self.settings.recovery_window_s)
        stamp = since.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        url = f"{self.base_url}/predictions?created_after={quote(stamp)}"
        for _ in range(self.settings.recovery_max_pages):
            try:
                page = self.call("GET", url, "list predictions").json()
            except ValueError:
                page = None
            if not isinstance(page, dict):
                raise TransientBackendError("Replicate list predictions: response is not a page")
            for prediction in page.get("results") or []:
                if self._is_same(prediction, ref, data):
                    self.log.info(
                        f"Replicate: found prediction {prediction['id']} from an earlier "
                        f"attempt (status {prediction['status']}); not creating another"
                    )
                    return prediction
            following = page.get("next")
            if not isinstance(following, str) or not following.startswith(self.base_url + "/"):
                return None
            url = following
        return None

    @staticmethod
    def _is_same(prediction: Any, ref: ModelRef, data: dict[str, Any]) -> bool:
        if not isinstance(prediction, dict) or not isinstance(prediction.get("id"), str):
            return False
        status = prediction.get("status")
        if not isinstance(status, str) or status in NOT_ADOPTABLE_STATUSES:
            return False
        stored = prediction.get("input")
        if not isinstance(stored, dict) or not all(
            _same_input(key, stored.get(key), value) for key, value in data.items()
        ):
            return False
        if ref.version is not None:
            return prediction.get("version") == ref.version
        return prediction.get("model") == ref.name

    def wait(self, prediction: dict[str, Any], deadline: float) -> dict[str, Any]:
        """Poll ``urls.get`` until the prediction ends; past the deadline, cancel it."""
        status = prediction["status"]
        while status not in TERMINAL_STATUSES:
            if time.monotonic() >= deadline:
                self.cancel(prediction)
                raise TransientBackendError(
                    f"Replicate prediction {prediction['id']} did not finish within "
                    f"{self.settings.timeout_s:g}s (status {status}); canceled it"
                )
            time.sleep(self.settings.poll_interval_s)
            prediction_id = prediction["id"]
            url = self.api_url(
                (prediction.get("urls") or {}).get("get"), f"/predictions/{quote(prediction_id)}"
            )
            what = f"get prediction {prediction_id}"
            prediction = self.prediction_json(self.call("GET", url, what), what)
            if prediction["status"] != status:
                status = prediction["status"]
                self.log.info(f"Replicate prediction {prediction_id}: {status}")
        return prediction

    def cancel(self, prediction: dict[str, Any]) -> None:
        """POST ``urls.cancel`` for an unfinished prediction; failures are only logged."""
        if prediction.get("status") in TERMINAL_STATUSES:
            return
        prediction_id = prediction["id"]
        url = self.api_url(
            (prediction.get("urls") or {}).get("cancel"),
            f"/predictions/{quote(prediction_id)}/cancel",
        )
        try:
            response = self._client.post(url, headers=self._auth)
        except httpx.HTTPError as error:
            self.log.warning(
                f"Replicate: could not cancel prediction {prediction_id}: {type(error).__name__}"
            )
            return
        if response.is_success:
            self.log.warning(f"Replicate: canceled prediction {prediction_id}")
        else:
            self.log.warning(
                f"Replicate: cancel of prediction {prediction_id} answered "
                f"{response.status_code}: {self.redact(problem_detail(response))}"
            )

    def raise_for_outcome(self, prediction: dict[str, Any]) -> None:
        """Nothing for ``succeeded``; the classified error for any other end state."""
        status = prediction["status"]
        if status == "succeeded":
            return
        label = f"Replicate prediction {prediction['id']} {status}"
        message = self.redact(" ".join(str(prediction.get("error") or "").split()))
        if status == "failed":
            lowered = message.lower()
            if any(marker in lowered for marker in CONTENT_POLICY_MARKERS):
                raise PermanentBackendError(
                    f"{label}: rejected by content policy: {message}",
                    public=f"the backend's content policy rejected the request: {message}",
                )
            if any(marker in lowered for marker in TRANSIENT_FAILURE_MARKERS):
                raise TransientBackendError(f"{label}: {message}")
            raise PermanentBackendError(f"{label}: {message or 'no error message'}")
        if status == "aborted":
            raise TransientBackendError(f"{label} before it ran: {message or 'no error message'}")
        raise PermanentBackendError(f"{label} outside this run")

    def output_url(self, prediction: dict[str, Any]) -> str:
        """The first file of ``output`` (a URL or a list of URLs)."""
        output = prediction.get("output")
        if isinstance(output, str):
            urls = [output]
        elif isinstance(output, list):
            urls = [item for item in output if isinstance(item, str)]
        else:
            urls = []
        if not urls:
            raise PermanentBackendError(
                f"Replicate prediction {prediction['id']} succeeded without an output file"
            )
        if len(urls) > 1:
            self.log.info(
                f"Replicate prediction {prediction['id']} returned {len(urls)} files; "
                "keeping the first"
            )
        return urls[0]

    def download(self, url: str) -> bytes:
        """The output file, at most ``max_download_bytes``, within ``download_timeout_s``."""
        limit = self.settings.max_download_bytes
        if url.startswith("data:"):
            return self._decode_data_uri(url, limit)
        if urlsplit(url).scheme not in ("http", "https"):
            raise PermanentBackendError("Replicate output is not an http(s) URL")
        headers = dict(self._auth) if url.startswith(self.base_url + "/") else {}
        timeout = self.settings.download_timeout_s
        deadline = time.monotonic() + timeout
        chunks: list[bytes] = []
        received = 0
        try:
            with self._client.stream(
                "GET", url, headers=headers, timeout=timeout, follow_redirects=True
            ) as response:
                if response.status_code != 200:
                    raise self._download_error(response)
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise self._too_large(int(declared))
                for chunk in response.iter_bytes():
                    received += len(chunk)
                    if received > limit:
                        raise self._too_large(received)
                    if time.monotonic() > deadline:
                        raise TransientBackendError(
                            f"Replicate output download took longer than {timeout:g}s"
                        )
                    chunks.append(chunk)
        except httpx.TimeoutException:
            raise TransientBackendError(
                f"Replicate output download timed out after {timeout:g}s"
            ) from None
        except httpx.TransportError as error:
            raise TransientBackendError(
                f"Replicate output download failed: {type(error).__name__}"
            ) from None
        return b"".join(chunks)

    def _download_error(self, response: httpx.Response) -> BackendError:
        status = response.status_code
        return status_error(
            status,
            f"Replicate output download: HTTP {status}",
            retryable=DOWNLOAD_RETRYABLE_STATUSES,
            retry_after_s=retry_after_s(response, "") if status == 429 else None,
        )

    def _too_large(self, size: int) -> PermanentBackendError:
        return PermanentBackendError(
            f"Replicate output is larger than max_download_bytes "
            f"({self.settings.max_download_bytes}): {size} bytes or more"
        )

    def _decode_data_uri(self, url: str, limit: int) -> bytes:
        header, _, payload = url.partition(",")
        if not header.endswith(";base64"):
            raise PermanentBackendError("Replicate output is a data URI that is not base64")
        if len(payload) * 3 // 4 > limit:
            raise self._too_large(len(payload) * 3 // 4)
        try:
            return base64.b64decode(payload, validate=True)
        except binascii.Error as error:
            raise PermanentBackendError(f"Replicate output data URI is invalid: {error}") from None


def _same_input(key: str, stored: Any, sent: Any) -> bool:
    """Whether a listed prediction's input ``key`` is what this attempt sends. A source
    image may be listed as the data URI sent, as a file URL of Replicate's own (not known
    without the real service), or as the URL of a file an earlier attempt uploaded (each
    attempt uploads its own), so for those inputs the same shape is enough: the prompt,
    seed and every other input still have to be equal."""
    if stored == sent:
        return True
    if key not in FILE_INPUTS:
        return False
    if isinstance(sent, str):
        return isinstance(stored, str) and bool(stored)
    return (
        isinstance(sent, list)
        and isinstance(stored, list)
        and len(stored) == len(sent)
        and all(isinstance(item, str) and item for item in stored)
    )
