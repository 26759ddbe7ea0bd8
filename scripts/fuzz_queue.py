"""Fuzz the imagen.jobs queue on the production stack with hostile and valid rows.

Usage:
    .venv/bin/python scripts/fuzz_queue.py [--rows 300] [--seconds 600] [--seed 1]
        [--without-rules] [--server-url postgresql://postgres@127.0.0.1/postgres]

Starts the stack of scripts/bench_queue.py (a real `dagster-daemon` on a Postgres-backed
instance from scripts/dagster.postgres.yaml, throwaway database), then INSERTs --rows rows
in small batches as a signed-in web client would (role `authenticated` with JWT claims),
about half of them hostile: any JSON in backend_opts (`__class__`-style keys, arrays, null,
deep nesting, huge strings, huge numbers, options past the mock's client_options),
extreme integers, control characters, unknown
styles and backends, any Unicode. With --without-rules the database's request rules are
dropped first and rows are written by the service role, so only the pipeline's own checks
stand between a row and the queue. Bounded by --rows and --seconds.

Reports as JSON: rows tried; refused by the database (per constraint); done; failed;
mismatches (a valid row that did not end done, or a hostile row that did); stalls (rows
still pending, queued or running when the time is up: must be 0); sensor ticks that failed
(must be 0); elapsed seconds; import_dagster_s (how fast this machine is today).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_queue import Options, Stack, import_dagster_s, throwaway_database

STYLES = ["none", "photo", "watercolor", "blog-header", "cinematic", "minimal", "illustration"]
CLIENT = "0f0f0f0f-0000-4000-8000-00000000000f"
TERMINAL = {"done", "failed", "canceled"}
# The request rules of migration 20261202090000 (every CHECK but the status lifecycle).
REQUEST_RULES = """
    SELECT conname FROM pg_constraint
     WHERE conrelid = 'imagen.jobs'::regclass AND contype = 'c' AND conname <> 'jobs_status_check'
