"""A loopback fake of ComfyUI's HTTP and websocket API, written from ComfyUI's server.py and
execution.py and checked against the real ComfyUI v0.8.0 run on a CPU (2026-12-02, the
weightless workflow below; see docs/backends.md).

It serves ``POST /prompt`` (client-chosen ``prompt_id``), ``GET /queue``, ``POST /queue``
(``delete``), ``POST /interrupt`` (targeted by ``prompt_id``), ``GET /history/{id}``, ``GET
/view``, ``GET /object_info/{class}`` (``{}`` for an unknown class), ``GET /system_stats``,
``POST /upload/image`` and ``/ws?clientId=``. Validation is the real server's: an unknown
class in any node is a 400 ``invalid_prompt`` "Cannot execute because node X does not
exist." with empty ``extra_info`` and ``node_errors``; inputs are checked only on nodes that
lead to an output; failed validation is a 400 ``prompt_outputs_failed_validation`` whose
``details`` is empty unless the output node itself is at fault, the specifics in
``node_errors``; a prompt with some valid outputs is queued (200) with the others dropped
and listed in ``node_errors``. One executor runs the queue in order and sends the real event
sequence to the prompt's client: ``execution_start``, ``execution_cached``, then per node
``progress_state`` (running), ``executing``, ``progress`` per sampler step (each after its
``progress_state``) with binary preview frames in between, ``executed``, ``progress_state``
(finished); then ``execution_success`` (or ``execution_error`` / ``execution_interrupted``)
and ``executing`` with node null after the history entry is written. An interrupt takes
effect between nodes (and at a sampler's next step): a slow node runs to its end. SaveImage
writes real PNGs.

Tests script it with plain attributes (``step_delay_s``, ``node_delay_s``, ``hold_at_step``,
``fail_class``, ``drop_sockets_at_step``, ``restart_at_step``, ``prompt_replies``, ...) and
read ``received`` (and ``uploads``) to assert what the adapter sent.

``POST /upload/image`` follows server.py's ``image_upload`` and was checked by hand against
the real ComfyUI v0.8.0 on a CPU (2026-12-07, curl and a LoadImage -> ImageBlur -> SaveImage
prompt): multipart field ``image`` (a file), optional ``type`` (default ``input``),
``subfolder`` and ``overwrite`` (``true`` or ``1``); 200 ``{"name", "subfolder", "type"}``;
the same name with the same bytes is kept and answered as is, other bytes get ``name (1).png``
unless ``overwrite``; a missing file or a subfolder leaving the folder is a 400 with an empty
body, an unknown ``type`` a 500 (text/plain "Server got itself in trouble"), a body above
100 MB a 413. LoadImage lists the input folder's own files (not subfolders) in
``/object_info``; ``POST /prompt`` skips its list check (the node has VALIDATE_INPUTS) and
refuses a file that is not there with ``custom_validation_failed`` "image - Invalid image
file: NAME"; ``subfolder/name`` is accepted.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import io
import json
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web
from PIL import Image, ImageDraw
from PIL.PngImagePlugin import PngInfo

PREVIEW_IMAGE = 1
"""Binary event type of a preview frame (``BinaryEventTypes.PREVIEW_IMAGE``)."""
JPEG = 1
"""Image type inside a preview frame."""

DROP_BEFORE_QUEUE = "drop-before-queue"
"""``prompt_replies`` entry: close the connection without queueing or answering."""
DROP_AFTER_QUEUE = "drop-after-queue"
"""``prompt_replies`` entry: queue the prompt, then close without answering."""

FOREIGN_CLIENT = "someone-else"
"""client_id of prompts the tests queue as another user of the server."""

MAX_UPLOAD_BYTES = 100 * 1024 * 1024
"""ComfyUI's ``--max-upload-size`` default (100 MB): the app's ``client_max_size``."""
UPLOAD_TYPES = ("input", "temp", "output")

SAMPLER_NAMES = ["euler", "euler_ancestral", "heun", "dpmpp_2m", "uni_pc"]
SCHEDULERS = ["normal", "karras", "exponential", "simple", "ddim_uniform", "beta"]
INT_MAX = 0xFFFFFFFFFFFFFFFF


def _int(default: int, low: int, high: int, step: int = 1) -> list[Any]:
    return ["INT", {"default": default, "min": low, "max": high, "step": step}]


def _float(default: float, low: float, high: float) -> list[Any]:
    return ["FLOAT", {"default": default, "min": low, "max": high, "step": 0.01}]


def object_infos(
    models: dict[str, list[str]],
    combo_style: str = "legacy",
    input_files: list[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """``/object_info`` entries of the node classes the fake knows. Model lists are combos in
    the legacy style (``[[files...]]``) or, with ``combo_style="v3"``, as V3 nodes describe them
    (``["COMBO", {"options": [files...]}]``); LoadImage lists ``input_files`` (the images in
    the input folder, not in subfolders) the legacy way, as nodes.py does."""

    def files(folder: str) -> list[Any]:
        if combo_style == "v3":
            return ["COMBO", {"options": list(models[folder])}]
        return [list(models[folder])]

    def node(
        required: dict[str, Any], output: list[str], *, optional: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        inputs: dict[str, Any] = {"required": required}
        if optional:
            inputs["optional"] = optional
        return {
            "input": inputs,
            "input_order": {key: list(value) for key, value in inputs.items()},
            "output": output,
            "output_is_list": [False] * len(output),
            "output_name": output,
            "output_node": False,
            "category": "fake",
            "description": "",
            "python_module": "nodes",
        }

    infos = {
        "UNETLoader": node(
            {
                "unet_name": files("diffusion_models"),
                "weight_dtype": [["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"]],
            },
            ["MODEL"],
        ),
        "DualCLIPLoader": node(
            {
                "clip_name1": files("text_encoders"),
                "clip_name2": files("text_encoders"),
                "type": [["sdxl", "sd3", "flux", "hunyuan_video"]],
            },
            ["CLIP"],
            optional={"device": [["default", "cpu"], {"advanced": True}]},
        ),
        "VAELoader": node({"vae_name": files("vae")}, ["VAE"]),
        "CheckpointLoaderSimple": node(
            {"ckpt_name": files("checkpoints")}, ["MODEL", "CLIP", "VAE"]
        ),
        "CLIPTextEncode": node(
            {"text": ["STRING", {"multiline": True, "dynamicPrompts": True}], "clip": ["CLIP"]},
            ["CONDITIONING"],
        ),
        "FluxGuidance": node(
            {"conditioning": ["CONDITIONING"], "guidance": _float(3.5, 0.0, 100.0)},
            ["CONDITIONING"],
        ),
        "BasicGuider": node({"model": ["MODEL"], "conditioning": ["CONDITIONING"]}, ["GUIDER"]),
        "KSamplerSelect": node({"sampler_name": [SAMPLER_NAMES]}, ["SAMPLER"]),
        "BasicScheduler": node(
            {
                "model": ["MODEL"],
                "scheduler": [SCHEDULERS],
                "steps": _int(20, 1, 10000),
                "denoise": _float(1.0, 0.0, 1.0),
            },
            ["SIGMAS"],
        ),
        "RandomNoise": node({"noise_seed": _int(0, 0, INT_MAX)}, ["NOISE"]),
        "EmptySD3LatentImage": node(
            {
                "width": _int(1024, 16, 16384, 16),
                "height": _int(1024, 16, 16384, 16),
                "batch_size": _int(1, 1, 4096),
            },
            ["LATENT"],
        ),
        "EmptyLatentImage": node(
            {
                "width": _int(512, 16, 16384, 8),
                "height": _int(512, 16, 16384, 8),
                "batch_size": _int(1, 1, 4096),
            },
            ["LATENT"],
        ),
        "ModelSamplingFlux": node(
            {
                "model": ["MODEL"],
                "max_shift": _float(1.15, 0.0, 100.0),
                "base_shift": _float(0.5, 0.0, 100.0),
                "width": _int(1024, 16, 16384, 8),
                "height": _int(1024, 16, 16384, 8),
            },
            ["MODEL"],
        ),
        "SamplerCustomAdvanced": node(
            {
                "noise": ["NOISE"],
                "guider": ["GUIDER"],
                "sampler": ["SAMPLER"],
                "sigmas": ["SIGMAS"],
                "latent_image": ["LATENT"],
            },
            ["LATENT", "LATENT"],
        ),
        "KSampler": node(
            {
                "model": ["MODEL"],
                "seed": _int(0, 0, INT_MAX),
                "steps": _int(20, 1, 10000),
                "cfg": _float(8.0, 0.0, 100.0),
                "sampler_name": [SAMPLER_NAMES],
                "scheduler": [SCHEDULERS],
                "positive": ["CONDITIONING"],
                "negative": ["CONDITIONING"],
                "latent_image": ["LATENT"],
                "denoise": _float(1.0, 0.0, 1.0),
            },
            ["LATENT"],
        ),
        "VAEDecode": node({"samples": ["LATENT"], "vae": ["VAE"]}, ["IMAGE"]),
        "VAEEncode": node({"pixels": ["IMAGE"], "vae": ["VAE"]}, ["LATENT"]),
        "LoadImage": node(
            {"image": [sorted(input_files or []), {"image_upload": True}]}, ["IMAGE", "MASK"]
        ),
        "ImageScale": node(
            {
                "image": ["IMAGE"],
                "upscale_method": [["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]],
                "width": _int(512, 0, 16384),
                "height": _int(512, 0, 16384),
                "crop": [["disabled", "center"]],
            },
            ["IMAGE"],
        ),
        "SaveImage": node(
            {"images": ["IMAGE"], "filename_prefix": ["STRING", {"default": "ComfyUI"}]}, []
        ),
        "PreviewImage": node({"images": ["IMAGE"]}, []),
        # Nodes that need no model files (the weightless workflow the real server runs on a
        # CPU); inputs as v0.8.0's /object_info lists them.
        "EmptyImage": node(
            {
                "width": _int(512, 1, 16384),
                "height": _int(512, 1, 16384),
                "batch_size": _int(1, 1, 4096),
                "color": _int(0, 0, 16777215),
            },
            ["IMAGE"],
        ),
        "ImageAddNoise": node(
            {"image": ["IMAGE", {}], "seed": _int(0, 0, INT_MAX), "strength": _float(0.5, 0, 1)},
            ["IMAGE"],
        ),
        "ImageBlur": node(
            {"image": ["IMAGE", {}], "blur_radius": _int(1, 1, 31), "sigma": _float(1.0, 0.1, 10)},
            ["IMAGE"],
        ),
        "PrimitiveStringMultiline": node({"value": ["STRING", {"multiline": True}]}, ["STRING"]),
        "StringLength": node({"string": ["STRING", {"multiline": True}]}, ["INT"]),
    }
    for output_class in OUTPUT_CLASSES:
        infos[output_class]["output_node"] = True
    for name, info in infos.items():
        info["name"] = info["display_name"] = name
    return infos


DEFAULT_MODELS: dict[str, list[str]] = {
    "diffusion_models": ["flux1-dev.safetensors", "flux1-schnell.safetensors"],
    "text_encoders": ["clip_l.safetensors", "t5xxl_fp8_e4m3fn.safetensors"],
    "vae": ["ae.safetensors"],
    "checkpoints": ["flux1-dev-fp8.safetensors"],
}
CLASSIC_WORKFLOW: dict[str, Any] = {
    "3": {
        "class_type": "KSampler",
        "inputs": {
            "seed": 156680208700286,
            "steps": 20,
            "cfg": 8.0,
            "sampler_name": "euler",
            "scheduler": "normal",
            "denoise": 1.0,
            "model": ["4", 0],
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["5", 0],
        },
    },
    "4": {
        "class_type": "CheckpointLoaderSimple",
        "inputs": {"ckpt_name": "flux1-dev-fp8.safetensors"},
    },
    "5": {
        "class_type": "EmptyLatentImage",
        "inputs": {"width": 512, "height": 512, "batch_size": 1},
    },
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a bottle", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["4", 1]}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
}
"""ComfyUI's default workflow in API format (ids as "Export (API)" writes them)."""

