"""OpenAI edits: source images and a mask sent to ``/v1/images/edits`` as multipart against
the loopback fake, priced with image input tokens, refused before the call when over
OpenAI's limits, end to end with lineage."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest

from imagen_pipeline.backends.contract import GenerationContext, GenerationRequest
from imagen_pipeline.backends.openai import OpenAIImagesBackend
from imagen_pipeline.backends.sources import SourceImage
from imagen_pipeline.errors import InvalidRequestError, PermanentBackendError
from imagen_pipeline_tests.fakes.openai_server import (
    FakeOpenAI,
    Reply,
    error_body,
    parse_form,
    running_fake_openai,
)
from imagen_pipeline_tests.fixtures.imagen import step_failure_text
from imagen_pipeline_tests.fixtures.sources import image_bytes, run_job, source_image

KEY = "sk-proj-ImagenFakeKey0123456789abcdefghijklmnopWXYZ"
KEY_ENV = "IMAGEN_TEST_OPENAI_KEY"
PRICES = {"gpt-image-2": {"text_input": 5.0, "image_input": 8.0, "image_output": 30.0}}


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with running_fake_openai(KEY) as server:
        yield server


@pytest.fixture(autouse=True)
def key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)


def backend(fake: FakeOpenAI, **fields: Any) -> OpenAIImagesBackend:
    settings = {"api_key_env": KEY_ENV, "base_url": fake.base_url, "token_prices": PRICES}
    return OpenAIImagesBackend(**{**settings, **fields})


def request(
    *sources: SourceImage, mask: SourceImage | None = None, **fields: Any
) -> GenerationRequest:
    return GenerationRequest(
        prompt="the same, at dusk",
        width=1024,
        height=1024,
        sources=list(sources),
        source_count=len(sources),
        mask=mask,
        has_mask=mask is not None,
        **fields,
    )


def context() -> GenerationContext:
    return GenerationContext(
        run_id="run-edit", instance_name="oai", log=logging.getLogger("imagen.test.openai")
    )


def sent_form(fake: FakeOpenAI, index: int = -1) -> Any:
    edit = fake.edits()[index]
    return parse_form(edit.headers["content-type"], edit.body)


def test_sources_and_mask_reach_the_edit_endpoint_as_multipart(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    first = source_image(tmp_path, (0, 0, 255), (1024, 1024))
    second = source_image(tmp_path, (255, 0, 0), (512, 512), position=1, mime="image/jpeg")
    mask = source_image(tmp_path, (0, 0, 0, 0), (1024, 1024), role="mask")
    result = backend(fake, quality="low").generate(request(first, second, mask=mask), context())

    assert fake.generations() == []
    form = sent_form(fake)
    assert [part.field for part in form.images] == ["image[]", "image[]"]
    assert [part.data for part in form.images] == [
        Path(first.path).read_bytes(),
        Path(second.path).read_bytes(),
    ], "the source bytes reached OpenAI, in order"
    assert [part.content_type for part in form.images] == ["image/png", "image/jpeg"]
    assert form.mask is not None and form.mask.data == Path(mask.path).read_bytes()
    assert form.fields == {
        "model": "gpt-image-2",
        "prompt": "the same, at dusk",
        "n": 1,
        "size": "1024x1024",
        "quality": "low",
    }
    assert fake.edits()[0].headers["authorization"] == f"Bearer {KEY}"
    usage = result.metadata.extra["usage"]
    image_tokens = usage["input_tokens_details"]["image_tokens"]
    assert image_tokens > 0, "the inputs are billed as image input tokens"
    assert result.metadata.cost_usd == round(
        (usage["input_tokens_details"]["text_tokens"] * 5 + image_tokens * 8) / 1_000_000
        + usage["output_tokens"] * 30 / 1_000_000,
        6,
    )
    assert result.metadata.extra["endpoint"] == "images/edits"
    plain = backend(fake, quality="low").generate(request(second), context())
    assert plain.image != result.image, "the fake renders from the first image's bytes"


def test_an_edit_is_estimated_with_image_input_tokens(tmp_path: Path, fake: FakeOpenAI) -> None:
    instance = backend(fake, quality="low")
    text_only = instance.estimate_price(request())
    edit = instance.estimate_price(request(source_image(tmp_path, size=(1024, 1024))))
    assert text_only.usd is not None and edit.usd is not None
    assert edit.usd == pytest.approx(text_only.usd + 3970 * 1024 * 1024 / 1e6 * 8 / 1e6, abs=1e-5)


def test_over_openais_limits_is_refused_before_any_call(fake: FakeOpenAI, tmp_path: Path) -> None:
    instance = backend(fake)
    first = source_image(tmp_path, size=(64, 64))
    support = instance.source_support()
    assert (support.max_images, support.modes, support.mask) == (16, ("edit",), True)
    with pytest.raises(InvalidRequestError, match="names 17 images; backend 'oai' takes up to 16"):
        instance.check_sources("oai", request(*[first] * 17))
    with pytest.raises(InvalidRequestError, match="'img2img' is not available"):
        instance.check_sources("oai", request(first, mode="img2img"))
    small_mask = source_image(tmp_path, (0, 0, 0, 0), (32, 32), role="mask")
    with pytest.raises(InvalidRequestError, match=r"mask: is 32x32; OpenAI needs the first"):
        instance.generate(request(first, mask=small_mask), context())
    jpeg_mask = source_image(tmp_path, (0, 0, 0), (64, 64), role="mask", mime="image/jpeg")
    with pytest.raises(InvalidRequestError, match="OpenAI takes a PNG mask"):
        instance.check_sources("oai", request(first, mask=jpeg_mask))
    with pytest.raises(PermanentBackendError, match="moderation: not a parameter of the multi"):
        backend(fake, moderation="low").generate(request(first), context())
    assert fake.received == []


def test_the_fake_refuses_a_bad_mask_like_openai(fake: FakeOpenAI) -> None:
    answer = httpx.post(
        f"{fake.base_url}/images/edits",
        headers={"Authorization": f"Bearer {KEY}"},
        data={"model": "gpt-image-2", "prompt": "x"},
        files=[
            ("image[]", ("a.png", image_bytes((1, 2, 3), (64, 64)), "image/png")),
            ("mask", ("m.png", image_bytes((0, 0, 0, 0), (32, 32)), "image/png")),
        ],
    )
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert (error["type"], error["param"], error["code"]) == (
        "invalid_request_error",
        "mask",
        "invalid_value",
    )
    missing = httpx.post(
        f"{fake.base_url}/images/edits",
        headers={"Authorization": f"Bearer {KEY}"},
        data={"model": "gpt-image-2", "prompt": "x", "moderation": "low"},
        files=[("image[]", ("a.png", image_bytes((1, 2, 3)), "image/png"))],
    )
    assert missing.json()["error"]["code"] == "unknown_parameter"


def test_an_edit_refused_by_openai_is_permanent_and_names_the_parameter(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    fake.replies.append(
        Reply(400, error_body("Invalid 'mask': not a PNG.", "mask", "invalid_value"))
    )
    with pytest.raises(PermanentBackendError, match=r"\(400, invalid_value, mask\)"):
        backend(fake).generate(request(source_image(tmp_path)), context())
    assert len(fake.edits()) == 1


def test_a_clients_mask_and_mode_follow_client_options(fake: FakeOpenAI) -> None:
    ruled = backend(fake, client_options={"request.mask": {"choices": [True]}})
    assert ruled.client_option_problems() == []
    img2img = backend(fake, client_options={"request.mode": {"choices": ["img2img"]}})
    assert [key for key, _ in img2img.client_option_problems()] == ["request.mode"]
    with pytest.raises(InvalidRequestError, match="mask: is not something a client may set"):
        backend(fake).check_source_fields(None, None, True, from_client=True)


def test_a_job_edits_local_files_and_records_its_parents(
    fake: FakeOpenAI,
    tmp_path: Path,
    write_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
) -> None:
    config_file = write_config(
        {
            "default_backend": "oai",
            "backends": {
                "oai": {
                    "type": "openai",
                    "api_key_env": KEY_ENV,
                    "base_url": fake.base_url,
                    "quality": "low",
                    "token_prices": PRICES,
                }
            },
        }
    )
    first = tmp_path / "first.png"
    first.write_bytes(image_bytes((0, 0, 255), (256, 256)))
    second = tmp_path / "second.png"
    second.write_bytes(image_bytes((0, 255, 0), (128, 128)))
    small_mask = tmp_path / "small-mask.png"
    small_mask.write_bytes(image_bytes((0, 0, 0, 0), (64, 64)))

    refused = run_job(
        config_file, dagster_instance, source_images=[str(first)], mask=str(small_mask)
    )
    assert not refused.success
    assert "OpenAI needs the first image's dimensions (256x256)" in step_failure_text(refused)
    assert fake.received == [], "refused before any call"

    result = run_job(config_file, dagster_instance, source_images=[str(first), str(second)])
    assert result.success, step_failure_text(result)
    form = sent_form(fake)
    assert [part.data for part in form.images] == [first.read_bytes(), second.read_bytes()]
    [stored] = result.output_for_node("write_files")
    sidecar = json.loads(Path(stored.sidecar_path).read_text(encoding="utf-8"))
    parents = sidecar["sources"]["images"]
    assert [parent["origin"] for parent in parents] == [f"file {first}", f"file {second}"]
    assert sidecar["sources"]["mode"] is None
    assert sidecar["result"]["extra"]["endpoint"] == "images/edits"
    assert sidecar["result"]["extra"]["usage"]["input_tokens_details"]["image_tokens"] > 0
