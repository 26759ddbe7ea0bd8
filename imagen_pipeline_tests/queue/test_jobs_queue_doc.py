"""docs/jobs-queue.md's SQL examples run as pasted, in order, on a migrated database."""

from __future__ import annotations

import re

import psycopg

from imagen_pipeline_tests.fixtures.imagen import REPO_ROOT

DOC = REPO_ROOT / "docs" / "jobs-queue.md"
SQL_BLOCK = re.compile(r"^```sql\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def test_every_sql_block_of_the_jobs_queue_doc_runs_as_pasted(migrated_database_url: str) -> None:
    blocks = SQL_BLOCK.findall(DOC.read_text(encoding="utf-8"))
    inserts = sum(block.count("INSERT INTO imagen.jobs") for block in blocks)
    assert len(blocks) >= 4 and inserts >= 2
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        # Supabase gives every project this publication (Realtime); the bootstrap that
        # stands in for Supabase on plain PostgreSQL does not.
        conn.execute("CREATE PUBLICATION supabase_realtime")
        for block in blocks:
            conn.execute(block)
        rows = conn.execute("SELECT count(*) FROM imagen.jobs").fetchone()
        published = conn.execute(
            "SELECT schemaname, tablename FROM pg_publication_tables "
            "WHERE pubname = 'supabase_realtime'"
        ).fetchall()
    assert rows == (inserts,)
    assert published == [("imagen", "jobs")]
