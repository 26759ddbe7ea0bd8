"""What a web client writes in ``imagen.jobs.backend_opts``, through the real intake, planning
and generation code against each adapter's loopback fake.

Rows are inserted as a signed-in client (the database's rules apply), claimed and planned by
the intake the sensor uses, and every admitted row is generated with the budget checked on
real Postgres. The tests then read what the fake received: only options the instance's
``client_options`` allow reach a server, a refused row's error names its option, a request
field is never set through an option, and the budget's estimate is at least what the call
is billed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import psycopg
import pytest
from hypothesis import HealthCheck, event, given, settings
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from imagen_pipeline.backends.comfyui.workflow import load_workflow
from imagen_pipeline.backends.contract import GenerationContext
from imagen_pipeline.backends.openai.pricing import usage_cost_usd
from imagen_pipeline.db.connection import connect
from imagen_pipeline.errors import ImagenError
from imagen_pipeline.generate.making import MadeImage, make_images
from imagen_pipeline.generate.planning import GenerationPlan, ImageSpec, plan_generation
from imagen_pipeline.generate.setup import load_setup
from imagen_pipeline.queue.intake import Batch, take_batch
from imagen_pipeline_tests.fakes.comfyui_server import FakeComfyUI, running_fake_comfyui
from imagen_pipeline_tests.fakes.openai_server import FakeOpenAI, running_fake_openai
from imagen_pipeline_tests.fakes.replicate_server import FakeReplicate, running_fake_replicate
from imagen_pipeline_tests.fixtures.queue import web_session

CLIENT = "0c0c0c0c-0000-4000-8000-00000000000c"
REPLICATE_TOKEN = "r8_ImagenFakeToken0123456789abcdefghijklm"
OPENAI_KEY = "sk-imagen-fake-key-0123456789abcdefghijklmnop"
FLUX_DEV_PRICE = 0.025
TOKEN_PRICES = {"text_input": 5.0, "image_input": 8.0, "image_output": 30.0}
LOG = logging.getLogger("imagen.test.client_options")

# The allow-lists the tests configure, as plain data the oracle reads on its own:
# ("range", low, high, integer) or ("choices", [values]).
Rule = tuple[Any, ...]
COMFYUI_RULES: dict[str, Rule] = {
    "guidance": ("range", 1, 10, False),
    "17.scheduler": ("choices", ["simple", "karras", "beta"]),
    "16.sampler_name": ("choices", ["euler", "heun"]),
    "17.denoise": ("range", 0.5, 1, False),
}
REPLICATE_RULES: dict[str, Rule] = {
    "guidance": ("range", 1, 5, False),
    "go_fast": ("choices", [True, False]),
    "output_quality": ("range", 50, 100, True),
}
OPENAI_RULES: dict[str, Rule] = {
    "quality": ("choices", ["low", "medium", "high", "auto"]),
    "background": ("choices", ["opaque", "auto"]),
    "output_format": ("choices", ["jpeg", "webp"]),
    "output_compression": ("range", 0, 100, True),
}
HOSTILE_KEYS = {
    "comfyui": [
        "27.width",
        "27.height",
        "27.batch_size",
        "30.width",
        "17.steps",
        "25.noise_seed",
        "6.text",
        "9.filename_prefix",
        "26.guidance",
        "12.unet_name",
        "10.vae_name",
        "11.type",
        "13.noise",
        "99.steps",
        "steps",
        "x",
    ],
    "replicate": [
        "num_outputs",
        "image",
        "input_images",
        "seed",
        "width",
        "megapixels",
        "aspect_ratio",
        "num_inference_steps",
        "disable_safety_checker",
        "prompt",
        "output_format",
        "prompt_strength",
        "lora_weights",
        "x",
    ],
    "openai": [
        "n",
        "size",
        "model",
        "prompt",
        "moderation",
        "user",
        "style",
        "response_format",
        "count",
        "x",
    ],
}
HOSTILE_VALUES = st.sampled_from(
    [
        "http://169.254.169.254/latest/meta-data",
        "https://evil.example/cat.png",
        "data:image/png;base64,iVBORw0KGgo=",
        "../../models/other.safetensors",
        "flux1-schnell.safetensors",
        ["3", 0],
        {"nested": 1},
        None,
        "",
    ]
)


def rule_config(rules: dict[str, Rule]) -> dict[str, Any]:
    """The ``client_options`` block for ``rules``."""
    block: dict[str, Any] = {}
    for key, rule in rules.items():
        if rule[0] == "choices":
            block[key] = {"choices": rule[1]}
        else:
            block[key] = {"min": rule[1], "max": rule[2]}
            if rule[3]:
                block[key]["type"] = "integer"
    return block


def allowed(rules: dict[str, Rule], key: str, value: Any) -> bool:
    """The oracle: may a client send ``key: value``?"""
    rule = rules.get(key)
    if rule is None:
        return False
    if rule[0] == "choices":
        return any(type(value) is type(choice) and value == choice for choice in rule[1])
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if rule[3] and not isinstance(value, int):
        return False
    return rule[1] <= value <= rule[2]


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies, each drawn about ``weight`` times as often (``a | a | b`` would
    not weight: hypothesis drops a strategy it already has)."""
    return st.sampled_from([s for weight, s in choices for _ in range(weight)]).flatmap(
        lambda strategy: strategy
    )


