"""Generated hostile ``imagen.jobs`` rows against the real claim code, sensor and listener.

Batches mix valid rows with rows a hostile or buggy web client could write: any JSON in
``backend_opts`` (``__class__``-style keys, arrays, ``null``, deep nesting, huge strings,
options outside the backends' ``client_options``),
extreme integers, any Unicode in the text columns. Each batch runs twice over: once with the
database's rules (inserted as a signed-in client, so the database refuses what it can), once
with those rules dropped and the rows written by the service role (the pipeline's own layer
alone). Whatever the rows hold: every valid row gets a run that Dagster can read back and
create, every other row is refused by the database or failed with a reason, no tick raises,
nothing stays pending.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import hypothesis.strategies as st
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from imagen_pipeline.defs.job_runs import run_config_for
from imagen_pipeline.defs.jobs import build_generate_image_job
from imagen_pipeline.generate.planning import GenerationPlan
from imagen_pipeline.generate.setup import Setup, load_setup
from imagen_pipeline.prompts.styles import load_styles
from imagen_pipeline.queue.listener import handle_notification
from imagen_pipeline.queue.rows import JobRow
from imagen_pipeline_tests.fixtures.queue import sensor_tick, web_session

CLIENT = "0c0c0c0c-0000-4000-8000-00000000000c"
OTHER = "0d0d0d0d-0000-4000-8000-00000000000d"
"""Another owner, whose images the client's rows may name but never use."""
BACKENDS = ("mock", "gpu_box")
CLASS_NAME = re.compile(r"\b[A-Z][A-Za-z]+(Error|Exception)\b")


@dataclass(frozen=True)
class Column:
    """A generated column value and whether the pipeline must accept it."""

    value: Any
    valid: bool


def column(valid: st.SearchStrategy[Any], invalid: st.SearchStrategy[Any]) -> st.SearchStrategy:
    return valid.map(lambda v: Column(v, True)) | invalid.map(lambda v: Column(v, False))


# Anything PostgreSQL can store: no U+0000, no lone surrogates.
STORABLE = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
CONTROL = st.sampled_from([chr(c) for c in (*range(1, 9), *range(11, 32), 127)])
safe_text = st.text(
    st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\x00"), max_size=40
) | st.sampled_from(["ein Leuchtturm", "灯台 🌅", "tab\there", "new\nline", "{prompt}"])

prompt = column(
    safe_text.filter(lambda text: bool(text.strip())),
    st.sampled_from(["", "   ", "\t\n"])
    | st.builds(lambda a, c, b: a + c + b, safe_text, CONTROL, safe_text)
    | st.integers(8001, 9000).map(lambda n: "x" * n),
)
negative = column(
    safe_text,
    st.builds(lambda a, c: a + c, safe_text, CONTROL) | st.just("n" * 8001),
)
style = column(
    st.sampled_from(sorted(load_styles())),
    st.text(STORABLE, min_size=1, max_size=120).filter(lambda s: s not in load_styles()),
)
backend = column(
    st.sampled_from(["", *BACKENDS]),
    st.text(STORABLE, min_size=1, max_size=120).filter(lambda s: s not in BACKENDS),
)
INT4 = st.integers(-(2**31), 2**31 - 1)
size = column(
    st.none() | st.integers(8, 512).map(lambda n: n * 8),
    INT4.filter(lambda n: not (64 <= n <= 4096 and n % 8 == 0)),
)
steps = column(st.none() | st.integers(1, 200), INT4.filter(lambda n: not 1 <= n <= 200))
seed = column(
    st.none() | st.integers(0, 2**32 - 1),
    st.integers(-(2**63), 2**63 - 1).filter(lambda n: not 0 <= n < 2**32),
)
SAFE_KEY = st.from_regex(r"[a-z0-9][a-z0-9_.:-]{0,10}", fullmatch=True)
safe_json = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(STORABLE, max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(SAFE_KEY, children, max_size=3)
    ),
    max_leaves=6,
)


def nest(levels: int, leaf: Any) -> Any:
    for index in range(levels):
        leaf = {f"k{index}": leaf} if index % 2 else [leaf]
    return leaf