WEIGHTLESS_WORKFLOW: dict[str, Any] = {
    "1": {"class_type": "PrimitiveStringMultiline", "inputs": {"value": "a red fox"}},
    "2": {"class_type": "StringLength", "inputs": {"string": ["1", 0]}},
    "3": {
        "class_type": "EmptyImage",
        "inputs": {"width": 512, "height": 512, "batch_size": 1, "color": ["2", 0]},
    },
    "4": {
        "class_type": "ImageAddNoise",
        "inputs": {"image": ["3", 0], "seed": 42, "strength": 0.5},
    },
    "10": {
        "class_type": "ImageBlur",
        "inputs": {"image": ["4", 0], "blur_radius": 31, "sigma": 10.0},
    },
    "11": {
        "class_type": "ImageBlur",
        "inputs": {"image": ["10", 0], "blur_radius": 31, "sigma": 10.0},
    },
    "9": {"class_type": "SaveImage", "inputs": {"images": ["11", 0], "filename_prefix": "imagen"}},
}
"""A workflow that needs no model files: the prompt's length colours an empty image, noise
from the seed, two blurs. The real ComfyUI v0.8.0 runs it on a CPU in seconds (the fake was
checked against it that way, 2026-12-02)."""
WEIGHTLESS_INPUTS = {
    "prompt": "1.value",
    "seed": "4.seed",
    "width": "3.width",
    "height": "3.height",
    "filename_prefix": "9.filename_prefix",
}
"""Where the request goes in :data:`WEIGHTLESS_WORKFLOW` (the ``inputs`` of its block)."""

