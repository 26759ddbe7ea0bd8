"""The Replicate adapter: the ``type: replicate`` block and one generation.

One generation creates a prediction with ``Prefer: wait`` (sync mode), polls ``urls.get``
until it ends, downloads the output file with a size cap and a timeout, and classifies every
failure as transient or permanent. A create whose response is lost is recovered by listing
recent predictions instead of creating a second one; a terminated run cancels its
prediction. FLUX.1 Kontext (``input_image``) and FLUX.2 (``input_images``) take source
images, sent as data URIs in the input, or, from 1MB, uploaded with Replicate's Files API
and sent as the file's ``urls.get`` (deleted once the prediction has ended; limits in
:mod:`.models`). docs/backends.md (section "Replicate") has the config block, the input
mapping, the price table and the error table. The HTTP client is imported when a method first talks
to the API, so loading a config with this adapter does not import it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from imagen_pipeline.backends.contract import (
    BackendCheck,
    GenerationContext,
    GenerationMetadata,
    GenerationRequest,
    GenerationResult,
    ImageBackend,
    derived_seed,
    verify_image,
)
from imagen_pipeline.backends.options import OptionRule, set_by_field
from imagen_pipeline.backends.pricing import Price
from imagen_pipeline.backends.replicate.inputs import (
    RESERVED_INPUTS,
    build_input,
    needs_upload,
    recorded_input,
)
from imagen_pipeline.backends.replicate.models import (
    KONTEXT_MAX_SAFETY_WITH_IMAGES,
    InputStyle,
    image_price,
    max_source_images,
    parse_model_ref,
    resolve_input_style,
)
from imagen_pipeline.backends.sources import SourceSupport
from imagen_pipeline.config.secrets import resolve_secret
from imagen_pipeline.errors import ImagenError, InvalidRequestError

if TYPE_CHECKING:
    from imagen_pipeline.backends.replicate.client import ApiSettings

DEFAULT_BASE_URL = "https://api.replicate.com/v1"
CLIENT_GUIDANCE = OptionRule(min=0, max=10)
"""What a web client may send as ``guidance`` to FLUX dev when ``client_options`` is unset:
the model's whole range (its input schema, read 2026-12-02); it does not change the price."""


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
        description="How requests map to model inputs: flux-schnell, flux-dev, flux-pro "
        "(FLUX1.1 pro), flux-2 (FLUX.2 pro, flex, max: source images as input_images), "
        "flux-kontext (FLUX.1 Kontext pro, max: one source image as input_image), generic "
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
        "safety_tolerance); a request's backend_opts override them. Inputs that carry a "
        "request field (prompt, seed, size, steps, num_outputs) are refused.",
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

    @model_validator(mode="after")
    def _check_extra_input(self) -> ReplicateBackend:
        problems = [
            InitErrorDetails(
                type=PydanticCustomError("reserved_input", "{reason}", {"reason": reason}),
                loc=("extra_input", key),
                input=value,
            )
            for key, value in self.extra_input.items()
            if (reason := self.reserved_option(key)) is not None
        ]
        if problems:
            raise ValidationError.from_exception_data(type(self).__name__, problems)
        return self

    def api_settings(self) -> ApiSettings:
        """The settings the API calls use."""
        from imagen_pipeline.backends.replicate.client import ApiSettings

        names = ApiSettings.__dataclass_fields__
        return ApiSettings(**{name: getattr(self, name) for name in names})

    def resolved_input_style(self) -> InputStyle:
        """The input style requests are mapped with (``auto`` resolved from the model)."""
        return resolve_input_style(parse_model_ref(self.model), self.input_style)

    def source_support(self) -> SourceSupport:
        """FLUX.1 Kontext: one source image; FLUX.2: up to 8 (flex: 10); mode edit, no mask
        (the models take jpeg, png, gif and webp; the pipeline sends png, jpeg, webp)."""
        most = max_source_images(parse_model_ref(self.model), self.resolved_input_style())
        if not most:
            return SourceSupport()
        return SourceSupport(max_images=most, modes=("edit",), default_mode="edit")

    def check_sources(self, name: str, request: GenerationRequest) -> None:
        """What any backend checks, and Kontext's safety_tolerance cap with input images."""
        super().check_sources(name, request)
        if self.resolved_input_style() != "flux-kontext" or not (
            request.source_count or request.sources
        ):
            return
        tolerance = {**self.extra_input, **request.backend_opts}.get("safety_tolerance")
        if isinstance(tolerance, int | float) and tolerance > KONTEXT_MAX_SAFETY_WITH_IMAGES:
            raise InvalidRequestError(
                "backend_opts.safety_tolerance",
                f"is {tolerance}; FLUX.1 Kontext allows at most "
                f"{KONTEXT_MAX_SAFETY_WITH_IMAGES} with an input image",
            )

    def default_client_options(self) -> dict[str, OptionRule]:
        """``guidance`` (0 to 10) for FLUX dev; nothing for other models."""
        return {"guidance": CLIENT_GUIDANCE} if self.resolved_input_style() == "flux-dev" else {}

    def reserved_option(self, key: str) -> str | None:
        """A model input that carries a request field (see RESERVED_INPUTS)."""
        if key in RESERVED_INPUTS:
            field, what = RESERVED_INPUTS[key]
            return set_by_field(field, what)
        return super().reserved_option(key)

    def generate(self, request: GenerationRequest, context: GenerationContext) -> GenerationResult:
        """Create (or recover) a prediction, wait for it and download its image."""
        self.check_options(request.backend_opts, from_client=False)
        self.check_sources(context.instance_name or "replicate", request)
        field_path = (
            f"backends.{context.instance_name}.api_token_env"
            if context.instance_name
            else "api_token_env"
        )
        token = resolve_secret(self.api_token_env, field_path)
        ref = parse_model_ref(self.model)
        style = self.resolved_input_style()
        seed = request.seed if request.seed is not None else derived_seed(context)
        started = time.monotonic()
        from imagen_pipeline.backends.replicate.client import ReplicateApi

        with ReplicateApi(self.api_settings(), token, context.log) as api:
            uploads = api.upload_all(source for source in request.sources if needs_upload(source))
            file_urls = {item.position: item.url for item in uploads}
            prediction: dict[str, Any] | None = None
            try:
                data, steps = build_input(
                    request,
                    seed=seed,
                    style=style,
                    output_format=self.output_format,
                    guidance=self.guidance,
                    log=context.log,
                    file_urls=file_urls,
                )
                data.update(self.extra_input)
                data.update(request.backend_opts)
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
            finally:
                api.clean_up(uploads, prediction)
        facts = verify_image(image, "Replicate output")
        metrics = prediction.get("metrics")
        price = image_price(self.model, self.prices)
        sent_seed = data.get("seed")
        return GenerationResult(
            image=image,
            facts=facts,
            metadata=GenerationMetadata(
                model=self.model,
                seed=sent_seed if isinstance(sent_seed, int) else None,
                steps=steps,
                latency_s=round(time.monotonic() - started, 4),
                cost_usd=price.usd,
                price_source=price.source,
                price_note=price.note,
                extra={
                    "prediction_id": prediction["id"],
                    "model_version": prediction.get("version"),
                    "replicate_model": prediction.get("model"),
                    "predict_time_s": (
                        metrics.get("predict_time") if isinstance(metrics, dict) else None
                    ),
                    "recovered_prediction": recovered,
                    "input": recorded_input(data, request, file_urls),
                },
            ),
        )

    def estimate_price(self, request: GenerationRequest) -> Price:
        """The per-image price of the configured model."""
        return image_price(self.model, self.prices)

    def check(self) -> BackendCheck:
        """Read the model (or version) with the token: reachable, token valid, model present."""
        from imagen_pipeline.backends.http_transport import USER_AGENT, probe_model
        from imagen_pipeline.backends.replicate.client import redact
        from imagen_pipeline.backends.replicate.files import problem_detail

        ref = parse_model_ref(self.model)
        return probe_model(
            self.base_url,
            ref.check_path,
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
