"""The Replicate backend: FLUX (and other) models through Replicate's HTTP API.

One generation creates a prediction with ``Prefer: wait`` (sync mode), polls ``urls.get``
until it ends, downloads the output file with a size cap and a timeout, and classifies every
failure as transient or permanent. A create whose response is lost is recovered by listing
recent predictions instead of creating a second one; a terminated run cancels its
prediction. docs/backends.md (section "Replicate") has the config block, the input mapping,
the price table and the error table.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal
from urllib.parse import quote, urlsplit

import httpx
from pydantic import Field, field_validator

from imagen_pipeline.backends.contract import (
    BackendCheck,
    GenerationContext,
    GenerationMetadata,
    GenerationRequest,
    GenerationResult,
    ImageBackend,
    derived_seed,
    image_mime_type,
)
from imagen_pipeline.backends.http_transport import (
    LOST_RESPONSE_ERRORS,
    USER_AGENT,
    probe_model,
    retry_after_header_s,
    status_error,
)
from imagen_pipeline.config.secrets import resolve_secret
from imagen_pipeline.errors import (
    BackendError,
    ImagenError,
    PermanentBackendError,
    TransientBackendError,
)

DEFAULT_BASE_URL = "https://api.replicate.com/v1"

DEFAULT_PRICES_USD: dict[str, float] = {
    "black-forest-labs/flux-schnell": 0.003,
    "black-forest-labs/flux-dev": 0.025,
    "black-forest-labs/flux-1.1-pro": 0.04,
    "black-forest-labs/flux-1.1-pro-ultra": 0.06,
}
"""Estimated US dollars per image (Replicate's published per-image prices); ``prices`` in the
config overrides or extends them."""

InputStyle = Literal["auto", "flux-schnell", "flux-dev", "flux-pro", "generic"]
AUTO_STYLES: dict[str, InputStyle] = {
    "flux-schnell": "flux-schnell",
    "flux-dev": "flux-dev",
    "flux-1.1-pro": "flux-pro",
}
"""Model name (the part after ``owner/``) -> input style chosen by ``input_style: auto``."""

FLUX_ASPECT_RATIOS: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "16:9": (1344, 768),
    "21:9": (1536, 640),
    "3:2": (1216, 832),
    "2:3": (832, 1216),
    "4:5": (896, 1088),
    "5:4": (1088, 896),
    "3:4": (896, 1152),
    "4:3": (1152, 896),
    "9:16": (768, 1344),
    "9:21": (640, 1536),
}
"""FLUX schnell/dev ``aspect_ratio`` choices and the 1-megapixel size each renders."""

QUARTER_MEGAPIXEL_MAX_AREA = 512 * 1024
"""Requests up to this many pixels use ``megapixels: "0.25"`` (half width and height)."""

FLUX_STEPS: dict[str, tuple[int, int]] = {"flux-schnell": (4, 4), "flux-dev": (50, 28)}
"""Style -> (largest ``num_inference_steps`` accepted, the model's default)."""

FLUX_PRO_MIN_SIDE, FLUX_PRO_MAX_SIDE, FLUX_PRO_MULTIPLE = 256, 1440, 32

RETRYABLE_STATUSES = frozenset({408, 409, 425, 429})
"""4xx answers of the API worth a retry (every 5xx is)."""
DOWNLOAD_RETRYABLE_STATUSES = frozenset({429})
"""4xx answers of an output download worth a retry (every 5xx is)."""

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled", "aborted"})
NOT_ADOPTABLE_STATUSES = frozenset({"failed", "canceled", "aborted"})

CONTENT_POLICY_MARKERS = ("nsfw", "flagged as sensitive", "(e005)", "content moderat")
"""Lower-case fragments of Replicate's content-policy failures (permanent)."""

TRANSIENT_FAILURE_MARKERS = ("e1000", "e6716", "prediction interrupted", "please retry")
"""Lower-case fragments of failures a new prediction may not hit (transient)."""

VERSION_ID = re.compile(r"^[0-9a-f]{64}$")
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
RATE_LIMIT_RESET = re.compile(r"resets in ~?(\d+(?:\.\d+)?)\s*s")


@dataclass(frozen=True)
class ModelRef:
    """``owner/name`` (official model), ``owner/name:version`` or a bare version id."""

    name: str | None
    version: str | None

    @property
    def create_path(self) -> str:
        """Path (below the base URL) that creates a prediction for this model."""
        if self.version is None:
            return f"/models/{self.name}/predictions"
        return "/predictions"


def parse_model_ref(value: str) -> ModelRef:
    """Split a configured ``model`` value; raises ``ValueError`` naming the accepted forms."""
    name, _, version = value.strip().partition(":")
    if not version and VERSION_ID.fullmatch(name):
        return ModelRef(name=None, version=name)
    if MODEL_NAME.fullmatch(name) and (not version or VERSION_ID.fullmatch(version)):
        return ModelRef(name=name, version=version or None)
    raise ValueError(
        "expected an official model 'owner/name', 'owner/name:<64-hex version id>' "
        "or a 64-hex version id"
    )


def resolve_input_style(ref: ModelRef, configured: InputStyle) -> InputStyle:
    """The input style to map requests with; ``auto`` looks at the model name."""
    if configured != "auto":
        return configured
    short_name = (ref.name or "").rpartition("/")[2]
    return AUTO_STYLES.get(short_name, "generic")


def flux_size(width: int, height: int) -> tuple[dict[str, str], tuple[int, int]]:
    """FLUX schnell/dev inputs closest to ``width`` x ``height``, and the size they render."""
    target = math.log(width / height)
    ratio = min(
        FLUX_ASPECT_RATIOS,
        key=lambda key: abs(
            math.log(FLUX_ASPECT_RATIOS[key][0] / FLUX_ASPECT_RATIOS[key][1]) - target
        ),
    )
    out_width, out_height = FLUX_ASPECT_RATIOS[ratio]
    fields = {"aspect_ratio": ratio}
    if width * height <= QUARTER_MEGAPIXEL_MAX_AREA:
        fields["megapixels"] = "0.25"
        out_width, out_height = out_width // 2, out_height // 2
    return fields, (out_width, out_height)


def flux_pro_size(width: int, height: int) -> tuple[int, int]:
    """``width``/``height`` for ``aspect_ratio: custom``: 256..1440, multiples of 32."""
    scale = min(1.0, FLUX_PRO_MAX_SIDE / max(width, height))
    scale = max(scale, FLUX_PRO_MIN_SIDE / min(width, height))

    def fit(side: int) -> int:
        rounded = round(side * scale / FLUX_PRO_MULTIPLE) * FLUX_PRO_MULTIPLE
        return min(FLUX_PRO_MAX_SIDE, max(FLUX_PRO_MIN_SIDE, rounded))

    return fit(width), fit(height)


def build_input(
    request: GenerationRequest,
    *,
    seed: int,
    style: InputStyle,
    output_format: str,
    guidance: float | None,
    log: Any,
) -> tuple[dict[str, Any], int | None]:
    """The prediction ``input`` for ``request`` and the steps the model will run (if known).

    Fields a model has no input for are left out and logged as ignored.
    """
    data: dict[str, Any] = {"prompt": request.prompt}
    steps = request.steps
    size = f"{request.width}x{request.height}"
    if style in FLUX_STEPS:
        fields, rendered = flux_size(request.width, request.height)
        data.update(fields)
        if rendered != (request.width, request.height):
            log.info(
                f"Replicate {style} renders fixed sizes: {size} requested, sending "
                f"{', '.join(f'{k} {v}' for k, v in fields.items())} "
                f"({rendered[0]}x{rendered[1]})"
            )
        most, default = FLUX_STEPS[style]
        if steps is None:
            steps = default
        else:
            if steps > most:
                log.warning(f"Replicate {style} accepts at most {most} steps; sending {most}")
                steps = most
            data["num_inference_steps"] = steps
    elif style == "flux-pro":
        width, height = flux_pro_size(request.width, request.height)
        data.update(aspect_ratio="custom", width=width, height=height)
        if (width, height) != (request.width, request.height):
            log.info(f"Replicate flux-pro: {size} requested, sending {width}x{height}")
        if steps is not None:
            log.info("Replicate flux-pro has no steps input; ignored the requested steps")
            steps = None
    else:
        data.update(width=request.width, height=request.height)
        if steps is not None:
            data["num_inference_steps"] = steps
        if request.negative:
            data["negative_prompt"] = request.negative
    if style != "generic":
        data["output_format"] = output_format
        if request.negative:
            log.info(f"Replicate {style} has no negative prompt input; ignored the negative prompt")
        if seed == 0:
            log.warning("FLUX on Replicate treats seed 0 as random; the image is not reproducible")
    if guidance is not None:
        if style == "flux-dev":
            data["guidance"] = guidance
        else:
            log.info(f"Replicate {style}: guidance applies to flux-dev only; ignored")
    data["seed"] = seed
    return data, steps


def problem_detail(response: httpx.Response) -> str:
    """The ``detail`` (or ``title``) of Replicate's error body, on one line."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        detail = body.get("detail") or body.get("title")
        if isinstance(detail, str) and detail.strip():
            lines = [line.strip() for line in detail.splitlines() if line.strip()]
            return "; ".join(lines)
    text = " ".join(response.text.split())
    return text[:300] or response.reason_phrase


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


class ReplicateBackend(ImageBackend):
    """Images from a model on Replicate (official FLUX models or any version id); costs money."""

    credential_fields: ClassVar[tuple[str, ...]] = ("api_token_env",)

    api_token_env: str = Field(
        default="REPLICATE_API_TOKEN",
        description="Name of the environment variable holding the Replicate API token.",
    )
    model: str = Field(
        description="Official model 'owner/name' (e.g. black-forest-labs/flux-schnell), "
        "'owner/name:<version id>' or a 64-hex version id."
    )
    base_url: str = Field(
        default=DEFAULT_BASE_URL, description="API root; change only for a proxy or a test server."
    )
    input_style: InputStyle = Field(
        default="auto",
        description="How requests map to model inputs: flux-schnell, flux-dev, flux-pro, generic "
        "(width/height/negative_prompt), or auto (from the model name).",
    )
    output_format: Literal["png", "webp", "jpg"] = Field(
        default="png", description="output_format asked of FLUX models."
    )
    guidance: float | None = Field(
        default=None, ge=0, le=10, description="FLUX dev guidance; empty: the model's default."
    )
    extra_input: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra model inputs sent with every prediction (e.g. go_fast, "
        "safety_tolerance); a request's backend_opts override them.",
    )
    prices: dict[str, float] = Field(
        default_factory=dict,
        description="US dollars per image by model or version id; overrides the built-in "
        "estimates.",
    )
    sync_wait_s: int = Field(
        default=60, ge=0, le=60, description="Seconds for 'Prefer: wait'; 0 creates async."
    )
    poll_interval_s: float = Field(default=1.0, gt=0, description="Seconds between polls.")
    timeout_s: float = Field(
        default=300.0, gt=0, description="Longest wait for one prediction; then it is canceled."
    )
    request_timeout_s: float = Field(
        default=30.0, gt=0, description="Timeout of each API request (plus sync_wait_s on create)."
    )
    download_timeout_s: float = Field(
        default=60.0, gt=0, description="Longest time to download the output file."
    )
    max_download_bytes: int = Field(
        default=50_000_000, gt=0, description="Largest output file accepted, in bytes."
    )
    recovery_window_s: float = Field(
        default=1800.0,
        gt=0,
        le=3600,
        description="How far back a retry looks for this run's prediction before creating one.",
    )
    recovery_max_pages: int = Field(
        default=5, ge=1, description="Pages of 100 recent predictions a retry looks through."
    )

    @field_validator("model")
    @classmethod
    def _check_model(cls, value: str) -> str:
        parse_model_ref(value)
        return value.strip()

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("must be an http(s) URL such as https://api.replicate.com/v1")
        return value.rstrip("/")

    def generate(self, request: GenerationRequest, context: GenerationContext) -> GenerationResult:
        """Create (or recover) a prediction, wait for it and download its image."""
        field_path = (
            f"backends.{context.instance_name}.api_token_env"
            if context.instance_name
            else "api_token_env"
        )
        token = resolve_secret(self.api_token_env, field_path)
        ref = parse_model_ref(self.model)
        style = resolve_input_style(ref, self.input_style)
        seed = request.seed if request.seed is not None else derived_seed(context)
        data, steps = build_input(
            request,
            seed=seed,
            style=style,
            output_format=self.output_format,
            guidance=self.guidance,
            log=context.log,
        )
        data.update(self.extra_input)
        data.update(request.backend_opts)
        started = time.monotonic()
        with self._api(token, context.log) as api:
            prediction = api.find_existing(ref, data) if context.attempt > 0 else None
            recovered = prediction is not None
            if prediction is None:
                prediction, recovered = api.create(ref, data)
            context.log.info(
                f"Replicate prediction {prediction['id']} for {self.model}: "
                f"{'recovered, ' if recovered else ''}status {prediction['status']}"
            )
            try:
                prediction = api.wait(prediction, started + self.timeout_s)
                api.raise_for_outcome(prediction)
                image = api.download(api.output_url(prediction))
            except ImagenError:
                raise
            except BaseException:
                api.cancel(prediction)
                raise
        metrics = prediction.get("metrics")
        sent_seed = data.get("seed")
        return GenerationResult(
            image=image,
            mime_type=image_mime_type(image, "Replicate output"),
            metadata=GenerationMetadata(
                model=self.model,
                seed=sent_seed if isinstance(sent_seed, int) else None,
                steps=steps,
                latency_s=round(time.monotonic() - started, 4),
                cost_usd=self.price_usd(),
                extra={
                    "prediction_id": prediction["id"],
                    "model_version": prediction.get("version"),
                    "replicate_model": prediction.get("model"),
                    "predict_time_s": (
                        metrics.get("predict_time") if isinstance(metrics, dict) else None
                    ),
                    "recovered_prediction": recovered,
                    "input": data,
                },
            ),
        )

    def price_usd(self) -> float:
        """Estimated price of one image: ``prices`` first, then the built-in table, else 0."""
        table = {**DEFAULT_PRICES_USD, **self.prices}
        if self.model in table:
            return table[self.model]
        ref = parse_model_ref(self.model)
        for key in (ref.name, ref.version):
            if key and key in table:
                return table[key]
        return 0.0

    def estimate_cost_usd(self, request: GenerationRequest) -> float:
        """The per-image price estimate for the configured model."""
        return self.price_usd()

    def check(self) -> BackendCheck:
        """Read the model (or version) with the token: reachable, token valid, model present."""
        ref = parse_model_ref(self.model)
        if ref.name is None:
            path = "/account"
        elif ref.version is None:
            path = f"/models/{ref.name}"
        else:
            path = f"/models/{ref.name}/versions/{ref.version}"
        return probe_model(
            self.base_url,
            path,
            secret_env=self.api_token_env,
            secret_field="api_token_env",
            headers=lambda token: {"Authorization": f"Bearer {token}", "User-Agent": USER_AGENT},
            timeout_s=self.request_timeout_s,
            error_detail=problem_detail,
            redact=redact,
            model=self.model,
            found="token valid" if ref.name is None else f"model {self.model} found",
            refused=f"token in ${self.api_token_env} rejected",
            model_present=None if ref.name is None else True,
        )

    @contextmanager
    def _api(self, token: str, log: Any) -> Iterator[ReplicateApi]:
        api = ReplicateApi(self, token, log)
        try:
            yield api
        finally:
            api.close()


class ReplicateApi:
    """The HTTP calls of one generation. The token stays in here, out of every message."""

    def __init__(self, settings: ReplicateBackend, token: str, log: Any) -> None:
        self.settings = settings
        self.base_url = settings.base_url
        self.log = log
        self._token = token
        self._auth = {"Authorization": f"Bearer {token}"}
        self._client = httpx.Client(
            headers={"User-Agent": USER_AGENT},
            timeout=httpx.Timeout(settings.request_timeout_s),
        )

    def close(self) -> None:
        """Release the connection pool."""
        self._client.close()

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
            raise TransientBackendError(
                f"Replicate {what}: cannot reach {self.base_url}: "
                f"{type(error).__name__}: {self.redact(str(error))}"
            ) from None
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
        if not isinstance(stored, dict) or any(stored.get(k) != v for k, v in data.items()):
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
