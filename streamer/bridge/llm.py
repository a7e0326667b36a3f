"""A client for OpenAI-compatible chat completions that protects the endpoint and itself.

Large-model endpoints fail in ordinary ways: they rate-limit (429), fall over (5xx), hang (timeouts) or
disappear. The client answers each with the usual remedy: a token bucket keeps the request rate under
the provider's quota, a semaphore bounds requests in flight, retries back off exponentially with jitter
(so many clients do not retry in lock-step) and honour ``Retry-After``, and a circuit breaker stops
calling an endpoint that keeps failing and probes it again after a cool-down, so a dead endpoint costs
one request per cool-down instead of a storm.

A 429 is rate limiting, not a failure: it never counts towards opening the circuit, and its Retry-After
holds back every request of the client, not only the one that got it. A 200 whose body is not JSON (an
HTML page from a proxy in front of the endpoint) is an outage to retry, not an answer to dead-letter.

The API key is sent as a bearer token and appears nowhere else: not in logs, not in exception messages
(the ``repr`` of some aiohttp errors carries the request headers, so only their text is used), and anything
the endpoint echoes back is scrubbed of it.
"""

from __future__ import annotations

import asyncio
import email.utils
import enum
import math
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import orjson
import structlog

from streamer.bridge.metrics import BridgeMetrics
from streamer.bridge.schema import LEVELS, response_format
from streamer.settings import Settings

log = structlog.get_logger(__name__)

Clock = Callable[[], float]

#: Statuses worth retrying: timeouts, conflicts while a deployment settles, rate limits, server errors.
RETRY_STATUSES = frozenset({408, 409, 425, 429})
#: Statuses that say the endpoint or its configuration is wrong, not this request: like an outage, they
#: count against the circuit and the request waits instead of being given up.
ENDPOINT_STATUSES = frozenset({401, 403, 404})
#: How a refusal of structured output reads (OpenAI, vLLM, llama.cpp, LiteLLM name the parameter or the type).
_NAMES_FORMAT = re.compile(r"response_format|json_schema|json_object|structured output|grammar", re.IGNORECASE)
#: A Retry-After longer than this is treated as garbage and capped.
MAX_RETRY_AFTER_S = 300.0


class LLMError(Exception):
    """Base of the client's errors; messages never contain the API key."""


