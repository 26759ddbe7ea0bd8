"""Object path templates."""

from __future__ import annotations

import pytest

from imagen_pipeline.naming.object_paths import (
    DEFAULT_PATH_TEMPLATE,
    render_object_path,
    sidecar_object_path,
    validate_path_template,
)

FIELDS = {
    "owner": "00000000-0000-4000-8000-0000000000c1",
    "date": "2026-11-24",
    "filename": "142558_a-fox_7.png",
    "run_id": "5d0c6c1e-aaaa",
    "job_id": 42,
    "backend": "flux dev/../x",
}


def test_the_default_template_groups_by_owner_and_utc_day() -> None:
    assert render_object_path(DEFAULT_PATH_TEMPLATE, FIELDS) == (
        "00000000-0000-4000-8000-0000000000c1/2026-11-24/142558_a-fox_7.png"
    )
    assert (
        sidecar_object_path("u/2026-11-24/142558_a-fox_7.png") == "u/2026-11-24/142558_a-fox_7.json"
    )


def test_field_values_cannot_add_folders_or_climb_out() -> None:
    assert render_object_path("{backend}/{job_id}/{filename}", FIELDS) == (
        "flux-dev-..-x/42/142558_a-fox_7.png"
    )


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{owner}/{date}", "must end with {filename}"),
        ("/{owner}/{filename}", "must be relative"),
        ("{owner}/../{filename}", "must not contain empty, '.' or '..' path components"),
        ("{owner}//{filename}", "must not contain empty"),
        ("{slug}/{filename}", "unknown path field {slug}; allowed fields: {owner}, {date}"),
        ("{owner!r}/{filename}", "format specs and conversions are not supported"),
    ],
)
def test_bad_templates_are_refused_with_the_reason(template: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}")):
        validate_path_template(template)
