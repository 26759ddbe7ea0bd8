"""Style presets from the embedded styles.yaml."""

from __future__ import annotations

import pytest

from imagen_pipeline.errors import InvalidRequestError
from imagen_pipeline.prompts.styles import apply_style, get_style, load_styles

REQUIRED = {"none", "blog-header", "photo", "illustration", "watercolor", "cinematic", "minimal"}


def test_required_presets_exist_and_wrap_the_prompt() -> None:
    styles = load_styles()
    assert set(styles) >= REQUIRED
    for preset in styles.values():
        prompt, _ = apply_style(preset, "a lighthouse")
        assert "a lighthouse" in prompt


def test_none_keeps_prompt_unchanged() -> None:
    assert apply_style(get_style("none"), "  exactly this ") == ("exactly this", "")


def test_negatives_are_joined_user_first() -> None:
    prompt, negative = apply_style(get_style("photo"), "a fox", "blur")
    assert prompt.startswith("a fox, professional photograph")
    assert negative.startswith("blur, illustration")


def test_prompt_with_braces_is_inserted_literally() -> None:
    prompt, _ = apply_style(get_style("minimal"), "a {weird} {prompt}")
    assert prompt.startswith("a {weird} {prompt}, minimalist")


def test_unknown_style_lists_known_styles() -> None:
    with pytest.raises(InvalidRequestError) as error:
        get_style("vaporwave")
    assert error.value.field == "style"
    assert "unknown style 'vaporwave'; known styles: blog-header, cinematic" in str(error.value)