CLIENT_OPTIONS = {
    "strength": {"min": 0, "max": 1},
    "3.scheduler": {"choices": ["simple", "karras"]},
}
"""What the test's backends let a client set (their ``client_options``)."""
backend_opts = column(
    st.fixed_dictionaries(
        {},
        optional={
            "strength": st.floats(0, 1) | st.integers(0, 1),
            "3.scheduler": st.sampled_from(["simple", "karras"]),
        },
    ),
    st.sampled_from([[], None, "text", 7, True])
    | st.dictionaries(SAFE_KEY, safe_json, min_size=1, max_size=4).filter(
        lambda opts: not set(opts) <= set(CLIENT_OPTIONS)
    )
    | st.sampled_from([{"strength": 2}, {"strength": "1"}, {"3.scheduler": "normal"}])
    | st.dictionaries(
        st.sampled_from(["__class__", "__set__", "__frozenset__", "__enum__", "_x", "", "a b"]),
        st.sampled_from(["os.system", [1], "a.B", {"__class__": "x"}]),
        min_size=1,
        max_size=2,
    )
    | st.integers(5, 40).map(lambda n: {"deep": nest(n, 1)})
    | st.integers(16_400, 40_000).map(lambda n: {"huge": "x" * n})
    | st.sampled_from([{"big": 2**53}, {"big": -(2**60)}, {"n": 10**30}]),
)
priority = column(st.integers(0, 10), INT4.filter(lambda n: not -100 <= n <= 100))
count = column(st.integers(1, 8), INT4.filter(lambda n: not 1 <= n <= 8))
attempts = column(st.sampled_from([0, 1, 2]), st.sampled_from([3, 4, 2**31 - 1]))


@dataclass
class RowSpec:
    """One generated row: its column values, and whether all of them are valid."""

    columns: dict[str, Column]
    outcome: str = ""
    job_id: int | None = None
    refused_by: str | None = None

    @property
    def valid(self) -> bool:
        return all(item.valid for item in self.columns.values())

    def values(self) -> dict[str, Any]:
        return {name: item.value for name, item in self.columns.items()}


def row_specs(with_attempts: bool) -> st.SearchStrategy[RowSpec]:
    columns = {
        "prompt": prompt,
        "negative": negative,
        "style": style,
        "backend": backend,
        "width": size,
        "height": size,
        "steps": steps,
        "seed": seed,
        "backend_opts": backend_opts,
        "priority": priority,
        "count": count,
    }
    if with_attempts:
        columns["attempts"] = attempts
    return st.fixed_dictionaries(columns).map(RowSpec)


@dataclass
class Harness:
    """The database, the Dagster instance and the two ways rows are taken from the queue."""

    url: str
    instance: dg.DagsterInstance
    config_file: Path
    submitted: list[tuple[JobRow, GenerationPlan]] = field(default_factory=list)

    def connect(self) -> psycopg.Connection[dict[str, Any]]:
        return psycopg.connect(self.url, autocommit=True, row_factory=dict_row)

    def insert(self, spec: RowSpec, as_client: bool) -> None:
        values = {"owner_user_id": CLIENT, **spec.values()}
        values["backend_opts"] = Jsonb(values["backend_opts"])
        statement = (
            f"INSERT INTO imagen.jobs ({', '.join(values)}) "
            f"VALUES ({', '.join(['%s'] * len(values))}) RETURNING id"
        )
        try:
            if as_client:
                with web_session(self.url, CLIENT) as cursor:
                    row = cursor.execute(statement, list(values.values())).fetchone()
            else:
                with self.connect() as conn:
                    row = conn.execute(statement, list(values.values())).fetchone()
        except psycopg.errors.CheckViolation as error:
            spec.refused_by = error.diag.constraint_name
            return
        assert row is not None
        spec.job_id = int(row["id"])

    def sensor_tick(self) -> dg.SensorResult:
        result = sensor_tick(self.instance, self.config_file)
        assert isinstance(result, dg.SensorResult), result
        for request in result.run_requests or []:
            # What the daemon does with the tick's result: read it back, create the run.
            echoed = dg.deserialize_value(dg.serialize_value(request), dg.RunRequest)
            assert echoed == request
            self.instance.create_run_for_job(
                build_generate_image_job(), run_config=echoed.run_config, tags=echoed.tags
            )
        return result

    def notify(self, job_id: int) -> None:
        with psycopg.connect(self.url) as conn:
            handle_notification(conn, str(job_id), self.load_setup, self)

    def load_setup(self) -> Setup:
        return load_setup(str(self.config_file))

    def submit(self, row: JobRow, plan: GenerationPlan) -> str:
        """As the GraphQL submitter would: the run config crosses a serialization boundary."""
        config = run_config_for(plan).to_config_dict()
        echoed = dg.deserialize_value(dg.serialize_value(config), dict)
        self.instance.create_run_for_job(build_generate_image_job(), run_config=echoed)
        self.submitted.append((row, plan))
        return f"run-{row.id}"


