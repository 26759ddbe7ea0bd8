"""The backend contract: what every adapter receives and returns.

An adapter is a :class:`ImageBackend` subclass (a frozen pydantic model) whose fields are
the keys of its block in ``imagen.yaml``. It turns a :class:`GenerationRequest`
into a :class:`GenerationResult` and classifies its failures as
:class:`~imagen_pipeline.errors.TransientBackendError` or
:class:`~imagen_pipeline.errors.PermanentBackendError`.
"""

from __future__ import annotations

import hashlib
import io
import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field

from imagen_pipeline.backends.options import (
    OptionRule,
    check_options,
    is_file_input,
    rule_problems,
    set_by_field,
)
from imagen_pipeline.backends.pricing import FREE, Price, PriceSource
from imagen_pipeline.backends.progress import ProgressListener
from imagen_pipeline.backends.sources import NO_SOURCES, SourceImage, SourceMode, SourceSupport
from imagen_pipeline.errors import InvalidRequestError, PermanentBackendError

MAX_SEED = 2**32 - 1
"""Largest seed accepted everywhere (fits every backend's seed field)."""
SOURCE_FIELDS = ("mode", "strength", "mask")
"""Request fields about source images that a web client may set only where the instance's
``client_options`` has an entry ``request.<field>`` (``request.mode: {choices: [edit]}``,
``request.strength: {min: 0.3, max: 0.9}``, ``request.mask: {choices: [true]}``)."""
FIELD_RULE_PREFIX = "request."
"""``client_options`` keys with this prefix rule a request field, not a backend option; no
option key may start with it."""
REQUEST_FIELD_OPTIONS = (
    "prompt",
    "negative",
    "width",
    "height",
    "steps",
    "seed",
    "count",
    "source_images",
)
"""Request fields: an option of the same name never replaces them, on any backend."""


class GenerationRequest(BaseModel):
    """One image to generate, after prompt enrichment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str = Field(description="Enriched prompt sent to the backend.")
    negative: str = Field(default="", description="Negative prompt; empty for none.")
    width: int = Field(description="Image width in pixels.")
    height: int = Field(description="Image height in pixels.")
    steps: int | None = Field(default=None, description="Sampling steps; None: backend default.")
    seed: int | None = Field(default=None, description="Seed; None: the backend picks one.")
    style: str = Field(default="none", description="Style preset the prompt was enriched with.")
    backend_opts: dict[str, Any] = Field(
        default_factory=dict,
        description="Adapter-specific options, checked by the adapter's option rules "
        "(:meth:`ImageBackend.check_options`).",
    )
    mode: SourceMode | None = Field(
        default=None, description="What to do with the sources; None: the backend's default."
    )
    strength: float | None = Field(
        default=None, description="For img2img: how far to move from the source, 0 to 1."
    )
    source_count: int = Field(
        default=0, description="How many source images the request names (before fetching)."
    )
    has_mask: bool = Field(default=False, description="Whether the request names a mask.")
    sources: list[SourceImage] = Field(
        default_factory=list,
        description="The checked source images, in order; attached by the generate step.",
    )
    mask: SourceImage | None = Field(default=None, description="The checked mask, if any.")


class GenerationMetadata(BaseModel):
    """Facts about a generated image that the adapter knows best."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(description="Model that produced the image.")
    seed: int | None = Field(description="Seed actually used; None if the backend has none.")
    steps: int | None = Field(default=None, description="Steps actually used, if known.")
    server: str | None = Field(
        default=None, description="Which server of the backend made it (a GPU box's label)."
    )
    latency_s: float = Field(description="Wall time of the backend call in seconds.")
    cost_usd: float | None = Field(
        default=0.0, description="Cost in US dollars; None when no price is known."
    )
    price_source: PriceSource = Field(
        default="free", description="Where the price came from: config, built_in, free, unknown."
    )
    price_note: str = Field(
        default=FREE.note, description="Which table, or what to set to make it known."
    )
    extra: dict[str, Any] = Field(
        default_factory=dict,
        description="Adapter-specific facts (prompt id, prediction id, token usage, ...).",
    )


class ImageFacts(BaseModel):
    """What Pillow read from an image's header: its format and size in pixels."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: str = Field(description="Pillow's format name: PNG, JPEG, WEBP, ...")
    width: int
    height: int


class GenerationResult(BaseModel):
    """The image an adapter produced (encoded bytes), what it is, and its metadata.

    ``facts`` come from :func:`verify_image` (or, for an image the adapter rendered itself,
    from what it rendered), so the pipeline never decodes the bytes a second time.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    image: bytes
    facts: ImageFacts
    metadata: GenerationMetadata


