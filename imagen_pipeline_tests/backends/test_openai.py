"""The OpenAI images adapter against a loopback fake that speaks OpenAI's Images API."""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from PIL import Image

from imagen_pipeline.backends.contract import GenerationContext, GenerationRequest
from imagen_pipeline.backends.openai import OpenAIImagesBackend
from imagen_pipeline.backends.registry import build_backend
from imagen_pipeline.defs.jobs import build_generate_image_job
from imagen_pipeline.errors import (
    ConfigError,
    MissingCredentialError,
    PermanentBackendError,
    TransientBackendError,
)
from imagen_pipeline_tests.fakes.loopback_http import closed_port
from imagen_pipeline_tests.fakes.openai_server import (
    BLOCKED_WORD,
    DROP,
    INSUFFICIENT_QUOTA,
    ORGANIZATION_NOT_VERIFIED,
    RATE_LIMITED,
    SERVER_ERROR,
    FakeOpenAI,
    Reply,
    error_body,
    running_fake_openai,
)
from imagen_pipeline_tests.fixtures.imagen import step_failure_text

KEY = "sk-proj-ImagenFakeKey0123456789abcdefghijklmnopWXYZ"
KEY_ENV = "IMAGEN_TEST_OPENAI_KEY"
LOGGER = "imagen.test.openai"
PROMPT = "a red fox in the snow"


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with running_fake_openai(KEY) as server:
        yield server


@pytest.fixture
def key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    return caplog


def backend(fake: FakeOpenAI, **fields: Any) -> OpenAIImagesBackend:
    return OpenAIImagesBackend(
        **{"api_key_env": KEY_ENV, "base_url": fake.base_url, "timeout_s": 10, **fields}
    )


def request(**fields: Any) -> GenerationRequest:
    return GenerationRequest(**{"prompt": PROMPT, "width": 1024, "height": 1024, **fields})


def context(run_id: str = "run-1", attempt: int = 0) -> GenerationContext:
    return GenerationContext(
        run_id=run_id, attempt=attempt, instance_name="oai", log=logging.getLogger(LOGGER)
    )


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def sent_body(fake: FakeOpenAI, index: int = 0) -> dict[str, Any]:
    return fake.generations()[index].json()


def assert_no_key(*texts: str) -> None:
    for text in texts:
        assert KEY not in text
        assert KEY[-4:] not in text, "not even the masked echo"


# -- requests per model family ---------------------------------------------------------------