def make_harness(
    url: str, write_config: Callable[..., Path], dagster_instance: dg.DagsterInstance
) -> Harness:
    config_file = write_config(
        {
            "backends": {
                "mock": {"type": "mock", "client_options": CLIENT_OPTIONS},
                "gpu_box": {"type": "mock", "pool": "gpu", "client_options": CLIENT_OPTIONS},
            },
            "queue": {"max_in_flight_per_owner": None},
        }
    )
    return Harness(url, dagster_instance, config_file)


def check_batch(h: Harness, specs: list[RowSpec], *, as_client: bool, listener: bool) -> None:
    with h.connect() as conn:
        conn.execute("DELETE FROM imagen.jobs")
    h.submitted.clear()
    for spec in specs:
        h.insert(spec, as_client)
    inserted = [spec for spec in specs if spec.job_id is not None]
    for spec in specs:
        if spec.job_id is None:
            assert as_client, "only the database's rules may refuse an insert"
            assert not spec.valid, f"a valid row was refused by {spec.refused_by}"
            assert spec.refused_by and spec.refused_by.startswith("jobs_"), spec.refused_by
    requested: set[int] = set()
    if listener:
        for spec in inserted:
            assert spec.job_id is not None
            h.notify(spec.job_id)
        requested = {row.id for row, _ in h.submitted}
    result = h.sensor_tick()
    requested |= {int(r.tags["imagen/job_id"]) for r in result.run_requests or []}
    with h.connect() as conn:
        rows = {r["id"]: r for r in conn.execute("SELECT * FROM imagen.jobs")}
    assert [r for r in rows.values() if r["status"] == "pending"] == []
    for spec in inserted:
        row = rows[spec.job_id]
        if spec.valid:
            assert spec.job_id in requested, (spec, row)
            assert row["status"] == "queued", (spec, row)
        else:
            assert spec.job_id not in requested, spec
            assert row["status"] == "failed", (spec, row)
            error = row["error"]
            assert error and len(error) <= 2000
            assert not CLASS_NAME.search(error), error
            assert str(h.config_file) not in error and "configured backends" not in error


DROPPABLE_RULES = """
    SELECT conname FROM pg_constraint
     WHERE conrelid = 'imagen.jobs'::regclass AND contype = 'c' AND conname <> 'jobs_status_check'
"""


@pytest.fixture
def rules_dropped(migrated_database_url: str) -> str:
    """The same database without its request rules: only the pipeline's checks remain."""
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        names = [row[0] for row in conn.execute(DROPPABLE_RULES)]
        assert len(names) == 21
        for name in names:
            conn.execute(f"ALTER TABLE imagen.jobs DROP CONSTRAINT {name}")
    return migrated_database_url


SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@SETTINGS
@given(
    specs=st.lists(row_specs(with_attempts=False), min_size=1, max_size=8), listener=st.booleans()
)
def test_with_the_database_rules_every_row_runs_is_refused_or_fails_alone(
    migrated_database_url: str,
    write_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
    specs: list[RowSpec],
    listener: bool,
) -> None:
    h = make_harness(migrated_database_url, write_config, dagster_instance)
    check_batch(h, specs, as_client=True, listener=listener)


@SETTINGS
@given(
    specs=st.lists(row_specs(with_attempts=True), min_size=1, max_size=8), listener=st.booleans()
)
def test_without_the_database_rules_the_pipeline_alone_keeps_rows_apart(
    rules_dropped: str,
    write_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
    specs: list[RowSpec],
    listener: bool,
) -> None:
    h = make_harness(rules_dropped, write_config, dagster_instance)
    check_batch(h, specs, as_client=False, listener=listener)


