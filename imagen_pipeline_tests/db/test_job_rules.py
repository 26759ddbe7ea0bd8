"""What a client may write into imagen.jobs: the database's rules, on real PostgreSQL.

Migration ``20261202090000_imagen_jobs_client_rules``: named CHECK constraints on every
column a client can write, the ``jobs_client_transition`` trigger (cancel, retry), and the
repair of rows written before the rules existed.
"""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from imagen_pipeline.db import migrate as migrate_module
from imagen_pipeline.errors import InvalidRequestError
from imagen_pipeline.generate.planning import check_backend_opts
from imagen_pipeline.queue.rows import MAX_ATTEMPTS, MAX_INTERRUPTIONS
from imagen_pipeline_tests.fixtures.queue import web_session

USER = "0a0a0a0a-0000-4000-8000-00000000000a"
OTHER = "0b0b0b0b-0000-4000-8000-00000000000b"


def client_insert(url: str, **fields: Any) -> int:
    values = {"prompt": "a lighthouse", **fields}
    if "backend_opts" in values:
        values["backend_opts"] = Jsonb(values["backend_opts"])
    with web_session(url, USER) as cursor:
        row = cursor.execute(
            f"INSERT INTO imagen.jobs ({', '.join(values)}) "
            f"VALUES ({', '.join(['%s'] * len(values))}) RETURNING id",
            list(values.values()),
        ).fetchone()
    assert row is not None
    return int(row["id"])


def service_sql(url: str, statement: str, params: Any = None) -> list[dict[str, Any]]:
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


@pytest.mark.parametrize(
    ("fields", "constraint"),
    [
        ({"prompt": ""}, "jobs_prompt_check"),
        ({"prompt": "x" * 8001}, "jobs_prompt_check"),
        ({"prompt": "bell\x07"}, "jobs_prompt_check"),
        ({"negative": "\x1b[31m"}, "jobs_negative_check"),
        ({"style": "s" * 101}, "jobs_style_check"),
        ({"backend": "a\nb"}, "jobs_backend_check"),
        ({"width": 1001}, "jobs_width_check"),
        ({"width": 8}, "jobs_width_check"),
        ({"height": 4104}, "jobs_height_check"),
        ({"steps": 0}, "jobs_steps_check"),
        ({"steps": 201}, "jobs_steps_check"),
        ({"seed": -1}, "jobs_seed_check"),
        ({"seed": 2**32}, "jobs_seed_check"),
        ({"backend_opts": {"__class__": "os.system"}}, "jobs_backend_opts_check"),
        ({"backend_opts": {"a": [{"__set__": [1]}]}}, "jobs_backend_opts_check"),
        ({"backend_opts": {"_private": 1}}, "jobs_backend_opts_check"),
        ({"backend_opts": []}, "jobs_backend_opts_check"),
        ({"backend_opts": None}, "jobs_backend_opts_check"),
        ({"backend_opts": "text"}, "jobs_backend_opts_check"),
        ({"backend_opts": {"a": {"b": {"c": {"d": {"e": 1}}}}}}, "jobs_backend_opts_check"),
        ({"backend_opts": {"big": 2**53}}, "jobs_backend_opts_check"),
        ({"backend_opts": {"s": "x" * 16400}}, "jobs_backend_opts_check"),
    ],
)
def test_a_bad_insert_is_refused_with_the_named_constraint(
    migrated_database_url: str, fields: dict[str, Any], constraint: str
) -> None:
    with pytest.raises(psycopg.errors.CheckViolation) as error:
        client_insert(migrated_database_url, **fields)
    assert error.value.diag.constraint_name == constraint
    assert service_sql(migrated_database_url, "SELECT id FROM imagen.jobs") == []


