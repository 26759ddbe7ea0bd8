"""The backend instances of ``imagen.yaml`` as Dagster resources.

Each instance (``backends.<name>``) is bound as a resource ``backend_<name>`` when the code
location loads, so the UI's resources page lists every ComfyUI box, Replicate and OpenAI
instance with its settings (env var *names*, never secrets) and shows that
``generate_image`` uses it.

``imagen.yaml`` stays the one place a user configures backends, and it is read again when a
run starts: for an instance the file defines, the run uses the file as it is then (an edit
needs no reload of the code location; the resources page shows the file as it was at the
last load, and the run's log says when the two differ). A resource bound in code instead
(a test's ``execute_in_process(resources=...)``, or a ``Definitions`` built in Python) is
used as it is, even over the file. See docs/architecture.md "Backends as resources".
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import dagster as dg
from pydantic import Field

from imagen_pipeline.backends.registry import BackendInstance, build_backend
from imagen_pipeline.errors import ConfigError
from imagen_pipeline.generate.setup import Setup, load_setup

KEY_PREFIX = "backend_"
FROM_CODE = "code"


class BackendResource(dg.ConfigurableResource):
    """An image backend instance: ComfyUI on a GPU box, Replicate, OpenAI or the mock.

    Its settings are its ``imagen.yaml`` block; secrets appear only as the names of the env
    vars that hold them.
    """

    instance: str = Field(description="Instance name: backends.<name> in imagen.yaml.")
    type: str = Field(description="Adapter type: comfyui, replicate, openai or mock.")
    settings: str = Field(
        default="{}",
        description="The instance's settings that differ from its type's defaults, as JSON "
        "(URLs, model, workflow, fallback, env var names of credentials; docs/backends.md "
        "lists every key and its default). JSON text, so Dagster's config system never reads "
        "a setting's null as a missing value.",
    )
    source: str = Field(
        default=FROM_CODE,
        description="Where these settings come from: the imagen.yaml read when the code "
        "location loaded (a run reads that file again and uses it as it is then), or "
        "'code' (bound in Python, used as it is).",
    )

    @property
    def from_code(self) -> bool:
        """True when bound in code rather than read from imagen.yaml."""
        return self.source == FROM_CODE

    def settings_dict(self) -> dict[str, Any]:
        """The settings as a mapping (an error names the resource when they are not)."""
        try:
            settings = json.loads(self.settings)
        except ValueError as error:
            raise ConfigError(f"resource {self.instance!r}: settings: not JSON ({error})") from None
        if not isinstance(settings, dict):
            raise ConfigError(f"resource {self.instance!r}: settings: must be a JSON object")
        return settings

    def backend_instance(self) -> BackendInstance:
        """The adapter these settings describe (validated like an imagen.yaml block)."""
        return build_backend(self.instance, {"type": self.type, **self.settings_dict()})

    @classmethod
    def of(cls, instance: BackendInstance, source: str = FROM_CODE) -> BackendResource:
        """The resource describing ``instance``: the settings that differ from the defaults,
        and always the names of the env vars that hold its credentials."""
        settings = {
            **instance.backend.model_dump(mode="json", exclude_defaults=True),
            **instance.credential_env_vars(),
        }
        return cls(
            instance=instance.name,
            type=instance.type_name,
            settings=json.dumps(settings, sort_keys=True),
            source=source,
        )


def resource_key(instance: str) -> str:
    """The resource key of an instance name: ``backend_`` plus the name with every
    character Dagster does not allow in a key replaced by ``_``."""
    return KEY_PREFIX + re.sub(r"[^A-Za-z0-9_]", "_", instance)


def backend_resources(loaded: Setup) -> dict[str, BackendResource]:
    """One resource per configured instance, keyed by :func:`resource_key`.

    Two names that map to one key (``flux-dev`` and ``flux_dev``) keep the first in sorted
    order; the other is still usable by name, it is only not listed as a resource.
    """
    resources: dict[str, BackendResource] = {}
    for name in loaded.backends.names():
        resources.setdefault(
            resource_key(name), BackendResource.of(loaded.backend(name), loaded.source_label)
        )
    return resources


def load_backend_resources() -> dict[str, BackendResource]:
    """The resources of the imagen.yaml found now; none when it cannot be read (the code
    location still loads, and every run reports the config error)."""
    try:
        return backend_resources(load_setup())
    except ConfigError:
        return {}


def bound_in_code(resources: Mapping[str, Any]) -> dict[str, BackendInstance]:
    """The instances of the backend resources among ``resources`` that were bound in code,
    by instance name: these take the place of the file's instances of that name."""
    return {
        resource.instance: resource.backend_instance()
        for resource in _backends_among(resources)
        if resource.from_code
    }


def changed_since_load(resources: Mapping[str, Any], loaded: Setup) -> list[str]:
    """Instances whose settings in ``loaded`` (imagen.yaml as a run reads it) differ from the
    resources read from the same file when the code location loaded, or that were added or
    removed since: what the resources page shows out of date until the next reload. A run
    that reads another file (``--config``) is not compared."""
    shown = {
        resource.instance: resource
        for resource in _backends_among(resources)
        if resource.source == loaded.source_label
    }
    if not shown:
        return []
    now = backend_resources(loaded)
    current = {resource.instance: resource for resource in now.values()}
    names = sorted(set(shown) | set(current))
    return [
        name
        for name in names
        if name not in shown
        or name not in current
        or (shown[name].type, shown[name].settings) != (current[name].type, current[name].settings)
    ]


def _backends_among(resources: Mapping[str, Any]) -> list[BackendResource]:
    """The backend resources among a run's resources."""
    return [
        resource
        for key, resource in resources.items()
        if key.startswith(KEY_PREFIX) and isinstance(resource, BackendResource)
    ]