def insert_raw(url: str, prompt: str, **columns: str) -> int:
    """INSERT with SQL literals as given (the shapes as a client sent them)."""
    names = ", ".join(["prompt", *columns])
    values = ", ".join(["%s", *columns.values()])
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            f"INSERT INTO imagen.jobs ({names}) VALUES ({values}) RETURNING id", (prompt,)
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize(
    ("columns", "error"),
    [
        pytest.param(
            {"backend_opts": """'{"__class__": "os.system"}'"""},
            "backend_opts: key '__class__' is not allowed; keys are 1-100 letters, digits, "
            "'_', '.', ':' or '-' and do not start with '_'",
            id="class-marker-key",
        ),
        pytest.param(
            {"backend_opts": "'[]'"},
            "backend_opts: must be a JSON object (got an array)",
            id="array",
        ),
        pytest.param(
            {"backend_opts": "'null'"},
            "backend_opts: must be a JSON object (got null)",
            id="json-null",
        ),
        pytest.param(
            {"attempts": "2147483647"},
            "attempts: all 2147483647 attempts are used; this job cannot run again",
            id="attempts-int-max",
        ),
        pytest.param(
            {"source_images": "'{1,NULL}'"},
            "source_images[1]: is empty; name an image by its id",
            id="source-images-empty-entry",
        ),
        pytest.param(
            {"source_images": "'{{1,2}}'"},
            "source_images: must be a flat list of image ids (got a nested array)",
            id="source-images-nested",
        ),
    ],
)
def test_regression_a_shape_that_stopped_the_queue_now_fails_only_its_own_row(
    rules_dropped: str,
    write_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
    columns: dict[str, str],
    error: str,
) -> None:
    """Issue 11's three shapes and two of ``source_images`` (which made reading the claimed
    rows raise, leaving the whole claim queued without runs), past the database (its rules
    dropped): one tick fails the hostile row with its reason and launches the valid rows
    around it."""
    h = make_harness(rules_dropped, write_config, dagster_instance)
    before = insert_raw(rules_dropped, "a valid row before")
    hostile = insert_raw(rules_dropped, "a hostile row", **columns)
    after = insert_raw(rules_dropped, "a valid row after")
    result = h.sensor_tick()
    assert sorted(int(r.tags["imagen/job_id"]) for r in result.run_requests or []) == [
        before,
        after,
    ]
    with h.connect() as conn:
        row = conn.execute("SELECT * FROM imagen.jobs WHERE id = %s", (hostile,)).fetchone()
    assert row is not None
    assert (row["status"], row["error"]) == ("failed", error)


def test_regression_a_client_row_of_any_source_shape_is_refused_by_a_named_rule(
    migrated_database_url: str,
) -> None:
    """A nested ``source_images`` from a client was refused by the trigger
    ``jobs_client_sources`` failing with "cannot concatenate incompatible arrays" instead of
    by a rule, and another owner's image after an empty entry passed the trigger (the check
    constraint refused the row for the empty entry)."""
    url = migrated_database_url
    with psycopg.connect(url, autocommit=True) as conn:
        mine, theirs = (
            conn.execute(
                "INSERT INTO imagen.images (owner_user_id, width, height, mime, bytes, sha256, "
                "prompt, enriched_prompt, style, backend, model, run_id) VALUES "
                "(%s, 64, 64, 'image/png', 10, 'x', 'p', 'p', 'none', 'mock', 'm', %s) "
                "RETURNING id",
                (owner, f"run-{owner}"),
            ).fetchone()[0]
            for owner in (CLIENT, OTHER)
        )
    cases = [
        ([[mine, mine]], "jobs_source_images_check"),
        ([[mine, theirs]], "jobs_client_sources"),
        ([None, theirs], "jobs_client_sources"),
    ]
    refused = []
    for images, _ in cases:
        with (
            pytest.raises(psycopg.errors.CheckViolation) as error,
            web_session(url, CLIENT) as cursor,
        ):
            cursor.execute(
                "INSERT INTO imagen.jobs (prompt, source_images) VALUES ('a harbour', %s)",
                (images,),
            )
        refused.append(error.value.diag.constraint_name)
    assert refused == [rule for _, rule in cases]
