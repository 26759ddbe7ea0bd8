"""``Alerts``: what the pipeline calls to tell the operator about a fault, deduplicated and
rate-limited across every process through the imagen database.

Three calls, each cheap enough for every observation of a 5 s sensor tick (one SQL statement
when nothing is sent):

- ``problem(key, ...)``: a state begins (a GPU box down, no worker for a queue); sent once
  while the key is open;
- ``resolved(key, ...)``: it ends; sent once if the key was open;
- ``event(key, ...)``: a one-shot event (a fallback taken, the budget used up, runs
  failing); sent at most once per ``alerts.repeat_after_s``, repeats counted in the next.

Calls never raise: a webhook or database failure is logged (never the URL) and the alert is
dropped; the next alert that goes out says how many were held back by the rate limit or not
delivered. A call opens a connection for itself; inside ``with alerts:`` the calls share one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType

import psycopg

from imagen_pipeline.alerts import store
from imagen_pipeline.alerts.payload import Alert, AlertKind, alert_body
from imagen_pipeline.alerts.webhook import is_webhook_url, post_alert, redact
from imagen_pipeline.config.models import AlertsConfig
from imagen_pipeline.db.connection import DATABASE_URL_ENV, connect

logger = logging.getLogger("imagen.alerts")

ClaimStep = Callable[[psycopg.Connection], store.Claim | None]


@dataclass(frozen=True)
class _Target:
    """Where alerts go (both URLs are credentials: kept out of ``repr``)."""

    url: str = field(repr=False)
    database_url: str = field(repr=False)
    settings: AlertsConfig


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _notes(claim: store.Claim, ticket: store.Ticket, settings: AlertsConfig) -> tuple[str, ...]:
    notes = []
    if claim.repeats:
        notes.append(
            f"It happened {_plural(claim.repeats, 'more time', 'more times')} since the "
            "last alert about it."
        )
    if ticket.held_back:
        notes.append(
            f"{_plural(ticket.held_back, 'alert was', 'alerts were')} held back by the rate "
            f"limit (alerts.max_per_hour: {settings.max_per_hour}) since the last one sent; "
            "the process logs have them."
        )
    if ticket.undelivered:
        notes.append(
            f"{_plural(ticket.undelivered, 'alert', 'alerts')} could not be delivered (the "
            "webhook failed) since the last one sent; the process logs have them."
        )
    return tuple(notes)


class Alerts:
    """Alerts to the operator (see the module docstring); an ``Alerts`` that is off
    (``off_reason`` says why) sends nothing and costs nothing."""

    def __init__(self, target: _Target | None, off_reason: str | None = None) -> None:
        self._target = target
        self.off_reason = off_reason
        self._shared = False
        self._connection_held: psycopg.Connection | None = None

    @classmethod
    def off(cls, reason: str) -> Alerts:
        """Alerts that send nothing, and why."""
        return cls(None, reason)

    @property
    def enabled(self) -> bool:
        """True when alerts are sent."""
        return self._target is not None

    def describe(self) -> str:
        """One line for a log: on with its limits, or off and why."""
        if self._target is None:
            return f"alerts off: {self.off_reason}"
        settings = self._target.settings
        return (
            f"alerts on: webhook from ${settings.webhook_url_env}, at most "
            f"{settings.max_per_hour} per hour, events repeated after {settings.repeat_after_s} s"
        )

    def __enter__(self) -> Alerts:
        self._shared = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._shared = False
        if self._connection_held is not None:
            self._connection_held.close()
            self._connection_held = None

    def problem(self, key: str, title: str, text: str) -> None:
        """A state begins: sent once while ``key`` is open; nothing while it stays open."""
        self._alert("problem", key, title, text, lambda conn: store.open_problem(conn, key, title))

    def resolved(self, key: str, title: str, text: str) -> None:
        """The state ends: sent once if ``key`` was open, which it no longer is."""
        self._alert("resolved", key, title, text, lambda conn: store.close_problem(conn, key))

    def event(self, key: str, title: str, text: str) -> None:
        """A one-shot event: sent at most once per repeat window of ``key``."""
        if self._target is None:
            return
        window_s = self._target.settings.repeat_after_s
        self._alert(
            "event", key, title, text, lambda conn: store.claim_event(conn, key, title, window_s)
        )

    @contextmanager
    def _connection(self, database_url: str) -> Iterator[psycopg.Connection]:
        if not self._shared:
            with connect(database_url, autocommit=True) as conn:
                yield conn
            return
        if self._connection_held is None or self._connection_held.closed:
            self._connection_held = connect(database_url, autocommit=True)
        try:
            yield self._connection_held
        except psycopg.Error:
            self._connection_held.close()
            self._connection_held = None
            raise

    def _alert(self, kind: AlertKind, key: str, title: str, text: str, claim: ClaimStep) -> None:
        target = self._target
        if target is None:
            return
        try:
            self._send(target, kind, key, title, text, claim)
        except psycopg.Error as error:
            first_line = (str(error).strip().splitlines() or [""])[0]
            logger.warning(
                "alert %r dropped: the imagen database failed (%s: %s)",
                key,
                type(error).__name__,
                redact(first_line, target.url),
            )
        except Exception as error:
            # An alert never breaks what it reports on; the message may name the URL.
            logger.warning("alert %r dropped: %s", key, type(error).__name__)

    def _send(
        self,
        target: _Target,
        kind: AlertKind,
        key: str,
        title: str,
        text: str,
        claim: ClaimStep,
    ) -> None:
        settings = target.settings
        with self._connection(target.database_url) as conn:
            claimed = claim(conn)
            if claimed is None:
                return
            ticket = store.take_ticket(conn, settings.max_per_hour)
        if ticket is None:
            logger.warning(
                "alert held back by the rate limit (alerts.max_per_hour: %d): %s: %s",
                settings.max_per_hour,
                title,
                text,
            )
            return
        alert = Alert(kind, key, title, text, _notes(claimed, ticket, settings))
        delivery = post_alert(target.url, alert_body(alert), settings.timeout_s)
        if delivery.delivered:
            logger.info("alert sent (%s): %s", kind, alert.headline)
            return
        logger.warning("alert not delivered: %s: %s", alert.headline, delivery.detail)
        with self._connection(target.database_url) as conn:
            store.count_undelivered(conn)


def open_alerts(
    settings: AlertsConfig | None,
    database_url: str | None,
    environ: Mapping[str, str] = os.environ,
) -> Alerts:
    """The operator's alerts as ``settings`` (the ``alerts:`` block) and ``environ`` set them
    up; off (sending nothing, ``off_reason`` saying why) without the block, without the
    webhook URL in its env var or without the imagen database, which keeps what was sent."""
    if settings is None:
        return Alerts.off("imagen.yaml has no alerts: block")
    name = settings.webhook_url_env
    url = environ.get(name, "").strip()
    if not url:
        return Alerts.off(f"alerts.webhook_url_env: environment variable {name} is not set")
    if not is_webhook_url(url):
        return Alerts.off(
            f"alerts.webhook_url_env: environment variable {name} does not hold an http:// or "
            "https:// URL"
        )
    if not database_url:
        return Alerts.off(
            f"the imagen database is not configured ({DATABASE_URL_ENV}): it keeps what was "
            "alerted, so that every process sends each alert once"
        )
    return Alerts(_Target(url, database_url, settings))
