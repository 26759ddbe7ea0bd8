"""The OpenAI images adapter: the ``type: openai`` block and one generation.

One generation is one JSON POST to ``images/generations``, or, with source images, one
multipart POST to ``images/edits`` (each source as ``image[]``, an optional ``mask``; limits in
:mod:`.models`, checked before the call); the image comes back base64-encoded in the response
(gpt-image-2 always answers so). Every parameter is checked against the model's rules before
a request is sent, a retired model id is refused when the config loads, ``usage`` tokens
times the configured token prices become the cost, and failures are classified as transient
or permanent. OpenAI documents no idempotency key for images, so a retry after a lost response
sends the request again and may be billed twice; retries are bounded by the job's retry
policy. docs/backends.md (section "OpenAI") has the config block, the size rule, the price
tables and the error table. The HTTP client is imported when a method first talks to the
API, so loading a config with this adapter does not import it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote, urlsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator

from imagen_pipeline.backends.contract import (
    BackendCheck,
    GenerationContext,
    GenerationMetadata,
    GenerationRequest,
    GenerationResult,
    ImageBackend,
    verify_image,
)
from imagen_pipeline.backends.openai.models import (
    DEFAULT_MODEL,
    EDIT_FORMATS,
    EDIT_MAX_IMAGE_BYTES,
    EDIT_MAX_IMAGES,
    MASK_MAX_BYTES,
    Family,
    FamilySetting,
    combination_problems,
    model_family,
    parameter_problem,
    retired_openai_model,
)
from imagen_pipeline.backends.openai.pricing import (
    TOKEN_PRICE_KEYS,
    estimate_price,
    image_price,
    token_prices_for,
)
from imagen_pipeline.backends.openai.request import PreparedRequest, SizePolicy, prepare_request
from imagen_pipeline.backends.options import OptionRule, set_by_field
from imagen_pipeline.backends.pricing import Price
from imagen_pipeline.backends.retired import retirement_message
from imagen_pipeline.backends.sources import MAX_SOURCE_BYTES, SourceImage, SourceSupport
from imagen_pipeline.config.secrets import resolve_secret
from imagen_pipeline.errors import InvalidRequestError, PermanentBackendError

if TYPE_CHECKING:
    from imagen_pipeline.backends.openai.client import EditFile, ImagesApi

DEFAULT_BASE_URL = "https://api.openai.com/v1"

OPTION_FIELDS = (
    "quality",
    "background",
    "output_format",
    "output_compression",
    "moderation",
)
"""Config fields sent as body parameters of the same name when set."""

RESERVED_PARAMETERS: dict[str, str] = {
    "model": "sets the model, which only the backend's configuration sets",
    "prompt": set_by_field("prompt"),
    "n": set_by_field("count", "how many images one call makes"),
    "size": set_by_field("width and height", "the image size"),
}
"""Body parameters the pipeline sets from the request and the config: no option sets them."""
CLIENT_OPTIONS: dict[str, OptionRule] = {
    "background": OptionRule(choices=["opaque", "auto"]),
    "output_format": OptionRule(choices=["png", "jpeg", "webp"]),
    "output_compression": OptionRule(type="integer", min=0, max=100),
}
"""What a web client may set when ``client_options`` is unset: parameters that change
neither the price nor the content rules (quality changes the price and moderation the rules,
so only the operator can open them to clients)."""


class OpenAIImagesBackend(ImageBackend):
    """Images from OpenAI's image API (gpt-image-2); costs money, has no seed."""

    credential_fields: ClassVar[tuple[str, ...]] = ("api_key_env",)

    api_key_env: str = Field(
        default="OPENAI_API_KEY",
        description="Name of the environment variable holding the OpenAI API key.",
    )
    model: str = Field(
        default=DEFAULT_MODEL,
        description="Image model: gpt-image-2 or a dated snapshot of it (retired models such "
        "as gpt-image-1 and dall-e-3 are refused).",
    )
    family: FamilySetting = Field(
        default="auto",
        validate_default=True,
        description="Whose request rules apply: gpt-image-2, or auto (from the model name; "
        "set gpt-image-2 for a model name this version does not know).",
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
        description="A width x height that breaks a size rule: 'nearest' sends the allowed "
        "size with the closest aspect ratio (then pixel count), 'exact' fails.",
    )
    quality: str | None = Field(
        default=None,
        description="low, medium, high or auto. Empty: the model's default.",
    )
    background: str | None = Field(
        default=None, description="opaque or auto (gpt-image-2 renders no transparency)."
    )
    output_format: str | None = Field(default=None, description="png, jpeg or webp.")
    output_compression: int | None = Field(
        default=None, description="With output_format jpeg or webp only: 0-100."
    )
    moderation: str | None = Field(default=None, description="low (less restrictive) or auto.")
    timeout_s: float = Field(
        default=300.0, gt=0, description="Longest wait for the generation request's answer."
    )
    request_timeout_s: float = Field(
        default=30.0, gt=0, description="Connect timeout, and the timeout of the check() probe."
    )
    token_prices: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="US dollars per 1M tokens by model: {text_input, image_input, "
        "image_output}. No price is built in for gpt-image-2: without one the cost is "
        "recorded as unknown.",
    )

    @field_validator("model")
    @classmethod
    def _check_model(cls, value: str) -> str:
        value = value.strip()
        if not value or "/" in value or any(char.isspace() for char in value):
            raise ValueError(f"must be an OpenAI model name such as {DEFAULT_MODEL}")
        retired = retired_openai_model(value)
        if retired is not None:
            raise ValueError(retirement_message(retired, value))
        return value

    @field_validator("family")
    @classmethod
    def _check_family(cls, value: FamilySetting, info: ValidationInfo) -> FamilySetting:
        model = info.data.get("model")
        if value == "auto" and isinstance(model, str) and model_family(model) is None:
            raise ValueError(
                f"cannot tell whose request rules model {model!r} follows; set family: gpt-image-2"
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

    def default_client_options(self) -> dict[str, OptionRule]:
        """background, output_format and output_compression (see CLIENT_OPTIONS)."""
        return dict(CLIENT_OPTIONS)

    def reserved_option(self, key: str) -> str | None:
        """model, prompt, n and size: set from the config and the request's fields."""
        return RESERVED_PARAMETERS.get(key) or super().reserved_option(key)

    def option_problem(self, key: str, value: Any) -> str | None:
        """A parameter the model family does not take, or a value it does not accept."""
        problem = parameter_problem(self.resolved_family(), self.model, key, value)
        return problem.partition(": ")[2] if problem else None

    def options_problem(self, options: Mapping[str, Any]) -> tuple[str, str] | None:
        """output_compression without output_format jpeg or webp (the config's counting)."""
        problems = combination_problems({**self.configured_options(), **options})
        if not problems:
            return None
        key, _, reason = problems[0].partition(": ")
        return key, reason

    def source_support(self) -> SourceSupport:
        """Edits: up to 16 images (png, jpeg or webp, under 50MB each, below the pipeline's
        25 MiB) and a mask; mode edit only (OpenAI has no strength)."""
        return SourceSupport(
            max_images=EDIT_MAX_IMAGES,
            modes=("edit",),
            default_mode="edit",
            mask=True,
            max_bytes=min(MAX_SOURCE_BYTES, EDIT_MAX_IMAGE_BYTES - 1),
            formats=EDIT_FORMATS,
        )

    def check_sources(self, name: str, request: GenerationRequest) -> None:
        """What any backend checks, and OpenAI's mask rules: a PNG under 4MB with the first
        image's dimensions."""
        super().check_sources(name, request)
        mask = request.mask
        if mask is None:
            return
        problem = mask_problem(mask, request.sources[0] if request.sources else None)
        if problem is not None:
            raise InvalidRequestError("mask", f"{problem} (backend {name!r}, OpenAI edits)")

    def prepare(self, request: GenerationRequest, log: Any = None) -> PreparedRequest:
        """The validated request body; any problem fails before a request is sent."""
        self.check_options(request.backend_opts, from_client=False)
        return prepare_request(
            request,
            model=self.model,
            family=self.resolved_family(),
            size_policy=self.size_policy,
            options=self.configured_options(),
            log=log,
        )

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
        if prepared.is_edit:
            self.check_sources(context.instance_name or "openai", request)
            images = [edit_file(source) for source in request.sources]
            mask = edit_file(request.mask) if request.mask else None
            response = self._api().edit(prepared.body, images, mask, key)
        else:
            response = self._api().generate(prepared.body, key)
        latency = time.monotonic() - started
        from imagen_pipeline.backends.openai.client import decode_image, image_payload

        payload, image_data = image_payload(response)
        image = decode_image(image_data)
        facts = verify_image(image, "OpenAI images: b64_json")
        usage = payload.get("usage") if isinstance(payload.get("usage"), dict) else None
        price = image_price(*self._token_prices(context.instance_name), usage)
        if price.usd is None:
            context.log.warning(f"OpenAI images: cost recorded as unknown: {price.note}")
        body = prepared.body
        extra = {
            "family": prepared.family,
            "size": payload.get("size") or body["size"],
            "requested_size": prepared.requested_size,
            "quality": payload.get("quality") or body.get("quality"),
            "output_format": payload.get("output_format") or body.get("output_format"),
            "background": payload.get("background") or body.get("background"),
            "revised_prompt": image_data.get("revised_prompt"),
            "request_id": response.headers.get("x-request-id"),
            "created": payload.get("created"),
            "usage": usage,
            "endpoint": "images/edits" if prepared.is_edit else "images/generations",
        }
        return GenerationResult(
            image=image,
            facts=facts,
            metadata=GenerationMetadata(
                model=self.model,
                seed=None,
                steps=None,
                latency_s=round(latency, 4),
                cost_usd=price.usd,
                price_source=price.source,
                price_note=price.note,
                extra={name: value for name, value in extra.items() if value is not None},
            ),
        )

    def estimate_price(self, request: GenerationRequest) -> Price:
        """Expected price from the size and quality, before any request (unknown without
        token prices)."""
        return estimate_price(*self._token_prices(""), self.prepare(request))

    def check(self) -> BackendCheck:
        """GET ``/models/{model}`` with the key: reachable, key valid, model available."""
        from imagen_pipeline.backends.http_transport import probe_model
        from imagen_pipeline.backends.openai.client import parse_api_error, redact

        return probe_model(
            self.base_url,
            f"/models/{quote(self.model, safe='')}",
            secret_env=self.api_key_env,
            secret_field="api_key_env",
            headers=self._api().headers,
            timeout_s=self.request_timeout_s,
            error_detail=lambda response: parse_api_error(response).message,
            redact=redact,
            model=self.model,
            found=f"model {self.model} available",
            refused=f"key in ${self.api_key_env} refused",
        )

    def _api(self) -> ImagesApi:
        from imagen_pipeline.backends.openai.client import ImagesApi

        return ImagesApi(
            base_url=self.base_url,
            key_env=self.api_key_env,
            organization=self.organization,
            project=self.project,
            timeout_s=self.timeout_s,
            request_timeout_s=self.request_timeout_s,
        )

    def _token_prices(self, instance: str) -> tuple[dict[str, float] | None, Price]:
        return token_prices_for(self.model, self.token_prices, instance)


def mask_problem(mask: SourceImage, first: SourceImage | None) -> str | None:
    """Why OpenAI refuses this mask for the first image (not a PNG, 4MB or more, other
    dimensions), or None."""
    if mask.mime != "image/png":
        return f"is {mask.mime}; OpenAI takes a PNG mask (transparent where to edit)"
    if mask.bytes >= MASK_MAX_BYTES:
        return f"is {mask.bytes} bytes; OpenAI takes a mask of less than {MASK_MAX_BYTES}"
    if first is not None and (mask.width, mask.height) != (first.width, first.height):
        return (
            f"is {mask.width}x{mask.height}; OpenAI needs the first image's dimensions "
            f"({first.width}x{first.height})"
        )
    return None


def edit_file(source: SourceImage) -> EditFile:
    """The form part of a checked source: its staged file, named by position and sha256."""
    from imagen_pipeline.backends.openai.client import EditFile

    ending = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}.get(source.mime, "png")
    name = f"{source.role}-{source.position}-{source.sha256[:12]}.{ending}"
    return EditFile(path=Path(source.path), filename=name, mime=source.mime)
