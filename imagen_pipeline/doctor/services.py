"""The services runs and the fast path talk to: every backend instance (the probe of
``imagen backends --check``), the Storage bucket of the ``cloud:`` block, and the Dagster
webserver the listener submits runs to."""

from __future__ import annotations

import time

import httpx

from imagen_pipeline.backends.registry import BackendInstance
from imagen_pipeline.doctor.report import Check, Probe, elapsed_ms, redact_url
from imagen_pipeline.doctor.stack import NETWORK_TIMEOUT_S, PartUnavailableError, Stack
from imagen_pipeline.errors import ImagenError
from imagen_pipeline.storage.client import SupabaseStorage


def backend_check(instance: BackendInstance) -> Check:
    """One backend instance's line from its probe."""
    name = f"backend[{instance.name}]"
    result = instance.check()
    hint = f"see backends.{instance.name} in imagen.yaml and imagen backends --check"
    if result.credentials is False:
        missing = ", ".join(instance.missing_credentials())
        return Check(name, "fail", f"credentials missing: {missing} not set", hint)
    if result.reachable is False:
        return Check(name, "fail", f"not reachable: {result.detail}", hint)
    if result.model_present is False:
        return Check(name, "fail", f"model not there: {result.detail}", hint)
    if result.reachable is None:
        return Check(name, "ok", f"{instance.type_name}: nothing to probe")
    return Check(name, "ok", f"{instance.type_name}: {result.detail or 'answers'}")


def backend_probes(stack: Stack) -> list[Probe]:
    """One probe per backend instance (each may wait on its own server), or one that says
    why there are none. Reads imagen.yaml now, to know the instances: a local file."""
    try:
        setup = stack.setup.get()
    except PartUnavailableError as error:
        reason = str(error)
        return [Probe("backend", lambda: [Check("backend", "skip", reason)])]
    return [
        Probe(f"backend[{name}]", lambda instance=instance: [backend_check(instance)])
        for name, instance in sorted(setup.backends.items())
    ]


def check_bucket(stack: Stack) -> list[Check]:
    """The ``cloud:`` block's bucket exists and the key may read it."""
    try:
        cloud = stack.setup.get().config.cloud
    except PartUnavailableError as error:
        return [Check("storage", "skip", str(error))]
    if cloud is None:
        return [Check("storage", "skip", "no cloud: block in imagen.yaml: images stay local")]
    settings = cloud.model_copy(update={"timeout_s": min(cloud.timeout_s, NETWORK_TIMEOUT_S)})
    hint = "see cloud: in imagen.yaml (docs/cloud.md)"
    started = time.monotonic()
    try:
        with SupabaseStorage.from_config(settings) as storage:
            bucket = storage.bucket(cloud.bucket)
            origin = storage.origin
    except ImagenError as error:  # CloudSyncError, or a ConfigError naming the env var
        return [Check("storage", "fail", str(error), hint)]
    took = elapsed_ms(started)
    visibility = "public" if bucket.public else "private"
    if cloud.url_mode == "public" and not bucket.public:
        return [
            Check(
                "storage",
                "warn",
                f"bucket {bucket.name!r} at {origin} is private but cloud.url_mode is public: "
                "the stored URLs will not open",
                "make the bucket public or set cloud.url_mode: signed",
            )
        ]
    return [Check("storage", "ok", f"bucket {bucket.name!r} ({visibility}) at {origin} ({took})")]


VERSION_QUERY = {"query": "{ version }"}


def check_webserver(stack: Stack) -> list[Check]:
    """The webserver the listener submits runs to answers Dagster's GraphQL."""
    url = stack.webserver_url.rstrip("/")
    shown = redact_url(url)
    hint = (
        "start dagster-webserver (systemctl start imagen-webserver), or set IMAGEN_WEBSERVER_URL "
        "to its URL in the listener's environment and here"
    )
    started = time.monotonic()
    try:
        reply = httpx.post(f"{url}/graphql", json=VERSION_QUERY, timeout=NETWORK_TIMEOUT_S)
    except httpx.HTTPError as error:
        return [
            Check(
                "webserver",
                "fail",
                f"{shown} does not answer ({type(error).__name__}): the listener cannot submit "
                "runs there and the UI is down",
                hint,
            )
        ]
    took = elapsed_ms(started)
    try:
        version = reply.json()["data"]["version"]
    except (ValueError, KeyError, TypeError):
        return [
            Check(
                "webserver",
                "fail",
                f"{shown} answers HTTP {reply.status_code} but not as Dagster's GraphQL API: "
                "the listener cannot submit runs there",
                hint,
            )
        ]
    return [Check("webserver", "ok", f"Dagster {version} at {shown} ({took})")]
