"""What the HTTP adapters share: Retry-After parsing, the status classifier and the
``imagen backends --check`` probe (against a loopback server that answers one canned reply)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from imagen_pipeline.backends.contract import BackendCheck
from imagen_pipeline.backends.http_transport import (
    is_transient_status,
    probe_model,
    retry_after_header_s,
    status_error,
)
from imagen_pipeline.errors import PermanentBackendError, TransientBackendError
from imagen_pipeline_tests.fakes.loopback_http import (
    Received,
    Reply,
    closed_port,
    send,
    serving,
)

SECRET = "s3cret-probe-value"
SECRET_ENV = "IMAGEN_TEST_PROBE_SECRET"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("7", 7.0), (" 1.5 ", 1.5), ("-3", 0.0), ("", None), ("soon", None)],
)
def test_delay_seconds_and_unusable_values(value: str, expected: float | None) -> None:
    assert retry_after_header_s(value) == expected


def test_http_dates_count_from_now_and_never_go_negative() -> None:
    ahead = format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    waited = retry_after_header_s(ahead)
    assert waited is not None and 80 < waited <= 90
    past = format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
    assert retry_after_header_s(past) == 0.0


# -- the status classifier -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "transient"),
    [(500, True), (503, True), (599, True), (429, True), (408, True), (409, False), (400, False)],
)
def test_every_5xx_and_the_named_4xx_are_transient(status: int, transient: bool) -> None:
    assert is_transient_status(status, frozenset({408, 429})) is transient


def test_a_transient_status_keeps_the_wait_and_a_permanent_one_the_public_sentence() -> None:
    transient = status_error(
        429, "API: rate limited", retryable={429}, retry_after_s=7.0, public="ignored"
    )
    assert type(transient) is TransientBackendError
    assert (str(transient), transient.retry_after_s) == ("API: rate limited", 7.0)

    permanent = status_error(422, "API: invalid", retryable={429}, public="fix the request")
    assert type(permanent) is PermanentBackendError
    assert (str(permanent), permanent.public) == ("API: invalid", "fix the request")
    unexplained = status_error(404, "API: not found", retryable={429})
    assert unexplained.public == PermanentBackendError.public_summary


# -- the check probe ---------------------------------------------------------------------------


@dataclass
class ProbeServer:
    """Answers every request with ``reply`` and records what it received."""

    reply: Reply = field(default_factory=lambda: Reply(200, "{}"))
    received: list[Received] = field(default_factory=list)
    port: int = 0

    def handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        """Record the request and send the canned reply."""
        self.received.append(Received.read(handler, method))
        body = str(self.reply.body).encode()
        send(handler, self.reply.status, body, "text/plain", self.reply.headers)

    @property
    def base_url(self) -> str:
        """The API root the probe is pointed at."""
        return f"http://127.0.0.1:{self.port}/v1"


@pytest.fixture
def server() -> Iterator[ProbeServer]:
    with serving(ProbeServer()) as fake:
        yield fake


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)


def probe(base_url: str, **words: Any) -> BackendCheck:
    settings: dict[str, Any] = {
        "secret_env": SECRET_ENV,
        "secret_field": "api_key_env",
        "headers": lambda secret: {"Authorization": f"Bearer {secret}"},
        "timeout_s": 5.0,
        "error_detail": lambda response: response.text,
        "redact": lambda text, secret: text.replace(secret, "***"),
        "model": "owner/model",
        "found": "model owner/model found",
        "refused": f"key in ${SECRET_ENV} refused",
        **words,
    }
    return probe_model(base_url, "/models/owner/model", **settings)


@pytest.mark.parametrize(
    ("reply", "expected", "detail"),
    [
        pytest.param(Reply(200, "{}"), (True, True, True), "model owner/model found", id="found"),
        pytest.param(
            Reply(401, f"bad key {SECRET}"),
            (True, False, None),
            f"key in ${SECRET_ENV} refused (401): bad key ***",
            id="refused",
        ),
        pytest.param(
            Reply(403, "forbidden"),
            (True, False, None),
            f"key in ${SECRET_ENV} refused (403): forbidden",
            id="forbidden",
        ),
        pytest.param(
            Reply(404, "no such model"),
            (True, True, False),
            "model owner/model not found: no such model",
            id="missing",
        ),
        pytest.param(Reply(503, "busy"), (True, None, None), "HTTP 503: busy", id="other-status"),
    ],
)
def test_the_probe_reports_each_answer_without_the_secret(
    server: ProbeServer,
    secret_env: None,
    reply: Reply,
    expected: tuple[bool | None, ...],
    detail: str,
) -> None:
    server.reply = reply
    result = probe(server.base_url)
    assert (result.reachable, result.credentials, result.model_present) == expected
    assert result.detail == detail
    (sent,) = server.received
    assert (sent.method, sent.path) == ("GET", "/v1/models/owner/model")
    assert sent.headers["authorization"] == f"Bearer {SECRET}"


def test_a_found_account_may_leave_the_model_open(server: ProbeServer, secret_env: None) -> None:
    result = probe(server.base_url, found="token valid", model_present=None)
    assert (result.model_present, result.detail) == (None, "token valid")


def test_an_unset_secret_is_reported_and_nothing_is_sent(
    server: ProbeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    result = probe(server.base_url)
    assert (result.reachable, result.credentials, result.model_present) == (None, False, None)
    assert f"api_key_env: environment variable {SECRET_ENV} is not set" in result.detail
    assert server.received == []


def test_an_unreachable_server_names_the_base_url(secret_env: None) -> None:
    base_url = f"http://127.0.0.1:{closed_port()}/v1"
    result = probe(base_url)
    assert (result.reachable, result.credentials, result.model_present) == (False, None, None)
    assert result.detail.startswith(f"cannot reach {base_url}: ConnectError: ")