class LLMUnavailable(LLMError):
    """The endpoint cannot answer now (retries exhausted, or the circuit is open); try again later.

    ``retry_after_s`` is when trying again makes sense; ``last_outcome`` is how the last attempt failed
    (``rate_limited``, ``http_5xx``, ``timeout``, ``connection``, ``circuit_open``...); ``attempts`` is how
    many requests this call sent before giving up.
    """

    def __init__(self, message: str, retry_after_s: float, last_outcome: str = "", attempts: int = 0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.last_outcome = last_outcome
        self.attempts = attempts


class CircuitOpen(LLMUnavailable):
    """The circuit breaker refused the call without sending it."""


class LLMRejected(LLMError):
    """The endpoint refused this request for good (400, 413, 422...): retrying the same request is futile."""

    def __init__(self, message: str, status: int, body: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class MalformedCompletion(LLMError):
    """A 200 response whose body is not a chat completion with a message; ``body`` is what came."""

    def __init__(self, message: str, body: str) -> None:
        super().__init__(message)
        self.body = body


# --- rate limit ------------------------------------------------------------------------------------


class TokenBucket:
    """``rate_per_s`` tokens a second, at most ``capacity`` saved up; a request spends one.

    ``rate_per_s == 0`` disables the limit. ``take`` is the pure core (tested with a fake clock);
    ``acquire`` waits for a token.
    """

    def __init__(self, rate_per_s: float, capacity: float, *, clock: Clock = time.monotonic) -> None:
        if rate_per_s < 0 or capacity < 1:
            raise ValueError("rate_per_s must be >= 0 and capacity >= 1")
        self.rate = rate_per_s
        self.capacity = capacity
        self._clock = clock
        self._tokens = capacity
        self._updated = clock()

    def take(self) -> float:
        """Spend a token and return 0.0, or return the seconds until one will be there (nothing spent)."""
        if self.rate == 0:
            return 0.0
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens >= 1.0 - 1e-9:  # float sums of small refills fall just short of whole tokens
            self._tokens = max(self._tokens - 1.0, 0.0)
            return 0.0
        return (1.0 - self._tokens) / self.rate

    async def acquire(self) -> None:
        while True:
            wait = self.take()
            if wait <= 0:
                return
            await asyncio.sleep(wait)


# --- circuit breaker -------------------------------------------------------------------------------


class CircuitState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Closed: calls flow, consecutive failures are counted. ``failure_threshold`` of them open it.

    Open: calls are refused for ``reset_after_s``. Then half-open: one probe call goes through while the
    others are still refused; its success closes the circuit, its failure opens it for another cool-down.
    The breaker resumes on its own: nobody has to reset it.
    """

    def __init__(self, failure_threshold: int, reset_after_s: float, *, clock: Clock = time.monotonic) -> None:
        if failure_threshold < 1 or reset_after_s <= 0:
            raise ValueError("failure_threshold must be >= 1 and reset_after_s > 0")
        self.failure_threshold = failure_threshold
        self.reset_after_s = reset_after_s
        self._clock = clock
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False
        self.on_change: Callable[[CircuitState], None] | None = None

    @property
    def state(self) -> CircuitState:
        """The state now; an open circuit whose cool-down has passed reads as half-open."""
        if self._state is CircuitState.OPEN and self._clock() - self._opened_at >= self.reset_after_s:
            self._set(CircuitState.HALF_OPEN)
        return self._state

    def before_call(self) -> None:
        """Let a call through or raise ``CircuitOpen`` saying when to come back."""
        state = self.state
        if state is CircuitState.CLOSED:
            return
        if state is CircuitState.HALF_OPEN and not self._probe_in_flight:
            self._probe_in_flight = True
            return
        if state is CircuitState.OPEN:
            wait = self.reset_after_s - (self._clock() - self._opened_at)
        else:
            wait = min(1.0, self.reset_after_s)  # a probe is out; its outcome decides soon
        raise CircuitOpen(
            "circuit open: the endpoint failed repeatedly; calls paused",
            retry_after_s=max(wait, 0.0),
            last_outcome="circuit_open",
        )

    def record_success(self) -> None:
        self._failures = 0
        self._probe_in_flight = False
        if self._state is not CircuitState.CLOSED:
            self._set(CircuitState.CLOSED)

    def record_failure(self) -> None:
        self._failures += 1
        was_probe, self._probe_in_flight = self._probe_in_flight, False
        if was_probe or (self._state is CircuitState.CLOSED and self._failures >= self.failure_threshold):
            self._opened_at = self._clock()
            self._set(CircuitState.OPEN)

    def release_probe(self) -> None:
        """A probe that ended without a verdict (cancelled, or refused for its own sake) frees the slot."""
        self._probe_in_flight = False

    def _set(self, state: CircuitState) -> None:
        if state is not self._state:
            self._state = state
            if self.on_change is not None:
                self.on_change(state)


# --- backoff ---------------------------------------------------------------------------------------


def backoff_delay(attempt: int, initial_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Delay before retry ``attempt`` (0-based): "equal jitter" in ``[cap / 2, cap]``,
    ``cap = min(max_s, initial_s * 2 ** attempt)``.

    Half the delay is guaranteed (the endpoint gets its rest), the other half is random (clients that
    failed together do not retry together).
    """
    cap = min(max_s, initial_s * 2.0 ** min(attempt, 62))
    return (rng or random).uniform(cap / 2.0, cap)


def _bounded_wait(text: str | None, unit_s: float) -> float | None:
    """A count of ``unit_s`` as a wait in [0, ``MAX_RETRY_AFTER_S``] seconds; ``None`` when the text is no
    number, NaN included (a NaN deadline compares false with every time)."""
    try:
        seconds = float(text) * unit_s if text else math.nan
    except ValueError:
        return None
    return None if math.isnan(seconds) else min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def retry_after_s(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """The wait a response asks for: ``retry-after-ms``, or ``Retry-After`` in seconds or as an HTTP date."""
    wait = _bounded_wait(headers.get("retry-after-ms"), 0.001)
    if wait is not None:
        return wait
    raw = headers.get("Retry-After") or headers.get("retry-after")
    if not raw:
        return None
    wait = _bounded_wait(raw, 1.0)
    if wait is not None:
        return wait
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    delta = (when - (now or datetime.now(timezone.utc))).total_seconds()
    return min(max(delta, 0.0), MAX_RETRY_AFTER_S)


# --- the client ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Completion:
    """One answered request: the message text, token usage and what it cost to get."""

    content: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    attempts: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """How the client talks to the endpoint; ``from_settings`` maps the ``STREAMER_LLM_*`` settings."""

    base_url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 60.0
    max_concurrency: int = 4
    rate_per_s: float = 2.0
    max_tokens: int = 512
    response_format: str = "json_schema"
    max_retries: int = 5
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    circuit_failures: int = 5
    circuit_reset_s: float = 30.0

    def __repr__(self) -> str:  # the key must not print with the rest
        return f"ClientOptions(base_url={safe_url(self.base_url)!r}, model={self.model!r}, api_key=***)"

    @classmethod
    def from_settings(cls, settings: Settings) -> ClientOptions:
        key = settings.llm_api_key.get_secret_value() if settings.llm_api_key is not None else None
        return cls(
            base_url=settings.llm_base_url,
            model=settings.llm_model,
            api_key=key or None,
            timeout_s=settings.llm_timeout_s,
            max_concurrency=settings.llm_max_concurrency,
            rate_per_s=settings.llm_rate_per_s,
            max_tokens=settings.llm_max_tokens,
            response_format=settings.llm_response_format,
            max_retries=settings.llm_max_retries,
            backoff_initial_s=settings.llm_backoff_initial_s,
            backoff_max_s=settings.llm_backoff_max_s,
            circuit_failures=settings.llm_circuit_failures,
            circuit_reset_s=settings.llm_circuit_reset_s,
        )


def safe_url(url: str) -> str:
    """``url`` without user info, query or fragment: what may appear in logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class _Retryable(Exception):
    """One failed attempt worth another; ``wait_s`` is the server's Retry-After, if it gave one."""

    def __init__(self, reason: str, outcome: str, wait_s: float | None = None) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.wait_s = wait_s


class LLMClient:
    """``complete(messages)`` against ``<base_url>/chat/completions`` with every protection above.

    Use it as an async context manager (it owns an aiohttp session); one client serves all requests of
    a process, so the semaphore, the bucket and the breaker see all of them.
    """

    def __init__(
        self,
        options: ClientOptions,
        *,
        rng: random.Random | None = None,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], Any] = asyncio.sleep,
        metrics: BridgeMetrics | None = None,
    ) -> None:
        self.options = options
        self.metrics = metrics if metrics is not None else BridgeMetrics()
        self.url = options.base_url.rstrip("/") + "/chat/completions"
        self.breaker = CircuitBreaker(options.circuit_failures, options.circuit_reset_s, clock=clock)
        self.breaker.on_change = self._circuit_changed
        self.bucket = TokenBucket(options.rate_per_s, max(1.0, float(options.max_concurrency)), clock=clock)
        self._semaphore = asyncio.Semaphore(options.max_concurrency)
        self._rng = rng or random.Random()
        self._clock = clock
        self._sleep = sleep
        self._session: aiohttp.ClientSession | None = None
        #: No new request before this time (``clock``): a 429's Retry-After holds back every request, not
        #: only the one that got it.
        self._not_before = 0.0
        #: Answers received so far (a caller compares it before and after a failure: did others get through?)
        self.successes = 0
        #: Structured output asked for now (``schema.LEVELS``); lowered when the endpoint refuses it.
        self.structured = options.response_format
        self.metrics.circuit_state.set(0)

    async def __aenter__(self) -> LLMClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        if self._session is None:
            headers = {"Content-Type": "application/json", "Accept": "application/json"}
            if self.options.api_key:
                headers["Authorization"] = f"Bearer {self.options.api_key}"
            self._session = aiohttp.ClientSession(
                headers=headers, timeout=aiohttp.ClientTimeout(total=self.options.timeout_s)
            )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def refuses_structured(self, exc: LLMRejected, asked: str | None = None) -> bool:
        """Whether ``exc`` is the endpoint refusing the structured output asked for (an error naming it);
        if so, ask one level lower from now on and return True: the request is worth repeating.

        ``asked`` is the level the request went with (``self.structured`` when it was sent): requests in
        flight together are refused together, and only the first of them lowers the level.
        """
        asked = self.structured if asked is None else asked
        if asked == LEVELS[-1] or not _NAMES_FORMAT.search(exc.body):
            return False
        if asked != self.structured:
            return True  # lowered already, by another request's refusal
        lower = LEVELS[LEVELS.index(self.structured) + 1] if self.structured in LEVELS else LEVELS[-1]
        log.warning("the endpoint refused the structured output asked for; asking less", was=self.structured, now=lower)
        self.structured = lower
        return True

    def scrub(self, text: str) -> str:
        """``text`` with every occurrence of the API key masked, for anything that may be logged or stored."""
        key = self.options.api_key
        if key:
            text = text.replace(key, "***")
        return text

    async def complete(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        json_answer: bool = True,
        request_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        schema: dict[str, Any] | None = None,
    ) -> Completion:
        """Send one chat request; return the answer, or raise ``LLMUnavailable`` / ``LLMRejected`` /
        ``MalformedCompletion``. Retries happen here; waiting out an open circuit is the caller's choice.
        ``headers`` go with every attempt (the trace context). With ``json_answer``, the request asks for
        ``schema`` (or any JSON object) as ``self.structured`` says."""
        body: dict[str, Any] = {
            "model": self.options.model,
            "messages": list(messages),
            "temperature": 0,
            "max_tokens": self.options.max_tokens,
        }
        fmt = response_format(self.structured, schema) if json_answer else None
        if fmt is not None:
            body["response_format"] = fmt
        payload = orjson.dumps(body)
        last, outcome = "no attempt made", ""
        wait_hint: float | None = None
        for attempt in range(self.options.max_retries + 1):
            pause = self._not_before - self._clock()
            if not attempt and pause > 0:  # another request was told to wait; so is this one
                await self._sleep(pause)
            if attempt:
                delay = backoff_delay(
                    attempt - 1, self.options.backoff_initial_s, self.options.backoff_max_s, self._rng
                )
                if wait_hint is not None:
                    delay = max(delay, wait_hint)
                self.metrics.retries.inc()
                log.info(
                    "retrying large-model request", id=request_id, attempt=attempt, delay_s=round(delay, 3), reason=last
                )
                await self._sleep(delay)
            try:
                self.breaker.before_call()
            except CircuitOpen as exc:  # the caller waits it out
                exc.attempts = attempt
                raise
            try:
                return await self._attempt(payload, attempt + 1, headers)
            except _Retryable as exc:
                if exc.outcome == "rate_limited":
                    # The endpoint is up and asks us to slow down: pace, but do not count it as a failure
                    # (five 429s used to open the circuit for its whole cool-down, far past Retry-After).
                    self.breaker.release_probe()
                    if exc.wait_s is not None:
                        self._not_before = max(self._not_before, self._clock() + exc.wait_s)
                else:
                    self.breaker.record_failure()
                self.metrics.requests.labels(outcome=exc.outcome).inc()
                last, outcome, wait_hint = str(exc), exc.outcome, exc.wait_s
            except BaseException:
                self.breaker.release_probe()
                raise
        wait = max(wait_hint or 0.0, self.options.backoff_initial_s)
        raise LLMUnavailable(
            f"{self.options.max_retries + 1} attempts failed; last: {last}",
            retry_after_s=wait,
            last_outcome=outcome,
            attempts=self.options.max_retries + 1,
        )

    async def _attempt(self, payload: bytes, attempt: int, extra: Mapping[str, str] | None = None) -> Completion:
        if self._session is None:
            await self.start()
        session = self._session
        assert session is not None
        async with self._semaphore:
            await self.bucket.acquire()
            started = self._clock()
            try:
                async with session.post(self.url, data=payload, headers=extra) as response:
                    status = response.status
                    text = await response.text(errors="replace")
                    headers = response.headers
            except asyncio.TimeoutError:
                raise _Retryable(f"no answer within {self.options.timeout_s}s", "timeout") from None
            except (aiohttp.ClientError, OSError) as exc:
                # str() only: the repr of some aiohttp errors includes the request headers, key and all
                raise _Retryable(self.scrub(f"{type(exc).__name__}: {exc}"), "connection") from None
            latency = self._clock() - started
        self.metrics.request_seconds.observe(latency)
        snippet = self.scrub(text[:300])
        if status == 200:
            try:
                doc = orjson.loads(text)
            except orjson.JSONDecodeError:
                # Not an API answer at all (a proxy's or gateway's error page sent as 200): the endpoint
                # was not reached, so this is an outage to retry, not a bad answer to dead-letter.
                kind = headers.get("Content-Type", "no content type").split(";")[0].strip()
                raise _Retryable(f"HTTP 200 with a body that is not JSON ({kind}): {snippet}", "not_json") from None
            return self._completion(doc, text, latency, attempt)
        if status != 429 and b'"response_format"' in payload and _NAMES_FORMAT.search(text):
            # The endpoint refuses the structured output asked for: a 400 or 422, or a 500 from servers that
            # wrap request validation (llama-cpp-python). Not an outage: the caller may ask with less.
            self.breaker.record_success()
            self.metrics.requests.labels(outcome="rejected").inc()
            raise LLMRejected(f"HTTP {status}: {snippet}", status, self.scrub(text))
        if status in RETRY_STATUSES or status >= 500:
            outcome = "rate_limited" if status == 429 else f"http_{status // 100}xx"
            raise _Retryable(f"HTTP {status}: {snippet}", outcome, retry_after_s(headers))
        if status in ENDPOINT_STATUSES:
            log.error("the endpoint refuses the bridge's requests; check its URL, model and key", status=status)
            raise _Retryable(f"HTTP {status}: {snippet}", f"http_{status}")
        self.breaker.record_success()  # the endpoint works; it dislikes this request
        self.metrics.requests.labels(outcome="rejected").inc()
        raise LLMRejected(f"HTTP {status}: {snippet}", status, self.scrub(text))

    def _completion(self, doc: Any, text: str, latency: float, attempt: int) -> Completion:
        self.breaker.record_success()
        try:
            message = doc["choices"][0]["message"]
            content = message.get("content")
            if not isinstance(content, str):
                raise TypeError("message content is not a string")
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            self.metrics.requests.labels(outcome="malformed").inc()
            raise MalformedCompletion(f"not a chat completion: {exc}", self.scrub(text)) from None
        usage = doc.get("usage") if isinstance(doc.get("usage"), dict) else {}
        prompt_tokens = _int(usage.get("prompt_tokens"))
        completion_tokens = _int(usage.get("completion_tokens"))
        self.successes += 1
        self.metrics.requests.labels(outcome="ok").inc()
        self.metrics.tokens.labels(kind="prompt").inc(prompt_tokens)
        self.metrics.tokens.labels(kind="completion").inc(completion_tokens)
        return Completion(
            content=content,
            model=str(doc.get("model") or self.options.model),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            latency_s=latency,
            attempts=attempt,
        )

    def _circuit_changed(self, state: CircuitState) -> None:
        self.metrics.circuit_state.set({CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1, CircuitState.OPEN: 2}[state])
        log.warning("large-model circuit " + state.value, endpoint=safe_url(self.options.base_url))


def _int(value: object) -> int:
    return value if isinstance(value, int) and value >= 0 else 0
