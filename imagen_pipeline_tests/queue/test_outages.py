"""Outages are not a job's fault: through a real daemon, a real Redis and real workers.

Each test has a stack of its own (it stops Redis or starts workers late). Run monitoring's
start timeout is cut to :data:`START_TIMEOUT_S` so that an outage "longer than
``start_timeout_seconds``" fits in a test.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
import yaml

from imagen_pipeline.queue.holds import BROKER_DOWN, NO_WORKER
from imagen_pipeline_tests.fixtures.daemon import DaemonStack, holding

START_TIMEOUT_S = 10
RUN_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture
def stack(daemon_stack: DaemonStack) -> DaemonStack:
    """The test's stack with run monitoring's start timeout cut to START_TIMEOUT_S."""
    config_path = daemon_stack.home / "dagster.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["run_monitoring"]["start_timeout_seconds"] = START_TIMEOUT_S
    config_path.write_text(yaml.safe_dump(config))
    return daemon_stack


def calls_by_prompt(stack: DaemonStack) -> dict[str, int]:
    if not stack.calls_log.exists():
        return {}
    counts: dict[str, int] = {}
    for line in stack.calls_log.read_text().splitlines():
        prompt = json.loads(line)["prompt"]
        counts[prompt] = counts.get(prompt, 0) + 1
    return counts


def assert_owner_texts_are_clean(rows: dict[int, dict[str, Any]]) -> None:
    """What a job's owner reads names no run, host or class."""
    for row in rows.values():
        for text in (row["error"], row["progress_text"]):
            if text:
                assert not RUN_ID.search(text), text
                assert "127.0.0.1" not in text and "@" not in text, text
                assert not re.search(r"\b[A-Z]\w+(Error|Exception)\b", text), text


def test_a_redis_outage_longer_than_the_start_timeout_costs_no_job_an_attempt(
    stack: DaemonStack,
) -> None:
    """Two jobs run (held by the gate), three more wait in Redis for a free pool process
    when Redis dies with them; jobs inserted during the outage wait as pending. After
    Redis is back every job is done with one image and one counted attempt."""
    stack.own_worker = False
    stack.start()
    stack.workers.start("worker@outage", stack.env, queues=("dagster",), concurrency=2)
    with holding(stack.gate):
        first = [stack.insert_job(f"before {i}", backend="gated", width=64) for i in range(5)]
        stack.wait_for(lambda rows: sum(r["status"] == "running" for r in rows.values()) == 2)
        stack.wait_for(lambda rows: all(r["status"] != "pending" for r in rows.values()))
        stack.redis.stop()
        during = [stack.insert_job(f"during {i}", width=64) for i in range(3)]
        held = stack.wait_for(
            lambda rows: all(rows[j]["progress_text"] == BROKER_DOWN for j in during), 60
        )
        assert {held[j]["status"] for j in during} == {"pending"}
    # The three runs waiting in Redis died with it: each is failed by run monitoring after
    # the start timeout, retried (the retries cannot be sent) and its row goes back.
    rows = stack.wait_for(
        lambda rows: all(rows[j]["status"] == "done" or rows[j]["interruptions"] for j in first),
        180,
    )
    assert sum(rows[j]["interruptions"] >= 1 for j in first) == 3, rows
    assert {rows[j]["status"] for j in during} == {"pending"}
    assert {rows[j]["attempts"] for j in during} == {0}
    assert_owner_texts_are_clean(rows)
    stack.redis.start()

    rows = stack.wait_until_settled(240)
    assert {job: row["status"] for job, row in rows.items()} == dict.fromkeys(
        first + during, "done"
    ), {job: row["error"] for job, row in rows.items()}
    assert {row["attempts"] for row in rows.values()} == {1}
    assert calls_by_prompt(stack) == {
        **{f"before {i}": 1 for i in range(5)},
        **{f"during {i}": 1 for i in range(3)},
    }
    assert len(list(stack.output_dir.glob("*.png"))) == 8
    assert_owner_texts_are_clean(rows)


def test_jobs_wait_for_a_worker_and_say_so_then_run_when_one_starts(
    stack: DaemonStack,
) -> None:
    stack.own_worker = False
    stack.start()
    jobs = [stack.insert_job(f"no worker {i}", width=64) for i in range(3)]
    waiting = stack.wait_for(
        lambda rows: all(rows[j]["progress_text"] == NO_WORKER for j in jobs), 60
    )
    assert {row["status"] for row in waiting.values()} == {"pending"}
    time.sleep(START_TIMEOUT_S + 5)
    rows = stack.jobs()
    assert {(row["status"], row["attempts"]) for row in rows.values()} == {("pending", 0)}

    stack.workers.start("worker@late", stack.env, queues=("dagster", "imagen_gpu"))
    rows = stack.wait_until_settled(120)
    assert {(row["status"], row["attempts"]) for row in rows.values()} == {("done", 1)}
    assert calls_by_prompt(stack) == {f"no worker {i}": 1 for i in range(3)}
    assert_owner_texts_are_clean(rows)
