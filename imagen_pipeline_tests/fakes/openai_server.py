"""A loopback fake of OpenAI's Images API, written from its public reference.

It serves ``POST /v1/images/generations`` and ``GET /v1/models/{model}``, checks
``Authorization: Bearer``, validates each body against the model's parameters and answers
with OpenAI's error bodies (``{"error": {"message", "type", "param", "code"}}``, 400
``invalid_value`` / ``unknown_parameter``, 401 ``invalid_api_key`` with the key masked the way
OpenAI masks it). Prompts containing :data:`BLOCKED_WORD` are refused like OpenAI's safety
system refuses them (``moderation_blocked`` for GPT image models, ``content_policy_violation``
for DALL·E). Images are real (Pillow), base64-encoded in ``data[0].b64_json``; GPT image
models also report ``usage`` with the output token counts OpenAI bills.

Tests script it through ``replies`` (canned responses, or :data:`DROP` to hang up) and
``delay_s``, and read ``received`` to assert what the adapter sent.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any

from PIL import Image, ImageDraw

from imagen_pipeline_tests.fakes.loopback_http import Received, Reply, send, serving

BLOCKED_WORD = "forbidden-subject"
"""A prompt containing this is refused by the fake's safety system."""

DROP = "drop"
"""``replies`` entry: read the request, then close the connection without answering."""

GPT_SIZES = ["1024x1024", "1024x1536", "1536x1024", "auto"]
GPT_SCHEMA: dict[str, Any] = {
    "size": GPT_SIZES,
    "quality": ["low", "medium", "high", "auto"],
    "background": ["transparent", "opaque", "auto"],
    "output_format": ["png", "jpeg", "webp"],
    "moderation": ["low", "auto"],
    "output_compression": "int0-100",
    "user": "string",
    "n": "int1-10",
}
MODELS: dict[str, dict[str, Any]] = {
    "gpt-image-1": {**GPT_SCHEMA, "max_prompt": 32000},
    "gpt-image-1-mini": {**GPT_SCHEMA, "max_prompt": 32000},
    "gpt-image-1.5": {**GPT_SCHEMA, "max_prompt": 32000},
    "dall-e-3": {
        "size": ["1024x1024", "1792x1024", "1024x1792"],
        "quality": ["standard", "hd"],
        "style": ["vivid", "natural"],
        "response_format": ["url", "b64_json"],
        "user": "string",
        "n": "int1-1",
        "max_prompt": 4000,
    },
    "dall-e-2": {
        "size": ["256x256", "512x512", "1024x1024"],
        "quality": ["standard"],
        "response_format": ["url", "b64_json"],
        "user": "string",
        "n": "int1-10",
        "max_prompt": 1000,
    },
}
OUTPUT_TOKENS = {
    "low": {"1024x1024": 272, "1024x1536": 408, "1536x1024": 400},
    "medium": {"1024x1024": 1056, "1024x1536": 1584, "1536x1024": 1568},
    "high": {"1024x1024": 4160, "1024x1536": 6240, "1536x1024": 6208},
}
PILLOW_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}

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
        "message": "Rate limit reached for gpt-image-1 in organization org-imagen on images per "
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
        "message": "Your organization must be verified to use the model `gpt-image-1`. Please "
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
CONTENT_POLICY_MESSAGE = (
    "Your request was rejected as a result of our safety system. Your prompt may contain text "
    "that is not allowed by our safety system."
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


def _supported(values: list[str]) -> str:
    quoted = [f"'{value}'" for value in values]
    return ", ".join(quoted[:-1]) + f", and {quoted[-1]}" if len(quoted) > 1 else quoted[0]


def render(size: str, image_format: str, transparent: bool, prompt: str) -> bytes:
    """A real image of ``size`` in ``image_format`` whose colours come from the prompt."""
    width, height = (int(part) for part in size.split("x"))
    digest = hashlib.sha256(prompt.encode()).digest()
    mode = "RGBA" if transparent and image_format != "jpeg" else "RGB"
    background = (*digest[:3], 0) if mode == "RGBA" else tuple(digest[:3])
    image = Image.new(mode, (width, height), background)
    ImageDraw.Draw(image).ellipse(
        (width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=tuple(digest[3:6])
    )
    buffer = io.BytesIO()
    image.save(buffer, format=PILLOW_FORMATS[image_format])
    return buffer.getvalue()


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
            self._send(handler, 400, problem, request_id)
            return
        model = body.get("model", "dall-e-2")
        gpt = model.startswith("gpt-image")
        if BLOCKED_WORD in body["prompt"]:
            if gpt:
                message = MODERATION_MESSAGE.format(request_id=request_id)
                refusal = {
                    "error": {
                        "message": message,
                        "type": "image_generation_user_error",
                        "param": None,
                        "code": "moderation_blocked",
                    }
                }
            else:
                refusal = error_body(CONTENT_POLICY_MESSAGE, None, "content_policy_violation")
            self._send(handler, 400, refusal, request_id)
            return
        if self.delay_s:
            time.sleep(self.delay_s)
        self._send(handler, 200, self._result(model, body), request_id)

    def _problem(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """OpenAI's 400 body for the first invalid parameter, or None."""
        model = body.get("model", "dall-e-2")
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
            if rule is None or name == "max_prompt":
                return error_body(f"Unknown parameter: '{name}'.", name, "unknown_parameter")
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

    def _result(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        prompt = body["prompt"]
        gpt = model.startswith("gpt-image")
        size = body.get("size", "1024x1024" if not gpt else "auto")
        rendered_size = "1024x1024" if size == "auto" else size
        output_format = body.get("output_format", "png") if gpt else "png"
        transparent = gpt and body.get("background") == "transparent"
        image = render(rendered_size, output_format, transparent, prompt)
        encoded = base64.b64encode(image).decode()
        created = int(time.time())
        if not gpt:
            item: dict[str, Any] = (
                {"b64_json": encoded}
                if body.get("response_format") == "b64_json"
                else {"url": f"https://oaidalleapiprodscus.blob.core.windows.net/private/{created}"}
            )
            if model == "dall-e-3":
                item["revised_prompt"] = f"A detailed image of {prompt}"
            return {"created": created, "data": [item]}
        quality = body.get("quality", "auto")
        rendered_quality = "high" if quality == "auto" else quality
        text_tokens = math.ceil(len(prompt) / 4)
        output_tokens = OUTPUT_TOKENS[rendered_quality][rendered_size]
        return {
            "created": created,
            "background": "transparent" if transparent else "opaque",
            "data": [{"b64_json": encoded}],
            "output_format": output_format,
            "quality": rendered_quality,
            "size": rendered_size,
            "usage": {
                "input_tokens": text_tokens,
                "input_tokens_details": {"image_tokens": 0, "text_tokens": text_tokens},
                "output_tokens": output_tokens,
                "total_tokens": text_tokens + output_tokens,
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