SAMPLER_CLASSES = ("SamplerCustomAdvanced", "KSampler")
CUSTOM_VALIDATED = {"LoadImage": ("image",)}
"""Inputs a node checks itself (VALIDATE_INPUTS): the server skips their list check."""
OUTPUT_CLASSES = ("SaveImage", "PreviewImage")
LATENT_CLASSES = ("EmptySD3LatentImage", "EmptyLatentImage", "EmptyImage")


@dataclass(frozen=True)
class Received:
    """One request as the fake received it (``WS`` for websocket connects)."""

    method: str
    path: str
    query: dict[str, str]
    body: Any


@dataclass
class Reply:
    """A canned response returned instead of the normal one."""

    status: int
    body: dict[str, Any] | str


@dataclass
class _Item:
    number: float
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs: list[str]

    def as_list(self) -> list[Any]:
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]


@dataclass
class _Run:
    item: _Item
    interrupted: bool = False
    released: asyncio.Event = field(default_factory=asyncio.Event)


class _PromptInterruptedError(Exception):
    pass


class _ServerRestartedError(Exception):
    pass


class FakeComfyUI:
    """The fake's state, its scripting knobs and the requests it received."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.models = {key: list(value) for key, value in DEFAULT_MODELS.items()}
        self.version = "0.3.43"
        self.combo_style = "legacy"
        """How ``/object_info`` lists model files: "legacy" or "v3" (COMBO with options)."""
        self.step_delay_s = 0.0
        """Seconds per sampler step, timed from the start of sampling: a prompt samples for
        steps x step_delay_s however long sending each step's messages takes."""
        self.node_delay_s: dict[str, float] = {}
        """Seconds a node of a class (other than a sampler) takes. Like ComfyUI, such a node
        has no progress bar and runs to its end when interrupted: the interrupt takes effect
        before the next node."""
        self.preview_frames = True
        self.accept_sockets = True
        """Refuse websocket handshakes (503) while False: the adapter must poll /history."""
        """Send a binary JPEG preview frame after each step (the adapter must skip them)."""
        self.paused = False
        """Leave queued prompts pending (nothing starts) while True."""
        self.hold_at_step: int | None = None
        """Running prompts stop at this step until ``release()`` or an interrupt."""
        self.fail_class: str | None = None
        """Fail the first node of this class with ``fail_exception`` (execution_error)."""
        self.fail_exception = ("RuntimeError", "mat1 and mat2 shapes cannot be multiplied")
        self.drop_sockets_at_step: int | None = None
        """Close every websocket at this step; the prompt goes on."""
        self.restart_at_step: int | None = None
        """At this step lose the queue, the running prompt and the history, as a restart does."""
        self.prompt_replies: list[Reply | str] = []
        self.history_replies: list[Reply] = []
        self.held = threading.Event()
        """Set while a prompt waits at ``hold_at_step``."""
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._lock = threading.RLock()
        self._queue: list[_Item] = []
        self._running: _Run | None = None
        self._history: dict[str, dict[str, Any]] = {}
        self._files: dict[tuple[str, str, str], bytes] = {}
        self.uploads: list[dict[str, Any]] = []
        """Each ``POST /upload/image`` as received: filename, data, content_type and the
        form's type, subfolder and overwrite (None when absent)."""
        self._sockets: dict[str, web.WebSocketResponse] = {}
        self._counter = 0
        self._number = 0
        self._last_prompt: dict[str, Any] = {}
        self._wake: asyncio.Event | None = None
        self._restarting = False
        self.executor_task: asyncio.Task[None] | None = None

    # -- test helpers ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self, method: str | None = None, path: str | None = None) -> list[Received]:
        """Received requests, optionally filtered by method and exact path."""
        with self._lock:
            return [
                item
                for item in self.received
                if (method is None or item.method == method) and (path is None or item.path == path)
            ]

    def submitted(self) -> list[dict[str, Any]]:
        """Bodies of every ``POST /prompt``."""
        return [item.body for item in self.requests("POST", "/prompt")]

    def history_ids(self) -> list[str]:
        with self._lock:
            return list(self._history)

    def history_entry(self, prompt_id: str) -> dict[str, Any] | None:
        with self._lock:
            entry = self._history.get(prompt_id)
            return copy.deepcopy(entry) if entry else None

    def running_id(self) -> str | None:
        with self._lock:
            return self._running.item.prompt_id if self._running else None

    def pending_ids(self) -> list[str]:
        with self._lock:
            return [item.prompt_id for item in sorted(self._queue, key=lambda i: i.number)]

    def input_files(self) -> list[str]:
        """Files in the input folder itself (what LoadImage lists)."""
        with self._lock:
            return sorted(name for kind, sub, name in self._files if kind == "input" and not sub)

    def file(self, kind: str, name: str, subfolder: str = "") -> bytes | None:
        """A file the server holds (``input``, ``output``, ``temp``), or None."""
        with self._lock:
            return self._files.get((kind, subfolder, name))

    def release(self) -> None:
        """Let a prompt held at ``hold_at_step`` go on."""
        self.hold_at_step = None
        self._call(self._release)

    def resume(self) -> None:
        """Start queued prompts again after ``paused``."""
        self.paused = False
        self._call(self._kick)

    def queue_foreign(self, graph: dict[str, Any]) -> str:
        """Queue a prompt of another client, as someone else using the GPU box."""
        prompt_id = str(uuid.uuid4())
        self._call(self._enqueue, graph, prompt_id, {"client_id": FOREIGN_CLIENT}, None)
        return prompt_id

    def restart(self) -> None:
        """Lose everything in memory and drop every socket, as a ComfyUI restart does."""
        self._call(self._restart)

    def shut_down(self) -> None:
        """Stop answering for good: sockets and connections close, new ones are refused."""
        self._call(self._shut_down)

    async def _shut_down(self) -> None:
        if self._runner is None:
            return
        runner, self._runner = self._runner, None
        for ws in list(self._sockets.values()):
            await ws.close()
        await runner.cleanup()

    def _call(self, function: Any, *args: Any) -> Any:
        assert self._loop is not None

        async def run() -> Any:
            result = function(*args)
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=5)

    # -- app ------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._record], client_max_size=MAX_UPLOAD_BYTES)
        app.add_routes(
            [
                web.get("/ws", self._websocket),
                web.post("/prompt", self._post_prompt),
                web.get("/queue", self._get_queue),
                web.post("/queue", self._post_queue),
                web.post("/interrupt", self._post_interrupt),
                web.get("/history/{prompt_id}", self._get_history),
                web.get("/view", self._view),
                web.get("/object_info/{node_class}", self._object_info),
                web.get("/system_stats", self._system_stats),
                web.post("/upload/image", self._upload_image),
            ]
        )
        return app

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body: Any = None
        if request.content_type.startswith("multipart/"):
            body = "multipart (see uploads)"
        elif request.method == "POST" and request.can_read_body:
            raw = await request.read()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw
        method = "WS" if request.path == "/ws" else request.method
        with self._lock:
            self.received.append(Received(method, request.path, dict(request.query), body))
        return await handler(request)

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if not self.accept_sockets:
            return web.Response(status=503, text="503: Service Unavailable")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.query.get("clientId", "") or uuid.uuid4().hex
        self._sockets[sid] = ws
        try:
            await self._send("status", {"status": self._queue_info(), "sid": sid}, sid)
            async for message in ws:
                if message.type == WSMsgType.ERROR:
                    break
        finally:
            if self._sockets.get(sid) is ws:
                self._sockets.pop(sid, None)
        return ws

    async def _post_prompt(self, request: web.Request) -> web.StreamResponse:
        reply = self.prompt_replies.pop(0) if self.prompt_replies else None
        if isinstance(reply, Reply):
            return _respond(reply)
        if reply == DROP_BEFORE_QUEUE:
            return await _drop(request)
        data = await request.json()
        if "prompt" not in data:
            error = {
                "type": "no_prompt",
                "message": "No prompt provided",
                "details": "No prompt provided",
                "extra_info": {},
            }
            return web.json_response({"error": error, "node_errors": {}}, status=400)
        prompt_id = str(data.get("prompt_id") or uuid.uuid4())
        valid, error, outputs, node_errors = self._validate(data["prompt"])
        if not valid:
            return web.json_response({"error": error, "node_errors": node_errors}, status=400)
        extra = dict(data.get("extra_data") or {})
        if "client_id" in data:
            extra["client_id"] = data["client_id"]
        number = self._enqueue(data["prompt"], prompt_id, extra, outputs)
        if reply == DROP_AFTER_QUEUE:
            return await _drop(request)
        return web.json_response(
            {"prompt_id": prompt_id, "number": number, "node_errors": node_errors}
        )

    async def _get_queue(self, request: web.Request) -> web.StreamResponse:
        running = [self._running.item.as_list()] if self._running else []
        pending = [item.as_list() for item in sorted(self._queue, key=lambda i: i.number)]
        return web.json_response({"queue_running": running, "queue_pending": pending})

    async def _post_queue(self, request: web.Request) -> web.StreamResponse:
        data = await request.json()
        if data.get("clear"):
            self._queue.clear()
        for prompt_id in data.get("delete") or []:
            self._queue = [item for item in self._queue if item.prompt_id != prompt_id]
        await self._queue_updated()
        return web.Response(status=200)

    async def _post_interrupt(self, request: web.Request) -> web.StreamResponse:
        try:
            data = await request.json()
        except ValueError:
            data = {}
        prompt_id = data.get("prompt_id")
        run = self._running
        if run is not None and (not prompt_id or run.item.prompt_id == prompt_id):
            run.interrupted = True
            run.released.set()
        return web.Response(status=200)

    async def _get_history(self, request: web.Request) -> web.StreamResponse:
        if self.history_replies:
            return _respond(self.history_replies.pop(0))
        prompt_id = request.match_info["prompt_id"]
        entry = self._history.get(prompt_id)
        return web.json_response({prompt_id: entry} if entry else {})

    async def _view(self, request: web.Request) -> web.StreamResponse:
        filename = request.query.get("filename", "")
        if not filename or filename.startswith("/") or ".." in filename:
            return web.Response(status=400)
        key = (request.query.get("type", "output"), request.query.get("subfolder", ""), filename)
        data = self._files.get(key)
        if data is None:
            return web.Response(status=404)
        return web.Response(
            body=data,
            content_type="image/png",
            headers={"Content-Disposition": f'filename="{filename}"'},
        )

    async def _upload_image(self, request: web.Request) -> web.StreamResponse:
        """server.py ``image_upload``: dedupe by content, ``name (i).ext`` for other bytes."""
        post = await request.post()
        image = post.get("image")
        if not isinstance(image, web.FileField):
            status = 500 if isinstance(image, str) else 400
            return web.Response(
                status=status, text="Server got itself in trouble" if status == 500 else None
            )
        data = image.file.read()
        form = {key: post.get(key) for key in ("type", "subfolder", "overwrite")}
        with self._lock:
            self.uploads.append(
                {
                    "filename": image.filename,
                    "data": data,
                    "content_type": image.content_type,
                    **form,
                }
            )
        kind = str(form["type"] or "input")
        if kind not in UPLOAD_TYPES:
            return web.Response(status=500, text="Server got itself in trouble")
        filename = image.filename
        subfolder = str(form["subfolder"] or "")
        if not filename:
            return web.Response(status=400)
        parts = [part for part in f"{subfolder}/{filename}".split("/") if part]
        if any(part == ".." for part in parts) or filename.startswith("/"):
            return web.Response(status=400)
        stem, dot, ending = filename.rpartition(".")
        if not dot:
            stem, ending = filename, ""
        with self._lock:
            if form["overwrite"] not in ("true", "1"):
                counter = 1
                while (kind, subfolder, filename) in self._files:
                    if self._files[(kind, subfolder, filename)] == data:
                        break
                    filename = f"{stem} ({counter}){dot}{ending}"
                    counter += 1
            self._files[(kind, subfolder, filename)] = data
        return web.json_response({"name": filename, "subfolder": subfolder, "type": kind})

    async def _object_info(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["node_class"]
        info = object_infos(self.models, self.combo_style, self.input_files()).get(name)
        return web.json_response({name: info} if info else {})

    async def _system_stats(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                "system": {
                    "os": "posix",
                    "ram_total": 67_000_000_000,
                    "ram_free": 40_000_000_000,
                    "comfyui_version": self.version,
                    "python_version": "3.12.3 (main)",
                    "pytorch_version": "2.7.1+cu128",
                    "embedded_python": False,
                    "argv": ["main.py", "--listen", "0.0.0.0"],
                },
                "devices": [
                    {
                        "name": "cuda:0 NVIDIA GeForce RTX 4070 Ti SUPER : cudaMallocAsync",
                        "type": "cuda",
                        "index": 0,
                        "vram_total": 17_170_956_288,
                        "vram_free": 12_884_901_888,
                        "torch_vram_total": 0,
                        "torch_vram_free": 0,
                    }
                ],
            }
        )

    # -- validation (execution.validate_prompt) ------------------------------------------------

    def _validate(
        self, prompt: Any
    ) -> tuple[bool, dict[str, Any] | None, list[str], dict[str, Any]]:
        """execution.validate_prompt as v0.8.0 does it: every node's class must exist; inputs
        are checked only for nodes that lead to an output; outputs whose nodes have errors
        are dropped, and the prompt is refused only when none is left."""
        infos = object_infos(self.models, input_files=self.input_files())
        if not isinstance(prompt, dict):
            return False, _prompt_error("invalid_prompt", "Invalid prompt", ""), [], {}
        outputs = []
        for node_id, node in prompt.items():
            class_type = node.get("class_type") if isinstance(node, dict) else None
            if class_type is None:
                error = _prompt_error(
                    "invalid_prompt",
                    "Cannot execute because a node is missing the class_type property.",
                    f"Node ID '#{node_id}'",
                )
                return False, error, [], {}
            if class_type not in infos:
                error = _prompt_error(
                    "invalid_prompt",
                    f"Cannot execute because node {class_type} does not exist.",
                    f"Node ID '#{node_id}'",
                )
                return False, error, [], {}
            if infos[class_type]["output_node"]:
                outputs.append(node_id)
        if not outputs:
            return False, _prompt_error("prompt_no_outputs", "Prompt has no outputs", ""), [], {}
        node_errors: dict[str, Any] = {}
        valid_outputs = []
        output_reasons = []
        for output in outputs:
            failed = False
            for node_id in _execution_order(prompt, [output]):
                node = prompt[node_id]
                errors = _input_errors(
                    prompt,
                    node["inputs"],
                    infos[node["class_type"]]["input"],
                    custom=CUSTOM_VALIDATED.get(node["class_type"], ()),
                ) + self._custom_errors(node)
                if not errors:
                    continue
                failed = True
                entry = node_errors.setdefault(
                    node_id,
                    {"errors": errors, "dependent_outputs": [], "class_type": node["class_type"]},
                )
                entry["dependent_outputs"].append(output)
                if node_id == output:
                    output_reasons.extend(f"{e['message']}: {e['details']}" for e in errors)
            if not failed:
                valid_outputs.append(output)
        if not valid_outputs:
            error = _prompt_error(
                "prompt_outputs_failed_validation",
                "Prompt outputs failed validation",
                "\n".join(output_reasons),
            )
            return False, error, [], node_errors
        return True, None, valid_outputs, node_errors

    def _custom_errors(self, node: dict[str, Any]) -> list[dict[str, Any]]:
        """LoadImage's VALIDATE_INPUTS: the file must be in the input folder (``sub/name``
        reaches a subfolder)."""
        if node["class_type"] != "LoadImage":
            return []
        value = node["inputs"].get("image")
        if isinstance(value, str) and self._input_file(value) is not None:
            return []
        return [
            {
                "type": "custom_validation_failed",
                "message": "Custom validation failed for node",
                "details": f"image - Invalid image file: {value}",
                "extra_info": {"input_name": "image"},
            }
        ]

    def _input_file(self, value: str) -> bytes | None:
        subfolder, _, name = value.removesuffix(" [input]").rpartition("/")
        with self._lock:
            return self._files.get(("input", subfolder, name))

    # -- queue and executor ----------------------------------------------------------------

    def _enqueue(
        self,
        prompt: dict[str, Any],
        prompt_id: str,
        extra: dict[str, Any],
        outputs: list[str] | None,
    ) -> int:
        number = self._number
        self._number += 1
        if outputs is None:
            outputs = [key for key, node in prompt.items() if node["class_type"] in OUTPUT_CLASSES]
        with self._lock:
            self._queue.append(_Item(number, prompt_id, prompt, extra, outputs))
        self._kick()
        asyncio.get_running_loop().create_task(self._queue_updated())
        return number

    def _kick(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _release(self) -> None:
        if self._running is not None:
            self._running.released.set()

    def _queue_info(self) -> dict[str, Any]:
        remaining = len(self._queue) + (1 if self._running else 0)
        return {"exec_info": {"queue_remaining": remaining}}

    async def _queue_updated(self) -> None:
        await self._broadcast("status", {"status": self._queue_info()})

    async def _send(self, event: str, data: dict[str, Any], sid: str | None) -> None:
        ws = self._sockets.get(sid) if sid else None
        if ws is not None and not ws.closed:
            with suppress(ConnectionError):
                await ws.send_str(json.dumps({"type": event, "data": data}))

    async def _send_bytes(self, data: bytes, sid: str | None) -> None:
        ws = self._sockets.get(sid) if sid else None
        if ws is not None and not ws.closed:
            with suppress(ConnectionError):
                await ws.send_bytes(data)

    async def _broadcast(self, event: str, data: dict[str, Any]) -> None:
        for sid in list(self._sockets):
            await self._send(event, data, sid)

    async def _restart(self) -> None:
        with self._lock:
            self._queue.clear()
            self._history.clear()
            if self._running is not None:
                self._running.released.set()
        self._restarting = True
        for ws in list(self._sockets.values()):
            await ws.close()
        self._sockets.clear()

    async def executor(self) -> None:
        """ComfyUI's prompt_worker: one prompt at a time, lowest number first."""
        self._wake = asyncio.Event()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue and not self.paused:
                with self._lock:
                    item = min(self._queue, key=lambda i: i.number)
                    self._queue.remove(item)
                    self._running = _Run(item)
                    self._restarting = False
                await self._queue_updated()
                await self._execute(self._running)
                with self._lock:
                    self._running = None
                await self._queue_updated()

    async def _execute(self, run: _Run) -> None:
        item = run.item
        sid = item.extra_data.get("client_id")
        messages: list[list[Any]] = []
        executed: list[str] = []

        async def message(event: str, data: dict[str, Any], broadcast: bool = False) -> None:
            data = {**data, "timestamp": int(time.time() * 1000)}
            messages.append([event, data])
            if broadcast:
                await self._broadcast(event, data)
            else:
                await self._send(event, data, sid)

        await message("execution_start", {"prompt_id": item.prompt_id})
        order = _execution_order(item.prompt, item.outputs)
        cached = [
            node_id
            for node_id in order
            if _is_loader(item.prompt[node_id])
            and self._last_prompt.get(node_id) == item.prompt[node_id]
        ]
        await message("execution_cached", {"nodes": cached, "prompt_id": item.prompt_id})
        outputs: dict[str, Any] = {}
        states: dict[str, dict[str, Any]] = {}
        node_id = ""
        try:
            for node_id in order:
                if node_id in cached:
                    continue
                node = item.prompt[node_id]
                await self._progress_state(run, states, node_id, 0.0, 1.0, "running", sid)
                await self._send(
                    "executing",
                    {"node": node_id, "display_node": node_id, "prompt_id": item.prompt_id},
                    sid,
                )
                if run.interrupted:
                    raise _PromptInterruptedError
                if node["class_type"] == self.fail_class:
                    exception_type, exception_message = self.fail_exception
                    await message(
                        "execution_error",
                        {
                            "prompt_id": item.prompt_id,
                            "node_id": node_id,
                            "node_type": node["class_type"],
                            "executed": list(executed),
                            "exception_message": exception_message,
                            "exception_type": exception_type,
                            "traceback": ['  File "execution.py", line 496, in execute\n'],
                            "current_inputs": {},
                            "current_outputs": [],
                        },
                    )
                    self._finish(item, outputs, messages, success=False)
                    return
                if node["class_type"] in SAMPLER_CLASSES:
                    steps = _steps(item.prompt, node_id)
                    await self._sample(run, states, node_id, steps, sid)
                elif node["class_type"] in self.node_delay_s:
                    await asyncio.sleep(self.node_delay_s[node["class_type"]])
                if node["class_type"] in OUTPUT_CLASSES:
                    images = self._save(item, node_id)
                    outputs[node_id] = {"images": images}
                    await self._send(
                        "executed",
                        {
                            "node": node_id,
                            "display_node": node_id,
                            "output": {"images": images},
                            "prompt_id": item.prompt_id,
                        },
                        sid,
                    )
                done = states[node_id]["max"]
                await self._progress_state(run, states, node_id, done, done, "finished", sid)
                executed.append(node_id)
        except _PromptInterruptedError:
            await message(
                "execution_interrupted",
                {
                    "prompt_id": item.prompt_id,
                    "node_id": node_id,
                    "node_type": item.prompt[node_id]["class_type"],
                    "executed": list(executed),
                },
                broadcast=True,
            )
            self._finish(item, outputs, messages, success=False)
            return
        except _ServerRestartedError:
            return
        self._last_prompt = copy.deepcopy(item.prompt)
        await message("execution_success", {"prompt_id": item.prompt_id})
        self._finish(item, outputs, messages, success=True)
        await self._send("executing", {"node": None, "prompt_id": item.prompt_id}, sid)

    async def _progress_state(
        self,
        run: _Run,
        states: dict[str, dict[str, Any]],
        node_id: str,
        value: float,
        most: float,
        state: str,
        sid: str | None,
    ) -> None:
        """``progress_state``: every node started so far, with value, max and state."""
        prompt_id = run.item.prompt_id
        states[node_id] = {
            "value": value,
            "max": most,
            "state": state,
            "node_id": node_id,
            "prompt_id": prompt_id,
            "display_node_id": node_id,
            "parent_node_id": None,
            "real_node_id": node_id,
        }
        nodes = {key: dict(entry) for key, entry in states.items()}
        await self._send("progress_state", {"prompt_id": prompt_id, "nodes": nodes}, sid)

    async def _sample(
        self,
        run: _Run,
        states: dict[str, dict[str, Any]],
        node_id: str,
        steps: int,
        sid: str | None,
    ) -> None:
        prompt_id = run.item.prompt_id
        loop = asyncio.get_running_loop()
        started = loop.time()
        for step in range(1, steps + 1):
            if self.restart_at_step == step:
                self.restart_at_step = None
                await self._restart()
            if self._restarting:
                raise _ServerRestartedError
            if run.interrupted:
                raise _PromptInterruptedError
            if self.drop_sockets_at_step == step:
                self.drop_sockets_at_step = None
                for ws in list(self._sockets.values()):
                    await ws.close()
            if self.hold_at_step == step:
                self.held.set()
                await run.released.wait()
                self.held.clear()
                if self._restarting:
                    raise _ServerRestartedError
                if run.interrupted:
                    raise _PromptInterruptedError
                started = loop.time() - (step - 1) * self.step_delay_s
            if self.step_delay_s:
                await asyncio.sleep(max(0.0, started + step * self.step_delay_s - loop.time()))
            await self._progress_state(run, states, node_id, step, steps, "running", sid)
            await self._send(
                "progress",
                {"value": step, "max": steps, "prompt_id": prompt_id, "node": node_id},
                sid,
            )
            if self.preview_frames:
                frame = struct.pack(">I", PREVIEW_IMAGE) + struct.pack(">I", JPEG) + _preview()
                await self._send_bytes(frame, sid)

    def _save(self, item: _Item, node_id: str) -> list[dict[str, str]]:
        """One file per image of the batch, as SaveImage writes them (counter per file)."""
        prefix = str(item.prompt[node_id]["inputs"].get("filename_prefix", "ComfyUI"))
        subfolder, _, name = prefix.rpartition("/")
        saved = []
        for _ in range(_batch_size(item.prompt)):
            self._counter += 1
            filename = f"{name}_{self._counter:05}_.png"
            loaded = [
                self._input_file(str(node["inputs"].get("image"))) or b""
                for node in item.prompt.values()
                if node["class_type"] == "LoadImage"
            ]
            self._files[("output", subfolder, filename)] = _render(item.prompt, loaded)
            saved.append({"filename": filename, "subfolder": subfolder, "type": "output"})
        return saved

    def _finish(
        self,
        item: _Item,
        outputs: dict[str, Any],
        messages: list[list[Any]],
        *,
        success: bool,
    ) -> None:
        with self._lock:
            self._history[item.prompt_id] = {
                "prompt": item.as_list(),
                "outputs": outputs,
                "status": {
                    "status_str": "success" if success else "error",
                    "completed": success,
                    "messages": messages,
                },
                "meta": {
                    node_id: {
                        "node_id": node_id,
                        "display_node": node_id,
                        "parent_node": None,
                        "real_node_id": node_id,
                    }
                    for node_id in outputs
                },
            }


def _prompt_error(kind: str, message: str, details: str) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": {}}


def _input_errors(
    prompt: dict[str, Any],
    inputs: dict[str, Any],
    spec: dict[str, Any],
    custom: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """ComfyUI's validate_inputs: missing required inputs, links to absent nodes, and for
    literal values type, min/max and combo lists (optional inputs too, when given); inputs
    in ``custom`` are left to the node's own VALIDATE_INPUTS."""
    errors = []
    required = spec.get("required") or {}
    for name, info in {**required, **(spec.get("optional") or {})}.items():
        if name not in inputs and name not in required:
            continue
        if name not in inputs:
            errors.append(
                {
                    "type": "required_input_missing",
                    "message": "Required input is missing",
                    "details": name,
                    "extra_info": {"input_name": name},
                }
            )
            continue
        value = inputs[name]
        if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
            if value[0] not in prompt:
                errors.append(
                    {
                        "type": "input_link_missing_node",
                        "message": "Linked node not found",
                        "details": f"{name}: node {value[0]} is not in the prompt",
                        "extra_info": {"input_name": name, "linked_node": value},
                    }
                )
            continue
        if name in custom:
            continue
        kind = info[0]
        options = info[1] if len(info) > 1 and isinstance(info[1], dict) else {}
        if kind in ("INT", "FLOAT"):
            try:
                number = int(value) if kind == "INT" else float(value)
            except (TypeError, ValueError) as error:
                errors.append(
                    {
                        "type": "invalid_input_type",
                        "message": f"Failed to convert an input value to a {kind} value",
                        "details": f"{name}, {value}, {error}",
                        "extra_info": {
                            "input_name": name,
                            "input_config": info,
                            "received_value": value,
                            "exception_message": str(error),
                        },
                    }
                )
                continue
            if "min" in options and number < options["min"]:
                errors.append(_range_error(name, info, number, "smaller than min", options["min"]))
            elif "max" in options and number > options["max"]:
                errors.append(_range_error(name, info, number, "bigger than max", options["max"]))
            continue
        choices = kind if isinstance(kind, list) else options.get("options")
        if isinstance(choices, list) and value not in choices:
            listing = f"(list of length {len(choices)})" if len(choices) > 20 else str(choices)
            errors.append(
                {
                    "type": "value_not_in_list",
                    "message": "Value not in list",
                    "details": f"{name}: '{value}' not in {listing}",
                    "extra_info": {
                        "input_name": name,
                        "input_config": info if len(choices) <= 20 else None,
                        "received_value": value,
                    },
                }
            )
    return errors


def _range_error(name: str, info: Any, value: float, what: str, limit: float) -> dict[str, Any]:
    kind = "value_smaller_than_min" if what.startswith("smaller") else "value_bigger_than_max"
    return {
        "type": kind,
        "message": f"Value {value} {what} of {limit}",
        "details": name,
        "extra_info": {"input_name": name, "input_config": info, "received_value": value},
    }


def _execution_order(prompt: dict[str, Any], outputs: list[str]) -> list[str]:
    order: list[str] = []

    def visit(node_id: str) -> None:
        if node_id in order or node_id not in prompt:
            return
        for value in prompt[node_id]["inputs"].values():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                visit(value[0])
        order.append(node_id)

    for node_id in outputs:
        visit(node_id)
    return order


def _is_loader(node: dict[str, Any]) -> bool:
    return not any(isinstance(value, list) and len(value) == 2 for value in node["inputs"].values())


def _steps(prompt: dict[str, Any], sampler_id: str) -> int:
    inputs = prompt[sampler_id]["inputs"]
    if "steps" in inputs:
        return int(inputs["steps"])
    sigmas = inputs.get("sigmas")
    if isinstance(sigmas, list):
        return int(prompt[sigmas[0]]["inputs"].get("steps", 20))
    return 20


def _batch_size(prompt: dict[str, Any]) -> int:
    """Images the prompt's latent (or empty image) source makes at once."""
    for node in prompt.values():
        if node["class_type"] in LATENT_CLASSES:
            return int(node["inputs"].get("batch_size", 1))
    return 1


def _preview() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 90, 90)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _render(prompt: dict[str, Any], loaded: list[bytes] | None = None) -> bytes:
    """A PNG of the latent's (or ImageScale's) size, coloured by the prompt text, seed and
    the bytes of the images LoadImage read, with the graph in a ``prompt`` text chunk like
    ComfyUI's SaveImage."""
    width = height = 1024
    for node in prompt.values():
        if node["class_type"] == "ImageScale":
            width, height = int(node["inputs"]["width"]), int(node["inputs"]["height"])
        if node["class_type"] in LATENT_CLASSES:
            multiple = 1 if node["class_type"] == "EmptyImage" else 8
            width = int(node["inputs"]["width"]) // multiple * multiple
            height = int(node["inputs"]["height"]) // multiple * multiple
    texts = [
        str(n["inputs"].get(key))
        for n in prompt.values()
        for key in ("text", "value")
        if isinstance(n["inputs"].get(key), str)
    ]
    seeds = [
        str(n["inputs"].get(key))
        for n in prompt.values()
        for key in ("noise_seed", "seed")
        if key in n["inputs"]
    ]
    sources = [hashlib.sha256(data).hexdigest() for data in loaded or []]
    digest = hashlib.sha256("|".join(texts + seeds + sources).encode()).digest()
    image = Image.new("RGB", (width, height), tuple(digest[:3]))
    ImageDraw.Draw(image).rectangle(
        (width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=tuple(digest[3:6])
    )
    info = PngInfo()
    info.add_text("prompt", json.dumps(prompt))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, compress_level=1)
    return buffer.getvalue()


def _respond(reply: Reply) -> web.Response:
    if isinstance(reply.body, str):
        return web.Response(status=reply.status, text=reply.body)
    return web.json_response(reply.body, status=reply.status)


async def _drop(request: web.Request) -> web.StreamResponse:
    """Close the connection without an answer (a response lost on the way back)."""
    transport = request.transport
    if transport is not None:
        transport.abort()
    raise asyncio.CancelledError


@contextmanager
def running_fake_comfyui(port: int = 0) -> Iterator[FakeComfyUI]:
    """Serve a :class:`FakeComfyUI` on loopback ``port`` (0: an ephemeral one) for the
    block."""
    fake = FakeComfyUI()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    runner = web.AppRunner(fake.app(), handle_signals=False, access_log=None, shutdown_timeout=0.1)

    async def start() -> None:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        fake.port = runner.addresses[0][1]
        fake.executor_task = loop.create_task(fake.executor())
        started.set()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        loop.run_forever()

    fake._loop = loop
    fake._runner = runner
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    started.wait(timeout=10)
    try:
        yield fake
    finally:
        fake.hold_at_step = None
        asyncio.run_coroutine_threadsafe(_stop(fake), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


async def _stop(fake: FakeComfyUI) -> None:
    await fake._shut_down()
    for task in asyncio.all_tasks():
        if task is not asyncio.current_task():
            task.cancel()
