"""Following one prompt until it ends: websocket events first, ``/history`` polling as fallback.

Events for the prompt (``execution_start``, ``execution_cached``, ``executing``,
``progress_state``, ``progress``, ``execution_success``, ``execution_error``,
``execution_interrupted``) are read from the socket; binary preview frames and other prompts'
events are skipped. ``executing``, ``progress_state`` (every started node's value, max and
state; v0.8.0 sends it for each node) and ``progress`` (a node's progress bar, e.g. a
sampler's steps) become :class:`~imagen_pipeline.backends.progress.Progress` reports for the
context's listener. When the socket is silent for ``check_interval_s`` or has dropped,
``/queue`` and ``/history`` say where the prompt is; a prompt in neither was lost (the server
restarted), which fails transiently instead of waiting.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from imagen_pipeline.backends.comfyui.client import ComfyUIClient, Where
from imagen_pipeline.backends.progress import Progress, ProgressListener
from imagen_pipeline.errors import (
    BackendError,
    PermanentBackendError,
    TransientBackendError,
    UnreachableBackendError,
)

OUT_OF_MEMORY_MARKERS = ("outofmemory", "out of memory", "allocation on device")
"""Lower-case fragments of GPU memory errors: transient, the GPU box runs other programs too."""


@dataclass(frozen=True)
class NodeState:
    """One node's entry of ``progress_state`` (or a ``progress`` event)."""

    value: float
    most: float
    state: str
    """pending, running, finished or error."""

    @property
    def finished(self) -> bool:
        """The node ran to its end."""
        return self.state == "finished"

    @property
    def share(self) -> float:
        """How much of the node is done, 0..1."""
        return min(1.0, max(0.0, self.value / self.most)) if self.most > 0 else 0.0

    @classmethod
    def read(cls, entry: Any) -> NodeState | None:
        """The state in an event's entry; None when it is not one."""
        if not isinstance(entry, dict):
            return None
        value, most, state = entry.get("value"), entry.get("max"), entry.get("state")
        numbers = all(
            isinstance(item, int | float) and not isinstance(item, bool) for item in (value, most)
        )
        if not numbers or not isinstance(state, str):
            return None
        return cls(float(value), float(most), state)


@dataclass(frozen=True)
class WatchSettings:
    """Timing of one watch (seconds)."""

    poll_interval_s: float
    check_interval_s: float
    reconnect_grace_s: float
    timeout_s: float


