"""The one JSON body every alert is POSTed with, accepted by ntfy, Slack and Discord alike.

What each service reads (checked 2026-12-07):

- Slack incoming webhooks need ``text`` (without it: HTTP 400 ``no_text``, older answers
  ``missing_text_or_fallback_or_attachments``) and ignore fields they do not know; ``mrkdwn:
  false`` turns Slack's markup off, and ``&``, ``<``, ``>`` must still be written as HTML
  entities (docs.slack.dev "Formatting text for app surfaces"; api.slack.com changelog
  2016-05-17 for the error strings);
- Discord's Execute Webhook needs one of ``content`` (at most 2000 characters), ``embeds``,
  ``files`` or ``poll`` (else 400 ``{"code": 50006, "message": "Cannot send an empty
  message"}``; a longer ``content`` is 400 code 50035 "Invalid Form Body"), answers 204 without
  ``?wait=true`` and ignores fields it does not know; ``allowed_mentions`` with an empty
  ``parse`` list keeps an ``@everyone`` in an error text from pinging anyone
  (discord-api-docs ``docs/resources/webhook.mdx``, "Execute Webhook");
- ntfy shows a body POSTed to a topic URL as the message text as it is, a JSON body too; with
  message templating (ntfy 2.10.0 and later: ``?tpl=yes&t={{.title}}&m={{.message}}`` on the
  topic URL) it fills the title and message from the body's ``title`` and ``message`` fields
  and ignores the others. A templated message over the server's message size limit (4096
  bytes by default) is refused (ntfy ``docs/publish.md`` "Message templating",
  ``server/server.go`` ``handleBodyAsTemplatedTextMessage``).

So the body carries the same alert four ways (``text``, ``content``, ``title`` plus
``message``) and each service takes its own; ``alert`` says what it is for any other
receiver. No ``format:`` option is needed: the one shape suits all three.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

AlertKind = Literal["problem", "resolved", "event"]

DISCORD_CONTENT_CHARS = 2000
NTFY_MESSAGE_BYTES = 4000
"""Under ntfy's default ``message-size-limit`` (4096 bytes) for the templated message."""
MAX_TITLE_CHARS = 150
_DISCORD_MARKUP = re.compile(r"([\\*_~`|>#\-\[\]()])")
_SLACK_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


@dataclass(frozen=True)
class Alert:
    """One alert as sent: what it is, its key, a title, the text and notes on what was held
    back or repeated since the previous alert."""

    kind: AlertKind
    key: str
    title: str
    text: str
    notes: tuple[str, ...] = ()

    @property
    def headline(self) -> str:
        """The title as shown: ``Resolved: ...`` when a problem ended."""
        title = f"Resolved: {self.title}" if self.kind == "resolved" else self.title
        return clip(title.replace("\n", " "), MAX_TITLE_CHARS, len)


def _utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _utf8_bytes(text: str) -> int:
    return len(text.encode("utf-8"))


def clip(text: str, limit: int, measure: Callable[[str], int] = len) -> str:
    """``text`` cut to at most ``limit`` as ``measure`` counts, ending in ``…`` when cut."""
    if measure(text) <= limit:
        return text
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if measure(text[:middle] + "…") <= limit:
            low = middle
        else:
            high = middle - 1
    return text[:low] + "…"


def _slack(text: str) -> str:
    return "".join(_SLACK_ENTITIES.get(char, char) for char in text)


def _discord(text: str) -> str:
    return _DISCORD_MARKUP.sub(r"\\\1", text)


def alert_body(alert: Alert) -> dict[str, Any]:
    """The JSON body of ``alert`` (see the module docstring for who reads which field)."""
    title = alert.headline
    message = clip("\n\n".join((alert.text, *alert.notes)), NTFY_MESSAGE_BYTES, _utf8_bytes)
    content = clip(
        f"**{_discord(title)}**\n{_discord(message)}", DISCORD_CONTENT_CHARS, _utf16_units
    )
    return {
        "title": title,
        "message": message,
        "text": _slack(f"{title}\n{message}"),
        "mrkdwn": False,
        "content": content,
        "allowed_mentions": {"parse": []},
        "alert": {"kind": alert.kind, "key": alert.key},
    }
