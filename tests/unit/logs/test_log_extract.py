"""Entities of log lines: stack traces, error codes, HTTP status, ids, IPs; and what gets mined."""

from __future__ import annotations

import pytest

from streamer.logs.extract import exception_type, extract_log_entities, ip_entities
from streamer.logs.triage import headline

JAVA = (
    "Could not persist order ORD-1\n"
    "org.springframework.dao.DataAccessResourceFailureException: Unable to acquire JDBC Connection\n"
    "\tat com.shop.orders.OrderRepository.save(OrderRepository.java:88)\n"
    "\tat com.shop.orders.OrderService.place(OrderService.java:41)\n"
    "Caused by: java.sql.SQLTransientConnectionException: HikariPool-1 - Connection is not available\n"
    "\tat com.zaxxer.hikari.pool.HikariPool.getConnection(HikariPool.java:181)\n"
    "\t... 12 more"
)
PYTHON = (
    "Traceback (most recent call last):\n"
    '  File "/app/worker.py", line 10, in main\n'
    "    run()\n"
    '  File "/app/lib/jobs.py", line 3, in run\n'
    "    raise ValueError('bad input')\n"
    "ValueError: bad input"
)
NODE = (
    "TypeError: Cannot read properties of undefined (reading 'id')\n"
    "    at handler (/srv/app/routes/orders.js:42:17)\n"
    "    at Layer.handle (/srv/node_modules/express/lib/router/layer.js:95:5)"
)
GO = (
    "panic: runtime error: invalid memory address or nil pointer dereference\n"
    "[signal SIGSEGV: segmentation violation]\n\n"
    "goroutine 1 [running]:\n"
    "main.(*Server).handle(0x0)\n"
    "\t/src/server.go:57 +0x1d\n"
)


def test_java_trace_with_cause() -> None:
    e = extract_log_entities(JAVA)
    assert e["exception_types"] == [
        "org.springframework.dao.DataAccessResourceFailureException",
        "java.sql.SQLTransientConnectionException",
    ]
    assert e["exception_message"] == "Unable to acquire JDBC Connection"
    assert e["top_frame"] == "com.shop.orders.OrderRepository.save(OrderRepository.java:88)"


def test_python_traceback_reports_the_innermost_frame() -> None:
    e = extract_log_entities(PYTHON)
    assert e["exception_types"] == ["ValueError"]
    assert e["exception_message"] == "bad input"
    assert e["top_frame"] == "/app/lib/jobs.py:3 in run"


def test_node_stack() -> None:
    e = extract_log_entities(NODE)
    assert e["exception_types"] == ["TypeError"]
    assert e["top_frame"] == "handler (/srv/app/routes/orders.js:42:17)"


def test_go_panic() -> None:
    e = extract_log_entities(GO)
    assert e["exception_types"][0] == "panic"
    assert e["top_frame"] == "main.(*Server).handle /src/server.go:57"


@pytest.mark.parametrize(
    ("message", "codes"),
    [
        ("ORA-00001: unique constraint violated", ["ORA-00001"]),
        ("SQLSTATE[23505]: duplicate key", ["23505"]),
        ("dial tcp: connect: ECONNREFUSED and later ETIMEDOUT", ["ECONNREFUSED", "ETIMEDOUT"]),
        ("connect() failed (111: Connection refused) while connecting", ["111"]),
        ("rpc error: code = NotFound desc = manifest unknown", ["NotFound"]),
        ("request failed errno=104", ["104"]),
        ("got ERR_CONNECTION_RESET from proxy", ["ERR_CONNECTION_RESET"]),
        ("all good", None),
    ],
)
def test_error_codes(message: str, codes: list[str] | None) -> None:
    assert extract_log_entities(message).get("error_codes") == codes


@pytest.mark.parametrize(
    ("message", "status"),
    [
        ('"GET /cart HTTP/1.1" 502 157', 502),
        ("Readiness probe failed: HTTP probe failed with statuscode: 503", 503),
        ("upstream returned 404 for /x", 404),
        ("status=429 retry later", 429),
        ("took 200 ms", None),
    ],
)
def test_http_status(message: str, status: int | None) -> None:
    assert extract_log_entities(message).get("http_status") == status


def test_ids_from_text() -> None:
    e = extract_log_entities(
        "request_id=req-7f3a trace_id=4bf92f3577b34da6a3ce929d0e0e4736 user_id=[EMAIL_1] tenant_id=acme-eu "
        "X-Request-Id: ignored-because-first-wins"
    )
    assert e["request_id"] == "req-7f3a"
    assert e["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert e["user_id"] == "[EMAIL_1]"
    assert e["tenant_id"] == "acme-eu"


def test_w3c_traceparent() -> None:
    e = extract_log_entities("outgoing traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    assert (e["trace_id"], e["span_id"]) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")


def test_ids_and_status_from_fields_with_personal_values_redacted() -> None:
    fields = {"traceId": "abc123", "user_id": "bob@example.com", "tenant_id": "t-9", "status_code": "503"}
    e = extract_log_entities("payment failed", fields)
    assert e["trace_id"] == "abc123"
    assert e["user_id"] == "[EMAIL]"  # by kind: the message's own [EMAIL_1] may be put back by the policy
    assert e["tenant_id"] == "t-9"
    assert e["http_status"] == 503


def test_internal_ips_are_listed_public_ones_only_counted() -> None:
    e = ip_entities("from 10.0.4.17 via 127.0.0.1 to 8.8.8.8 and 2001:4860:4860::8888, again 10.0.4.17, v1.2.3")
    assert e == {"ips": ["10.0.4.17", "127.0.0.1"], "public_ips": 2}
    assert ip_entities("no addresses here") == {}


def test_exception_type_of_a_record() -> None:
    assert exception_type(JAVA) == "org.springframework.dao.DataAccessResourceFailureException"
    assert exception_type(PYTHON) == "ValueError"
    assert exception_type("a plain line") is None


def test_headline_groups_tracebacks_by_what_was_thrown() -> None:
    assert headline(PYTHON) == "Traceback (most recent call last): ValueError"
    assert headline(JAVA) == "Could not persist order ORD-1 org.springframework.dao.DataAccessResourceFailureException"
    assert headline("just one line  ") == "just one line"
    assert headline("java.lang.OutOfMemoryError: Java heap space\n\tat x.Y.z(Y.java:1)") == (
        "java.lang.OutOfMemoryError: Java heap space"
    )
