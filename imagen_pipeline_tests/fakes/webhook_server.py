"""Loopback fakes of the webhooks alerts go to: ntfy, a Slack incoming webhook and a Discord
webhook, each answering as the service does (read 2026-12-07):

- Slack (``POST /services/T…/B…/<token>``): 200 ``ok`` (text/plain); a body that is not a
  JSON object: 400 ``invalid_payload``; no ``text``: 400 ``no_text``; its own failure: 500
  ``rollup_error`` (api.slack.com changelog 2016-05-17 "Improving error conditions for
  Incoming Webhooks"; ``no_text`` as answered since, fluxcd/flagger PR 1031). Fields it does
  not know are ignored.
- Discord (``POST /api/webhooks/<id>/<token>``, discord-api-docs
  ``docs/resources/webhook.mdx`` "Execute Webhook"): 204 without a body unless ``?wait=true``
  (then 200 and the message); a body that is not JSON: 400 ``{"code": 50109, "message": "The
  request body contains invalid JSON."}``; none of ``content``, ``embeds``: 400 ``{"code":
  50006, "message": "Cannot send an empty message"}``; ``content`` over 2000 characters: 400
  ``{"code": 50035, "message": "Invalid Form Body", "errors": {"content": {"_errors": [...]}}}``.
  Fields it does not know are ignored.
- ntfy (``POST /<topic>``; ntfy ``docs/publish.md`` and ``server/server.go``,
  ``server/errors.go``): the body is the message as it is; with templating on (``tpl``,
  ``template`` or ``X-Template``: ``yes``/``1``) the body must be JSON (else 400 ``{"code":
  40042, "http": 400, "error": "invalid request: message body must be JSON if templating is
  enabled", ...}``) and the title and message (``t``/``title``/``X-Title``,
  ``m``/``message``/``X-Message``) are Go templates filled from it: this fake knows
  ``{{.field}}`` only (a missing field renders ``<no value>``, as Go's does) and answers
  anything else with 400 code 40043 "invalid request: could not parse template". A templated
  message over 4096 bytes: 400 code 40041. Success: 200 and the message as JSON. Its own
  failure: 500 ``{"code": 50001, "http": 500, "error": "internal server error"}``.

``delivered`` holds each notification as the service would show it (title and message);
``requests`` every request. ``fail_with`` makes the service fail every request (500);
``hold`` makes it wait, up to 5 s, before answering.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal

from imagen_pipeline_tests.fakes.loopback_http import Received, send, serving

Service = Literal["ntfy", "slack", "discord"]
SERVICES: tuple[Service, ...] = ("ntfy", "slack", "discord")
NTFY_TEMPLATE_QUERY = "tpl=yes&t={{.title}}&m={{.message}}"
_TEMPLATE_FIELD = re.compile(r"\{\{\s*\.([A-Za-z0-9_]+)\s*\}\}")
_NTFY_TOPIC = re.compile(r"^/([-_A-Za-z0-9]{1,64})$")


@dataclass(frozen=True)
class Notification:
    """What the service shows: a title (Slack and Discord have none) and the message."""

    title: str
    message: str


def _ntfy_error(status: int, code: int, error: str, link: str = "") -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "http": status, "error": error}
    if link:
        body["link"] = link
    return body


def _go_template(template: str, data: Any) -> str | None:
    """``{{.field}}`` filled from ``data``; None for anything this fake does not know."""
    if _TEMPLATE_FIELD.sub("", template).count("{{"):
        return None

    def value(match: re.Match[str]) -> str:
        found = data.get(match[1]) if isinstance(data, dict) else None
        return "<no value>" if found is None else str(found)

    return _TEMPLATE_FIELD.sub(value, template)


@dataclass
class FakeWebhook:
    """One service's webhook on a loopback port."""

    service: Service
    port: int = 0
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    fail_with: int | None = None
    hold: threading.Event | None = None
    requests: list[Received] = field(default_factory=list)
    delivered: list[Notification] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        """The webhook URL as the service hands it out (its token in the path)."""
        base = f"http://127.0.0.1:{self.port}"
        if self.service == "slack":
            return f"{base}/services/T0IMAGEN0/B0ALERTS0/{self.token}"
        if self.service == "discord":
            return f"{base}/api/webhooks/1200000000000000001/{self.token}"
        return f"{base}/imagen-{self.token}?{NTFY_TEMPLATE_QUERY}"

    def handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        """Answer one request as the service would."""
        received = Received.read(handler, method)
        with self._lock:
            self.requests.append(received)
        if self.hold is not None:
            self.hold.wait(timeout=5)
        if self.fail_with is not None:
            self._fail(handler)
            return
        answer = getattr(self, f"_{self.service}")
        answer(handler, received)

    def _fail(self, handler: BaseHTTPRequestHandler) -> None:
        status = self.fail_with or 500
        if self.service == "slack":
            send(handler, status, b"rollup_error", "text/plain")
        elif self.service == "discord":
            body = {"message": "500: Internal Server Error", "code": 0}
            send(handler, status, json.dumps(body).encode(), "application/json")
        else:
            body = _ntfy_error(status, 50001, "internal server error")
            send(handler, status, json.dumps(body).encode() + b"\n", "application/json")

    def _deliver(self, title: str, message: str) -> None:
        with self._lock:
            self.delivered.append(Notification(title, message))

    def _slack(self, handler: BaseHTTPRequestHandler, received: Received) -> None:
        if not received.path.startswith("/services/") or received.method != "POST":
            send(handler, 404, b"no_service", "text/plain")
            return
        try:
            body = json.loads(received.body)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            send(handler, 400, b"invalid_payload", "text/plain")
            return
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            send(handler, 400, b"no_text", "text/plain")
            return
        self._deliver("", text)
        send(handler, 200, b"ok", "text/plain")

    def _discord(self, handler: BaseHTTPRequestHandler, received: Received) -> None:
        def error(status: int, body: dict[str, Any]) -> None:
            send(handler, status, json.dumps(body).encode(), "application/json")

        if not received.path.startswith("/api/webhooks/"):
            error(404, {"message": "404: Not Found", "code": 0})
            return
        try:
            body = json.loads(received.body)
        except ValueError:
            error(400, {"code": 50109, "message": "The request body contains invalid JSON."})
            return
        content = body.get("content") if isinstance(body, dict) else None
        if not content and not (isinstance(body, dict) and body.get("embeds")):
            error(400, {"code": 50006, "message": "Cannot send an empty message"})
            return
        if isinstance(content, str) and len(content) > 2000:
            too_long = {
                "code": "BASE_TYPE_MAX_LENGTH",
                "message": "Must be 2000 or fewer in length.",
            }
            error(
                400,
                {
                    "code": 50035,
                    "errors": {"content": {"_errors": [too_long]}},
                    "message": "Invalid Form Body",
                },
            )
            return
        self._deliver("", str(content or ""))
        if received.query.get("wait") == ["true"]:
            message = {"id": "1300000000000000001", "content": content, "type": 0}
            send(handler, 200, json.dumps(message).encode(), "application/json")
            return
        handler.send_response(204)
        handler.end_headers()

    def _ntfy(self, handler: BaseHTTPRequestHandler, received: Received) -> None:
        def error(status: int, code: int, text: str, link: str = "") -> None:
            body = _ntfy_error(status, code, text, link)
            send(handler, status, json.dumps(body).encode() + b"\n", "application/json")

        def param(*names: str) -> str:
            for name in names:
                if name in received.headers:
                    return received.headers[name]
                if name in received.query:
                    return received.query[name][0]
            return ""

        topic = _NTFY_TOPIC.match(received.path)
        if topic is None:
            error(400, 40009, "invalid request: topic invalid")
            return
        title = param("x-title", "title", "t")
        message = received.body.decode("utf-8", "replace").strip()
        if param("x-template", "template", "tpl").lower() in ("yes", "1", "true"):
            templates = "https://ntfy.sh/docs/publish/#message-templating"
            try:
                data = json.loads(received.body)
            except ValueError:
                error(
                    400,
                    40042,
                    "invalid request: message body must be JSON if templating is enabled",
                    templates,
                )
                return
            filled_message = _go_template(param("x-message", "message", "m"), data)
            filled_title = _go_template(title, data)
            if filled_message is None or filled_title is None:
                error(400, 40043, "invalid request: could not parse template", templates)
                return
            if len(filled_message.encode()) > 4096:
                error(
                    400,
                    40041,
                    "invalid request: message or title is too large after replacing template",
                    templates,
                )
                return
            title, message = filled_title, filled_message
        self._deliver(title, message)
        published = {
            "id": secrets.token_hex(6),
            "time": 1796000000,
            "expires": 1796043200,
            "event": "message",
            "topic": topic[1],
            "message": message,
            **({"title": title} if title else {}),
        }
        send(handler, 200, json.dumps(published).encode() + b"\n", "application/json")


@contextmanager
def running_webhook(service: Service, **fields: Any) -> Iterator[FakeWebhook]:
    """A fake webhook of ``service`` on an ephemeral loopback port for the block."""
    with serving(FakeWebhook(service, **fields)) as fake:
        yield fake
