"""A loopback fake of Replicate's HTTP API, written from its public reference.

It serves the real paths and shapes (``/v1/models/{owner}/{name}/predictions``,
``/v1/predictions`` with ``version``, ``GET /v1/predictions`` pages, ``urls.get`` and
``urls.cancel``, ``/v1/models/...``, ``/v1/account``), checks ``Authorization: Bearer``,
validates inputs against each model's schema with Replicate's 422 body, honours
``Prefer: wait[=n]`` and moves predictions ``starting -> processing -> <end>`` one poll at
a time. Output files are real images (Pillow) served under ``/pbxt/...`` like
``replicate.delivery``, without authentication.

FLUX.1 Kontext pro (``input_image``, a URI) and FLUX.2 pro (``input_images``, a list of at
most 8 URIs) follow their schemas on Replicate (read 2026-12-07): a value that is not a URI
is a 422 ``format`` problem, a longer list a 422 ``array_max_items`` (the wording of
gojsonschema, which Replicate's validation messages follow); a data URI is decoded when the
prediction runs, one that is not an image fails the prediction like the model does, and the
output mixes the first input image's bytes into its colours (Kontext's
``match_input_image`` renders the input's size).

The Files API follows Replicate's OpenAPI spec (operations ``files.create``, ``files.get``,
``files.delete``; read 2026-12-07): ``POST /v1/files`` takes multipart/form-data with a
``content`` part (and ``filename``, ``type``, ``metadata`` fields) and answers 201 with the
file (``id``, ``urls.get`` = ``<base URL>/files/<id>``, ``size``, ``checksums.sha256``,
``content_type``, ``metadata``, ``created_at``, ``expires_at``); a file over
``max_file_bytes`` is the documented 413 "Files must be less than 100MB in size". A body
without ``content`` is a 400 problem body: the spec lists no answer for it, so that one is
this fake's guess. ``GET``/``DELETE /v1/files/<id>`` answer 200/204, or 404 "File not
found" once deleted. A prediction input naming such a URL reads the stored file when the
prediction runs (a deleted one fails it like an unreadable input image).

Tests script it through plain attributes (``polls_before_done``, ``outcome``,
``create_replies``, ``upload_replies``, ...) and read ``received`` to assert what the adapter
sent.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import io
import json
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlencode, urlsplit

from PIL import Image, ImageDraw

from imagen_pipeline_tests.fakes.loopback_http import Received, Reply, send, serving

FLUX_RATIOS: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "16:9": (1344, 768),
    "21:9": (1536, 640),
    "3:2": (1216, 832),
    "2:3": (832, 1216),
    "4:5": (896, 1088),
    "5:4": (1088, 896),
    "3:4": (896, 1152),
    "4:3": (1152, 896),
    "9:16": (768, 1344),
    "9:21": (640, 1536),
}
PRO_RATIOS = ["custom", "1:1", "16:9", "3:2", "2:3", "4:5", "5:4", "9:16", "3:4", "4:3"]
FORMATS = {
    "webp": ("WEBP", "image/webp"),
    "jpg": ("JPEG", "image/jpeg"),
    "png": ("PNG", "image/png"),
}

UNAUTHENTICATED = {
    "title": "Unauthenticated",
    "detail": "You did not pass a valid authentication token",
    "status": 401,
}
NOT_FOUND = {"detail": "The requested resource could not be found.", "status": 404}
BAD_VERSION = {
    "title": "Invalid version or not permitted",
    "detail": "The specified version does not exist (or perhaps you don't have permission to "
    "use it?)",
    "status": 422,
}
THROTTLED = {"detail": "Request was throttled. Your rate limit resets in ~30s."}
FILE_NOT_FOUND = {"detail": "File not found"}
FILE_TOO_LARGE = {"detail": "Files must be less than 100MB in size"}
NO_CONTENT = {"detail": "The request has no content part.", "status": 400}
NSFW_ERROR = (
    "All generated images contained NSFW content. Try running it again with a different prompt."
)
SENSITIVE_ERROR = (
    "The input or output was flagged as sensitive. Please try again with different inputs. (E005)"
)


def _version(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()


@dataclass(frozen=True)
class FakeModel:
    """A model the fake serves: its version, output shape, sizing and input schema."""

    owner: str
    name: str
    version: str
    output: str  # "list" or "string"
    sizing: str  # "flux" (aspect_ratio + megapixels), "pro" (custom width/height), "wh"
    default_format: str
    schema: dict[str, dict[str, Any]]

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


_FLUX_COMMON: dict[str, dict[str, Any]] = {
    "prompt": {"type": "string", "required": True},
    "aspect_ratio": {"enum": list(FLUX_RATIOS)},
    "megapixels": {"enum": ["1", "0.25"]},
    "num_outputs": {"type": "integer", "minimum": 1, "maximum": 4},
    "seed": {"type": "integer"},
    "output_format": {"enum": ["webp", "jpg", "png"]},
    "output_quality": {"type": "integer", "minimum": 0, "maximum": 100},
    "disable_safety_checker": {"type": "boolean"},
    "go_fast": {"type": "boolean"},
}

FLUX_SCHNELL = FakeModel(
    owner="black-forest-labs",
    name="flux-schnell",
    version=_version("flux-schnell"),
    output="list",
    sizing="flux",
    default_format="webp",
    schema={
        **_FLUX_COMMON,
        "num_inference_steps": {"type": "integer", "minimum": 1, "maximum": 4},
    },
)
FLUX_DEV = FakeModel(
    owner="black-forest-labs",
    name="flux-dev",
    version=_version("flux-dev"),
    output="list",
    sizing="flux",
    default_format="webp",
    schema={
        **_FLUX_COMMON,
        "num_inference_steps": {"type": "integer", "minimum": 1, "maximum": 50},
        "guidance": {"type": "number", "minimum": 0, "maximum": 10},
        "prompt_strength": {"type": "number", "minimum": 0, "maximum": 1},
    },
)
FLUX_PRO = FakeModel(
    owner="black-forest-labs",
    name="flux-1.1-pro",
    version=_version("flux-1.1-pro"),
    output="string",
    sizing="pro",
    default_format="webp",
    schema={
        "prompt": {"type": "string", "required": True},
        "aspect_ratio": {"enum": PRO_RATIOS},
        "width": {"type": "integer", "minimum": 256, "maximum": 1440},
        "height": {"type": "integer", "minimum": 256, "maximum": 1440},
        "safety_tolerance": {"type": "integer", "minimum": 1, "maximum": 6},
        "seed": {"type": "integer"},
        "prompt_upsampling": {"type": "boolean"},
        "output_format": {"enum": ["webp", "jpg", "png"]},
        "output_quality": {"type": "integer", "minimum": 0, "maximum": 100},
    },
)
SDXL = FakeModel(
    owner="stability-ai",
    name="sdxl",
    version="39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b",
    output="list",
    sizing="wh",
    default_format="png",
    schema={
        "prompt": {"type": "string", "required": True},
        "negative_prompt": {"type": "string"},
        "width": {"type": "integer"},
        "height": {"type": "integer"},
        "num_inference_steps": {"type": "integer", "minimum": 1, "maximum": 500},
        "guidance_scale": {"type": "number", "minimum": 1, "maximum": 50},
        "seed": {"type": "integer"},
    },
)
KONTEXT_RATIOS = ["match_input_image", *FLUX_RATIOS, "2:1", "1:2"]
FLUX_KONTEXT_PRO = FakeModel(
    owner="black-forest-labs",
    name="flux-kontext-pro",
    version=_version("flux-kontext-pro"),
    output="string",
    sizing="kontext",
    default_format="png",
    schema={
        "prompt": {"type": "string", "required": True},
        "input_image": {"type": "string", "format": "uri"},
        "aspect_ratio": {"enum": KONTEXT_RATIOS},
        "prompt_upsampling": {"type": "boolean"},
        "seed": {"type": "integer"},
        "output_format": {"enum": ["jpg", "png"]},
        "safety_tolerance": {"type": "integer", "minimum": 0, "maximum": 6},
    },
)
FLUX_2_PRO = FakeModel(
    owner="black-forest-labs",
    name="flux-2-pro",
    version=_version("flux-2-pro"),
    output="string",
    sizing="pro",
    default_format="webp",
    schema={
        "prompt": {"type": "string", "required": True},
        "input_images": {"type": "array", "format": "uri", "maxItems": 8},
        "aspect_ratio": {"enum": ["match_input_image", *PRO_RATIOS]},
        "resolution": {"enum": ["match_input_image", "0.5 MP", "1 MP", "2 MP", "4 MP"]},
        "width": {"type": "integer", "minimum": 256, "maximum": 2048},
        "height": {"type": "integer", "minimum": 256, "maximum": 2048},
        "safety_tolerance": {"type": "integer", "minimum": 1, "maximum": 5},
        "seed": {"type": "integer"},
        "output_format": {"enum": ["webp", "jpg", "png"]},
        "output_quality": {"type": "integer", "minimum": 0, "maximum": 100},
    },
)
MODELS = (FLUX_SCHNELL, FLUX_DEV, FLUX_PRO, SDXL, FLUX_KONTEXT_PRO, FLUX_2_PRO)


DROP_BEFORE_CREATE = "drop-before-create"
"""``create_replies`` entry: close the connection without creating or answering."""
DROP_AFTER_CREATE = "drop-after-create"
"""``create_replies`` entry: create the prediction, then close without answering."""


@dataclass
class _Prediction:
    model: FakeModel
    data: dict[str, Any]
    created: datetime
    order: int
    polls_left: int
    outcome: str
    error: str | None


def _now() -> datetime:
    return datetime.now(UTC)


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _schema_errors(schema: dict[str, dict[str, Any]], data: Any) -> list[dict[str, str]]:
    """JSON-schema-style problems as Replicate lists them in ``invalid_fields``."""
    if not isinstance(data, dict):
        return [{"type": "invalid_type", "field": "input", "description": "Invalid type."}]
    problems = []
    for key, rule in schema.items():
        where = f"input.{key}"
        if key not in data:
            if rule.get("required"):
                problems.append(
                    {"type": "required", "field": "input", "description": f"{key} is required"}
                )
            continue
        value = data[key]
        if "enum" in rule and value not in rule["enum"]:
            choices = ", ".join(f'"{choice}"' for choice in rule["enum"])
            problems.append(
                {
                    "type": "enum",
                    "field": where,
                    "description": f"{key} must be one of the following: {choices}",
                }
            )
            continue
        expected = rule.get("type")
        valid_type = {
            "array": isinstance(value, list),
            "string": isinstance(value, str),
            "integer": isinstance(value, int) and not isinstance(value, bool),
            "number": isinstance(value, int | float) and not isinstance(value, bool),
            "boolean": isinstance(value, bool),
            None: True,
        }[expected]
        if not valid_type:
            problems.append(
                {
                    "type": "invalid_type",
                    "field": where,
                    "description": f"Invalid type. Expected: {expected}, given: "
                    f"{type(value).__name__}",
                }
            )
            continue
        if rule.get("format") == "uri":
            items = value if isinstance(value, list) else [value]
            for index, item in enumerate(items):
                if not (isinstance(item, str) and is_uri(item)):
                    field = f"{where}.{index}" if isinstance(value, list) else where
                    problems.append(
                        {
                            "type": "format",
                            "field": field,
                            "description": "Does not match format 'uri'",
                        }
                    )
        if "maxItems" in rule and len(value) > rule["maxItems"]:
            problems.append(
                {
                    "type": "array_max_items",
                    "field": where,
                    "description": f"Array must have at most {rule['maxItems']} items",
                }
            )
            continue
        if isinstance(value, list | str):
            continue
        if "maximum" in rule and value > rule["maximum"]:
            problems.append(
                {
                    "type": "number_lte",
                    "field": where,
                    "description": f"Must be less than or equal to {rule['maximum']}",
                }
            )
        if "minimum" in rule and value < rule["minimum"]:
            problems.append(
                {
                    "type": "number_gte",
                    "field": where,
                    "description": f"Must be greater than or equal to {rule['minimum']}",
                }
            )
    return problems


def is_uri(text: str) -> bool:
    """A URI as JSON schema's ``uri`` format takes it: a scheme and the rest."""
    scheme, colon, rest = text.partition(":")
    return bool(colon and rest and scheme.isascii() and scheme[:1].isalpha())


