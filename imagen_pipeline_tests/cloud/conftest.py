"""Fixtures of the cloud sync tests: the Storage fake and the env vars that point at it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from imagen_pipeline_tests.fakes.storage_server import FakeStorage, running_fake_storage

KEY = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.fake-service-role-signature"
BUCKET = "images"
OWNER = "00000000-0000-4000-8000-0000000000c1"
FALLBACK_OWNER = "00000000-0000-4000-8000-0000000000f0"


@pytest.fixture
def storage() -> Iterator[FakeStorage]:
    """The fake with a private bucket ``images``."""
    with running_fake_storage(KEY) as fake:
        fake.add_bucket(BUCKET)
        yield fake


@pytest.fixture
def cloud_env(storage: FakeStorage, monkeypatch: pytest.MonkeyPatch) -> FakeStorage:
    """SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY point at the fake."""
    monkeypatch.setenv("SUPABASE_URL", storage.url)
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", KEY)
    return storage


@pytest.fixture
def cloud_config(write_config: Callable[..., Path], tmp_path: Path) -> Callable[..., Path]:
    """imagen.yaml with a mock backend (logging its calls) and a ``cloud:`` block."""

    def write(cloud: dict[str, Any] | None = None, **top: Any) -> Path:
        return write_config(
            {
                "backends": {"mock": {"type": "mock", "calls_log": str(tmp_path / "calls.jsonl")}},
                "cloud": {"bucket": BUCKET, "owner_user_id": FALLBACK_OWNER, **(cloud or {})},
                **top,
            }
        )

    return write
