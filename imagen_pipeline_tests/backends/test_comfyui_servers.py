"""Several ComfyUI servers as one backend: least busy first, never one without the model
files, an unreachable one skipped (and its job sent on), a recovered one used again."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest

from imagen_pipeline.backends.comfyui import ComfyUIBackend
from imagen_pipeline.backends.comfyui.servers import Server
from imagen_pipeline.backends.contract import GenerationContext, GenerationRequest
from imagen_pipeline.backends.registry import build_backend
from imagen_pipeline.defs.jobs import build_generate_image_job
from imagen_pipeline.errors import ConfigError, UnreachableBackendError
from imagen_pipeline_tests.fakes.comfyui_server import FakeComfyUI, running_fake_comfyui
from imagen_pipeline_tests.fakes.loopback_http import closed_port
from imagen_pipeline_tests.fixtures.imagen import file_resources, step_failure_text

LOGGER = "imagen.test.comfyui.servers"
WAIT_S = 30.0


@pytest.fixture
def boxes() -> Iterator[tuple[FakeComfyUI, FakeComfyUI, FakeComfyUI]]:
    with running_fake_comfyui() as a, running_fake_comfyui() as b, running_fake_comfyui() as c:
        yield a, b, c


def backend(*urls: str, **fields: Any) -> ComfyUIBackend:
    servers = [{"url": url, "label": f"box{index}"} for index, url in enumerate(urls)]
    settings: dict[str, Any] = {
        "servers": servers,
        "poll_interval_s": 0.02,
        "check_interval_s": 0.3,
        "reconnect_grace_s": 0.5,
        "timeout_s": 20.0,
        **fields,
    }
    return ComfyUIBackend(**settings)


def request() -> GenerationRequest:
    return GenerationRequest(prompt="a fox", width=512, height=512, seed=3)


def context(run_id: str = "run-1", attempt: int = 0) -> GenerationContext:
    return GenerationContext(
        run_id=run_id, attempt=attempt, instance_name="gpu", log=logging.getLogger(LOGGER)
    )


def servers_of(adapter: ComfyUIBackend) -> dict[str, Server]:
    return {server.name: server for server in adapter._servers(logging.getLogger(LOGGER))}


def test_the_least_busy_server_gets_the_job(
    boxes: tuple[FakeComfyUI, FakeComfyUI, FakeComfyUI],
) -> None:
    a, b, c = boxes
    adapter = backend(a.url, b.url, c.url)
    servers = servers_of(adapter)
    held = [servers["box0"].slots.try_take("other run"), servers["box2"].slots.try_take("x")]
    try:
        result = adapter.generate(request(), context())
    finally:
        for slot in held:
            assert slot is not None
            slot.release()
    assert result.metadata.server == "box1"
    assert result.metadata.extra["comfyui_url"] == b.url
    assert (len(a.submitted()), len(b.submitted()), len(c.submitted())) == (0, 1, 0)


def test_jobs_spread_over_the_servers_while_each_is_busy(
    boxes: tuple[FakeComfyUI, FakeComfyUI, FakeComfyUI],
) -> None:
    a, b, _ = boxes
    for fake in (a, b):
        fake.step_delay_s = 0.05
    adapter = backend(a.url, b.url, pool_limit=1)
    made: dict[str, str] = {}

    def run(run_id: str) -> None:
        result = adapter.generate(request(), context(run_id))
        made[run_id] = result.metadata.server

    workers = [threading.Thread(target=run, args=(f"run-{n}",)) for n in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=WAIT_S * 2)
    assert sorted(made.values()) == ["box0", "box0", "box1", "box1"]
    assert (len(a.submitted()), len(b.submitted())) == (2, 2)


def test_two_runs_that_start_together_go_to_two_idle_servers(
    boxes: tuple[FakeComfyUI, FakeComfyUI, FakeComfyUI],
) -> None:
    """Each server has two slots, so either would take both runs; the least busy one at the
    moment a run takes its slot gets it (runs that rank the servers before either has taken
    a slot would both queue on the first)."""
    a, b, _ = boxes
    for fake in (a, b):
        fake.step_delay_s = 0.02
    adapter = backend(a.url, b.url, pool_limit=2)

    def run(run_id: str, start: threading.Barrier, made: dict[str, str]) -> None:
        start.wait()
        made[run_id] = adapter.generate(request(), context(run_id)).metadata.server

    for round_ in range(3):
        made: dict[str, str] = {}
        start = threading.Barrier(2)
        workers = [
            threading.Thread(target=run, args=(f"run-{round_}-{n}", start, made)) for n in range(2)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=WAIT_S)
        assert sorted(made.values()) == ["box0", "box1"], made


def test_a_server_without_the_model_files_never_gets_the_job(
    boxes: tuple[FakeComfyUI, FakeComfyUI, FakeComfyUI],
) -> None:
    a, b, _ = boxes
    a.models["diffusion_models"] = ["flux1-schnell.safetensors"]
    result = backend(a.url, b.url).generate(request(), context())
    assert result.metadata.server == "box1"
    assert a.submitted() == []
    assert result.metadata.extra["redispatched_from"] == ["box0"]


def test_a_server_that_dies_mid_job_hands_the_job_to_another_with_one_image(
    boxes: tuple[FakeComfyUI, FakeComfyUI, FakeComfyUI],
) -> None:
    a, b, _ = boxes
    a.hold_at_step = 2
    adapter = backend(a.url, b.url)

    def kill_box0() -> None:
        deadline = time.monotonic() + WAIT_S
        while not a.held.is_set():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        a.shut_down()

    killer = threading.Thread(target=kill_box0, daemon=True)
    killer.start()
    result = adapter.generate(request(), context())
    killer.join()
    assert result.metadata.server == "box1"
    assert result.metadata.extra["redispatched_from"] == ["box0"]
    assert len(a.submitted()) == 1 and len(b.submitted()) == 1
    assert b.history_ids() == [result.metadata.extra["prompt_id"]]
    assert servers_of(adapter)["box0"].down_until() > time.time(), "box0 is skipped for a while"

    again = adapter.generate(request(), context("run-2"))
    assert again.metadata.server == "box1"
    assert again.metadata.extra["redispatched_from"] is None, "box0 not even tried"


def test_a_server_back_after_its_backoff_gets_work_again(
    boxes: tuple[FakeComfyUI, FakeComfyUI, FakeComfyUI],
) -> None:
    a, b, _ = boxes
    adapter = backend(a.url, b.url)
    box0 = servers_of(adapter)["box0"]
    box0.mark_down("refused")
    assert adapter.generate(request(), context()).metadata.server == "box1"
    record = json.loads(box0.health_path.read_text(encoding="utf-8"))
    box0.health_path.write_text(json.dumps({**record, "down_until": time.time() - 1}), "utf-8")
    box1 = servers_of(adapter)["box1"]
    held = [box1.slots.try_take("busy"), box1.slots.try_take("busy")]
    try:
        result = adapter.generate(request(), context("run-2"))
    finally:
        for slot in held:
            assert slot is not None
            slot.release()
    assert result.metadata.server == "box0", "re-probed, answered, used"
    assert box0.down_until() == 0.0, "answered: marked up"


def test_when_every_server_is_unreachable_the_error_names_each(
    boxes: tuple[FakeComfyUI, FakeComfyUI, FakeComfyUI],
) -> None:
    gone = [f"http://127.0.0.1:{closed_port()}", f"http://127.0.0.1:{closed_port()}"]
    with pytest.raises(UnreachableBackendError) as raised:
        backend(*gone).generate(request(), context())
    message = str(raised.value)
    assert message.startswith("no ComfyUI server of gpu can take the job: box0: unreachable")
    assert "; box1: unreachable (" in message and "skipped for 5s" in message


def test_check_shows_every_server_with_its_state(
    boxes: tuple[FakeComfyUI, FakeComfyUI, FakeComfyUI],
) -> None:
    a, _, _ = boxes
    gone = f"http://127.0.0.1:{closed_port()}"
    result = backend(a.url, gone).check()
    assert (result.reachable, result.model_present) == (True, True)
    box0, box1 = result.detail.split(" | ")
    assert box0.startswith(f"box0 ({a.url}, 2 slots): ComfyUI 0.3.43")
    assert "valid on the server, model flux1-dev.safetensors present" in box0
    assert box1.startswith(f"box1 ({gone}, 2 slots): down: ComfyUI system stats: cannot reach")


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({}, r"set url \(e\.g\. http://mrock:8188\) or servers"),
        (
            {"url": "http://a:8188", "servers": [{"url": "http://b:8188"}]},
            r"set url \(one server\) or servers \(several\), not both",
        ),
        (
            {
                "servers": [
                    {"url": "http://a:8188", "label": "x"},
                    {"url": "http://b:8188", "label": "x"},
                ]
            },
            r"servers: each label may appear once; repeated: \['x'\]",
        ),
        (
            {"servers": [{"url": "http://a:8188"}, {"url": "http://a:8188/"}]},
            r"servers: each url may appear once",
        ),
        ({"servers": [{"url": "ftp://a"}]}, r"servers\.0\.url: Value error, must be an http"),
        ({"servers": [{"url": "http://a:1", "slots": 0}]}, r"servers\.0\.slots: Input should be"),
        ({"servers": [{"url": "http://a:1", "gpu": 1}]}, r"servers\.0\.gpu: unknown key"),
    ],
)
def test_the_servers_block_is_validated(block: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_backend("gpu", {"type": "comfyui", **block})


def test_the_server_that_made_the_image_is_in_every_record_of_it(
    boxes: tuple[FakeComfyUI, FakeComfyUI, FakeComfyUI],
    migrated_database_url: str,
    write_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
) -> None:
    a, b, _ = boxes
    a.models["diffusion_models"] = []
    servers = [{"url": a.url, "label": "mrock"}, {"url": b.url, "label": "box2"}]
    config_file = write_config(
        {"default_backend": "gpu", "backends": {"gpu": {"type": "comfyui", "servers": servers}}}
    )
    result = build_generate_image_job(retry_delay_s=0).execute_in_process(
        run_config={
            "ops": {"enrich_prompt": {"config": {"prompt": "a fox", "width": 512, "height": 512}}},
            "resources": file_resources(config_file),
        },
        instance=dagster_instance,
        raise_on_error=False,
    )
    assert result.success, step_failure_text(result)
    [stored] = result.output_for_node("write_files")
    sidecar = json.loads(Path(stored.sidecar_path).read_text(encoding="utf-8"))
    assert sidecar["result"]["server"] == "box2"
    assert sidecar["result"]["extra"]["redispatched_from"] == ["mrock"]
    with psycopg.connect(migrated_database_url) as conn:
        usage = conn.execute("SELECT backend_instance, backend_server FROM mai.imagen_usage")
        assert usage.fetchall() == [("gpu", "box2")]
        images = conn.execute("SELECT backend, backend_server FROM imagen.images")
        assert images.fetchall() == [("gpu", "box2")]
    materialization = result.asset_materializations_for_node("write_files")[0]
    assert materialization.metadata["backend_server"].value == "box2"
    run = dagster_instance.get_run_by_id(result.run_id)
    assert run is not None and run.tags["imagen/server"] == "box2"
    assert b.submitted() and not a.submitted()