def test_values_at_the_edges_of_the_rules_are_accepted(migrated_database_url: str) -> None:
    job_id = client_insert(
        migrated_database_url,
        prompt="ein Leuchtturm bei Dämmerung 🌅\twith\nnewlines",
        width=64,
        height=4096,
        steps=200,
        seed=4294967295,
        backend_opts={
            "3.cfg": 2.5,
            "node:7.seed_mode": "fixed",
            "a": {"b": {"c": [1, -(2**53 - 1)]}},
        },
    )
    [row] = service_sql(migrated_database_url, "SELECT status FROM imagen.jobs")
    assert row["status"] == "pending" and job_id > 0


def test_a_client_cannot_write_attempts_and_the_service_role_is_bounded_too(
    migrated_database_url: str,
) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        client_insert(migrated_database_url, attempts=0)
    with pytest.raises(psycopg.errors.CheckViolation) as error:
        service_sql(
            migrated_database_url,
            "INSERT INTO imagen.jobs (prompt, attempts) VALUES ('x', 2147483647)",
        )
    assert error.value.diag.constraint_name == "jobs_attempts_check"


def test_the_pipelines_attempt_limit_is_the_databases(migrated_database_url: str) -> None:
    [row] = service_sql(migrated_database_url, "SELECT imagen.max_attempts() AS n")
    assert row["n"] == MAX_ATTEMPTS
    [row] = service_sql(migrated_database_url, "SELECT imagen.max_interruptions() AS n")
    assert row["n"] == MAX_INTERRUPTIONS


def test_a_client_can_neither_set_interruptions_nor_read_the_holds(
    migrated_database_url: str,
) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        client_insert(migrated_database_url, interruptions=0)
    with (
        pytest.raises(psycopg.errors.InsufficientPrivilege),
        web_session(migrated_database_url, USER) as cursor,
    ):
        cursor.execute("SELECT * FROM imagen.job_holds")


def seed_job(url: str, status: str, attempts: int, owner: str = USER) -> int:
    [row] = service_sql(
        url,
        "INSERT INTO imagen.jobs (owner_user_id, prompt, status, attempts, error, finished_at) "
        "VALUES (%s, 'x', %s, %s, CASE WHEN %s = 'failed' THEN 'it broke' END, now()) "
        "RETURNING id",
        (owner, status, attempts, status),
    )
    return int(row["id"])


def client_set_status(url: str, job_id: int, status: str) -> int:
    with web_session(url, USER) as cursor:
        return cursor.execute(
            "UPDATE imagen.jobs SET status = %s WHERE id = %s", (status, job_id)
        ).rowcount


def test_a_client_retries_a_failed_job_with_attempts_left(migrated_database_url: str) -> None:
    job_id = seed_job(migrated_database_url, "failed", 1)
    assert client_set_status(migrated_database_url, job_id, "pending") == 1
    [row] = service_sql(migrated_database_url, "SELECT * FROM imagen.jobs")
    assert (row["status"], row["attempts"], row["finished_at"]) == ("pending", 1, None)
    assert row["error"] == "it broke", "the reason of the last failure stays visible"


def test_a_job_without_attempts_left_cannot_be_retried(migrated_database_url: str) -> None:
    job_id = seed_job(migrated_database_url, "failed", MAX_ATTEMPTS)
    with pytest.raises(psycopg.errors.CheckViolation, match="has used all 3 attempts") as error:
        client_set_status(migrated_database_url, job_id, "pending")
    assert error.value.diag.constraint_name == "jobs_client_transition"


@pytest.mark.parametrize(
    ("status", "target"),
    [
        ("running", "pending"),
        ("queued", "pending"),
        ("done", "pending"),
        ("failed", "canceled"),
        ("failed", "running"),
        ("pending", "queued"),
    ],
)
def test_a_client_cannot_make_other_transitions(
    migrated_database_url: str, status: str, target: str
) -> None:
    job_id = seed_job(migrated_database_url, status, 1)
    try:
        changed = client_set_status(migrated_database_url, job_id, target)
    except (psycopg.errors.CheckViolation, psycopg.errors.InsufficientPrivilege):
        changed = 0
    assert changed == 0
    [row] = service_sql(migrated_database_url, "SELECT status FROM imagen.jobs")
    assert row["status"] == status


