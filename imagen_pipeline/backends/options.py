"""A request's ``backend_opts``: who may set which option, and within what limits.

Options come from two kinds of source. The operator (``imagen.yaml``, ``imagen generate``,
the Dagster launchpad, ``dagster job execute``) is trusted: any option the adapter takes.
A row of ``imagen.jobs`` (a web client) is not: only the options the backend instance lists
in ``client_options`` (or, without that list, the adapter's documented default), each within
its bounds or choices. For everyone, an option never sets what a request field sets (width,
height, steps, seed, prompt, negative, count): those go through their fields and limits.

A client option's value is a number within bounds or one of the operator's choices; a
choice never names a URL or a file, so no client option makes a backend fetch or read one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from imagen_pipeline.errors import InvalidRequestError

OptionValue = bool | int | float | str
"""A value a client option may take (never a list or an object)."""

_URL = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*://|data:|file:)", re.IGNORECASE)
_FILE_SUFFIX = re.compile(
    r"\.(?:safetensors|ckpt|pt|pth|bin|gguf|onnx|png|jpe?g|webp|gif|bmp|tiff?|json|ya?ml|txt)$",
    re.IGNORECASE,
)
FILE_INPUT_NAMES = frozenset(
    {
        "image",
        "images",
        "mask",
        "input_image",
        "input_images",
        "image_prompt",
        "init_image",
        "control_image",
        "lora",
        "lora_weights",
        "extra_lora",
        "hf_lora",
        "url",
        "file",
        "path",
    }
)
"""Input names that take an image, a file or a URL on the providers this pipeline speaks to
(Replicate's FLUX models, ComfyUI's loaders): never settable by a client."""
FILE_INPUT_SUFFIXES = ("_image", "_images", "_mask", "_url", "_uri", "_file", "_path", "_lora")


def names_url_or_file(value: str) -> bool:
    """True for text a backend would take as a URL, a data URI, a path or a file name."""
    text = value.strip()
    return bool(
        _URL.match(text)
        or "/" in text
        or "\\" in text
        or text.startswith("~")
        or _FILE_SUFFIX.search(text)
    )


def is_file_input(name: str) -> bool:
    """True for an input name that takes an image, a file or a URL (see FILE_INPUT_NAMES)."""
    lowered = name.lower()
    return lowered in FILE_INPUT_NAMES or lowered.endswith(FILE_INPUT_SUFFIXES)


def _same(value: Any, choice: OptionValue) -> bool:
    """``value == choice`` without Python's ``True == 1``: a boolean matches only a boolean."""
    if isinstance(value, bool) or isinstance(choice, bool):
        return isinstance(value, bool) and isinstance(choice, bool) and value is choice
    if isinstance(value, int | float) and isinstance(choice, int | float):
        return value == choice
    return isinstance(value, str) and isinstance(choice, str) and value == choice


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


class OptionRule(BaseModel):
    """What a client may send for one option: a number from ``min`` to ``max`` (a whole one
    with ``type: integer``), or one of ``choices``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["number", "integer"] = Field(
        default="number", description="With min and max: any number, or whole numbers only."
    )
    min: int | float | None = Field(default=None, description="Lowest number allowed.")
    max: int | float | None = Field(default=None, description="Highest number allowed.")
    choices: list[OptionValue] | None = Field(
        default=None,
        description="The values allowed (text, numbers, true/false); never a URL or a file.",
    )

    @model_validator(mode="after")
    def _check_form(self) -> OptionRule:
        bounded = self.min is not None or self.max is not None
        if self.choices is not None:
            if bounded:
                raise ValueError("give either min and max, or choices, not both")
            if not self.choices:
                raise ValueError("choices: list at least one value")
            for choice in self.choices:
                if isinstance(choice, str) and names_url_or_file(choice):
                    raise ValueError(
                        f"choices: {choice!r} names a URL or a file; a client option never does"
                    )
            return self
        if self.min is None or self.max is None:
            raise ValueError(
                "give both min and max (e.g. {min: 1, max: 10}) or choices (e.g. "
                "{choices: [simple, karras]})"
            )
        if not (math.isfinite(self.min) and math.isfinite(self.max)) or self.min > self.max:
            raise ValueError(f"min ({self.min:g}) must be a number at most max ({self.max:g})")
        return self

    def describe(self) -> str:
        """``a number from 1 to 10`` / ``an integer from 1 to 4`` / ``one of simple, karras``."""
        if self.choices is not None:
            return "one of " + ", ".join(
                choice if isinstance(choice, str) else _shown(choice) for choice in self.choices
            )
        kind = "an integer" if self.type == "integer" else "a number"
        return f"{kind} from {_number(self.min or 0)} to {_number(self.max or 0)}"

    def problem(self, value: Any) -> str | None:
        """Why a client may not send ``value`` (naming what is allowed), or None."""
        if self.choices is not None:
            if any(_same(value, choice) for choice in self.choices):
                return None
            return f"{_shown(value)} is not allowed; allowed: {self.describe()}"
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        if not numeric or (self.type == "integer" and not isinstance(value, int)):
            return f"must be {self.describe()} (got {_shown(value)})"
        if not (self.min or 0) <= value <= (self.max or 0) or not math.isfinite(value):
            return f"{_shown(value)} is out of range; allowed: {self.describe()}"
        return None


def _shown(value: Any) -> str:
    """A client's value as an error shows it: short, whatever its type."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return _number(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:40] + "…")
    return "a list" if isinstance(value, list) else "an object"


