"""Row level security with Supabase's real roles and JWT claims, on real PostgreSQL."""

from __future__ import annotations

import psycopg
import pytest

from imagen_pipeline_tests.fixtures.queue import web_session

USER_A = "0a0a0a0a-0000-4000-8000-00000000000a"
USER_B = "0b0b0b0b-0000-4000-8000-00000000000b"


@pytest.fixture
def seeded(migrated_database_url: str) -> dict[str, int]:
    """One job and one image per user, written by the service (superuser) connection."""
    ids: dict[str, int] = {}
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        for label, user in (("a", USER_A), ("b", USER_B)):
            job = conn.execute(
                "INSERT INTO imagen.jobs (owner_user_id, prompt, status) "
                "VALUES (%s, %s, 'running') RETURNING id",
                (user, f"prompt of {label}"),
            ).fetchone()
            assert job is not None
            ids[f"job_{label}"] = job[0]
            image = conn.execute(
                "INSERT INTO imagen.images (job_id, owner_user_id, width, height, mime, bytes, "
                "sha256, prompt, enriched_prompt, style, backend, model, run_id) "
                "VALUES (%s, %s, 64, 64, 'image/png', 10, 'x', 'p', 'p', 'none', 'mock', 'm', "
                "%s) RETURNING id",
                (job[0], user, f"run-{label}"),
            ).fetchone()
            assert image is not None
            conn.execute(
                "INSERT INTO mai.imagen_usage (generation_key, backend_instance, backend_type, "
                "model, owner_user_id, run_id, status) "
                "VALUES (%s, 'mock', 'mock', 'm', %s, %s, 'succeeded')",
                (f"run-{label}:0", user, f"run-{label}"),
            )
    return ids


def test_a_user_sees_only_their_own_rows(
    migrated_database_url: str, seeded: dict[str, int]
) -> None:
    with web_session(migrated_database_url, USER_A) as cursor:
        jobs = cursor.execute("SELECT id FROM imagen.jobs").fetchall()
        images = cursor.execute("SELECT job_id FROM imagen.images").fetchall()
        usage = cursor.execute("SELECT run_id FROM mai.imagen_usage").fetchall()
    assert jobs == [{"id": seeded["job_a"]}]
    assert images == [{"job_id": seeded["job_a"]}]
    assert usage == [{"run_id": "run-a"}]


def test_a_user_inserts_pending_jobs_owned_by_themselves_by_default(
    migrated_database_url: str, seeded: dict[str, int]
) -> None:
    with web_session(migrated_database_url, USER_A) as cursor:
        row = cursor.execute(
            "INSERT INTO imagen.jobs (prompt, style) VALUES ('mine', 'photo') "
            "RETURNING owner_user_id::text AS owner, status"
        ).fetchone()
    assert row == {"owner": USER_A, "status": "pending"}


def test_a_user_cannot_insert_a_job_for_someone_else(
    migrated_database_url: str, seeded: dict[str, int]
) -> None:
    with (
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"),
        web_session(migrated_database_url, USER_A) as cursor,
    ):
        cursor.execute(
            "INSERT INTO imagen.jobs (owner_user_id, prompt) VALUES (%s, 'not mine')", (USER_B,)
        )


def test_a_user_cannot_set_pipeline_columns_on_insert(
    migrated_database_url: str, seeded: dict[str, int]
) -> None:
    with (
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"),
        web_session(migrated_database_url, USER_A) as cursor,
    ):
        cursor.execute("INSERT INTO imagen.jobs (prompt, status) VALUES ('x', 'done')")


