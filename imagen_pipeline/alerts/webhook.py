"""POSTing an alert's body to the webhook, with a short timeout and never a word of its URL.

A webhook URL carries its token (Slack's and Discord's path, an ntfy topic is its own
password), so the URL is a credential. The request goes through the standard library's
``urllib``, which logs nothing: httpx logs every request's full URL at INFO level on its
``httpx`` logger, where a worker's log would keep it. Redirects are not followed (the
services answer directly), and whatever comes back is described without the URL.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

USER_AGENT = "imagen-pipeline"
ANSWER_CHARS = 300


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is answered as the failure it is for a webhook (nothing is sent on)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def is_webhook_url(value: str) -> bool:
    """True for an ``http://`` or ``https://`` URL with a host."""
    parts = urlsplit(value.strip())
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def redact(text: str, url: str) -> str:
    """``text`` without ``url`` or any longer part of its path and query (its token)."""
    parts = urlsplit(url)
    secrets = {url, parts.path, parts.query}
    secrets.update(part for part in parts.path.split("/") if len(part) >= 8)
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "<webhook>")
    return text


@dataclass(frozen=True)
class Delivery:
    """How a POST went: delivered or not, and a description fit for a log (no URL)."""

    delivered: bool
    detail: str


def post_alert(url: str, body: dict[str, Any], timeout_s: float) -> Delivery:
    """POST ``body`` as JSON to ``url``; a 2xx answer is a delivery. Never raises."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode("utf-8"),
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": USER_AGENT},
    )
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            return Delivery(True, f"HTTP {response.status}")
    except urllib.error.HTTPError as error:
        answer = error.read(ANSWER_CHARS * 4).decode("utf-8", "replace")[:ANSWER_CHARS]
        error.close()
        answer = " ".join(redact(answer, url).split())
        return Delivery(False, f"the webhook answered HTTP {error.code}: {answer or '(empty)'}")
    except TimeoutError:
        return Delivery(False, f"the webhook did not answer within {timeout_s:g} s")
    except urllib.error.URLError as error:
        reason = error.reason
        if isinstance(reason, TimeoutError):
            return Delivery(False, f"the webhook did not answer within {timeout_s:g} s")
        what = type(reason).__name__ if isinstance(reason, BaseException) else "URLError"
        return Delivery(False, f"the webhook could not be reached ({what})")
    except (OSError, ValueError, http.client.HTTPException) as error:
        return Delivery(False, f"the webhook request failed ({type(error).__name__})")
