"""sync_image: object path, upload decision, URL and sidecar, against the Storage fake."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC
from pathlib import Path
from typing import Any

import httpx
import pytest

from imagen_pipeline.backends.contract import GenerationContext
from imagen_pipeline.cloud.sync import object_path, sync_image
from imagen_pipeline.config.models import CloudConfig
from imagen_pipeline.generate.planning import ImageSpec, plan_generation
from imagen_pipeline.generate.setup import parse_setup
from imagen_pipeline.generate.staging import run_generation
from imagen_pipeline.output.store import StoredImage, store_image
from imagen_pipeline.storage.errors import CloudSyncError
from imagen_pipeline_tests.cloud.conftest import BUCKET, FALLBACK_OWNER, OWNER
from imagen_pipeline_tests.fakes.storage_server import DROP_AFTER_STORE, FakeStorage

RUN_ID = "5d0c6c1e-0000-4000-8000-00000000abcd"


def stored_image(tmp_path: Path, owner: str | None = None, sidecar: bool = True) -> StoredImage:
    loaded = parse_setup(
        {
            "output": {"directory": str(tmp_path / "out")},
            "cloud": {"bucket": BUCKET, "owner_user_id": FALLBACK_OWNER},
        }
    )
    spec = ImageSpec(
        prompt="a lighthouse at dusk", width=64, height=64, seed=3, owner_user_id=owner
    )
    plan = plan_generation(spec, loaded)
    generated = run_generation(
        plan, loaded.backend("mock"), GenerationContext(run_id=RUN_ID), loaded.output_dir
    )
    return store_image(generated, loaded.output_dir, "{slug}", sidecar, RUN_ID)


def settings(**fields: Any) -> CloudConfig:
    return CloudConfig(**{"bucket": BUCKET, "owner_user_id": FALLBACK_OWNER, **fields})


def test_image_and_sidecar_are_uploaded_and_the_sidecar_carries_the_signed_url(
    cloud_env: FakeStorage, tmp_path: Path
) -> None:
    stored = stored_image(tmp_path, owner=OWNER)
    outcome = sync_image(stored, settings())
    location = outcome.location
    assert location is not None
    assert stored.generated.plan.owner_user_id == OWNER, "the job's owner wins over the fallback"
    date = stored.generated.generated_at.astimezone(UTC).strftime("%Y-%m-%d")
    assert location.path == f"{OWNER}/{date}/a-lighthouse-at-dusk.png"
    assert location.sidecar_path == f"{OWNER}/{date}/a-lighthouse-at-dusk.json"
    image = cloud_env.objects[(BUCKET, location.path)]
    assert hashlib.sha256(image.data).hexdigest() == stored.sha256
    assert (image.content_type, image.cache_control) == ("image/png", "max-age=31536000")
    fetched = httpx.get(location.url)
    assert hashlib.sha256(fetched.content).hexdigest() == stored.sha256
    assert location.url_mode == "signed" and location.url_expires_at is not None

    sidecar = Path(stored.sidecar_path or "")
    local = json.loads(sidecar.read_text(encoding="utf-8"))
    assert local["cloud"]["url"] == location.url
    assert local["cloud"]["path"] == location.path
    assert local["generation"]["run_id"] == RUN_ID, "the rest of the sidecar is kept"
    uploaded = cloud_env.objects[(BUCKET, location.sidecar_path)]
    assert uploaded.data == sidecar.read_bytes()
    assert uploaded.content_type == "application/json"
    assert [u.headers["x-upsert"] for u in cloud_env.uploads()] == ["false", "true"]
    assert outcome.detail.startswith(f"uploaded images/{location.path} with its sidecar; signed")


def test_the_fallback_owner_and_a_public_url(cloud_env: FakeStorage, tmp_path: Path) -> None:
    cloud_env.buckets[BUCKET].public = True
    stored = stored_image(tmp_path, sidecar=False)
    outcome = sync_image(stored, settings(url_mode="public", path_template="{owner}/{filename}"))
    assert stored.generated.plan.owner_user_id == FALLBACK_OWNER
    assert outcome.location is not None
    assert outcome.location.url == (
        f"{cloud_env.url}/storage/v1/object/public/images/{FALLBACK_OWNER}/a-lighthouse-at-dusk.png"
    )
    assert outcome.location.sidecar_path is None
    assert httpx.get(outcome.location.url).status_code == 200
    assert len(cloud_env.uploads()) == 1


def test_a_second_sync_of_the_same_image_writes_nothing_new(
    cloud_env: FakeStorage, tmp_path: Path
) -> None:
    stored = stored_image(tmp_path)
    first = sync_image(stored, settings())
    second = sync_image(stored, settings())
    assert first.location and second.location
    assert second.location.path == first.location.path
    assert second.detail.startswith("already uploaded by an earlier attempt (same sha256):")
    assert cloud_env.objects[(BUCKET, first.location.path)].versions == 1
    assert len(cloud_env.objects) == 2


def test_a_lost_upload_reply_is_resolved_by_comparing_hashes(
    cloud_env: FakeStorage, tmp_path: Path
) -> None:
    stored = stored_image(tmp_path)
    cloud_env.upload_replies.append(DROP_AFTER_STORE)
    with pytest.raises(CloudSyncError) as lost:
        sync_image(stored, settings())
    assert lost.value.transient
    retried = sync_image(stored, settings())
    assert retried.location is not None
    assert cloud_env.objects[(BUCKET, retried.location.path)].versions == 1
    assert cloud_env.requests("GET", f"/object/{BUCKET}/"), "the stored object was compared"


def test_a_path_held_by_another_image_is_left_alone(cloud_env: FakeStorage, tmp_path: Path) -> None:
    stored = stored_image(tmp_path)
    path = object_path(stored, "{owner}/{filename}", FALLBACK_OWNER)
    cloud_env.put_object(BUCKET, path, b"someone else's image", "image/png")
    with pytest.raises(CloudSyncError) as caught:
        sync_image(stored, settings(path_template="{owner}/{filename}"))
    assert str(caught.value).startswith(
        f"cloud.path_template: images/{path} already holds another image (sha256 "
    )
    assert "add {run_id} to cloud.path_template" in str(caught.value)
    assert cloud_env.objects[(BUCKET, path)].data == b"someone else's image"
    assert "cloud" not in json.loads(Path(stored.sidecar_path or "").read_text())


@pytest.mark.parametrize(
    ("bucket", "cloud", "message"),
    [
        ({}, {"url_mode": "public"}, "cloud.url_mode: bucket 'images' is private, so public"),
        ({"file_size_limit": 100}, {}, "accepts at most 100 (its file size limit)"),
        ({"allowed_mime_types": ["image/jpeg"]}, {}, "does not accept image/png (allowed MIME"),
        ({"allowed_mime_types": ["image/*"]}, {}, "cloud.upload_sidecar: bucket 'images' does"),
    ],
)
def test_a_bucket_that_cannot_take_the_image_fails_before_any_upload(
    cloud_env: FakeStorage,
    tmp_path: Path,
    bucket: dict[str, Any],
    cloud: dict[str, Any],
    message: str,
) -> None:
    for key, value in bucket.items():
        setattr(cloud_env.buckets[BUCKET], key, value)
    with pytest.raises(CloudSyncError, match=re.escape(message)):
        sync_image(stored_image(tmp_path), settings(**cloud))
    assert cloud_env.uploads() == []


def test_without_a_cloud_block_nothing_is_uploaded(tmp_path: Path) -> None:
    stored = stored_image(tmp_path, owner=OWNER)
    outcome = sync_image(stored, None)
    assert outcome.location is None
    assert outcome.detail == (
        "cloud sync not configured (no cloud: block in imagen.yaml); "
        f"the image stays local at {stored.image_path}"
    )


def test_the_path_comes_from_generation_facts_not_the_clock(tmp_path: Path) -> None:
    stored = stored_image(tmp_path)
    template = "{owner}/{date}/{backend}/{job_id}/{run_id}-{filename}"
    first = object_path(stored, template, None)
    assert first == (
        f"unowned/{stored.generated.generated_at.astimezone(UTC):%Y-%m-%d}/mock/nojob/"
        f"{RUN_ID}-a-lighthouse-at-dusk.png"
    )
    assert object_path(stored, template, None) == first