class PromptWatch:
    """Waits for ``prompt_id`` and returns its history entry, or raises the classified error."""

    def __init__(
        self,
        client: ComfyUIClient,
        *,
        prompt_id: str,
        client_id: str,
        socket: ClientConnection | None,
        class_types: dict[str, str],
        settings: WatchSettings,
        deadline: float,
        log: Any,
        progress: ProgressListener | None = None,
    ) -> None:
        self.client = client
        self.prompt_id = prompt_id
        self.client_id = client_id
        self.socket = socket
        self.class_types = class_types
        self.settings = settings
        self.deadline = deadline
        self.log = log
        self.label = f"ComfyUI prompt {prompt_id}"
        self.queued_at = time.monotonic()
        self.last_heard = self.queued_at
        self.unreachable_since: float | None = None
        self.state: Where | None = None
        self.progress = progress
        self.started_at: float | None = None
        self.cached: set[str] = set()
        self.nodes: dict[str, NodeState] = {}
        self.current = ""

    def close(self) -> None:
        """Close the socket if one is open."""
        if self.socket is not None:
            self.socket.close()
            self.socket = None

    def wait(self) -> dict[str, Any]:
        """The history entry of the finished prompt; errors are transient or permanent."""
        while True:
            if time.monotonic() >= self.deadline:
                self._give_up()
            entry = self._listen() if self.socket is not None else self._poll()
            if entry is not None:
                return self._outcome(entry)

    # -- sources -------------------------------------------------------------------------

    def _listen(self) -> dict[str, Any] | None:
        assert self.socket is not None
        remaining = max(0.0, self.deadline - time.monotonic())
        try:
            message = self.socket.recv(timeout=min(self.settings.poll_interval_s, remaining))
        except TimeoutError:
            message = None
        except ConnectionClosed:
            self.log.warning(f"{self.label}: event socket dropped; polling /history instead")
            self.socket = None
            return self._check()
        if isinstance(message, str):
            finished = self._on_event(message)
            if finished:
                return self._finished_entry()
        if time.monotonic() - self.last_heard >= self.settings.check_interval_s:
            self.last_heard = time.monotonic()
            return self._check()
        return None

    def _poll(self) -> dict[str, Any] | None:
        time.sleep(max(0.0, min(self.settings.poll_interval_s, self.deadline - time.monotonic())))
        self.socket = self.client.open_socket(self.client_id)
        if self.socket is not None:
            self.log.info(f"{self.label}: event socket reconnected")
            self.last_heard = time.monotonic()
        return self._check()

    def _check(self) -> dict[str, Any] | None:
        """Where the prompt is now: None while queued, its entry once finished."""
        try:
            location = self.client.locate(self.prompt_id)
        except TransientBackendError as error:
            now = time.monotonic()
            if self.unreachable_since is None:
                self.unreachable_since = now
                self.log.warning(f"{self.label}: cannot ask the server where it is: {error}")
            if now - self.unreachable_since >= self.settings.reconnect_grace_s:
                raise UnreachableBackendError(
                    f"{self.label}: {self.client.url} did not answer for "
                    f"{self.settings.reconnect_grace_s:g}s while the prompt was queued: {error}"
                ) from None
            return None
        self.unreachable_since = None
        if location.where is Where.FINISHED:
            return location.entry
        if location.where is Where.MISSING:
            raise UnreachableBackendError(
                f"{self.label} is neither queued nor in the history of {self.client.url}: the "
                "server restarted and lost it; the retry submits it again"
            )
        if location.where is not self.state:
            self.state = location.where
            self.log.info(f"{self.label}: {location.where.value}")
        return None

    def _finished_entry(self) -> dict[str, Any]:
        """The history entry right after the end event (it is written just after)."""
        while True:
            entry = self.client.history(self.prompt_id)
            if entry is not None:
                return entry
            if time.monotonic() >= self.deadline:
                self._give_up()
            time.sleep(min(self.settings.poll_interval_s, 0.1))

    # -- events --------------------------------------------------------------------------

    def _on_event(self, text: str) -> bool:
        """Handle one JSON event; True when it says the prompt has ended."""
        try:
            event = json.loads(text)
        except ValueError:
            return False
        if not isinstance(event, dict) or not isinstance(event.get("data"), dict):
            return False
        kind, data = event.get("type"), event["data"]
        if data.get("prompt_id") != self.prompt_id:
            return False
        self.last_heard = time.monotonic()
        if kind == "execution_start":
            self.started_at = time.monotonic()
            waited = self.started_at - self.queued_at
            self.state = Where.RUNNING
            self.log.info(f"{self.label}: started after {waited:.1f}s in the queue")
        elif kind == "execution_cached":
            cached = data.get("nodes") or []
            if cached:
                self.cached = {str(node) for node in cached}
                self.log.info(f"{self.label}: {len(cached)} nodes cached from earlier prompts")
        elif kind == "executing":
            if data.get("node") is None:
                return True
            self._on_executing(str(data["node"]))
        elif kind == "progress_state":
            self._on_progress_state(data.get("nodes"))
        elif kind == "progress":
            self._on_progress(data)
        elif kind in ("execution_success", "execution_error", "execution_interrupted"):
            if kind != "execution_success":
                raise self._failure(kind, data)
            return True
        return False

    def _on_executing(self, node: str) -> None:
        """A node started; a server without ``progress_state`` only says so here."""
        previous = self.nodes.get(self.current)
        if previous is not None and previous.state == "running":
            self.nodes[self.current] = NodeState(previous.most, previous.most, "finished")
        self.current = node
        self.nodes.setdefault(node, NodeState(0.0, 1.0, "running"))
        self._report()

    def _on_progress_state(self, nodes: Any) -> None:
        if not isinstance(nodes, dict):
            return
        for node, entry in nodes.items():
            state = NodeState.read(entry)
            if state is not None:
                self.nodes[str(node)] = state
                if state.state == "running":
                    self.current = str(node)
        self._report()

    def _on_progress(self, data: dict[str, Any]) -> None:
        node = str(data.get("node") or self.current)
        state = NodeState.read({**data, "state": "running"})
        if state is not None and node:
            self.nodes[node] = state
            self.current = node
            self._report()

    def _report(self) -> None:
        if self.progress is None:
            return
        total = max(1, len(self.class_types))
        done = len(self.cached) + sum(
            1 for node, state in self.nodes.items() if state.finished and node not in self.cached
        )
        current = self.nodes.get(self.current)
        partial = current.share if current is not None and not current.finished else 0.0
        has_bar = current is not None and current.most > 1
        started = self.started_at if self.started_at is not None else self.queued_at
        self.progress(
            Progress(
                fraction=min(1.0, (done + partial) / total),
                node_id=self.current,
                node_class=self.class_types.get(self.current, ""),
                step=int(current.value) if has_bar and current is not None else None,
                steps=int(current.most) if has_bar and current is not None else None,
                elapsed_s=round(time.monotonic() - started, 1),
            )
        )

    # -- outcomes --------------------------------------------------------------------------

    def _outcome(self, entry: dict[str, Any]) -> dict[str, Any]:
        status = entry.get("status")
        if not isinstance(status, dict) or status.get("status_str") != "error":
            return entry
        for message in status.get("messages") or []:
            if (
                isinstance(message, list)
                and len(message) == 2
                and message[0] in ("execution_error", "execution_interrupted")
                and isinstance(message[1], dict)
            ):
                raise self._failure(message[0], message[1])
        raise PermanentBackendError(f"{self.label} ended with an error and no error details")

    def _failure(self, kind: str, data: dict[str, Any]) -> BackendError:
        node = f"node {data.get('node_id')} ({data.get('node_type')})"
        if kind == "execution_interrupted":
            return PermanentBackendError(
                f"{self.label} was interrupted on the server at {node}, not by this run"
            )
        exception = f"{data.get('exception_type') or 'error'}: {data.get('exception_message')}"
        message = f"{self.label} failed in {node}: {' '.join(exception.split())}"
        if any(marker in exception.lower() for marker in OUT_OF_MEMORY_MARKERS):
            return TransientBackendError(f"{message} (the GPU may be busy with other work)")
        return PermanentBackendError(message)

    def _give_up(self) -> None:
        outcome = self.client.cancel(self.prompt_id)
        raise TransientBackendError(
            f"{self.label} did not finish within timeout_s ({self.settings.timeout_s:g}s); "
            f"{outcome}"
        )
