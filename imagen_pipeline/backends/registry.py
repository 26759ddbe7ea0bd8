"""Backend types by name, and building configured instances from their ``imagen.yaml``
blocks into :class:`Backends`, the instances a run may use.

Adding an adapter: write its module, then add one line to ``BACKEND_TYPES``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from imagen_pipeline.backends.comfyui import ComfyUIBackend
from imagen_pipeline.backends.contract import BackendCheck, ImageBackend
from imagen_pipeline.backends.mock import MockBackend
from imagen_pipeline.backends.openai import OpenAIImagesBackend
from imagen_pipeline.backends.replicate import ReplicateBackend
from imagen_pipeline.config.secrets import is_env_var_name, resolve_secret
from imagen_pipeline.config.validation import describe_validation_error
from imagen_pipeline.errors import ConfigError, ImagenError, MissingCredentialError

BACKEND_TYPES: dict[str, type[ImageBackend]] = {
    "comfyui": ComfyUIBackend,
    "mock": MockBackend,
    "openai": OpenAIImagesBackend,
    "replicate": ReplicateBackend,
}


@dataclass(frozen=True)
class BackendInstance:
    """A named backend from ``imagen.yaml``: instance name, type name and the adapter."""

    name: str
    type_name: str
    backend: ImageBackend

    def credential_env_vars(self) -> dict[str, str]:
        """Field name -> env var name for every secret this instance needs."""
        names = {f: getattr(self.backend, f) for f in self.backend.credential_fields}
        return {field: env for field, env in names.items() if env}

    def missing_credentials(self) -> list[str]:
        """Names of env vars this instance needs that are not set."""
        missing = []
        for field, env_var in self.credential_env_vars().items():
            try:
                resolve_secret(env_var, f"backends.{self.name}.{field}")
            except MissingCredentialError:
                missing.append(env_var)
        return missing

    def check(self) -> BackendCheck:
        """Probe the instance (``imagen backends --check``, ``imagen doctor``): nothing is
        sent without its credentials, and an error of the probe counts as unreachable."""
        if self.missing_credentials():
            return BackendCheck(
                reachable=None, credentials=False, model_present=None, detail="credentials missing"
            )
        try:
            return self.backend.check()
        except ImagenError as error:
            return BackendCheck(
                reachable=False, credentials=None, model_present=None, detail=str(error)
            )

    def require_credentials(self) -> None:
        """Fail fast, naming the first unset variable, before any request is sent."""
        for field, env_var in self.credential_env_vars().items():
            resolve_secret(env_var, f"backends.{self.name}.{field}")


def registered_types() -> list[str]:
    """Sorted names usable as ``type:`` in a backend block."""
    return sorted(BACKEND_TYPES)


def build_backend(name: str, block: Any) -> BackendInstance:
    """Validate one ``backends.<name>`` block and construct its adapter."""
    path = f"backends.{name}"
    if not isinstance(block, Mapping):
        raise ConfigError(f"{path}: must be a mapping with a 'type' key")
    type_name = block.get("type")
    if not type_name:
        raise ConfigError(
            f"{path}.type: missing; registered types: {', '.join(registered_types())}"
        )
    backend_cls = BACKEND_TYPES.get(str(type_name))
    if backend_cls is None:
        raise ConfigError(
            f"{path}.type: unknown backend type {type_name!r}; "
            f"registered types: {', '.join(registered_types())}"
        )
    fields = {key: value for key, value in block.items() if key != "type"}
    allowed = sorted(backend_cls.model_fields)
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        raise ConfigError(
            f"{path}: unknown key {unknown[0]!r} for type {type_name!r}; "
            f"allowed keys: {', '.join(['type', *allowed])}"
        )
    for field in backend_cls.credential_fields:
        value = fields.get(field)
        if value is not None and not (isinstance(value, str) and is_env_var_name(value)):
            raise ConfigError(
                f"{path}.{field}: must be the NAME of an environment variable "
                "(A-Z, 0-9, _), never the secret itself"
            )
    try:
        backend = backend_cls(**fields)
    except ValidationError as error:
        raise ConfigError(
            describe_validation_error(
                error, backend_cls, prefix=path, secret_fields=backend_cls.credential_fields
            )
        ) from None
    problems = backend.client_option_problems()
    if problems:
        raise ConfigError(
            "; ".join(f"{path}.client_options.{key}: {problem}" for key, problem in problems)
        )
    return BackendInstance(name=name, type_name=str(type_name), backend=backend)


@dataclass(frozen=True)
class Backends(Mapping[str, BackendInstance]):
    """The backend instances a run may use, by name, and where they were configured."""

    instances: Mapping[str, BackendInstance] = dataclasses.field(default_factory=dict)
    source_label: str = ""

    def __getitem__(self, name: str) -> BackendInstance:
        return self.instances[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.instances)

    def __len__(self) -> int:
        return len(self.instances)

    def instance(self, name: str) -> BackendInstance:
        """The instance called ``name``, or an error listing the configured ones."""
        try:
            return self.instances[name]
        except KeyError:
            where = f" in {self.source_label}" if self.source_label else ""
            raise ConfigError(
                f"backend {name!r} is not configured{where}; "
                f"configured backends: {', '.join(sorted(self.instances))}"
            ) from None

    def names(self) -> list[str]:
        """The instance names, sorted."""
        return sorted(self.instances)

    def replaced(self, instances: Mapping[str, BackendInstance]) -> Backends:
        """These instances with ``instances`` added, or taking the place of those of the same
        name."""
        return Backends({**self.instances, **instances}, self.source_label)


def build_backends(blocks: Mapping[str, Any], source_label: str = "") -> Backends:
    """Every ``backends.<name>`` block built into its adapter; an error names the file."""
    try:
        instances = {name: build_backend(name, block) for name, block in blocks.items()}
    except ConfigError as error:
        if source_label:
            raise ConfigError(f"{source_label}: {error.message}") from None
        raise
    return Backends(instances, source_label)