def test_gpt_image_request_sends_key_and_body_and_decodes_the_png(
    fake: FakeOpenAI, key_env: None, logs: pytest.LogCaptureFixture
) -> None:
    adapter = backend(fake, quality="medium", background="opaque", moderation="low")
    result = adapter.generate(
        request(width=1344, height=768, seed=7, steps=30, negative="blurry"), context()
    )

    (post,) = fake.generations()
    assert post.headers["authorization"] == f"Bearer {KEY}"
    assert post.headers["content-type"] == "application/json"
    assert "openai-organization" not in post.headers
    assert post.json() == {
        "model": "gpt-image-1",
        "prompt": PROMPT,
        "n": 1,
        "size": "1536x1024",
        "quality": "medium",
        "background": "opaque",
        "moderation": "low",
    }
    image = decoded(result.image)
    assert (image.format, image.size) == ("PNG", (1536, 1024))
    meta = result.metadata
    assert (meta.model, meta.seed, meta.steps) == ("gpt-image-1", None, None)
    text_tokens = -(-len(PROMPT) // 4)
    assert meta.extra["usage"] == {
        "input_tokens": text_tokens,
        "input_tokens_details": {"image_tokens": 0, "text_tokens": text_tokens},
        "output_tokens": 1568,
        "total_tokens": text_tokens + 1568,
    }
    assert meta.cost_usd == round((text_tokens * 5 + 1568 * 40) / 1_000_000, 6)
    assert meta.extra["cost_source"] == "usage"
    assert (meta.extra["size"], meta.extra["requested_size"]) == ("1536x1024", "1344x768")
    assert meta.extra["request_id"].startswith("req_")
    assert "1344x768 requested, sending size 1536x1024" in logs.text
    assert "take no seed, steps, negative prompt; ignored" in logs.text
    assert_no_key(logs.text, meta.model_dump_json())


def test_webp_output_with_compression_organization_and_project_headers(
    fake: FakeOpenAI, key_env: None
) -> None:
    adapter = backend(
        fake,
        model="gpt-image-1-mini",
        output_format="webp",
        output_compression=80,
        background="transparent",
        organization="org-imagen",
        project="proj_imagen",
    )
    result = adapter.generate(request(width=1024, height=1536), context())

    (post,) = fake.generations()
    assert (post.headers["openai-organization"], post.headers["openai-project"]) == (
        "org-imagen",
        "proj_imagen",
    )
    body = post.json()
    assert (body["model"], body["size"], body["output_format"], body["output_compression"]) == (
        "gpt-image-1-mini",
        "1024x1536",
        "webp",
        80,
    )
    image = decoded(result.image)
    assert (image.format, image.mode, image.size) == ("WEBP", "RGBA", (1024, 1536))
    assert result.metadata.extra["background"] == "transparent"
    text_tokens = -(-len(PROMPT) // 4)
    assert result.metadata.cost_usd == round((text_tokens * 2 + 6240 * 8) / 1_000_000, 6)


def test_dall_e_3_asks_for_b64_json_and_is_priced_from_the_table(
    fake: FakeOpenAI, key_env: None
) -> None:
    adapter = backend(fake, model="dall-e-3", quality="hd", style="natural")
    result = adapter.generate(request(width=1920, height=1080), context())

    assert sent_body(fake) == {
        "model": "dall-e-3",
        "prompt": PROMPT,
        "n": 1,
        "size": "1792x1024",
        "response_format": "b64_json",
        "quality": "hd",
        "style": "natural",
    }
    assert decoded(result.image).size == (1792, 1024)
    meta = result.metadata
    assert (meta.cost_usd, meta.extra["cost_source"]) == (0.12, "price_table")
    assert meta.extra["revised_prompt"] == f"A detailed image of {PROMPT}"
    assert "usage" not in meta.extra


@pytest.mark.parametrize(
    ("size", "sent", "cost"),
    [
        ((256, 256), "256x256", 0.016),
        ((800, 600), "512x512", 0.018),
        ((2048, 1024), "1024x1024", 0.02),
    ],
)
def test_dall_e_2_maps_to_the_nearest_square(
    fake: FakeOpenAI, key_env: None, size: tuple[int, int], sent: str, cost: float
) -> None:
    result = backend(fake, model="dall-e-2").generate(
        request(width=size[0], height=size[1]), context()
    )
    body = sent_body(fake)
    assert (body["size"], body["response_format"]) == (sent, "b64_json")
    assert "quality" not in body
    assert decoded(result.image).size == tuple(int(side) for side in sent.split("x"))
    assert result.metadata.cost_usd == cost


def test_backend_opts_override_config_per_request(fake: FakeOpenAI, key_env: None) -> None:
    adapter = backend(fake, quality="low")
    result = adapter.generate(
        request(width=1344, height=768, backend_opts={"quality": "high", "size": "auto"}),
        context(),
    )
    body = sent_body(fake)
    assert (body["quality"], body["size"]) == ("high", "auto")
    assert result.metadata.extra["size"] == "1024x1024", "the size the API reports"


# -- validation before any request ------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param(
            {"model": "dall-e-3", "quality": "high"},
            r"backends\.oai\.quality: Value error, 'high' is not offered by dall-e-3; "
            r"allowed values: standard, hd",
            id="dall-e-3-quality",
        ),
        pytest.param(
            {"quality": "hd"},
            r"backends\.oai\.quality: Value error, 'hd' is not offered by gpt-image-1 "
            r"\(GPT image models\); allowed values: low, medium, high, auto",
            id="gpt-quality",
        ),
        pytest.param(
            {"style": "vivid"},
            r"backends\.oai\.style: Value error, not a parameter of gpt-image-1 "
            r"\(GPT image models\); parameters: background, moderation, output_compression",
            id="gpt-style",
        ),
        pytest.param(
            {"model": "dall-e-2", "background": "transparent"},
            r"backends\.oai\.background: Value error, not a parameter of dall-e-2",
            id="dall-e-2-background",
        ),
        pytest.param(
            {"output_format": "gif"},
            r"output_format: Value error, 'gif' is not offered by gpt-image-1 .*png, jpeg, webp",
            id="gpt-output-format",
        ),
        pytest.param(
            {"output_compression": 101, "output_format": "jpeg"},
            r"output_compression: Value error, 101 is not an integer from 0 to 100",
            id="compression-range",
        ),
        pytest.param(
            {"background": "transparent", "output_format": "jpeg"},
            r"backends\.oai: Value error, background: transparent needs output_format png or "
            r"webp",
            id="transparent-jpeg",
        ),
        pytest.param(
            {"output_compression": 50},
            r"output_compression: applies to output_format jpeg or webp only \(png is set\)",
            id="compression-png",
        ),
        pytest.param(
            {"model": "gpt-image-9"},
            r"backends\.oai\.family: Value error, cannot tell the parameter family of model "
            r"'gpt-image-9'; set family to gpt-image, dall-e-3 or dall-e-2",
            id="unknown-model",
        ),
        pytest.param(
            {"token_prices": {"gpt-image-1": {"text_input": 5}}},
            r"token_prices: Value error, gpt-image-1: needs exactly text_input, image_input, "
            r"image_output",
            id="token-prices",
        ),
        pytest.param(
            {"image_prices": {"dall-e-3": {"1024x1024": 0.04}}},
            r"image_prices: Value error, dall-e-3\.1024x1024: keys are '<quality> <WxH>'",
            id="image-prices",
        ),
    ],
)
def test_config_values_are_validated_per_model_family(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_backend("oai", {"type": "openai", **fields})


@pytest.mark.parametrize(
    ("fields", "req", "message"),
    [
        pytest.param(
            {"size_policy": "exact"},
            {"width": 1344, "height": 768},
            r"width x height: 1344x768 is not a size gpt-image-1 renders; allowed sizes: "
            r"1024x1024, 1536x1024, 1024x1536",
            id="exact-size-gpt",
        ),
        pytest.param(
            {"model": "dall-e-3", "size_policy": "exact"},
            {"width": 1536, "height": 1024},
            r"allowed sizes: 1024x1024, 1792x1024, 1024x1792",
            id="exact-size-dall-e-3",
        ),
        pytest.param(
            {"model": "dall-e-2"},
            {"prompt": "x" * 1001},
            r"prompt: 1001 characters; dall-e-2 accepts at most 1000",
            id="prompt-length",
        ),
        pytest.param(
            {},
            {"backend_opts": {"style": "vivid"}},
            r"backend_opts\.style: not a parameter of gpt-image-1",
            id="opts-unknown-parameter",
        ),
        pytest.param(
            {"model": "dall-e-3"},
            {"backend_opts": {"size": "1536x1024"}},
            r"backend_opts\.size: '1536x1024' is not offered by dall-e-3; allowed values: "
            r"1024x1024, 1792x1024, 1024x1792",
            id="opts-size",
        ),
        pytest.param(
            {"model": "dall-e-3"},
            {"backend_opts": {"response_format": "url"}},
            r"backend_opts\.response_format: 'url' is not offered by dall-e-3; allowed values: "
            r"b64_json",
            id="opts-url",
        ),
        pytest.param(
            {},
            {"backend_opts": {"n": 4}},
            r"backend_opts\.n: set by the pipeline",
            id="opts-n",
        ),
        pytest.param(
            {"output_format": "jpeg"},
            {"backend_opts": {"background": "transparent"}},
            r"background: transparent needs output_format png or webp",
            id="opts-combination",
        ),
    ],
)
def test_request_problems_fail_before_any_request(
    fake: FakeOpenAI,
    key_env: None,
    fields: dict[str, Any],
    req: dict[str, Any],
    message: str,
) -> None:
    adapter = backend(fake, **fields)
    with pytest.raises(PermanentBackendError, match=message):
        adapter.estimate_cost_usd(request(**req))
    with pytest.raises(PermanentBackendError, match=message):
        adapter.generate(request(**req), context())
    assert fake.received == []


# -- failure classification -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "code", "message"),
    [
        ("gpt-image-1", "moderation_blocked", "Your request was rejected by the safety system"),
        ("dall-e-3", "content_policy_violation", "Your request was rejected as a result of our"),
    ],
)
def test_content_policy_refusals_are_permanent_with_the_api_message(
    fake: FakeOpenAI, key_env: None, model: str, code: str, message: str
) -> None:
    with pytest.raises(PermanentBackendError) as raised:
        backend(fake, model=model).generate(request(prompt=f"a {BLOCKED_WORD}"), context())
    assert type(raised.value) is PermanentBackendError
    text = str(raised.value)
    assert f"OpenAI images (400, {code}): rejected by OpenAI's safety system: {message}" in text
    assert "[request req_" in text


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({"retry-after": "7"}, 7.0, id="retry-after-seconds"),
        pytest.param({"retry-after-ms": "1500", "retry-after": "9"}, 1.5, id="retry-after-ms"),
        pytest.param({}, 12.0, id="try-again-in-body"),
    ],
)
def test_rate_limit_is_transient_with_retry_after(
    fake: FakeOpenAI, key_env: None, headers: dict[str, str], expected: float
) -> None:
    fake.replies.append(Reply(429, RATE_LIMITED, headers))
    with pytest.raises(TransientBackendError, match="429, rate_limit_exceeded") as raised:
        backend(fake).generate(request(), context())
    assert raised.value.retry_after_s == expected


