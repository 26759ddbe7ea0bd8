"""The ``cloud:`` block of imagen.yaml."""

from __future__ import annotations

import pytest

from imagen_pipeline.config.loader import parse_config
from imagen_pipeline.errors import ConfigError

SECRET = "eyJhbGciOiJIUzI1NiJ9.pasted-by-mistake"


def cloud_error(block: dict[str, object]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config({"cloud": block})
    return str(caught.value)


def test_a_minimal_block_gets_documented_defaults() -> None:
    cloud = parse_config({"cloud": {"bucket": "images"}}).config.cloud
    assert cloud is not None
    assert (cloud.url_env, cloud.key_env) == ("SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY")
    assert (cloud.path_template, cloud.url_mode) == ("{owner}/{date}/{filename}", "signed")
    assert (cloud.signed_url_expires_s, cloud.cache_control_s) == (604800, 31536000)
    assert cloud.owner_user_id is None and cloud.upload_sidecar
    assert parse_config({}).config.cloud is None


def test_a_pasted_key_is_refused_without_being_echoed() -> None:
    message = cloud_error({"bucket": "images", "key_env": SECRET})
    assert message.endswith(
        "cloud.key_env: must be the NAME of an environment variable (A-Z, 0-9, _), never the "
        "URL or key itself"
    )
    assert SECRET not in message
    url = "https://abcd.supabase.co"
    assert url not in cloud_error({"bucket": "images", "url_env": url})


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({}, "cloud.bucket: Field required"),
        ({"bucket": "a/b"}, "cloud.bucket: Value error, must be a bucket name without '/'"),
        ({"bucket": "x", "url_mode": "private"}, "cloud.url_mode: Input should be 'public' or"),
        ({"bucket": "x", "owner_user_id": "alice"}, "cloud.owner_user_id: Value error, must be"),
        ({"bucket": "x", "path_template": "{owner}"}, "must end with {filename}"),
        ({"bucket": "x", "signed_url_expires_s": 5}, "cloud.signed_url_expires_s: Input should"),
        ({"bucket": "x", "bucekt": "y"}, "cloud.bucekt: unknown key"),
    ],
)
def test_wrong_values_name_the_key(block: dict[str, object], message: str) -> None:
    assert message in cloud_error(block)