def test_a_user_can_cancel_only_their_own_unfinished_jobs(
    migrated_database_url: str, seeded: dict[str, int]
) -> None:
    with web_session(migrated_database_url, USER_A) as cursor:
        other = cursor.execute(
            "UPDATE imagen.jobs SET status = 'canceled' WHERE id = %s", (seeded["job_b"],)
        )
        assert other.rowcount == 0
        own = cursor.execute(
            "UPDATE imagen.jobs SET status = 'canceled' WHERE id = %s", (seeded["job_a"],)
        )
        assert own.rowcount == 1
    with psycopg.connect(migrated_database_url) as conn:
        statuses = dict(conn.execute("SELECT id, status FROM imagen.jobs").fetchall())
    assert statuses == {seeded["job_a"]: "canceled", seeded["job_b"]: "running"}


def test_a_user_cannot_mark_their_job_done_or_change_other_columns(
    migrated_database_url: str, seeded: dict[str, int]
) -> None:
    with (
        pytest.raises(psycopg.errors.CheckViolation, match="a client may set canceled") as error,
        web_session(migrated_database_url, USER_A) as cursor,
    ):
        cursor.execute("UPDATE imagen.jobs SET status = 'done' WHERE id = %s", (seeded["job_a"],))
    assert error.value.diag.constraint_name == "jobs_client_transition"
    with (
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"),
        web_session(migrated_database_url, USER_A) as cursor,
    ):
        cursor.execute("UPDATE imagen.jobs SET prompt = 'x' WHERE id = %s", (seeded["job_a"],))


def test_a_user_cannot_write_images_or_usage(
    migrated_database_url: str, seeded: dict[str, int]
) -> None:
    for statement in (
        "DELETE FROM imagen.images",
        "UPDATE mai.imagen_usage SET cost_usd = 0",
        "DELETE FROM imagen.jobs",
    ):
        with (
            pytest.raises(psycopg.errors.InsufficientPrivilege),
            web_session(migrated_database_url, USER_A) as cursor,
        ):
            cursor.execute(statement)


@pytest.mark.parametrize("table", ["imagen.jobs", "imagen.images", "mai.imagen_usage"])
def test_anon_cannot_touch_the_schemas(
    migrated_database_url: str, seeded: dict[str, int], table: str
) -> None:
    with (
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied for schema"),
        web_session(migrated_database_url, None, "anon") as cursor,
    ):
        cursor.execute(f"SELECT * FROM {table}")


def test_the_service_role_sees_and_writes_everything(
    migrated_database_url: str, seeded: dict[str, int]
) -> None:
    with web_session(migrated_database_url, None, "service_role") as cursor:
        jobs = cursor.execute("SELECT count(*) AS n FROM imagen.jobs").fetchone()
        images = cursor.execute("SELECT count(*) AS n FROM imagen.images").fetchone()
        usage = cursor.execute("SELECT count(*) AS n FROM mai.imagen_usage").fetchone()
        updated = cursor.execute("UPDATE imagen.jobs SET status = 'done'").rowcount
    assert (jobs, images, usage, updated) == ({"n": 2}, {"n": 2}, {"n": 2}, 2)


def test_insert_notifies_listeners_and_updates_touch_updated_at(
    migrated_database_url: str,
) -> None:
    with psycopg.connect(migrated_database_url, autocommit=True) as listener:
        listener.execute("LISTEN imagen_jobs")
        with psycopg.connect(migrated_database_url, autocommit=True) as writer:
            row = writer.execute(
                "INSERT INTO imagen.jobs (prompt) VALUES ('hello') RETURNING id, updated_at"
            ).fetchone()
            assert row is not None
            job_id, created = row
            later = writer.execute(
                "UPDATE imagen.jobs SET status = 'queued' WHERE id = %s RETURNING updated_at",
                (job_id,),
            ).fetchone()
        payloads = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
    assert payloads == [str(job_id)]
    assert later is not None and later[0] > created


def test_status_outside_the_lifecycle_is_rejected(migrated_database_url: str) -> None:
    with (
        pytest.raises(psycopg.errors.CheckViolation, match="jobs_status_check"),
        psycopg.connect(migrated_database_url) as conn,
    ):
        conn.execute("INSERT INTO imagen.jobs (prompt, status) VALUES ('x', 'paused')")