@dataclass(frozen=True)
class GenerationContext:
    """Where a generation runs: lets adapters name their work and report progress.

    ``attempt`` is 0 for the first try of a step and grows with each retry, so adapters can
    derive idempotency keys (e.g. ComfyUI's ``prompt_id``) from ``(run_id, attempt)``;
    ``variation`` is which image of a request for several this call makes (0 for the first
    or only one), and is part of those keys and of a derived seed.
    ``progress``, if set, hears every progress event the backend sends (unthrottled: the
    pipeline passes a :class:`~imagen_pipeline.backends.progress.ProgressThrottle`).
    """

    run_id: str
    attempt: int = 0
    instance_name: str = ""
    variation: int = 0
    log: logging.Logger | Any = field(default_factory=lambda: logging.getLogger("imagen"))
    progress: ProgressListener | None = None


def derived_seed(context: GenerationContext) -> int:
    """A seed in 1..MAX_SEED fixed by the run, instance and variation, so every retry sends
    the same input and renders the same image (0 is never chosen: FLUX on Replicate reads it
    as "pick a random seed")."""
    key = f"{context.run_id}\x00{context.instance_name}"
    if context.variation:
        key += f"\x00{context.variation}"
    return 1 + int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % MAX_SEED


def verify_image(data: bytes, source: str) -> ImageFacts:
    """Check with Pillow that a server sent a whole image; returns its format and size.

    Anything else is a permanent error naming ``source`` (e.g. "Replicate output").
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            facts = ImageFacts(format=image.format or "", width=width, height=height)
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise PermanentBackendError(f"{source} is not an image: {error}") from None
    return facts


@dataclass(frozen=True)
class BackendCheck:
    """Result of a cheap probe of a configured backend (``imagen backends --check``)."""

    reachable: bool | None
    credentials: bool | None
    model_present: bool | None
    detail: str = ""


class ImageBackend(BaseModel, ABC):
    """Base class of all image backends.

    Subclasses declare their ``imagen.yaml`` fields as typed, described attributes and list
    fields that hold env var *names* of secrets in ``credential_fields``. An instance is
    immutable once its block is validated; unknown keys are refused by the registry, which
    names the allowed ones.
    """

    model_config = ConfigDict(frozen=True)

    credential_fields: ClassVar[tuple[str, ...]] = ()

    pool: Literal["gpu", "cloud"] = Field(
        default="cloud",
        description="Where the generation runs: 'gpu' (a GPU server: few at a time) or "
        "'cloud' (a service: many in parallel); the Dagster layer runs each in an op pool "
        "of its own (imagen_gpu, imagen_cloud).",
    )
    fallback: list[str] = Field(
        default_factory=list,
        description="Other instances to use, in order, when this one cannot take the job "
        "(it raises BackendUnavailableError: every ComfyUI server down, or no queue slot "
        "free in time); the budget applies to them as to any call.",
    )
    client_options: dict[str, OptionRule] | None = Field(
        default=None,
        description="The backend_opts a web client (a row of imagen.jobs) may set, each with "
        "{min, max} (add type: integer for whole numbers) or {choices: [...]}; {} allows "
        "none. Unset: the adapter's default (docs/backends.md). The operator's own requests "
        "may set any option the adapter takes.",
    )

    @abstractmethod
    def generate(self, request: GenerationRequest, context: GenerationContext) -> GenerationResult:
        """Produce one image or raise a transient/permanent backend error."""

    def model_name(self) -> str:
        """The model this instance generates with, for naming and cost estimates."""
        return str(getattr(self, "model", "") or type(self).__name__)

    def queue_slots(self) -> dict[str, int]:
        """Generations this instance can run at once, by where they run (a server URL): what
        the Dagster pool of a GPU backend must allow. Empty: one at a time."""
        return {}

    def estimate_price(self, request: GenerationRequest) -> Price:
        """Expected price of ``request`` before it is sent; free by default. A request with
        ``sources`` (and its ``mode``) is an edit call: an adapter whose provider bills those
        otherwise prices them here."""
        return FREE

    # -- source images ---------------------------------------------------------------------

    def source_support(self) -> SourceSupport:
        """What this instance takes besides text; by default nothing."""
        return NO_SOURCES

    def check_sources(self, name: str, request: GenerationRequest) -> None:
        """Raise :class:`~imagen_pipeline.errors.InvalidRequestError` naming the field when
        instance ``name`` cannot take the request's source images, mode, strength or mask
        (before any call; the checked images also against its own limits)."""
        support = self.source_support()
        images = max(request.source_count, len(request.sources))
        refusal = support.refusal(
            name, images, request.mode, request.strength, request.has_mask or bool(request.mask)
        )
        if refusal is not None:
            raise InvalidRequestError(*refusal)
        for source in request.sources:
            problem = support.image_refusal(name, source)
            if problem is not None:
                raise InvalidRequestError(f"source_images[{source.position}]", problem)
        if request.mask is not None:
            problem = support.image_refusal(name, request.mask)
            if problem is not None:
                raise InvalidRequestError("mask", problem)

    def check_source_fields(
        self,
        mode: SourceMode | None,
        strength: float | None,
        mask: bool,
        *,
        from_client: bool,
    ) -> None:
        """Raise :class:`~imagen_pipeline.errors.InvalidRequestError` when a web client sets
        a source field (:data:`SOURCE_FIELDS`) the instance's ``client_options`` does not
        allow (entry ``request.<field>``), or outside its rule; the operator may set any."""
        if not from_client:
            return
        rules = self.client_option_rules()
        for field_name, value in (("mode", mode), ("strength", strength), ("mask", mask or None)):
            if value is None:
                continue
            rule = rules.get(FIELD_RULE_PREFIX + field_name)
            if rule is None:
                raise InvalidRequestError(
                    field_name,
                    "is not something a client may set here (the instance's client_options "
                    f"has no {FIELD_RULE_PREFIX}{field_name} entry)",
                )
            problem = rule.problem(value)
            if problem is not None:
                raise InvalidRequestError(field_name, problem)

    def check(self) -> BackendCheck:
        """Probe reachability, credentials and model cheaply; default: nothing to probe."""
        return BackendCheck(reachable=None, credentials=None, model_present=None)

    # -- options ---------------------------------------------------------------------------

    def client_option_rules(self) -> dict[str, OptionRule]:
        """The options a web client may set: ``client_options``, else the adapter's default."""
        if self.client_options is not None:
            return dict(self.client_options)
        return self.default_client_options()

    def default_client_options(self) -> dict[str, OptionRule]:
        """What this adapter takes from anyone when ``client_options`` is unset: nothing."""
        return {}

    def reserved_option(self, key: str) -> str | None:
        """Why option ``key`` may not be sent (it sets what a request field or the pipeline
        sets), or None."""
        if key.startswith(FIELD_RULE_PREFIX):
            field_name = key.removeprefix(FIELD_RULE_PREFIX)
            return set_by_field(field_name) + f" ({key} in client_options rules that field)"
        return set_by_field(key) if key in REQUEST_FIELD_OPTIONS else None

    def option_problem(self, key: str, value: Any) -> str | None:
        """Why this adapter cannot take ``key: value`` from anyone, or None."""
        return None

    def options_problem(self, options: Mapping[str, Any]) -> tuple[str, str] | None:
        """An option that is valid alone but not with the others (or the config's): its key
        and why; None when they go together."""
        return None

    def takes_file(self, key: str) -> bool:
        """True when option ``key`` makes the backend fetch or read an image, file or URL."""
        return is_file_input(key)

    def check_options(self, options: Mapping[str, Any], *, from_client: bool) -> None:
        """Raise :class:`~imagen_pipeline.errors.InvalidRequestError` naming the first option
        that may not be sent: one that sets a request field (for anyone), one a client may
        not set or sets out of bounds (``from_client``), one the adapter cannot take."""
        check_options(
            options,
            from_client=from_client,
            rules=self.client_option_rules(),
            reserved=self.reserved_option,
            adapter=self.option_problem,
        )
        together = self.options_problem(options)
        if together is not None:
            raise InvalidRequestError(f"backend_opts.{together[0]}", together[1])

    def accepted_options(
        self, options: Mapping[str, Any], *, from_client: bool
    ) -> tuple[dict[str, Any], list[str]]:
        """The options this instance takes from this requester, and the keys it does not
        (a fallback instance keeps what it can of a request planned for another)."""
        kept: dict[str, Any] = {}
        for key, value in options.items():
            try:
                self.check_options({key: value}, from_client=from_client)
            except InvalidRequestError:
                continue
            kept[key] = value
        return kept, sorted(set(options) - set(kept))

    def client_option_problems(self) -> list[tuple[str, str]]:
        """Entries of the client allow-list that no client may be offered, with why."""
        rules = self.client_option_rules()
        field_rules = {FIELD_RULE_PREFIX + name: name for name in SOURCE_FIELDS}
        problems = rule_problems(
            {key: rule for key, rule in rules.items() if key not in field_rules},
            reserved=self.reserved_option,
            adapter=self.option_problem,
            takes_file=self.takes_file,
        )
        support = self.source_support()
        for rule_key, key in field_rules.items():
            rule = rules.get(rule_key)
            if rule is None:
                continue
            if not support.max_images:
                problems.append((rule_key, f"this instance {support.describe()}"))
                continue
            samples = rule.choices if rule.choices is not None else [rule.min, rule.max]
            allowed: dict[str, tuple[Any, ...]] = {"mode": support.modes, "mask": (True,)}
            for sample in samples:
                if key == "strength" and not (isinstance(sample, int | float) and 0 <= sample <= 1):
                    problems.append((rule_key, "strength rules stay within 0 to 1"))
                    break
                if key in allowed and not any(sample is a or sample == a for a in allowed[key]):
                    problems.append(
                        (rule_key, f"{sample!r} is not available; {support.describe()}")
                    )
                    break
        return sorted(problems)
