"""Source images on ComfyUI: the flux-dev-img2img template and a workflow's ``image`` input,
uploaded with ``POST /upload/image`` against the loopback fake, end to end with lineage."""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest
from PIL import Image
from pydantic import ValidationError

from imagen_pipeline.backends.comfyui import ComfyUIBackend
from imagen_pipeline.backends.comfyui.validation import workflow_problems
from imagen_pipeline.backends.contract import GenerationContext, GenerationRequest
from imagen_pipeline.backends.sources import SourceImage
from imagen_pipeline.defs.jobs import build_generate_image_job
from imagen_pipeline.errors import InvalidRequestError
from imagen_pipeline_tests.fakes.comfyui_server import (
    DEFAULT_MODELS,
    FakeComfyUI,
    object_infos,
    running_fake_comfyui,
)
from imagen_pipeline_tests.fixtures.imagen import file_resources, step_failure_text

LOGGER = "imagen.test.comfyui"


@pytest.fixture
def fake() -> Iterator[FakeComfyUI]:
    with running_fake_comfyui() as server:
        yield server


def png(color: tuple[int, int, int], size: tuple[int, int] = (96, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def source(tmp_path: Path, color: tuple[int, int, int] = (0, 0, 255)) -> SourceImage:
    data = png(color)
    path = tmp_path / f"source-{color[0]}-{color[1]}-{color[2]}.png"
    path.write_bytes(data)
    return SourceImage(
        position=0,
        path=str(path),
        origin=f"file {path}",
        sha256=hashlib.sha256(data).hexdigest(),
        mime="image/png",
        bytes=len(data),
        width=96,
        height=64,
    )


def img2img(fake: FakeComfyUI, **fields: Any) -> ComfyUIBackend:
    return ComfyUIBackend(url=fake.url, workflow="flux-dev-img2img", poll_interval_s=0.02, **fields)


def request(*sources: SourceImage, **fields: Any) -> GenerationRequest:
    return GenerationRequest(
        prompt="the same, at dusk",
        width=512,
        height=384,
        seed=7,
        sources=list(sources),
        source_count=len(sources),
        **fields,
    )


def context(attempt: int = 0) -> GenerationContext:
    return GenerationContext(
        run_id="run-src", attempt=attempt, instance_name="gpu", log=logging.getLogger(LOGGER)
    )


def sent(fake: FakeComfyUI, index: int = -1) -> dict[str, Any]:
    return fake.submitted()[index]["prompt"]


def test_the_source_is_uploaded_under_its_sha256_and_loaded_by_the_template(
    fake: FakeComfyUI, tmp_path: Path
) -> None:
    blue = source(tmp_path)
    result = img2img(fake).generate(request(blue, mode="img2img", strength=0.4), context())

    [upload] = fake.uploads
    assert upload["data"] == Path(blue.path).read_bytes(), "the source bytes reached ComfyUI"
    name = f"imagen-{blue.sha256}.png"
    assert (upload["filename"], upload["type"], upload["overwrite"]) == (name, "input", None)
    assert upload["content_type"] == "image/png"
    assert fake.file("input", name) == Path(blue.path).read_bytes()
    graph = sent(fake)
    assert graph["40"]["inputs"]["image"] == name
    assert graph["31"]["inputs"]["denoise"] == 0.4
    assert (graph["42"]["inputs"]["width"], graph["42"]["inputs"]["height"]) == (512, 384)
    assert result.metadata.extra["uploaded"] == [name]
    assert (result.facts.width, result.facts.height) == (512, 384)

    red = img2img(fake).generate(request(source(tmp_path, (255, 0, 0))), context())
    assert red.image != result.image, "the fake renders from the loaded bytes"
    assert sent(fake)["31"]["inputs"]["denoise"] == 0.75, "no strength: the template's"


def test_a_retry_finds_the_upload_on_the_server_and_sends_it_once(
    fake: FakeComfyUI, tmp_path: Path
) -> None:
    blue = source(tmp_path)
    img2img(fake).generate(request(blue), context())
    img2img(fake).generate(request(blue), context(attempt=1))
    assert len(fake.uploads) == 1
    assert fake.input_files() == [f"imagen-{blue.sha256}.png"]


def test_a_file_already_listed_under_the_name_is_not_sent_again(
    fake: FakeComfyUI, tmp_path: Path
) -> None:
    blue = source(tmp_path)
    name = f"imagen-{blue.sha256}.png"
    httpx.post(
        f"{fake.url}/upload/image", files={"image": (name, png((9, 9, 9)), "image/png")}
    ).raise_for_status()
    fake.uploads.clear()
    result = img2img(fake).generate(request(blue), context())
    assert result.metadata.extra["uploaded"] == [name], "listed, so not sent again"
    assert fake.uploads == []


def test_the_upload_endpoint_answers_like_the_real_server(fake: FakeComfyUI) -> None:
    url = f"{fake.url}/upload/image"
    first = httpx.post(url, files={"image": ("a.png", png((1, 2, 3)), "image/png")})
    assert first.json() == {"name": "a.png", "subfolder": "", "type": "input"}
    again = httpx.post(url, files={"image": ("a.png", png((1, 2, 3)), "image/png")})
    assert again.json()["name"] == "a.png"
    other = httpx.post(url, files={"image": ("a.png", png((3, 2, 1)), "image/png")})
    assert other.json()["name"] == "a (1).png"
    kept = httpx.post(
        url, files={"image": ("a.png", png((3, 2, 1)), "image/png")}, data={"overwrite": "true"}
    )
    assert kept.json()["name"] == "a.png"
    sub = httpx.post(
        url, files={"image": ("b.png", b"x", "image/png")}, data={"subfolder": "imagen"}
    )
    assert sub.json() == {"name": "b.png", "subfolder": "imagen", "type": "input"}
    escape = httpx.post(url, files={"image": ("c.png", b"x")}, data={"subfolder": "../.."})
    assert (escape.status_code, escape.content) == (400, b"")
    missing = httpx.post(url, data={"type": "input"}, files={"other": ("c.png", b"x")})
    assert (missing.status_code, missing.content) == (400, b"")
    wrong_type = httpx.post(url, files={"image": ("c.png", b"x")}, data={"type": "nope"})
    assert wrong_type.status_code == 500
    assert fake.input_files() == ["a (1).png", "a.png"]


def test_a_missing_loadimage_file_is_refused_by_the_prompt_check(fake: FakeComfyUI) -> None:
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "nosuch.png"}},
        "2": {
            "class_type": "ImageBlur",
            "inputs": {"image": ["1", 0], "blur_radius": 3, "sigma": 1.0},
        },
        "9": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "t"}},
    }
    answer = httpx.post(f"{fake.url}/prompt", json={"prompt": graph})
    assert answer.status_code == 400
    [error] = answer.json()["node_errors"]["1"]["errors"]
    assert error == {
        "type": "custom_validation_failed",
        "message": "Custom validation failed for node",
        "details": "image - Invalid image file: nosuch.png",
        "extra_info": {"input_name": "image"},
    }


