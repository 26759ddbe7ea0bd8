"""The ``imagen worker``'s run task in this process: what it leaves behind when a cancel's
interrupt (the launcher's SIGINT) arrives before the run has started executing."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import dagster as dg
import pytest
from celery import Celery
from dagster_celery.config import TASK_EXECUTE_JOB_NAME

from imagen_pipeline.instance import celery_worker
from imagen_pipeline.instance.dagster_internals import ExecuteRunArgs, pack_value
from imagen_pipeline_tests.instance.launch_target import deployed_job


def test_a_cancel_that_interrupts_a_starting_run_ends_it_canceled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The launcher revokes a task Celery has started but whose run has not started yet
    (the run is STARTING) with SIGINT; the interrupt lands before Dagster's run execution
    has its own handling, so nothing ended the run: it stayed CANCELING, holding a run slot,
    until run monitoring's cancel timeout (180 s in production)."""

    def interrupted() -> None:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)

    monkeypatch.setattr(celery_worker, "reload_if_config_changed", interrupted)
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
        recon = dg.reconstructable(deployed_job)
        run = instance.create_run_for_job(
            job_def=deployed_job(),
            run_config={"ops": {"enrich_prompt": {"config": {"prompt": "a kite"}}}},
            job_code_origin=recon.get_python_origin(),
        )
        instance.report_run_canceling(run)
        app = Celery("imagen_test_worker")
        celery_worker.register_run_task(app)
        args = ExecuteRunArgs(
            job_origin=recon.get_python_origin(),
            run_id=run.run_id,
            instance_ref=instance.get_ref(),
        )
        with pytest.raises(KeyboardInterrupt):
            app.tasks[TASK_EXECUTE_JOB_NAME].run(pack_value(args))
        ended = instance.get_run_by_id(run.run_id)
        assert ended is not None and ended.status == dg.DagsterRunStatus.CANCELED
        messages = [
            record.message
            for record in instance.all_logs(run.run_id)
            if record.dagster_event is not None and record.dagster_event.is_engine_event
        ]
        assert "The run's Celery task ended before the run recorded its end." in messages