def test_retry_after_as_http_date_is_honoured(fake: FakeOpenAI, key_env: None) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    fake.replies.append(Reply(429, RATE_LIMITED, {"retry-after": when}))
    with pytest.raises(TransientBackendError) as raised:
        backend(fake).generate(request(), context())
    assert raised.value.retry_after_s is not None
    assert 60 < raised.value.retry_after_s <= 120


def test_insufficient_quota_is_permanent(fake: FakeOpenAI, key_env: None) -> None:
    fake.replies.append(Reply(429, INSUFFICIENT_QUOTA))
    with pytest.raises(PermanentBackendError, match="quota exhausted: You exceeded your current"):
        backend(fake).generate(request(), context())


def test_server_errors_timeouts_and_unreachable_api_are_transient(
    fake: FakeOpenAI, key_env: None
) -> None:
    fake.replies.append(Reply(500, SERVER_ERROR))
    with pytest.raises(TransientBackendError, match=r"\(500\): The server had an error"):
        backend(fake).generate(request(), context())

    fake.replies.append(Reply(503, "<html>Service Unavailable</html>"))
    with pytest.raises(TransientBackendError, match=r"\(503\): <html>Service Unavailable"):
        backend(fake).generate(request(), context())

    fake.replies.append(DROP)
    with pytest.raises(TransientBackendError, match="cannot reach"):
        backend(fake).generate(request(), context())

    fake.delay_s = 1.0
    with pytest.raises(TransientBackendError, match=r"no answer within 0\.2s"):
        backend(fake, timeout_s=0.2).generate(request(), context())
    assert len(fake.generations()) == 4

    refused = backend(fake, base_url=f"http://127.0.0.1:{closed_port()}/v1")
    with pytest.raises(TransientBackendError, match="cannot reach") as raised:
        refused.generate(request(), context())
    assert_no_key(str(raised.value))


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        pytest.param(
            lambda fake: setattr(fake, "key", "sk-proj-another-key-0000"),
            r"\(401, invalid_api_key\): the key in \$IMAGEN_TEST_OPENAI_KEY was refused: "
            r"Incorrect API key provided: sk-\*\*\*\. You can find",
            id="401-masked-echo",
        ),
        pytest.param(
            lambda fake: fake.replies.append(
                Reply(401, error_body(f"Bad key {KEY}", None, "invalid_api_key"))
            ),
            r"was refused: Bad key \*\*\* ",
            id="401-full-echo",
        ),
        pytest.param(
            lambda fake: fake.replies.append(Reply(403, ORGANIZATION_NOT_VERIFIED)),
            r"\(403\): Your organization must be verified to use the model `gpt-image-1`",
            id="403-unverified-organization",
        ),
        pytest.param(
            lambda fake: fake.replies.append(
                Reply(
                    400,
                    error_body(
                        "Invalid value: 'huge'. Supported values are: 'low' and 'auto'.",
                        "moderation",
                        "invalid_value",
                    ),
                )
            ),
            r"\(400, invalid_value, moderation\): Invalid value: 'huge'",
            id="400-invalid-value",
        ),
        pytest.param(
            lambda fake: fake.replies.append(
                Reply(404, error_body("Invalid URL (POST /v1/images/generations)", None, None))
            ),
            r"\(404\): Invalid URL",
            id="404",
        ),
    ],
)
def test_client_errors_are_permanent_with_the_api_message_and_no_key(
    fake: FakeOpenAI,
    key_env: None,
    logs: pytest.LogCaptureFixture,
    setup: Callable[[FakeOpenAI], None],
    expected: str,
) -> None:
    setup(fake)
    with pytest.raises(PermanentBackendError, match=expected) as raised:
        backend(fake).generate(request(), context())
    assert fake.generations()[0].headers["authorization"] == f"Bearer {KEY}"
    assert_no_key(str(raised.value), logs.text)


