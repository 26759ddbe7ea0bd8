"""One request body for ``/images/generations`` (or, with source images, the form fields of
``/images/edits``), checked against the model family before anything is sent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from imagen_pipeline.backends.contract import GenerationRequest
from imagen_pipeline.backends.openai.models import (
    EDIT_ONLY_JSON,
    FAMILIES,
    Family,
    combination_problems,
    fitting_size,
    parameter_problem,
    size_problems,
)
from imagen_pipeline.errors import PermanentBackendError

SizePolicy = Literal["nearest", "exact"]


@dataclass(frozen=True)
class PreparedRequest:
    """The validated body of one generation and what it was derived from."""

    family: Family
    body: dict[str, Any]
    requested_size: str
    input_pixels: tuple[int, ...] = ()
    """Pixels of each source image and the mask: an edit (``/images/edits``) when any."""

    @property
    def is_edit(self) -> bool:
        """True when the request starts from images (an ``images/edits`` call)."""
        return bool(self.input_pixels)


def prepare_request(
    request: GenerationRequest,
    *,
    model: str,
    family: Family,
    size_policy: SizePolicy,
    options: dict[str, Any],
    log: Any = None,
) -> PreparedRequest:
    """The body of ``request`` for ``model``: the size the model renders, the configured
    ``options``, then the request's ``backend_opts`` (already checked by the option rules:
    none sets model, prompt, n or size), all checked against the family.

    Any problem is a permanent error before a request is sent; ``log`` (if given) hears
    about a size moved to the closest one the model renders.
    """
    rules = FAMILIES[family]
    requested = f"{request.width}x{request.height}"
    problems = []
    if len(request.prompt) > rules.max_prompt_chars:
        problems.append(
            f"prompt: {len(request.prompt)} characters; {model} accepts at most "
            f"{rules.max_prompt_chars}"
        )
    if not size_problems(requested):
        size = requested
    elif size_policy == "exact":
        size = requested
        problems.append(
            f"width x height: {'; '.join(size_problems(requested))} "
            "(size_policy: nearest sends the closest allowed size)"
        )
    else:
        size = fitting_size(request.width, request.height)
        if log is not None:
            log.info(
                f"OpenAI {model}: {requested} breaks a size rule "
                f"({'; '.join(size_problems(requested))}); sending size {size}"
            )
    body: dict[str, Any] = {"model": model, "prompt": request.prompt, "n": 1}
    body["size"] = size
    body.update(options)
    for name, value in request.backend_opts.items():
        problem = parameter_problem(family, model, name, value)
        if problem:
            problems.append(f"backend_opts.{problem}")
        body[name] = value
    problems.extend(combination_problems(body))
    inputs = [*request.sources, *([request.mask] if request.mask else [])]
    if inputs:
        problems.extend(
            f"{name}: not a parameter of the multipart images/edits form"
            + (" (set in backend_opts)" if name in request.backend_opts else " (set in the config)")
            for name in EDIT_ONLY_JSON
            if name in body
        )
    if problems:
        raise PermanentBackendError(
            "OpenAI images: " + "; ".join(problems), public="; ".join(problems)
        )
    return PreparedRequest(
        family=family,
        body=body,
        requested_size=requested,
        input_pixels=tuple(item.width * item.height for item in inputs),
    )
