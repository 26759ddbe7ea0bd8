"""The budget guard: real Postgres spend, real runs, the job row's error via the sensor."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest
from psycopg.rows import dict_row

from imagen_pipeline.backends.pricing import Price
from imagen_pipeline.config.loader import parse_config
from imagen_pipeline.config.models import BudgetConfig
from imagen_pipeline.db.connection import connect
from imagen_pipeline.db.errors import DatabaseUnavailableError
from imagen_pipeline.defs.jobs import build_generate_image_job
from imagen_pipeline.defs.run_errors import run_fault, run_public_failure, run_step_failure
from imagen_pipeline.errors import ConfigError
from imagen_pipeline.generate.budget import BudgetAsk, BudgetExceededError, check_budget
from imagen_pipeline_tests.fakes.loopback_http import closed_port
from imagen_pipeline_tests.fakes.webhook_server import FakeWebhook
from imagen_pipeline_tests.fixtures.alerts import alerts_block
from imagen_pipeline_tests.fixtures.imagen import file_resources
from imagen_pipeline_tests.fixtures.queue import run_requests

OWNER = "00000000-0000-4000-8000-0000000000b1"
OTHER = "00000000-0000-4000-8000-0000000000b2"
NOON = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def sql(url: str, statement: str, params: Any = None) -> list[dict[str, Any]]:
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def spend(
    url: str, instance: str, cost: float, at: datetime | None = None, owner: str | None = None
) -> None:
    """A usage row as an earlier generation would have left it."""
    sql(
        url,
        """
        INSERT INTO mai.imagen_usage (generation_key, backend_instance, backend_type, model,
                                      cost_usd, run_id, status, created_at, owner_user_id)
        VALUES (gen_random_uuid()::text, %s, 'replicate', 'flux', %s, 'earlier-run',
                'succeeded', %s, %s)
        """,
        (instance, cost, at or datetime.now(UTC), owner),
    )


def calls(tmp_path: Path) -> int:
    log = tmp_path / "calls.jsonl"
    return len(log.read_text().splitlines()) if log.exists() else 0


@pytest.fixture
def budget_config(write_config: Callable[..., Path], tmp_path: Path) -> Callable[..., Path]:
    """imagen.yaml with a mock ``mock`` costing $0.25 per image, the given budget and, when
    given, ``alerts:``."""

    def write(budget: dict[str, Any], **more: Any) -> Path:
        mock = {"type": "mock", "cost_usd": 0.25, "calls_log": str(tmp_path / "calls.jsonl")}
        return write_config({"backends": {"mock": mock}, "budget": budget, **more})

    return write


def failure(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> str:
    """The failure text as a job row would get it."""
    return run_step_failure(instance, result.run_id) or ""


def execute(instance: dg.DagsterInstance, config_file: Path) -> dg.ExecuteInProcessResult:
    return build_generate_image_job(retry_delay_s=0).execute_in_process(
        run_config={
            "ops": {"enrich_prompt": {"config": {"prompt": "a fox", "width": 64, "height": 64}}},
            "resources": file_resources(config_file),
        },
        instance=instance,
        raise_on_error=False,
    )


def test_a_call_over_the_instance_budget_stops_before_the_backend(
    migrated_database_url: str,
    budget_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
    tmp_path: Path,
) -> None:
    spend(migrated_database_url, "mock", 1.9)
    spend(migrated_database_url, "other", 50.0)
    result = execute(dagster_instance, budget_config({"backends": {"mock": {"daily_usd": 2.0}}}))
    assert not result.success
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert failure(dagster_instance, result) == (
        "budget.backends.mock.daily_usd = $2.00 per UTC day would be exceeded: today's spend "
        f"({today} UTC) on 'mock' is $1.9000 and this image is estimated at $0.2500; backend "
        "'mock' was not called"
    )
    assert calls(tmp_path) == 0
    generate = [e for e in result.all_events if e.step_key == "generate_cloud"]
    assert [e.event_type_value for e in generate if e.is_step_failure] == ["STEP_FAILURE"]
    assert not [e for e in generate if e.event_type_value == "STEP_UP_FOR_RETRY"]


def test_the_global_budget_counts_every_backend(
    migrated_database_url: str,
    budget_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
    tmp_path: Path,
) -> None:
    spend(migrated_database_url, "other", 4.9)
    config_file = budget_config({"daily_usd": 5.0, "backends": {"mock": {"daily_usd": 1.0}}})
    result = execute(dagster_instance, config_file)
    assert not result.success
    assert failure(dagster_instance, result).startswith(
        "budget.daily_usd = $5.00 per UTC day would be exceeded: today's spend "
    )
    assert "on all backends is $4.9000" in failure(dagster_instance, result)
    assert calls(tmp_path) == 0


def test_a_call_within_budget_runs_and_its_cost_counts_next_time(
    migrated_database_url: str,
    budget_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
    tmp_path: Path,
) -> None:
    spend(migrated_database_url, "mock", 1.5)
    config_file = budget_config({"backends": {"mock": {"daily_usd": 2.0}}})
    first = execute(dagster_instance, config_file)
    assert first.success
    messages = [entry.user_message for entry in dagster_instance.all_logs(first.run_id)]
    assert any(
        re.fullmatch(
            r"budget ok \(\d{4}-\d\d-\d\d UTC\): budget\.backends\.mock\.daily_usd: "
            r"\$1\.5000 of \$2\.00 spent on 'mock'",
            message,
        )
        for message in messages
    )
    second = execute(dagster_instance, config_file)
    assert second.success, "1.50 + 0.25 + 0.25 = 2.00 does not exceed 2.00"
    third = execute(dagster_instance, config_file)
    assert not third.success
    assert "on 'mock' is $2.0000" in failure(dagster_instance, third)
    assert calls(tmp_path) == 2


def test_a_job_row_refused_by_the_budget_says_why(
    migrated_database_url: str,
    budget_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
    tmp_path: Path,
) -> None:
    spend(migrated_database_url, "mock", 3.0)
    config_file = budget_config({"daily_usd": 3.0})
    [job] = sql(
        migrated_database_url,
        "INSERT INTO imagen.jobs (owner_user_id, prompt, width, height) "
        "VALUES (%s, 'a fox', 64, 64) RETURNING id",
        (OWNER,),
    )

    def tick() -> list[dg.RunRequest]:
        return run_requests(dagster_instance, config_file)

    [request] = tick()
    run_config = request.run_config
    run_config["resources"] = file_resources(config_file)
    result = build_generate_image_job(retry_delay_s=0).execute_in_process(
        run_config=run_config, tags=request.tags, instance=dagster_instance, raise_on_error=False
    )
    assert not result.success
    assert calls(tmp_path) == 0
    tick()
    [row] = sql(migrated_database_url, "SELECT * FROM imagen.jobs WHERE id = %s", (job["id"],))
    assert row["status"] == "failed"
    # The web user reads why in general terms; the figures and config keys stay in the run.
    assert row["error"] == (
        "today's image budget for this backend is used up; retry the job tomorrow (UTC)"
    )
    detail = failure(dagster_instance, result)
    assert detail.startswith("budget.daily_usd = $3.00 per UTC day would be exceeded: today's ")
    assert "on all backends is $3.0000 and this image is estimated at $0.2500" in detail
    assert sql(migrated_database_url, "SELECT * FROM imagen.images") == []


def test_a_budget_without_a_database_cannot_be_checked(
    budget_config: Callable[..., Path], dagster_instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    result = execute(dagster_instance, budget_config({"daily_usd": 10.0}))
    assert not result.success
    assert failure(dagster_instance, result) == (
        "budget.daily_usd is set but IMAGEN_DATABASE_URL is not: today's spend is unknown, "
        "so the budget cannot be checked"
    )
    assert calls(tmp_path) == 0


def usd(amount: float) -> Price:
    return Price(amount, "config", "test price")


def ask(instance: str, price: Price, run_id: str = "run-1", **fields: Any) -> BudgetAsk:
    return BudgetAsk(instance=instance, price=price, run_id=run_id, **fields)


def test_today_is_the_utc_day(migrated_database_url: str) -> None:
    spend(migrated_database_url, "flux", 0.75, NOON - timedelta(hours=12, seconds=1))
    spend(migrated_database_url, "flux", 0.5, NOON - timedelta(hours=12))
    spend(migrated_database_url, "flux", 0.25, NOON + timedelta(hours=11, minutes=59))
    budget = BudgetConfig.model_validate({"backends": {"flux": {"daily_usd": 1.0}}})

    def opener() -> psycopg.Connection:
        return connect(migrated_database_url)

    note = check_budget(budget, ask("flux", usd(0.25)), opener, now=NOON)
    assert note == (
        "budget ok (2026-11-24 UTC): budget.backends.flux.daily_usd: $0.7500 of $1.00 spent "
        "on 'flux'"
    )
    with pytest.raises(BudgetExceededError, match=r"today's spend \(2026-11-24 UTC\) on 'flux'"):
        check_budget(budget, ask("flux", usd(0.26)), opener, now=NOON)
    past_midnight_in_berlin = datetime(2026, 11, 25, 0, 30, tzinfo=timezone(timedelta(hours=1)))
    with pytest.raises(BudgetExceededError, match=r"\(2026-11-24 UTC\) on 'flux' is \$0\.7500"):
        check_budget(budget, ask("flux", usd(0.26)), opener, now=past_midnight_in_berlin)
    assert (
        check_budget(budget, ask("flux", usd(1.0)), opener, now=NOON + timedelta(hours=12))
        is not None
    )
    assert check_budget(budget, ask("other", usd(99.0)), opener, now=NOON) is None


def test_a_budget_cannot_be_checked_for_a_backend_whose_price_is_unknown(
    migrated_database_url: str,
) -> None:
    budget = BudgetConfig.model_validate({"daily_usd": 5.0})
    unknown = Price(None, "unknown", "no price known for gpt-image-2: set token_prices")

    def opener() -> psycopg.Connection:
        return connect(migrated_database_url)

    with pytest.raises(ConfigError) as raised:
        check_budget(budget, ask("openai", unknown), opener, now=NOON)
    assert str(raised.value) == (
        "budget.daily_usd is set but the price of backend 'openai' is unknown (no price known "
        "for gpt-image-2: set token_prices), so the budget cannot be checked; backend 'openai' "
        "was not called"
    )
    assert check_budget(BudgetConfig(), ask("openai", unknown), opener, now=NOON) is None


def test_the_budget_block_is_validated() -> None:
    with pytest.raises(
        ConfigError,
        match=r"budget\.backends\.replicate: not a configured backend; configured backends: mock",
    ):
        parse_config({"budget": {"backends": {"replicate": {"daily_usd": 2}}}})
    with pytest.raises(ConfigError, match=r"budget\.daily_usd: Input should be greater than"):
        parse_config({"budget": {"daily_usd": -1}})
    with pytest.raises(ConfigError, match=r"budget\.backends\.mock\.dayly_usd: unknown key"):
        parse_config({"budget": {"backends": {"mock": {"dayly_usd": 1}}}})


def test_a_request_for_several_images_is_priced_whole_before_the_first_call(
    migrated_database_url: str,
) -> None:
    budget = BudgetConfig.model_validate({"daily_usd": 0.9})

    def opener() -> psycopg.Connection:
        return connect(migrated_database_url)

    with pytest.raises(BudgetExceededError) as raised:
        check_budget(budget, ask("mock", usd(0.25), variations=(0, 1, 2, 3)), opener, now=NOON)
    assert "these 4 images are estimated at $1.0000" in str(raised.value)
    assert sql(migrated_database_url, "SELECT * FROM mai.imagen_budget_holds") == []
    assert check_budget(budget, ask("mock", usd(0.25), variations=(0, 1, 2)), opener, now=NOON)
    held = sql(migrated_database_url, "SELECT variation FROM mai.imagen_budget_holds ORDER BY 1")
    assert [row["variation"] for row in held] == [0, 1, 2]
    # The same run checking again for its later images does not count its own holds twice.
    assert check_budget(budget, ask("mock", usd(0.25), variations=(1, 2)), opener, now=NOON)


def test_runs_checking_at_the_same_time_cannot_pass_the_budget_together(
    migrated_database_url: str,
) -> None:
    budget = BudgetConfig.model_validate({"backends": {"mock": {"daily_usd": 1.0}}})

    def opener() -> psycopg.Connection:
        return connect(migrated_database_url)

    assert check_budget(budget, ask("mock", usd(0.6), run_id="run-a"), opener, now=NOON)
    with pytest.raises(BudgetExceededError) as raised:
        check_budget(budget, ask("mock", usd(0.6), run_id="run-b"), opener, now=NOON)
    assert "with $0.6000 held for calls in progress" in str(raised.value)
    sql(migrated_database_url, "UPDATE mai.imagen_budget_holds SET expires_at = now()")
    assert check_budget(budget, ask("mock", usd(0.6), run_id="run-b"), opener, now=NOON), (
        "a hold left by a run that died counts only until it expires"
    )


def test_the_budget_check_with_the_database_down_does_not_claim_an_image_was_made() -> None:
    budget = BudgetConfig.model_validate({"daily_usd": 5.0})
    url = f"postgresql://postgres@127.0.0.1:{closed_port()}/imagen"
    with pytest.raises(DatabaseUnavailableError) as raised:
        check_budget(budget, ask("mock", usd(0.25)), lambda: connect(url), now=NOON)
    assert raised.value.transient
    assert str(raised.value).startswith(
        "imagen database ($IMAGEN_DATABASE_URL) failed while checking today's budget: "
    )
    assert raised.value.public == (
        "today's budget could not be checked because the pipeline's database did not answer, "
        "so no image was made; retry the job later"
    )


def test_a_queued_job_with_the_database_down_at_its_budget_check_says_no_image_was_made(
    budget_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IMAGEN_DATABASE_URL", f"postgresql://postgres@127.0.0.1:{closed_port()}/x")
    result = execute(dagster_instance, budget_config({"daily_usd": 5.0}))
    assert not result.success
    public = run_public_failure(dagster_instance, result.run_id) or ""
    assert "no image was made" in public and "the image was made" not in public
    assert calls(tmp_path) == 0
    retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(retries) == 3, "a database outage is retried like any transient failure"


def owners_jobs(
    url: str, config_file: Path, instance: dg.DagsterInstance, owners: list[str]
) -> dict[str, dict[str, Any]]:
    """One job per owner through the sensor and a run each; their rows by owner."""
    ids = {}
    for owner in owners:
        [job] = sql(
            url,
            "INSERT INTO imagen.jobs (owner_user_id, prompt, width, height) "
            "VALUES (%s, 'a fox', 64, 64) RETURNING id",
            (owner,),
        )
        ids[owner] = job["id"]
    for request in run_requests(instance, config_file):
        run_config = request.run_config
        run_config["resources"] = file_resources(config_file)
        build_generate_image_job(retry_delay_s=0).execute_in_process(
            run_config=run_config, tags=request.tags, instance=instance, raise_on_error=False
        )
    run_requests(instance, config_file)
    return {
        owner: sql(url, "SELECT * FROM imagen.jobs WHERE id = %s", (job_id,))[0]
        for owner, job_id in ids.items()
    }


@pytest.mark.parametrize(
    ("budget", "earlier", "error"),
    [
        pytest.param(
            {"per_owner": {"daily_images": 2}},
            [0.25, 0.25],
            r"your limit of 2 images per day on all backends is reached \(2 made or in progress "
            r"today, this request asks for 1\); it resets at 00:00 UTC, in \d+ (h \d+ )?min",
            id="images-overall",
        ),
        pytest.param(
            {"per_owner": {"backends": {"mock": {"daily_usd": 0.6}}}},
            [0.25, 0.25],
            r"your limit of \$0\.60 per day on 'mock' would be exceeded \(\$0\.50 spent or in "
            r"progress today, this request about \$0\.25\); it resets at 00:00 UTC, in \d+ "
            r"(h \d+ )?min",
            id="dollars-per-instance",
        ),
    ],
)
def test_an_owner_over_a_daily_limit_fails_alone_and_the_other_owners_job_is_done(
    migrated_database_url: str,
    budget_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
    tmp_path: Path,
    budget: dict[str, Any],
    earlier: list[float],
    error: str,
) -> None:
    for cost in earlier:
        spend(migrated_database_url, "mock", cost, owner=OWNER)
    spend(migrated_database_url, "mock", 5.0, owner=None)
    config_file = budget_config(budget)
    rows = owners_jobs(migrated_database_url, config_file, dagster_instance, [OWNER, OTHER])
    assert rows[OTHER]["status"] == "done"
    assert rows[OWNER]["status"] == "failed"
    assert re.fullmatch(error, rows[OWNER]["error"]), rows[OWNER]["error"]
    assert calls(tmp_path) == 1, "the owner over the limit never reached the backend"
    assert execute(dagster_instance, config_file).success, (
        "the operator's own runs are not held to a per-owner limit"
    )


def test_per_owner_limits_name_configured_backends() -> None:
    with pytest.raises(
        ConfigError,
        match=r"budget\.per_owner\.backends\.replicate: not a configured backend",
    ):
        parse_config({"budget": {"per_owner": {"backends": {"replicate": {"daily_images": 2}}}}})
    with pytest.raises(ConfigError, match=r"budget\.per_owner\.daily_images: Input should be"):
        parse_config({"budget": {"per_owner": {"daily_images": -1}}})


def test_the_operators_budget_used_up_alerts_the_operator_once(
    migrated_database_url: str,
    budget_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
    alert_webhook: FakeWebhook,
) -> None:
    spend(migrated_database_url, "other", 4.9)
    config_file = budget_config({"daily_usd": 5.0}, alerts=alerts_block())
    first, second = execute(dagster_instance, config_file), execute(dagster_instance, config_file)
    assert not first.success and not second.success
    assert run_fault(dagster_instance, first.run_id) == "server"
    [alert] = [request.json() for request in alert_webhook.requests]
    assert alert["alert"] == {"kind": "event", "key": "budget:budget.daily_usd"}
    assert alert["title"] == "Daily budget used up: budget.daily_usd"
    assert alert["message"].startswith(
        f"{failure(dagster_instance, first)}. Calls on all backends are refused until it resets "
        "at 00:00 UTC, in "
    )


def test_an_owner_over_their_own_limit_is_the_requests_fault_and_alerts_nobody(
    migrated_database_url: str,
    budget_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
    alert_webhook: FakeWebhook,
) -> None:
    spend(migrated_database_url, "mock", 0.25, owner=OWNER)
    config_file = budget_config({"per_owner": {"daily_images": 1}}, alerts=alerts_block())
    rows = owners_jobs(migrated_database_url, config_file, dagster_instance, [OWNER])
    assert rows[OWNER]["status"] == "failed"
    assert rows[OWNER]["error"].startswith("your limit of 1 image per day on all backends")
    assert run_fault(dagster_instance, rows[OWNER]["run_id"]) == "request"
    assert alert_webhook.requests == []
