"""``Alerts`` against a loopback webhook and a real migrated Postgres: each alert is received
once, the rate limit holds back and counts, and no failure raises or names the URL."""

from __future__ import annotations

import logging
import threading
from typing import Any

import psycopg
import pytest

from imagen_pipeline.alerts.notify import Alerts, open_alerts
from imagen_pipeline.config.loader import parse_config
from imagen_pipeline.config.models import AlertsConfig
from imagen_pipeline.errors import ConfigError
from imagen_pipeline_tests.fakes.loopback_http import closed_port
from imagen_pipeline_tests.fakes.webhook_server import FakeWebhook, running_webhook
from imagen_pipeline_tests.fixtures.alerts import ALERT_URL_ENV, alerts_block


def alerts_for(fake: FakeWebhook, database_url: str | None, **settings: Any) -> Alerts:
    return open_alerts(
        AlertsConfig(**alerts_block(**settings)), database_url, {ALERT_URL_ENV: fake.url}
    )


def kinds(fake: FakeWebhook) -> list[tuple[str, str]]:
    """(kind, key) of every alert the webhook received."""
    return [(r.json()["alert"]["kind"], r.json()["alert"]["key"]) for r in fake.requests]


def sql(url: str, statement: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)


def test_a_problem_is_sent_once_while_open_and_its_end_once(migrated_database_url: str) -> None:
    with running_webhook("slack") as fake:
        alerts = alerts_for(fake, migrated_database_url)
        alerts.problem("broker", "Redis unreachable", "redis://broker:6379 refused")
        alerts.problem("broker", "Redis unreachable", "still refused")
        assert kinds(fake) == [("problem", "broker")]
        alerts.resolved("broker", "Redis unreachable", "answers again")
        alerts.resolved("broker", "Redis unreachable", "answers again")
        alerts.resolved("workers:gpu", "No worker for imagen_gpu", "never open: nothing")
        assert kinds(fake) == [("problem", "broker"), ("resolved", "broker")]
        alerts.problem("broker", "Redis unreachable", "refused again")
    assert kinds(fake) == [("problem", "broker"), ("resolved", "broker"), ("problem", "broker")]
    assert fake.delivered[1].message == "Resolved: Redis unreachable\nanswers again"


def test_an_event_is_sent_once_per_repeat_window_and_the_next_counts_repeats(
    migrated_database_url: str,
) -> None:
    with running_webhook("ntfy") as fake:
        alerts = alerts_for(fake, migrated_database_url, repeat_after_s=600)
        for _ in range(3):
            alerts.event("fallback:gpu", "Fallback taken: gpu -> mock", "2 servers unreachable")
        assert kinds(fake) == [("event", "fallback:gpu")]
        sql(
            migrated_database_url,
            "UPDATE imagen.alerts SET alerted_at = alerted_at - interval '601 seconds'",
        )
        alerts.event("fallback:gpu", "Fallback taken: gpu -> mock", "2 servers unreachable")
    assert kinds(fake) == [("event", "fallback:gpu")] * 2
    assert fake.delivered[1].message == (
        "2 servers unreachable\n\nIt happened 2 more times since the last alert about it."
    )