def inside(rule: Rule) -> st.SearchStrategy[Any]:
    """Values one rule allows."""
    if rule[0] == "choices":
        return st.sampled_from(rule[1])
    low, high, integer = rule[1], rule[2], rule[3]
    return st.integers(int(low), int(high)) if integer else st.floats(low, high)


def values_for(rule: Rule) -> st.SearchStrategy[Any]:
    """Values inside and just outside one rule."""
    if rule[0] == "choices":
        return inside(rule) | st.sampled_from(["KARRAS", "euler_a", "1", 1, 0])
    low, high = rule[1], rule[2]
    outside = st.sampled_from([low - 1, high + 1, high * 100, -(2**31), (low + high) / 2 + 0.5])
    return weighted((2, inside(rule)), (1, outside), (1, st.booleans()), (1, st.just("5")))


# What the database lets a client write in backend_opts (imagen.valid_backend_opts, migration
# 20261202090000_imagen_jobs_client_rules.sql): an object whose keys, at any depth, are 1-100
# of A-Z a-z 0-9 _ . : - starting with a letter or digit; values nested at most 4 levels
# below it; numbers within +-(2^53 - 1); text without U+0000 (jsonb cannot hold it) or
# unpaired surrogates; at most 16384 bytes. The strategies below stay inside these rules
# (the sizes keep a row far below 16384 bytes), so the database takes every generated row.
MAX_JSON_NUMBER = 2**53 - 1
DATABASE_KEYS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}", fullmatch=True)
"""Any option key the database takes."""
NESTED_KEYS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,11}", fullmatch=True)
"""Keys inside a nested value (the same rule, kept short)."""
JSON_TEXT = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=24
)
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-MAX_JSON_NUMBER, MAX_JSON_NUMBER)
    | st.floats(-MAX_JSON_NUMBER, MAX_JSON_NUMBER, allow_nan=False, allow_infinity=False)
    | JSON_TEXT
)


def json_values(levels: int = 3) -> st.SearchStrategy[Any]:
    """Any JSON value the database takes as an option's value: a scalar, or a list or object
    holding at most ``levels`` more levels (the option value is level 1 of the 4 allowed)."""
    if levels == 0:
        return JSON_SCALARS
    children = json_values(levels - 1)
    return (
        JSON_SCALARS
        | st.lists(children, max_size=2)
        | st.dictionaries(NESTED_KEYS, children, max_size=2)
    )


