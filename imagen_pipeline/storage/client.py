"""Supabase Storage through supabase-py's storage client (``storage3``).

:class:`SupabaseStorage` wraps the few calls the pipeline needs (cloud sync's uploads and
URLs, downloads of source images) and turns every failure into a
:class:`~imagen_pipeline.storage.errors.CloudSyncError` that says what is wrong (missing
bucket, rejected key, object too large, Storage unreachable) and whether a retry can help.
The key is sent the way supabase-py sends it (``apikey`` and ``Authorization: Bearer``) and
is redacted from every message.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import urlsplit

import httpx
from pydantic import ValidationError
from storage3 import SyncStorageClient
from storage3.exceptions import StorageApiError
from storage3.types import FileOptions

from imagen_pipeline.backends.http_transport import tls_context
from imagen_pipeline.config.models import CloudConfig
from imagen_pipeline.config.secrets import resolve_secret
from imagen_pipeline.errors import ConfigError
from imagen_pipeline.storage.errors import CloudSyncError

REDACTED = "[redacted]"
MESSAGE_MAX_CHARS = 300
UNPARSED_PREFIX = "Unable to parse error message: "
"""What storage3 puts before a reply body that is not Storage's error JSON (gateway, proxy)."""
_AUTH_ERRORS = {"Unauthorized", "InvalidJWT", "AccessDenied", "InvalidSignature"}
_TOO_LARGE_ERRORS = {"Payload too large", "EntityTooLarge"}
_MISSING_BUCKET_ERRORS = {"Bucket not found", "NoSuchBucket"}


@dataclass(frozen=True)
class BucketInfo:
    """What cloud sync checks before uploading: visibility and the bucket's upload limits."""

    name: str
    public: bool
    file_size_limit: int | None
    allowed_mime_types: list[str] | None

    def allows(self, mime_type: str) -> bool:
        """True if the bucket accepts ``mime_type`` (no list, or a matching entry/wildcard)."""
        if not self.allowed_mime_types:
            return True
        return any(fnmatch.fnmatch(mime_type, pattern) for pattern in self.allowed_mime_types)


def _message(error: StorageApiError) -> str:
    """Storage's message, or the ``message`` of a gateway's JSON reply, or the raw reply."""
    message = str(error.message)
    if not message.startswith(UNPARSED_PREFIX):
        return message
    raw = message.removeprefix(UNPARSED_PREFIX).strip("'")
    try:
        body = json.loads(raw)
    except ValueError:
        return raw
    return str(body.get("message") or raw) if isinstance(body, dict) else raw


def _status(error: StorageApiError) -> int | None:
    """The status Storage reports in its body (``"409"``), else the HTTP status."""
    text = str(error.status)
    return int(text) if text.isdigit() else None