def test_processes_seeing_the_same_fault_at_once_send_it_once(
    migrated_database_url: str,
) -> None:
    with running_webhook("discord") as fake:
        start = threading.Barrier(8)

        def observe() -> None:
            alerts = alerts_for(fake, migrated_database_url)
            start.wait()
            alerts.problem("workers:gpu", "No worker for imagen_gpu", "0 workers")
            alerts.event("budget:budget.daily_usd", "Daily budget used up", "$5.00")

        threads = [threading.Thread(target=observe) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sorted(kinds(fake)) == [
        ("event", "budget:budget.daily_usd"),
        ("problem", "workers:gpu"),
    ]


def test_over_the_rate_limit_alerts_are_held_back_and_the_next_says_how_many(
    migrated_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="imagen.alerts")
    with running_webhook("slack") as fake:
        alerts = alerts_for(fake, migrated_database_url, max_per_hour=2)
        for box in ("a", "b", "c", "d"):
            alerts.problem(f"box:{box}", f"GPU box down: {box}", "connection refused")
        assert kinds(fake) == [("problem", "box:a"), ("problem", "box:b")]
        assert caplog.text.count("alert held back by the rate limit") == 2
        assert "GPU box down: d: connection refused" in caplog.text
        sql(migrated_database_url, "UPDATE imagen.alert_limit SET tokens = 1")  # an hour on
        alerts.problem("box:e", "GPU box down: e", "connection refused")
    assert kinds(fake)[-1] == ("problem", "box:e")
    assert fake.delivered[-1].message == (
        "GPU box down: e\nconnection refused\n\n2 alerts were held back by the rate limit "
        "(alerts.max_per_hour: 2) since the last one sent; the process logs have them."
    )


@pytest.mark.parametrize("failure", ["answers-500", "down", "no-answer"])
def test_a_failing_webhook_never_raises_and_no_log_names_its_url(
    migrated_database_url: str, caplog: pytest.LogCaptureFixture, failure: str
) -> None:
    caplog.set_level(logging.DEBUG)
    hold = threading.Event()
    with running_webhook("slack", hold=hold if failure == "no-answer" else None) as fake:
        fake.fail_with = 500 if failure == "answers-500" else None
        url = (
            fake.url if failure != "down" else fake.url.replace(str(fake.port), str(closed_port()))
        )
        alerts = open_alerts(
            AlertsConfig(**alerts_block(timeout_s=0.5)), migrated_database_url, {ALERT_URL_ENV: url}
        )
        try:
            alerts.problem("broker", "Redis unreachable", "refused")
        finally:
            hold.set()
        expected = {
            "answers-500": "the webhook answered HTTP 500: rollup_error",
            "down": "the webhook could not be reached (ConnectionRefusedError)",
            "no-answer": "the webhook did not answer within 0.5 s",
        }[failure]
        assert f"alert not delivered: Redis unreachable: {expected}" in caplog.text
        assert fake.delivered == []
        fake.fail_with, fake.hold = None, None
        alerts_for(fake, migrated_database_url).problem("box:a", "GPU box down: a", "refused")
    assert fake.delivered[-1].message.endswith(
        "1 alert could not be delivered (the webhook failed) since the last one sent; the "
        "process logs have them."
    )
    assert fake.token not in caplog.text


def test_a_database_failure_never_raises_and_sends_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with running_webhook("slack") as fake:
        alerts = alerts_for(fake, f"postgresql://postgres@127.0.0.1:{closed_port()}/imagen")
        alerts.problem("broker", "Redis unreachable", "refused")
        alerts.event("fallback:gpu", "Fallback taken", "2 servers unreachable")
    assert fake.requests == []
    assert "alert 'broker' dropped: the imagen database failed (OperationalError" in caplog.text
    assert fake.token not in caplog.text


def test_calls_in_a_with_block_share_a_connection_and_survive_losing_it(
    migrated_database_url: str,
) -> None:
    with running_webhook("slack") as fake, alerts_for(fake, migrated_database_url) as alerts:
        alerts.problem("box:a", "GPU box down: a", "refused")
        sql(
            migrated_database_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        alerts.problem("box:b", "GPU box down: b", "lost with the connection: dropped")
        alerts.problem("box:c", "GPU box down: c", "a new connection")
    assert kinds(fake) == [("problem", "box:a"), ("problem", "box:c")]


def test_alerts_are_off_without_their_block_url_or_database_and_never_echo_the_value() -> None:
    settings = AlertsConfig(**alerts_block())
    cases = {
        "imagen.yaml has no alerts: block": open_alerts(None, "postgresql://db", {}),
        f"alerts.webhook_url_env: environment variable {ALERT_URL_ENV} is not set": (
            open_alerts(settings, "postgresql://db", {})
        ),
        f"alerts.webhook_url_env: environment variable {ALERT_URL_ENV} does not hold an http:// "
        "or https:// URL": open_alerts(
            settings, "postgresql://db", {ALERT_URL_ENV: "hooks.slack.com/services/T/B/s3cret"}
        ),
        "the imagen database is not configured (IMAGEN_DATABASE_URL): it keeps what was "
        "alerted, so that every process sends each alert once": open_alerts(
            settings, None, {ALERT_URL_ENV: "https://hooks.slack.com/services/T/B/s3cret"}
        ),
    }
    for reason, alerts in cases.items():
        assert not alerts.enabled
        assert alerts.off_reason == reason
        assert alerts.describe() == f"alerts off: {reason}"
        alerts.problem("broker", "Redis unreachable", "refused")


def test_the_alerts_block_is_checked_like_the_others() -> None:
    with pytest.raises(ConfigError, match=r"alerts\.max_per_hur: unknown key"):
        parse_config({"alerts": {"max_per_hur": 5}})
    with pytest.raises(ConfigError, match=r"never the webhook URL itself") as error:
        parse_config({"alerts": {"webhook_url_env": "https://hooks.slack.com/services/T/B/s3"}})
    assert "s3" not in str(error.value)
    config = parse_config({"alerts": {}}).config.alerts
    assert config == AlertsConfig(
        webhook_url_env="IMAGEN_ALERT_WEBHOOK_URL", max_per_hour=20, repeat_after_s=3600
    )
