"""HTTP and websocket calls to one ComfyUI server, with every failure classified.

Paths and shapes follow ComfyUI's ``server.py``: ``POST /prompt`` (``prompt``, ``client_id``,
``prompt_id``) answers ``{"prompt_id", "number", "node_errors"}`` or 400 with ``error`` and
``node_errors``; ``GET /queue`` lists ``queue_running`` and ``queue_pending`` items
``[number, prompt_id, prompt, extra_data, outputs]``; ``GET /history/{id}`` answers ``{}`` or
``{id: entry}``; ``/view`` serves output files; ``/ws?clientId=`` streams events.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.exceptions import InvalidHandshake, InvalidURI
from websockets.sync.client import ClientConnection, connect

from imagen_pipeline.backends.comfyui.validation import (
    combo_options,
    input_spec,
    unknown_class,
    value_problem,
)
from imagen_pipeline.backends.comfyui.workflow import ModelFile
from imagen_pipeline.backends.http_transport import (
    LOST_RESPONSE_ERRORS,
    USER_AGENT,
    status_error,
    tls_context,
)
from imagen_pipeline.errors import (
    BackendError,
    PermanentBackendError,
    TransientBackendError,
    UnreachableBackendError,
)

WEBSOCKET_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""Largest websocket frame accepted (unencoded preview images can be large)."""
RETRYABLE_STATUSES = frozenset({408, 429})
"""4xx answers worth a retry (every 5xx is)."""


class Where(enum.Enum):
    """Where a prompt is on the server."""

    RUNNING = "running"
    PENDING = "pending"
    FINISHED = "finished"
    MISSING = "missing"


@dataclass(frozen=True)
class Location:
    """A prompt's place on the server, with its history entry once finished."""

    where: Where
    entry: dict[str, Any] | None = None


@dataclass(frozen=True)
class Submitted:
    """A prompt the server accepted (or already had), and whether the response was lost."""

    prompt_id: str
    number: float | None
    recovered: bool
    node_errors: dict[str, Any] = field(default_factory=dict)
    """Nodes that failed validation in a prompt the server queued anyway: it runs the outputs
    that do not depend on them and drops the others."""

    def dropped_outputs(self) -> set[str]:
        """Output nodes the server will not run."""
        return {
            str(output)
            for info in self.node_errors.values()
            if isinstance(info, dict)
            for output in info.get("dependent_outputs") or []
        }


def describe_prompt_error(body: Any) -> str:
    """A 400 body of ``POST /prompt`` on one line, naming node id, class and input."""
    if not isinstance(body, dict):
        return "no details"
    error = body.get("error")
    if isinstance(error, dict):
        head = str(error.get("message") or error.get("type") or "invalid prompt")
        details = error.get("details")
        node_errors = body.get("node_errors")
        if details and not node_errors:
            head = f"{head} ({' '.join(str(details).split())})"
    else:
        head = str(error or "invalid prompt")
    parts = []
    node_errors = body.get("node_errors")
    if isinstance(node_errors, dict):
        for node_id, info in node_errors.items():
            if not isinstance(info, dict):
                continue
            class_type = info.get("class_type", "?")
            for item in info.get("errors") or []:
                if not isinstance(item, dict):
                    continue
                input_name = (item.get("extra_info") or {}).get("input_name")
                where = f"node {node_id} ({class_type})"
                if input_name:
                    where += f" input {input_name!r}"
                text = str(item.get("message") or item.get("type") or "error")
                if item.get("details"):
                    text += f": {item['details']}"
                parts.append(f"{where}: {' '.join(text.split())}")
    return "; ".join([head, *parts])