class SupabaseStorage:
    """One Storage endpoint with one key; use as a context manager to close the connection."""

    def __init__(self, url: str, key: str, key_env: str, timeout_s: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                "cloud.url_env: the variable must hold the project URL, "
                "such as https://<project-ref>.supabase.co"
            )
        self.origin = f"{parts.scheme}://{parts.hostname}" + (
            f":{parts.port}" if parts.port else ""
        )
        self.key_env = key_env
        self.timeout_s = timeout_s
        self._key = key
        self._http = httpx.Client(timeout=timeout_s, follow_redirects=True, verify=tls_context())
        self._client = SyncStorageClient(
            url=f"{url.rstrip('/')}/storage/v1/",
            headers={"apiKey": key, "Authorization": f"Bearer {key}"},
            http_client=self._http,
        )

    @classmethod
    def from_config(cls, settings: CloudConfig) -> SupabaseStorage:
        """Resolve ``url_env`` and ``key_env`` now (a missing variable is named, never a value)."""
        url = resolve_secret(settings.url_env, "cloud.url_env")
        key = resolve_secret(settings.key_env, "cloud.key_env")
        return cls(url, key, settings.key_env, settings.timeout_s)

    def __enter__(self) -> SupabaseStorage:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._http.close()

    def redact(self, text: str) -> str:
        """``text`` with the key replaced, for anything that may echo a request."""
        return text.replace(self._key, REDACTED) if self._key else text

    # -- calls -------------------------------------------------------------------------

    def bucket(self, name: str) -> BucketInfo:
        """The bucket's settings; a missing bucket or a rejected key is a clear error."""
        with self._translated(f"reading bucket {name!r}", name):
            found = self._client.get_bucket(name)
        return BucketInfo(
            name=name,
            public=found.public,
            file_size_limit=found.file_size_limit,
            allowed_mime_types=found.allowed_mime_types,
        )

    def upload(
        self,
        bucket: str,
        path: str,
        data: bytes,
        content_type: str,
        cache_control_s: int,
        *,
        upsert: bool,
    ) -> bool:
        """Store ``data`` at ``path``; False if (without ``upsert``) an object already is there."""
        options: FileOptions = {
            "content-type": content_type,
            "cache-control": str(cache_control_s),
            "x-upsert": "true" if upsert else "false",
        }
        try:
            with self._translated(f"uploading {bucket}/{path}", bucket, passthrough=(409,)):
                self._client.from_(bucket).upload(path, data, options)
        except StorageApiError as error:
            if _status(error) == 409:
                return False
            raise
        return True

    def download(self, bucket: str, path: str) -> bytes:
        """The stored object's bytes."""
        with self._translated(f"downloading {bucket}/{path}", bucket):
            return self._client.from_(bucket).download(path)

    def public_url(self, bucket: str, path: str) -> str:
        """The object's public URL (no request; the bucket must be public)."""
        return self._client.from_(bucket).get_public_url(path)

    def signed_url(self, bucket: str, path: str, expires_s: int) -> str:
        """A URL that grants read access to the object for ``expires_s`` seconds."""
        with self._translated(f"signing a URL for {bucket}/{path}", bucket):
            signed = self._client.from_(bucket).create_signed_url(path, expires_s)
        url = signed.get("signedURL") or signed.get("signedUrl")
        if not url:
            raise CloudSyncError(
                f"Supabase Storage at {self.origin} returned no signed URL for {bucket}/{path}"
            )
        return url

    # -- errors ------------------------------------------------------------------------

    @contextmanager
    def _translated(
        self, action: str, bucket: str, passthrough: tuple[int, ...] = ()
    ) -> Iterator[None]:
        try:
            yield
        except StorageApiError as error:
            if _status(error) in passthrough:
                raise
            raise self._api_error(error, action, bucket) from None
        except httpx.TimeoutException:
            raise CloudSyncError(
                f"Supabase Storage at {self.origin}: {action} timed out after "
                f"{self.timeout_s:g} s (cloud.timeout_s)",
                transient=True,
            ) from None
        except httpx.TransportError as error:
            raise CloudSyncError(
                f"Supabase Storage at {self.origin} is unreachable ({action}): "
                f"{type(error).__name__}: {self.redact(str(error)) or 'connection failed'}",
                transient=True,
            ) from None
        except ValidationError:
            raise CloudSyncError(
                f"Supabase Storage at {self.origin} sent an unexpected reply ({action}); "
                "is cloud.url_env the project URL?"
            ) from None

    def _api_error(self, error: StorageApiError, action: str, bucket: str) -> CloudSyncError:
        status = _status(error)
        kind = str(error.code)
        message = self.redact(_message(error))[:MESSAGE_MAX_CHARS]
        where = f"Supabase Storage at {self.origin}"
        if kind in _MISSING_BUCKET_ERRORS:
            return CloudSyncError(
                f"cloud.bucket: bucket {bucket!r} does not exist in {where}; "
                "create it (Storage > New bucket) or fix cloud.bucket"
            )
        if status in (401, 403) or kind in _AUTH_ERRORS:
            return CloudSyncError(
                f"{where} rejected the key in ${self.key_env} (cloud.key_env) while {action}: "
                f"{message}; use the project's service role key"
            )
        if status == 413 or kind in _TOO_LARGE_ERRORS:
            return CloudSyncError(
                f"{where} refused {action} as too large: {message}; raise the bucket's "
                "or the project's file size limit"
            )
        transient = status is not None and (status == 429 or status >= 500)
        return CloudSyncError(
            f"{where}: {action} failed ({status or 'no status'} {kind}): {message}",
            transient=transient,
        )