def near_pairs(rules: dict[str, Rule]) -> st.SearchStrategy[tuple[str, Any]]:
    """A key one edit away from an allowed one (case, a suffix, a separator) with a value
    that key's rule allows: right value, wrong key."""

    def near(key: str) -> st.SearchStrategy[tuple[str, Any]]:
        edits = [key.upper(), key.capitalize(), key + ".", key + ":x", "0" + key]
        edits += [key.replace(".", ":"), key.replace("_", "-")]
        edited = st.sampled_from([edit for edit in edits if edit != key])
        return st.tuples(edited, inside(rules[key]))

    return st.sampled_from(sorted(rules)).flatmap(near)


def options_strategy(
    adapter: str, rules: dict[str, Rule], extra_keys: Sequence[str] = ()
) -> st.SearchStrategy[dict[str, Any]]:
    """Rows' ``backend_opts``, any the database takes: allowed keys with values inside and
    outside their rule or any JSON; the adapter's hostile keys; keys one edit away from an
    allowed one with an allowed value; any other key (arbitrary, or from ``extra_keys``)
    with any JSON or a value some rule allows. Rows mix these freely, or are allowed keys
    with allowed values plus one other pair (the error must name that pair's key), or only
    allowed keys with allowed values, so most examples have rows that reach the server."""
    allowed_pairs = st.one_of(
        [st.tuples(st.just(key), values_for(rule) | json_values()) for key, rule in rules.items()]
    )
    hostile_pairs = st.tuples(
        st.sampled_from(HOSTILE_KEYS[adapter]),
        st.integers(-10, 100_000)
        | st.floats(-1e6, 1e6)
        | st.booleans()
        | HOSTILE_VALUES
        | json_values(),
    )
    any_keys = (DATABASE_KEYS | st.sampled_from(list(extra_keys))) if extra_keys else DATABASE_KEYS
    allowed_values = st.one_of([inside(rule) for rule in rules.values()])
    any_pairs = st.tuples(any_keys, json_values() | allowed_values)
    other_pairs = weighted((2, hostile_pairs), (1, near_pairs(rules)), (1, any_pairs))
    mixed = st.lists(weighted((1, allowed_pairs), (1, other_pairs)), max_size=4)
    clean = st.lists(
        st.sampled_from(sorted(rules)).flatmap(
            lambda key: st.tuples(st.just(key), inside(rules[key]))
        ),
        max_size=len(rules),
    )
    one_off = st.tuples(clean, other_pairs).map(lambda row: [*row[0], row[1]])
    return weighted((2, mixed), (2, one_off), (1, clean)).map(dict)


COMFYUI_TEMPLATE_KEYS = sorted(
    f"{node_id}.{name}"
    for node_id, node in load_workflow("flux-dev", {}, {}).graph.items()
    for name in node["inputs"]
)
"""Every input of the flux-dev template as an option key (links and literals alike)."""