def test_what_the_template_takes_and_what_it_refuses_before_any_call(
    fake: FakeComfyUI, tmp_path: Path
) -> None:
    backend = img2img(fake)
    support = backend.source_support()
    assert (support.max_images, support.modes, support.mask) == (1, ("img2img",), False)
    blue = source(tmp_path)
    with pytest.raises(InvalidRequestError, match="names 2 images; backend 'gpu' takes up to 1"):
        backend.check_sources("gpu", request(blue, blue))
    with pytest.raises(InvalidRequestError, match="'edit' is not available"):
        backend.check_sources("gpu", request(blue, mode="edit"))
    with pytest.raises(InvalidRequestError, match="starts from an image"):
        backend.generate(request(), context())
    assert fake.received == []
    text_only = ComfyUIBackend(url=fake.url)
    assert text_only.source_support().max_images == 0


def test_image_must_go_to_a_loadimage_and_no_option_may_set_it(fake: FakeComfyUI) -> None:
    with pytest.raises(ValidationError, match="is not a LoadImage node's image input"):
        ComfyUIBackend(url=fake.url, inputs={"image": "6.text"})
    backend = img2img(fake)
    with pytest.raises(InvalidRequestError, match="only the request's source_images field"):
        backend.check_options({"40.image": "../../secret.png"}, from_client=False)
    with pytest.raises(InvalidRequestError, match="only the request's strength field"):
        backend.check_options({"31.denoise": 0.2}, from_client=False)
    ruled = img2img(fake, client_options={"request.strength": {"min": 0.2, "max": 0.8}})
    assert ruled.client_option_problems() == []
    edit = img2img(fake, client_options={"request.mode": {"choices": ["edit"]}})
    assert [key for key, _ in edit.client_option_problems()] == ["request.mode"]


def test_check_validates_the_template_and_needs_loadimage(fake: FakeComfyUI) -> None:
    result = img2img(fake).check()
    assert result.model_present, result.detail
    assert "workflow flux-dev-img2img valid on the server" in result.detail
    assert "the source image is uploaded to node 40 (LoadImage)" in result.detail
    graph = img2img(fake).load().graph
    infos = object_infos(DEFAULT_MODELS)
    without = {name: info for name, info in infos.items() if name != "LoadImage"}
    problems = workflow_problems(graph, without.get, {("40", "image")})
    assert problems == [
        "node 40 (LoadImage): node class LoadImage does not exist on the server "
        "(a custom node that is not installed?)"
    ]


def run_job(
    config_file: Path, instance: dg.DagsterInstance, **source_fields: Any
) -> dg.ExecuteInProcessResult:
    return build_generate_image_job(retry_delay_s=0).execute_in_process(
        run_config={
            "ops": {
                "enrich_prompt": {
                    "config": {"prompt": "at dusk", "width": 512, "height": 384, **source_fields}
                }
            },
            "resources": file_resources(config_file),
        },
        instance=instance,
        raise_on_error=False,
    )


def test_a_job_from_a_file_uploads_it_and_records_its_parent(
    fake: FakeComfyUI,
    tmp_path: Path,
    write_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
) -> None:
    config_file = write_config(
        {
            "default_backend": "gpu",
            "backends": {
                "gpu": {
                    "type": "comfyui",
                    "url": fake.url,
                    "workflow": "flux-dev-img2img",
                    "poll_interval_s": 0.02,
                }
            },
        }
    )
    data = png((0, 0, 255))
    path = tmp_path / "blue.png"
    path.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()

    too_many = run_job(config_file, dagster_instance, source_images=[str(path), str(path)])
    assert not too_many.success
    assert "takes up to 1 source image" in step_failure_text(too_many)
    assert fake.received == [], "refused before any call"

    result = run_job(
        config_file, dagster_instance, source_images=[str(path)], mode="img2img", strength=0.3
    )
    assert result.success, step_failure_text(result)
    [upload] = fake.uploads
    assert upload["data"] == data
    assert sent(fake)["40"]["inputs"]["image"] == f"imagen-{sha}.png"
    [stored] = result.output_for_node("write_files")
    sidecar = json.loads(Path(stored.sidecar_path).read_text(encoding="utf-8"))
    [parent] = sidecar["sources"]["images"]
    assert (parent["sha256"], parent["origin"]) == (sha, f"file {path}")
    assert (sidecar["sources"]["mode"], sidecar["sources"]["strength"]) == ("img2img", 0.3)
