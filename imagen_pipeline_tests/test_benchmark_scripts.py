"""The benchmark scripts stay runnable as the pipeline changes (their timings are not tested)."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path
from types import ModuleType

import dagster as dg
import pytest
import yaml

from imagen_pipeline.defs.jobs import build_generate_image_job
from imagen_pipeline.errors import ImagenError
from imagen_pipeline.generate.planning import plan_generation
from imagen_pipeline.generate.setup import parse_setup
from imagen_pipeline.queue.rows import JobRow
from imagen_pipeline_tests.fakes.loopback_http import closed_port
from imagen_pipeline_tests.fixtures.imagen import REPO_ROOT, subprocess_env


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_executor_variants_are_the_shipped_job_with_another_executor() -> None:
    bench = load_script("bench_executor")
    for variant in (bench.in_process_job(), bench.multiprocess_job()):
        assert set(variant.resource_defs) == set(build_generate_image_job().resource_defs)
        assert variant.graph.name == build_generate_image_job().graph.name
    result = bench.in_process_job().execute_in_process(
        run_config={
            "ops": {"enrich_prompt": {"config": {"prompt": "a lighthouse"}}},
        },
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    [stored] = result.output_for_node("write_files")
    assert Path(stored.image_path).is_file()


def test_bench_queue_writes_an_instance_config_for_either_storage(tmp_path: Path) -> None:
    bench = load_script("bench_queue")
    for stock in (False, True):
        workdir = tmp_path / ("stock" if stock else "pooled")
        workdir.mkdir()
        stack = bench.Stack(
            "postgresql://unused/db",
            workdir,
            "celery",
            bench.Options(False, 2.0, 3, "noop", stock, 1.0 if stock else None),
        )
        config = yaml.safe_load((workdir / "dagster_home" / "dagster.yaml").read_text())
        assert config["concurrency"]["runs"]["max_concurrent_runs"] == 3
        assert "NoOpComputeLogManager" in str(config["compute_logs"])
        interval = config["run_coordinator"]["config"]["dequeue_interval_seconds"]
        assert interval == stack.dequeue_interval == (1.0 if stock else 0.5)
        if stock:
            assert config["storage"] == {"postgres": {"postgres_url": {"env": "DAGSTER_PG_URL"}}}
        else:
            assert config["storage"]["custom"]["class"] == "PooledPostgresStorage"
        assert stack.env["DAGSTER_PG_URL"] == "postgresql://unused/db"


def test_fuzz_queue_knows_which_rows_the_pipeline_must_accept() -> None:
    """The fuzz script's oracle agrees with the pipeline's checks (so its mismatch count is
    about the queue, not about the script)."""
    fuzz = load_script("fuzz_queue")
    client_options = load_script("bench_queue").MOCK_CLIENT_OPTIONS
    config = parse_setup({"backends": {"mock": {"type": "mock", "client_options": client_options}}})
    rng = random.Random(7)
    seen = {True: 0, False: 0}
    for number in range(300):
        values, valid = fuzz.make_row(rng, with_attempts=False)
        row = JobRow(
            id=number + 1,
            status="queued",
            **{key: value for key, value in values.items() if key != "backend_opts"},
            backend_opts_json=json.dumps(values["backend_opts"]),
        )
        seen[valid] += 1
        if valid:
            plan_generation(row.to_spec(), config)
        else:
            with pytest.raises(ImagenError):
                plan_generation(row.to_spec(), config)
    assert min(seen.values()) > 100


def test_bench_gpu_boxes_configures_both_backends_and_the_limits_from_them(
    tmp_path: Path,
) -> None:
    bench = load_script("bench_gpu_boxes")
    stack = bench.Stack(
        "postgresql://unused/db", tmp_path, "celery", bench.Options(False, 2.0, None, None, False)
    )
    pool = bench.configure(stack, ["http://127.0.0.1:8188", "http://127.0.0.1:8189"], None)
    assert pool == 5, "2 + 2 slots on the boxes, 1 for the stack's serial GPU mock"
    config = parse_setup(yaml.safe_load((tmp_path / "imagen.yaml").read_text()))
    assert config.backend("two_boxes").backend.queue_slots() == {  # type: ignore[attr-defined]
        "http://127.0.0.1:8188": 2,
        "http://127.0.0.1:8189": 2,
    }
    instance = yaml.safe_load((tmp_path / "dagster_home" / "dagster.yaml").read_text())
    limits = instance["concurrency"]["runs"]["tag_concurrency_limits"]
    assert {"key": "imagen/pool", "value": "imagen_gpu", "limit": 6} in limits


def test_bench_doctor_reads_what_imagen_doctor_prints(tmp_path: Path) -> None:
    bench = load_script("bench_doctor")
    config = tmp_path / "imagen.yaml"
    config.write_text(yaml.safe_dump({"backends": {"mock": {"type": "mock"}}}))
    env = subprocess_env(
        IMAGEN_CONFIG=str(config), IMAGEN_WEBSERVER_URL=f"http://127.0.0.1:{closed_port()}"
    )
    result = bench.run_doctor(env, repeats=1)
    assert result["exit"] == 1
    assert result["failed"] == ["webserver"]
    assert set(result) == {"median_s", "max_s", "exit", "statuses", "failed"}


def test_outage_drill_passes_only_when_every_job_is_done_once_with_one_attempt() -> None:
    drill = load_script("outage_drill")
    good = {
        "jobs": 2,
        "status": {"done": 2},
        "images_per_job": {1: 2},
        "attempts": {1: 2},
    }
    assert drill.passed(good)
    assert not drill.passed({**good, "status": {"done": 1, "failed": 1}})
    assert not drill.passed({**good, "images_per_job": {1: 1, 2: 1}})
    assert not drill.passed({**good, "attempts": {1: 1, 2: 1}})