"""
CLASS_NAME = re.compile(r"\b[A-Z][A-Za-z]+(Error|Exception)\b")


def any_text(rng: random.Random, size: int) -> str:
    """Text PostgreSQL can store (no U+0000, no surrogates), from all of Unicode."""
    chars = []
    while len(chars) < size:
        code = rng.choice(
            [rng.randint(1, 0x7F), rng.randint(0x80, 0xFFFF), rng.randint(0x10000, 0x10FFFF)]
        )
        if not 0xD800 <= code <= 0xDFFF:
            chars.append(chr(code))
    return "".join(chars)


def nested(depth: int) -> Any:
    value: Any = 1
    for level in range(depth):
        value = {f"k{level}": value} if level % 2 else [value]
    return value


HOSTILE: dict[str, Any] = {
    "prompt": lambda r: r.choice(["   ", "a\x07bell", "x" * 8001, "esc\x1b[0m"]),
    "negative": lambda r: r.choice(["\x01", "n" * 8001]),
    "style": lambda r: r.choice(["vaporwave", any_text(r, 12), "s" * 101, "a\x02"]),
    "backend": lambda r: r.choice(["dalle9", any_text(r, 8), "b" * 101, "x\ny"]),
    "width": lambda r: r.choice([1001, 0, -8, 8192, 2**31 - 1]),
    "height": lambda r: r.choice([63, 4104, -(2**31)]),
    "steps": lambda r: r.choice([0, 201, 2**31 - 1]),
    "seed": lambda r: r.choice([-1, 2**32, 2**63 - 1]),
    "backend_opts": lambda r: r.choice(
        [
            {"__class__": "os.system"},
            {"a": [{"__set__": [1]}]},
            {"__enum__": "X.Y"},
            {"_x": 1},
            [],
            None,
            "text",
            nested(r.randint(5, 30)),
            {"huge": "x" * r.randint(16_400, 60_000)},
            {"big": 2**53},
            {"n": -(10**30)},
            {"3.cfg": 50},
            {"num_outputs": 4},
            {"image": "http://169.254.169.254/latest/meta-data"},
            {"a": {"b": [1, None, "x"]}},
        ]
    ),
    "attempts": lambda r: r.choice([3, 7, 2**31 - 1]),
}


CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def valid_row(rng: random.Random) -> dict[str, Any]:
    return {
        "prompt": rng.choice(["a lighthouse", "灯台 at dusk 🌅", "ein Reiher im Schilf"])
        + " "
        + CONTROL.sub("", any_text(rng, rng.randint(0, 20))),
        "negative": rng.choice(["", "blurry"]),
        "style": rng.choice(STYLES),
        "backend": rng.choice(["", "mock"]),
        "width": rng.choice([None, 64, 128]),
        "height": rng.choice([None, 64, 96]),
        "steps": rng.choice([None, 1, 200]),
        "seed": rng.choice([None, 0, 2**32 - 1]),
        "backend_opts": rng.choice([{}, {"3.cfg": 2.5}, {"3.cfg": 10}]),
    }


def make_row(rng: random.Random, with_attempts: bool) -> tuple[dict[str, Any], bool]:
    """One row and whether it is valid: half are valid, the rest break one or two columns."""
    row = valid_row(rng)
    if rng.random() < 0.5:
        return row, True
    names = [n for n in HOSTILE if with_attempts or n != "attempts"]
    for name in rng.sample(names, rng.randint(1, 2)):
        row[name] = HOSTILE[name](rng)
    return row, False


def job_states(url: str, ids: list[int]) -> dict[int, dict[str, Any]]:
    with psycopg.connect(url) as conn:
        found = conn.execute(
            "SELECT id, status, error FROM imagen.jobs WHERE id = ANY(%s)", (ids,)
        ).fetchall()
    return {r[0]: {"status": r[1], "error": r[2]} for r in found}


def insert(url: str, row: dict[str, Any], as_client: bool) -> tuple[int | None, str | None]:
    values = {"owner_user_id": CLIENT, **row, "backend_opts": Jsonb(row["backend_opts"])}
    statement = (
        f"INSERT INTO imagen.jobs ({', '.join(values)}) "
        f"VALUES ({', '.join(['%s'] * len(values))}) RETURNING id"
    )
    with psycopg.connect(url) as conn:
        try:
            with conn.transaction():
                if as_client:
                    conn.execute("SET LOCAL ROLE authenticated")
                    conn.execute(
                        "SELECT set_config('request.jwt.claims', %s, true)",
                        (json.dumps({"role": "authenticated", "sub": CLIENT}),),
                    )
                found = conn.execute(statement, list(values.values())).fetchone()
        except psycopg.errors.CheckViolation as error:
            return None, error.diag.constraint_name
    assert found is not None
    return int(found[0]), None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch", type=int, default=10, help="rows inserted together")
    parser.add_argument("--without-rules", action="store_true")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    results: dict[str, Any] = {
        "rules": not args.without_rules,
        "seed": args.seed,
        "import_dagster_s": import_dagster_s(),
    }
    started = time.monotonic()
    with (
        throwaway_database(args.server_url) as url,
        tempfile.TemporaryDirectory(prefix="imagen-fuzz-") as tmp,
    ):
        if args.without_rules:
            with psycopg.connect(url, autocommit=True) as conn:
                for (name,) in conn.execute(REQUEST_RULES).fetchall():
                    conn.execute(f"ALTER TABLE imagen.jobs DROP CONSTRAINT {name}")
        stack = Stack(url, Path(tmp), "celery", Options(False, 0.1, None, None, False))
        stack.start()
        expected: dict[int, bool] = {}
        refused: Counter[str] = Counter()
        tried = 0
        try:
            deadline = started + args.seconds
            while tried < args.rows and time.monotonic() < deadline:
                for _ in range(min(args.batch, args.rows - tried)):
                    row, valid = make_row(rng, args.without_rules)
                    job_id, constraint = insert(url, row, not args.without_rules)
                    tried += 1
                    if job_id is None:
                        refused[constraint or "?"] += 1
                        if valid:
                            refused["VALID ROW REFUSED"] += 1
                    else:
                        expected[job_id] = valid
                time.sleep(0.5)
            rows = job_states(url, list(expected))
            while time.monotonic() < deadline and any(
                r["status"] not in TERMINAL for r in rows.values()
            ):
                time.sleep(1)
                rows = job_states(url, list(expected))
            with psycopg.connect(url) as conn:
                ticks = dict(
                    conn.execute("SELECT status, count(*) FROM job_ticks GROUP BY 1").fetchall()
                )
        finally:
            stack.stop()
    statuses = Counter(row["status"] for row in rows.values())
    mismatches = [
        {"id": job_id, "valid": valid, **rows[job_id]}
        for job_id, valid in expected.items()
        if (rows[job_id]["status"] == "done") != valid
        or (rows[job_id]["status"] == "failed" and not rows[job_id]["error"])
    ]
    leaky = [r for r in rows.values() if r["error"] and CLASS_NAME.search(r["error"])]
    results.update(
        {
            "rows_tried": tried,
            "refused_by_database": sum(n for k, n in refused.items() if k != "VALID ROW REFUSED"),
            "refused_by_constraint": dict(sorted(refused.items())),
            "done": statuses.get("done", 0),
            "failed": statuses.get("failed", 0),
            "stalls": sum(n for s, n in statuses.items() if s not in TERMINAL),
            "mismatches": len(mismatches),
            "errors_with_class_names": len(leaky),
            "sensor_ticks": ticks,
            "sensor_tick_failures": ticks.get("FAILURE", 0),
            "elapsed_s": round(time.monotonic() - started, 1),
        }
    )
    print(json.dumps(results, indent=2))
    for mismatch in mismatches[:10]:
        print("mismatch:", json.dumps(mismatch)[:300], file=sys.stderr)
    if mismatches or results["stalls"] or results["sensor_tick_failures"] or leaky:
        sys.exit(1)


if __name__ == "__main__":
    main()
