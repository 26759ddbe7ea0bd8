"""The ComfyUI adapter against a loopback fake that speaks ComfyUI's HTTP and websocket API."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest
from PIL import Image

from imagen_pipeline.backends.comfyui import ComfyUIBackend
from imagen_pipeline.backends.comfyui.prompts import client_id_for, prompt_id_for
from imagen_pipeline.backends.comfyui.slots import QueueSlots, default_state_dir
from imagen_pipeline.backends.contract import (
    MAX_SEED,
    GenerationContext,
    GenerationRequest,
    derived_seed,
)
from imagen_pipeline.backends.progress import Progress, ProgressListener, ProgressThrottle
from imagen_pipeline.backends.registry import build_backend
from imagen_pipeline.defs.jobs import build_generate_image_job
from imagen_pipeline.errors import (
    InvalidRequestError,
    PermanentBackendError,
    TransientBackendError,
)
from imagen_pipeline_tests.fakes.comfyui_server import (
    CLASSIC_WORKFLOW,
    DROP_AFTER_QUEUE,
    DROP_BEFORE_QUEUE,
    WEIGHTLESS_INPUTS,
    WEIGHTLESS_WORKFLOW,
    FakeComfyUI,
    Reply,
    running_fake_comfyui,
)
from imagen_pipeline_tests.fakes.loopback_http import closed_port
from imagen_pipeline_tests.fixtures.imagen import file_resources, step_failure_text
from imagen_pipeline_tests.fixtures.interrupts import interrupting_when

LOGGER = "imagen.test.comfyui"
WAIT_S = 30.0
"""Upper bound for waiting on something a background thread or the fake does."""


@pytest.fixture
def fake() -> Iterator[FakeComfyUI]:
    with running_fake_comfyui() as server:
        yield server


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    return caplog


def backend(fake: FakeComfyUI, **fields: Any) -> ComfyUIBackend:
    settings: dict[str, Any] = {
        "url": fake.url,
        "poll_interval_s": 0.02,
        "check_interval_s": 0.5,
        "reconnect_grace_s": 2.0,
        "timeout_s": 30.0,
        **fields,
    }
    return ComfyUIBackend(**settings)


def request(**fields: Any) -> GenerationRequest:
    return GenerationRequest(
        **{"prompt": "a red fox in the snow", "width": 768, "height": 512, "seed": 7, **fields}
    )


def context(
    run_id: str = "run-1", attempt: int = 0, progress: ProgressListener | None = None
) -> GenerationContext:
    return GenerationContext(
        run_id=run_id,
        attempt=attempt,
        instance_name="gpu",
        log=logging.getLogger(LOGGER),
        progress=progress,
    )


def weightless(fake: FakeComfyUI, tmp_path: Path, graph: dict[str, Any] | None = None) -> Any:
    """A backend running :data:`WEIGHTLESS_WORKFLOW` (or ``graph``) from a workflow file."""
    path = tmp_path / "weightless.json"
    path.write_text(json.dumps(graph or WEIGHTLESS_WORKFLOW), encoding="utf-8")
    return backend(fake, workflow=str(path), inputs=WEIGHTLESS_INPUTS)


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def sent_graph(fake: FakeComfyUI, index: int = 0) -> dict[str, Any]:
    return fake.submitted()[index]["prompt"]


def value(graph: dict[str, Any], target: str) -> Any:
    node_id, _, input_name = target.rpartition(".")
    return graph[node_id]["inputs"][input_name]


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


# -- mapping, progress, download ---------------------------------------------------------------


def test_flux_dev_graph_carries_the_request_and_the_png_is_downloaded(
    fake: FakeComfyUI, logs: pytest.LogCaptureFixture
) -> None:
    reports: list[Progress] = []
    result = backend(fake, guidance=2.5).generate(
        request(steps=12, negative="blurry"), context(progress=reports.append)
    )

    (body,) = fake.submitted()
    graph = body["prompt"]
    assert value(graph, "6.text") == "a red fox in the snow"
    assert value(graph, "25.noise_seed") == 7
    assert (value(graph, "27.width"), value(graph, "27.height")) == (768, 512)
    assert (value(graph, "30.width"), value(graph, "30.height")) == (768, 512)
    assert value(graph, "17.steps") == 12
    assert value(graph, "26.guidance") == 2.5
    assert value(graph, "9.filename_prefix") == "imagen/run-1"
    assert value(graph, "12.unet_name") == "flux1-dev.safetensors"
    assert body["prompt_id"] == prompt_id_for(context(), 0)
    (ws,) = fake.requests("WS", "/ws")
    assert ws.query["clientId"] == body["client_id"] == client_id_for(context())
    assert [item.path for item in fake.requests("GET")][:3] == [
        "/object_info/VAELoader",
        "/object_info/DualCLIPLoader",
        "/object_info/UNETLoader",
    ]
    (view,) = fake.requests("GET", "/view")
    assert view.query == {"filename": "run-1_00001_.png", "subfolder": "imagen", "type": "output"}

    image = decoded(result.image)
    assert (image.format, image.size) == ("PNG", (768, 512))
    meta = result.metadata
    assert (meta.model, meta.seed, meta.steps, meta.cost_usd) == (
        "flux1-dev.safetensors",
        7,
        12,
        0.0,
    )
    assert meta.extra["prompt_id"] == body["prompt_id"]
    assert meta.extra["output_file"] == "imagen/run-1_00001_.png"
    assert meta.extra["recovered_prompt"] is False
    assert meta.extra["guidance"] == 2.5
    sampling = [report for report in reports if report.node_class == "SamplerCustomAdvanced"]
    steps = [(report.step, report.steps) for report in sampling if report.step]
    assert list(dict.fromkeys(steps)) == [(step, 12) for step in range(1, 13)]
    assert reports[-1].fraction == 1.0
    assert "no input is mapped for negative; ignored it" in logs.text


@pytest.mark.parametrize(
    ("workflow", "expected"),
    [
        pytest.param(
            "flux-schnell",
            {"6.text": "a red fox in the snow", "25.noise_seed": 7, "27.width": 768, "17.steps": 4},
            id="flux-schnell",
        ),
        pytest.param(
            "flux-fp8",
            {
                "6.text": "a red fox in the snow",
                "33.text": "blurry",
                "31.seed": 7,
                "27.width": 768,
                "27.height": 512,
                "31.steps": 20,
                "30.ckpt_name": "flux1-dev-fp8.safetensors",
            },
            id="flux-fp8",
        ),
    ],
)
def test_other_templates_put_the_request_at_their_own_nodes(
    fake: FakeComfyUI, workflow: str, expected: dict[str, Any]
) -> None:
    result = backend(fake, workflow=workflow).generate(request(negative="blurry"), context())
    graph = sent_graph(fake)
    assert {target: value(graph, target) for target in expected} == expected
    assert decoded(result.image).size == (768, 512)
    assert result.metadata.steps == expected.get("31.steps", expected.get("17.steps"))


def test_user_workflow_file_with_its_own_mapping_overrides_and_request_options(
    fake: FakeComfyUI, tmp_path: Path
) -> None:
    path = tmp_path / "classic.json"
    path.write_text(json.dumps(CLASSIC_WORKFLOW), encoding="utf-8")
    adapter = backend(
        fake,
        workflow=str(path),
        inputs={
            "prompt": "6.text",
            "negative": "7.text",
            "seed": "3.seed",
            "width": "5.width",
            "height": "5.height",
            "steps": "3.steps",
            "filename_prefix": "9.filename_prefix",
        },
        overrides={"3.cfg": 1.0, "3.scheduler": "simple"},
    )
    result = adapter.generate(
        request(negative="text", steps=9, backend_opts={"3.sampler_name": "heun"}),
        context(),
    )
    graph = sent_graph(fake)
    assert value(graph, "6.text") == "a red fox in the snow"
    assert value(graph, "7.text") == "text"
    assert (value(graph, "3.seed"), value(graph, "3.steps")) == (7, 9)
    assert (value(graph, "5.width"), value(graph, "5.height")) == (768, 512)
    assert (value(graph, "3.cfg"), value(graph, "3.scheduler")) == (1.0, "simple")
    assert value(graph, "3.sampler_name") == "heun"
    assert decoded(result.image).size == (768, 512)
    assert result.metadata.model == "flux1-dev-fp8.safetensors"


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"99.cfg": 3}, r"backend_opts\.99\.cfg: no node '99'"),
        (
            {"x": 1},
            r"backend_opts\.x: is not an option of a ComfyUI workflow; its options are "
            r"guidance and '<node id>\.<input name>'",
        ),
        (
            {"17.scheduler": ["3", 0]},
            r"backend_opts\.17\.scheduler: must be a text, number or true/false value",
        ),
        (
            {"27.width": 5000},
            r"backend_opts\.27\.width: sets width, which only the request's width field may set",
        ),
        (
            {"27.batch_size": 4},
            r"backend_opts\.27\.batch_size: sets how many images one prompt makes, which only "
            r"the request's count field may set",
        ),
        (
            {"26.guidance": 3},
            r"backend_opts\.26\.guidance: sets guidance, which only the guidance option or the "
            r"instance's guidance setting may set",
        ),
    ],
)
def test_an_option_the_workflow_cannot_take_is_refused_for_anyone_and_sends_nothing(
    fake: FakeComfyUI, options: dict[str, Any], error: str
) -> None:
    with pytest.raises(InvalidRequestError, match=error):
        backend(fake).generate(request(backend_opts=options), context())
    assert fake.received == []


def test_missing_seed_is_derived_from_the_run_and_reported(fake: FakeComfyUI) -> None:
    adapter = backend(fake)
    first = adapter.generate(request(seed=None), context("run-a"))
    other = adapter.generate(request(seed=None), context("run-b"))
    seeds = [value(sent_graph(fake, index), "25.noise_seed") for index in (0, 1)]
    assert first.metadata.seed == seeds[0] == derived_seed(context("run-a"))
    assert other.metadata.seed == seeds[1] != seeds[0]
    assert all(1 <= seed <= MAX_SEED for seed in seeds)


# -- errors ------------------------------------------------------------------------------------


def test_node_errors_are_permanent_and_name_node_class_and_input(fake: FakeComfyUI) -> None:
    adapter = backend(
        fake,
        inputs={"steps": None},
        overrides={"16.sampler_name": "euler_fast", "17.steps": 0},
    )
    with pytest.raises(PermanentBackendError) as raised:
        adapter.generate(request(), context())
    message = str(raised.value)
    assert message.startswith("ComfyUI rejected the prompt (400): Prompt outputs failed validation")
    assert (
        "node 16 (KSamplerSelect) input 'sampler_name': Value not in list: sampler_name: "
        "'euler_fast' not in"
    ) in message
    assert "node 17 (BasicScheduler) input 'steps': Value 0 smaller than min of 1" in message
    assert fake.history_ids() == []


def test_unknown_node_class_is_permanent(fake: FakeComfyUI, tmp_path: Path) -> None:
    graph = json.loads(json.dumps(CLASSIC_WORKFLOW))
    graph["4"]["class_type"] = "UnetLoaderGGUF"
    path = tmp_path / "gguf.json"
    path.write_text(json.dumps(graph), encoding="utf-8")
    adapter = backend(fake, workflow=str(path), inputs={"prompt": "6.text"})
    with pytest.raises(
        PermanentBackendError,
        match=r"ComfyUI rejected the prompt \(400\): Cannot execute because node "
        r"UnetLoaderGGUF does not exist\. \(Node ID '#4'\)$",
    ):
        adapter.generate(request(), context())


@pytest.mark.parametrize("combo_style", ["legacy", "v3"])
def test_missing_model_file_is_reported_by_name_before_queueing(
    fake: FakeComfyUI, combo_style: str
) -> None:
    fake.combo_style = combo_style
    fake.models["diffusion_models"] = ["flux1-schnell.safetensors", "flux1-kontext.safetensors"]
    adapter = backend(fake)
    with pytest.raises(PermanentBackendError) as raised:
        adapter.generate(request(), context())
    assert str(raised.value) == (
        f"ComfyUI {fake.url}: node 12 (UNETLoader) input 'unet_name': model file "
        "'flux1-dev.safetensors' is not on the server; available: flux1-kontext.safetensors, "
        "flux1-schnell.safetensors"
    )
    assert fake.submitted() == []

    check = adapter.check()
    assert (check.reachable, check.model_present) == (True, False)
    assert "'flux1-dev.safetensors' is not on the server" in check.detail


def test_error_mid_graph_is_permanent_and_names_the_node(fake: FakeComfyUI) -> None:
    fake.fail_class = "VAEDecode"
    with pytest.raises(PermanentBackendError) as raised:
        backend(fake).generate(request(), context())
    prompt_id = prompt_id_for(context(), 0)
    assert str(raised.value) == (
        f"ComfyUI prompt {prompt_id} failed in node 8 (VAEDecode): RuntimeError: mat1 and mat2 "
        "shapes cannot be multiplied"
    )
    assert fake.history_entry(prompt_id)["status"]["status_str"] == "error"
    assert fake.requests("GET", "/view") == []


def test_gpu_out_of_memory_mid_graph_is_transient(fake: FakeComfyUI) -> None:
    fake.fail_class = "SamplerCustomAdvanced"
    fake.fail_exception = (
        "torch.OutOfMemoryError",
        "Allocation on device 0 would exceed allowed memory. (out of memory)",
    )
    with pytest.raises(TransientBackendError, match=r"node 13 \(SamplerCustomAdvanced\)"):
        backend(fake).generate(request(), context())


@pytest.mark.parametrize("fail_class", [None, "VAEDecode"], ids=["success", "error"])
def test_without_the_event_socket_the_history_is_polled(
    fake: FakeComfyUI, logs: pytest.LogCaptureFixture, fail_class: str | None
) -> None:
    fake.accept_sockets = False
    fake.fail_class = fail_class
    fake.step_delay_s = 0.01
    adapter = backend(fake)
    prompt_id = prompt_id_for(context(), 0)
    if fail_class is None:
        result = adapter.generate(request(steps=6), context())
        assert decoded(result.image).size == (768, 512)
    else:
        with pytest.raises(PermanentBackendError, match=r"failed in node 8 \(VAEDecode\)"):
            adapter.generate(request(steps=6), context())
    assert "no event socket; following the prompt via /history" in logs.text
    assert len(fake.requests("GET", f"/history/{prompt_id}")) >= 1
    assert len(fake.requests("WS", "/ws")) >= 2, "kept trying to open the socket"


def test_server_errors_and_an_unreachable_server_are_transient(fake: FakeComfyUI) -> None:
    fake.prompt_replies.append(
        Reply(500, "500 Internal Server Error\n\nServer got itself in trouble")
    )
    with pytest.raises(TransientBackendError, match="ComfyUI submit: HTTP 500: 500 Internal"):
        backend(fake).generate(request(), context())
    assert fake.history_ids() == []

    unreachable = ComfyUIBackend(url=f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(TransientBackendError, match=r"cannot reach http://127\.0\.0\.1"):
        unreachable.generate(request(), context())


# -- lost responses, retries, dropped sockets, restarts ------------------------------------------


def test_lost_submit_response_is_recovered_without_queueing_twice(
    fake: FakeComfyUI, logs: pytest.LogCaptureFixture
) -> None:
    fake.prompt_replies.append(DROP_AFTER_QUEUE)
    result = backend(fake).generate(request(), context())

    prompt_id = prompt_id_for(context(), 0)
    assert len(fake.submitted()) == 1
    assert fake.history_ids() == [prompt_id]
    assert fake.requests("GET", "/queue"), "looked the prompt up instead of posting again"
    assert result.metadata.extra["recovered_prompt"] is True
    assert decoded(result.image).size == (768, 512)
    assert "response lost" in logs.text


def test_lost_submit_before_queueing_fails_transiently_and_the_retry_queues_once(
    fake: FakeComfyUI,
) -> None:
    fake.prompt_replies.append(DROP_BEFORE_QUEUE)
    adapter = backend(fake)
    with pytest.raises(TransientBackendError, match="the response was lost and prompt"):
        adapter.generate(request(), context(attempt=0))
    assert fake.history_ids() == []

    adapter.generate(request(), context(attempt=1))
    first, second = prompt_id_for(context(), 0), prompt_id_for(context(), 1)
    assert fake.requests("GET", f"/history/{first}"), "the retry looked for attempt 1's prompt"
    assert [body["prompt_id"] for body in fake.submitted()] == [first, second]
    assert fake.history_ids() == [second]


def test_retry_follows_the_earlier_attempts_prompt_that_is_still_running(
    fake: FakeComfyUI,
) -> None:
    """Attempt 1 died after queueing its prompt; attempt 2 follows it instead of queueing."""
    fake.step_delay_s = 0.01
    earlier = prompt_id_for(context(), 0)
    graph = json.loads(json.dumps(backend(fake).load().graph))
    graph["6"]["inputs"]["text"] = "queued by attempt 1"
    answer = httpx.post(
        f"{fake.url}/prompt",
        json={"prompt": graph, "client_id": client_id_for(context()), "prompt_id": earlier},
    )
    assert answer.status_code == 200

    result = backend(fake).generate(request(), context(attempt=1))

    assert len(fake.submitted()) == 1, "only attempt 1 ever posted"
    assert fake.history_ids() == [earlier]
    assert result.metadata.extra["prompt_id"] == earlier
    assert result.metadata.extra["recovered_prompt"] is True


def test_retry_uses_the_image_of_an_earlier_attempt_that_finished(fake: FakeComfyUI) -> None:
    fake.history_replies.append(Reply(502, "Bad Gateway"))
    adapter = backend(fake)
    with pytest.raises(TransientBackendError, match="HTTP 502"):
        adapter.generate(request(), context(attempt=0))
    result = adapter.generate(request(), context(attempt=1))
    assert len(fake.submitted()) == 1
    assert result.metadata.extra["prompt_id"] == prompt_id_for(context(), 0)
    assert decoded(result.image).size == (768, 512)


def test_dropped_socket_falls_back_to_polling_history_and_reconnects(
    fake: FakeComfyUI, logs: pytest.LogCaptureFixture
) -> None:
    fake.drop_sockets_at_step = 2
    fake.step_delay_s = 0.02
    result = backend(fake).generate(request(steps=8), context())

    prompt_id = prompt_id_for(context(), 0)
    assert "event socket dropped; polling /history instead" in logs.text
    assert "event socket reconnected" in logs.text
    assert len(fake.requests("WS", "/ws")) >= 2
    assert fake.requests("GET", "/queue"), "asked where the prompt is after the drop"
    assert len(fake.requests("GET", f"/history/{prompt_id}")) >= 1
    assert decoded(result.image).size == (768, 512)


def test_restart_that_loses_the_prompt_fails_transiently_instead_of_waiting(
    fake: FakeComfyUI, logs: pytest.LogCaptureFixture
) -> None:
    fake.restart_at_step = 2
    fake.step_delay_s = 0.01
    with pytest.raises(TransientBackendError) as raised:
        backend(fake, timeout_s=60).generate(request(), context())
    prompt_id = prompt_id_for(context(), 0)
    assert str(raised.value) == (
        f"ComfyUI prompt {prompt_id} is neither queued nor in the history of {fake.url}: the "
        "server restarted and lost it; the retry submits it again"
    )
    assert fake.history_ids() == []


def test_a_prompt_lost_while_the_socket_stays_silent_is_noticed(fake: FakeComfyUI) -> None:
    """Pending behind other work, no events come; the periodic check sees it vanish."""
    fake.paused = True
    prompt_id = prompt_id_for(context(), 0)

    def delete_when_pending() -> None:
        wait_for(lambda: prompt_id in fake.pending_ids(), "the prompt to be pending")
        httpx.post(f"{fake.url}/queue", json={"delete": [prompt_id]})

    deleter = threading.Thread(target=delete_when_pending, daemon=True)
    deleter.start()
    with pytest.raises(TransientBackendError, match="is neither queued nor in the history"):
        backend(fake, check_interval_s=0.1).generate(request(), context())
    deleter.join()


def test_server_gone_for_longer_than_the_grace_fails_transiently(fake: FakeComfyUI) -> None:
    fake.hold_at_step = 1
    stopper = threading.Thread(
        target=lambda: (wait_for(fake.held.is_set, "the prompt to run"), fake.shut_down()),
        daemon=True,
    )
    stopper.start()
    with pytest.raises(TransientBackendError, match=r"did not answer for 0\.3s while the prompt"):
        backend(fake, reconnect_grace_s=0.3).generate(request(), context())
    stopper.join()


def test_an_interrupt_by_someone_else_is_permanent(fake: FakeComfyUI) -> None:
    fake.hold_at_step = 1

    def interrupt_everything() -> None:
        wait_for(fake.held.is_set, "our prompt to run")
        httpx.post(f"{fake.url}/interrupt", json={})

    other_user = threading.Thread(target=interrupt_everything, daemon=True)
    other_user.start()
    with pytest.raises(
        PermanentBackendError,
        match=r"was interrupted on the server at node 13 \(SamplerCustomAdvanced\), not by this",
    ):
        backend(fake).generate(request(), context())
    other_user.join()


# -- cancel and timeout ----------------------------------------------------------------------------


def test_terminating_the_run_interrupts_our_running_prompt_only(fake: FakeComfyUI) -> None:
    fake.hold_at_step = 1
    ours = prompt_id_for(context(), 0)
    graph = backend(fake).load().graph
    foreign: list[str] = []

    def ours_runs_and_a_foreign_one_waits() -> bool:
        if not (fake.held.is_set() and fake.running_id() == ours):
            return False
        foreign.append(fake.queue_foreign(graph))
        return True

    with (
        pytest.raises(KeyboardInterrupt),
        interrupting_when(ours_runs_and_a_foreign_one_waits, WAIT_S),
    ):
        backend(fake).generate(request(), context())

    assert [item.body for item in fake.requests("POST", "/interrupt")] == [{"prompt_id": ours}]
    assert fake.requests("POST", "/queue") == []
    wait_for(lambda: ours in fake.history_ids(), "our interrupted prompt in the history")
    messages = [event for event, _ in fake.history_entry(ours)["status"]["messages"]]
    assert messages[-1] == "execution_interrupted"
    wait_for(lambda: fake.running_id() == foreign[0], "the foreign prompt to run next")
    fake.release()
    wait_for(lambda: foreign[0] in fake.history_ids(), "the foreign prompt to finish")
    assert fake.history_entry(foreign[0])["status"]["status_str"] == "success"


def test_terminating_the_run_deletes_our_pending_prompt_and_spares_the_running_one(
    fake: FakeComfyUI,
) -> None:
    fake.hold_at_step = 1
    foreign = fake.queue_foreign(backend(fake).load().graph)
    wait_for(lambda: fake.held.is_set(), "the foreign prompt to run")
    ours = prompt_id_for(context(), 0)
    with (
        pytest.raises(KeyboardInterrupt),
        interrupting_when(lambda: ours in fake.pending_ids(), WAIT_S),
    ):
        backend(fake).generate(request(), context())

    deletes = fake.requests("POST", "/queue")
    assert [item.body for item in deletes] == [{"delete": [ours]}]
    assert fake.requests("POST", "/interrupt") == []
    assert fake.running_id() == foreign
    assert ours not in fake.pending_ids()
    fake.release()
    wait_for(lambda: foreign in fake.history_ids(), "the foreign prompt to finish")
    assert fake.history_entry(foreign)["status"]["status_str"] == "success"
    assert ours not in fake.history_ids()


def test_prompt_past_the_timeout_is_interrupted_and_transient(fake: FakeComfyUI) -> None:
    fake.hold_at_step = 2
    with pytest.raises(TransientBackendError, match=r"did not finish within timeout_s \(0\.5s\)"):
        backend(fake, timeout_s=0.5).generate(request(), context())
    ours = prompt_id_for(context(), 0)
    assert [item.body for item in fake.requests("POST", "/interrupt")] == [{"prompt_id": ours}]


# -- pool_limit across processes -------------------------------------------------------------------


@pytest.fixture
def other_process_holding_the_slot(fake: FakeComfyUI) -> Iterator[subprocess.Popen[str]]:
    """A separate process holding queue slot 0 of the fake's URL, as another run would."""
    slots = QueueSlots(fake.url, 1, default_state_dir(), logging.getLogger(LOGGER))
    slots.folder.mkdir(parents=True, exist_ok=True)
    code = (
        "import fcntl, sys\n"
        f"handle = open({str(slots.slot_path(0))!r}, 'a+')\n"
        "fcntl.flock(handle, fcntl.LOCK_EX)\n"
        "handle.write('run other-run (pid 1)'); handle.flush()\n"
        "print('locked', flush=True)\n"
        "sys.stdin.read()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    try:
        yield holder
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait(timeout=WAIT_S)


def test_pool_limit_waits_for_a_slot_held_by_another_process(
    fake: FakeComfyUI,
    other_process_holding_the_slot: subprocess.Popen[str],
    logs: pytest.LogCaptureFixture,
) -> None:
    outcome: dict[str, Any] = {}

    def generate() -> None:
        outcome["result"] = backend(fake, pool_limit=1).generate(request(), context())

    worker = threading.Thread(target=generate)
    worker.start()
    wait_for(lambda: "queue slots (pool_limit) are taken" in logs.text, "the slot wait")
    assert "run other-run (pid 1)" in logs.text
    assert fake.submitted() == [], "nothing is queued while the slot is held"

    assert other_process_holding_the_slot.stdin is not None
    other_process_holding_the_slot.stdin.close()
    worker.join(timeout=WAIT_S)
    assert not worker.is_alive()
    assert len(fake.submitted()) == 1
    assert decoded(outcome["result"].image).size == (768, 512)


def test_no_free_slot_within_the_timeout_is_transient(
    fake: FakeComfyUI, other_process_holding_the_slot: subprocess.Popen[str]
) -> None:
    with pytest.raises(TransientBackendError, match=r"no queue slot \(pool_limit 1\) came free"):
        backend(fake, pool_limit=1, timeout_s=0.3).generate(request(), context())
    assert fake.submitted() == []


def test_two_slots_let_a_second_prompt_wait_in_comfyuis_queue(fake: FakeComfyUI) -> None:
    """pool_limit 2: while one prompt runs, the next one is already queued on the server."""
    fake.hold_at_step = 1
    results: list[Any] = []
    workers = [
        threading.Thread(
            target=lambda run_id=run_id: results.append(
                backend(fake).generate(request(), context(run_id))
            )
        )
        for run_id in ("run-a", "run-b")
    ]
    for worker in workers:
        worker.start()
    wait_for(lambda: fake.held.is_set() and len(fake.pending_ids()) == 1, "one running, one queued")
    fake.release()
    for worker in workers:
        worker.join(timeout=WAIT_S)
    assert len(results) == 2
    assert len(fake.history_ids()) == 2


# -- what the real server does (checked against ComfyUI v0.8.0 on a CPU) --------------------------


def test_progress_of_a_workflow_without_a_sampler_reaches_the_log_node_by_node(
    fake: FakeComfyUI, tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    fake.node_delay_s = {"ImageBlur": 1.1}
    reports: list[Progress] = []
    log = logging.getLogger(LOGGER)
    throttle = ProgressThrottle(log, "backend 'gpu' (comfyui)", (reports.append,))
    weightless(fake, tmp_path).generate(request(), context(progress=throttle))

    fractions = [report.fraction for report in reports]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    blurs = {report.node_id for report in reports if report.node_class == "ImageBlur"}
    assert blurs == {"10", "11"}
    assert all(report.step is None for report in reports), "no progress bar, no steps"
    assert "backend 'gpu' (comfyui): " in logs.text
    assert "ImageBlur (node 11) - " in logs.text
    lines = [r.getMessage() for r in logs.records if "backend 'gpu' (comfyui): " in r.getMessage()]
    assert len(lines) == len(reports) <= 5, "throttled: at most a line per second"


def test_an_interrupt_lets_the_running_node_finish_and_stops_before_the_next(
    fake: FakeComfyUI, tmp_path: Path
) -> None:
    fake.node_delay_s = {"ImageBlur": 1.0}
    sent_at: list[float] = []

    def interrupt_during_the_first_blur() -> None:
        wait_for(lambda: fake.running_id() is not None, "our prompt to run")
        time.sleep(0.3)
        sent_at.append(time.monotonic())
        httpx.post(f"{fake.url}/interrupt", json={})

    other_user = threading.Thread(target=interrupt_during_the_first_blur, daemon=True)
    other_user.start()
    with pytest.raises(PermanentBackendError) as raised:
        weightless(fake, tmp_path).generate(request(), context())
    ended_at = time.monotonic()
    other_user.join()
    assert "was interrupted on the server at node 11 (ImageBlur), not by this run" in str(
        raised.value
    )
    assert ended_at - sent_at[0] >= 0.6, "node 10 ran to its end first"


def test_a_broken_node_that_leads_to_no_output_is_neither_checked_nor_run(
    fake: FakeComfyUI, tmp_path: Path
) -> None:
    graph = json.loads(json.dumps(WEIGHTLESS_WORKFLOW))
    graph["20"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "nope.ckpt"}}
    result = weightless(fake, tmp_path, graph).generate(request(), context())
    assert decoded(result.image).size == (768, 512)

    graph["21"] = {"class_type": "NoSuchNode", "inputs": {}}
    with pytest.raises(PermanentBackendError) as raised:
        weightless(fake, tmp_path, graph).generate(request(), context(run_id="run-2"))
    assert str(raised.value) == (
        "ComfyUI rejected the prompt (400): Cannot execute because node NoSuchNode does not "
        "exist. (Node ID '#21')"
    )


def two_outputs(broken: str) -> dict[str, Any]:
    """The weightless workflow with a PreviewImage beside the SaveImage; ``broken`` ("save"
    or "preview") names the branch whose node fails validation."""
    graph = json.loads(json.dumps(WEIGHTLESS_WORKFLOW))
    graph["12"] = {"class_type": "ImageBlur", "inputs": {"image": ["4", 0], "blur_radius": 3}}
    graph["12"]["inputs"]["sigma"] = 1.0
    graph["13"] = {"class_type": "PreviewImage", "inputs": {"images": ["12", 0]}}
    graph["11" if broken == "save" else "12"]["inputs"]["blur_radius"] = 99
    return graph


def test_a_prompt_queued_without_the_image_output_is_canceled_and_refused(
    fake: FakeComfyUI, tmp_path: Path
) -> None:
    fake.paused = True
    adapter = weightless(fake, tmp_path, two_outputs(broken="save"))
    with pytest.raises(PermanentBackendError) as raised:
        adapter.generate(request(), context())
    message = str(raised.value)
    assert message.startswith("ComfyUI rejected the prompt's output node: outputs failed")
    assert "node 11 (ImageBlur) input 'blur_radius': Value 99 bigger than max of 31" in message
    assert message.endswith("deleted from the queue)")
    assert fake.pending_ids() == [] and fake.history_ids() == []


def test_a_dropped_side_output_is_logged_and_the_image_still_made(
    fake: FakeComfyUI, tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    result = weightless(fake, tmp_path, two_outputs(broken="preview")).generate(
        request(), context()
    )
    assert decoded(result.image).format == "PNG"
    assert "the server dropped outputs 13: outputs failed validation; node 12 (ImageBlur)" in (
        logs.text
    )


# -- check ----------------------------------------------------------------------------------------


def test_check_reports_version_vram_and_model(fake: FakeComfyUI) -> None:
    ok = backend(fake).check()
    assert (ok.reachable, ok.credentials, ok.model_present) == (True, None, True)
    assert ok.detail == (
        "ComfyUI 0.3.43, cuda:0 NVIDIA GeForce RTX 4070 Ti SUPER : cudaMallocAsync: 12.0 of "
        "16.0 GiB VRAM free; workflow flux-dev valid on the server, model "
        "flux1-dev.safetensors present"
    )
    assert fake.requests("GET")[0].path == "/system_stats"

    unreachable = ComfyUIBackend(url=f"http://127.0.0.1:{closed_port()}").check()
    assert (unreachable.reachable, unreachable.model_present) == (False, None)
    assert "cannot reach" in unreachable.detail


def test_check_validates_the_workflow_against_object_info_naming_each_node(
    fake: FakeComfyUI, tmp_path: Path
) -> None:
    def check(graph: dict[str, Any], inputs: dict[str, str]) -> str:
        path = tmp_path / "checked.json"
        path.write_text(json.dumps(graph), encoding="utf-8")
        result = backend(fake, workflow=str(path), inputs=inputs).check()
        assert (result.reachable, result.model_present) == (True, False)
        return result.detail

    unknown = json.loads(json.dumps(WEIGHTLESS_WORKFLOW))
    unknown["20"] = {"class_type": "NoSuchNodeXYZ", "inputs": {}}
    workflow = tmp_path / "checked.json"
    assert check(unknown, WEIGHTLESS_INPUTS).endswith(
        f"workflow {workflow}: node 20 (NoSuchNodeXYZ): node class NoSuchNodeXYZ does not "
        "exist on the server (a custom node that is not installed?)"
    )

    classic = json.loads(json.dumps(CLASSIC_WORKFLOW))
    classic["4"]["inputs"]["ckpt_name"] = "nope.safetensors"
    del classic["3"]["inputs"]["cfg"]
    detail = check(classic, {"prompt": "6.text"})
    assert detail.endswith(
        f"workflow {workflow}: node 3 (KSampler) input 'cfg': required input is missing; "
        "node 4 (CheckpointLoaderSimple) input 'ckpt_name': model file 'nope.safetensors' is "
        "not on the server; available: flux1-dev-fp8.safetensors"
    )
    assert [r.path for r in fake.requests("POST")] == [], "checking queues nothing"


def test_cost_is_zero_on_the_own_gpu() -> None:
    instance = build_backend("gpu", {"type": "comfyui", "url": "http://mrock:8188"})
    price = instance.backend.estimate_price(request())
    assert (price.usd, price.source) == (0.0, "free")


# -- the generate_image job end to end -----------------------------------------------------------


def run_job(config_file: Path, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return build_generate_image_job(retry_delay_s=0).execute_in_process(
        run_config={
            "ops": {
                "enrich_prompt": {"config": {"prompt": "a lighthouse", "width": 768, "height": 512}}
            },
            "resources": file_resources(config_file),
        },
        instance=instance,
        raise_on_error=False,
    )


def test_generate_image_job_end_to_end_with_a_retried_history_read(
    fake: FakeComfyUI,
    write_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
) -> None:
    fake.history_replies.append(Reply(503, "Service Unavailable"))
    fake.step_delay_s = 0.1
    config_file = write_config(
        {
            "default_backend": "gpu",
            "backends": {
                "gpu": {
                    "type": "comfyui",
                    "url": fake.url,
                    "workflow": "flux-dev",
                    "poll_interval_s": 0.02,
                    "check_interval_s": 0.5,
                }
            },
        }
    )
    result = run_job(config_file, dagster_instance)

    assert result.success, step_failure_text(result)
    [made] = result.output_for_node("generate_gpu")
    assert made.metadata.model == "flux1-dev.safetensors"
    (body,) = fake.submitted()
    graph = body["prompt"]
    assert "a lighthouse" in value(graph, "6.text")
    assert (value(graph, "27.width"), value(graph, "27.height")) == (768, 512)
    assert value(graph, "9.filename_prefix") == f"imagen/{result.run_id}"
    [stored] = result.output_for_node("write_files")
    with Image.open(stored.image_path) as image:
        assert (image.format, image.size) == ("PNG", (768, 512))
    sidecar = json.loads(Path(stored.sidecar_path).read_text(encoding="utf-8"))
    assert sidecar["backend"] == {"instance": "gpu", "type": "comfyui", "options": {}}
    assert sidecar["result"]["seed"] == value(graph, "25.noise_seed")
    assert sidecar["result"]["extra"]["prompt_id"] == body["prompt_id"]
    logs = "\n".join(
        str(record.user_message) for record in dagster_instance.all_logs(result.run_id)
    )
    assert "transient failure on attempt 1" in logs
    assert "already finished; using its image" in logs
    assert "backend 'gpu' (comfyui): 0% - " in logs
    assert re.search(
        r"backend 'gpu' \(comfyui\): \d+% - SamplerCustomAdvanced \(node 13\) step", logs
    )
    assert "backend 'gpu' (comfyui): 100% - SaveImage (node 9) - " in logs
