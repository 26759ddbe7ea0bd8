"""Generated hostile ``imagen.jobs`` rows against the real claim code, sensor and listener.

Batches mix valid rows with rows a hostile or buggy web client could write: any JSON in
``backend_opts`` (``__class__``-style keys, arrays, ``null``, deep nesting, huge strings,
options outside the backends' ``client_options``), extreme integers, any Unicode in the text
columns, and source images (issue 28): ids of the owner's images, of another owner's,
missing, zero or negative, repeated, more than the backends or the database take, empty
entries, a nested array; a mask that is any of those or not a number at all; a mode
outside ``edit``/``img2img``; a strength outside the database's 0 to 1 or the operator's
rule, NaN and the infinities. Rows come in four kinds: all valid, only the source columns
broken, one or two older columns broken, anything. Each batch runs twice over: once with the
database's rules (inserted as a signed-in client, so the database refuses what it can), once
with those rules dropped and the rows written by the service role (the pipeline's own layer
alone). Whatever the rows hold: every valid row gets a run that Dagster can read back and
create; every other row is refused by the database (by a rule about one of its invalid
fields, or by a column's type) or failed with a sentence naming one of its invalid fields;
no tick raises; nothing stays pending.

Runs cost about a second each, so few are executed: in the fixed example batch of each test
and in about one generated batch in four, one valid row naming the owner's images, next to
a row naming another owner's. It ends ``done``, every image it made has exactly its sources
(then its mask) as parents, and no other row changes. After every batch, no image has
another owner's image as a parent (``imagen.image_parents``) and none of another owner's
images was sent to a backend (the mock backends' calls log).
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import hypothesis.strategies as st
import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from imagen_pipeline.backends.sources import SOURCE_MODES
from imagen_pipeline.defs.job_runs import run_config_for, run_tags_for
from imagen_pipeline.defs.jobs import build_generate_image_job
from imagen_pipeline.generate.planning import GenerationPlan
from imagen_pipeline.generate.setup import Setup, load_setup
from imagen_pipeline.prompts.styles import load_styles
from imagen_pipeline.queue.listener import handle_notification
from imagen_pipeline.queue.rows import JobRow
from imagen_pipeline_tests.fixtures.imagen import file_resources, step_failure_text
from imagen_pipeline_tests.fixtures.queue import deployed_job, sensor_tick, web_session

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


@dataclass(frozen=True)
class ColumnStrategy:
    """How a column's values are drawn: its valid values, its invalid ones, or either."""

    valid: st.SearchStrategy[Column]
    invalid: st.SearchStrategy[Column]

    def either(self) -> st.SearchStrategy[Column]:
        return self.valid | self.invalid


def column(valid: st.SearchStrategy[Any], invalid: st.SearchStrategy[Any]) -> ColumnStrategy:
    return ColumnStrategy(
        valid.map(lambda v: Column(v, True)), invalid.map(lambda v: Column(v, False))
    )


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