def test_a_client_cannot_retry_someone_elses_job(migrated_database_url: str) -> None:
    job_id = seed_job(migrated_database_url, "failed", 1, owner=OTHER)
    assert client_set_status(migrated_database_url, job_id, "pending") == 0
    [row] = service_sql(migrated_database_url, "SELECT status FROM imagen.jobs")
    assert row["status"] == "failed"


def test_rows_from_before_the_rules_are_repaired_and_kept(fresh_database_url: str) -> None:
    """Applying the migration to a table holding rows that break the rules."""
    earlier, rules = migrate_module.shipped_migrations()[:3], migrate_module.shipped_migrations()[3]
    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        conn.execute(migrate_module.bootstrap_sql())
        for migration in earlier:
            conn.execute(migration.sql)
        conn.execute(
            "INSERT INTO imagen.jobs (prompt, backend_opts, attempts, status) VALUES "
            """('bad opts', '{"__class__": "os.system"}', 0, 'pending'), """
            "('too many attempts', '{}', 2147483647, 'pending'), "
            "('a wide one', '{}', 1, 'done'), "
            "('fine', '{}', 0, 'pending')"
        )
        conn.execute("UPDATE imagen.jobs SET width = 1001 WHERE prompt = 'a wide one'")
        conn.execute(rules.sql)
    rows = {r["prompt"]: r for r in service_sql(fresh_database_url, "SELECT * FROM imagen.jobs")}
    assert rows["fine"]["status"] == "pending" and rows["fine"]["error"] is None
    bad = rows["bad opts"]
    assert (bad["status"], bad["backend_opts"]) == ("failed", {})
    assert "backend_opts:" in bad["error"] and "imagen.jobs rules were added" in bad["error"]
    assert (rows["too many attempts"]["status"], rows["too many attempts"]["attempts"]) == (
        "failed",
        MAX_ATTEMPTS,
    )
    assert (rows["a wide one"]["status"], rows["a wide one"]["width"]) == ("done", None)
    with psycopg.connect(fresh_database_url) as conn:
        unvalidated = conn.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'imagen.jobs'::regclass "
            "AND NOT convalidated"
        ).fetchall()
    assert unvalidated == []


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=False, allow_infinity=False, width=32)
    # jsonb cannot hold U+0000 or unpaired surrogates at all (refused before any rule is
    # checked); the pipeline refuses them too (test below).
    | st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["a", "b.c", "3.cfg", "_x", "__class__", "x-y", "k:v", "", "é"]),
            children,
            max_size=3,
        )
    ),
    max_leaves=12,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=json_values)
def test_the_pipeline_and_the_database_agree_on_backend_opts(
    migrated_database_url: str, value: Any
) -> None:
    try:
        check_backend_opts(value)
        pipeline_accepts = True
    except InvalidRequestError:
        pipeline_accepts = False
    [row] = service_sql(
        migrated_database_url, "SELECT imagen.valid_backend_opts(%s) AS ok", (Jsonb(value),)
    )
    assert row["ok"] == pipeline_accepts, value


@pytest.mark.parametrize("text", ["\x00", "a\ud800", "\udfff b"])
def test_text_the_database_cannot_store_is_refused_by_the_pipeline_too(text: str) -> None:
    with pytest.raises(InvalidRequestError, match="U\\+0000 or unpaired surrogates") as error:
        check_backend_opts({"a": [text]})
    assert error.value.field == "backend_opts.a[0]"


def test_an_owner_retries_a_canceled_job_once_its_run_stopped(migrated_database_url: str) -> None:
    url = migrated_database_url
    job_id = seed_job(url, "canceled", 1)
    service_sql(
        url, "UPDATE imagen.jobs SET progress = 0.4, progress_text = 'x' WHERE id = %s", (job_id,)
    )
    assert client_set_status(url, job_id, "pending") == 1
    [row] = service_sql(url, "SELECT * FROM imagen.jobs")
    assert (row["status"], row["finished_at"], row["progress"]) == ("pending", None, None)