def set_by_field(field: str, what: str = "") -> str:
    """Why an option may not set a request field: ``sets width, which only the request's
    width field may set`` (``what``: a plainer name for what the option sets)."""
    fields = "fields" if " and " in field else "field"
    return f"sets {what or field}, which only the request's {field} {fields} may set"


def describe_rules(rules: Mapping[str, OptionRule]) -> str:
    """``guidance (a number from 1 to 10), 17.scheduler (one of simple, karras)`` or ``none``."""
    if not rules:
        return "none"
    return ", ".join(f"{key} ({rule.describe()})" for key, rule in sorted(rules.items()))


ReservedLookup = Callable[[str], str | None]
"""Option key -> why no option may set what it sets (see :func:`set_by_field`), or None."""
AdapterCheck = Callable[[str, Any], str | None]
"""Option key and value -> why the adapter cannot take it (for anyone), or None."""


def option_problem(
    key: str,
    value: Any,
    *,
    from_client: bool,
    rules: Mapping[str, OptionRule],
    reserved: ReservedLookup,
    adapter: AdapterCheck,
) -> str | None:
    """Why ``key: value`` may not be sent for this requester, or None.

    The order is the one a user can act on: a request field's job first (for anyone), then
    the client allow-list, then the adapter's own rules.
    """
    reason = reserved(key)
    if reason is not None:
        return reason
    if from_client:
        rule = rules.get(key)
        if rule is None:
            return f"is not an option a client may set here; allowed: {describe_rules(rules)}"
        problem = rule.problem(value)
        if problem is not None:
            return problem
    return adapter(key, value)


def check_options(
    options: Mapping[str, Any],
    *,
    from_client: bool,
    rules: Mapping[str, OptionRule],
    reserved: ReservedLookup,
    adapter: AdapterCheck,
) -> None:
    """Raise :class:`InvalidRequestError` naming the first option that may not be sent."""
    for key in sorted(options):
        problem = option_problem(
            key,
            options[key],
            from_client=from_client,
            rules=rules,
            reserved=reserved,
            adapter=adapter,
        )
        if problem is not None:
            raise InvalidRequestError(f"backend_opts.{key}", problem)


def rule_problems(
    rules: Mapping[str, OptionRule],
    *,
    reserved: ReservedLookup,
    adapter: AdapterCheck,
    takes_file: Callable[[str], bool],
) -> list[tuple[str, str]]:
    """``client_options`` entries an operator may not offer: (key, why) for each."""
    problems = []
    for key, rule in sorted(rules.items()):
        reason = reserved(key)
        if reason is not None:
            problems.append((key, reason))
        elif takes_file(key):
            problems.append((key, "takes an image, a file or a URL; clients cannot set it"))
        else:
            samples = rule.choices if rule.choices is not None else [rule.min, rule.max]
            problem = next(filter(None, (adapter(key, value) for value in samples)), None)
            if problem is not None:
                problems.append((key, problem))
    return problems
