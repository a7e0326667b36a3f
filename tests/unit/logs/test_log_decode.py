"""Decoding log values: every text layout, shipper JSON, dead letters, and a decoder that never raises."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from streamer.events import DecodeFailure, DecodeLimits, RawEvent, Source, dead_letter
from streamer.logs.decode import SEVERITIES, LogRecord, decode_log, decode_logs, normalise_severity
from streamer.topics import SchemaRegistry

REPO = Path(__file__).resolve().parents[3]
REGISTRY = SchemaRegistry(REPO / "topics" / "schemas")
KAFKA_MS = int(datetime(2026, 11, 28, 10, 0, 5, tzinfo=timezone.utc).timestamp() * 1000)
SOURCE = Source("ops.logs.v1", 3, 1234, KAFKA_MS)
DLQ_CODES = {"oversize", "invalid_utf8", "invalid_json", "not_an_object", "schema"}


def ms(y: int, mo: int, d: int, h: int, mi: int, s: int, milli: int = 0) -> int:
    return int(datetime(y, mo, d, h, mi, s, tzinfo=timezone.utc).timestamp() * 1000) + milli


def decode(value: bytes | str | None, key: bytes | None = b"checkout-api", source: Source = SOURCE) -> LogRecord:
    raw = value.encode() if isinstance(value, str) else value
    out = decode_log(RawEvent(raw, source, key))
    assert isinstance(out, LogRecord), out
    return out


def fail(value: bytes | None, limits: DecodeLimits | None = None) -> DecodeFailure:
    out = decode_log(RawEvent(value, SOURCE, b"k"), limits)
    assert isinstance(out, DecodeFailure), out
    return out


# -- text layouts -----------------------------------------------------------------------------------


@pytest.mark.parametrize("thread", ["main", "pool-1-thread-3", "nio-8080-exec-1", "Gossip:1", "worker@7"])
def test_a_bracket_that_reads_as_a_thread_is_not_the_service(thread: str) -> None:
    r = decode(f"2026-11-28T10:00:00Z ERROR [{thread}] charge failed for order 42", key=b"billing")
    assert (r.service, r.fields.get("thread"), r.message) == ("billing", thread, "charge failed for order 42")


def test_iso_timestamp_level_and_service_in_brackets() -> None:
    r = decode("2026-11-28T10:00:00Z ERROR [payments] charge failed for order 42")
    assert (r.severity, r.level, r.service, r.message) == ("error", "ERROR", "payments", "charge failed for order 42")
    assert r.time_ms == ms(2026, 11, 28, 10, 0, 0)
    assert r.timestamp == "2026-11-28T10:00:00.000Z"
    assert r.id == "ops.logs.v1:3:1234"


def test_log4j_layout_keeps_the_logger_and_takes_the_service_from_the_key() -> None:
    r = decode("2026-11-28 10:00:00,123 WARN  org.foo.Bar - pool almost exhausted")
    assert (r.severity, r.service, r.message) == ("warning", "checkout-api", "pool almost exhausted")
    assert r.fields == {"logger": "org.foo.Bar"}
    assert r.time_ms == ms(2026, 11, 28, 10, 0, 0, 123)


def test_logback_layout_with_thread_and_offset() -> None:
    r = decode("2026-11-28T11:00:00.5+01:00 [main] INFO  com.shop.App - started in 3.2 s")
    assert r.severity == "info"
    assert r.fields == {"thread": "main", "logger": "com.shop.App"}
    assert r.time_ms == ms(2026, 11, 28, 10, 0, 0, 500)


def test_postgres_layout() -> None:
    r = decode(
        '2026-11-28 10:00:00.123 UTC [4242] ERROR:  duplicate key value violates unique constraint "orders_pkey"'
    )
    assert r.severity == "error"
    assert r.message.startswith("duplicate key value")
    assert r.fields["thread"] == "4242"


def test_syslog_rfc3164_takes_the_year_from_the_kafka_timestamp() -> None:
    r = decode("Nov 28 09:59:58 bastion-1 sshd[123]: Failed password for root from 10.0.0.1 port 22 ssh2")
    assert r.service == "sshd"
    assert r.fields == {"host": "bastion-1", "pid": 123}
    assert r.time_ms == ms(2026, 11, 28, 9, 59, 58)
    assert r.message == "Failed password for root from 10.0.0.1 port 22 ssh2"
    assert r.severity == "warning"  # no level: inferred from "Failed"


def test_syslog_priority_gives_the_severity() -> None:
    r = decode("<11>Nov 28 10:00:00 app-1 billing[7]: sync stopped")  # facility 1, severity 3 (error)
    assert r.severity == "error"
    assert r.fields["facility"] == 1


def test_syslog_written_on_new_years_eve_and_read_on_new_years_day() -> None:
    jan = Source("ops.logs.v1", 0, 1, ms(2027, 1, 1, 0, 0, 2))
    r = decode("Dec 31 23:59:59 host cron[1]: job done", source=jan)
    assert r.time_ms == ms(2026, 12, 31, 23, 59, 59)


def test_syslog_rfc5424_with_structured_data() -> None:
    r = decode(
        '<165>1 2026-11-28T10:00:00.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" '
        'eventSource="Application"] An application event'
    )
    assert (r.service, r.severity, r.message) == ("evntslog", "notice", "An application event")
    assert r.fields["structured_data"] == {"exampleSDID@32473": {"iut": "3", "eventSource": "Application"}}
    assert r.time_ms == ms(2026, 11, 28, 10, 0, 0, 3)


def test_klog_layout() -> None:
    r = decode("E1128 10:00:00.123456       1 reflector.go:138] Failed to watch *v1.Pod: connection refused")
    assert r.severity == "error"
    assert r.fields == {"pid": 1, "src": "reflector.go:138"}
    assert r.time_ms == ms(2026, 11, 28, 10, 0, 0, 123)


def test_nginx_error_log() -> None:
    r = decode("2026/11/28 10:00:00 [error] 7#7: *31 upstream timed out (110: Connection timed out)", key=None)
    assert (r.severity, r.service) == ("error", "unknown")
    assert r.message.startswith("upstream timed out")
    assert r.fields == {"pid": 7, "tid": 7, "connection": 31}


@pytest.mark.parametrize(("status", "severity"), [(200, "info"), (404, "warning"), (502, "error")])
def test_access_log_severity_follows_the_status(status: int, severity: str) -> None:
    line = f'10.1.2.3 - - [28/Nov/2026:11:00:00 +0100] "GET /cart HTTP/1.1" {status} 157 "-" "curl/8.0"'
    r = decode(line)
    assert r.severity == severity
    assert r.fields["http_status"] == status
    assert r.time_ms == ms(2026, 11, 28, 10, 0, 0)
    assert r.message == line


@pytest.mark.parametrize(
    ("line", "severity", "message"),
    [
        ("ERROR something broke", "error", "something broke"),
        ("[WARN] disk at 91%", "warning", "disk at 91%"),
        ("fatal: repository not found", "critical", "repository not found"),
        ("[main] INFO com.x.Y - ready", "info", "[main] INFO com.x.Y - ready"),
        ("java.lang.OutOfMemoryError: Java heap space", "error", "java.lang.OutOfMemoryError: Java heap space"),
        ("connection refused by upstream", "warning", "connection refused by upstream"),
        ("cache warmed", "unknown", "cache warmed"),
    ],
)
def test_bare_lines(line: str, severity: str, message: str) -> None:
    r = decode(line)
    assert (r.severity, r.message) == (severity, message)
    assert r.time_ms == KAFKA_MS  # no timestamp in the line: the Kafka timestamp


def test_multi_line_stack_trace_stays_one_record() -> None:
    text = (
        "2026-11-28T10:00:00Z ERROR [checkout] Failed to price cart\n"
        "java.lang.NullPointerException: discount is null\n"
        "\tat com.shop.pricing.PriceCalculator.total(PriceCalculator.java:42)\n"
    )
    r = decode(text)
    assert r.message == (
        "Failed to price cart\njava.lang.NullPointerException: discount is null\n"
        "\tat com.shop.pricing.PriceCalculator.total(PriceCalculator.java:42)"
    )


# -- JSON from shippers -----------------------------------------------------------------------------


def test_vector_style_json() -> None:
    doc = {
        "timestamp": "2026-11-28T10:00:00.250Z",
        "level": "WARN",
        "service": "auth-service",
        "message": "Login failed for user u-1",
        "host": "pod-1",
        "trace_id": "abc",
    }
    r = decode(orjson.dumps(doc))
    assert (r.service, r.severity, r.message) == ("auth-service", "warning", "Login failed for user u-1")
    assert r.fields == {"host": "pod-1", "trace_id": "abc"}
    assert r.time_ms == ms(2026, 11, 28, 10, 0, 0, 250)


def test_ecs_style_json() -> None:
    doc = {
        "@timestamp": "2026-11-28T10:00:00Z",
        "log.level": "error",
        "service": {"name": "orders"},
        "msg": "could not persist order",
        "id": "evt-9",
    }
    r = decode(orjson.dumps(doc))
    assert (r.id, r.service, r.severity, r.message) == ("evt-9", "orders", "error", "could not persist order")


def test_pino_numeric_level_epoch_millis_and_app_key() -> None:
    r = decode(orjson.dumps({"time": ms(2026, 11, 28, 10, 0, 0), "level": 50, "app": "web", "msg": "boom"}))
    assert (r.severity, r.service, r.time_ms) == ("error", "web", ms(2026, 11, 28, 10, 0, 0))


def test_nested_log_level_and_kubernetes_app_label() -> None:
    doc = {"log": {"level": "warning"}, "message": "slow query", "kubernetes": {"labels": {"app": "db-proxy"}}}
    r = decode(orjson.dumps(doc), key=None)
    assert (r.severity, r.service) == ("warning", "db-proxy")


def test_fluent_bit_wrapped_line_is_parsed_inside() -> None:
    doc = {"log": "2026-11-28T10:00:00Z ERROR [svc] inner failure\n", "stream": "stderr"}
    r = decode(orjson.dumps(doc))
    assert (r.severity, r.service, r.message) == ("error", "svc", "inner failure")
    assert r.fields == {"stream": "stderr"}
    assert r.time_ms == ms(2026, 11, 28, 10, 0, 0)


def test_byte_order_mark_is_ignored() -> None:
    assert decode("\ufeff" + '{"message": "hi", "level": "info"}').severity == "info"
    assert decode("\ufeffERROR boom").severity == "error"


def test_service_falls_back_to_the_key_then_unknown() -> None:
    assert decode(orjson.dumps({"message": "x"}), key=b"billing").service == "billing"
    assert decode(orjson.dumps({"message": "x"}), key=None).service == "unknown"


@pytest.mark.parametrize(
    ("level", "severity"),
    [("TRACE", "trace"), ("dbg", "debug"), ("Information", "info"), ("notice", "notice"), ("WARNING", "warning"),
     ("err", "error"), ("SEVERE", "error"), ("FATAL", "critical"), ("emerg", "critical"), (4, "warning"),
     (60, "critical"), ("3", "error"), ("verbose", "trace"), ("nonsense", None), (True, None)],
)  # fmt: skip
def test_normalise_severity(level: object, severity: str | None) -> None:
    assert normalise_severity(level) == severity


# -- dead letters -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "code", "field"),
    [
        (b"\xff\xfeERROR boom", "invalid_utf8", None),
        (b'{"message": "unterminated', "invalid_json", None),
        (b'{"level": "error", "service": "x"}', "schema", "message"),
        (b'{"message": {"text": "nested"}}', "schema", "message"),
        (b'{"msg": 42}', "schema", "msg"),
        (b'{"message": "   "}', "schema", "message"),
        (b"", "schema", "message"),
        (b"  \n", "schema", "message"),
        (None, "not_an_object", None),
    ],
)
def test_dead_letters(value: bytes | None, code: str, field: str | None) -> None:
    f = fail(value)
    assert (f.code, f.field) == (code, field)
    record = dead_letter(f, "2026-11-28T10:00:00Z")
    assert REGISTRY.errors("deadletter.v1.json", record) == []


def test_oversize_is_a_dead_letter() -> None:
    f = fail(b"x" * 101, DecodeLimits(max_event_bytes=100))
    assert f.code == "oversize"


def test_invalid_utf8_keeps_the_bytes_in_base64() -> None:
    record = dead_letter(fail(b"\xc3\x28 bad"), "2026-11-28T10:00:00Z")
    assert record["raw"]["encoding"] == "base64"


def test_text_that_looks_like_a_json_array_is_a_text_line() -> None:
    assert decode("[INFO] started").severity == "info"


def test_decode_logs_splits_records_and_failures_in_order() -> None:
    raws = [RawEvent(v, SOURCE, None) for v in (b"INFO a", b"\xff", b"ERROR b")]
    records, failures = decode_logs(raws)
    assert [r.message for r in records] == ["a", "b"]
    assert [f.code for f in failures] == ["invalid_utf8"]


def test_a_decoder_error_on_one_record_dead_letters_that_record(monkeypatch: pytest.MonkeyPatch) -> None:
    import streamer.logs.decode as decoding

    real = decoding.decode_log

    def flawed(raw: RawEvent, *args: object) -> LogRecord | DecodeFailure:
        if raw.value == b"WARN poison":
            raise IndexError("a decoder bug")
        return real(raw)

    monkeypatch.setattr(decoding, "decode_log", flawed)
    raws = [RawEvent(v, SOURCE, None) for v in (b"INFO a", b"WARN poison", b"ERROR b")]
    records, failures = decode_logs(raws)
    assert [r.message for r in records] == ["a", "b"]
    assert [(f.code, f.raw.value, f.message) for f in failures] == [
        ("processing_failed", b"WARN poison", "decoding failed: IndexError: a decoder bug")
    ]


# -- properties -------------------------------------------------------------------------------------

_HEADS = st.sampled_from(
    ["", "2026-11-28T10:00:00Z ", "<34>Nov 28 10:00:00 h p[1]: ", "<165>1 - - - - - - ", "E1128 10:00:00.1 1 a] ",
     "2026/11/28 10:00:00 [error] 1#1: ", '1.2.3.4 - - [28/Nov/2026:10:00:00 +0000] "GET / HTTP/1.1" 200 ', "{", "[",
     "ERROR ", '{"message": '],
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(head=_HEADS, body=st.text(max_size=200), raw=st.binary(max_size=200), kafka=st.none() | st.integers(0, 2**45))
def test_decode_never_raises(head: str, body: str, raw: bytes, kafka: int | None) -> None:
    source = Source("ops.logs.v1", 0, 0, kafka)
    for value in ((head + body).encode("utf-8", "surrogatepass"), raw, head.encode() + raw):
        out = decode_log(RawEvent(value, source, None))
        if isinstance(out, LogRecord):
            assert out.severity in SEVERITIES
            assert out.service
            assert out.message.strip()
        else:
            assert out.code in DLQ_CODES


_JSON_KEYS = st.sampled_from(
    ["level", "severity", "log.level", "PRIORITY", "timestamp", "@timestamp", "time", "ts", "__REALTIME_TIMESTAMP",
     "service", "logger", "kubernetes", "log", "id", "host"],
)  # fmt: skip
# What str.isdigit() holds for: superscripts and other scripts' digits too, which int() and float() refuse.
_REFUSED_DIGIT = st.characters(categories=("No",)).filter(str.isdigit)  # superscripts, circled digits...
_ANY_DIGITS = st.text(st.characters(categories=("Nd", "No")).filter(str.isdigit), min_size=1, max_size=20)
_JSON_LEAVES = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30) | st.from_regex(r"\A\d{1,20}(\.\d{0,10})?\Z")
    | _ANY_DIGITS
)  # fmt: skip
_JSON_VALUES = st.recursive(
    _JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["name", "level", "labels", "app", "container_name"]), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=400, deadline=None)
@given(
    message=st.tuples(st.sampled_from(["message", "msg", "log", "MESSAGE"]), st.text(min_size=1, max_size=40)),
    doc=st.dictionaries(_JSON_KEYS, _JSON_VALUES, max_size=5),
    kafka=st.none() | st.integers(0, 2**45),
)
def test_decode_never_raises_on_any_json_field_value(
    message: tuple[str, str], doc: dict[str, object], kafka: int | None
) -> None:
    # Shippers write times, levels and names in every type; none of them may stop the worker.
    doc.setdefault(*message)
    out = decode_log(RawEvent(orjson.dumps(doc), Source("ops.logs.v1", 0, 0, kafka), None))
    if isinstance(out, LogRecord):
        assert out.severity in SEVERITIES
        assert out.message.strip()
    else:
        assert out.code in DLQ_CODES


@settings(max_examples=200, deadline=None)
@given(key=st.sampled_from(["level", "severity", "PRIORITY", "timestamp", "time", "ts"]), value=_ANY_DIGITS)
def test_digits_of_any_script_in_a_level_or_time_are_a_record(key: str, value: str) -> None:
    r = decode(orjson.dumps({"message": "disk full", key: value}))
    assert r.severity in SEVERITIES
    assert r.time_ms is not None


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("1795860001", ms(2026, 11, 28, 10, 0, 1)),
        ("1795860001.5", ms(2026, 11, 28, 10, 0, 1, 500)),
        ("1795860001250", ms(2026, 11, 28, 10, 0, 1, 250)),
        (" 2026-11-28T10:00:01Z ", ms(2026, 11, 28, 10, 0, 1)),
        ("5", KAFKA_MS),  # not a plausible instant: the Kafka timestamp stands in
        ("²", KAFKA_MS),
    ],
)
def test_json_time_text_reads_like_logfmt(ts: str, expected: int) -> None:
    assert decode(orjson.dumps({"message": "disk full", "ts": ts})).time_ms == expected
    assert decode(f"ts={ts.strip()} level=info msg=disk").time_ms == expected


@pytest.mark.parametrize("ts", [2.6e20, 1e300])
def test_a_time_past_year_9999_gives_way_to_the_kafka_timestamp(ts: object) -> None:
    assert decode(orjson.dumps({"message": "disk full", "ts": ts})).time_ms == KAFKA_MS


def test_a_kafka_timestamp_past_year_9999_is_no_time() -> None:
    far = Source("ops.logs.v1", 0, 7, 2**62)
    assert decode(b"disk full", source=far).time_ms is None
    assert decode(b"Nov 28 10:00:00 host sshd[1]: disk full", source=far).time_ms is None


_HEADER_LINES = [
    "2026-11-28T10:00:00Z ERROR [payments] charge failed for order 42",
    "2026-11-28 10:00:00,123 WARN  org.foo.Bar - pool almost exhausted",
    "2026-11-28T11:00:00.5+01:00 [main] INFO  com.shop.App - started in 3.2 s",
    "Nov 28 09:59:58 bastion-1 sshd[123]: Failed password for root from 10.0.0.1 port 22 ssh2",
    "<11>Nov 28 10:00:00 app-1 billing[7]: sync stopped",
    '<165>1 2026-11-28T10:00:00.003Z host app 77 ID47 [exampleSDID@32473 iut="3"] started',
    "E1128 10:00:00.123456       1 reflector.go:138] Failed to watch *v1.Pod: connection refused",
    "2026/11/28 10:00:00 [error] 7#7: *31 upstream timed out (110: Connection timed out)",
    '10.0.0.1 - - [28/Nov/2026:10:00:00 +0000] "GET /a HTTP/1.1" 502 17 "-" "curl/8.0"',
    "11-28 10:00:01.123  4242  4301 W PowerManager: wake lock held by uid=1000",
    "261128 100001 77 INFO storage.BlockServer$Writer: stored block 12 of 40",
    "[Sat Nov 28 10:00:01 2026] [warn] [client 192.0.2.4] file does not exist: /srv/x",
    "[Sat Nov 28 10:00:01 2026] [notice] [pid 42:tid 7] child started",
    "- 1795860001 2026.11.28 R01-M0-N1 2026-11-28-10.00.01.123456 R01-M0-N1 RAS KERNEL FATAL data TLB error",
    "I, [2026-11-28T10:00:00.123 #4242]  INFO -- : job 9 done",
    "2026-11-28 10:00:01.123  INFO 4242 --- [main] o.s.b.App : started in 3.2 s",
    "ts=1795860001.5 level=warn msg=slow",
    "2026-11-28 10:00:01.123 4242 ERROR app.api.server [req-7 - -] GET /v2 status: 500",
]


@settings(max_examples=300, deadline=None)
@given(
    line=st.sampled_from(_HEADER_LINES),
    digits=st.lists(st.tuples(st.integers(0, 200), _REFUSED_DIGIT | st.characters(categories=("Nd",))), min_size=1),
)
@example(line="I, [2026-11-28T10:00:00.123 #4242]  INFO -- : job 9 done", digits=[(17, "\u00b2")])  # Ruby's pid
def test_other_scripts_digits_in_any_header_are_read_or_left_in_the_message(
    line: str, digits: list[tuple[int, str]]
) -> None:
    # Each layout's numbers (times, pids, levels, statuses) written with digits that int() may refuse.
    places = [i for i, ch in enumerate(line) if ch in "0123456789"]
    chars = list(line)
    for at, digit in digits:
        chars[places[at % len(places)]] = digit
    out = decode_log(RawEvent("".join(chars).encode(), SOURCE, b"svc"))
    assert isinstance(out, LogRecord)
    assert out.message.strip()