def test_an_answer_that_is_not_an_image_is_permanent(fake: FakeOpenAI, key_env: None) -> None:
    not_image = base64.b64encode(b"definitely not a picture").decode()
    fake.replies.append(Reply(200, {"created": 1, "data": [{"b64_json": not_image}]}))
    with pytest.raises(PermanentBackendError, match="b64_json is not an image"):
        backend(fake).generate(request(), context())

    fake.replies.append(Reply(200, {"created": 1, "data": [{"url": "https://example.test/x"}]}))
    with pytest.raises(PermanentBackendError, match=r"no b64_json image \(it has a URL"):
        backend(fake).generate(request(), context())


# -- credentials, check, cost, config ----------------------------------------------------------


def test_missing_key_names_the_variable_and_sends_nothing(
    fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(
        MissingCredentialError, match=rf"backends\.oai\.api_key_env: environment variable {KEY_ENV}"
    ):
        backend(fake).generate(request(), context())
    check = backend(fake).check()
    assert (check.credentials, KEY_ENV in check.detail) == (False, True)
    assert fake.received == []


def test_check_reports_reachability_credentials_and_model(fake: FakeOpenAI, key_env: None) -> None:
    ok = backend(fake).check()
    assert (ok.reachable, ok.credentials, ok.model_present) == (True, True, True)
    probe = fake.received[-1]
    assert (probe.method, probe.path) == ("GET", "/v1/models/gpt-image-1")
    assert probe.headers["authorization"] == f"Bearer {KEY}"

    fake.available_models.discard("dall-e-2")
    missing = backend(fake, model="dall-e-2").check()
    assert (missing.reachable, missing.credentials, missing.model_present) == (True, True, False)
    assert "The model 'dall-e-2' does not exist" in missing.detail

    fake.key = "sk-proj-another-key-0000"
    refused = backend(fake).check()
    assert (refused.reachable, refused.credentials) == (True, False)
    assert "Incorrect API key provided: sk-***" in refused.detail

    unreachable = backend(fake, base_url=f"http://127.0.0.1:{closed_port()}/v1").check()
    assert (unreachable.reachable, unreachable.credentials) == (False, None)
    for result in (ok, missing, refused, unreachable):
        assert_no_key(result.detail)


def test_estimates_come_from_the_size_and_quality_tables() -> None:
    def estimate(size: tuple[int, int] = (1024, 1024), **fields: Any) -> float:
        return OpenAIImagesBackend(**fields).estimate_cost_usd(
            request(prompt="x" * 40, width=size[0], height=size[1])
        )

    text = 10 * 5 / 1_000_000
    assert estimate(quality="low") == round(text + 272 * 40 / 1_000_000, 6)
    assert estimate((1536, 1024), quality="medium") == round(text + 1568 * 40 / 1_000_000, 6)
    assert estimate() == round(text + 4160 * 40 / 1_000_000, 6), "unset quality: high"
    assert estimate(model="gpt-image-1-mini", quality="high") == round(
        10 * 2 / 1_000_000 + 4160 * 8 / 1_000_000, 6
    )
    assert estimate((1024, 1792), model="dall-e-3") == 0.08
    assert estimate((1024, 1792), model="dall-e-3", quality="hd") == 0.12
    assert estimate(model="dall-e-2") == 0.02
    assert estimate(model="dall-e-2", image_prices={"dall-e-2": {"standard 1024x1024": 0.5}}) == 0.5
    overridden = {"gpt-image-1": {"text_input": 0, "image_input": 0, "image_output": 1000}}
    assert estimate(quality="low", token_prices=overridden) == 0.272
    assert estimate(model="gpt-image-1.5") == 0.0, "no built-in price for gpt-image-1.5"


def test_cost_uses_configured_token_prices_and_unpriced_models_warn(
    fake: FakeOpenAI, key_env: None, logs: pytest.LogCaptureFixture
) -> None:
    prices = {"gpt-image-1.5": {"text_input": 5, "image_input": 8, "image_output": 32}}
    priced = backend(fake, model="gpt-image-1.5", quality="low", token_prices=prices)
    result = priced.generate(request(), context())
    text_tokens = -(-len(PROMPT) // 4)
    assert result.metadata.cost_usd == round((text_tokens * 5 + 272 * 32) / 1_000_000, 6)

    unpriced = backend(fake, model="gpt-image-1.5", quality="low").generate(request(), context())
    assert (unpriced.metadata.cost_usd, unpriced.metadata.extra["cost_source"]) == (0, "unpriced")
    assert "no price known for gpt-image-1.5" in logs.text


def test_config_block_defaults_and_key_names() -> None:
    instance = build_backend("oai", {"type": "openai"})
    assert instance.credential_env_vars() == {"api_key_env": "OPENAI_API_KEY"}
    assert instance.backend.model_name() == "gpt-image-1"
    dated = build_backend("oai", {"type": "openai", "model": "dall-e-3-2024-01-01"})
    assert isinstance(dated.backend, OpenAIImagesBackend)
    assert dated.backend.resolved_family() == "dall-e-3"
    with pytest.raises(ConfigError, match="must be the NAME of an environment variable") as raised:
        build_backend("oai", {"type": "openai", "api_key_env": KEY})
    assert_no_key(str(raised.value))


# -- the generate_image job end to end -----------------------------------------------------------


def job_config(write_config: Callable[..., Path], fake: FakeOpenAI) -> Path:
    return write_config(
        {
            "default_backend": "oai",
            "backends": {
                "oai": {
                    "type": "openai",
                    "api_key_env": KEY_ENV,
                    "base_url": fake.base_url,
                    "quality": "medium",
                }
            },
        }
    )


def run_job(
    config_file: Path, instance: dg.DagsterInstance, prompt: str = "a lighthouse"
) -> dg.ExecuteInProcessResult:
    return build_generate_image_job(retry_delay_s=0).execute_in_process(
        run_config={
            "ops": {"enrich_prompt": {"config": {"prompt": prompt, "width": 1344, "height": 768}}},
            "resources": {"imagen": {"config": {"config_path": str(config_file)}}},
        },
        instance=instance,
        raise_on_error=False,
    )


def test_generate_image_job_end_to_end_with_a_retried_server_error(
    fake: FakeOpenAI,
    key_env: None,
    write_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
) -> None:
    fake.replies.append(Reply(502, SERVER_ERROR))
    result = run_job(job_config(write_config, fake), dagster_instance)

    assert result.success, step_failure_text(result)
    first, second = fake.generations()
    assert first.json() == second.json()
    assert second.json()["size"] == "1536x1024"
    assert second.json()["prompt"].startswith("a lighthouse")
    assert second.headers["authorization"] == f"Bearer {KEY}"
    stored = result.output_for_node("write_files")
    with Image.open(stored.image_path) as image:
        assert (image.format, image.size) == ("PNG", (1536, 1024))
    sidecar_text = Path(stored.sidecar_path).read_text(encoding="utf-8")
    sidecar = json.loads(sidecar_text)
    assert sidecar["backend"] == {"instance": "oai", "type": "openai"}
    assert sidecar["result"]["seed"] is None
    usage = sidecar["result"]["extra"]["usage"]
    assert usage["output_tokens"] == 1568
    assert sidecar["result"]["cost_usd"] == round(
        (usage["input_tokens_details"]["text_tokens"] * 5 + 1568 * 40) / 1_000_000, 6
    )
    logs = "\n".join(
        str(record.user_message) for record in dagster_instance.all_logs(result.run_id)
    )
    assert "transient failure on attempt 1" in logs
    assert_no_key(sidecar_text, logs)


def test_generate_image_job_fails_once_on_a_content_policy_refusal(
    fake: FakeOpenAI,
    key_env: None,
    write_config: Callable[..., Path],
    dagster_instance: dg.DagsterInstance,
) -> None:
    result = run_job(job_config(write_config, fake), dagster_instance, prompt=BLOCKED_WORD)
    assert not result.success
    failure = step_failure_text(result)
    assert "backend 'oai' (openai): OpenAI images (400, moderation_blocked)" in failure
    assert "Your request was rejected by the safety system" in failure
    assert len(fake.generations()) == 1, "permanent: not retried"
