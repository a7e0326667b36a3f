"""A local OpenAI-compatible ``/v1/chat/completions`` server for tests, scriptable from the test.

It runs its own event loop in a thread, so the bridge can be in the test's loop or in another process.
Answers are decided by the ticket text the prompt carries:

* ``want: LABEL`` anywhere in the text: the answer's intent is LABEL (default: the small model's first
  candidate, read from the prompt);
* ``MALFORMED``: the message content is prose, not JSON;
* ``SLOW``: the answer waits ``slow_s`` seconds first;
* ``reply_extra``: text added to every summary and suggested reply.

Failures are scripted with ``fail_next(status, count)`` (applied to the next requests, in order),
``page_next(count)`` (an HTML error page with status 200, as some proxies send),
``hang_s`` (every request waits), ``down()``/``up()`` (the port stops/starts listening), ``api_key``
(requests without that bearer token get a 401 that echoes what they sent, as real providers do) and
``refuse_schema`` (a status: a ``json_schema`` response format gets it, with the message of a server
that lacks it; llama-cpp-python answers 500).
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

_WANT = re.compile(r"want:\s*([A-Za-z0-9_\-]+)")
_CANDIDATE = re.compile(r"^- ([A-Za-z0-9_\-]+): [0-9.]+$", re.MULTILINE)


@dataclass
class Seen:
    """One request as the server received it."""

    at: float
    headers: dict[str, str]
    body: dict[str, Any]
    status: int = 0

    @property
    def user_text(self) -> str:
        return "\n".join(m["content"] for m in self.body.get("messages", []) if m.get("role") == "user")


@dataclass
class _Failure:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    page: str | None = None  # an HTML body instead of a JSON error


#: What a proxy in front of an endpoint sends when the endpoint is away (some send it with status 200).
PROXY_PAGE = "<!DOCTYPE html><html><head><title>Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"


class FakeOpenAI:
    def __init__(self, *, api_key: str | None = None) -> None:
        self.api_key = api_key
        self.hang_s = 0.0
        self.slow_s = 5.0
        #: Appended to every summary and suggested reply (e.g. personal data a model might invent).
        self.reply_extra = ""
        self.refuse_schema = 0
        self.requests: list[Seen] = []
        self._failures: deque[_Failure] = deque()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-openai", daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._thread.start()

    # --- control (from the test's thread) ----------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def up(self) -> FakeOpenAI:
        asyncio.run_coroutine_threadsafe(self._up(), self._loop).result(10)
        return self

    def down(self) -> None:
        asyncio.run_coroutine_threadsafe(self._down(), self._loop).result(10)

    def close(self) -> None:
        self.down()
        asyncio.run_coroutine_threadsafe(self._cancel_handlers(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _cancel_handlers(self) -> None:
        """Handlers still asleep (hung on purpose) end with the server instead of being destroyed pending."""
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def fail_next(self, status: int, count: int = 1, **headers: str) -> None:
        """The next ``count`` requests get ``status``; headers as keywords (``Retry_After="1"``)."""
        with self._lock:
            for _ in range(count):
                self._failures.append(_Failure(status, {k.replace("_", "-"): v for k, v in headers.items()}))

    def page_next(self, count: int = 1, status: int = 200) -> None:
        """The next ``count`` requests get a proxy's HTML error page, with ``status`` (200 by default)."""
        with self._lock:
            for _ in range(count):
                self._failures.append(_Failure(status, page=PROXY_PAGE))

    def count(self, status: int | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.requests if status is None or r.status == status)

    # --- server ------------------------------------------------------------------------------------

    async def _up(self) -> None:
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)  # hung handlers die
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        self.port = server.sockets[0].getsockname()[1]
        self._runner = runner

    async def _down(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        seen = Seen(time.monotonic(), dict(request.headers), body)
        with self._lock:
            self.requests.append(seen)
            failure = self._failures.popleft() if self._failures else None
        if self.hang_s:
            await asyncio.sleep(self.hang_s)
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            seen.status = 401
            sent = request.headers.get("Authorization", "")
            return web.json_response({"error": {"message": f"Incorrect API key provided: {sent}"}}, status=401)
        if failure is not None and failure.page is not None:
            seen.status = failure.status
            return web.Response(text=failure.page, status=failure.status, content_type="text/html")
        if self.refuse_schema and (body.get("response_format") or {}).get("type") == "json_schema":
            seen.status = self.refuse_schema
            message = "response_format type 'json_schema' is not supported"
            return web.json_response({"error": {"message": message}}, status=self.refuse_schema)
        if failure is not None:
            seen.status = failure.status
            return web.json_response(
                {"error": {"message": "scripted failure"}}, status=failure.status, headers=failure.headers
            )
        text = seen.user_text
        if "SLOW" in text:
            await asyncio.sleep(self.slow_s)
        want = _WANT.search(text)
        candidates = _CANDIDATE.findall(text)
        intent = want.group(1) if want else (candidates[0] if candidates else "other")
        if "MALFORMED" in text:
            content = f"Sure! This looks like {intent} to me."
        else:
            content = orjson.dumps(
                {
                    "intent": intent,
                    "priority": "high" if "urgent" in text.lower() else "normal",
                    "summary": "The customer needs help with " + intent.replace("_", " ") + "." + self.reply_extra,
                    "suggested_reply": "Thanks for reaching out, we are on it." + self.reply_extra,
                }
            ).decode()
        seen.status = 200
        return web.json_response(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "model": body.get("model", "fake"),
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                ],
                "usage": {
                    "prompt_tokens": len(text.split()),
                    "completion_tokens": len(content.split()),
                    "total_tokens": len(text.split()) + len(content.split()),
                },
            }
        )
