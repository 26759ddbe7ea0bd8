"""A loopback fake of the Supabase Storage HTTP API, as supabase-py's ``storage3`` uses it.

Written from the storage-api source (``src/internal/errors/codes.ts``, the error handler
and the object routes): every path lives under ``/storage/v1``; errors are answered with
HTTP 400 (500 for internal errors) and a body whose ``statusCode`` is the error's own status
as text, e.g. ``{"statusCode": "409", "code": "KeyAlreadyExists", "error": "Duplicate",
"message": "The resource already exists"}``. In front of it, like Supabase's API gateway, a
wrong ``apikey`` is refused with 401 ``{"message": "Invalid API key"}``.

Served: ``GET /bucket/{id}``; ``POST /object/{bucket}/{path}`` (multipart ``file`` plus
``cacheControl``, ``x-upsert`` header) and ``PUT`` (update); ``GET /object/{bucket}/{path}``
(authenticated download); ``GET /object/public/{bucket}/{path}``; ``POST
/object/sign/{bucket}/{path}`` -> ``{"signedURL": "/object/sign/...?token=..."}`` and ``GET``
of that URL. Objects keep their bytes, content type and cache control, so tests compare
hashes and headers. Tests script faults through ``upload_replies`` and ``bucket_replies``.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from imagen_pipeline_tests.fakes.loopback_http import Received, Reply, send, serving

PREFIX = "/storage/v1"

NO_SUCH_BUCKET = {
    "statusCode": "404",
    "code": "NoSuchBucket",
    "error": "Bucket not found",
    "message": "Bucket not found",
}
NO_SUCH_KEY = {
    "statusCode": "404",
    "code": "NoSuchKey",
    "error": "not_found",
    "message": "Object not found",
}
DUPLICATE = {
    "statusCode": "409",
    "code": "KeyAlreadyExists",
    "error": "Duplicate",
    "message": "The resource already exists",
}
ACCESS_DENIED = {
    "statusCode": "403",
    "code": "AccessDenied",
    "error": "Unauthorized",
    "message": "invalid signature",
}
TOO_LARGE = {
    "statusCode": "413",
    "code": "EntityTooLarge",
    "error": "Payload too large",
    "message": "The object exceeded the maximum allowed size",
}
INTERNAL = {
    "statusCode": "500",
    "code": "InternalError",
    "error": "internal",
    "message": "Internal server error",
}
INVALID_API_KEY = {
    "message": "Invalid API key",
    "hint": "Double check your Supabase `anon` or `service_role` API key.",
}

DROP_AFTER_STORE = "drop-after-store"
"""``upload_replies`` entry: store the object, then close the connection without answering."""


@dataclass
class FakeBucket:
    """A bucket as ``storage.buckets`` describes it."""

    name: str
    public: bool = False
    file_size_limit: int | None = None
    allowed_mime_types: list[str] | None = None
    created_at: str = "2026-11-01T08:00:00.000Z"

    def json(self) -> dict[str, Any]:
        return {
            "id": self.name,
            "name": self.name,
            "owner": "",
            "owner_id": None,
            "public": self.public,
            "type": "STANDARD",
            "file_size_limit": self.file_size_limit,
            "allowed_mime_types": self.allowed_mime_types,
            "created_at": self.created_at,
            "updated_at": self.created_at,
        }


@dataclass
class StoredObject:
    """One object: bytes plus the metadata Storage keeps for it."""

    id: str
    data: bytes
    content_type: str
    cache_control: str
    versions: int = 1


@dataclass
class _Multipart:
    data: bytes = b""
    content_type: str = "application/octet-stream"
    fields: dict[str, str] = field(default_factory=dict)


def _parse_multipart(content_type: str, body: bytes) -> _Multipart:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    parsed = _Multipart()
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        if name == "file":
            parsed.data = payload
            parsed.content_type = part.get_content_type()
        elif isinstance(name, str):
            parsed.fields[name] = payload.decode()
    return parsed


class FakeStorage:
    """The fake's state, its scripting knobs and the requests it received."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.received: list[Received] = []
        self.buckets: dict[str, FakeBucket] = {}
        self.objects: dict[tuple[str, str], StoredObject] = {}
        self.upload_replies: list[Reply | str] = []
        """Consumed by object uploads (POST/PUT), one per request, before normal handling."""
        self.bucket_replies: list[Reply] = []
        """Consumed by ``GET /bucket/{id}``, one per request, before normal handling."""
        self.global_size_limit: int | None = None
        self.port = 0
        self._tokens: dict[str, tuple[str, str, float]] = {}
        self._lock = threading.RLock()

    # -- test helpers ---------------------------------------------------------------

    @property
    def url(self) -> str:
        """The project URL (what ``SUPABASE_URL`` holds)."""
        return f"http://127.0.0.1:{self.port}"

    def add_bucket(self, name: str, **settings: Any) -> FakeBucket:
        with self._lock:
            bucket = FakeBucket(name, **settings)
            self.buckets[name] = bucket
            return bucket

    def put_object(self, bucket: str, path: str, data: bytes, content_type: str) -> None:
        """Store an object as if someone uploaded it earlier."""
        with self._lock:
            self.objects[(bucket, path)] = StoredObject(str(uuid.uuid4()), data, content_type, "")

    def requests(self, method: str | None = None, path: str | None = None) -> list[Received]:
        """Received requests, optionally filtered by method and path prefix (after /storage/v1)."""
        with self._lock:
            return [
                item
                for item in self.received
                if (method is None or item.method == method)
                and (path is None or item.path.startswith(PREFIX + path))
            ]

    def uploads(self) -> list[Received]:
        """Object uploads (POST and PUT of ``/object/{bucket}/...``)."""
        return [
            item
            for item in self.requests()
            if item.method in ("POST", "PUT")
            and item.path.startswith(f"{PREFIX}/object/")
            and not item.path.startswith(f"{PREFIX}/object/sign/")
        ]

    # -- HTTP -------------------------------------------------------------------------

    def handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        received = Received.read(handler, method)
        with self._lock:
            self.received.append(received)
        if not received.path.startswith(PREFIX + "/"):
            self._send(handler, 404, {"message": "no Route matched with those values"})
            return
        segments = received.path[len(PREFIX) + 1 :].split("/")
        with self._lock:
            if self._route_unauthenticated(handler, method, segments, received):
                return
            if self._authorized(handler, received):
                self._route(handler, method, segments, received)

    def _authorized(self, handler: BaseHTTPRequestHandler, received: Received) -> bool:
        if received.headers.get("apikey") != self.key:
            self._send(handler, 401, INVALID_API_KEY)
            return False
        if received.headers.get("authorization") != f"Bearer {self.key}":
            self._send(handler, 400, ACCESS_DENIED)
            return False
        return True

    def _route_unauthenticated(
        self,
        handler: BaseHTTPRequestHandler,
        method: str,
        segments: list[str],
        received: Received,
    ) -> bool:
        """Public objects and signed URLs need no key; True if the request was one of them."""
        match (method, segments):
            case ("GET", ["object", "public", bucket, *path]) if path:
                self._serve_public(handler, bucket, "/".join(path))
            case ("GET", ["object", "sign", bucket, *path]) if path:
                self._serve_signed(handler, bucket, "/".join(path), received)
            case _:
                return False
        return True

    def _route(
        self,
        handler: BaseHTTPRequestHandler,
        method: str,
        segments: list[str],
        received: Received,
    ) -> None:
        match (method, segments):
            case ("GET", ["bucket", bucket]):
                if self.bucket_replies:
                    reply = self.bucket_replies.pop(0)
                    self._send(handler, reply.status, reply.body)
                elif bucket in self.buckets:
                    self._send(handler, 200, self.buckets[bucket].json())
                else:
                    self._send(handler, 400, NO_SUCH_BUCKET)
            case ("POST", ["object", "sign", bucket, *path]) if path:
                self._sign(handler, bucket, "/".join(path), received)
            case ("POST" | "PUT", ["object", bucket, *path]) if path:
                self._upload(handler, method, bucket, "/".join(path), received)
            case ("GET", ["object", bucket, *path]) if path:
                stored = self.objects.get((bucket, "/".join(path)))
                if bucket not in self.buckets:
                    self._send(handler, 400, NO_SUCH_BUCKET)
                elif stored is None:
                    self._send(handler, 400, NO_SUCH_KEY)
                else:
                    self._send_bytes(handler, stored)
            case _:
                self._send(handler, 404, {"message": "no Route matched with those values"})

    def _upload(
        self,
        handler: BaseHTTPRequestHandler,
        method: str,
        bucket: str,
        path: str,
        received: Received,
    ) -> None:
        scripted = self.upload_replies.pop(0) if self.upload_replies else None
        if isinstance(scripted, Reply):
            self._send(handler, scripted.status, scripted.body)
            return
        target = self.buckets.get(bucket)
        if target is None:
            self._send(handler, 400, NO_SUCH_BUCKET)
            return
        parsed = _parse_multipart(received.headers.get("content-type", ""), received.body)
        limits = [limit for limit in (target.file_size_limit, self.global_size_limit) if limit]
        if limits and len(parsed.data) > min(limits):
            self._send(handler, 413, TOO_LARGE)
            return
        if target.allowed_mime_types and parsed.content_type not in target.allowed_mime_types:
            self._send(
                handler,
                400,
                {
                    "statusCode": "415",
                    "code": "InvalidMimeType",
                    "error": "invalid_mime_type",
                    "message": f"mime type {parsed.content_type} is not supported",
                },
            )
            return
        existing = self.objects.get((bucket, path))
        upsert = received.headers.get("x-upsert") == "true"
        if method == "POST" and existing is not None and not upsert:
            self._send(handler, 400, DUPLICATE)
            return
        if method == "PUT" and existing is None:
            self._send(handler, 400, NO_SUCH_KEY)
            return
        cache_control = f"max-age={parsed.fields.get('cacheControl', '3600')}"
        stored = StoredObject(
            id=existing.id if existing else str(uuid.uuid4()),
            data=parsed.data,
            content_type=parsed.content_type,
            cache_control=cache_control,
            versions=existing.versions + 1 if existing else 1,
        )
        self.objects[(bucket, path)] = stored
        if scripted == DROP_AFTER_STORE:
            handler.close_connection = True
            handler.connection.shutdown(2)
            return
        self._send(handler, 200, {"Key": f"{bucket}/{path}", "Id": stored.id})

    def _sign(
        self, handler: BaseHTTPRequestHandler, bucket: str, path: str, received: Received
    ) -> None:
        if bucket not in self.buckets:
            self._send(handler, 400, NO_SUCH_BUCKET)
            return
        if (bucket, path) not in self.objects:
            self._send(handler, 400, NO_SUCH_KEY)
            return
        expires_in = int((received.json() or {}).get("expiresIn", 0))
        token = secrets.token_hex(16)
        self._tokens[token] = (bucket, path, time.time() + expires_in)
        self._send(handler, 200, {"signedURL": f"/object/sign/{bucket}/{path}?token={token}"})

    def _serve_signed(
        self, handler: BaseHTTPRequestHandler, bucket: str, path: str, received: Received
    ) -> None:
        token = (received.query.get("token") or [""])[0]
        grant = self._tokens.get(token)
        if grant is None or grant[:2] != (bucket, path) or grant[2] < time.time():
            self._send(
                handler,
                400,
                {
                    "statusCode": "400",
                    "code": "InvalidSignature",
                    "error": "InvalidSignature",
                    "message": "Invalid signature",
                },
            )
            return
        self._send_bytes(handler, self.objects[(bucket, path)])

    def _serve_public(self, handler: BaseHTTPRequestHandler, bucket: str, path: str) -> None:
        target = self.buckets.get(bucket)
        stored = self.objects.get((bucket, path))
        if target is None or not target.public:
            self._send(handler, 400, NO_SUCH_BUCKET)
        elif stored is None:
            self._send(handler, 400, NO_SUCH_KEY)
        else:
            self._send_bytes(handler, stored)

    def _send_bytes(self, handler: BaseHTTPRequestHandler, stored: StoredObject) -> None:
        send(
            handler, 200, stored.data, stored.content_type, {"Cache-Control": stored.cache_control}
        )

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, body: dict[str, Any] | str) -> None:
        if isinstance(body, str):
            payload, content_type = body.encode(), "text/html; charset=utf-8"
        else:
            payload, content_type = json.dumps(body).encode(), "application/json; charset=utf-8"
        send(handler, status, payload, content_type)


@contextmanager
def running_fake_storage(key: str) -> Iterator[FakeStorage]:
    """Serve a :class:`FakeStorage` on an ephemeral loopback port for the block."""
    with serving(FakeStorage(key)) as fake:
        yield fake