@dataclass
class Queue:
    """The imagen database, the config with one backend instance ``b``, and its fake."""

    url: str
    config_file: Path
    output_dir: Path

    def insert(self, options: dict[str, Any], **columns: Any) -> int | None:
        """Insert a row as the signed-in client; None if the database refused it."""
        values = {
            "owner_user_id": CLIENT,
            "prompt": "a red fox in the snow",
            "backend": "b",
            "width": 1024,
            "height": 1024,
            "backend_opts": Jsonb(options),
            **columns,
        }
        statement = (
            f"INSERT INTO imagen.jobs ({', '.join(values)}) "
            f"VALUES ({', '.join(['%s'] * len(values))}) RETURNING id"
        )
        try:
            with web_session(self.url, CLIENT) as cursor:
                row = cursor.execute(statement, list(values.values())).fetchone()
        except psycopg.errors.CheckViolation:
            return None
        assert row is not None
        return int(row["id"])

    def take(self) -> Batch:
        """One intake pass, as the sensor makes it."""
        with psycopg.connect(self.url) as conn:
            return take_batch(conn, 50, load_setup(str(self.config_file)))

    def generate(self, plan: GenerationPlan) -> list[MadeImage]:
        """The job's images, with the budget checked on the database."""

        def context_for(variant: GenerationPlan) -> GenerationContext:
            return GenerationContext(
                run_id=f"run-job-{plan.spec.job_id}",
                instance_name=variant.backend,
                variation=variant.variation,
                log=LOG,
            )

        return list(make_images(plan, context_for, lambda: connect(self.url)))

    def row(self, job_id: int) -> dict[str, Any]:
        with psycopg.connect(self.url, row_factory=dict_row) as conn:
            found = conn.execute("SELECT * FROM imagen.jobs WHERE id = %s", (job_id,)).fetchone()
        assert found is not None
        return found

    def clear(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("DELETE FROM imagen.jobs")
            conn.execute("DELETE FROM mai.imagen_budget_holds")


def make_queue(
    url: str, write_config: Callable[..., Path], tmp_path: Path, block: dict[str, Any]
) -> Queue:
    output = tmp_path / "out"
    config_file = write_config(
        {
            "default_backend": "b",
            "output": {"directory": str(output)},
            "backends": {"b": block},
            "budget": {"daily_usd": 1000.0},
            "queue": {"max_in_flight_per_owner": None},
        }
    )
    return Queue(url, config_file, output)


@pytest.fixture
def comfyui() -> Iterator[FakeComfyUI]:
    with running_fake_comfyui() as fake:
        yield fake


@pytest.fixture
def replicate(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeReplicate]:
    monkeypatch.setenv("IMAGEN_TEST_REPLICATE_TOKEN", REPLICATE_TOKEN)
    with running_fake_replicate(REPLICATE_TOKEN) as fake:
        yield fake


@pytest.fixture
def openai(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    monkeypatch.setenv("IMAGEN_TEST_OPENAI_KEY", OPENAI_KEY)
    with running_fake_openai(OPENAI_KEY) as fake:
        yield fake


def comfyui_block(fake: FakeComfyUI, tmp_path: Path, rules: dict[str, Rule] | None) -> Any:
    block: dict[str, Any] = {
        "type": "comfyui",
        "url": fake.url,
        "pool": "cloud",
        "poll_interval_s": 0.02,
        "timeout_s": 30,
        "state_dir": str(tmp_path / "slots"),
    }
    if rules is not None:
        block["client_options"] = rule_config(rules)
    return block


def replicate_block(fake: FakeReplicate, rules: dict[str, Rule] | None) -> dict[str, Any]:
    block: dict[str, Any] = {
        "type": "replicate",
        "model": "black-forest-labs/flux-dev",
        "api_token_env": "IMAGEN_TEST_REPLICATE_TOKEN",
        "base_url": fake.base_url,
        "poll_interval_s": 0.01,
        "sync_wait_s": 5,
    }
    if rules is not None:
        block["client_options"] = rule_config(rules)
    return block


def openai_block(fake: FakeOpenAI, rules: dict[str, Rule] | None) -> dict[str, Any]:
    block: dict[str, Any] = {
        "type": "openai",
        "api_key_env": "IMAGEN_TEST_OPENAI_KEY",
        "base_url": fake.base_url,
        "token_prices": {"gpt-image-2": TOKEN_PRICES},
    }
    if rules is not None:
        block["client_options"] = rule_config(rules)
    return block


SETTINGS = settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def refused_by(rules: dict[str, Rule]) -> Callable[[dict[str, Any]], set[str]]:
    """The oracle for a whole row: the options it refuses (any of which the error may name)."""

    def refused(options: dict[str, Any]) -> set[str]:
        return {key for key, value in options.items() if not allowed(rules, key, value)}

    return refused


def openai_refused(options: dict[str, Any]) -> set[str]:
    """As :func:`refused_by`, plus gpt-image-2's rule that output_compression goes with
    output_format jpeg or webp only (the default png otherwise)."""
    refused = refused_by(OPENAI_RULES)(options)
    if "output_compression" in options and options.get("output_format") not in ("jpeg", "webp"):
        refused.add("output_compression")
    return refused


def estimate_usd(made: MadeImage) -> float:
    """The budget's estimate of the image's call, before it was made."""
    plan = made.image.plan
    price = plan.backend_instance().backend.estimate_price(plan.request)
    assert price.usd is not None
    return price.usd


def run_batch(
    queue: Queue, rows: list[dict[str, Any]], refused_of: Callable[[dict[str, Any]], set[str]]
) -> list[tuple[dict[str, Any], MadeImage]]:
    """Insert the rows, take them in and generate every admitted one; check that each row was
    admitted exactly when the oracle refuses none of its options, and that a refused row's
    error names an option the oracle refuses. Returns the admitted rows' options and images."""
    queue.clear()
    inserted = {}
    for options in rows:
        job_id = queue.insert(options)
        assert job_id is not None, f"the database refused a row within its rules: {options}"
        inserted[job_id] = options
    batch = queue.take()
    admitted = {item.row.id: item.plan for item in batch.admitted}
    made = []
    for job_id, options in inserted.items():
        refused = refused_of(options)
        if refused:
            assert job_id not in admitted, options
            row = queue.row(job_id)
            assert row["status"] == "failed"
            assert any(row["error"].startswith(f"backend_opts.{key}: ") for key in refused), (
                options,
                row["error"],
            )
            continue
        assert job_id in admitted, (options, queue.row(job_id))
        try:
            [image] = queue.generate(admitted[job_id])
        except ImagenError as error:
            pytest.fail(f"an allowed row failed in generation: {options}: {error}")
        assert image.image.plan.request.backend_opts == options
        made.append((options, image))
    event(f"rows admitted: {len(made)} of {len(inserted)}")
    return made


@SETTINGS
@given(
    rows=st.lists(
        options_strategy("comfyui", COMFYUI_RULES, COMFYUI_TEMPLATE_KEYS), min_size=1, max_size=4
    )
)
def test_comfyui_gets_only_allowed_options_and_the_request_fields(
    migrated_database_url: str,
    write_config: Callable[..., Path],
    tmp_path: Path,
    comfyui: FakeComfyUI,
    rows: list[dict[str, Any]],
) -> None:
    block = comfyui_block(comfyui, tmp_path, COMFYUI_RULES)
    queue = make_queue(migrated_database_url, write_config, tmp_path, block)
    template = load_workflow("flux-dev", {}, {}).graph
    before = len(comfyui.submitted())
    made = run_batch(queue, rows, refused_by(COMFYUI_RULES))
    graphs = comfyui.submitted()[before:]
    assert len(graphs) == len(made)
    for (options, image), body in zip(made, graphs, strict=True):
        graph = body["prompt"]
        request = image.image.plan.request
        expected_fields = {
            "27.width": request.width,
            "27.height": request.height,
            "30.width": request.width,
            "30.height": request.height,
            "6.text": request.prompt,
            "9.filename_prefix": f"imagen/run-job-{image.image.plan.spec.job_id}",
            "26.guidance": options.get("guidance", 3.5),
            "25.noise_seed": image.image.metadata.seed,
        }
        for node_id, node in template.items():
            for name, value in node["inputs"].items():
                if isinstance(value, list):
                    continue
                path = f"{node_id}.{name}"
                sent = graph[node_id]["inputs"][name]
                if path in expected_fields:
                    assert sent == expected_fields[path], path
                elif path in options:
                    assert sent == options[path], path
                else:
                    assert sent == value, f"{path} changed without an allowed option"
        entry = comfyui.history_entry(image.image.metadata.extra["prompt_id"])
        assert entry is not None
        assert [len(out["images"]) for out in entry["outputs"].values()] == [1]


@SETTINGS
@given(rows=st.lists(options_strategy("replicate", REPLICATE_RULES), min_size=1, max_size=4))
def test_replicate_gets_only_allowed_inputs_and_the_estimate_covers_the_bill(
    migrated_database_url: str,
    write_config: Callable[..., Path],
    tmp_path: Path,
    replicate: FakeReplicate,
    rows: list[dict[str, Any]],
) -> None:
    queue = make_queue(
        migrated_database_url, write_config, tmp_path, replicate_block(replicate, REPLICATE_RULES)
    )
    before = len(replicate.creates())
    made = run_batch(queue, rows, refused_by(REPLICATE_RULES))
    creates = replicate.creates()[before:]
    assert len(creates) == len(made)
    pipeline_inputs = {"prompt", "aspect_ratio", "seed", "output_format"}
    for (options, image), create in zip(made, creates, strict=True):
        sent = create.json()["input"]
        assert set(sent) - pipeline_inputs == set(options), sent
        assert all(sent[key] == value for key, value in options.items())
        assert sent["prompt"] == image.image.plan.request.prompt
        assert sent["aspect_ratio"] == "1:1"
        prediction = replicate.prediction(image.image.metadata.extra["prediction_id"])
        assert estimate_usd(image) >= len(prediction["output"]) * FLUX_DEV_PRICE


@SETTINGS
@given(rows=st.lists(options_strategy("openai", OPENAI_RULES), min_size=1, max_size=4))
def test_openai_gets_only_allowed_parameters_and_the_estimate_covers_the_bill(
    migrated_database_url: str,
    write_config: Callable[..., Path],
    tmp_path: Path,
    openai: FakeOpenAI,
    rows: list[dict[str, Any]],
) -> None:
    queue = make_queue(
        migrated_database_url, write_config, tmp_path, openai_block(openai, OPENAI_RULES)
    )
    before = len(openai.generations())
    made = run_batch(queue, rows, openai_refused)
    bodies = openai.generations()[before:]
    assert len(bodies) == len(made)
    for (options, image), received in zip(made, bodies, strict=True):
        body = received.json()
        assert set(body) - {"model", "prompt", "n", "size"} == set(options), body
        assert (body["n"], body["size"], body["model"]) == (1, "1024x1024", "gpt-image-2")
        billed = usage_cost_usd(image.image.metadata.extra["usage"], TOKEN_PRICES)
        assert estimate_usd(image) >= billed


# -- named regressions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("adapter", "options", "error"),
    [
        pytest.param(
            "comfyui",
            {"27.batch_size": 4},
            "backend_opts.27.batch_size: sets how many images one prompt makes, which only the "
            "request's count field may set",
            id="comfyui-batch-by-node-path",
        ),
        pytest.param(
            "comfyui",
            {"27.width": 5000},
            "backend_opts.27.width: sets width, which only the request's width field may set",
            id="comfyui-width-past-4096-by-node-path",
        ),
        pytest.param(
            "comfyui",
            {"17.steps": 10000},
            "backend_opts.17.steps: sets steps, which only the request's steps field may set",
            id="comfyui-steps-by-node-path",
        ),
        pytest.param(
            "replicate",
            {"num_outputs": 4},
            "backend_opts.num_outputs: sets how many images one prediction makes, which only "
            "the request's count field may set",
            id="replicate-num-outputs",
        ),
        pytest.param(
            "replicate",
            {"image": "http://169.254.169.254/latest/meta-data"},
            "backend_opts.image: is not an option a client may set here; allowed: guidance (a "
            "number from 0 to 10)",
            id="replicate-url-option",
        ),
        pytest.param(
            "openai",
            {"quality": "high"},
            "backend_opts.quality: is not an option a client may set here; allowed: background "
            "(one of opaque, auto), output_compression (an integer from 0 to 100), "
            "output_format (one of png, jpeg, webp)",
            id="openai-quality-not-offered-by-default",
        ),
    ],
)
def test_regression_a_row_cannot_take_the_server_past_its_fields(
    migrated_database_url: str,
    write_config: Callable[..., Path],
    tmp_path: Path,
    request: pytest.FixtureRequest,
    adapter: str,
    options: dict[str, Any],
    error: str,
) -> None:
    """Issue 24's shapes, with each adapter's default allow-list: the row fails at intake
    with one sentence naming the option, and its server receives nothing."""
    fake = request.getfixturevalue(adapter)
    block = {
        "comfyui": lambda: comfyui_block(fake, tmp_path, None),
        "replicate": lambda: replicate_block(fake, None),
        "openai": lambda: openai_block(fake, None),
    }[adapter]()
    queue = make_queue(migrated_database_url, write_config, tmp_path, block)
    job_id = queue.insert(options)
    assert job_id is not None
    batch = queue.take()
    for item in batch.admitted:
        queue.generate(item.plan)
    row = queue.row(job_id)
    assert (row["status"], row["error"]) == ("failed", error)
    assert fake.received == []


def test_the_operator_cannot_set_a_request_field_through_an_option_either(
    write_config: Callable[..., Path], tmp_path: Path, comfyui: FakeComfyUI
) -> None:
    """For the operator (no job id) the same option fails with the error pointing at the
    field, before anything is sent."""
    config_file = write_config(
        {"default_backend": "b", "backends": {"b": comfyui_block(comfyui, tmp_path, None)}}
    )
    loaded = load_setup(str(config_file))
    with pytest.raises(ImagenError) as raised:
        plan_generation(
            ImageSpec(prompt="a fox", backend="b", backend_opts={"27.batch_size": 64}), loaded
        )
    assert str(raised.value) == (
        "backend_opts.27.batch_size: sets how many images one prompt makes, which only the "
        "request's count field may set"
    )
    operator = plan_generation(
        ImageSpec(prompt="a fox", backend="b", backend_opts={"17.scheduler": "karras"}), loaded
    )
    assert operator.request.backend_opts == {"17.scheduler": "karras"}
    assert comfyui.received == []


URL_VALUES = [
    "https://evil.example/cat.png",
    "http://169.254.169.254/latest/meta-data",
    "data:image/png;base64,iVBORw0KGgo=",
]


@pytest.mark.parametrize(
    ("key", "rule", "plain", "refusal"),
    [
        pytest.param(
            "output_format",
            {"choices": ["webp", "png"]},
            "png",
            "{value!r} is not allowed; allowed: one of webp, png",
            id="text-choices",
        ),
        pytest.param(
            "go_fast",
            {"choices": [True, False]},
            False,
            "{value!r} is not allowed; allowed: one of true, false",
            id="boolean-choices",
        ),
        pytest.param(
            "output_quality",
            {"min": 50, "max": 100, "type": "integer"},
            80,
            "must be an integer from 50 to 100 (got {value!r})",
            id="integer-range",
        ),
    ],
)
def test_regression_a_url_for_an_input_the_operator_offers_is_refused_by_the_value_rule(
    migrated_database_url: str,
    write_config: Callable[..., Path],
    tmp_path: Path,
    replicate: FakeReplicate,
    key: str,
    rule: dict[str, Any],
    plain: Any,
    refusal: str,
) -> None:
    """The instance's client_options offer ``key``, so the allow-list lets the key through;
    a client's URL or data URI for it still fails at intake (a client value is a number in
    bounds or one of the operator's choices, and no choice may be a URL) and the fake gets
    nothing. A plain value for the same key then reaches the prediction's input."""
    block = replicate_block(replicate, None)
    block["client_options"] = {key: rule}
    queue = make_queue(migrated_database_url, write_config, tmp_path, block)
    job_ids = {value: queue.insert({key: value}) for value in URL_VALUES}
    batch = queue.take()
    assert batch.admitted == []
    for value, job_id in job_ids.items():
        assert job_id is not None
        row = queue.row(job_id)
        assert (row["status"], row["error"]) == (
            "failed",
            f"backend_opts.{key}: " + refusal.format(value=value),
        )
    assert replicate.received == []

    plain_id = queue.insert({key: plain})
    [item] = queue.take().admitted
    assert item.row.id == plain_id
    queue.generate(item.plan)
    [create] = replicate.creates()
    assert create.json()["input"][key] == plain
    bodies = [received.body.decode() for received in replicate.received]
    assert not any(url in body for url in URL_VALUES for body in bodies)
