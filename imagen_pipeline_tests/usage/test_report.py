"""``imagen usage``: the spend table from mai.imagen_usage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from click.testing import CliRunner

from imagen_pipeline.cli.main import cli

ALICE = "00000000-0000-4000-8000-00000000a11c"


def add(
    url: str, instance: str, model: str, cost: float | None, status: str, **fields: Any
) -> None:
    values = {
        "generation_key": f"{instance}-{model}-{cost}-{status}-{len(fields)}-{fields}",
        "backend_instance": instance,
        "backend_type": "replicate" if instance != "mock" else "mock",
        "model": model,
        "cost_usd": cost,
        "run_id": "r",
        "status": status,
        **fields,
    }
    columns = ", ".join(values)
    placeholders = ", ".join(f"%({key})s" for key in values)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"INSERT INTO mai.imagen_usage ({columns}) VALUES ({placeholders})", values)


def seed_rows(url: str) -> None:
    add(url, "flux", "flux-schnell", 0.003, "succeeded", owner_user_id=ALICE)
    add(url, "flux", "flux-schnell", 0.003, "succeeded")
    add(url, "flux", "flux-dev", 0.025, "succeeded", owner_user_id=ALICE)
    add(url, "flux", "flux-dev", 0.0, "failed", owner_user_id=ALICE)
    add(url, "mock", "mock-v1", 0.0, "succeeded")
    add(url, "openai", "gpt-image-2", None, "succeeded", price_source="unknown")
    long_ago = datetime.now(UTC) - timedelta(days=400)
    add(url, "flux", "flux-dev", 9.0, "succeeded", created_at=long_ago)


def test_usage_by_backend_defaults_to_the_last_30_days(migrated_database_url: str) -> None:
    seed_rows(migrated_database_url)
    result = CliRunner().invoke(cli, ["usage"])
    assert result.exit_code == 0, result.output
    since = (datetime.now(UTC) - timedelta(days=30)).date().isoformat()
    assert result.output == (
        f"spend since {since} (UTC), by backend\n"
        "backend  images  failed  cost_usd  unpriced\n"
        "flux          3       1    0.0310         0\n"
        "mock          1       0    0.0000         0\n"
        "openai        1       0    0.0000         1\n"
        "total         5       1    0.0310         1\n"
    )


def test_usage_by_model_and_owner_since_a_date(migrated_database_url: str) -> None:
    seed_rows(migrated_database_url)
    old = (datetime.now(UTC) - timedelta(days=500)).date().isoformat()
    by_model = CliRunner().invoke(cli, ["usage", "--since", old, "--by", "model"])
    assert by_model.exit_code == 0, by_model.output
    assert by_model.output.splitlines()[1:] == [
        "model         images  failed  cost_usd  unpriced",
        "flux-dev           2       1    9.0250         0",
        "flux-schnell       2       0    0.0060         0",
        "gpt-image-2        1       0    0.0000         1",
        "mock-v1            1       0    0.0000         0",
        "total              6       1    9.0310         1",
    ]
    by_owner = CliRunner().invoke(cli, ["usage", "--by", "owner"])
    assert by_owner.output.splitlines()[1:] == [
        f"owner{' ' * 31}  images  failed  cost_usd  unpriced",
        f"{ALICE}       2       1    0.0280         0",
        f"(none){' ' * 30}       3       0    0.0030         1",
        f"total{' ' * 31}       5       1    0.0310         1",
    ]


def test_usage_with_nothing_recorded_and_without_a_database(migrated_database_url: str) -> None:
    empty = CliRunner().invoke(cli, ["usage", "--since", "2026-01-01"])
    assert empty.output == "spend since 2026-01-01 (UTC), by backend\nno generations recorded\n"
    missing = CliRunner().invoke(cli, ["usage"], env={"IMAGEN_DATABASE_URL": ""})
    assert missing.exit_code == 2
    assert "IMAGEN_DATABASE_URL is not set" in missing.output
    bad = CliRunner().invoke(cli, ["usage", "--by", "colour"])
    assert bad.exit_code == 2
    assert "'colour' is not one of 'backend', 'model', 'owner'" in bad.output
