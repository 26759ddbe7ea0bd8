"""What the probes share, each opened once however many probes ask: the imagen.yaml setup
and the Dagster instance in ``$DAGSTER_HOME``. A part that cannot be opened is remembered
with its error, so each probe that needs it says why it was skipped."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

from imagen_pipeline.errors import ImagenError
from imagen_pipeline.generate.setup import Setup, load_setup

if TYPE_CHECKING:
    import dagster as dg

T = TypeVar("T")
NETWORK_TIMEOUT_S = 3.0
"""Each connection and request of a check; the report's deadline bounds the whole."""


class PartUnavailableError(Exception):
    """A shared part cannot be opened; the message says why, for a skipped check."""


class Once(Generic[T]):
    """A value made on first use by one thread while the others wait, or its error."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._done = False
        self._value: T | None = None
        self._error: PartUnavailableError | None = None

    def get(self) -> T:
        """The value, or :class:`PartUnavailableError` with why it could not be made."""
        with self._lock:
            if not self._done:
                try:
                    self._value = self._make()
                except PartUnavailableError as error:
                    self._error = error
                self._done = True
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]

    def made(self) -> T | None:
        """The value if it was made, without making it or waiting for a thread making it."""
        return self._value if self._done else None


@dataclass
class Stack:
    """The doctor's view of one deployment: its imagen.yaml, its Dagster instance, the
    webserver the listener submits runs to."""

    config_path: str | None
    webserver_url: str
    setup: Once[Setup] = field(init=False)
    instance: Once[dg.DagsterInstance] = field(init=False)

    def __post_init__(self) -> None:
        self.setup = Once(self._load_setup)
        self.instance = Once(self._open_instance)

    def _load_setup(self) -> Setup:
        try:
            return load_setup(self.config_path)
        except ImagenError as error:
            raise PartUnavailableError(f"imagen.yaml does not load (see config): {error}") from None

    def _open_instance(self) -> dg.DagsterInstance:
        if not os.environ.get("DAGSTER_HOME"):
            raise PartUnavailableError("DAGSTER_HOME is not set (see dagster)")
        import dagster as dg

        try:
            return dg.DagsterInstance.get()
        except Exception as error:  # storage, config and import errors alike
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise PartUnavailableError(
                f"the Dagster instance cannot be opened: {type(error).__name__}: {first}"
            ) from None

    def close(self) -> None:
        """Dispose of the instance if it was opened."""
        instance = self.instance.made()
        if instance is not None:
            instance.dispose()
