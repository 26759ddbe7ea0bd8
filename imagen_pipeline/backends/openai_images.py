"""The OpenAI images backend: GPT image models and DALL·E through ``/v1/images/generations``.

One generation is one JSON POST; the image comes back base64-encoded in the response (GPT
image models always answer so, DALL·E models are asked for ``response_format: b64_json``).
Every parameter is checked against the model family's allowed values before a request is
sent, ``usage`` tokens become the cost, and failures are classified as transient or
permanent. OpenAI documents no idempotency key for images, so a retry after a lost response
sends the request again and may be billed twice; retries are bounded by the job's retry
policy. docs/backends.md (section "OpenAI") has the config block, the size rule, the price
tables and the error table.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal
from urllib.parse import quote, urlsplit

import httpx
from pydantic import Field, ValidationInfo, field_validator, model_validator

from imagen_pipeline.backends.contract import (
    BackendCheck,
    GenerationContext,
    GenerationMetadata,
    GenerationRequest,
    GenerationResult,
    ImageBackend,
    image_mime_type,
)
from imagen_pipeline.backends.http_transport import (
    USER_AGENT,
    is_transient_status,
    probe_model,
    retry_after_header_s,
)
from imagen_pipeline.config.secrets import resolve_secret
from imagen_pipeline.errors import (
    BackendError,
    PermanentBackendError,
    TransientBackendError,
)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-image-1"

Family = Literal["gpt-image", "dall-e-3", "dall-e-2"]
FamilySetting = Literal["auto", "gpt-image", "dall-e-3", "dall-e-2"]
SizePolicy = Literal["nearest", "exact"]


@dataclass(frozen=True)
class FamilyRules:
    """What one model family accepts in an ``images/generations`` body."""

    label: str
    sizes: tuple[str, ...]
    """Fixed ``WxH`` sizes the family renders (what a request's width x height maps to)."""
    choices: dict[str, tuple[str, ...]]
    """Parameter -> allowed string values."""
    max_prompt_chars: int
    numbers: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Integer parameter -> (lowest, highest) allowed value."""

    @property
    def parameters(self) -> list[str]:
        """Every optional parameter this family accepts."""
        return sorted({*self.choices, *self.numbers, "user"})


GPT_IMAGE_SIZES = ("1024x1024", "1536x1024", "1024x1536")
DALL_E_3_SIZES = ("1024x1024", "1792x1024", "1024x1792")
DALL_E_2_SIZES = ("256x256", "512x512", "1024x1024")

FAMILIES: dict[Family, FamilyRules] = {
    "gpt-image": FamilyRules(
        label="GPT image models",
        sizes=GPT_IMAGE_SIZES,
        choices={
            "size": (*GPT_IMAGE_SIZES, "auto"),
            "quality": ("low", "medium", "high", "auto"),
            "background": ("transparent", "opaque", "auto"),
            "output_format": ("png", "jpeg", "webp"),
            "moderation": ("low", "auto"),
        },
        numbers={"output_compression": (0, 100)},
        max_prompt_chars=32000,
    ),
    "dall-e-3": FamilyRules(
        label="dall-e-3",
        sizes=DALL_E_3_SIZES,
        choices={
            "size": DALL_E_3_SIZES,
            "quality": ("standard", "hd"),
            "style": ("vivid", "natural"),
            "response_format": ("b64_json",),
        },
        max_prompt_chars=4000,
    ),
    "dall-e-2": FamilyRules(
        label="dall-e-2",
        sizes=DALL_E_2_SIZES,
        choices={
            "size": DALL_E_2_SIZES,
            "quality": ("standard",),
            "response_format": ("b64_json",),
        },
        max_prompt_chars=1000,
    ),
}
"""Allowed values per model family, from OpenAI's API reference for image generation."""

GPT_IMAGE_MODELS = frozenset({"gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5"})
OPTION_FIELDS = (
    "quality",
    "background",
    "output_format",
    "output_compression",
    "moderation",
    "style",
)
"""Config fields sent as body parameters of the same name when set."""

TOKEN_PRICE_KEYS = ("text_input", "image_input", "image_output")
DEFAULT_TOKEN_PRICES: dict[str, dict[str, float]] = {
    "gpt-image-1": {"text_input": 5.0, "image_input": 10.0, "image_output": 40.0},
    "gpt-image-1-mini": {"text_input": 2.0, "image_input": 2.5, "image_output": 8.0},
}
"""US dollars per 1M tokens (OpenAI's published prices); ``token_prices`` overrides them."""

GPT_OUTPUT_TOKENS: dict[str, dict[str, int]] = {
    "low": {"1024x1024": 272, "1024x1536": 408, "1536x1024": 400},
    "medium": {"1024x1024": 1056, "1024x1536": 1584, "1536x1024": 1568},
    "high": {"1024x1024": 4160, "1024x1536": 6240, "1536x1024": 6208},
}
"""Image output tokens of one GPT image by quality and size, for estimates before a call."""

DEFAULT_IMAGE_PRICES: dict[str, dict[str, float]] = {
    "dall-e-3": {
        "standard 1024x1024": 0.04,
        "standard 1792x1024": 0.08,
        "standard 1024x1792": 0.08,
        "hd 1024x1024": 0.08,
        "hd 1792x1024": 0.12,
        "hd 1024x1792": 0.12,
    },
    "dall-e-2": {
        "standard 256x256": 0.016,
        "standard 512x512": 0.018,
        "standard 1024x1024": 0.02,
    },
}
"""US dollars per DALL·E image by ``"<quality> <size>"``; ``image_prices`` overrides them."""

CONTENT_POLICY_CODES = frozenset({"content_policy_violation", "moderation_blocked"})
RETRYABLE_STATUSES = frozenset({408, 409, 429})
"""4xx answers worth a retry (every 5xx is)."""
SNAPSHOT_DATE = re.compile(r"-\d{4}-\d{2}-\d{2}$")
IMAGE_PRICE_KEY = re.compile(r"^[a-z]+ \d+x\d+$")
API_KEY_LIKE = re.compile(r"\bsk-[A-Za-z0-9_*\-]{4,}")
TRY_AGAIN = re.compile(r"try again in (?:(\d+)m)?(\d+(?:\.\d+)?)(ms|s)\b", re.IGNORECASE)


def undated(model: str) -> str:
    """``gpt-image-1-2025-04-15`` -> ``gpt-image-1``: the model a dated snapshot belongs to."""
    return SNAPSHOT_DATE.sub("", model)


def model_family(model: str) -> Family | None:
    """The family of a known model name (dated snapshots included), else None."""
    base = undated(model)
    if base == "dall-e-3":
        return "dall-e-3"
    if base == "dall-e-2":
        return "dall-e-2"
    if base in GPT_IMAGE_MODELS:
        return "gpt-image"
    return None


def parameter_problem(family: Family, model: str, name: str, value: Any) -> str | None:
    """Why ``name: value`` is not accepted by the family, naming the allowed values; or None."""
    rules = FAMILIES[family]
    which = model if rules.label == model else f"{model} ({rules.label})"
    if name in rules.choices:
        allowed = rules.choices[name]
        if value not in allowed:
            return (
                f"{name}: {value!r} is not offered by {which}; allowed values: {', '.join(allowed)}"
            )
        return None
    if name in rules.numbers:
        low, high = rules.numbers[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            return f"{name}: {value!r} is not an integer from {low} to {high}"
        return None
    if name == "user":
        return None if isinstance(value, str) else f"user: must be a string (got {value!r})"
    return f"{name}: not a parameter of {which}; parameters: {', '.join(rules.parameters)}"


def combination_problems(body: dict[str, Any]) -> list[str]:
    """GPT image parameters that are valid alone but not together."""
    problems = []
    output_format = body.get("output_format", "png")
    if body.get("background") == "transparent" and output_format == "jpeg":
        problems.append("background: transparent needs output_format png or webp (jpeg is set)")
    if "output_compression" in body and output_format not in ("jpeg", "webp"):
        problems.append(
            f"output_compression: applies to output_format jpeg or webp only "
            f"({output_format} is set)"
        )
    return problems


def nearest_size(sizes: tuple[str, ...], width: int, height: int) -> str:
    """The size with the closest aspect ratio, then the closest pixel count."""
    ratio, area = math.log(width / height), math.log(width * height)

    def distance(size: str) -> tuple[float, float]:
        w, h = (int(part) for part in size.split("x"))
        return round(abs(math.log(w / h) - ratio), 9), abs(math.log(w * h) - area)

    return min(sizes, key=distance)


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


def usage_cost_usd(usage: dict[str, Any], prices: dict[str, float]) -> float:
    """Dollars for a ``usage`` object: text and image input tokens, image output tokens."""

    def count(source: Any, key: str) -> int:
        value = source.get(key) if isinstance(source, dict) else None
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    details = usage.get("input_tokens_details")
    if isinstance(details, dict):
        text_tokens, image_tokens = count(details, "text_tokens"), count(details, "image_tokens")
    else:
        text_tokens, image_tokens = count(usage, "input_tokens"), 0
    dollars = (
        text_tokens * prices["text_input"]
        + image_tokens * prices["image_input"]
        + count(usage, "output_tokens") * prices["image_output"]
    ) / 1_000_000
    return round(dollars, 6)


@dataclass(frozen=True)
class PreparedRequest:
    """The validated body of one generation and what it was derived from."""

    family: Family
    body: dict[str, Any]
    requested_size: str


class OpenAIImagesBackend(ImageBackend):
    """Images from OpenAI's image API (GPT image models, DALL·E); costs money, has no seed."""

    credential_fields: ClassVar[tuple[str, ...]] = ("api_key_env",)

    api_key_env: str = Field(
        default="OPENAI_API_KEY",
        description="Name of the environment variable holding the OpenAI API key.",
    )
    model: str = Field(
        default=DEFAULT_MODEL,
        description="Image model: gpt-image-1, gpt-image-1-mini, gpt-image-1.5, dall-e-3, "
        "dall-e-2 or a dated snapshot of one of them.",
    )
    family: FamilySetting = Field(
        default="auto",
        validate_default=True,
        description="Which model family's parameters apply: gpt-image, dall-e-3, dall-e-2, or "
        "auto (from the model name; set it for a model name this version does not know).",
    )
    base_url: str = Field(
        default=DEFAULT_BASE_URL, description="API root; change only for a proxy or a test server."
    )
    organization: str | None = Field(
        default=None, description="Organization id sent as OpenAI-Organization; empty: none."
    )
    project: str | None = Field(
        default=None, description="Project id sent as OpenAI-Project; empty: none."
    )
    size_policy: SizePolicy = Field(
        default="nearest",
        description="A width x height the model does not render: 'nearest' sends the allowed "
        "size with the closest aspect ratio (then pixel count), 'exact' fails.",
    )
    quality: str | None = Field(
        default=None,
        description="GPT image: low, medium, high, auto; dall-e-3: standard, hd; dall-e-2: "
        "standard. Empty: the model's default.",
    )
    background: str | None = Field(
        default=None, description="GPT image only: transparent, opaque or auto."
    )
    output_format: str | None = Field(
        default=None, description="GPT image only: png, jpeg or webp (DALL·E returns png)."
    )
    output_compression: int | None = Field(
        default=None, description="GPT image with jpeg or webp only: 0-100."
    )
    moderation: str | None = Field(
        default=None, description="GPT image only: low (less restrictive) or auto."
    )
    style: str | None = Field(default=None, description="dall-e-3 only: vivid or natural.")
    timeout_s: float = Field(
        default=300.0, gt=0, description="Longest wait for the generation request's answer."
    )
    request_timeout_s: float = Field(
        default=30.0, gt=0, description="Connect timeout, and the timeout of the check() probe."
    )
    token_prices: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="US dollars per 1M tokens by model: {text_input, image_input, "
        "image_output}; replaces the built-in prices of that model.",
    )
    image_prices: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="US dollars per DALL·E image by model and '<quality> <size>' (e.g. "
        "'hd 1792x1024'); overrides the built-in table entry by entry.",
    )

    @field_validator("model")
    @classmethod
    def _check_model(cls, value: str) -> str:
        value = value.strip()
        if not value or "/" in value or any(char.isspace() for char in value):
            raise ValueError("must be an OpenAI model name such as gpt-image-1")
        return value

    @field_validator("family")
    @classmethod
    def _check_family(cls, value: FamilySetting, info: ValidationInfo) -> FamilySetting:
        model = info.data.get("model")
        if value == "auto" and isinstance(model, str) and model_family(model) is None:
            raise ValueError(
                f"cannot tell the parameter family of model {model!r}; "
                "set family to gpt-image, dall-e-3 or dall-e-2"
            )
        return value

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("must be an http(s) URL such as https://api.openai.com/v1")
        return value.rstrip("/")

    @field_validator(*OPTION_FIELDS)
    @classmethod
    def _check_option(cls, value: Any, info: ValidationInfo) -> Any:
        model, family = info.data.get("model"), info.data.get("family")
        if value is None or not isinstance(model, str) or family is None:
            return value
        resolved = model_family(model) if family == "auto" else family
        if resolved is not None and info.field_name is not None:
            problem = parameter_problem(resolved, model, info.field_name, value)
            if problem:
                raise ValueError(problem.partition(": ")[2])
        return value

    @field_validator("token_prices")
    @classmethod
    def _check_token_prices(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for model, prices in value.items():
            if sorted(prices) != sorted(TOKEN_PRICE_KEYS) or min(prices.values()) < 0:
                raise ValueError(
                    f"{model}: needs exactly {', '.join(TOKEN_PRICE_KEYS)} "
                    "(US dollars per 1M tokens, not negative)"
                )
        return value

    @field_validator("image_prices")
    @classmethod
    def _check_image_prices(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for model, prices in value.items():
            for key, price in prices.items():
                if not IMAGE_PRICE_KEY.fullmatch(key) or price < 0:
                    raise ValueError(
                        f"{model}.{key}: keys are '<quality> <WxH>' such as 'hd 1792x1024', "
                        "prices US dollars per image, not negative"
                    )
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> OpenAIImagesBackend:
        problems = combination_problems(self.configured_options())
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def resolved_family(self) -> Family:
        """The family whose parameter rules apply to the configured model."""
        if self.family != "auto":
            return self.family
        family = model_family(self.model)
        if family is None:
            raise PermanentBackendError(f"family: cannot tell the family of {self.model!r}")
        return family

    def configured_options(self) -> dict[str, Any]:
        """Body parameters set in the config block."""
        options = {name: getattr(self, name) for name in OPTION_FIELDS}
        return {name: value for name, value in options.items() if value is not None}

    def prepare(self, request: GenerationRequest, log: Any = None) -> PreparedRequest:
        """The validated request body; any problem fails before a request is sent."""
        family = self.resolved_family()
        rules = FAMILIES[family]
        requested = f"{request.width}x{request.height}"
        problems = []
        if len(request.prompt) > rules.max_prompt_chars:
            problems.append(
                f"prompt: {len(request.prompt)} characters; {self.model} accepts at most "
                f"{rules.max_prompt_chars}"
            )
        if requested in rules.sizes or "size" in request.backend_opts:
            size = requested
        elif self.size_policy == "exact":
            size = requested
            problems.append(
                f"width x height: {requested} is not a size {self.model} renders; allowed "
                f"sizes: {', '.join(rules.sizes)} (size_policy: nearest maps to the closest "
                "aspect ratio)"
            )
        else:
            size = nearest_size(rules.sizes, request.width, request.height)
            if log is not None:
                log.info(
                    f"OpenAI {self.model} renders fixed sizes: {requested} requested, "
                    f"sending size {size}"
                )
        body: dict[str, Any] = {"model": self.model, "prompt": request.prompt, "n": 1}
        body["size"] = size
        if family != "gpt-image":
            body["response_format"] = "b64_json"
        body.update(self.configured_options())
        for name, value in request.backend_opts.items():
            if name in ("model", "prompt", "n"):
                problems.append(f"backend_opts.{name}: set by the pipeline, not by backend_opts")
                continue
            problem = parameter_problem(family, self.model, name, value)
            if problem:
                problems.append(f"backend_opts.{problem}")
            body[name] = value
        problems.extend(combination_problems(body) if family == "gpt-image" else [])
        if problems:
            raise PermanentBackendError(
                "OpenAI images: " + "; ".join(problems), public="; ".join(problems)
            )
        return PreparedRequest(family=family, body=body, requested_size=requested)

    def generate(self, request: GenerationRequest, context: GenerationContext) -> GenerationResult:
        """POST one generation, decode and verify its image and price it from ``usage``."""
        field_path = (
            f"backends.{context.instance_name}.api_key_env"
            if context.instance_name
            else "api_key_env"
        )
        key = resolve_secret(self.api_key_env, field_path)
        prepared = self.prepare(request, context.log)
        ignored = [
            name
            for name, value in (
                ("seed", request.seed),
                ("steps", request.steps),
                ("negative prompt", request.negative or None),
            )
            if value is not None
        ]
        if ignored:
            context.log.info(f"OpenAI images take no {', '.join(ignored)}; ignored")
        started = time.monotonic()
        response = self._post(prepared.body, key)
        latency = time.monotonic() - started
        payload, image_data = self._image_payload(response)
        image = self._decode(image_data)
        mime_type = image_mime_type(image, "OpenAI images: b64_json")
        usage = payload.get("usage") if isinstance(payload.get("usage"), dict) else None
        cost, cost_source = self._cost(prepared, request, usage)
        if cost_source == "unpriced":
            context.log.warning(
                f"OpenAI images: no price known for {self.model}; cost recorded as 0 "
                "(set token_prices or image_prices)"
            )
        body = prepared.body
        extra = {
            "family": prepared.family,
            "size": payload.get("size") or body["size"],
            "requested_size": prepared.requested_size,
            "quality": payload.get("quality") or body.get("quality"),
            "output_format": payload.get("output_format") or body.get("output_format"),
            "background": payload.get("background") or body.get("background"),
            "style": body.get("style"),
            "revised_prompt": image_data.get("revised_prompt"),
            "request_id": response.headers.get("x-request-id"),
            "created": payload.get("created"),
            "usage": usage,
            "cost_source": cost_source,
        }
        return GenerationResult(
            image=image,
            mime_type=mime_type,
            metadata=GenerationMetadata(
                model=self.model,
                seed=None,
                steps=None,
                latency_s=round(latency, 4),
                cost_usd=cost,
                extra={name: value for name, value in extra.items() if value is not None},
            ),
        )

    def estimate_cost_usd(self, request: GenerationRequest) -> float:
        """Expected cost from the size/quality tables, before any request."""
        prepared = self.prepare(request)
        return self._estimate(prepared, request)[0]

    def check(self) -> BackendCheck:
        """GET ``/models/{model}`` with the key: reachable, key valid, model available."""
        return probe_model(
            self.base_url,
            f"/models/{quote(self.model, safe='')}",
            secret_env=self.api_key_env,
            secret_field="api_key_env",
            headers=self._headers,
            timeout_s=self.request_timeout_s,
            error_detail=lambda response: parse_api_error(response).message,
            redact=redact,
            model=self.model,
            found=f"model {self.model} available",
            refused=f"key in ${self.api_key_env} refused",
        )

    def _headers(self, key: str) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {key}", "User-Agent": USER_AGENT}
        if self.organization:
            headers["OpenAI-Organization"] = self.organization
        if self.project:
            headers["OpenAI-Project"] = self.project
        return headers

    def _post(self, body: dict[str, Any], key: str) -> httpx.Response:
        url = f"{self.base_url}/images/generations"
        timeout = httpx.Timeout(self.timeout_s, connect=self.request_timeout_s)
        try:
            response = httpx.post(url, json=body, headers=self._headers(key), timeout=timeout)
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
            raise self._error(response, key)
        return response

    def _error(self, response: httpx.Response, key: str) -> BackendError:
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
                f"{label}: the key in ${self.api_key_env} was refused: {message}{where}"
            )
        return PermanentBackendError(f"{label}: {message}{where}")

    @staticmethod
    def _image_payload(response: httpx.Response) -> tuple[dict[str, Any], dict[str, Any]]:
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

    @staticmethod
    def _decode(image_data: dict[str, Any]) -> bytes:
        try:
            return base64.b64decode(image_data["b64_json"], validate=True)
        except binascii.Error as error:
            raise PermanentBackendError(f"OpenAI images: b64_json is invalid: {error}") from None

    def _cost(
        self, prepared: PreparedRequest, request: GenerationRequest, usage: dict[str, Any] | None
    ) -> tuple[float, str]:
        """Dollars and where they come from: usage, price_table, estimate or unpriced."""
        if prepared.family == "gpt-image" and usage is not None:
            prices = self._token_prices()
            if prices is not None:
                return usage_cost_usd(usage, prices), "usage"
        return self._estimate(prepared, request)

    def _estimate(self, prepared: PreparedRequest, request: GenerationRequest) -> tuple[float, str]:
        body = prepared.body
        if prepared.family != "gpt-image":
            quality = body.get("quality") or "standard"
            price = self._image_prices().get(f"{quality} {body['size']}")
            return (price, "price_table") if price is not None else (0.0, "unpriced")
        prices = self._token_prices()
        if prices is None:
            return 0.0, "unpriced"
        quality = body.get("quality")
        by_size = GPT_OUTPUT_TOKENS["high" if quality in (None, "auto") else quality]
        size = body["size"]
        output_tokens = max(by_size.values()) if size == "auto" else by_size[size]
        usage = {"input_tokens": math.ceil(len(request.prompt) / 4), "output_tokens": output_tokens}
        return usage_cost_usd(usage, prices), "estimate"

    def _token_prices(self) -> dict[str, float] | None:
        table = {**DEFAULT_TOKEN_PRICES, **self.token_prices}
        return table.get(self.model) or table.get(undated(self.model))

    def _image_prices(self) -> dict[str, float]:
        base = undated(self.model)
        return {
            **DEFAULT_IMAGE_PRICES.get(base, {}),
            **self.image_prices.get(base, {}),
            **self.image_prices.get(self.model, {}),
        }