STRENGTH_RULE = (0.1, 0.9)
"""The strength the operator lets a client ask for: narrower than the database's 0 to 1."""
CLIENT_OPTIONS = {
    "strength": {"min": 0, "max": 1},
    "3.scheduler": {"choices": ["simple", "karras"]},
    "request.mode": {"choices": list(SOURCE_MODES)},
    "request.strength": {"min": STRENGTH_RULE[0], "max": STRENGTH_RULE[1]},
    "request.mask": {"choices": [True]},
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

OWN_IMAGES = 2
OTHER_IMAGES = 2
MOCK_MAX_SOURCES = 4
"""Most source images the test's backends take (the mock's ``max_source_images``)."""
DATABASE_MAX_SOURCES = 16


@dataclass(frozen=True)
class ImageRef:
    """An image id as drawn: one of the seeded images (``own`` or ``other``, by index), or a
    ``literal`` id that names no image (too large to exist, zero or negative)."""

    kind: Literal["own", "other", "literal"]
    number: int


@dataclass(frozen=True)
class NotANumber:
    """Text sent for a numeric column: its type refuses it, whoever writes the row."""

    text: str


own_image = st.integers(0, OWN_IMAGES - 1).map(lambda n: ImageRef("own", n))
not_an_image = (
    st.integers(0, OTHER_IMAGES - 1).map(lambda n: ImageRef("other", n))
    | st.integers(10**12, 2**63 - 1).map(lambda n: ImageRef("literal", n))
    | st.integers(-(2**63), 0).map(lambda n: ImageRef("literal", n))
)


def among_own(entry: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    """A list of the owner's images with ``entry`` somewhere in it."""
    return st.builds(
        lambda before, item, after: [*before, item, *after],
        st.lists(own_image, max_size=3),
        entry,
        st.lists(own_image, max_size=3),
    )


source_images = column(
    st.just([]) | st.lists(own_image, min_size=1, max_size=MOCK_MAX_SOURCES),
    among_own(not_an_image)
    | among_own(st.none())
    | st.lists(own_image, min_size=MOCK_MAX_SOURCES + 1, max_size=DATABASE_MAX_SOURCES)
    | st.lists(own_image, min_size=DATABASE_MAX_SOURCES + 1, max_size=40)
    | st.lists(st.lists(own_image, min_size=2, max_size=2), min_size=1, max_size=2),
)
NOT_NUMBERS = ["", "abc", "1.5", "one", "9" * 20]
"""Text no integer column takes (the last one is too large for bigint)."""
mask_invalid = not_an_image | st.sampled_from(NOT_NUMBERS).map(NotANumber)
MODE_NEAR_MISSES = ["", "Edit", "edit ", "IMG2IMG", "inpaint", "img2img;"]
mode_invalid = st.sampled_from(MODE_NEAR_MISSES) | st.text(STORABLE, max_size=60).filter(
    lambda text: text not in SOURCE_MODES
)
strength_invalid = (
    st.floats(0, STRENGTH_RULE[0], exclude_max=True)
    | st.floats(STRENGTH_RULE[1], 1, exclude_min=True)
    | st.floats(allow_nan=False).filter(lambda x: not 0 <= x <= 1)
    | st.sampled_from([math.nan, math.inf, -math.inf])
    | st.sampled_from(["1e999", "abc", ""]).map(NotANumber)
)
"""Outside the database's 0 to 1 or the operator's rule, NaN, infinities, not a number."""


def source_group(images: Column, mask: Any, mode: Any, strength: Any) -> dict[str, Column]:
    """The four source columns, each valid only where it is valid with the others: a mask,
    mode or strength only with source images, the mask one of the owner's images, a
    strength only for ``img2img`` and within the operator's rule."""
    named = bool(images.value)
    strength_ok = (
        isinstance(strength, float)
        and STRENGTH_RULE[0] <= strength <= STRENGTH_RULE[1]
        and mode == "img2img"
    )
    return {
        "source_images": images,
        "mask": Column(mask, mask is None or (named and mask in own_refs())),
        "mode": Column(mode, mode is None or (named and mode in SOURCE_MODES)),
        "strength": Column(strength, strength is None or (named and strength_ok)),
    }


@st.composite
def valid_sources(draw: st.DrawFn) -> dict[str, Column]:
    """Source columns a client may write: up to the backends' number of its own images
    (repeats allowed), then maybe its own mask, a mode, and a strength for ``img2img``."""
    images = draw(st.lists(own_image, max_size=MOCK_MAX_SOURCES))
    mask = mode = strength = None
    if images:
        mask = draw(st.none() | own_image)
        mode = draw(st.none() | st.sampled_from(SOURCE_MODES))
        if mode == "img2img":
            strength = draw(st.none() | st.floats(*STRENGTH_RULE))
    return source_group(Column(images, True), mask, mode, strength)


@st.composite
def broken_sources(draw: st.DrawFn) -> dict[str, Column]:
    """Source columns with one of them drawn from its invalid values and the others from
    their valid ones (so that its own check is the one reached), or all four drawn apart."""
    broken = draw(st.sampled_from(["source_images", "mask", "mode", "strength", None]))
    if broken is None:
        mode_value = st.none() | st.sampled_from(SOURCE_MODES) | mode_invalid
        return source_group(
            draw(source_images.either()),
            draw(st.none() | own_image | mask_invalid),
            draw(mode_value),
            draw(st.none() | st.floats(*STRENGTH_RULE) | strength_invalid),
        )
    if broken == "source_images":
        images = draw(source_images.invalid)
    else:
        images = Column(draw(st.lists(own_image, min_size=1, max_size=MOCK_MAX_SOURCES)), True)
    mask = draw(mask_invalid if broken == "mask" else st.none() | own_image)
    mode = draw(mode_invalid if broken == "mode" else st.none() | st.sampled_from(SOURCE_MODES))
    if broken == "strength":
        strength = draw(strength_invalid | st.floats(*STRENGTH_RULE))
    else:
        strength = draw(st.none() | st.floats(*STRENGTH_RULE)) if mode == "img2img" else None
    return source_group(images, mask, mode, strength)


def own_refs() -> list[ImageRef]:
    return [ImageRef("own", n) for n in range(OWN_IMAGES)]


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

    @property
    def invalid_fields(self) -> set[str]:
        """The columns drawn invalid: a refusal or failure must name one of them."""
        return {name for name, item in self.columns.items() if not item.valid}

    @property
    def sends_text_for_a_number(self) -> bool:
        return any(isinstance(item.value, NotANumber) for item in self.columns.values())

    @property
    def quick_run_with_sources(self) -> bool:
        """A valid row naming source images whose run is quick to execute: at most two
        images, each side at most 1024 pixels when given (a style's own size else)."""
        values = self.values()
        sides = [values.get("width") or 0, values.get("height") or 0]
        small = values.get("count", 1) <= 2 and max(sides) <= 1024
        return self.valid and bool(values["source_images"]) and small

    def names(self, kind: str) -> bool:
        """Whether the row names an image of ``kind`` (``other``) as a source or mask."""
        named = [*flatten(self.columns["source_images"].value), self.columns["mask"].value]
        return any(isinstance(ref, ImageRef) and ref.kind == kind for ref in named)

    def values(self) -> dict[str, Any]:
        return {name: item.value for name, item in self.columns.items()}


def flatten(values: list[Any]) -> list[Any]:
    return [item for value in values for item in (value if isinstance(value, list) else [value])]


KINDS = ["valid", "sources", "sources", "older", "older", "any", "any"]


def row_specs(with_attempts: bool) -> st.SearchStrategy[RowSpec]:
    """Rows of four kinds: every column valid (one row in seven); only the source columns
    broken, so that their checks, which come last, are reached; one or two older columns
    broken; every column valid or not (two in seven each)."""
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

    @st.composite
    def rows(draw: st.DrawFn) -> RowSpec:
        kind = draw(st.sampled_from(KINDS))
        broken: set[str] = set()
        if kind == "older":
            broken = draw(st.sets(st.sampled_from(list(columns)), min_size=1, max_size=2))
        drawn: dict[str, Column] = {}
        for name, strategy in columns.items():
            if kind == "any":
                drawn[name] = draw(strategy.either())
            elif name in broken:
                drawn[name] = draw(strategy.invalid)
            else:
                drawn[name] = draw(strategy.valid)
        sources = valid_sources() if kind in ("valid", "older") else broken_sources()
        return RowSpec({**drawn, **draw(sources)})

    return rows()


@functools.cache
def generate_image_job() -> dg.JobDefinition:
    """The job the runs are created for, built once (building it is most of their cost)."""
    return build_generate_image_job()


@dataclass(frozen=True)
class SeededImages:
    """The images a row may name: two of the client's, two of another owner's."""

    own: list[int]
    other: list[int]
    sha256: dict[int, str]
    """Each image's sha256, by id."""

    @property
    def other_sha256(self) -> set[str]:
        return {self.sha256[image] for image in self.other}

    def resolve(self, value: Any) -> Any:
        """A drawn value as the client writes it: image references as ids, element-wise."""
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if isinstance(value, NotANumber):
            return value.text
        if not isinstance(value, ImageRef):
            return value
        if value.kind == "own":
            return self.own[value.number]
        if value.kind == "other":
            return self.other[value.number]
        return value.number


@dataclass
class Harness:
    """The database, the Dagster instance and the two ways rows are taken from the queue."""

    url: str
    instance: dg.DagsterInstance
    config_file: Path
    images: SeededImages | None = None
    submitted: list[tuple[JobRow, GenerationPlan]] = field(default_factory=list)
    launched: dict[int, tuple[dict[str, Any], dict[str, str]]] = field(default_factory=dict)
    """Each requested row's run config and tags, by job id, as they reach Dagster."""

    def connect(self) -> psycopg.Connection[dict[str, Any]]:
        return psycopg.connect(self.url, autocommit=True, row_factory=dict_row)

    def insert(self, spec: RowSpec, as_client: bool) -> None:
        assert self.images is not None
        spec.job_id = spec.refused_by = None
        values = {"owner_user_id": CLIENT, **spec.values()}
        values = {name: self.images.resolve(value) for name, value in values.items()}
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
        except psycopg.errors.DataError as error:
            spec.refused_by = f"the column's type ({error.sqlstate})"
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
                generate_image_job(), run_config=echoed.run_config, tags=echoed.tags
            )
            self.launched[int(echoed.tags["imagen/job_id"])] = (
                dict(echoed.run_config),
                dict(echoed.tags),
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
        self.instance.create_run_for_job(generate_image_job(), run_config=echoed)
        self.submitted.append((row, plan))
        self.launched[row.id] = (echoed, run_tags_for(plan))
        return f"run-{row.id}"

    def execute(self, job_id: int) -> dg.ExecuteInProcessResult:
        """Run the job's launched run as a worker would, with the code location's resources."""
        run_config, tags = self.launched[job_id]
        return deployed_job(str(self.config_file)).execute_in_process(
            run_config=run_config, tags=tags, instance=self.instance, raise_on_error=False
        )

    def calls(self) -> list[dict[str, Any]]:
        """What the mock backends were sent (their calls log)."""
        log = self.config_file.parent / "calls.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def hostile_config(write_config: Callable[..., Path], tmp_path: Path) -> Path:
    """Two mock backends with the test's ``client_options``, logging their calls."""
    calls_log = str(tmp_path / "calls.jsonl")
    backend = {"type": "mock", "client_options": CLIENT_OPTIONS, "calls_log": calls_log}
    return write_config(
        {
            "backends": {"mock": backend, "gpu_box": {**backend, "pool": "gpu"}},
            "queue": {"max_in_flight_per_owner": None},
        }
    )


@pytest.fixture
def seeded_images(
    migrated_database_url: str, hostile_config: Path, dagster_instance: dg.DagsterInstance
) -> SeededImages:
    """Images made by the pipeline (one run of four variations, as in
    ``cloud/test_source_images.py``), then given to the client and to another owner."""
    result = deployed_job(str(hostile_config)).execute_in_process(
        run_config={
            "ops": {
                "enrich_prompt": {
                    "config": {
                        "prompt": "a harbour",
                        "width": 64,
                        "height": 64,
                        "count": OWN_IMAGES + OTHER_IMAGES,
                    }
                }
            },
            "resources": file_resources(hostile_config),
        },
        instance=dagster_instance,
    )
    assert result.success
    with psycopg.connect(migrated_database_url, autocommit=True, row_factory=dict_row) as conn:
        rows = conn.execute(
            "SELECT id, sha256 FROM imagen.images WHERE run_id = %s ORDER BY id",
            (result.run_id,),
        ).fetchall()
        assert len({row["sha256"] for row in rows}) == OWN_IMAGES + OTHER_IMAGES
        own, other = rows[:OWN_IMAGES], rows[OWN_IMAGES:]
        for owner, images in ((CLIENT, own), (OTHER, other)):
            conn.execute(
                "UPDATE imagen.images SET owner_user_id = %s WHERE id = ANY(%s)",
                (owner, [row["id"] for row in images]),
            )
    return SeededImages(
        own=[row["id"] for row in own],
        other=[row["id"] for row in other],
        sha256={row["id"]: row["sha256"] for row in rows},
    )


FIELD = re.compile(r"^([a-z_]+)[\[.:]")
"""The field an error names first: ``prompt:``, ``source_images[2]:``, ``backend_opts.k:``."""


RULE_FIELDS = {
    "jobs_client_priority": {"priority"},
    "jobs_client_sources": {"source_images", "mask"},
    "jobs_source_fields_check": {"mask", "mode", "strength"},
}
"""The fields of the database's rules not named after one column (``jobs_<column>_check``)."""


def rule_fields(rule: str) -> set[str]:
    """The columns a refusal by ``rule`` is about."""
    if not rule.startswith("jobs_"):
        return set()
    return RULE_FIELDS.get(rule, {rule.removeprefix("jobs_").removesuffix("_check")})


def check_batch(
    h: Harness, specs: list[RowSpec], *, as_client: bool, listener: bool, execute: bool
) -> None:
    """Insert the batch, take it from the queue, check every row's outcome; with
    ``execute``, also run one valid row naming the owner's images when a row of the batch
    names another owner's (see :func:`check_run`)."""
    with h.connect() as conn:
        conn.execute("DELETE FROM imagen.jobs")
    h.submitted.clear()
    h.launched.clear()
    for spec in specs:
        h.insert(spec, as_client)
    inserted = [spec for spec in specs if spec.job_id is not None]
    for spec in specs:
        if spec.job_id is None:
            assert not spec.valid, f"a valid row was refused by {spec.refused_by}"
            assert spec.refused_by, spec
            if spec.refused_by.startswith("the column's type"):
                assert spec.sends_text_for_a_number, spec
            else:
                assert as_client, "only the database's rules may refuse an insert"
                assert rule_fields(spec.refused_by) & spec.invalid_fields, spec
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
            named = FIELD.match(error)
            assert named and named.group(1) in spec.invalid_fields, (error, spec)
    for spec in specs:
        if spec.names("other"):
            assert spec.job_id is None or rows[spec.job_id]["status"] == "failed", spec
    # A run costs about a second: one per batch at most, in a quarter of the batches.
    runnable = [spec for spec in inserted if spec.quick_run_with_sources]
    if execute and runnable and any(spec.names("other") for spec in specs):
        check_run(h, runnable[0], rows)
    check_nothing_of_theirs_used(h)


def check_run(h: Harness, spec: RowSpec, before: dict[int, dict[str, Any]]) -> None:
    """The row's run ends ``done``; each of its backend calls got the bytes of its sources
    and mask, in order, and each image it made has them as parents; no other row changes."""
    assert h.images is not None and spec.job_id is not None
    result = h.execute(spec.job_id)
    values = spec.values()
    sources: list[int] = h.images.resolve(values["source_images"])
    mask: int | None = h.images.resolve(values["mask"])
    expected = [("source", position, image) for position, image in enumerate(sources)]
    if mask is not None:
        expected.append(("mask", 0, mask))
    with h.connect() as conn:
        rows = {r["id"]: r for r in conn.execute("SELECT * FROM imagen.jobs")}
        images = conn.execute(
            "SELECT id, owner_user_id::text AS owner FROM imagen.images WHERE job_id = %s",
            (spec.job_id,),
        ).fetchall()
        parents = conn.execute(
            "SELECT child_id, role, position, parent_id FROM imagen.image_parents "
            "WHERE child_id = ANY(%s) ORDER BY child_id, role DESC, position",
            ([image["id"] for image in images],),
        ).fetchall()
    row = rows[spec.job_id]
    assert row["status"] == "done", (spec, row["error"], step_failure_text(result))
    sent = [
        (call["sources"], call["mask"]) for call in h.calls() if call["run_id"] == result.run_id
    ]
    named = [h.images.sha256[image] for image in sources]
    assert sent == values.get("count", 1) * [(named, h.images.sha256.get(mask or 0))]
    assert len(images) == values.get("count", 1)
    assert {image["owner"] for image in images} == {CLIENT}
    for image in images:
        recorded = [
            (p["role"], p["position"], p["parent_id"])
            for p in parents
            if p["child_id"] == image["id"]
        ]
        assert recorded == expected, (spec, recorded)
    for job_id, other in rows.items():
        if job_id != spec.job_id:
            assert other["status"] == before[job_id]["status"], (job_id, other)


def check_nothing_of_theirs_used(h: Harness) -> None:
    """No image has another owner's image as a parent; the backends never got its bytes."""
    assert h.images is not None
    with h.connect() as conn:
        leaked = conn.execute(
            "SELECT child_id, parent_id FROM imagen.image_parents WHERE parent_id = ANY(%s)",
            (h.images.other,),
        ).fetchall()
    assert leaked == []
    for call in h.calls():
        sent = {*call.get("sources", []), call.get("mask")}
        assert not sent & h.images.other_sha256, call


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


def example_batch() -> list[RowSpec]:
    """Rows every run of the tests includes: one naming the owner's images with a mask,
    img2img and a strength (its run is executed), three naming another owner's image as a
    source or a mask, and a text-only row."""

    def row(**overrides: Column) -> RowSpec:
        columns = {
            "prompt": Column("the same, at dusk", True),
            "width": Column(64, True),
            "height": Column(64, True),
            "backend_opts": Column({}, True),
            "source_images": Column([], True),
            **{name: Column(None, True) for name in ("mask", "mode", "strength")},
        }
        return RowSpec({**columns, **overrides})

    own, other = own_refs(), [ImageRef("other", n) for n in range(OTHER_IMAGES)]
    return [
        row(
            source_images=Column([own[0], own[1], own[0]], True),
            mask=Column(own[1], True),
            mode=Column("img2img", True),
            strength=Column(0.5, True),
            count=Column(2, True),
        ),
        row(source_images=Column([own[0], other[0]], False)),
        row(source_images=Column([own[1]], True), mask=Column(other[1], False)),
        row(source_images=Column([other[1]], False), mode=Column("edit", True)),
        row(),
    ]


EXECUTE = st.sampled_from([False, False, False, True])
"""Whether a generated batch may execute a run (about one in four)."""
SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@SETTINGS
@given(
    specs=st.lists(row_specs(with_attempts=False), min_size=1, max_size=8),
    listener=st.booleans(),
    execute=EXECUTE,
)
@example(specs=example_batch(), listener=False, execute=True)
def test_with_the_database_rules_every_row_runs_is_refused_or_fails_alone(
    migrated_database_url: str,
    hostile_config: Path,
    dagster_instance: dg.DagsterInstance,
    seeded_images: SeededImages,
    specs: list[RowSpec],
    listener: bool,
    execute: bool,
) -> None:
    h = Harness(migrated_database_url, dagster_instance, hostile_config, seeded_images)
    check_batch(h, specs, as_client=True, listener=listener, execute=execute)


@SETTINGS
@given(
    specs=st.lists(row_specs(with_attempts=True), min_size=1, max_size=8),
    listener=st.booleans(),
    execute=EXECUTE,
)
@example(specs=example_batch(), listener=True, execute=True)
def test_without_the_database_rules_the_pipeline_alone_keeps_rows_apart(
    rules_dropped: str,
    hostile_config: Path,
    dagster_instance: dg.DagsterInstance,
    seeded_images: SeededImages,
    specs: list[RowSpec],
    listener: bool,
    execute: bool,
) -> None:
    h = Harness(rules_dropped, dagster_instance, hostile_config, seeded_images)
    check_batch(h, specs, as_client=False, listener=listener, execute=execute)


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
    hostile_config: Path,
    dagster_instance: dg.DagsterInstance,
    columns: dict[str, str],
    error: str,
) -> None:
    """Issue 11's three shapes and two of ``source_images`` (which made reading the claimed
    rows raise, leaving the whole claim queued without runs), past the database (its rules
    dropped): one tick fails the hostile row with its reason and launches the valid rows
    around it."""
    h = Harness(rules_dropped, dagster_instance, hostile_config)
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
