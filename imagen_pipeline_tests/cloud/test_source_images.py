"""Images from images, end to end with the mock backend on real Postgres and real files:
from a local file, from an image id (its local file, else its Storage object), refused
before any backend call, through the queue (own and another owner's image), and lineage
over three generations."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest
from click.testing import CliRunner
from PIL import Image
from psycopg.rows import dict_row

from imagen_pipeline.cli.main import cli
from imagen_pipeline.cloud.lineage import format_lineage, lineage
from imagen_pipeline.defs.assets import IMAGE
from imagen_pipeline_tests.cloud.conftest import BUCKET, KEY
from imagen_pipeline_tests.fakes.storage_server import FakeStorage
from imagen_pipeline_tests.fixtures.imagen import file_resources, step_failure_text
from imagen_pipeline_tests.fixtures.queue import deployed_job, run_requests, web_session
from imagen_pipeline_tests.generate.test_sources import bomb_png, png

OWNER = "00000000-0000-4000-8000-0000000000a1"
OTHER = "00000000-0000-4000-8000-0000000000b2"


def sql(url: str, statement: str, params: Any = None) -> list[dict[str, Any]]:
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def calls(tmp_path: Path) -> list[dict[str, Any]]:
    log = tmp_path / "calls.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def config(write_config: Callable[..., Path], tmp_path: Path) -> Callable[..., Path]:
    def write(**mock: Any) -> Path:
        return write_config(
            {
                "backends": {
                    "mock": {"type": "mock", "calls_log": str(tmp_path / "calls.jsonl"), **mock}
                },
                "cloud": {"bucket": BUCKET, "owner_user_id": OWNER},
            }
        )

    return write


@pytest.fixture
def storage_env(storage: FakeStorage, monkeypatch: pytest.MonkeyPatch) -> FakeStorage:
    monkeypatch.setenv("SUPABASE_URL", storage.url)
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", KEY)
    return storage


def generate(
    instance: dg.DagsterInstance, config_file: Path, **op_config: Any
) -> dg.ExecuteInProcessResult:
    return deployed_job(str(config_file)).execute_in_process(
        run_config={
            "ops": {
                "enrich_prompt": {
                    "config": {"prompt": "a harbour", "width": 96, "height": 64, **op_config}
                }
            },
            "resources": file_resources(config_file),
        },
        instance=instance,
        raise_on_error=False,
    )


def image_id(url: str, run_id: str) -> int:
    [row] = sql(url, "SELECT id FROM imagen.images WHERE run_id = %s", (run_id,))
    return int(row["id"])


def center(path: str) -> tuple[int, int, int]:
    with Image.open(path) as image:
        return image.convert("RGB").getpixel((image.width // 2, image.height // 2))


def test_a_local_file_is_checked_sent_and_named_as_parent(
    migrated_database_url: str,
    storage_env: FakeStorage,
    config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
    tmp_path: Path,
) -> None:
    source = tmp_path / "red.png"
    source.write_bytes(png((255, 0, 0)))
    result = generate(dagster_instance, config(), source_images=[str(source)])
    assert result.success, step_failure_text(result)
    [stored] = result.output_for_node("write_files")
    red, green, blue = center(stored.image_path)
    assert red > 150 and green < 100 and blue < 100, "the mock tinted the red source"
    [call] = calls(tmp_path)
    [parent] = stored.generated.plan.request.sources
    assert call["sources"] == [parent.sha256] and call["mode"] is None
    sidecar = json.loads(Path(stored.sidecar_path).read_text())
    assert sidecar["sources"]["images"][0]["sha256"] == parent.sha256
    assert sidecar["sources"]["images"][0]["origin"] == f"file {source}"
    child = image_id(migrated_database_url, result.run_id)
    [row] = sql(migrated_database_url, "SELECT * FROM imagen.image_parents")
    assert (row["child_id"], row["parent_id"], row["sha256"]) == (child, None, parent.sha256)
    staging = tmp_path / "out" / ".imagen-staging"
    assert not staging.exists() or not list(staging.iterdir()), "staged sources removed"


def test_an_image_id_is_read_from_its_local_file_else_from_storage(
    migrated_database_url: str,
    storage_env: FakeStorage,
    config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
    tmp_path: Path,
) -> None:
    config_file = config()
    first = generate(dagster_instance, config_file)
    parent_id = image_id(migrated_database_url, first.run_id)
    second = generate(
        dagster_instance, config_file, source_images=[str(parent_id)], mode="img2img", strength=0.25
    )
    assert second.success, step_failure_text(second)
    [stored] = second.output_for_node("write_files")
    [source] = stored.generated.plan.request.sources
    assert source.image_id == parent_id and source.origin.startswith(
        f"imagen.images {parent_id} (file "
    )
    downloads = [r for r in storage_env.requests("GET") if "/object/" in r.path]
    assert downloads == [], "the local file was used"
    event = dagster_instance.get_latest_materialization_event(IMAGE)
    assert event is not None and event.asset_materialization is not None
    materialization = event.asset_materialization
    assert materialization.metadata["parent_image_ids"].value == [parent_id]
    assert materialization.metadata["parent_1_run"].value == first.run_id
    [parent_event] = [
        record.event_log_entry
        for record in dagster_instance.get_records_for_run(
            first.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
        ).records
        if record.event_log_entry.asset_materialization is not None
        and record.event_log_entry.asset_materialization.asset_key == IMAGE
    ]
    assert materialization.metadata["parent_1_materialization"].value == (
        f"/assets/imagen/image?view=events&time={int(parent_event.timestamp * 1000)}"
    )
    # The parent's local file is gone: the pipeline reads its Storage object instead.
    [first_stored] = first.output_for_node("write_files")
    Path(first_stored.image_path).unlink()
    third = generate(dagster_instance, config_file, source_images=[str(parent_id)])
    assert third.success, step_failure_text(third)
    [stored] = third.output_for_node("write_files")
    assert stored.generated.plan.request.sources[0].origin.startswith(
        f"imagen.images {parent_id} (Storage {BUCKET}/"
    )
    assert [r for r in storage_env.requests("GET") if "/object/" in r.path]
    assert KEY not in stored.generated.plan.request.sources[0].origin


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (bomb_png(30000, 30000), "at most 16777216 pixels"),
        (b"GIF89a" + b"\x00" * 40, "is not a whole image"),
    ],
    ids=["bomb", "bad-format"],
)
def test_a_bad_source_fails_the_run_before_any_backend_call(
    config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
    tmp_path: Path,
    data: bytes,
    message: str,
) -> None:
    source = tmp_path / "source.png"
    source.write_bytes(data)
    result = generate(dagster_instance, config(), source_images=[str(source)])
    assert not result.success
    assert "source_images[0]" in step_failure_text(result)
    assert message in step_failure_text(result)
    assert calls(tmp_path) == []


def test_a_backend_without_source_images_refuses_before_the_call(
    config: Callable[..., Path], dagster_instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    source = tmp_path / "red.png"
    source.write_bytes(png())
    result = generate(dagster_instance, config(max_source_images=0), source_images=[str(source)])
    assert not result.success
    assert "backend 'mock' takes no source images" in step_failure_text(result)
    assert calls(tmp_path) == []


def insert_job(cursor: psycopg.Cursor[dict[str, Any]], **columns: Any) -> int:
    names = ", ".join(columns)
    marks = ", ".join(["%s"] * len(columns))
    cursor.execute(
        f"INSERT INTO imagen.jobs ({names}) VALUES ({marks}) RETURNING id", list(columns.values())
    )
    row = cursor.fetchone()
    assert row is not None
    return int(row["id"])


def test_through_the_queue_a_client_names_only_its_own_images(
    migrated_database_url: str,
    storage_env: FakeStorage,
    config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = migrated_database_url
    config_file = config()
    monkeypatch.setenv("IMAGEN_CONFIG", str(config_file))
    mine = image_id(url, generate(dagster_instance, config_file).run_id)
    theirs = image_id(url, generate(dagster_instance, config_file).run_id)
    sql(url, "UPDATE imagen.images SET owner_user_id = %s WHERE id = %s", (OTHER, theirs))
    before = len(calls(tmp_path))

    with web_session(url, OWNER) as cursor:
        job = insert_job(
            cursor, prompt="the same, at dusk", width=64, height=64, source_images=[mine]
        )
    refused_as = pytest.raises(psycopg.errors.CheckViolation, match="is not one of your images")
    with refused_as as refused, web_session(url, OWNER) as cursor:
        insert_job(cursor, prompt="theirs", source_images=[mine, theirs])
    assert refused.value.diag.constraint_name == "jobs_client_sources"
    with (
        pytest.raises(psycopg.errors.CheckViolation, match="is not one of your images"),
        web_session(url, OWNER) as cursor,
    ):
        insert_job(cursor, prompt="missing", source_images=[mine], mask=999999)
    with web_session(url, OWNER) as cursor:
        cursor.execute("SELECT id FROM imagen.images")
        assert [row["id"] for row in cursor.fetchall()] == [mine], "RLS: own rows only"
    # A row the service role wrote past the client rules: the sensor's intake checks again.
    [hostile] = sql(
        url,
        "INSERT INTO imagen.jobs (owner_user_id, prompt, source_images) "
        "VALUES (%s, 'theirs', %s) RETURNING id",
        (OWNER, [theirs]),
    )

    # The hostile row fails at intake, before a run; only the good one gets a run.
    requests = run_requests(dagster_instance, config_file)
    assert [request.tags["imagen/job_id"] for request in requests] == [str(job)]
    for request in requests:
        deployed_job(str(config_file)).execute_in_process(
            run_config=request.run_config,
            tags=request.tags,
            instance=dagster_instance,
            raise_on_error=False,
        )
    run_requests(dagster_instance, config_file)
    [done] = sql(url, "SELECT * FROM imagen.jobs WHERE id = %s", (job,))
    assert done["status"] == "done", done["error"]
    [parent] = sql(
        url, "SELECT * FROM imagen.image_parents WHERE child_id = %s", (done["image_id"],)
    )
    assert parent["parent_id"] == mine
    [failed] = sql(url, "SELECT * FROM imagen.jobs WHERE id = %s", (hostile["id"],))
    assert failed["status"] == "failed"
    assert failed["error"].startswith(f"source_images[0]: image {theirs} is not one of your images")
    their_sha = sql(url, "SELECT sha256 FROM imagen.images WHERE id = %s", (theirs,))[0]["sha256"]
    new_calls = calls(tmp_path)[before:]
    assert len(new_calls) == 1 and their_sha not in json.dumps(new_calls)
    with web_session(url, OWNER) as cursor:
        cursor.execute("SELECT child_id, parent_id FROM imagen.image_parents")
        assert cursor.fetchall() == [{"child_id": done["image_id"], "parent_id": mine}]
    with web_session(url, OTHER) as cursor:
        cursor.execute("SELECT child_id FROM imagen.image_parents")
        assert cursor.fetchall() == []


def test_lineage_over_three_generations(
    migrated_database_url: str,
    storage_env: FakeStorage,
    config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
) -> None:
    url = migrated_database_url
    config_file = config()
    ids = [image_id(url, generate(dagster_instance, config_file, prompt="a harbour").run_id)]
    for prompt in ("at dusk", "in snow"):
        result = generate(
            dagster_instance, config_file, prompt=prompt, source_images=[str(ids[-1])]
        )
        assert result.success, step_failure_text(result)
        ids.append(image_id(url, result.run_id))
    with psycopg.connect(url) as conn:
        trees = lineage(conn, ids[1])
    assert trees is not None
    up, down = trees
    assert [node.image_id for node in up.branches] == [ids[0]]
    assert [node.image_id for node in down.branches] == [ids[2]]
    text = CliRunner().invoke(cli, ["lineage", str(ids[2])])
    assert text.exit_code == 0, text.output
    lines = text.output.splitlines()
    assert lines[0].startswith(f'image {ids[2]} "in snow"')
    assert lines[1:4] == [
        "ancestors:",
        *[line for line in lines[2:4]],
    ]
    assert f'└─ source 1: image {ids[1]} "at dusk"' in lines[2]
    assert f'└─ source 1: image {ids[0]} "a harbour"' in lines[3]
    assert lines[4:] == ["descendants:", "  (none)"]
    top = CliRunner().invoke(cli, ["lineage", str(ids[0])]).output
    assert f"as source 1: image {ids[1]}" in top and f"as source 1: image {ids[2]}" in top
    assert format_lineage(up, down).count("\n") >= 4
    missing = CliRunner().invoke(cli, ["lineage", "424242"])
    assert missing.exit_code != 0 and "no image 424242" in missing.output
