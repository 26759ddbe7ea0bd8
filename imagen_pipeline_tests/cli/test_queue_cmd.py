"""`imagen queue listen` at start: it checks its webserver and says at once what is wrong."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from imagen_pipeline_tests.fakes.loopback_http import Received, closed_port, send, serving
from imagen_pipeline_tests.fixtures.imagen import subprocess_env


@dataclass
class NotDagster:
    """A web server that is not Dagster's: every request gets a 404 page."""

    port: int = 0
    received: list[Received] = field(default_factory=list)

    def handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        self.received.append(Received.read(handler, method))
        send(handler, 404, b"<h1>Not Found</h1>", "text/html")


def listen(url: str, database_url: str, config: Path) -> subprocess.CompletedProcess[str]:
    """Run ``imagen queue listen`` against ``url`` until it exits (it should, at once)."""
    return subprocess.run(
        ["imagen", "queue", "listen", "--webserver-url", url, "--config", str(config)],
        env=subprocess_env(IMAGEN_DATABASE_URL=database_url),
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_listen_fails_at_start_naming_a_webserver_that_does_not_answer(
    migrated_database_url: str, write_config: Callable[..., Path]
) -> None:
    config = write_config({"backends": {"mock": {"type": "mock"}}})
    url = f"http://127.0.0.1:{closed_port()}"
    completed = listen(url, migrated_database_url, config)
    assert completed.returncode == 1
    assert completed.stderr.splitlines() == [
        f"imagen: error: the Dagster webserver at {url} did not answer (connection refused); "
        "start dagster-webserver or pass --webserver-url"
    ]
    assert completed.stdout == ""


def test_listen_fails_at_start_on_a_server_that_is_not_dagster(
    migrated_database_url: str, write_config: Callable[..., Path]
) -> None:
    config = write_config({"backends": {"mock": {"type": "mock"}}})
    with serving(NotDagster()) as server:
        # A user and password in the URL never reach the output.
        completed = listen(
            f"http://operator:s3cret@127.0.0.1:{server.port}/", migrated_database_url, config
        )
    assert completed.returncode == 1
    assert completed.stderr.splitlines() == [
        f"imagen: error: http://127.0.0.1:{server.port} is not a Dagster webserver (HTTP 404 "
        "from /graphql, not Dagster's answer); pass the URL of this pipeline's "
        "dagster-webserver as --webserver-url"
    ]
    assert [(r.method, r.path) for r in server.received] == [("POST", "/graphql")]
