"""Source images on Replicate: FLUX.1 Kontext (``input_image``) and FLUX.2 (``input_images``)
as data URIs against the loopback fake, refused before the call when over a model's limits,
end to end with lineage."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest

from imagen_pipeline.backends.contract import GenerationContext, GenerationRequest
from imagen_pipeline.backends.replicate import ReplicateBackend
from imagen_pipeline.backends.sources import SourceImage
from imagen_pipeline.errors import InvalidRequestError, PermanentBackendError
from imagen_pipeline_tests.fakes.replicate_server import (
    DROP_AFTER_CREATE,
    FakeReplicate,
    running_fake_replicate,
)
from imagen_pipeline_tests.fixtures.imagen import step_failure_text
from imagen_pipeline_tests.fixtures.sources import image_bytes, run_job, source_image

TOKEN = "r8_ImagenFakeToken0123456789abcdefghijklm"
TOKEN_ENV = "IMAGEN_TEST_REPLICATE_TOKEN"
KONTEXT = "black-forest-labs/flux-kontext-pro"
FLUX_2 = "black-forest-labs/flux-2-pro"


@pytest.fixture
def fake() -> Iterator[FakeReplicate]:
    with running_fake_replicate(TOKEN) as server:
        yield server


@pytest.fixture(autouse=True)
def token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)


def backend(fake: FakeReplicate, model: str, **fields: Any) -> ReplicateBackend:
    return ReplicateBackend(
        model=model,
        api_token_env=TOKEN_ENV,
        base_url=fake.base_url,
        poll_interval_s=0.01,
        sync_wait_s=5,
        **fields,
    )


def request(*sources: SourceImage, **fields: Any) -> GenerationRequest:
    return GenerationRequest(
        prompt="the same, at dusk",
        width=1024,
        height=1024,
        seed=7,
        sources=list(sources),
        source_count=len(sources),
        **fields,
    )


def context() -> GenerationContext:
    return GenerationContext(
        run_id="run-src", instance_name="flux", log=logging.getLogger("imagen.test.replicate")
    )


def sent_input(fake: FakeReplicate, index: int = -1) -> dict[str, Any]:
    return fake.creates()[index].json()["input"]


def decoded_uri(uri: str, mime: str) -> bytes:
    head, _, payload = uri.partition(",")
    assert head == f"data:{mime};base64"
    return base64.b64decode(payload)


def test_kontext_gets_the_source_as_a_data_uri_in_input_image(
    fake: FakeReplicate, tmp_path: Path
) -> None:
    blue = source_image(tmp_path, (0, 0, 255), (96, 64))
    result = backend(fake, KONTEXT).generate(request(blue), context())

    sent = sent_input(fake)
    assert decoded_uri(sent["input_image"], "image/png") == Path(blue.path).read_bytes()
    assert (sent["aspect_ratio"], sent["seed"], sent["output_format"]) == ("1:1", 7, "png")
    assert fake.creates()[0].path == f"/v1/models/{KONTEXT}/predictions"
    recorded = result.metadata.extra["input"]["input_image"]
    assert recorded == f"data URI of source 0 (image/png, {blue.bytes} bytes, sha256 {blue.sha256})"
    red = backend(fake, KONTEXT).generate(request(source_image(tmp_path, (255, 0, 0))), context())
    assert red.image != result.image, "the fake renders from the input image"


def test_flux_2_gets_every_source_in_input_images(fake: FakeReplicate, tmp_path: Path) -> None:
    first = source_image(tmp_path, (0, 0, 255), (64, 64))
    second = source_image(tmp_path, (0, 255, 0), (32, 32), position=1, mime="image/jpeg")
    result = backend(fake, FLUX_2).generate(request(first, second, mode="edit"), context())

    sent = sent_input(fake)
    assert [
        decoded_uri(uri, s.mime)
        for uri, s in zip(sent["input_images"], [first, second], strict=True)
    ] == [
        Path(first.path).read_bytes(),
        Path(second.path).read_bytes(),
    ]
    assert (sent["aspect_ratio"], sent["width"], sent["height"]) == ("custom", 1024, 1024)
    assert result.facts.width == 1024
    assert len(result.metadata.extra["input"]["input_images"]) == 2


def test_what_each_model_takes_and_refuses_before_any_call(
    fake: FakeReplicate, tmp_path: Path
) -> None:
    kontext, flux_2 = backend(fake, KONTEXT), backend(fake, FLUX_2)
    flex = backend(fake, "black-forest-labs/flux-2-flex")
    assert kontext.source_support().max_images == 1
    assert flux_2.source_support().max_images == 8
    assert flex.source_support().max_images == 10
    assert backend(fake, "black-forest-labs/flux-schnell").source_support().max_images == 0
    one = source_image(tmp_path)
    with pytest.raises(InvalidRequestError, match="names 2 images; backend 'flux' takes up to 1"):
        kontext.generate(request(one, one), context())
    with pytest.raises(InvalidRequestError, match="names 9 images; backend 'flux' takes up to 8"):
        flux_2.generate(request(*[one] * 9), context())
    with pytest.raises(InvalidRequestError, match="'img2img' is not available"):
        flux_2.generate(request(one, mode="img2img", strength=0.5), context())
    mask = source_image(tmp_path, role="mask")
    with pytest.raises(InvalidRequestError, match="mask: is not available"):
        flux_2.generate(request(one, mask=mask, has_mask=True), context())
    strict = backend(fake, KONTEXT, extra_input={"safety_tolerance": 5})
    with pytest.raises(InvalidRequestError, match="at most 2 with an input image"):
        strict.generate(request(one), context())
    strict.generate(request(), context())
    assert len(fake.creates()) == 1, "only the text-only request was sent"
    with pytest.raises(InvalidRequestError, match="only the request's source_images field"):
        flux_2.check_options({"input_images": ["https://example.com/a.png"]}, from_client=False)


def test_the_fake_checks_the_input_shape_like_replicate(fake: FakeReplicate) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    uri = "data:image/png;base64," + base64.b64encode(image_bytes((1, 2, 3))).decode()
    too_many = httpx.post(
        f"{fake.base_url}/models/{FLUX_2}/predictions",
        headers=headers,
        json={"input": {"prompt": "x", "input_images": [uri] * 9}},
    )
    assert too_many.status_code == 422
    assert too_many.json()["invalid_fields"] == [
        {
            "type": "array_max_items",
            "field": "input.input_images",
            "description": "Array must have at most 8 items",
        }
    ]
    not_uri = httpx.post(
        f"{fake.base_url}/models/{KONTEXT}/predictions",
        headers=headers,
        json={"input": {"prompt": "x", "input_image": "blue.png"}},
    )
    assert not_uri.json()["invalid_fields"][0]["type"] == "format"
    broken = httpx.post(
        f"{fake.base_url}/models/{KONTEXT}/predictions",
        headers={**headers, "Prefer": "wait=5"},
        json={"input": {"prompt": "x", "input_image": "data:image/png;base64,bm90IGFuIGltYWdl"}},
    )
    assert broken.json()["status"] == "failed"


def test_a_lost_create_is_recovered_when_the_listing_shows_the_image_as_a_url(
    fake: FakeReplicate, tmp_path: Path
) -> None:
    """A retry must not create (and pay for) a second prediction because Replicate lists
    the source image by a URL of its own instead of the data URI it was sent."""
    fake.list_files_as_urls = True
    fake.create_replies.append(DROP_AFTER_CREATE)
    result = backend(fake, KONTEXT).generate(request(source_image(tmp_path)), context())
    assert len(fake.creates()) == 1
    assert result.metadata.extra["recovered_prediction"] is True


def test_a_prediction_failing_on_its_input_image_is_permanent(
    fake: FakeReplicate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import imagen_pipeline.backends.replicate.inputs as inputs

    monkeypatch.setattr(inputs, "data_uri", lambda source: "data:image/png;base64,bm90")
    with pytest.raises(PermanentBackendError, match="Failed to load input image"):
        backend(fake, KONTEXT).generate(request(source_image(tmp_path)), context())


def test_a_job_sends_local_files_to_kontext_and_records_the_parent(
    fake: FakeReplicate,
    tmp_path: Path,
    write_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
) -> None:
    config_file = write_config(
        {
            "default_backend": "flux",
            "backends": {
                "flux": {
                    "type": "replicate",
                    "model": KONTEXT,
                    "api_token_env": TOKEN_ENV,
                    "base_url": fake.base_url,
                    "poll_interval_s": 0.01,
                    "prices": {KONTEXT: 0.04},
                }
            },
        }
    )
    photo = tmp_path / "photo.png"
    photo.write_bytes(image_bytes((0, 0, 255), (128, 96)))

    refused = run_job(config_file, dagster_instance, source_images=[str(photo), str(photo)])
    assert not refused.success
    assert "takes up to 1 source image" in step_failure_text(refused)
    assert fake.received == [], "refused before any call"

    result = run_job(config_file, dagster_instance, source_images=[str(photo)])
    assert result.success, step_failure_text(result)
    assert decoded_uri(sent_input(fake)["input_image"], "image/png") == photo.read_bytes()
    [stored] = result.output_for_node("write_files")
    sidecar = json.loads(Path(stored.sidecar_path).read_text(encoding="utf-8"))
    [parent] = sidecar["sources"]["images"]
    assert parent["origin"] == f"file {photo}"
    assert "base64" not in json.dumps(sidecar), "no data URI in the sidecar"
