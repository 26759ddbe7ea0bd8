"""A loopback fake of OpenAI's Images API for gpt-image-2, written from its public reference.

It serves ``POST /v1/images/generations``, ``POST /v1/images/edits`` and ``GET
/v1/models/{model}``, checks
``Authorization: Bearer``, validates each body against gpt-image-2's parameters and size
rules and answers with OpenAI's error bodies (``{"error": {"message", "type", "param",
"code"}}``, 400 ``invalid_value`` / ``unknown_parameter``, 401 ``invalid_api_key`` with the key
masked the way OpenAI masks it, 404 ``model_not_found`` for a shut-down model with OpenAI's
"has been deprecated" message). The wording of the size messages is the fake's own: OpenAI's
exact text for them was not available. Prompts containing :data:`BLOCKED_WORD` are refused
like OpenAI's safety system refuses them (``moderation_blocked``). Images are real (Pillow),
base64-encoded in ``data[0].b64_json``, with ``usage``.

Edits are multipart/form-data as OpenAI's reference describes them (read 2026-12-07 through
Microsoft Learn's mirror of it and generated clients, see ``backends/openai/models.py``): one
to 16 files as ``image[]`` (or ``image``), png, jpeg or webp of less than 50MB; an optional
``mask``, a PNG of less than 4MB with the first image's dimensions; the other parameters as
form fields (``moderation`` is not one of them). The answer has the generation's shape, with
``usage.input_tokens_details.image_tokens`` counting the input images (the fake's own count,
as OpenAI publishes none); the rendered image mixes the first image's bytes into its
colours. Refusals are 400 ``invalid_request_error`` bodies naming ``param`` (``image`` or
``mask``); their wording is the fake's own.

Tests script it through ``replies`` (canned responses, or :data:`DROP` to hang up) and
``delay_s``, and read ``received`` to assert what the adapter sent.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import io
import json
import math
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from PIL import Image, ImageDraw

from imagen_pipeline_tests.fakes.loopback_http import Received, Reply, send, serving

BLOCKED_WORD = "forbidden-subject"
"""A prompt containing this is refused by the fake's safety system."""

DROP = "drop"
"""``replies`` entry: read the request, then close the connection without answering."""

MODELS: dict[str, dict[str, Any]] = {
    "gpt-image-2": {
        "size": "flexible",
        "quality": ["low", "medium", "high", "auto"],
        "background": ["opaque", "auto"],
        "output_format": ["png", "jpeg", "webp"],
        "moderation": ["low", "auto"],
        "output_compression": "int0-100",
        "user": "string",
        "n": "int1-10",
        "max_prompt": 32000,
    },
}
MODELS["gpt-image-2-2026-04-21"] = MODELS["gpt-image-2"]
"""gpt-image-2's dated snapshot."""
SHUT_DOWN = frozenset(
    {
        "gpt-image-1",
        "gpt-image-1-mini",
        "gpt-image-1.5",
        "chatgpt-image-latest",
        "dall-e-2",
        "dall-e-3",
    }
)
"""Models OpenAI no longer serves: a generation naming one gets the 404 ``model_not_found``."""
OUTPUT_TOKENS_PER_MEGAPIXEL = {"low": 260, "medium": 1010, "high": 3970}
"""The fake's own output token counts (OpenAI's figures for 1024x1024, per megapixel)."""
INPUT_TOKENS_PER_MEGAPIXEL = 1500
"""The fake's own image input token count for an edit's input images."""
PILLOW_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
EDIT_FORMATS = ("PNG", "JPEG", "WEBP")
EDIT_MAX_IMAGES = 16
EDIT_MAX_IMAGE_BYTES = 50 * 1024 * 1024
MASK_MAX_BYTES = 4 * 1024 * 1024
EDIT_NOT_TAKEN = ("moderation",)
"""generation parameters the multipart edit form does not take."""
INT_FIELDS = ("n", "output_compression")
"""Form fields OpenAI reads as integers."""

