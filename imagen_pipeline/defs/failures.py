"""How errors of a step become Dagster outcomes: a retry, or a final ``Failure``.

One rule for every op: a transient :class:`~imagen_pipeline.errors.ImagenError` is retried
by the job's retry policy (after the wait a server asked for, if any) and becomes a final
``Failure`` after the last retry; any other ``ImagenError`` is a final ``Failure`` at once.
A ``Failure``'s description is the full message for the operator; its metadata carries the
sentence a queued job's owner may read and whose fault the failure is
(:mod:`imagen_pipeline.defs.run_errors`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import dagster as dg

from imagen_pipeline.defs.run_errors import FAULT_KEY, PUBLIC_ERROR_KEY
from imagen_pipeline.errors import BackendError, ImagenError

MAX_RETRIES = 3
"""Retries of a step with a transient error (the job's retry policy)."""


def failure(error: ImagenError | Exception | str, prefix: str = "") -> dg.Failure:
    """A failure that the retry policy does not retry."""
    metadata: dict[str, str] = {FAULT_KEY: "server"}
    if isinstance(error, ImagenError):
        metadata = {PUBLIC_ERROR_KEY: error.public, FAULT_KEY: error.fault}
        error.add_context(prefix)
        prefix = ""
    return dg.Failure(description=f"{prefix}{error}", metadata=metadata, allow_retries=False)


def retry_or_fail(context: dg.OpExecutionContext, error: ImagenError, prefix: str = "") -> NoReturn:
    """Let the retry policy retry a transient error; after the last retry, fail with it.

    Either way the message starts with ``prefix``: a retried attempt's error reads like the
    final one."""
    error.add_context(prefix)
    if context.retry_number >= MAX_RETRIES:
        raise failure(error, prefix) from None
    retry_after = getattr(error, "retry_after_s", None)
    if retry_after:
        raise dg.RetryRequested(max_retries=MAX_RETRIES, seconds_to_wait=retry_after) from error
    raise error


@contextmanager
def step_errors(context: dg.OpExecutionContext, backend: str = "") -> Iterator[None]:
    """Apply the rule above to the errors raised in the ``with`` block.

    ``backend``, for a step that calls one (e.g. ``"backend 'flux' (comfyui): "``): prefixes
    the backend's own errors, so the message says which backend answered; also an
    unexpected exception is final (a bug in an adapter does not get better on retry), and so
    is an interrupt: Dagster retries an interrupted step that has a retry policy, so a
    terminated run would otherwise start the generation again.
    """
    try:
        yield
    except ImagenError as error:
        prefix = backend if isinstance(error, BackendError) else ""
        if error.transient:
            retry_or_fail(context, error, prefix)
        raise failure(error, prefix) from None
    except Exception as error:
        if backend:
            raise failure(f"unexpected {type(error).__name__}: {error}", backend) from error
        raise
    except (dg.DagsterExecutionInterruptedError, KeyboardInterrupt):
        if backend:
            raise failure("interrupted (the run was terminated); not retried", backend) from None
        raise
