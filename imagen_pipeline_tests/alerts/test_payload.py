"""One body for three services: ntfy, Slack and Discord (loopback fakes answering as each
service does) take it and show the alert; each refuses a body without its own field."""

from __future__ import annotations

import json

import pytest

from imagen_pipeline.alerts.payload import Alert, alert_body
from imagen_pipeline.alerts.webhook import post_alert
from imagen_pipeline_tests.fakes.webhook_server import (
    SERVICES,
    Notification,
    Service,
    running_webhook,
)

GPU_DOWN = Alert(
    "problem", "box:gpu", "GPU box down: mrock", "mrock does not answer: connection refused"
)


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_takes_the_one_body_and_shows_the_alert(service: Service) -> None:
    with running_webhook(service) as fake:
        delivery = post_alert(fake.url, alert_body(GPU_DOWN), timeout_s=5)
    assert delivery.delivered, delivery.detail
    shown = {
        "ntfy": Notification("GPU box down: mrock", "mrock does not answer: connection refused"),
        "slack": Notification("", "GPU box down: mrock\nmrock does not answer: connection refused"),
        "discord": Notification(
            "", "**GPU box down: mrock**\nmrock does not answer: connection refused"
        ),
    }
    assert fake.delivered == [shown[service]]


@pytest.mark.parametrize("service", SERVICES)
def test_a_long_text_in_any_script_stays_within_every_service_limit(service: Service) -> None:
    text = "Ошибка сервера 画像 🚨 " * 800
    with running_webhook(service) as fake:
        delivery = post_alert(fake.url, alert_body(Alert("event", "k", "Long", text)), 5)
    assert delivery.delivered, delivery.detail
    [shown] = fake.delivered
    assert shown.message.endswith("…")
    assert shown.message.count("Ошибка сервера 画像 🚨") > 30


def test_markup_and_mentions_in_a_text_stay_plain_text() -> None:
    alert = Alert(
        "event",
        "k",
        "Runs failing",
        "budget.backends.mock.daily_usd = $2.00 for @everyone <b>&</b> *bold*",
    )
    body = alert_body(alert)
    assert body["mrkdwn"] is False
    assert body["text"] == (
        "Runs failing\nbudget.backends.mock.daily_usd = $2.00 for @everyone "
        "&lt;b&gt;&amp;&lt;/b&gt; *bold*"
    )
    assert body["allowed_mentions"] == {"parse": []}
    assert "budget.backends.mock.daily\\_usd" in body["content"]
    assert "\\*bold\\*" in body["content"]
    assert body["message"] == alert.text
    assert body["alert"] == {"kind": "event", "key": "k"}


@pytest.mark.parametrize(
    ("service", "field", "answer"),
    [
        ("slack", "text", "HTTP 400: no_text"),
        ("discord", "content", 'HTTP 400: {"code": 50006, "message": "Cannot send an empty'),
    ],
)
def test_each_service_refuses_the_body_without_its_own_field(
    service: Service, field: str, answer: str
) -> None:
    body = alert_body(GPU_DOWN)
    del body[field]
    with running_webhook(service) as fake:
        delivery = post_alert(fake.url, body, timeout_s=5)
    assert not delivery.delivered
    assert answer in delivery.detail
    assert fake.delivered == []


def test_ntfy_without_the_template_query_shows_the_json_as_it_is() -> None:
    """Why the ntfy URL carries ``?tpl=yes&t={{.title}}&m={{.message}}`` (docs/alerts.md)."""
    with running_webhook("ntfy") as fake:
        plain_topic = fake.url.split("?")[0]
        delivery = post_alert(plain_topic, alert_body(GPU_DOWN), timeout_s=5)
    assert delivery.delivered
    [shown] = fake.delivered
    assert shown.title == ""
    assert json.loads(shown.message)["title"] == "GPU box down: mrock"


def test_a_resolved_problem_says_so_in_its_title() -> None:
    resolved = Alert("resolved", "box:gpu", "GPU box down: mrock", "answers again")
    assert alert_body(resolved)["title"] == "Resolved: GPU box down: mrock"
