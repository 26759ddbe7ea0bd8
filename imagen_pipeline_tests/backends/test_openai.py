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
import httpx
import pytest
from PIL import Image

from imagen_pipeline.backends.contract import GenerationContext, GenerationRequest
from imagen_pipeline.backends.openai import OpenAIImagesBackend
from imagen_pipeline.backends.pricing import Price
from imagen_pipeline.backends.registry import build_backend
from imagen_pipeline.defs.jobs import build_generate_image_job
from imagen_pipeline.errors import (
    ConfigError,
    InvalidRequestError,
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
from imagen_pipeline_tests.fixtures.imagen import file_resources, step_failure_text

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


# -- requests ------------------------------------------------------------------------------

GPT_IMAGE_2_PRICES = {"gpt-image-2": {"text_input": 5.0, "image_input": 8.0, "image_output": 30.0}}
"""Test prices (not OpenAI's: no built-in price ships for gpt-image-2)."""


def test_gpt_image_2_request_sends_key_and_body_and_decodes_the_png(
    fake: FakeOpenAI, key_env: None, logs: pytest.LogCaptureFixture
) -> None:
    adapter = backend(
        fake,
        quality="medium",
        background="opaque",
        moderation="low",
        token_prices=GPT_IMAGE_2_PRICES,
    )
    result = adapter.generate(
        request(width=1344, height=768, seed=7, steps=30, negative="blurry"), context()
    )

    (post,) = fake.generations()
    assert post.headers["authorization"] == f"Bearer {KEY}"
    assert post.headers["content-type"] == "application/json"
    assert "openai-organization" not in post.headers
    assert post.json() == {
        "model": "gpt-image-2",
        "prompt": PROMPT,
        "n": 1,
        "size": "1344x768",
        "quality": "medium",
        "background": "opaque",
        "moderation": "low",
    }
    image = decoded(result.image)
    assert (image.format, image.size) == ("PNG", (1344, 768))
    meta = result.metadata
    assert (meta.model, meta.seed, meta.steps) == ("gpt-image-2", None, None)
    text_tokens = -(-len(PROMPT) // 4)
    output_tokens = meta.extra["usage"]["output_tokens"]
    assert meta.extra["usage"] == {
        "input_tokens": text_tokens,
        "input_tokens_details": {"image_tokens": 0, "text_tokens": text_tokens},
        "output_tokens": output_tokens,
        "total_tokens": text_tokens + output_tokens,
    }
    assert meta.cost_usd == round((text_tokens * 5 + output_tokens * 30) / 1_000_000, 6)
    assert meta.price_source == "config"
    assert meta.price_note == "token prices from backends.oai.token_prices.gpt-image-2 x usage"
    assert (meta.extra["size"], meta.extra["requested_size"]) == ("1344x768", "1344x768")
    assert meta.extra["request_id"].startswith("req_")
    assert "take no seed, steps, negative prompt; ignored" in logs.text
    assert_no_key(logs.text, meta.model_dump_json())


@pytest.mark.parametrize(
    ("size", "sent"),
    [
        ((512, 512), "816x816"),
        ((1000, 1000), "1008x1008"),
        ((4000, 1000), "3456x1152"),
        ((8000, 8000), "2880x2880"),
        ((100, 3000), "480x1440"),
    ],
)
def test_a_size_that_breaks_a_rule_is_sent_as_the_closest_allowed_one(
    fake: FakeOpenAI,
    key_env: None,
    logs: pytest.LogCaptureFixture,
    size: tuple[int, int],
    sent: str,
) -> None:
    result = backend(fake).generate(request(width=size[0], height=size[1]), context())
    assert sent_body(fake)["size"] == sent
    assert decoded(result.image).size == tuple(int(side) for side in sent.split("x"))
    assert f"{size[0]}x{size[1]} breaks a size rule" in logs.text
    assert f"sending size {sent}" in logs.text


def test_webp_output_with_compression_organization_and_project_headers(
    fake: FakeOpenAI, key_env: None
) -> None:
    adapter = backend(
        fake,
        model="gpt-image-2-2026-04-21",
        family="gpt-image-2",
        output_format="webp",
        output_compression=80,
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
        "gpt-image-2-2026-04-21",
        "1024x1536",
        "webp",
        80,
    )
    assert decoded(result.image).format == "WEBP"


def test_backend_opts_override_config_per_request(fake: FakeOpenAI, key_env: None) -> None:
    adapter = backend(fake, quality="low")
    result = adapter.generate(
        request(width=1344, height=768, backend_opts={"quality": "high"}),
        context(),
    )
    body = sent_body(fake)
    assert (body["quality"], body["size"]) == ("high", "1344x768")
    assert result.metadata.extra["size"] == "1344x768", "the size the API reports"


def test_the_fake_refuses_what_the_adapter_refuses(fake: FakeOpenAI, key_env: None) -> None:
    """The rules checked before a request are the server's: sent anyway, each is a 400 (or,
    for a retired model, a 404) from the fake."""
    cases = [
        ({"size": "1000x1000"}, 400, "multiples of 16"),
        ({"size": "3840x960"}, 400, "3:1"),
        ({"size": "4096x1024"}, 400, "at most 3840"),
        ({"size": "512x512"}, 400, "between 655360 and 8294400"),
        ({"background": "transparent"}, 400, "Transparent background is not supported"),
        ({"model": "gpt-image-1"}, 404, "has been deprecated"),
    ]
    for fields, status, message in cases:
        fake.replies.clear()
        body = {"model": "gpt-image-2", "prompt": PROMPT, **fields}
        response = httpx.post(
            f"{fake.base_url}/images/generations",
            json=body,
            headers={"Authorization": f"Bearer {KEY}"},
        )
        assert (response.status_code, message in response.text) == (status, True), fields


# -- validation before any request ------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param(
            {"model": "gpt-image-1"},
            r"backends\.oai\.model: Value error, gpt-image-1 was shut down by OpenAI on "
            r"2026-10-23; use gpt-image-2 instead \(got 'gpt-image-1'\)$",
            id="retired-gpt-image-1",
        ),
        pytest.param(
            {"model": "dall-e-3"},
            r"dall-e-3 was shut down by OpenAI on 2026-05-12; use gpt-image-2 instead",
            id="retired-dall-e-3",
        ),
        pytest.param(
            {"model": "gpt-image-1.5-2025-12-16"},
            r"gpt-image-1\.5-2025-12-16 \(a snapshot of gpt-image-1\.5\) was shut down by "
            r"OpenAI on 2026-12-01; use gpt-image-2 instead",
            id="retired-snapshot",
        ),
        pytest.param(
            {"model": "chatgpt-image-latest"},
            r"chatgpt-image-latest was shut down by OpenAI on 2026-12-01",
            id="retired-chatgpt-image-latest",
        ),
        pytest.param(
            {"quality": "hd"},
            r"backends\.oai\.quality: Value error, 'hd' is not offered by gpt-image-2; "
            r"allowed values: low, medium, high, auto",
            id="quality",
        ),
        pytest.param(
            {"background": "transparent"},
            r"backends\.oai\.background: Value error, 'transparent' is refused: gpt-image-2 no "
            r"longer renders transparent backgrounds \(withdrawn by OpenAI on 2026-09-30\); "
            r"allowed values: opaque, auto",
            id="transparent",
        ),
        pytest.param(
            {"output_format": "gif"},
            r"output_format: Value error, 'gif' is not offered by gpt-image-2; allowed values: "
            r"png, jpeg, webp",
            id="output-format",
        ),
        pytest.param(
            {"moderation": "strict"},
            r"moderation: Value error, 'strict' is not offered by gpt-image-2; allowed values: "
            r"auto, low",
            id="moderation",
        ),
        pytest.param(
            {"output_compression": 101, "output_format": "jpeg"},
            r"output_compression: Value error, 101 is not an integer from 0 to 100",
            id="compression-range",
        ),
        pytest.param(
            {"output_compression": 50},
            r"output_compression: applies to output_format jpeg or webp only \(png is set\)",
            id="compression-png",
        ),
        pytest.param(
            {"model": "gpt-image-9"},
            r"backends\.oai\.family: Value error, cannot tell whose request rules model "
            r"'gpt-image-9' follows; set family: gpt-image-2",
            id="unknown-model",
        ),
        pytest.param(
            {"token_prices": {"gpt-image-2": {"text_input": 5}}},
            r"token_prices: Value error, gpt-image-2: needs exactly text_input, image_input, "
            r"image_output",
            id="token-prices",
        ),
    ],
)
def test_config_values_are_validated_against_the_models_rules(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        build_backend("oai", {"type": "openai", **fields})


@pytest.mark.parametrize(
    ("fields", "req", "message"),
    [
        pytest.param(
            {"size_policy": "exact"},
            {"width": 1000, "height": 1000},
            r"width x height: size 1000x1000: both edges must be multiples of 16 "
            r"\(size_policy: nearest sends the closest allowed size\)",
            id="exact-multiple-of-16",
        ),
        pytest.param(
            {"size_policy": "exact"},
            {"width": 512, "height": 512},
            r"size 512x512: 262,144 pixels; allowed 655,360 to 8,294,400",
            id="exact-pixels",
        ),
        pytest.param(
            {"size_policy": "exact"},
            {"width": 3840, "height": 1024},
            r"size 3840x1024: the aspect ratio may be at most 3:1",
            id="exact-ratio",
        ),
        pytest.param(
            {},
            {"backend_opts": {"size": "auto"}},
            r"backend_opts\.size: sets the image size, which only the request's width and "
            r"height fields may set",
            id="opts-size",
        ),
        pytest.param(
            {},
            {"prompt": "x" * 32001},
            r"prompt: 32001 characters; gpt-image-2 accepts at most 32000",
            id="prompt-length",
        ),
        pytest.param(
            {},
            {"backend_opts": {"style": "vivid"}},
            r"backend_opts\.style: not a parameter of gpt-image-2; parameters: background, "
            r"moderation, output_compression, output_format, quality, size, user",
            id="opts-unknown-parameter",
        ),
        pytest.param(
            {},
            {"backend_opts": {"response_format": "url"}},
            r"backend_opts\.response_format: not a parameter of gpt-image-2",
            id="opts-response-format",
        ),
        pytest.param(
            {},
            {"backend_opts": {"n": 4}},
            r"backend_opts\.n: sets how many images one call makes, which only the request's "
            r"count field may set",
            id="opts-n",
        ),
        pytest.param(
            {},
            {"backend_opts": {"background": "transparent"}},
            r"backend_opts\.background: 'transparent' is refused",
            id="opts-transparent",
        ),
        pytest.param(
            {"output_format": "png"},
            {"backend_opts": {"output_compression": 70}},
            r"output_compression: applies to output_format jpeg or webp only",
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
    with pytest.raises((PermanentBackendError, InvalidRequestError), match=message):
        adapter.estimate_price(request(**req))
    with pytest.raises((PermanentBackendError, InvalidRequestError), match=message) as raised:
        adapter.generate(request(**req), context())
    assert not raised.value.transient
    assert fake.received == []


# -- failure classification -------------------------------------------------------------------


def test_content_policy_refusals_are_permanent_with_the_api_message(
    fake: FakeOpenAI, key_env: None
) -> None:
    with pytest.raises(PermanentBackendError) as raised:
        backend(fake).generate(request(prompt=f"a {BLOCKED_WORD}"), context())
    assert type(raised.value) is PermanentBackendError
    text = str(raised.value)
    assert (
        "OpenAI images (400, moderation_blocked): rejected by OpenAI's safety system: "
        "Your request was rejected by the safety system" in text
    )
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
            r"\(403\): Your organization must be verified to use the model `gpt-image-2`",
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
    assert (probe.method, probe.path) == ("GET", "/v1/models/gpt-image-2")
    assert probe.headers["authorization"] == f"Bearer {KEY}"

    missing = backend(fake, model="gpt-image-2-2099-01-01").check()
    assert (missing.reachable, missing.credentials, missing.model_present) == (True, True, False)
    assert "The model 'gpt-image-2-2099-01-01' does not exist" in missing.detail

    fake.key = "sk-proj-another-key-0000"
    refused = backend(fake).check()
    assert (refused.reachable, refused.credentials) == (True, False)
    assert "Incorrect API key provided: sk-***" in refused.detail

    unreachable = backend(fake, base_url=f"http://127.0.0.1:{closed_port()}/v1").check()
    assert (unreachable.reachable, unreachable.credentials) == (False, None)
    for result in (ok, missing, refused, unreachable):
        assert_no_key(result.detail)


def test_estimates_come_from_the_size_quality_and_configured_token_prices() -> None:
    def estimate(size: tuple[int, int] = (1024, 1024), **fields: Any) -> Price:
        return OpenAIImagesBackend(**fields).estimate_price(
            request(prompt="x" * 40, width=size[0], height=size[1])
        )

    text = 10 * 5 / 1_000_000
    priced = {"token_prices": GPT_IMAGE_2_PRICES}
    low = estimate(quality="low", **priced)
    assert (low.usd, low.source) == (round(text + 273 * 30 / 1_000_000, 6), "config")
    medium = estimate((1536, 1024), quality="medium", **priced)
    assert medium.usd == round(text + 1589 * 30 / 1_000_000, 6)
    unset = estimate(**priced)
    assert unset.usd == round(text + 4163 * 30 / 1_000_000, 6), "unset quality: high"
    snapshot = estimate(model="gpt-image-2-2026-04-21", quality="low", **priced)
    assert snapshot.usd == low.usd, "a dated snapshot uses its model's prices"
    unknown = estimate()
    assert (unknown.usd, unknown.source) == (None, "unknown")
    assert unknown.note == (
        "no price known for gpt-image-2: set token_prices.gpt-image-2 (US dollars per 1M "
        "tokens: text_input, image_input, image_output)"
    )


def test_cost_comes_from_usage_and_an_unpriced_model_is_recorded_as_unknown(
    fake: FakeOpenAI, key_env: None, logs: pytest.LogCaptureFixture
) -> None:
    priced = backend(fake, quality="low", token_prices=GPT_IMAGE_2_PRICES)
    result = priced.generate(request(), context())
    text_tokens = -(-len(PROMPT) // 4)
    assert result.metadata.cost_usd == round((text_tokens * 5 + 273 * 30) / 1_000_000, 6)

    unpriced = backend(fake, quality="low").generate(request(), context())
    meta = unpriced.metadata
    assert (meta.cost_usd, meta.price_source) == (None, "unknown")
    assert "cost recorded as unknown: no price known for gpt-image-2: set " in logs.text
    assert "backends.oai.token_prices.gpt-image-2" in logs.text


def test_config_block_defaults_and_key_names() -> None:
    instance = build_backend("oai", {"type": "openai"})
    assert instance.credential_env_vars() == {"api_key_env": "OPENAI_API_KEY"}
    assert instance.backend.model_name() == "gpt-image-2"
    dated = build_backend("oai", {"type": "openai", "model": "gpt-image-2-2026-04-21"})
    assert isinstance(dated.backend, OpenAIImagesBackend)
    assert dated.backend.resolved_family() == "gpt-image-2"
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
                    "token_prices": GPT_IMAGE_2_PRICES,
                }
            },
        }
    )


def run_job(
    config_file: Path, instance: dg.DagsterInstance, prompt: str = "a lighthouse"
) -> dg.ExecuteInProcessResult:
    return build_generate_image_job(retry_delay_s=0).execute_in_process(
        run_config={
            "ops": {"enrich_prompt": {"config": {"prompt": prompt, "width": 1360, "height": 768}}},
            "resources": file_resources(config_file),
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
    assert second.json()["size"] == "1360x768"
    assert second.json()["prompt"].startswith("a lighthouse")
    assert second.headers["authorization"] == f"Bearer {KEY}"
    [stored] = result.output_for_node("write_files")
    with Image.open(stored.image_path) as image:
        assert (image.format, image.size) == ("PNG", (1360, 768))
    sidecar_text = Path(stored.sidecar_path).read_text(encoding="utf-8")
    sidecar = json.loads(sidecar_text)
    assert sidecar["backend"] == {"instance": "oai", "type": "openai", "options": {}}
    assert sidecar["result"]["seed"] is None
    usage = sidecar["result"]["extra"]["usage"]
    assert usage["output_tokens"] == 1055
    assert sidecar["result"]["cost_usd"] == round(
        (usage["input_tokens_details"]["text_tokens"] * 5 + 1055 * 30) / 1_000_000, 6
    )
    assert sidecar["result"]["price_source"] == "config"
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