SERVER_ERROR = {
    "error": {
        "message": "The server had an error while processing your request. Sorry about that!",
        "type": "server_error",
        "param": None,
        "code": None,
    }
}
RATE_LIMITED = {
    "error": {
        "message": "Rate limit reached for gpt-image-2 in organization org-imagen on images per "
        "minute (IPM): Limit 5, Used 5, Requested 1. Please try again in 12s. Visit "
        "https://platform.openai.com/account/rate-limits to learn more.",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
}
INSUFFICIENT_QUOTA = {
    "error": {
        "message": "You exceeded your current quota, please check your plan and billing "
        "details. For more information on this error, read the docs: "
        "https://platform.openai.com/docs/guides/error-codes/api-errors.",
        "type": "insufficient_quota",
        "param": None,
        "code": "insufficient_quota",
    }
}
ORGANIZATION_NOT_VERIFIED = {
    "error": {
        "message": "Your organization must be verified to use the model `gpt-image-2`. Please "
        "go to: https://platform.openai.com/settings/organization/general and click on Verify "
        "Organization.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
}
MODERATION_MESSAGE = (
    "Your request was rejected by the safety system. If you believe this is an error, contact "
    "us at help.openai.com and include the request ID {request_id}. safety_violations=[violence]."
)


def error_body(message: str, param: str | None, code: str | None) -> dict[str, Any]:
    """OpenAI's error object for an invalid request."""
    return {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": param,
            "code": code,
        }
    }


def masked(key: str) -> str:
    """The key as OpenAI echoes it in a 401: first characters, stars, last four."""
    return f"{key[:8]}{'*' * max(0, len(key) - 12)}{key[-4:]}"


def size_problem(size: Any) -> str | None:
    """The fake's message for a size gpt-image-2 does not render, or None."""
    if size == "auto":
        return None
    parts = size.split("x") if isinstance(size, str) else []
    if len(parts) != 2 or not all(part.isdigit() for part in parts):
        return f"Invalid size '{size}'. Size must be 'auto' or in the format WIDTHxHEIGHT."
    width, height = int(parts[0]), int(parts[1])
    if width % 16 or height % 16:
        return f"Invalid size '{size}'. Width and height must both be multiples of 16."
    if max(width, height) > 3840:
        return f"Invalid size '{size}'. The longest edge must be at most 3840 pixels."
    if max(width, height) > 3 * min(width, height):
        return f"Invalid size '{size}'. The aspect ratio must not exceed 3:1."
    if not 655_360 <= width * height <= 8_294_400:
        return (
            f"Invalid size '{size}'. The total number of pixels must be between 655360 and 8294400."
        )
    return None


def _supported(values: list[str]) -> str:
    quoted = [f"'{value}'" for value in values]
    return ", ".join(quoted[:-1]) + f", and {quoted[-1]}" if len(quoted) > 1 else quoted[0]


def render(size: str, image_format: str, prompt: str, source: bytes = b"") -> bytes:
    """A real image of ``size`` in ``image_format`` whose colours come from the prompt (and
    the first source image's bytes, for an edit)."""
    width, height = (int(part) for part in size.split("x"))
    digest = hashlib.sha256(prompt.encode() + source).digest()
    image = Image.new("RGB", (width, height), tuple(digest[:3]))
    ImageDraw.Draw(image).ellipse(
        (width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=tuple(digest[3:6])
    )
    buffer = io.BytesIO()
    image.save(buffer, format=PILLOW_FORMATS[image_format])
    return buffer.getvalue()


@dataclass(frozen=True)
class FilePart:
    """One file of a multipart form: its field, filename, type, bytes and Pillow's view."""

    field: str
    filename: str
    content_type: str
    data: bytes
    format: str
    width: int
    height: int


@dataclass(frozen=True)
class Form:
    """A parsed edit form: its text fields (integers converted) and its files."""

    fields: dict[str, Any]
    images: list[FilePart]
    mask: FilePart | None
    unknown_files: list[str]


def parse_form(content_type: str, body: bytes) -> Form:
    """A multipart/form-data body, read with the standard library's MIME parser."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    fields: dict[str, Any] = {}
    images: list[FilePart] = []
    mask: FilePart | None = None
    unknown: list[str] = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition") or ""
        data = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is None:
            text = data.decode()
            fields[name] = int(text) if name in INT_FIELDS and text.lstrip("-").isdigit() else text
            continue
        try:
            with Image.open(io.BytesIO(data)) as image:
                fmt, (width, height) = image.format or "", image.size
        except OSError:
            fmt, width, height = "", 0, 0
        item = FilePart(name, filename, part.get_content_type(), data, fmt, width, height)
        if name in ("image[]", "image"):
            images.append(item)
        elif name == "mask":
            mask = item
        else:
            unknown.append(name)
    return Form(fields, images, mask, unknown)


def edit_problem(form: Form) -> dict[str, Any] | None:
    """The 400 body for the files of an edit (count, format, size, mask), or None."""
    if form.unknown_files:
        name = form.unknown_files[0]
        return error_body(f"Unknown parameter: '{name}'.", name, "unknown_parameter")
    if not form.images:
        return error_body(
            "Missing required parameter: 'image'.", "image", "missing_required_parameter"
        )
    if len(form.images) > EDIT_MAX_IMAGES:
        message = (
            f"Invalid 'image': too many images. Expected at most {EDIT_MAX_IMAGES}, but got "
            f"{len(form.images)}."
        )
        return error_body(message, "image", "invalid_value")
    for index, image in enumerate(form.images):
        if image.format not in EDIT_FORMATS:
            message = (
                f"Invalid image file or mode for image {index + 1}, please check your image "
                "file. Supported formats are 'png', 'jpeg' and 'webp'."
            )
            return error_body(message, "image", "invalid_image_format")
        if len(image.data) >= EDIT_MAX_IMAGE_BYTES:
            message = f"Invalid 'image': image {index + 1} must be smaller than 50MB."
            return error_body(message, "image", "image_too_large")
    mask = form.mask
    if mask is None:
        return None
    if mask.format != "PNG":
        return error_body("Invalid 'mask': the mask must be a PNG image.", "mask", "invalid_value")
    if len(mask.data) >= MASK_MAX_BYTES:
        return error_body(
            "Invalid 'mask': the mask must be smaller than 4MB.", "mask", "invalid_value"
        )
    first = form.images[0]
    if (mask.width, mask.height) != (first.width, first.height):
        message = (
            f"Invalid 'mask': the mask ({mask.width}x{mask.height}) must have the same "
            f"dimensions as the first image ({first.width}x{first.height})."
        )
        return error_body(message, "mask", "invalid_value")
    return None


class FakeOpenAI:
    """The fake's state, its scripting knobs and the requests it received."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.received: list[Received] = []
        self.replies: list[Reply | str] = []
        """Answers to the next generation POSTs, in order, instead of generating."""
        self.delay_s = 0.0
        """Seconds a generation takes before the answer is sent."""
        self.available_models = set(MODELS)
        self.port = 0
        self._lock = threading.RLock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def edits(self) -> list[Received]:
        """POSTs to ``/v1/images/edits``."""
        with self._lock:
            return [
                item
                for item in self.received
                if item.method == "POST" and item.path == "/v1/images/edits"
            ]

    def generations(self) -> list[Received]:
        """POSTs to ``/v1/images/generations``."""
        with self._lock:
            return [
                item
                for item in self.received
                if item.method == "POST" and item.path == "/v1/images/generations"
            ]

    # -- HTTP -------------------------------------------------------------------------

    def handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        received = Received.read(handler, method)
        with self._lock:
            self.received.append(received)
        request_id = f"req_{secrets.token_hex(16)}"
        authorization = received.headers.get("authorization", "")
        if authorization != f"Bearer {self.key}":
            given = authorization.removeprefix("Bearer ")
            message = (
                f"Incorrect API key provided: {masked(given)}. You can find your API key at "
                "https://platform.openai.com/account/api-keys."
                if given
                else "You didn't provide an API key."
            )
            self._send(handler, 401, error_body(message, None, "invalid_api_key"), request_id)
            return
        segments = [segment for segment in received.path.split("/") if segment]
        match (method, segments):
            case ("POST", ["v1", "images", "generations"]):
                self._generate(handler, received, request_id)
            case ("POST", ["v1", "images", "edits"]):
                self._edit(handler, received, request_id)
            case ("GET", ["v1", "models", model]):
                if model in self.available_models:
                    body = {
                        "id": model,
                        "object": "model",
                        "created": 1745517030,
                        "owned_by": "system",
                    }
                    self._send(handler, 200, body, request_id)
                else:
                    message = f"The model '{model}' does not exist"
                    body = error_body(message, "model", "model_not_found")
                    self._send(handler, 404, body, request_id)
            case _:
                message = f"Invalid URL ({method} {received.path})"
                self._send(handler, 404, error_body(message, None, None), request_id)

    def _generate(
        self, handler: BaseHTTPRequestHandler, received: Received, request_id: str
    ) -> None:
        with self._lock:
            reply = self.replies.pop(0) if self.replies else None
        if reply == DROP:
            handler.close_connection = True
            return
        if isinstance(reply, Reply):
            self._send(handler, reply.status, reply.body, request_id, reply.headers)
            return
        try:
            body = received.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            message = "We could not parse the JSON body of your request."
            self._send(handler, 400, error_body(message, None, None), request_id)
            return
        problem = self._problem(body)
        if problem is not None:
            status = 404 if problem["error"]["code"] == "model_not_found" else 400
            self._send(handler, status, problem, request_id)
            return
        model = body["model"]
        if self._refused_by_moderation(handler, body, request_id):
            return
        if self.delay_s:
            time.sleep(self.delay_s)
        self._send(handler, 200, self._result(model, body), request_id)

    def _refused_by_moderation(
        self, handler: BaseHTTPRequestHandler, body: dict[str, Any], request_id: str
    ) -> bool:
        """Answer OpenAI's moderation refusal for a prompt with the blocked word."""
        if BLOCKED_WORD not in body["prompt"]:
            return False
        refusal = {
            "error": {
                "message": MODERATION_MESSAGE.format(request_id=request_id),
                "type": "image_generation_user_error",
                "param": None,
                "code": "moderation_blocked",
            }
        }
        self._send(handler, 400, refusal, request_id)
        return True

    def _edit(self, handler: BaseHTTPRequestHandler, received: Received, request_id: str) -> None:
        with self._lock:
            reply = self.replies.pop(0) if self.replies else None
        if reply == DROP:
            handler.close_connection = True
            return
        if isinstance(reply, Reply):
            self._send(handler, reply.status, reply.body, request_id, reply.headers)
            return
        content_type = received.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            message = (
                "Invalid Content-Type header (application/json), expected multipart/form-data."
            )
            self._send(handler, 400, error_body(message, None, None), request_id)
            return
        form = parse_form(content_type, received.body)
        problem = edit_problem(form) or self._problem(form.fields, not_taken=EDIT_NOT_TAKEN)
        if problem is not None:
            status = 404 if problem["error"]["code"] == "model_not_found" else 400
            self._send(handler, status, problem, request_id)
            return
        body = form.fields
        if self._refused_by_moderation(handler, body, request_id):
            return
        if self.delay_s:
            time.sleep(self.delay_s)
        inputs = [*form.images, *([form.mask] if form.mask else [])]
        result = self._result(body["model"], body, form.images[0].data, inputs)
        self._send(handler, 200, result, request_id)

    def _problem(
        self, body: dict[str, Any], not_taken: tuple[str, ...] = ()
    ) -> dict[str, Any] | None:
        """OpenAI's 400 body for the first invalid parameter, or None."""
        model = body.get("model")
        if not isinstance(model, str):
            return error_body(
                "Missing required parameter: 'model'.", "model", "missing_required_parameter"
            )
        if model in SHUT_DOWN:
            message = (
                f"The model `{model}` has been deprecated. Learn more: "
                "https://platform.openai.com/docs/deprecations"
            )
            return error_body(message, None, "model_not_found")
        if model not in MODELS:
            message = f"Invalid value: '{model}'. Supported values are: {_supported(list(MODELS))}."
            return error_body(message, "model", "invalid_value")
        schema = MODELS[model]
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            return error_body(
                "Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter"
            )
        if len(prompt) > schema["max_prompt"]:
            message = (
                f"Invalid 'prompt': string too long. Expected a string with maximum length "
                f"{schema['max_prompt']}, but got a string with length {len(prompt)} instead."
            )
            return error_body(message, "prompt", "string_above_max_length")
        for name, value in body.items():
            if name in ("model", "prompt"):
                continue
            rule = schema.get(name)
            if rule is None or name == "max_prompt" or name in not_taken:
                return error_body(f"Unknown parameter: '{name}'.", name, "unknown_parameter")
            if rule == "flexible":
                problem = size_problem(value)
                if problem:
                    return error_body(problem, name, "invalid_value")
                continue
            if name == "background" and value == "transparent":
                message = "Transparent background is not supported for this model."
                return error_body(message, name, "invalid_value")
            if isinstance(rule, list) and value not in rule:
                message = f"Invalid value: '{value}'. Supported values are: {_supported(rule)}."
                return error_body(message, name, "invalid_value")
            if isinstance(rule, str) and rule.startswith("int"):
                low, high = (int(part) for part in rule.removeprefix("int").split("-"))
                if not isinstance(value, int) or not low <= value <= high:
                    message = (
                        f"Invalid '{name}': integer out of range. Expected a value between "
                        f"{low} and {high}, but got {value} instead."
                    )
                    return error_body(message, name, "integer_out_of_range")
        return None

    def _result(
        self,
        model: str,
        body: dict[str, Any],
        source: bytes = b"",
        inputs: list[FilePart] | None = None,
    ) -> dict[str, Any]:
        prompt = body["prompt"]
        size = body.get("size", "auto")
        rendered_size = "1024x1024" if size == "auto" else size
        output_format = body.get("output_format", "png")
        image = render(rendered_size, output_format, prompt, source)
        quality = body.get("quality", "auto")
        rendered_quality = "high" if quality == "auto" else quality
        width, height = (int(part) for part in rendered_size.split("x"))
        count = body.get("n", 1)
        text_tokens = math.ceil(len(prompt) / 4)
        image_tokens = sum(
            math.ceil(INPUT_TOKENS_PER_MEGAPIXEL * part.width * part.height / 1_000_000)
            for part in inputs or []
        )
        output_tokens = count * math.ceil(
            OUTPUT_TOKENS_PER_MEGAPIXEL[rendered_quality] * width * height / 1_000_000
        )
        encoded = base64.b64encode(image).decode()
        return {
            "created": int(time.time()),
            "background": "opaque",
            "data": [{"b64_json": encoded} for _ in range(count)],
            "output_format": output_format,
            "quality": rendered_quality,
            "size": rendered_size,
            "usage": {
                "input_tokens": text_tokens + image_tokens,
                "input_tokens_details": {"image_tokens": image_tokens, "text_tokens": text_tokens},
                "output_tokens": output_tokens,
                "total_tokens": text_tokens + image_tokens + output_tokens,
            },
        }

    @staticmethod
    def _send(
        handler: BaseHTTPRequestHandler,
        status: int,
        body: dict[str, Any] | str,
        request_id: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        if isinstance(body, str):
            payload, content_type = body.encode(), "text/html; charset=utf-8"
        else:
            payload, content_type = json.dumps(body).encode(), "application/json"
        send(
            handler,
            status,
            payload,
            content_type,
            {"x-request-id": request_id, "openai-processing-ms": "42", **(headers or {})},
        )


@contextmanager
def running_fake_openai(key: str) -> Iterator[FakeOpenAI]:
    """Serve a :class:`FakeOpenAI` on an ephemeral loopback port for the block."""
    with serving(FakeOpenAI(key)) as fake:
        yield fake