def test_a_job_still_being_canceled_cannot_be_retried_yet(migrated_database_url: str) -> None:
    job_id = seed_job(migrated_database_url, "canceled", 1)
    service_sql(migrated_database_url, "UPDATE imagen.jobs SET finished_at = NULL")
    with pytest.raises(psycopg.errors.CheckViolation, match="still being canceled") as error:
        client_set_status(migrated_database_url, job_id, "pending")
    assert error.value.diag.constraint_name == "jobs_client_transition"


def test_another_user_cannot_retry_or_reprioritize_a_canceled_job(
    migrated_database_url: str,
) -> None:
    job_id = seed_job(migrated_database_url, "canceled", 1, owner=OTHER)
    assert client_set_status(migrated_database_url, job_id, "pending") == 0
    with web_session(migrated_database_url, USER) as cursor:
        assert cursor.execute("UPDATE imagen.jobs SET priority = 5").rowcount == 0
    [row] = service_sql(migrated_database_url, "SELECT status, priority FROM imagen.jobs")
    assert (row["status"], row["priority"]) == ("canceled", 0)


@pytest.mark.parametrize("priority", [-1, 11, 100])
def test_a_client_inserts_priorities_0_to_10_only(
    migrated_database_url: str, priority: int
) -> None:
    assert client_insert(migrated_database_url, priority=10) > 0
    with pytest.raises(
        psycopg.errors.CheckViolation, match="priority: a client may set 0 to 10"
    ) as error:
        client_insert(migrated_database_url, priority=priority)
    assert error.value.diag.constraint_name == "jobs_client_priority"


def test_the_service_role_sets_any_priority_in_range(migrated_database_url: str) -> None:
    service_sql(
        migrated_database_url, "INSERT INTO imagen.jobs (prompt, priority) VALUES ('x', 100)"
    )
    with pytest.raises(psycopg.errors.CheckViolation) as error:
        service_sql(
            migrated_database_url, "INSERT INTO imagen.jobs (prompt, priority) VALUES ('x', 101)"
        )
    assert error.value.diag.constraint_name == "jobs_priority_check"


def test_an_owner_changes_the_priority_of_a_pending_job_only(migrated_database_url: str) -> None:
    pending = seed_job(migrated_database_url, "pending", 0)
    running = seed_job(migrated_database_url, "running", 1)
    with web_session(migrated_database_url, USER) as cursor:
        assert (
            cursor.execute("UPDATE imagen.jobs SET priority = 7 WHERE id = %s", (pending,)).rowcount
            == 1
        )
    with (
        web_session(migrated_database_url, USER) as cursor,
        pytest.raises(psycopg.errors.CheckViolation, match="only while a job is pending"),
    ):
        cursor.execute("UPDATE imagen.jobs SET priority = 7 WHERE id = %s", (running,))


@pytest.mark.parametrize(("count", "ok"), [(1, True), (8, True), (0, False), (9, False)])
def test_a_client_asks_for_1_to_8_images(migrated_database_url: str, count: int, ok: bool) -> None:
    if ok:
        assert client_insert(migrated_database_url, count=count) > 0
        return
    with pytest.raises(psycopg.errors.CheckViolation) as error:
        client_insert(migrated_database_url, count=count)
    assert error.value.diag.constraint_name == "jobs_count_check"


@pytest.mark.parametrize("column", ["progress", "progress_text"])
def test_a_client_cannot_write_progress(migrated_database_url: str, column: str) -> None:
    job_id = seed_job(migrated_database_url, "running", 1)
    value = 0.5 if column == "progress" else "done"
    with (
        web_session(migrated_database_url, USER) as cursor,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        cursor.execute(f"UPDATE imagen.jobs SET {column} = %s WHERE id = %s", (value, job_id))
