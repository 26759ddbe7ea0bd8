"""The Replicate adapter against a loopback fake that speaks Replicate's HTTP API."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from PIL import Image

from imagen_pipeline.backends.contract import MAX_SEED, GenerationContext, GenerationRequest
from imagen_pipeline.backends.registry import build_backend
from imagen_pipeline.backends.replicate import ReplicateBackend
from imagen_pipeline.defs.jobs import build_generate_image_job
from imagen_pipeline.errors import (
    ConfigError,
    MissingCredentialError,
    PermanentBackendError,
    TransientBackendError,
)
from imagen_pipeline_tests.fakes.loopback_http import closed_port
from imagen_pipeline_tests.fakes.replicate_server import (
    DROP_AFTER_CREATE,
    DROP_BEFORE_CREATE,
    FLUX_SCHNELL,
    NSFW_ERROR,
    SDXL,
    SENSITIVE_ERROR,
    THROTTLED,
    FakeReplicate,
    Received,
    Reply,
    running_fake_replicate,
)
from imagen_pipeline_tests.fixtures.imagen import file_resources, step_failure_text
from imagen_pipeline_tests.fixtures.interrupts import interrupting_when

TOKEN = "r8_ImagenFakeToken0123456789abcdefghijklm"
TOKEN_ENV = "IMAGEN_TEST_REPLICATE_TOKEN"
SCHNELL = "black-forest-labs/flux-schnell"
LOGGER = "imagen.test.replicate"


@pytest.fixture
def fake() -> Iterator[FakeReplicate]:
    with running_fake_replicate(TOKEN) as server:
        yield server


@pytest.fixture
def token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    return caplog


def backend(fake: FakeReplicate, **fields: Any) -> ReplicateBackend:
    settings: dict[str, Any] = {
        "model": SCHNELL,
        "api_token_env": TOKEN_ENV,
        "base_url": fake.base_url,
        "poll_interval_s": 0.01,
        "sync_wait_s": 5,
        **fields,
    }
    return ReplicateBackend(**settings)


def request(**fields: Any) -> GenerationRequest:
    return GenerationRequest(
        **{"prompt": "a red fox in the snow", "width": 1024, "height": 1024, "seed": 7, **fields}
    )


def context(run_id: str = "run-1", attempt: int = 0) -> GenerationContext:
    return GenerationContext(
        run_id=run_id, attempt=attempt, instance_name="flux", log=logging.getLogger(LOGGER)
    )


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def create_body(fake: FakeReplicate, index: int = 0) -> dict[str, Any]:
    return fake.creates()[index].json()


def listings(fake: FakeReplicate) -> list[Received]:
    return [item for item in fake.requests("GET") if item.path == "/v1/predictions"]


def assert_no_token(*texts: str) -> None:
    for text in texts:
        assert TOKEN not in text


# -- requests, mapping, downloads ------------------------------------------------------------


def test_sync_create_sends_token_wait_header_and_mapped_input(
    fake: FakeReplicate, token_env: None, logs: pytest.LogCaptureFixture
) -> None:
    result = backend(fake).generate(request(width=1344, height=768, steps=9), context())

    (create,) = fake.creates()
    assert create.path == "/v1/models/black-forest-labs/flux-schnell/predictions"
    assert create.headers["authorization"] == f"Bearer {TOKEN}"
    assert create.headers["prefer"] == "wait=5"
    assert create.headers["content-type"] == "application/json"
    assert create.json() == {
        "input": {
            "prompt": "a red fox in the snow",
            "aspect_ratio": "16:9",
            "num_inference_steps": 4,
            "output_format": "png",
            "seed": 7,
        }
    }
    assert fake.requests("GET", "/v1/predictions") == [], "finished within Prefer: wait"
    (download,) = fake.requests("GET", "/pbxt/")
    assert "authorization" not in download.headers, "the token stays with the API"

    image = decoded(result.image)
    assert (image.format, image.size) == ("PNG", (1344, 768))
    meta = result.metadata
    (prediction_id,) = fake.prediction_ids()
    assert meta.model == SCHNELL
    assert (meta.seed, meta.steps, meta.cost_usd) == (7, 4, 0.003)
    assert meta.extra["prediction_id"] == prediction_id
    assert meta.extra["model_version"] == FLUX_SCHNELL.version
    assert meta.extra["recovered_prediction"] is False
    assert "accepts at most 4 steps" in logs.text
    assert_no_token(logs.text, meta.model_dump_json())


def test_polls_urls_get_until_succeeded_and_downloads_webp(
    fake: FakeReplicate, token_env: None
) -> None:
    fake.polls_before_done = 3
    fake.sync_hold_s = 0.05
    result = backend(fake, output_format="webp").generate(request(), context())

    (prediction_id,) = fake.prediction_ids()
    polls = fake.requests("GET", f"/v1/predictions/{prediction_id}")
    assert len(polls) == 4
    assert all(poll.headers["authorization"] == f"Bearer {TOKEN}" for poll in polls)
    assert fake.prediction(prediction_id)["status"] == "succeeded"
    image = decoded(result.image)
    assert (image.format, image.size) == ("WEBP", (1024, 1024))


@pytest.mark.parametrize(
    ("model", "size", "fields", "expected_input", "expected_size"),
    [
        pytest.param(
            "black-forest-labs/flux-dev",
            (1200, 800),
            {"guidance": 3.5},
            {"aspect_ratio": "3:2", "num_inference_steps": 30, "guidance": 3.5},
            (1216, 832),
            id="flux-dev-guidance-steps",
        ),
        pytest.param(
            SCHNELL,
            (512, 512),
            {},
            {"aspect_ratio": "1:1", "megapixels": "0.25", "num_inference_steps": 4},
            (512, 512),
            id="flux-schnell-quarter-megapixel",
        ),
        pytest.param(
            "black-forest-labs/flux-1.1-pro",
            (1000, 600),
            {},
            {"aspect_ratio": "custom", "width": 992, "height": 608},
            (992, 608),
            id="flux-pro-custom-size",
        ),
    ],
)
def test_flux_input_mapping_is_accepted_by_the_model_schema(
    fake: FakeReplicate,
    token_env: None,
    logs: pytest.LogCaptureFixture,
    model: str,
    size: tuple[int, int],
    fields: dict[str, Any],
    expected_input: dict[str, Any],
    expected_size: tuple[int, int],
) -> None:
    result = backend(fake, model=model, **fields).generate(
        request(width=size[0], height=size[1], steps=30, negative="blurry"), context()
    )
    sent = create_body(fake)["input"]
    assert {key: sent.get(key) for key in expected_input} == expected_input
    assert "negative_prompt" not in sent
    assert "has no negative prompt input; ignored" in logs.text
    assert decoded(result.image).size == expected_size
    if model.endswith("flux-1.1-pro"):
        assert "num_inference_steps" not in sent
        assert result.metadata.steps is None
        assert result.metadata.cost_usd == 0.04


def test_version_id_uses_predictions_endpoint_with_generic_input(
    fake: FakeReplicate, token_env: None
) -> None:
    model = f"stability-ai/sdxl:{SDXL.version}"
    result = backend(fake, model=model, prices={model: 0.0123}).generate(
        request(width=768, height=512, steps=25, negative="blurry"), context()
    )
    create = fake.creates()[0]
    assert create.path == "/v1/predictions"
    assert create.json() == {
        "version": SDXL.version,
        "input": {
            "prompt": "a red fox in the snow",
            "width": 768,
            "height": 512,
            "num_inference_steps": 25,
            "negative_prompt": "blurry",
            "seed": 7,
        },
    }
    assert decoded(result.image).size == (768, 512)
    assert result.metadata.cost_usd == 0.0123


def test_extra_input_and_backend_opts_reach_the_model(fake: FakeReplicate, token_env: None) -> None:
    backend(fake, extra_input={"go_fast": False, "output_quality": 90}).generate(
        request(backend_opts={"output_quality": 95}), context()
    )
    sent = create_body(fake)["input"]
    assert (sent["go_fast"], sent["output_quality"]) == (False, 95)


def test_missing_seed_is_picked_per_run_and_sent(fake: FakeReplicate, token_env: None) -> None:
    adapter = backend(fake)
    first = adapter.generate(request(seed=None), context("run-a"))
    again = adapter.generate(request(seed=None), context("run-a", attempt=1))
    other = adapter.generate(request(seed=None), context("run-b"))
    seeds = [create_body(fake, index)["input"]["seed"] for index in (0, 1)]
    assert first.metadata.seed == seeds[0] == again.metadata.seed
    assert other.metadata.seed == seeds[1] != seeds[0]
    assert all(1 <= seed <= MAX_SEED for seed in seeds)
    assert again.metadata.extra["recovered_prediction"] is True, "same run: same input"


def test_data_uri_output_is_decoded(fake: FakeReplicate, token_env: None) -> None:
    fake.output_as_data_uri = True
    result = backend(fake).generate(request(), context())
    assert decoded(result.image).size == (1024, 1024)
    assert fake.requests("GET", "/pbxt/") == []


# -- failure classification ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "retry_after"),
    [
        pytest.param(Reply(429, THROTTLED, {"Retry-After": "7"}), 7.0, id="retry-after-seconds"),
        pytest.param(Reply(429, THROTTLED), 30.0, id="body-resets-in"),
    ],
)
def test_rate_limit_is_transient_with_retry_after(
    fake: FakeReplicate, token_env: None, reply: Reply, retry_after: float
) -> None:
    fake.create_replies.append(reply)
    with pytest.raises(TransientBackendError, match="rate limited") as raised:
        backend(fake).generate(request(), context())
    assert raised.value.retry_after_s == retry_after
    assert "Request was throttled" in str(raised.value)


def test_server_errors_and_unreachable_api_are_transient(
    fake: FakeReplicate, token_env: None
) -> None:
    fake.create_replies.append(Reply(503, {"detail": "Service Unavailable", "status": 503}))
    with pytest.raises(TransientBackendError, match="HTTP 503: Service Unavailable"):
        backend(fake).generate(request(), context())

    fake.polls_before_done = 1
    fake.get_replies.append(Reply(502, "Bad Gateway"))
    with pytest.raises(TransientBackendError, match="HTTP 502"):
        backend(fake).generate(request(seed=8), context())
    assert fake.requests("POST", "/v1/predictions/") == [], "a poll error does not cancel"

    adapter = ReplicateBackend(
        model=SCHNELL, api_token_env=TOKEN_ENV, base_url=f"http://127.0.0.1:{closed_port()}/v1"
    )
    with pytest.raises(TransientBackendError, match="cannot reach") as raised:
        adapter.generate(request(), context())
    assert_no_token(str(raised.value))


@pytest.mark.parametrize(
    ("setup", "fields", "message"),
    [
        pytest.param(
            lambda fake: setattr(fake, "token", "r8_another"),
            {},
            "refused \\(401\\): You did not pass a valid authentication token",
            id="401-bad-token",
        ),
        pytest.param(
            lambda fake: fake.create_replies.append(
                Reply(403, {"detail": "You do not have permission to run this model."})
            ),
            {},
            "refused \\(403\\): You do not have permission",
            id="403",
        ),
        pytest.param(
            lambda fake: None,
            {"model": "black-forest-labs/flux-nonexistent"},
            "not found \\(404\\): The requested resource could not be found",
            id="404-unknown-model",
        ),
        pytest.param(
            lambda fake: None,
            {"extra_input": {"output_quality": 101}},
            "invalid request \\(422\\): - input.output_quality: Must be less than or equal to 100",
            id="422-validation",
        ),
        pytest.param(
            lambda fake: None,
            {"model": "f" * 64},
            "invalid request \\(422\\): The specified version does not exist",
            id="422-unknown-version",
        ),
    ],
)
def test_client_errors_are_permanent_with_the_api_detail(
    fake: FakeReplicate,
    token_env: None,
    logs: pytest.LogCaptureFixture,
    setup: Callable[[FakeReplicate], None],
    fields: dict[str, Any],
    message: str,
) -> None:
    setup(fake)
    with pytest.raises(PermanentBackendError, match=message) as raised:
        backend(fake, **fields).generate(request(), context())
    assert fake.creates()[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert_no_token(str(raised.value), logs.text)


def test_an_echoed_token_is_redacted_from_errors(fake: FakeReplicate, token_env: None) -> None:
    fake.create_replies.append(Reply(400, {"detail": f"bad header Bearer {TOKEN}"}))
    with pytest.raises(PermanentBackendError, match=r"bad header Bearer \*\*\*") as raised:
        backend(fake).generate(request(), context())
    assert_no_token(str(raised.value))


@pytest.mark.parametrize(
    ("outcome", "error", "expected", "message"),
    [
        ("failed", NSFW_ERROR, PermanentBackendError, "rejected by content policy: All generated"),
        ("failed", SENSITIVE_ERROR, PermanentBackendError, "rejected by content policy: The input"),
        (
            "failed",
            "CUDA out of memory. Tried to allocate 2.00 GiB",
            PermanentBackendError,
            "failed: CUDA out of memory",
        ),
        (
            "failed",
            "E6716: Timeout starting prediction",
            TransientBackendError,
            "failed: E6716: Timeout starting prediction",
        ),
        ("aborted", "deadline exceeded", TransientBackendError, "aborted before it ran"),
        ("canceled", None, PermanentBackendError, "canceled outside this run"),
    ],
)
def test_prediction_end_states_are_classified(
    fake: FakeReplicate,
    token_env: None,
    outcome: str,
    error: str | None,
    expected: type[Exception],
    message: str,
) -> None:
    fake.outcome, fake.failure = outcome, error
    fake.polls_before_done = 1
    with pytest.raises(expected, match=message) as raised:
        backend(fake).generate(request(), context())
    assert type(raised.value) is expected
    assert fake.requests("GET", "/pbxt/") == []


# -- lost responses, retries, cancel ---------------------------------------------------------


def test_lost_create_response_is_recovered_without_a_second_prediction(
    fake: FakeReplicate, token_env: None, logs: pytest.LogCaptureFixture
) -> None:
    fake.create_replies.append(DROP_AFTER_CREATE)
    fake.polls_before_done = 1
    result = backend(fake).generate(request(), context())

    (prediction_id,) = fake.prediction_ids()
    assert len(fake.creates()) == 1
    (listing,) = listings(fake)
    assert "created_after" in listing.query
    assert result.metadata.extra["prediction_id"] == prediction_id
    assert result.metadata.extra["recovered_prediction"] is True
    assert "response lost" in logs.text


def test_lost_response_before_create_is_transient_and_the_retry_creates_once(
    fake: FakeReplicate, token_env: None
) -> None:
    fake.create_replies.append(DROP_BEFORE_CREATE)
    adapter = backend(fake)
    with pytest.raises(TransientBackendError, match="response was lost"):
        adapter.generate(request(), context(attempt=0))
    assert fake.prediction_ids() == []

    adapter.generate(request(), context(attempt=1))
    assert len(fake.prediction_ids()) == 1
    assert len(fake.creates()) == 2, "the dropped POST and the retry's POST"


def test_retry_adopts_the_earlier_attempts_prediction_across_pages(
    fake: FakeReplicate, token_env: None
) -> None:
    adapter = backend(fake)
    fake.polls_before_done = 2
    fake.get_replies.append(Reply(500, {"detail": "Internal Server Error", "status": 500}))
    with pytest.raises(TransientBackendError, match="HTTP 500"):
        adapter.generate(request(), context(attempt=0))
    (first_id,) = fake.prediction_ids()

    same_input = create_body(fake)["input"]
    fake.add_prediction(FLUX_SCHNELL, same_input, status="failed", error=NSFW_ERROR)
    fake.add_prediction(FLUX_SCHNELL, {**same_input, "seed": 99}, status="processing")
    fake.page_size = 1
    result = adapter.generate(request(), context(attempt=1))

    assert len(fake.creates()) == 1
    assert result.metadata.extra["prediction_id"] == first_id
    assert [page.query.get("cursor") for page in listings(fake)] == [None, ["1"], ["2"]]


def test_interrupt_while_polling_cancels_the_prediction(
    fake: FakeReplicate, token_env: None
) -> None:
    fake.polls_before_done = 10**9
    polled = lambda: bool(fake.requests("GET", "/v1/predictions/"))  # noqa: E731
    with pytest.raises(KeyboardInterrupt), interrupting_when(polled, 10.0):
        backend(fake).generate(request(), context())
    (prediction_id,) = fake.prediction_ids()
    (cancel,) = fake.requests("POST", f"/v1/predictions/{prediction_id}/cancel")
    assert cancel.headers["authorization"] == f"Bearer {TOKEN}"
    assert fake.prediction(prediction_id)["status"] == "canceled"


def test_prediction_past_the_timeout_is_canceled_and_transient(
    fake: FakeReplicate, token_env: None
) -> None:
    fake.polls_before_done = 10**9
    with pytest.raises(TransientBackendError, match=r"did not finish within 0\.2s"):
        backend(fake, timeout_s=0.2).generate(request(), context())
    (prediction_id,) = fake.prediction_ids()
    assert fake.prediction(prediction_id)["status"] == "canceled"


@pytest.mark.parametrize("content_length", [True, False], ids=["declared", "streamed"])
def test_output_larger_than_the_cap_is_refused(
    fake: FakeReplicate, token_env: None, content_length: bool
) -> None:
    fake.file_content_length = content_length
    with pytest.raises(PermanentBackendError, match="larger than max_download_bytes \\(2000\\)"):
        backend(fake, max_download_bytes=2000).generate(request(), context())
    assert len(fake.requests("GET", "/pbxt/")) == 1


def test_slow_or_failing_download_is_transient(fake: FakeReplicate, token_env: None) -> None:
    fake.file_delay_s = 0.5
    with pytest.raises(TransientBackendError, match=r"download timed out after 0\.1s"):
        backend(fake, download_timeout_s=0.1).generate(request(), context())

    fake.file_delay_s = 0
    fake.file_replies.append(Reply(503, "Service Unavailable"))
    with pytest.raises(TransientBackendError, match="download: HTTP 503"):
        backend(fake).generate(request(seed=8), context())


# -- credentials, check, cost, config ----------------------------------------------------------


def test_missing_token_names_the_variable_and_sends_nothing(
    fake: FakeReplicate, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with pytest.raises(MissingCredentialError, match=f"environment variable {TOKEN_ENV}"):
        backend(fake).generate(request(), context())
    check = backend(fake).check()
    assert (check.credentials, TOKEN_ENV in check.detail) == (False, True)
    assert fake.received == []


def test_check_reports_reachability_credentials_and_model(
    fake: FakeReplicate, token_env: None
) -> None:
    ok = backend(fake).check()
    assert (ok.reachable, ok.credentials, ok.model_present) == (True, True, True)
    assert fake.requests("GET")[-1].path == "/v1/models/black-forest-labs/flux-schnell"

    missing = backend(fake, model="black-forest-labs/flux-nonexistent").check()
    assert (missing.reachable, missing.credentials, missing.model_present) == (True, True, False)

    version = backend(fake, model=f"stability-ai/sdxl:{SDXL.version}").check()
    assert version.model_present is True
    assert fake.requests("GET")[-1].path == f"/v1/models/stability-ai/sdxl/versions/{SDXL.version}"

    fake.token = "r8_another"
    refused = backend(fake).check()
    assert (refused.reachable, refused.credentials) == (True, False)
    assert "You did not pass a valid authentication token" in refused.detail

    unreachable = backend(fake, base_url=f"http://127.0.0.1:{closed_port()}/v1").check()
    assert (unreachable.reachable, unreachable.credentials) == (False, None)
    for result in (ok, missing, version, refused, unreachable):
        assert_no_token(result.detail)


def test_prices_come_from_the_config_then_the_built_in_table_else_are_unknown() -> None:
    def estimate(model: str, prices: dict[str, float] | None = None) -> tuple[float | None, str]:
        adapter = ReplicateBackend(model=model, prices=prices or {})
        price = adapter.estimate_price(request())
        return price.usd, price.source

    assert estimate(SCHNELL) == (0.003, "built_in")
    assert estimate("black-forest-labs/flux-dev") == (0.025, "built_in")
    assert estimate(SCHNELL, {SCHNELL: 0.004}) == (0.004, "config")
    sdxl = f"stability-ai/sdxl:{SDXL.version}"
    assert estimate(sdxl, {"stability-ai/sdxl": 0.01}) == (0.01, "config")
    assert estimate("someone/unknown-model") == (None, "unknown")
    assert estimate("black-forest-labs/flux-2-pro") == (None, "unknown")
    unknown = ReplicateBackend(model="someone/unknown-model").estimate_price(request())
    assert (
        unknown.note == "no price known for someone/unknown-model: set prices.someone/unknown-model"
    )


def test_config_block_is_validated_without_echoing_a_token() -> None:
    instance = build_backend("flux", {"type": "replicate", "model": SCHNELL})
    assert instance.credential_env_vars() == {"api_token_env": "REPLICATE_API_TOKEN"}
    with pytest.raises(
        ConfigError, match=r"backends\.flux\.model: Value error, expected an official"
    ):
        build_backend("flux", {"type": "replicate", "model": "flux-schnell"})
    with pytest.raises(ConfigError, match="must be the NAME of an environment variable") as raised:
        build_backend("flux", {"type": "replicate", "model": SCHNELL, "api_token_env": TOKEN})
    assert_no_token(str(raised.value))


# -- the generate_image job end to end -----------------------------------------------------------


def job_config(write_config: Callable[..., Path], fake: FakeReplicate) -> Path:
    return write_config(
        {
            "default_backend": "flux",
            "backends": {
                "flux": {
                    "type": "replicate",
                    "api_token_env": TOKEN_ENV,
                    "model": SCHNELL,
                    "base_url": fake.base_url,
                    "poll_interval_s": 0.01,
                    "sync_wait_s": 1,
                }
            },
        }
    )


def run_job(config_file: Path, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return build_generate_image_job(retry_delay_s=0).execute_in_process(
        run_config={
            "ops": {
                "enrich_prompt": {
                    "config": {"prompt": "a lighthouse", "width": 1344, "height": 768}
                }
            },
            "resources": file_resources(config_file),
        },
        instance=instance,
        raise_on_error=False,
    )


def test_generate_image_job_end_to_end_with_a_retried_poll(
    fake: FakeReplicate,
    token_env: None,
    write_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
) -> None:
    fake.polls_before_done = 1
    fake.get_replies.append(Reply(503, {"detail": "Service Unavailable", "status": 503}))
    result = run_job(job_config(write_config, fake), dagster_instance)

    assert result.success, step_failure_text(result)
    assert len(fake.creates()) == 1, "the retry adopted the first attempt's prediction"
    (prediction_id,) = fake.prediction_ids()
    [stored] = result.output_for_node("write_files")
    with Image.open(stored.image_path) as image:
        assert (image.format, image.size) == ("PNG", (1344, 768))
    sidecar_text = Path(stored.sidecar_path).read_text(encoding="utf-8")
    sidecar = json.loads(sidecar_text)
    assert sidecar["backend"] == {"instance": "flux", "type": "replicate", "options": {}}
    assert sidecar["result"]["extra"]["prediction_id"] == prediction_id
    assert sidecar["result"]["seed"] == create_body(fake)["input"]["seed"]
    assert sidecar["result"]["cost_usd"] == 0.003
    logs = "\n".join(
        str(record.user_message) for record in dagster_instance.all_logs(result.run_id)
    )
    assert "transient failure on attempt 1" in logs
    assert_no_token(sidecar_text, logs)


def test_generate_image_job_without_the_token_fails_before_any_request(
    fake: FakeReplicate,
    monkeypatch: pytest.MonkeyPatch,
    write_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    result = run_job(job_config(write_config, fake), dagster_instance)
    assert not result.success
    assert f"backends.flux.api_token_env: environment variable {TOKEN_ENV} is not set" in (
        step_failure_text(result)
    )
    assert fake.received == []
