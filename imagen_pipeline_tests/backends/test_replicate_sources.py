"""Source images on Replicate: FLUX.1 Kontext (``input_image``) and FLUX.2 (``input_images``)
as data URIs, or from 1MB through the Files API (uploaded, sent by URL, deleted after),
against the loopback fake, refused before the call when over a model's limits, end to end
with lineage."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest
from PIL import Image

from imagen_pipeline.backends.contract import GenerationContext, GenerationRequest
from imagen_pipeline.backends.replicate import ReplicateBackend
from imagen_pipeline.backends.sources import SourceImage
from imagen_pipeline.errors import (
    InvalidRequestError,
    PermanentBackendError,
    TransientBackendError,
)
from imagen_pipeline_tests.fakes.loopback_http import Reply
from imagen_pipeline_tests.fakes.replicate_server import (
    DROP_AFTER_CREATE,
    UNAUTHENTICATED,
    FakeReplicate,
    multipart_fields,
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


def context(attempt: int = 0) -> GenerationContext:
    return GenerationContext(
        run_id="run-src",
        instance_name="flux",
        attempt=attempt,
        log=logging.getLogger("imagen.test.replicate"),
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


def large_source(folder: Path, position: int = 0) -> SourceImage:
    """A staged PNG of noise, about 1.6 MB: over the 1MB Replicate advises for data URIs."""
    noise = random.Random(position).randbytes(800 * 700 * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (800, 700), noise).save(buffer, format="PNG")
    data = buffer.getvalue()
    assert len(data) >= 1_500_000
    path = folder / f"large-{position}.png"
    path.write_bytes(data)
    return SourceImage(
        position=position,
        path=str(path),
        origin=f"file {path}",
        sha256=hashlib.sha256(data).hexdigest(),
        mime="image/png",
        bytes=len(data),
        width=800,
        height=700,
    )


def uploaded_ids(fake: FakeReplicate) -> list[str]:
    """Ids of the files the fake stored, in upload order (from its 201 answers' URLs)."""
    return [url.rpartition("/")[2] for url in fake.file_urls()]


def test_a_large_source_is_uploaded_its_url_sent_and_the_file_deleted_after(
    fake: FakeReplicate, tmp_path: Path
) -> None:
    large = large_source(tmp_path)
    result = backend(fake, KONTEXT).generate(request(large), context())

    [upload] = fake.uploads()
    fields = multipart_fields(upload)
    content, part_type, part_name = fields["content"]
    assert hashlib.sha256(content).hexdigest() == large.sha256
    assert (part_type, part_name) == ("image/png", "source-0.png")
    assert fields["type"][0] == b"image/png"
    assert upload.headers["content-type"].startswith("multipart/form-data; boundary=")
    [file_id] = uploaded_ids(fake)
    sent = sent_input(fake)["input_image"]
    assert sent == f"{fake.base_url}/files/{file_id}"
    assert "data:" not in json.dumps(fake.creates()[0].json())
    assert fake.deletes() == [file_id]
    assert fake.stored_files() == {}
    last = fake.received[-1]
    assert (last.method, last.path) == ("DELETE", f"/v1/files/{file_id}"), (
        "deleted once the prediction had ended and its output was read"
    )
    recorded = result.metadata.extra["input"]["input_image"]
    assert recorded.startswith(f"Replicate file {sent} of source 0 (image/png, {large.bytes}")
    assert fake.prediction(fake.prediction_ids()[0])["status"] == "succeeded"


def test_flux_2_uploads_only_the_large_source_and_sends_the_small_one_inline(
    fake: FakeReplicate, tmp_path: Path
) -> None:
    small = source_image(tmp_path, (0, 255, 0), (32, 32))
    large = large_source(tmp_path, position=1)
    backend(fake, FLUX_2).generate(request(small, large), context())

    [upload] = fake.uploads()
    assert hashlib.sha256(multipart_fields(upload)["content"][0]).hexdigest() == large.sha256
    first, second = sent_input(fake)["input_images"]
    assert decoded_uri(first, "image/png") == Path(small.path).read_bytes()
    assert second == fake.file_urls()[0]
    assert fake.stored_files() == {}


def test_upload_failures_are_classified_and_a_retry_uploads_again(
    fake: FakeReplicate, tmp_path: Path
) -> None:
    large = large_source(tmp_path)
    fake.upload_replies.append(Reply(500, {"detail": "Internal server error", "status": 500}))
    with pytest.raises(TransientBackendError, match="upload source 0: HTTP 500"):
        backend(fake, KONTEXT).generate(request(large), context())
    assert fake.creates() == []
    backend(fake, KONTEXT).generate(request(large), context(attempt=1))
    assert len(fake.uploads()) == 2
    assert len(fake.creates()) == 1
    assert fake.stored_files() == {}

    fake.upload_replies.append(Reply(401, UNAUTHENTICATED))
    with pytest.raises(PermanentBackendError, match="was refused \\(401\\)") as refused:
        backend(fake, KONTEXT).generate(request(large), context())
    assert TOKEN not in str(refused.value)
    fake.max_file_bytes = 1_000_000
    with pytest.raises(PermanentBackendError, match="too large \\(413\\): Files must be less"):
        backend(fake, KONTEXT).generate(request(large), context())
    assert len(fake.creates()) == 1, "no prediction without its source"


def test_a_stored_file_that_is_not_the_source_is_deleted_and_transient(
    fake: FakeReplicate, tmp_path: Path
) -> None:
    large = large_source(tmp_path)
    stranger = {
        "id": "cneqzikepnug6xezperrr4z55o",
        "urls": {"get": f"{fake.base_url}/files/cneqzikepnug6xezperrr4z55o"},
        "size": large.bytes,
        "checksums": {"sha256": "0" * 64},
    }
    fake.upload_replies.append(Reply(201, stranger))
    with pytest.raises(TransientBackendError, match="is not the source"):
        backend(fake, KONTEXT).generate(request(large), context())
    assert fake.deletes() == ["cneqzikepnug6xezperrr4z55o"]
    assert fake.creates() == []


def test_a_retry_after_an_upload_adopts_the_earlier_prediction_and_deletes_both_files(
    fake: FakeReplicate, tmp_path: Path
) -> None:
    """The retry uploads its own copy (a new URL), so the listed prediction names another
    file: it is still adopted, not created and paid for again, and both files go."""
    large = large_source(tmp_path)
    fake.polls_before_done = 1
    fake.get_replies.append(Reply(503, {"detail": "Service unavailable", "status": 503}))
    with pytest.raises(TransientBackendError, match="HTTP 503"):
        backend(fake, KONTEXT).generate(request(large), context())
    [first] = uploaded_ids(fake)
    assert list(fake.stored_files()) == [first], "kept while the prediction may read it"

    result = backend(fake, KONTEXT).generate(request(large), context(attempt=1))
    assert len(fake.creates()) == 1
    assert result.metadata.extra["recovered_prediction"] is True
    second = uploaded_ids(fake)[1]
    assert sorted(fake.deletes()) == sorted([first, second])
    assert fake.stored_files() == {}
