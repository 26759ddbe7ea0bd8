"""SupabaseStorage (storage3) against the loopback Storage fake."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from imagen_pipeline.config.models import CloudConfig
from imagen_pipeline.errors import ConfigError, MissingCredentialError
from imagen_pipeline.storage.client import SupabaseStorage
from imagen_pipeline.storage.errors import CloudSyncError
from imagen_pipeline_tests.cloud.conftest import BUCKET, KEY
from imagen_pipeline_tests.fakes.loopback_http import closed_port
from imagen_pipeline_tests.fakes.storage_server import (
    ACCESS_DENIED,
    DROP_AFTER_STORE,
    FakeStorage,
    Reply,
)

DATA = bytes(range(256)) * 64


def client(fake: FakeStorage, key: str = KEY) -> SupabaseStorage:
    return SupabaseStorage(fake.url, key, "SUPABASE_SERVICE_ROLE_KEY", timeout_s=5)


def failure(action: object) -> CloudSyncError:
    with pytest.raises(CloudSyncError) as caught:
        action()  # type: ignore[operator]
    assert KEY not in str(caught.value)
    return caught.value


def test_upload_is_multipart_with_type_cache_control_key_headers_and_no_upsert(
    storage: FakeStorage,
) -> None:
    with client(storage) as api:
        assert api.upload(BUCKET, "u1/2026-11-24/fox.png", DATA, "image/png", 600, upsert=False)
    [upload] = storage.uploads()
    assert upload.method == "POST"
    assert upload.path == "/storage/v1/object/images/u1/2026-11-24/fox.png"
    assert upload.headers["x-upsert"] == "false"
    assert upload.headers["apikey"] == KEY
    assert upload.headers["authorization"] == f"Bearer {KEY}"
    assert upload.headers["content-type"].startswith("multipart/form-data; boundary=")
    stored = storage.objects[(BUCKET, "u1/2026-11-24/fox.png")]
    assert (stored.content_type, stored.cache_control) == ("image/png", "max-age=600")
    assert hashlib.sha256(stored.data).digest() == hashlib.sha256(DATA).digest()


def test_a_duplicate_is_reported_and_the_first_object_kept(storage: FakeStorage) -> None:
    storage.put_object(BUCKET, "a.png", b"first", "image/png")
    with client(storage) as api:
        assert not api.upload(BUCKET, "a.png", DATA, "image/png", 60, upsert=False)
        assert api.download(BUCKET, "a.png") == b"first"
        assert api.upload(BUCKET, "a.png", DATA, "image/png", 60, upsert=True)
    assert storage.objects[(BUCKET, "a.png")].data == DATA
    assert [u.headers["x-upsert"] for u in storage.uploads()] == ["false", "true"]


def test_a_missing_bucket_names_the_bucket_and_the_setting(storage: FakeStorage) -> None:
    with client(storage) as api:
        error = failure(lambda: api.bucket("imgaes"))
    assert str(error) == (
        f"cloud.bucket: bucket 'imgaes' does not exist in Supabase Storage at {storage.url}; "
        "create it (Storage > New bucket) or fix cloud.bucket"
    )
    assert not error.transient


def test_a_wrong_key_is_named_by_its_variable_never_by_value(storage: FakeStorage) -> None:
    with client(storage, key="not-the-service-key") as api:
        gateway = failure(lambda: api.bucket(BUCKET))
    assert "rejected the key in $SUPABASE_SERVICE_ROLE_KEY (cloud.key_env)" in str(gateway)
    assert "Invalid API key" in str(gateway)
    assert "not-the-service-key" not in str(gateway)
    storage.bucket_replies.append(Reply(400, ACCESS_DENIED))
    with client(storage) as api:
        storage_error = failure(lambda: api.bucket(BUCKET))
    assert str(storage_error) == (
        f"Supabase Storage at {storage.url} rejected the key in $SUPABASE_SERVICE_ROLE_KEY "
        "(cloud.key_env) while reading bucket 'images': invalid signature; use the project's "
        "service role key"
    )
    assert not gateway.transient and not storage_error.transient


def test_an_echoed_key_is_redacted_and_server_errors_are_transient(storage: FakeStorage) -> None:
    storage.bucket_replies.append(
        Reply(500, {"statusCode": "500", "error": "internal", "message": f"bad token {KEY}"})
    )
    with client(storage) as api:
        error = failure(lambda: api.bucket(BUCKET))
    assert "bad token [redacted]" in str(error)
    assert error.transient


def test_an_object_over_the_size_limit_is_refused_permanently(storage: FakeStorage) -> None:
    storage.global_size_limit = 1000
    with client(storage) as api:
        error = failure(lambda: api.upload(BUCKET, "big.png", DATA, "image/png", 60, upsert=False))
    assert "refused uploading images/big.png as too large: The object exceeded the maximum" in str(
        error
    )
    assert not error.transient
    assert storage.objects == {}


@pytest.mark.parametrize(
    "fault",
    [
        Reply(503, "<html><body><h1>503 Service Unavailable</h1></body></html>"),
        Reply(429, {"statusCode": "429", "error": "too_many_connections", "message": "slow"}),
        DROP_AFTER_STORE,
    ],
)
def test_gateway_errors_rate_limits_and_lost_replies_are_transient(
    storage: FakeStorage, fault: Reply | str
) -> None:
    storage.upload_replies.append(fault)
    with client(storage) as api:
        error = failure(lambda: api.upload(BUCKET, "x.png", DATA, "image/png", 60, upsert=False))
        assert error.transient
        stored_before = (BUCKET, "x.png") in storage.objects
        assert api.upload(BUCKET, "x.png", DATA, "image/png", 60, upsert=False) is not stored_before


def test_unreachable_storage_is_transient_and_names_the_host() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    with SupabaseStorage(url, KEY, "SUPABASE_SERVICE_ROLE_KEY", timeout_s=5) as api:
        error = failure(lambda: api.bucket(BUCKET))
    assert str(error).startswith(f"Supabase Storage at {url} is unreachable (reading bucket")
    assert error.transient


def test_signed_and_public_urls_serve_the_object(storage: FakeStorage) -> None:
    storage.add_bucket("open", public=True)
    with client(storage) as api:
        api.upload(BUCKET, "p/a.png", DATA, "image/png", 60, upsert=False)
        api.upload("open", "p/a.png", DATA, "image/png", 60, upsert=False)
        signed = api.signed_url(BUCKET, "p/a.png", 300)
        public = api.public_url("open", "p/a.png")
    assert signed.startswith(f"{storage.url}/storage/v1/object/sign/images/p/a.png?token=")
    assert public == f"{storage.url}/storage/v1/object/public/open/p/a.png"
    for url in (signed, public):
        response = httpx.get(url)
        assert response.status_code == 200
        assert response.content == DATA
    assert storage.requests("POST", "/object/sign/")[0].json() == {"expiresIn": "300"}


def test_credentials_come_from_the_named_variables(
    storage: FakeStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = CloudConfig(bucket=BUCKET, url_env="IMAGEN_T_URL", key_env="IMAGEN_T_KEY")
    monkeypatch.setenv("IMAGEN_T_URL", storage.url)
    with pytest.raises(MissingCredentialError, match=r"cloud\.key_env: environment variable "):
        SupabaseStorage.from_config(settings)
    monkeypatch.setenv("IMAGEN_T_KEY", KEY)
    with SupabaseStorage.from_config(settings) as api:
        assert api.bucket(BUCKET).public is False
    monkeypatch.setenv("IMAGEN_T_URL", "db.example.supabase.co")
    with pytest.raises(ConfigError, match=r"cloud\.url_env: the variable must hold the project"):
        SupabaseStorage.from_config(settings)
