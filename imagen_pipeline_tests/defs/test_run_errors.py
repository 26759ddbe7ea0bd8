"""The text of a failed run, for the operator and for the web user, from real step failures."""

from __future__ import annotations

import dagster as dg
import pytest

from imagen_pipeline.defs.failures import MAX_RETRIES, failure, step_errors
from imagen_pipeline.defs.run_errors import failure_fault, public_failure_text, step_failure_text
from imagen_pipeline.errors import (
    ConfigError,
    InvalidRequestError,
    PermanentBackendError,
    TransientBackendError,
)
from imagen_pipeline.storage.errors import CloudSyncError


def failed_run(
    error: BaseException, backend: str = "", retries: int = 0
) -> dg.ExecuteInProcessResult:
    """A one-op job whose op raises ``error`` inside ``step_errors``."""

    @dg.op
    def step(context) -> None:  # type: ignore[no-untyped-def]  # Dagster reads the annotation
        with step_errors(context, backend):
            raise error

    @dg.job(op_retry_policy=dg.RetryPolicy(max_retries=retries))
    def one_step() -> None:
        step()

    return one_step.execute_in_process(raise_on_error=False)


def texts(result: dg.ExecuteInProcessResult) -> tuple[str | None, str | None]:
    return step_failure_text(result.all_events), public_failure_text(result.all_events)


def test_a_request_error_reads_the_same_for_both_readers() -> None:
    operator, public = texts(failed_run(InvalidRequestError("width", "must be 64 to 4096")))
    assert operator == public == "width: must be 64 to 4096"


def test_a_server_side_error_keeps_its_detail_for_the_operator_only() -> None:
    error = ConfigError("/etc/imagen/imagen.yaml: backends.flux.url: not a URL")
    operator, public = texts(failed_run(error))
    assert operator == "/etc/imagen/imagen.yaml: backends.flux.url: not a URL"
    assert public == (
        "the server is not set up for this request; "
        "the operators can see the details in the job's Dagster run"
    )


def test_a_backends_error_names_the_backend_for_the_operator() -> None:
    error = PermanentBackendError("ComfyUI at http://10.0.0.5:8188: HTTP 500")
    operator, public = texts(failed_run(error, backend="backend 'flux' (comfyui): "))
    assert operator == "backend 'flux' (comfyui): ComfyUI at http://10.0.0.5:8188: HTTP 500"
    assert public is not None and "10.0.0.5" not in public and "flux" not in public


def test_a_transient_error_after_the_last_retry_is_a_failure_with_its_message() -> None:
    error = TransientBackendError("ComfyUI at http://10.0.0.5:8188 is unreachable")
    result = failed_run(error, backend="backend 'flux' (comfyui): ", retries=MAX_RETRIES)
    retried = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(retried) == MAX_RETRIES
    for event in retried:
        cause = event.event_specific_data.error.cause
        assert cause.message.strip().endswith(
            ": backend 'flux' (comfyui): ComfyUI at http://10.0.0.5:8188 is unreachable"
        ), "a retried attempt's error has the final error's shape, the backend named once"
    operator, public = texts(result)
    assert operator == "backend 'flux' (comfyui): ComfyUI at http://10.0.0.5:8188 is unreachable"
    assert public == (
        "the image backend did not answer or was overloaded, even after retries; "
        "retry the job later"
    )


def test_an_unexpected_error_in_a_backend_is_final_and_public_text_is_generic() -> None:
    operator, public = texts(failed_run(KeyError("width"), backend="backend 'x' (mock): "))
    assert operator == "backend 'x' (mock): unexpected KeyError: 'width'"
    assert public == (
        "step step failed unexpectedly; the operators can see the details in the job's Dagster run"
    )


def test_an_error_outside_step_errors_is_shown_once_by_its_class_name() -> None:
    @dg.op
    def raw() -> None:
        raise CloudSyncError("imagen database failed while recording", transient=True)

    @dg.job
    def one_step() -> None:
        raw()

    operator, _ = texts(one_step.execute_in_process(raise_on_error=False))
    assert operator == "imagen database failed while recording"


def test_a_foreign_error_keeps_its_short_class_name() -> None:
    @dg.op
    def raw() -> None:
        raise ValueError("bad value")

    @dg.job
    def one_step() -> None:
        raw()

    operator, _ = texts(one_step.execute_in_process(raise_on_error=False))
    assert operator == "ValueError: bad value"


def test_a_failure_carries_the_public_sentence_as_metadata() -> None:
    made = failure(CloudSyncError("Storage at http://x:1 down", transient=True), "prefix: ")
    assert made.description == "prefix: Storage at http://x:1 down"
    assert made.metadata["imagen/public_error"].value == (
        "the image was made but could not be stored right now; retry the job later"
    )
    with pytest.raises(KeyError):
        failure("a plain text").metadata["imagen/public_error"]


@pytest.mark.parametrize(
    ("error", "fault"),
    [
        (InvalidRequestError("width", "must be 64 to 4096"), "request"),
        (PermanentBackendError("HTTP 422", public="the prompt was refused"), "request"),
        (PermanentBackendError("HTTP 401: the token was refused"), "server"),
        (ConfigError("backends.flux.url: not a URL"), "server"),
        (TransientBackendError("HTTP 503"), "outage"),
        (CloudSyncError("Storage timed out", transient=True), "outage"),
        (CloudSyncError("bucket 'images' does not exist"), "server"),
        (RuntimeError("a bug"), "server"),
    ],
)
def test_a_failed_run_says_whose_fault_it_was(error: Exception, fault: str) -> None:
    result = failed_run(error, backend="backend 'flux' (comfyui): ", retries=MAX_RETRIES)
    assert failure_fault(result.all_events) == fault


def test_a_run_that_failed_before_any_step_is_an_outage() -> None:
    assert failure_fault([]) == "outage"
