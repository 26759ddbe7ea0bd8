"""Submitting ``generate_image`` runs through the Dagster webserver's GraphQL API.

Used by the NOTIFY fast path (``imagen queue listen``). The run carries the same run
config and tags as a sensor-launched run, so the UI, the jobs sensor's reconciliation and
the ops treat both alike; ``imagen/source`` tells them apart.

Every failure to reach the webserver or to have it take a run is a
:class:`WebserverError` whose message is one line naming the webserver's URL and the
cause (``connection refused``, a timeout, an HTTP status, Dagster's error type).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError
from gql.transport.exceptions import (
    TransportProtocolError,
    TransportQueryError,
    TransportServerError,
)

from imagen_pipeline.defs.job_runs import run_config_for, run_tags_for
from imagen_pipeline.errors import ImagenError
from imagen_pipeline.generate.planning import GenerationPlan
from imagen_pipeline.queue.rows import JobRow

JOB_NAME = "generate_image"
LOCATION_NAME = "imagen_pipeline"
REPOSITORY_NAME = "__repository__"
SOURCE_LISTENER = "imagen.jobs/notify"
CHECK_TIMEOUT_S = 10

CHECK_QUERY = """
query ImagenListenerCheck($selector: PipelineSelector!) {
  version
  pipelineOrError(params: $selector) {
    __typename
    ... on PipelineNotFoundError { message }
    ... on InvalidSubsetError { message }
    ... on PythonError { message }
  }
}
"""
"""Dagster's version and whether the webserver serves the job, in one request."""


class WebserverError(ImagenError):
    """The webserver could not be reached or did not take the run (one line: URL and cause)."""

    transient = True


def first_line(text: str, limit: int = 200) -> str:
    """The first non-empty line of ``text``, at most ``limit`` characters."""
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def os_cause(error: BaseException) -> OSError | None:
    """The operating system's error beneath ``error`` (refused, unreachable, timed out), if
    any: HTTP clients wrap it in several layers of their own."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, TimeoutError) or (isinstance(cause, OSError) and cause.strerror):
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


def did_not_answer(error: BaseException, timeout_s: float) -> str | None:
    """``did not answer (connection refused)`` and the like, when the connection failed."""
    cause = os_cause(error)
    if isinstance(cause, TimeoutError):
        return f"did not answer within {timeout_s:g} s"
    if cause is not None and cause.strerror:
        return f"did not answer ({cause.strerror[:1].lower()}{cause.strerror[1:]})"
    return None


def submission_failure(error: DagsterGraphQLClientError, timeout_s: float) -> str:
    """What went wrong in one of Dagster's GraphQL client calls, as a short phrase.

    The client wraps every transport failure in an error whose text is the whole query and
    its variables; the cause is in the chain of exceptions beneath it.
    """
    connection = did_not_answer(error, timeout_s)
    if connection is not None:
        return connection
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, TransportServerError):
            return f"answered HTTP {cause.code}"
        if isinstance(cause, TransportProtocolError):
            return "answered with something that is not GraphQL"
        if isinstance(cause, TransportQueryError):
            return f"refused the query ({first_line(str(cause))})"
        cause = cause.__cause__
    kind, *details = error.args or ("",)
    if isinstance(kind, str) and kind.isidentifier():
        # A Dagster answer other than success: its type, then a message or a list of errors.
        detail = details[0] if details else ""
        if isinstance(detail, list) and detail:
            detail = detail[0].get("message", "") if isinstance(detail[0], dict) else detail[0]
        return f"refused the run ({kind}: {first_line(str(detail))})".replace(": )", ")")
    return f"failed ({first_line(str(error)) or type(error).__name__})"


class GraphQLRunSubmitter:
    """Submits runs to the webserver at ``webserver_url`` (e.g. http://127.0.0.1:3000)."""

    def __init__(self, webserver_url: str, timeout_s: int = 30) -> None:
        parts = urlsplit(webserver_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"webserver URL must look like http://host:3000, got {webserver_url!r}"
            )
        prefix = parts.path.rstrip("/")
        self.url = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{prefix}"
        """The webserver's URL as shown in messages (without any user or password)."""
        self.timeout_s = timeout_s
        self.client = DagsterGraphQLClient(
            parts.hostname,
            port_number=parts.port,
            use_https=parts.scheme == "https",
            timeout=timeout_s,
            path_prefix=prefix,
        )

    def check(self) -> str:
        """One request to the webserver: it answers, is Dagster's and serves the job.

        Returns Dagster's version; raises :class:`WebserverError` saying what to do.
        """
        selector = {
            "repositoryLocationName": LOCATION_NAME,
            "repositoryName": REPOSITORY_NAME,
            "pipelineName": JOB_NAME,
        }
        where = f"the Dagster webserver at {self.url}"
        pass_url = "pass the URL of this pipeline's dagster-webserver as --webserver-url"
        try:
            response = httpx.post(
                f"{self.url}/graphql",
                json={"query": CHECK_QUERY, "variables": {"selector": selector}},
                timeout=CHECK_TIMEOUT_S,
            )
        except httpx.HTTPError as error:
            phrase = did_not_answer(error, CHECK_TIMEOUT_S) or f"failed ({first_line(str(error))})"
            raise WebserverError(
                f"{where} {phrase}; start dagster-webserver or pass --webserver-url"
            ) from None
        try:
            answer = response.json()
            version, job = str(answer["data"]["version"]), answer["data"]["pipelineOrError"]
            kind = job["__typename"]
        except (ValueError, LookupError, TypeError):
            raise WebserverError(
                f"{self.url} is not a Dagster webserver (HTTP {response.status_code} from "
                f"/graphql, not Dagster's answer); {pass_url}"
            ) from None
        if kind != "Pipeline":
            raise WebserverError(
                f"{where} does not serve job {JOB_NAME} of code location {LOCATION_NAME} "
                f"({kind}: {first_line(str(job.get('message', '')))}); {pass_url}"
            )
        return version

    def submit(self, row: JobRow, plan: GenerationPlan) -> str:
        """Queue the row's run in the instance (the daemon's run queue starts it)."""
        tags = run_tags_for(plan, SOURCE_LISTENER)
        try:
            return self.client.submit_job_execution(
                JOB_NAME,
                repository_location_name=LOCATION_NAME,
                repository_name=REPOSITORY_NAME,
                run_config=run_config_for(plan).to_config_dict(),
                tags=tags,
            )
        except DagsterGraphQLClientError as error:
            raise WebserverError(
                f"the Dagster webserver at {self.url} {submission_failure(error, self.timeout_s)}"
            ) from None
