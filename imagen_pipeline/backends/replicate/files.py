"""Replicate's Files API for source images of 1 MB or more: upload each one, put its
``urls.get`` in the prediction's input, delete the files once the prediction has ended.

:class:`ReplicateFiles` is the part of the API client
(:class:`~imagen_pipeline.backends.replicate.client.ReplicateApi`) that calls it; the HTTP
client, the token and the error wording are the API client's own.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from imagen_pipeline.backends.sources import SourceImage
from imagen_pipeline.errors import BackendError, TransientBackendError

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled", "aborted"})
FILE_INPUTS = ("input_image", "input_images")
"""Inputs that carry source images (data URIs or uploaded files' URLs)."""
UPLOAD_EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}
"""Extension of an uploaded source's ``filename`` by MIME type (never the local file name)."""


@dataclass(frozen=True)
class UploadedFile:
    """A source image stored with Replicate's Files API: its position, id and ``urls.get``."""

    position: int
    file_id: str
    url: str


def problem_detail(response: httpx.Response) -> str:
    """The ``detail`` (or ``title``) of Replicate's error body, on one line."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        detail = body.get("detail") or body.get("title")
        if isinstance(detail, str) and detail.strip():
            lines = [line.strip() for line in detail.splitlines() if line.strip()]
            return "; ".join(lines)
    text = " ".join(response.text.split())
    return text[:300] or response.reason_phrase


class ReplicateFiles:
    """Upload, find and delete the source files of one generation (a mixin of the API
    client, which sets the attributes below)."""

    base_url: str
    log: Any
    create_unanswered: bool
    _auth: dict[str, str]
    _client: httpx.Client
    error: Callable[[httpx.Response, str], BackendError]
    redact: Callable[[str], str]

    def unreachable(self, what: str, error: httpx.TransportError) -> TransientBackendError:
        """The error of a call that reached no answer (the token redacted)."""
        return TransientBackendError(
            f"Replicate {what}: cannot reach {self.base_url}: "
            f"{type(error).__name__}: {self.redact(str(error))}"
        )

    def upload(self, source: SourceImage) -> UploadedFile:
        """Store ``source`` with the Files API and return its id and ``urls.get``.

        ``POST /v1/files`` as multipart/form-data: ``content`` (the bytes, required),
        ``filename`` (at most 255 bytes), ``type`` (MIME type, default
        application/octet-stream) and ``metadata`` (JSON, default ``{}``); 201 answers the
        file (``id``, ``urls.get``, ``size``, ``checksums.sha256``, ``content_type``,
        ``metadata``, ``created_at``, ``expires_at``), 413 a problem body "Files must be less
        than 100MB in size". Replicate's OpenAPI spec (operation ``files.create``, as mirrored
        in tryAGI/Replicate src/libs/Replicate/openapi.json and shown on
        sdks.replicate.com/resources/files), read with the ``search`` tool on 2026-12-07;
        Replicate's Python client puts ``urls.get`` in the input the same way
        (replicate/replicate-python replicate/helpers.py, ``encode_json``). A stored file whose
        size or sha256 differs from the source is deleted and the attempt fails transiently.
        """
        what = f"upload source {source.position}"
        content = Path(source.path).read_bytes()
        filename = f"source-{source.position}{UPLOAD_EXTENSIONS.get(source.mime, '')}"
        try:
            response = self._client.post(
                self.base_url + "/files",
                headers=self._auth,
                files={"content": (filename, content, source.mime)},
                data={
                    "filename": filename,
                    "type": source.mime,
                    "metadata": json.dumps({"source_sha256": source.sha256}),
                },
            )
        except httpx.TimeoutException as error:
            raise TransientBackendError(
                f"Replicate {what}: timed out ({type(error).__name__}); a file it may have "
                "stored expires on its own"
            ) from None
        except httpx.TransportError as error:
            raise self.unreachable(what, error) from None
        if not response.is_success:
            raise self.error(response, what)
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = {}
        urls = body.get("urls")
        file_id = body.get("id")
        url = urls.get("get") if isinstance(urls, dict) else None
        if (
            not isinstance(file_id, str)
            or not file_id
            or not isinstance(url, str)
            or urlsplit(url).scheme not in ("http", "https")
        ):
            raise TransientBackendError(f"Replicate {what}: response is not a file")
        checksums = body.get("checksums")
        stored_sha256 = checksums.get("sha256") if isinstance(checksums, dict) else None
        if body.get("size") != len(content) or stored_sha256 not in (None, source.sha256):
            self.delete_file(file_id)
            raise TransientBackendError(
                f"Replicate {what}: the stored file ({body.get('size')} bytes, sha256 "
                f"{stored_sha256}) is not the source ({len(content)} bytes, sha256 "
                f"{source.sha256}); deleted it"
            )
        self.log.info(
            f"Replicate: uploaded source {source.position} ({len(content)} bytes) as file "
            f"{file_id}, expires {body.get('expires_at')}"
        )
        return UploadedFile(position=source.position, file_id=file_id, url=url)

    def upload_all(self, sources: Iterable[SourceImage]) -> list[UploadedFile]:
        """Upload each of ``sources``; on a failure, delete the ones already stored."""
        uploaded: list[UploadedFile] = []
        try:
            for source in sources:
                uploaded.append(self.upload(source))
        except BaseException:
            self.delete_files(item.file_id for item in uploaded)
            raise
        return uploaded

    def delete_file(self, file_id: str) -> None:
        """``DELETE /v1/files/{id}`` (204; 404 "File not found" once gone: the same
        OpenAPI spec, operation ``files.delete``, read 2026-12-07); failures are only
        logged, the file then expires on its own."""
        url = f"{self.base_url}/files/{quote(file_id, safe='')}"
        try:
            response = self._client.delete(url, headers=self._auth)
        except httpx.HTTPError as error:
            self.log.warning(
                f"Replicate: could not delete file {file_id}: {type(error).__name__}; "
                "it expires on its own"
            )
            return
        if response.status_code in (204, 404) or response.is_success:
            self.log.info(f"Replicate: deleted file {file_id}")
        else:
            self.log.warning(
                f"Replicate: delete of file {file_id} answered {response.status_code}: "
                f"{self.redact(problem_detail(response))}; it expires on its own"
            )

    def delete_files(self, file_ids: Iterable[str]) -> None:
        """Delete each file once (see :meth:`delete_file`)."""
        for file_id in dict.fromkeys(file_ids):
            self.delete_file(file_id)

    def clean_up(self, uploads: list[UploadedFile], prediction: dict[str, Any] | None) -> None:
        """Delete this attempt's uploads and the files in the prediction's input once it has
        ended, or at once if no prediction was created; a prediction that may still read
        them (unfinished, or a create whose response was lost) leaves them to expire."""
        own = [item.file_id for item in uploads]
        if prediction is not None and prediction.get("status") in TERMINAL_STATUSES:
            self.delete_files([*own, *self.file_ids_in(prediction)])
        elif prediction is None and not self.create_unanswered:
            self.delete_files(own)
        elif own:
            self.log.warning(
                f"Replicate: files {own} may still be read by a prediction that has not "
                "ended; they are left to expire on their own"
            )

    def file_ids_in(self, prediction: dict[str, Any]) -> list[str]:
        """Ids of the files of this API (``<base URL>/files/<id>``) in a prediction's source
        inputs: an adopted prediction's uploads come from an earlier attempt."""
        stored = prediction.get("input")
        if not isinstance(stored, dict):
            return []
        prefix = self.base_url + "/files/"
        found = []
        for key in FILE_INPUTS:
            value = stored.get(key)
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, str) and item.startswith(prefix):
                    file_id = item.removeprefix(prefix).partition("/")[0].partition("?")[0]
                    if file_id:
                        found.append(file_id)
        return found
