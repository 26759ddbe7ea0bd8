"""Models the providers have shut down: the one table, and the sentence a config naming one
fails with.

OpenAI's dates are from its deprecations page (developers.openai.com/api/docs/deprecations),
read 2026-12-02. The replacement named is the model this project's adapter supports today
(gpt-image-2); OpenAI's page also points to its newer gpt-image-2.x variants.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True)
class RetiredModel:
    """A model id a provider no longer serves."""

    provider: str
    model: str
    shutdown: date
    replacement: str


RETIRED_MODELS: tuple[RetiredModel, ...] = (
    RetiredModel("OpenAI", "dall-e-2", date(2026, 5, 12), "gpt-image-2"),
    RetiredModel("OpenAI", "dall-e-3", date(2026, 5, 12), "gpt-image-2"),
    RetiredModel("OpenAI", "gpt-image-1", date(2026, 10, 23), "gpt-image-2"),
    RetiredModel("OpenAI", "gpt-image-1-mini", date(2026, 12, 1), "gpt-image-2"),
    RetiredModel("OpenAI", "gpt-image-1.5", date(2026, 12, 1), "gpt-image-2"),
    RetiredModel("OpenAI", "chatgpt-image-latest", date(2026, 12, 1), "gpt-image-2"),
)


def find_retired(provider: str, model: str) -> RetiredModel | None:
    """The retirement of ``model`` at ``provider``, or None while it is served."""
    for retired in RETIRED_MODELS:
        if retired.provider == provider and retired.model == model:
            return retired
    return None


def retirement_message(retired: RetiredModel, named: str) -> str:
    """One sentence: which model, when it was shut down, what to use instead."""
    snapshot = f" (a snapshot of {retired.model})" if named != retired.model else ""
    return (
        f"{named}{snapshot} was shut down by {retired.provider} on "
        f"{retired.shutdown:%Y-%m-%d}; use {retired.replacement} instead"
    )
