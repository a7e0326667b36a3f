"""The endpoint client: token bucket, circuit breaker, backoff, Retry-After, and the client against a
local fake endpoint (no broker): retries, give-ups, concurrency, and the API key kept out of logs."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
import structlog
from fakes.openai_server import FakeOpenAI

from streamer.bridge.llm import (
    MAX_RETRY_AFTER_S,
    CircuitBreaker,
    CircuitOpen,
    CircuitState,
    ClientOptions,
    LLMClient,
    LLMRejected,
    LLMUnavailable,
    MalformedCompletion,
    TokenBucket,
    backoff_delay,
    retry_after_s,
    safe_url,
)
from streamer.bridge.schema import answer_schema
from streamer.settings import Settings

KEY = "sk-test-4f9c2a7e1b8d6035"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --- token bucket -----------------------------------------------------------------------------------


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(2.0, 3, clock=clock)
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.5)  # one token every 0.5 s
    clock.advance(0.25)
    assert bucket.take() == pytest.approx(0.25)  # a failed take spends nothing
    clock.advance(0.25)
    assert bucket.take() == 0.0
    clock.advance(100)  # a long idle time saves up no more than the capacity
    assert [bucket.take() for _ in range(4)][:3] == [0.0, 0.0, 0.0]
    assert bucket.take() > 0


def test_token_bucket_rate_over_time_and_zero_means_unlimited() -> None:
    clock = FakeClock()
    bucket = TokenBucket(5.0, 1, clock=clock)
    granted = 0
    for _ in range(1000):  # 10 s in 10 ms steps
        if bucket.take() == 0.0:
            granted += 1
        clock.advance(0.01)
    assert 49 <= granted <= 51
    assert all(TokenBucket(0, 1, clock=clock).take() == 0.0 for _ in range(100))
    with pytest.raises(ValueError):
        TokenBucket(-1, 1)


async def test_token_bucket_acquire_waits() -> None:
    bucket = TokenBucket(20.0, 1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(4):
        await bucket.acquire()
    assert loop.time() - started >= 0.14  # 3 waits of 50 ms, minus timer slack


# --- circuit breaker --------------------------------------------------------------------------------


def test_breaker_opens_after_consecutive_failures_only() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(3, 10.0, clock=clock)
    for _ in range(2):
        breaker.before_call()
        breaker.record_failure()
    breaker.before_call()
    breaker.record_success()  # a success resets the count
    for _ in range(2):
        breaker.before_call()
        breaker.record_failure()
    assert breaker.state is CircuitState.CLOSED
    breaker.before_call()
    breaker.record_failure()
    assert breaker.state is CircuitState.OPEN
    with pytest.raises(CircuitOpen) as refused:
        breaker.before_call()
    assert refused.value.retry_after_s == pytest.approx(10.0)


def test_breaker_half_open_lets_one_probe_through_and_closes_on_success() -> None:
    clock = FakeClock()
    changes: list[CircuitState] = []
    breaker = CircuitBreaker(1, 5.0, clock=clock)
    breaker.on_change = changes.append
    breaker.before_call()
    breaker.record_failure()
    clock.advance(4.9)
    with pytest.raises(CircuitOpen) as refused:
        breaker.before_call()
    assert refused.value.retry_after_s == pytest.approx(0.1)
    clock.advance(0.1)
    assert breaker.state is CircuitState.HALF_OPEN
    breaker.before_call()  # the probe
    with pytest.raises(CircuitOpen):
        breaker.before_call()  # others wait for its verdict
    breaker.record_success()
    assert breaker.state is CircuitState.CLOSED
    breaker.before_call()
    assert changes == [CircuitState.OPEN, CircuitState.HALF_OPEN, CircuitState.CLOSED]


def test_breaker_failed_probe_reopens_for_a_full_cool_down() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(2, 5.0, clock=clock)
    for _ in range(2):
        breaker.before_call()
        breaker.record_failure()
    clock.advance(5.0)
    breaker.before_call()
    breaker.record_failure()  # one failed probe is enough, whatever the threshold
    assert breaker.state is CircuitState.OPEN
    clock.advance(4.0)
    assert breaker.state is CircuitState.OPEN
    clock.advance(1.0)
    assert breaker.state is CircuitState.HALF_OPEN


def test_breaker_probe_released_without_verdict() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(1, 1.0, clock=clock)
    breaker.before_call()
    breaker.record_failure()
    clock.advance(1.0)
    breaker.before_call()
    breaker.release_probe()  # e.g. the probing task was cancelled
    breaker.before_call()  # another probe may go


# --- backoff and Retry-After ------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", range(12))
def test_backoff_stays_within_equal_jitter_bounds(attempt: int) -> None:
    rng = random.Random(attempt)
    cap = min(8.0, 0.5 * 2**attempt)
    delays = [backoff_delay(attempt, 0.5, 8.0, rng) for _ in range(500)]
    assert all(cap / 2 <= d <= cap for d in delays)
    assert max(delays) - min(delays) > cap / 4  # really jittered, not a constant


def test_backoff_grows_then_caps() -> None:
    rng = random.Random(1)
    means = [sum(backoff_delay(a, 0.1, 2.0, rng) for _ in range(200)) / 200 for a in range(8)]
    assert means[0] < means[1] < means[2] < means[3] < means[4]
    assert means[6] == pytest.approx(means[7], rel=0.15)  # both at the 2.0 s cap
    assert backoff_delay(10_000, 0.1, 2.0, rng) <= 2.0  # no overflow on absurd attempt counts


def test_retry_after_forms() -> None:
    now = datetime(2026, 11, 28, 9, 0, tzinfo=timezone.utc)
    assert retry_after_s({"Retry-After": "3"}) == 3.0
    assert retry_after_s({"Retry-After": "1.5"}) == 1.5
    assert retry_after_s({"retry-after-ms": "250"}) == 0.25
    http_date = format_datetime(now + timedelta(seconds=7), usegmt=True)
    assert retry_after_s({"Retry-After": http_date}, now=now) == pytest.approx(7.0)
    assert retry_after_s({"Retry-After": "99999"}) == MAX_RETRY_AFTER_S
    assert retry_after_s({"Retry-After": "-4"}) == 0.0
    assert retry_after_s({"Retry-After": "soon"}) is None
    assert retry_after_s({"Retry-After": "inf"}) == MAX_RETRY_AFTER_S
    # NaN parses as a float but orders with nothing: a deadline of NaN would never come, or come at once
    assert retry_after_s({"Retry-After": "nan"}) is None
    assert retry_after_s({"retry-after-ms": "NaN", "Retry-After": "2"}) == 2.0
    assert retry_after_s({}) is None


def test_safe_url_drops_credentials_and_query() -> None:
    assert safe_url("https://user:pw@api.example.com:8443/v1?key=abc#x") == "https://api.example.com:8443/v1"


# --- the client against a fake endpoint -------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI(api_key=KEY).up()
    yield server
    server.close()


MESSAGES = [{"role": "system", "content": "answer in JSON"}, {"role": "user", "content": "- refund_request: 0.41\nhi"}]


def options(fake: FakeOpenAI, **overrides: object) -> ClientOptions:
    base: dict[str, object] = {
        "base_url": fake.base_url,
        "model": "big-model",
        "api_key": KEY,
        "timeout_s": 2.0,
        "max_concurrency": 2,
        "rate_per_s": 0,
        "max_retries": 3,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.05,
        "circuit_failures": 100,
        "circuit_reset_s": 1.0,
    }
    base.update(overrides)
    return ClientOptions(**base)  # type: ignore[arg-type]


class SleepRecorder:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


async def test_answer_usage_and_request_shape(fake: FakeOpenAI) -> None:
    async with LLMClient(options(fake)) as client:
        completion = await client.complete(MESSAGES)
    assert '"intent":"refund_request"' in completion.content
    assert completion.model == "big-model"
    assert completion.prompt_tokens > 0 and completion.completion_tokens > 0
    assert completion.attempts == 1
    [seen] = fake.requests
    assert seen.headers["Authorization"] == f"Bearer {KEY}"
    assert seen.body["response_format"] == {"type": "json_object"}  # no schema given: any JSON object
    assert seen.body["model"] == "big-model" and seen.body["messages"] == MESSAGES


@pytest.mark.parametrize("status", [400, 500])
async def test_the_answer_schema_is_asked_for_and_a_refusal_lowers_the_level(fake: FakeOpenAI, status: int) -> None:
    schema = answer_schema(["refund_request", "card_arrival"], ["high", "normal"])
    async with LLMClient(options(fake)) as client:
        await client.complete(MESSAGES, schema=schema)
        sent = fake.requests[-1].body["response_format"]
        assert sent["type"] == "json_schema" and sent["json_schema"]["schema"] == schema
        assert sent["json_schema"]["schema"]["properties"]["intent"]["enum"] == [
            "refund_request",
            "card_arrival",
            "other",
        ]

        fake.refuse_schema = status  # 500: llama-cpp-python wraps its request validation so
        with pytest.raises(LLMRejected) as refused:
            await client.complete(MESSAGES, schema=schema)
        assert len(fake.requests) == 2  # a refusal, not an outage: no retries
        assert client.refuses_structured(refused.value, "json_schema") and client.structured == "json_object"
        # a request sent together with the refused one, refused in turn, does not lower the level again
        assert client.refuses_structured(refused.value, "json_schema") and client.structured == "json_object"
        completion = await client.complete(MESSAGES, schema=schema)
        assert fake.requests[-1].body["response_format"] == {"type": "json_object", "schema": schema}
        assert '"intent"' in completion.content

        fake.fail_next(400)  # a refusal that does not name the format is about the request: no step down
        with pytest.raises(LLMRejected) as other:
            await client.complete(MESSAGES, schema=schema)
        assert not client.refuses_structured(other.value) and client.structured == "json_object"


async def test_response_format_none_sends_none(fake: FakeOpenAI) -> None:
    async with LLMClient(options(fake, response_format="none")) as client:
        await client.complete(MESSAGES, schema=answer_schema(["x"], ["low"]))
    assert "response_format" not in fake.requests[-1].body


async def test_429_with_retry_after_is_honoured(fake: FakeOpenAI) -> None:
    fake.fail_next(429, 2, Retry_After="0.8")
    sleeps = SleepRecorder()
    async with LLMClient(options(fake), sleep=sleeps) as client:
        completion = await client.complete(MESSAGES)
    assert completion.attempts == 3
    assert sleeps.delays == [0.8, 0.8]  # the server's wait, longer than the backoff


async def test_5xx_and_timeouts_are_retried_with_backoff(fake: FakeOpenAI) -> None:
    fake.fail_next(500)
    fake.fail_next(502)
    fake.fail_next(503)
    sleeps = SleepRecorder()
    async with LLMClient(options(fake, backoff_initial_s=0.1, backoff_max_s=10.0), sleep=sleeps) as client:
        completion = await client.complete(MESSAGES)
    assert completion.attempts == 4
    assert [0.05 <= sleeps.delays[0] <= 0.1, 0.1 <= sleeps.delays[1] <= 0.2, 0.2 <= sleeps.delays[2] <= 0.4] == [
        True
    ] * 3

    fake.hang_s = 0.5
    async with LLMClient(options(fake, timeout_s=0.2, max_retries=1)) as client:
        with pytest.raises(LLMUnavailable) as failed:
            await client.complete(MESSAGES)
    assert failed.value.last_outcome == "timeout"


async def test_retries_exhausted_raise_unavailable(fake: FakeOpenAI) -> None:
    fake.fail_next(500, 10)
    async with LLMClient(options(fake, max_retries=2)) as client:
        with pytest.raises(LLMUnavailable) as failed:
            await client.complete(MESSAGES)
    assert fake.count() == 3
    assert failed.value.last_outcome == "http_5xx"
    assert "HTTP 500" in str(failed.value)


async def test_4xx_is_not_retried(fake: FakeOpenAI) -> None:
    fake.fail_next(400)
    async with LLMClient(options(fake)) as client:
        with pytest.raises(LLMRejected) as rejected:
            await client.complete(MESSAGES)
        assert rejected.value.status == 400
        assert client.breaker.state is CircuitState.CLOSED
    assert fake.count() == 1


async def test_non_completion_body_is_malformed(fake: FakeOpenAI) -> None:
    async def weird(request: object) -> object:
        from aiohttp import web

        return web.json_response({"choices": []})

    fake._handle = weird  # type: ignore[assignment,method-assign]
    fake.down()
    fake.up()
    async with LLMClient(options(fake)) as client:
        with pytest.raises(MalformedCompletion) as bad:
            await client.complete(MESSAGES)
    assert bad.value.body == '{"choices": []}'


async def test_open_circuit_refuses_without_calling(fake: FakeOpenAI) -> None:
    fake.fail_next(503, 3)
    async with LLMClient(options(fake, circuit_failures=3, max_retries=5, circuit_reset_s=30)) as client:
        with pytest.raises(CircuitOpen):
            await client.complete(MESSAGES)
        assert fake.count() == 3  # the fourth attempt was refused by the breaker, not sent
        with pytest.raises(CircuitOpen) as refused:
            await client.complete(MESSAGES)
        assert fake.count() == 3
        assert 29 < refused.value.retry_after_s <= 30


async def test_dead_endpoint_then_recovery_through_half_open(fake: FakeOpenAI) -> None:
    fake.down()
    async with LLMClient(options(fake, circuit_failures=2, circuit_reset_s=0.3, max_retries=1)) as client:
        with pytest.raises(LLMUnavailable):
            await client.complete(MESSAGES)
        assert client.breaker.state is CircuitState.OPEN
        fake.up()
        await asyncio.sleep(0.35)
        assert client.breaker.state is CircuitState.HALF_OPEN
        completion = await client.complete(MESSAGES)
        assert completion.content
        assert client.breaker.state is CircuitState.CLOSED


async def test_concurrency_is_bounded(fake: FakeOpenAI) -> None:
    fake.hang_s = 0.2
    active = 0
    peak = 0
    original = fake._handle

    async def counting(request: object) -> object:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        try:
            return await original(request)  # type: ignore[arg-type]
        finally:
            active -= 1

    fake._handle = counting  # type: ignore[assignment,method-assign]
    fake.down()
    fake.up()
    async with LLMClient(options(fake, max_concurrency=3)) as client:
        await asyncio.gather(*(client.complete(MESSAGES) for _ in range(9)))
    assert peak == 3


async def test_api_key_never_logged_nor_in_errors(fake: FakeOpenAI) -> None:
    wrong = "sk-wrong-77aa66bb55cc44dd"
    with structlog.testing.capture_logs() as logs:
        async with LLMClient(options(fake, api_key=wrong, max_retries=1, circuit_failures=2)) as client:
            with pytest.raises(LLMUnavailable) as failed:
                await client.complete(MESSAGES)
            assert fake.requests[0].headers["Authorization"] == f"Bearer {wrong}"  # it was sent
            assert wrong not in repr(client.options)
        fake.down()  # connection errors too
        async with LLMClient(options(fake, api_key=wrong, max_retries=1, circuit_failures=50)) as client:
            with pytest.raises(LLMUnavailable) as refused:
                await client.complete(MESSAGES)
    assert "401" in str(failed.value)  # the endpoint echoed the key in its error body; it is scrubbed
    text = repr(logs) + str(failed.value) + repr(failed.value) + str(refused.value)
    assert wrong not in text
    assert "***" in str(failed.value)

    settings = Settings(llm_api_key=wrong)  # type: ignore[arg-type]
    assert wrong not in repr(settings) and wrong not in str(settings)
    assert ClientOptions.from_settings(settings).api_key == wrong


async def test_a_200_with_an_html_page_is_an_outage_retried_not_a_bad_answer(fake: FakeOpenAI) -> None:
    fake.page_next(2)
    async with LLMClient(options(fake, circuit_failures=5)) as client:
        completion = await client.complete(MESSAGES)
        sample = client.metrics.registry.get_sample_value
        assert sample("streamer_llm_requests_total", {"outcome": "not_json"}) == 2
    assert completion.attempts == 3 and '"intent"' in completion.content
    fake.page_next(10)
    async with LLMClient(options(fake, max_retries=2, circuit_failures=3)) as client:
        with pytest.raises(LLMUnavailable) as failed:
            await client.complete(MESSAGES)
        assert client.breaker.state is CircuitState.OPEN  # a proxy page in place of the endpoint is an outage
    assert failed.value.last_outcome == "not_json" and "text/html" in str(failed.value)


async def test_429_is_rate_limiting_that_paces_every_request_and_never_opens_the_circuit(fake: FakeOpenAI) -> None:
    """Five 429s used to open the circuit for its 30 s cool-down: answers came long after Retry-After."""
    fake.fail_next(429, 4, Retry_After="0.3")
    opts = options(fake, circuit_failures=2, circuit_reset_s=30, max_retries=6)
    async with LLMClient(opts) as client:
        began = asyncio.get_running_loop().time()
        first = asyncio.create_task(client.complete(MESSAGES))
        sample = client.metrics.registry.get_sample_value
        while not sample("streamer_llm_requests_total", {"outcome": "rate_limited"}):  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # until the first 429 is back
        second = asyncio.create_task(client.complete(MESSAGES))  # told to wait too, though it got no 429
        answers = await asyncio.gather(first, second)
        elapsed = asyncio.get_running_loop().time() - began
        assert client.breaker.state is CircuitState.CLOSED
    assert all('"intent"' in a.content for a in answers)
    assert 0.6 <= elapsed < 5.0  # waits of 0.3 s (two requests at a time), not a 30 s cool-down
    assert fake.count(429) == 4
    after_first_429 = next(r.at for r in fake.requests if r.status == 429) + 0.25
    assert all(r.at >= after_first_429 for r in fake.requests[1:])
