"""The progress throttle: what reaches the run's log and the listeners."""

from __future__ import annotations

import logging

import pytest

from imagen_pipeline.backends.progress import Progress, ProgressThrottle

LOGGER = "imagen.test.progress"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def at(
    fraction: float, node: str = "3", step: int | None = None, steps: int | None = None
) -> Progress:
    return Progress(fraction, node, "KSampler", step, steps, elapsed_s=1.5)


def test_reports_pass_at_most_once_a_second_and_only_when_they_moved_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    clock, heard = Clock(), []
    throttle = ProgressThrottle(
        logging.getLogger(LOGGER), "backend 'gpu' (comfyui)", (heard.append,), clock=clock
    )
    throttle(at(0.0, step=1, steps=28))  # the first report always passes
    clock.now = 0.5
    throttle(at(0.5, step=14, steps=28))  # moved on, but within a second
    clock.now = 1.2
    throttle(at(0.5, step=16, steps=28))  # a second later, the bar moved 57 %
    clock.now = 2.5
    throttle(at(0.5, step=17, steps=28))  # the bar moved 3.6 % only
    clock.now = 2.6
    throttle(at(1.0, node="9"))  # the end always passes
    assert [(p.fraction, p.step) for p in heard] == [(0.0, 1), (0.5, 16), (1.0, None)]
    assert caplog.messages == [
        "backend 'gpu' (comfyui): 0% - KSampler (node 3) step 1/28 - 1.5s elapsed",
        "backend 'gpu' (comfyui): 50% - KSampler (node 3) step 16/28 - 1.5s elapsed",
        "backend 'gpu' (comfyui): 100% - KSampler (node 9) - 1.5s elapsed",
    ]


def test_another_node_or_ten_percent_of_the_prompt_pass_after_a_second() -> None:
    clock, heard = Clock(), []
    throttle = ProgressThrottle(logging.getLogger(LOGGER), "x", (heard.append,), clock=clock)
    throttle(at(0.10))
    clock.now = 1.0
    throttle(at(0.15))  # same node, 5 %: not yet
    throttle(at(0.20))  # 10 % of the prompt
    clock.now = 2.0
    throttle(at(0.21, node="4"))  # another node
    clock.now = 3.0
    throttle(at(0.21, node="4"))  # nothing new
    assert [(p.fraction, p.node_id) for p in heard] == [(0.10, "3"), (0.20, "3"), (0.21, "4")]
