"""Safe file names: no prompt or template can leave the output directory."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imagen_pipeline.naming.file_names import (
    NAMING_FIELDS,
    render_name,
    resolve_inside,
    safe_component,
    slug_for,
    validate_template,
)

SAFE_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


@pytest.mark.parametrize(
    ("prompt", "slug"),
    [
        ("A Cat in a Fishbowl!", "a-cat-in-a-fishbowl"),
        ("Käse & Brötchen", "kase-brotchen"),
        ("../../etc/passwd", "etc-passwd"),
        ("", "image"),
        ("!!!", "image"),
        ("con", "con_"),
    ],
)
def test_slugs(prompt: str, slug: str) -> None:
    assert slug_for(prompt) == slug


def test_non_latin_prompts_are_transliterated() -> None:
    slug = slug_for("猫が金魚鉢にいる")
    assert slug and set(slug) <= SAFE_CHARS


def test_long_prompt_gives_bounded_slug() -> None:
    slug = slug_for("word " * 500)
    assert len(slug) <= 48


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("", "must not be empty"),
        ("/etc/{slug}", "relative to output.directory"),
        ("C:/x/{slug}", "relative to output.directory"),
        ("../{slug}", "'..' path components"),
        ("a//{slug}", "empty"),
        ("a\\{slug}", "backslashes"),
        ("a\x00{slug}", "NUL"),
        ("{seed:08d}", "format specs"),
        ("{prompt}", "unknown naming field {prompt}; allowed fields: {date}, {time}"),
    ],
)
def test_bad_templates_are_rejected(template: str, message: str) -> None:
    with pytest.raises(ValueError) as error:
        validate_template(template)
    assert message in str(error.value)


def test_template_with_subfolders_renders_safe_components() -> None:
    name = render_name(
        "{date}/{backend}/{slug}_{seed}",
        {"date": "2026-11-24", "backend": "../x", "slug": "cat", "seed": 5},
    )
    assert name == PurePosixPath("2026-11-24/x/cat_5")


def test_resolve_inside_refuses_escape(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="escapes the output directory"):
        resolve_inside(tmp_path, PurePosixPath("../outside"))
    assert resolve_inside(tmp_path, PurePosixPath("a/b")) == tmp_path.resolve() / "a" / "b"


@settings(max_examples=300, deadline=None)
@given(
    value=st.text(),
    template=st.sampled_from(
        [
            "{slug}",
            "{date}/{slug}_{seed}",
            "{backend}/{model}/{job_id}-{run_id}",
            "x{style}y/{slug}",
        ]
    ),
)
def test_any_field_value_stays_inside(
    tmp_path_factory: pytest.TempPathFactory, value: str, template: str
) -> None:
    base = tmp_path_factory.getbasetemp() / "out"
    fields = dict.fromkeys(NAMING_FIELDS, value) | {"slug": slug_for(value)}
    relative = render_name(template, fields)
    for part in relative.parts:
        assert part not in ("", ".", "..")
        assert set(part) <= SAFE_CHARS
        assert len(part.encode()) <= 150
    assert resolve_inside(base, relative).is_relative_to(base.resolve())


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_safe_component_is_never_empty_hidden_or_reserved(value: str) -> None:
    part = safe_component(value)
    assert part and not part.startswith(".") and set(part) <= SAFE_CHARS
    assert part.split(".")[0].lower() not in {"con", "prn", "aux", "nul"}