def input_images(data: dict[str, Any], files: Mapping[str, bytes]) -> list[bytes]:
    """The images of ``input_image`` / ``input_images``: data URIs decoded, file URLs read
    from ``files`` (URL -> bytes); ValueError for one that is neither or not an image."""
    given = data.get("input_image") or data.get("input_images") or []
    decoded = []
    for uri in given if isinstance(given, list) else [given]:
        header, comma, payload = uri.partition(",")
        if uri in files:
            raw = files[uri]
        elif header.startswith("data:") and header.endswith(";base64") and comma:
            raw = base64.b64decode(payload, validate=True)
        else:
            raise ValueError(f"cannot read input image {uri[:40]!r}")
        with Image.open(io.BytesIO(raw)) as image:
            image.verify()
        decoded.append(raw)
    return decoded


def render_output(
    model: FakeModel, data: dict[str, Any], files: Mapping[str, bytes]
) -> tuple[bytes, str, str]:
    """A real image for a prediction's input: (bytes, extension, MIME type)."""
    sources = input_images(data, files)
    if model.sizing == "kontext" and data.get("aspect_ratio", "match_input_image") == (
        "match_input_image"
    ):
        with Image.open(io.BytesIO(sources[0])) as first:
            width, height = first.size
    elif model.sizing == "kontext":
        width, height = FLUX_RATIOS.get(data["aspect_ratio"], (1024, 1024))
    elif model.sizing == "flux":
        width, height = FLUX_RATIOS[data.get("aspect_ratio", "1:1")]
        if data.get("megapixels") == "0.25":
            width, height = width // 2, height // 2
    elif model.sizing == "pro" and data.get("aspect_ratio") == "custom":
        width, height = data.get("width", 1024), data.get("height", 1024)
    elif model.sizing == "pro":
        width, height = FLUX_RATIOS[data.get("aspect_ratio", "1:1")]
    else:
        width, height = data.get("width", 1024), data.get("height", 1024)
    extension = data.get("output_format", model.default_format)
    pillow_format, mime = FORMATS[extension]
    key = f"{data.get('prompt')}|{data.get('seed')}".encode() + b"".join(sources)
    digest = hashlib.sha256(key).digest()
    image = Image.new("RGB", (width, height), tuple(digest[:3]))
    ImageDraw.Draw(image).ellipse(
        (width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=tuple(digest[3:6])
    )
    buffer = io.BytesIO()
    image.save(buffer, format=pillow_format)
    return buffer.getvalue(), extension, mime


class FakeReplicate:
    """The fake's state, its scripting knobs and the requests it received."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.received: list[Received] = []
        self.models = {model.full_name: model for model in MODELS}
        self.polls_before_done = 0
        """GETs of a prediction that still report it running (0: finished on create)."""
        self.outcome = "succeeded"
        """End state of new predictions: succeeded, failed, canceled or aborted."""
        self.failure = NSFW_ERROR
        """``error`` of failed (and aborted) predictions."""
        self.sync_hold_s = 0.0
        """How long ``Prefer: wait`` holds a create that does not finish at once."""
        self.create_replies: list[Reply | str] = []
        self.get_replies: list[Reply] = []
        self.file_replies: list[Reply] = []
        self.upload_replies: list[Reply] = []
        """Canned answers to ``POST /v1/files``, used up one per upload."""
        self.max_file_bytes = 100 * 1000 * 1000
        """Largest upload stored; a larger one is the documented 413."""
        self.file_delay_s = 0.0
        self.file_content_length = True
        self.output_as_data_uri = False
        self.list_files_as_urls = False
        """List a prediction's data-URI inputs as file URLs of the server's own: whether
        Replicate's listing echoes a data URI it was given is not known here (not checked
        against the real service), so the adapter must recognise its prediction either way."""
        self.page_size = 100
        self.port = 0
        self._files: dict[str, tuple[bytes, str]] = {}
        self._uploads: dict[str, tuple[dict[str, Any], bytes]] = {}
        self._file_urls: list[str] = []
        self._predictions: dict[str, _Prediction] = {}
        self._order = 0
        self._lock = threading.RLock()

    # -- test helpers ---------------------------------------------------------------

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    def requests(self, method: str | None = None, path: str | None = None) -> list[Received]:
        """Received requests, optionally filtered by method and path prefix."""
        with self._lock:
            return [
                item
                for item in self.received
                if (method is None or item.method == method)
                and (path is None or item.path.startswith(path))
            ]

    def creates(self) -> list[Received]:
        """POSTs that create predictions (official-model or version endpoint)."""
        return [
            item
            for item in self.requests("POST")
            if item.path == "/v1/predictions" or item.path.endswith("/predictions")
        ]

    def uploads(self) -> list[Received]:
        """``POST /v1/files`` requests."""
        return [item for item in self.requests("POST") if item.path == "/v1/files"]

    def deletes(self) -> list[str]:
        """Ids of the files the adapter asked to delete, in order."""
        return [
            item.path.removeprefix("/v1/files/") for item in self.requests("DELETE", "/v1/files/")
        ]

    def file_urls(self) -> list[str]:
        """``urls.get`` of every file stored, deleted or not, in upload order."""
        with self._lock:
            return list(self._file_urls)

    def stored_files(self) -> dict[str, bytes]:
        """Files uploaded and not deleted, by id."""
        with self._lock:
            return {file_id: content for file_id, (_, content) in self._uploads.items()}

    def prediction(self, prediction_id: str) -> dict[str, Any]:
        """The current public JSON of a prediction."""
        with self._lock:
            return json.loads(json.dumps(self._predictions[prediction_id].data))

    def prediction_ids(self) -> list[str]:
        with self._lock:
            return list(self._predictions)

    def add_prediction(
        self, model: FakeModel, data: dict[str, Any], *, status: str, error: str | None = None
    ) -> str:
        """Store a prediction as if created earlier (e.g. by another run or attempt)."""
        with self._lock:
            prediction = self._new_prediction(model, data)
            if status in ("succeeded", "failed", "canceled", "aborted"):
                prediction.outcome = status
                prediction.error = error
                self._finish(prediction)
            else:
                prediction.data["status"] = status
            return prediction.data["id"]

    # -- HTTP -------------------------------------------------------------------------

    def handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(handler.path)
        received = Received.read(handler, method)
        with self._lock:
            self.received.append(received)
        if parts.path.startswith("/pbxt/"):
            self._serve_file(handler, parts.path)
            return
        if received.headers.get("authorization") != f"Bearer {self.token}":
            self._send(handler, 401, UNAUTHENTICATED)
            return
        segments = [segment for segment in parts.path.split("/") if segment]
        self._route(handler, method, segments, received)

    def _route(
        self,
        handler: BaseHTTPRequestHandler,
        method: str,
        segments: list[str],
        received: Received,
    ) -> None:
        match (method, segments):
            case ("POST", ["v1", "models", owner, name, "predictions"]):
                model = self.models.get(f"{owner}/{name}")
                if model is None:
                    self._send(handler, 404, NOT_FOUND)
                else:
                    self._create(handler, model, received)
            case ("POST", ["v1", "predictions"]):
                self._create(handler, None, received)
            case ("GET", ["v1", "predictions"]):
                self._list(handler, received)
            case ("GET", ["v1", "predictions", prediction_id]):
                self._get(handler, prediction_id)
            case ("POST", ["v1", "predictions", prediction_id, "cancel"]):
                self._cancel(handler, prediction_id)
            case ("GET", ["v1", "models", owner, name]):
                model = self.models.get(f"{owner}/{name}")
                if model is None:
                    self._send(handler, 404, NOT_FOUND)
                else:
                    self._send(handler, 200, self._model_json(model))
            case ("GET", ["v1", "models", owner, name, "versions", version]):
                model = self.models.get(f"{owner}/{name}")
                if model is None or model.version != version:
                    self._send(handler, 404, NOT_FOUND)
                else:
                    self._send(handler, 200, self._version_json(model))
            case ("POST", ["v1", "files"]):
                self._upload(handler, received)
            case ("GET", ["v1", "files", file_id]):
                with self._lock:
                    stored = self._uploads.get(file_id)
                if stored is None:
                    self._send(handler, 404, FILE_NOT_FOUND)
                else:
                    self._send(handler, 200, stored[0])
            case ("DELETE", ["v1", "files", file_id]):
                with self._lock:
                    stored = self._uploads.pop(file_id, None)
                if stored is None:
                    self._send(handler, 404, FILE_NOT_FOUND)
                else:
                    handler.send_response(204)
                    handler.send_header("Content-Length", "0")
                    handler.end_headers()
            case ("GET", ["v1", "account"]):
                self._send(
                    handler,
                    200,
                    {"type": "user", "username": "imagen-tests", "name": "Imagen Tests"},
                )
            case _:
                self._send(handler, 404, NOT_FOUND)

    def _create(
        self, handler: BaseHTTPRequestHandler, model: FakeModel | None, received: Received
    ) -> None:
        with self._lock:
            reply = self.create_replies.pop(0) if self.create_replies else None
        if reply == DROP_BEFORE_CREATE:
            handler.close_connection = True
            return
        if isinstance(reply, Reply):
            self._send(handler, reply.status, reply.body, reply.headers)
            return
        try:
            body = received.json()
        except ValueError:
            self._send(handler, 400, {"detail": "Invalid JSON body.", "status": 400})
            return
        if not isinstance(body, dict):
            self._send(handler, 400, {"detail": "Invalid JSON body.", "status": 400})
            return
        if model is None:
            model = self._model_for_version(body.get("version"))
            if model is None:
                self._send(handler, 422, BAD_VERSION)
                return
        problems = _schema_errors(model.schema, body.get("input"))
        if problems:
            detail = "".join(f"- {item['field']}: {item['description']}\n" for item in problems)
            self._send(
                handler,
                422,
                {
                    "detail": detail,
                    "status": 422,
                    "title": "Input validation failed",
                    "invalid_fields": problems,
                },
            )
            return
        with self._lock:
            prediction = self._new_prediction(model, body["input"])
        if reply == DROP_AFTER_CREATE:
            handler.close_connection = True
            return
        prefer = received.headers.get("prefer", "")
        wait = None
        if prefer == "wait":
            wait = 60.0
        elif prefer.startswith("wait="):
            wait = float(prefer.removeprefix("wait="))
        headers = {"Preference-Applied": "wait"} if wait is not None else {}
        if wait is not None:
            with self._lock:
                if prediction.polls_left <= 0:
                    self._finish(prediction)
            if prediction.data["status"] == "starting":
                time.sleep(min(wait, self.sync_hold_s))
        with self._lock:
            data = json.loads(json.dumps(prediction.data))
        self._send(handler, 201, data, headers)

    def _upload(self, handler: BaseHTTPRequestHandler, received: Received) -> None:
        with self._lock:
            reply = self.upload_replies.pop(0) if self.upload_replies else None
        if reply is not None:
            self._send(handler, reply.status, reply.body, reply.headers)
            return
        fields = multipart_fields(received)
        if "content" not in fields:
            self._send(handler, 400, NO_CONTENT)
            return
        content, part_type, _ = fields["content"]
        if len(content) > self.max_file_bytes:
            self._send(handler, 413, FILE_TOO_LARGE)
            return
        metadata = json.loads(fields["metadata"][0]) if "metadata" in fields else {}
        file_id = "".join(secrets.choice("abcdefghjkmnpqrstvwxyz0123456789") for _ in range(26))
        created = _now()
        data = {
            "id": file_id,
            "content_type": (
                fields["type"][0].decode()
                if "type" in fields
                else part_type or "application/octet-stream"
            ),
            "size": len(content),
            "checksums": {"sha256": hashlib.sha256(content).hexdigest()},
            "metadata": metadata,
            "created_at": _stamp(created),
            "expires_at": _stamp(created + timedelta(hours=1)),
            "urls": {"get": f"{self.base_url}/files/{file_id}"},
        }
        with self._lock:
            self._uploads[file_id] = (data, content)
            self._file_urls.append(data["urls"]["get"])
        self._send(handler, 201, data)

    def _stored_by_url(self) -> dict[str, bytes]:
        return {
            f"{self.base_url}/files/{file_id}": content
            for file_id, (_, content) in self._uploads.items()
        }

    def _model_for_version(self, version: Any) -> FakeModel | None:
        if not isinstance(version, str):
            return None
        name, _, version_id = version.rpartition(":")
        for model in self.models.values():
            if model.version == version_id and (not name or name == model.full_name):
                return model
        return None

    def _new_prediction(self, model: FakeModel, data: dict[str, Any]) -> _Prediction:
        prediction_id = "".join(
            secrets.choice("abcdefghjkmnpqrstvwxyz0123456789") for _ in range(26)
        )
        created = _now()
        self._order += 1
        prediction = _Prediction(
            model=model,
            created=created,
            order=self._order,
            polls_left=self.polls_before_done,
            outcome=self.outcome,
            error=self.failure,
            data={
                "id": prediction_id,
                "model": model.full_name,
                "version": model.version,
                "input": data,
                "logs": "",
                "output": None,
                "data_removed": False,
                "error": None,
                "source": "api",
                "status": "starting",
                "created_at": _stamp(created),
                "urls": {
                    "cancel": f"{self.base_url}/predictions/{prediction_id}/cancel",
                    "get": f"{self.base_url}/predictions/{prediction_id}",
                    "stream": f"{self.origin}/v1/streams/{prediction_id}",
                    "web": f"https://replicate.com/p/{prediction_id}",
                },
            },
        )
        self._predictions[prediction_id] = prediction
        return prediction

    def _finish(self, prediction: _Prediction) -> None:
        data = prediction.data
        now = _stamp(_now())
        data.setdefault("started_at", now)
        data["completed_at"] = now
        data["status"] = prediction.outcome
        data["logs"] += f"Using seed: {data['input'].get('seed')}\n"
        data["metrics"] = {"predict_time": 0.42, "total_time": 0.5}
        if prediction.outcome == "succeeded":
            try:
                image, extension, mime = render_output(
                    prediction.model, data["input"], self._stored_by_url()
                )
            except (ValueError, OSError) as error:
                data["status"] = "failed"
                data["error"] = f"Failed to load input image: {error}"
                return
            urls = []
            # A list-output model makes num_outputs images (each billed by Replicate).
            count = data["input"].get("num_outputs", 1) if prediction.model.output == "list" else 1
            folder = secrets.token_hex(12)
            for index in range(count):
                if self.output_as_data_uri:
                    urls.append(f"data:{mime};base64,{base64.b64encode(image).decode()}")
                else:
                    path = f"/pbxt/{folder}/out-{index}.{extension}"
                    self._files[path] = (image, mime)
                    urls.append(f"{self.origin}{path}")
            data["output"] = urls if prediction.model.output == "list" else urls[0]
        elif prediction.outcome in ("failed", "aborted"):
            data["error"] = prediction.error

    def _get(self, handler: BaseHTTPRequestHandler, prediction_id: str) -> None:
        with self._lock:
            reply = self.get_replies.pop(0) if self.get_replies else None
            prediction = self._predictions.get(prediction_id)
            running = prediction is not None and prediction.data["status"] in (
                "starting",
                "processing",
            )
            if reply is None and prediction is not None and running:
                if prediction.polls_left > 0:
                    prediction.polls_left -= 1
                    prediction.data["status"] = "processing"
                    prediction.data.setdefault("started_at", _stamp(_now()))
                    prediction.data["logs"] += "  0%|          | 0/4\n"
                else:
                    self._finish(prediction)
            data = json.loads(json.dumps(prediction.data)) if prediction else None
        if reply is not None:
            self._send(handler, reply.status, reply.body, reply.headers)
        elif data is None:
            self._send(handler, 404, NOT_FOUND)
        else:
            self._send(handler, 200, data)

    def _cancel(self, handler: BaseHTTPRequestHandler, prediction_id: str) -> None:
        with self._lock:
            prediction = self._predictions.get(prediction_id)
            if prediction is not None and prediction.data["status"] in ("starting", "processing"):
                prediction.data["status"] = "canceled"
                prediction.data["completed_at"] = _stamp(_now())
            data = json.loads(json.dumps(prediction.data)) if prediction else None
        if data is None:
            self._send(handler, 404, NOT_FOUND)
        else:
            self._send(handler, 200, data)

    def _list(self, handler: BaseHTTPRequestHandler, received: Received) -> None:
        created_after = received.query.get("created_after", [None])[0]
        cursor = int(received.query.get("cursor", ["0"])[0])
        with self._lock:
            items = sorted(self._predictions.values(), key=lambda item: -item.order)
            if created_after:
                since = datetime.fromisoformat(created_after.replace("Z", "+00:00"))
                items = [item for item in items if item.created >= since]
            page = [
                self._listed(json.loads(json.dumps(item.data)))
                for item in items[cursor : cursor + self.page_size]
            ]
            more = cursor + self.page_size < len(items)
        following = None
        if more:
            query = {"cursor": str(cursor + self.page_size)}
            if created_after:
                query["created_after"] = created_after
            following = f"{self.base_url}/predictions?{urlencode(query)}"
        self._send(handler, 200, {"next": following, "previous": None, "results": page})

    def _listed(self, prediction: dict[str, Any]) -> dict[str, Any]:
        """A prediction as the listing shows it (see :attr:`list_files_as_urls`)."""
        if not self.list_files_as_urls:
            return prediction

        def as_url(value: Any) -> Any:
            if isinstance(value, str) and value.startswith("data:"):
                digest = hashlib.sha256(value.encode()).hexdigest()[:16]
                return f"https://replicate.delivery/pbxt/{digest}/input.png"
            if isinstance(value, list):
                return [as_url(item) for item in value]
            return value

        prediction["input"] = {key: as_url(value) for key, value in prediction["input"].items()}
        return prediction

    def _serve_file(self, handler: BaseHTTPRequestHandler, path: str) -> None:
        with self._lock:
            reply = self.file_replies.pop(0) if self.file_replies else None
            stored = self._files.get(path)
        if reply is not None:
            self._send(handler, reply.status, reply.body, reply.headers)
            return
        if stored is None:
            self._send(handler, 404, "Not Found")
            return
        if self.file_delay_s:
            time.sleep(self.file_delay_s)
        image, mime = stored
        handler.send_response(200)
        handler.send_header("Content-Type", mime)
        if self.file_content_length:
            handler.send_header("Content-Length", str(len(image)))
        else:
            handler.send_header("Connection", "close")
            handler.close_connection = True
        handler.end_headers()
        handler.wfile.write(image)

    def _model_json(self, model: FakeModel) -> dict[str, Any]:
        return {
            "url": f"https://replicate.com/{model.full_name}",
            "owner": model.owner,
            "name": model.name,
            "description": f"{model.name} (fake)",
            "visibility": "public",
            "github_url": None,
            "paper_url": None,
            "license_url": None,
            "run_count": len(self._predictions),
            "cover_image_url": None,
            "default_example": None,
            "latest_version": self._version_json(model),
        }

    @staticmethod
    def _version_json(model: FakeModel) -> dict[str, Any]:
        properties = {
            key: {k: v for k, v in rule.items() if k != "required"}
            for key, rule in model.schema.items()
        }
        required = [key for key, rule in model.schema.items() if rule.get("required")]
        return {
            "id": model.version,
            "created_at": "2024-08-01T00:00:00.000000Z",
            "cog_version": "0.9.12",
            "openapi_schema": {
                "components": {
                    "schemas": {
                        "Input": {
                            "type": "object",
                            "title": "Input",
                            "required": required,
                            "properties": properties,
                        }
                    }
                }
            },
        }

    @staticmethod
    def _send(
        handler: BaseHTTPRequestHandler,
        status: int,
        body: dict[str, Any] | str,
        headers: dict[str, str] | None = None,
    ) -> None:
        if isinstance(body, str):
            payload, content_type = body.encode(), "text/plain; charset=utf-8"
        else:
            payload = json.dumps(body).encode()
            content_type = "application/problem+json" if status >= 400 else "application/json"
        send(handler, status, payload, content_type, headers)


def multipart_fields(received: Received) -> dict[str, tuple[bytes, str | None, str | None]]:
    """A multipart/form-data body's parts by name: (bytes, part Content-Type, filename)."""
    head = f"Content-Type: {received.headers.get('content-type', '')}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + received.body)
    fields: dict[str, tuple[bytes, str | None, str | None]] = {}
    if not message.is_multipart():
        return fields
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            payload = part.get_payload(decode=True)
            content_type = part.get_content_type() if part.get("content-type") else None
            fields[name] = (
                payload if isinstance(payload, bytes) else b"",
                content_type,
                part.get_filename(),
            )
    return fields


@contextmanager
def running_fake_replicate(token: str) -> Iterator[FakeReplicate]:
    """Serve a :class:`FakeReplicate` on an ephemeral loopback port for the block."""
    with serving(FakeReplicate(token)) as fake:
        yield fake
