"""A workflow checked against ``/object_info`` entries shaped like ComfyUI v0.8.0's."""

from __future__ import annotations

from typing import Any

import pytest

from imagen_pipeline.backends.comfyui.validation import combo_options, workflow_problems

INFOS: dict[str, dict[str, Any]] = {
    "CheckpointLoaderSimple": {
        "input": {"required": {"ckpt_name": [["a.safetensors", "b.safetensors"], {}]}},
        "output_node": False,
    },
    "EmptyImage": {
        "input": {
            "required": {"width": ["INT", {"min": 1}], "height": ["INT", {"min": 1}]},
            "optional": {"mode": ["COMBO", {"options": ["fill", "fit"]}]},
        },
        "output_node": False,
    },
    "SaveImage": {
        "input": {
            "required": {"images": ["IMAGE"], "filename_prefix": ["STRING", {}]},
            "hidden": {"prompt": "PROMPT"},
        },
        "output_node": True,
    },
}


def asked(log: list[str]) -> Any:
    def object_info(class_type: str) -> dict[str, Any] | None:
        log.append(class_type)
        return INFOS.get(class_type)

    return object_info


def graph(**nodes: dict[str, Any]) -> dict[str, Any]:
    base: dict[str, Any] = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    return {**base, **nodes}


def test_a_valid_workflow_has_no_problems_and_each_class_is_asked_once() -> None:
    log: list[str] = []
    twice = graph(**{"2": {"class_type": "EmptyImage", "inputs": {"width": 1, "height": 1}}})
    assert workflow_problems(twice, asked(log)) == []
    assert sorted(log) == ["EmptyImage", "SaveImage"]


def test_an_unknown_class_anywhere_is_named_and_nothing_else_is_checked() -> None:
    broken = graph(**{"5": {"class_type": "Missing", "inputs": {}}})
    broken["1"]["inputs"].pop("width")
    assert workflow_problems(broken, asked([])) == [
        "node 5 (Missing): node class Missing does not exist on the server (a custom node "
        "that is not installed?)"
    ]


def test_inputs_are_checked_only_on_nodes_that_lead_to_an_output() -> None:
    broken = graph(
        **{
            "3": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "z.ckpt"}},
        }
    )
    broken["1"]["inputs"]["mode"] = "stretch"
    del broken["9"]["inputs"]["filename_prefix"]
    assert workflow_problems(broken, asked([])) == [
        "node 1 (EmptyImage) input 'mode': value 'stretch' is not on the server; available: "
        "fill, fit",
        "node 9 (SaveImage) input 'filename_prefix': required input is missing",
    ], "node 3 leads to no output: the server neither checks nor runs it"


def test_a_model_file_the_server_lacks_is_named_with_what_it_has() -> None:
    wired = {
        "3": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "z.safetensors"}},
        "1": {"class_type": "EmptyImage", "inputs": {"width": ["3", 0], "height": 8}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    assert workflow_problems(wired, asked([])) == [
        "node 3 (CheckpointLoaderSimple) input 'ckpt_name': model file 'z.safetensors' is not "
        "on the server; available: a.safetensors, b.safetensors"
    ]


def test_a_workflow_without_an_output_node_says_so() -> None:
    only = {"1": {"class_type": "EmptyImage", "inputs": {"width": 1, "height": 1}}}
    assert workflow_problems(only, asked([])) == [
        "the workflow has no output node (such as SaveImage)"
    ]


@pytest.mark.parametrize(
    ("spec", "options"),
    [
        (
            [["a.safetensors", "b.safetensors"], {"tooltip": "model"}],
            ["a.safetensors", "b.safetensors"],
        ),
        (["COMBO", {"options": ["a.safetensors"], "multiselect": False}], ["a.safetensors"]),
        (["INT", {"default": 20, "min": 1}], None),
        (["STRING", {"multiline": True}], None),
        (None, None),
    ],
)
def test_combo_options_read_old_and_new_object_info_styles(spec: Any, options: Any) -> None:
    assert combo_options(spec) == options
