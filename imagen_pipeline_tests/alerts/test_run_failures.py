"""What a failed run alerts: never its request's failure; one key per kind of failure."""

from __future__ import annotations

from imagen_pipeline.alerts.run_failures import failure_kind, run_failure_alert

OUTAGE = (
    "backend 'flux' (replicate): Replicate did not answer within 30 s (run "
    "3f2b9c1e-8d4a-4c2b-9e7f-0a1b2c3d4e5f, attempt 4, prediction 9q8w7e6r5t4y)"
)


def test_a_failure_of_the_request_alerts_nobody() -> None:
    assert run_failure_alert("request", "width: must be between 64 and 4096", "r1", "j") is None


def test_runs_failing_for_one_cause_share_a_key_and_other_causes_do_not() -> None:
    first = run_failure_alert("outage", OUTAGE, "run-1", "generate_image")
    again = (
        OUTAGE.replace(
            "3f2b9c1e-8d4a-4c2b-9e7f-0a1b2c3d4e5f", "77c0e2aa-1b2c-4d3e-8f90-aabbccddeeff"
        )
        .replace("attempt 4", "attempt 2")
        .replace("9q8w7e6r5t4y", "1a2b3c4d")
    )
    second = run_failure_alert("outage", again, "run-2", "generate_image")
    other = run_failure_alert("outage", OUTAGE.replace("flux", "gpu"), "run-3", "generate_image")
    as_server = run_failure_alert("server", OUTAGE, "run-4", "generate_image")
    assert first is not None and second is not None and other is not None
    assert as_server is not None
    assert first.key == second.key
    assert len({first.key, other.key, as_server.key}) == 3
    assert first.key.startswith("run-failed:outage:")
    assert first.title == (
        "Runs failing (outage): backend 'flux' (replicate): Replicate did not answer within 30 s "
        "(run 3f2b9c1e-8d4a-4c2b-…"
    )
    assert first.text.startswith(f"Run run-1 of generate_image failed: {OUTAGE}\n")


def test_the_kind_of_a_failure_leaves_out_ids_and_numbers() -> None:
    assert failure_kind(OUTAGE) == (
        "backend 'flux' (replicate): Replicate did not answer within # s (run #, attempt #, "
        "prediction #)"
    )