class ComfyUIClient:
    """The calls of one generation (or one check) against the server at ``url``."""

    def __init__(self, url: str, request_timeout_s: float, log: Any) -> None:
        self.url = url
        self.log = log
        self.request_timeout_s = request_timeout_s
        self._client = httpx.Client(
            base_url=url,
            headers={"User-Agent": USER_AGENT},
            timeout=httpx.Timeout(request_timeout_s),
            verify=tls_context(),
        )

    def close(self) -> None:
        """Release the connection pool."""
        self._client.close()

    def __enter__(self) -> ComfyUIClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- plain requests ------------------------------------------------------------------

    def error(self, response: httpx.Response, what: str) -> BackendError:
        """The classified error of a non-success response."""
        status = response.status_code
        text = " ".join(response.text.split())[:300] or response.reason_phrase
        return status_error(
            status, f"ComfyUI {what}: HTTP {status}: {text}", retryable=RETRYABLE_STATUSES
        )

    def call(
        self,
        method: str,
        path: str,
        what: str,
        *,
        params: dict[str, str] | None = None,
        json: Any = None,
        files: Any = None,
        data: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One request; transport failures, timeouts and 5xx are transient."""
        try:
            response = self._client.request(
                method, path, params=params, json=json, files=files, data=data
            )
        except httpx.TimeoutException as error:
            raise UnreachableBackendError(
                f"ComfyUI {what}: no answer from {self.url} within {self.request_timeout_s:g}s "
                f"({type(error).__name__})"
            ) from None
        except httpx.TransportError as error:
            raise UnreachableBackendError(
                f"ComfyUI {what}: cannot reach {self.url}: {type(error).__name__}: {error}"
            ) from None
        if not response.is_success:
            raise self.error(response, what)
        return response

    def get_json(self, path: str, what: str) -> Any:
        """GET ``path`` and decode its JSON; a body that is not JSON is transient."""
        response = self.call("GET", path, what)
        try:
            return response.json()
        except ValueError:
            raise TransientBackendError(f"ComfyUI {what}: the answer is not JSON") from None

    def system_stats(self) -> dict[str, Any]:
        """``GET /system_stats``: version, Python/PyTorch, devices with VRAM."""
        body = self.get_json("/system_stats", "system stats")
        if not isinstance(body, dict):
            raise TransientBackendError("ComfyUI system stats: unexpected answer")
        return body

    def object_info(self, class_type: str) -> dict[str, Any] | None:
        """``GET /object_info/{class}``: the node's inputs, or None if it is not installed."""
        body = self.get_json(f"/object_info/{class_type}", f"object info {class_type}")
        info = body.get(class_type) if isinstance(body, dict) else None
        return info if isinstance(info, dict) else None

    def missing_model_files(self, files: list[ModelFile]) -> list[str]:
        """Problems with the model files loader nodes name: missing files, missing loaders."""
        problems = []
        infos: dict[str, dict[str, Any] | None] = {}
        for item in files:
            if item.class_type not in infos:
                infos[item.class_type] = self.object_info(item.class_type)
            info = infos[item.class_type]
            if info is None:
                problems.append(unknown_class(item.node_id, item.class_type))
                continue
            problem = value_problem(item.filename, input_spec(info, item.input_name))
            if problem:
                problems.append(
                    f"node {item.node_id} ({item.class_type}) input {item.input_name!r}: {problem}"
                )
        return problems

    def preflight(self, files: list[ModelFile]) -> None:
        """Refuse (permanently) before queueing when the server lacks a model file."""
        problems = self.missing_model_files(files)
        if problems:
            raise PermanentBackendError(f"ComfyUI {self.url}: " + "; ".join(problems))

    def queue_ids(self) -> tuple[list[str], list[str]]:
        """``GET /queue``: prompt ids running and pending."""
        body = self.get_json("/queue", "queue")
        if not isinstance(body, dict):
            raise TransientBackendError("ComfyUI queue: unexpected answer")

        def ids(key: str) -> list[str]:
            items = body.get(key) or []
            return [str(item[1]) for item in items if isinstance(item, list) and len(item) > 1]

        return ids("queue_running"), ids("queue_pending")

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        """``GET /history/{id}``: the prompt's entry once it finished, else None."""
        body = self.get_json(f"/history/{prompt_id}", f"history of prompt {prompt_id}")
        entry = body.get(prompt_id) if isinstance(body, dict) else None
        return entry if isinstance(entry, dict) else None

    def locate(self, prompt_id: str) -> Location:
        """Running, pending, finished (with its entry) or missing.

        The queue is read before the history: a prompt that finishes in between is then
        found in the history, never reported missing.
        """
        running, pending = self.queue_ids()
        if prompt_id in running:
            return Location(Where.RUNNING)
        if prompt_id in pending:
            return Location(Where.PENDING)
        entry = self.history(prompt_id)
        if entry is not None:
            return Location(Where.FINISHED, entry)
        return Location(Where.MISSING)

    # -- submit, cancel, download ----------------------------------------------------------

    def submit(self, graph: dict[str, Any], prompt_id: str, client_id: str) -> Submitted:
        """``POST /prompt`` with our ``prompt_id``; a lost response looks the id up instead
        of posting again, so the same work is never queued twice."""
        body = {"prompt": graph, "client_id": client_id, "prompt_id": prompt_id}
        try:
            response = self._client.post("/prompt", json=body)
        except LOST_RESPONSE_ERRORS as error:
            self.log.warning(
                f"ComfyUI submit: response lost ({type(error).__name__}); looking for prompt "
                f"{prompt_id} on the server before submitting again"
            )
            location = self.locate(prompt_id)
            if location.where is Where.MISSING:
                raise TransientBackendError(
                    f"ComfyUI submit: the response was lost and prompt {prompt_id} is not on "
                    f"{self.url}; the retry looks again before submitting"
                ) from None
            return Submitted(prompt_id=prompt_id, number=None, recovered=True)
        except httpx.TransportError as error:
            raise UnreachableBackendError(
                f"ComfyUI submit: cannot reach {self.url}: {type(error).__name__}: {error}"
            ) from None
        if response.status_code == 400:
            try:
                detail = describe_prompt_error(response.json())
            except ValueError:
                detail = " ".join(response.text.split())[:300]
            raise PermanentBackendError(f"ComfyUI rejected the prompt (400): {detail}")
        if not response.is_success:
            raise self.error(response, "submit")
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or not isinstance(answer.get("prompt_id"), str):
            raise TransientBackendError("ComfyUI submit: the answer has no prompt_id")
        if answer["prompt_id"] != prompt_id:
            self.log.warning(
                f"ComfyUI {self.url} ignored the chosen prompt id and queued "
                f"{answer['prompt_id']}; this server version cannot recover lost responses"
            )
        number = answer.get("number")
        node_errors = answer.get("node_errors")
        return Submitted(
            prompt_id=answer["prompt_id"],
            number=number if isinstance(number, int | float) else None,
            recovered=False,
            node_errors=node_errors if isinstance(node_errors, dict) else {},
        )

    def cancel(self, prompt_id: str) -> str:
        """Stop this prompt and nothing else: interrupt it if it is the running one, delete it
        if it is pending. Returns what was done; failures are logged, not raised."""
        try:
            for _ in range(2):
                running, pending = self.queue_ids()
                if prompt_id in running:
                    self.call("POST", "/interrupt", "interrupt", json={"prompt_id": prompt_id})
                    return "interrupted"
                if prompt_id not in pending:
                    return "not queued"
                self.call("POST", "/queue", "delete from queue", json={"delete": [prompt_id]})
                running, pending = self.queue_ids()
                if prompt_id not in running and prompt_id not in pending:
                    return "deleted from the queue"
        except BackendError as error:
            self.log.warning(f"ComfyUI: could not cancel prompt {prompt_id}: {error}")
            return "cancel failed"
        return "still queued"

    def download(self, image: dict[str, Any]) -> bytes:
        """An output file through ``/view``."""
        params = {
            "filename": str(image.get("filename", "")),
            "subfolder": str(image.get("subfolder", "")),
            "type": str(image.get("type", "output")),
        }
        where = "/".join(part for part in (params["subfolder"], params["filename"]) if part)
        response = self.call("GET", "/view", f"download {where}", params=params)
        return response.content

    def input_files(self) -> list[str]:
        """The image files in the server's input folder (LoadImage's choices)."""
        info = self.object_info("LoadImage")
        if info is None:
            raise PermanentBackendError(
                f"ComfyUI {self.url}: node class LoadImage does not exist on the server"
            )
        return combo_options(input_spec(info, "image")) or []

    def upload_image(self, path: Path, name: str, mime: str) -> str:
        """The file at ``path`` in the server's input folder as ``name`` (kept when it is
        already there): ``POST /upload/image``; returns the name LoadImage reads it by."""
        if name in self.input_files():
            return name
        what = f"upload {name}"
        with path.open("rb") as handle:
            response = self.call(
                "POST",
                "/upload/image",
                what,
                files={"image": (name, handle, mime)},
                data={"type": "input"},
            )
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or not isinstance(answer.get("name"), str):
            raise TransientBackendError(f"ComfyUI {what}: the answer has no name")
        subfolder = answer.get("subfolder") or ""
        return f"{subfolder}/{answer['name']}" if subfolder else str(answer["name"])

    # -- websocket -----------------------------------------------------------------------

    def open_socket(self, client_id: str) -> ClientConnection | None:
        """The event stream for ``client_id``, or None if it cannot be opened now."""
        scheme = "wss" if self.url.startswith("https:") else "ws"
        uri = f"{scheme}{self.url.removeprefix('https').removeprefix('http')}/ws"
        try:
            return connect(
                f"{uri}?clientId={client_id}",
                open_timeout=self.request_timeout_s,
                close_timeout=1,
                max_size=WEBSOCKET_MAX_MESSAGE_BYTES,
                user_agent_header=USER_AGENT,
            )
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError):
            return None
