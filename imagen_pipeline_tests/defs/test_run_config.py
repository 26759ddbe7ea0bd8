"""One request schema: ``ImageSpec`` is it; the run config and the job row are checked
against it, the row's SQL columns included."""

from __future__ import annotations

import dagster as dg
import psycopg
import pytest

from imagen_pipeline.defs.jobs import build_generate_image_job
from imagen_pipeline.defs.run_config import GenerateImageConfig, StyleName
from imagen_pipeline.generate.planning import ImageSpec
from imagen_pipeline.prompts.styles import load_styles
from imagen_pipeline.queue.rows import JobRow

JOB_LINK = {"job_id", "job_attempt", "owner_user_id"}
"""Spec fields a job row holds under other names (its id, attempts, owner) or sets itself."""


def test_the_run_config_has_the_specs_fields_with_the_same_defaults() -> None:
    spec_fields = ImageSpec.model_fields
    config_fields = GenerateImageConfig.model_fields
    assert list(config_fields) == list(spec_fields)
    for name, field in spec_fields.items():
        if name == "backend_opts":
            assert config_fields[name].annotation is str, "JSON text, never structure"
            continue
        if name == "style":
            assert {s.value for s in StyleName} == set(load_styles()), "an enum of the presets"
            assert config_fields[name].default == field.default
            continue
        assert config_fields[name].annotation == field.annotation, name
        assert config_fields[name].default == field.default, name


def test_a_spec_survives_the_run_config() -> None:
    spec = ImageSpec(
        prompt="a heron",
        style="watercolor",
        width=512,
        seed=9,
        backend_opts={"3.cfg": 2.5, "a": [1, None]},
        job_id=4,
        job_attempt=2,
        owner_user_id="00000000-0000-4000-8000-000000000004",
    )
    config = GenerateImageConfig.from_spec(spec)
    assert config.to_spec() == spec


def test_a_job_row_holds_every_request_field_and_the_table_has_every_row_column(
    migrated_database_url: str,
) -> None:
    request_fields = set(ImageSpec.model_fields) - JOB_LINK
    row_fields = set(JobRow.model_fields) - {"backend_opts_json"} | {"backend_opts"}
    assert request_fields <= row_fields
    with psycopg.connect(migrated_database_url) as conn:
        columns = {
            name
            for (name,) in conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = 'imagen' AND table_name = 'jobs'"
            )
        }
    assert row_fields == columns
    spec = JobRow(
        id=5, prompt="x", status="queued", attempts=1, claims=2, owner_user_id="o"
    ).to_spec()
    assert (spec.job_id, spec.job_attempt, spec.owner_user_id) == (5, 2, "o")
    assert JobRow(id=6, prompt="x", status="queued", style="").to_spec().style == "none"


def test_the_launchpad_refuses_an_unknown_style_before_a_run_starts() -> None:
    """Dagster's own run-config validation, as the launchpad and `dagster job execute` use."""
    job = build_generate_image_job()
    config = {"ops": {"enrich_prompt": {"config": {"prompt": "a kite", "style": "anime"}}}}
    with pytest.raises(dg.DagsterInvalidConfigError, match="style not in enum type StyleName"):
        dg.validate_run_config(job, config)
    config["ops"]["enrich_prompt"]["config"]["style"] = "watercolor"
    assert dg.validate_run_config(job, config)
