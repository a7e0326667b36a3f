"""Header inference: common header shapes come off the message without a per-system format; layouts win."""

from __future__ import annotations

import pytest

from streamer.errors import ConfigError
from streamer.events import RawEvent, Source
from streamer.logs.decode import LogRecord, compile_layouts, decode_log
from streamer.settings import load_settings

SOURCE = Source("ops.logs.v1", 0, 7, 1_795_860_000_000)


def decode(line: str, key: bytes = b"svc", layouts: dict[str, str] | None = None) -> LogRecord:
    out = decode_log(RawEvent(line.encode(), SOURCE, key), None, compile_layouts(layouts or {}))
    assert isinstance(out, LogRecord), out
    return out


@pytest.mark.parametrize(
    ("line", "message", "severity", "fields"),
    [
        # month-day, time with millis, pid, tid, one-letter level, component
        (
            "11-28 10:00:01.123  4242  4301 W PowerManager: wake lock held by uid=1000",
            "wake lock held by uid=1000", "warning", {"pid": 4242, "tid": 4301, "component": "PowerManager"},
        ),
        # yymmdd hhmmss pid level component
        (
            "261128 100001 77 INFO storage.BlockServer$Writer: stored block 12 of 40",
            "stored block 12 of 40", "info", {"pid": 77, "component": "storage.BlockServer$Writer"},
        ),
        # yy/mm/dd time level component
        ("26/11/28 10:00:01 ERROR sched.Planner: no slot for task 9", "no slot for task 9", "error",
         {"component": "sched.Planner"}),
        # a bracketed timestamp and a bracketed level; what follows stays in the message
        ("[Sat Nov 28 10:00:01 2026] [warn] [client 192.0.2.4] file does not exist: /srv/x", "[client 192.0.2.4] "
         "file does not exist: /srv/x", "warning", {}),
        # ISO time, level, a thread with spaces, a dotted logger
        (
            "2026-11-28 10:00:01,123 INFO [IPC handler 3 on 8020] org.example.rpc.Server: call done",
            "call done", "info", {"thread": "IPC handler 3 on 8020", "component": "org.example.rpc.Server"},
        ),
        # a label, an epoch, dotted date, node names, upper-case tags, then the level
        (
            "- 1795860001 2026.11.28 R01-M0-N1 2026-11-28-10.00.01.123456 R01-M0-N1 RAS KERNEL FATAL data TLB error",
            "data TLB error", "critical", {},
        ),
        # a padded level column and a padded component column
        ("2026-11-28 10:00:01, Info                  CBS    Session 7 initialized", "Session 7 initialized", "info",
         {"component": "CBS"}),
        # syslog with a tag holding parentheses
        ("Nov 28 10:00:01 host1 su(pam_unix)[912]: session opened for user bob", "session opened for user bob",
         "unknown", {"host": "host1", "pid": 912}),
        # log4j ``%d - %-5p [%t] - %m``: a dash before the level and one after the thread
        ("2026-11-28 10:00:01,123 - WARN  [SendWorker:42:Sender@679] - Interrupted while waiting", "Interrupted "
         "while waiting", "warning", {"thread": "SendWorker:42:Sender@679"}),
        # Python services (oslo.log): ISO time, pid, level, dotted logger, request context kept in the message
        ("2026-11-28 10:00:01.123 4242 ERROR app.api.server [req-7 - -] GET /v2 status: 500", "[req-7 - -] GET /v2 "
         "status: 500", "error", {"pid": 4242, "component": "app.api.server"}),
        # syslog with an RFC 3339 time (rsyslog's precise format): host, then a tag with its pid
        ("2026-11-28T10:00:01.123+01:00 web-3 nginx[812]: worker process exited", "worker process exited",
         "unknown", {"component": "nginx[812]"}),
        # gunicorn: a bracketed time with a zone, a bracketed pid, a bracketed level
        ("[2026-11-28 10:00:01 +0000] [7] [INFO] Booting worker with pid: 7", "Booting worker with pid: 7", "info",
         {"thread": "7"}),
        # logback: time of day, thread, level, abbreviated logger and a dash
        ("10:00:01.123 [main] WARN  c.e.Service - slow call", "slow call", "warning",
         {"thread": "main", "component": "c.e.Service"}),
        # log4j with the logger's line number
        ("2026-11-28 10:00:01 INFO  org.example.Api:42 - request handled", "request handled", "info",
         {"logger": "org.example.Api:42"}),
        # a dotted name ending in Exception is what happened, not a logger column
        ("2026-11-28 10:00:01.5 77 ERROR java.lang.IllegalStateException - task 7", "java.lang.IllegalStateException"
         " - task 7", "error", {"pid": 77, "component": None}),
        # Python's ``%(asctime)s - %(name)s - %(levelname)s - %(message)s``
        ("2026-11-28 10:00:01,123 - app.db - ERROR - connection lost", "connection lost", "error",
         {"component": "app.db"}),
        # Spring Boot's console default: pid, dashes, thread, padded logger and `` : ``
        ("2026-11-28 10:00:01.123 ERROR 4242 --- [nio-8080-exec-1] o.a.c.c.C.[dispatcherServlet]     : "
         "Servlet.service() failed", "Servlet.service() failed", "error",
         {"pid": 4242, "thread": "nio-8080-exec-1", "component": "o.a.c.c.C.[dispatcherServlet]"}),
        # Ruby's Logger: severity letter, bracketed time and #pid, level, ``-- :``
        ('I, [2026-11-28T10:00:01.123456 #4242]  INFO -- : Started GET "/"', 'Started GET "/"', "info",
         {"pid": 4242}),
        # zap's console encoder: tab-separated time, level, caller, message
        ("2026-11-28T10:00:01.123Z\tWARN\tserver/main.go:42\tslow request", "slow request", "warning",
         {"src": "server/main.go:42"}),
        # Apache 2.4: ``[module:level]`` and ``[pid N:tid M]``; the client stays in the message
        ("[Sat Nov 28 10:00:01.123456 2026] [core:error] [pid 42:tid 7] [client 192.0.2.4:5] AH00124: limit",
         "[client 192.0.2.4:5] AH00124: limit", "error", {"module": "core"}),
        # .NET console: a lower-case short level and a colon
        ("fail: Orders.Api[0] payment declined", "Orders.Api[0] payment declined", "error", {}),
        # logfmt: the time and level pairs are the header, every other pair stays
        ('time="2026-11-28T10:00:01Z" level=error msg="pull failed" image=web', 'msg="pull failed" image=web',
         "error", {}),
        # log4j ``[%t]`` with a thread name that holds brackets of its own
        ("2026-11-28 10:00:01,123 - INFO  [Peer[myid=1]/10.0.0.7:2181:Election@774] - Notification timeout: 400",
         "Notification timeout: 400", "info", {"thread": "Peer[myid=1]/10.0.0.7:2181:Election@774"}),
        ("2026-11-28 10:00:01,123 INFO [Peer[myid=1]] election done", "election done", "info",
         {"thread": "Peer[myid=1]"}),
        # Monolog (PHP): a bracketed time, then ``channel.LEVEL:``
        ("[2026-11-28 10:00:01] billing.ERROR: Undefined index: user", "Undefined index: user", "error",
         {"component": "billing"}),
        # Elasticsearch: bracketed time, padded level and logger glued together, the node stays in the message
        ("[2026-11-28T10:00:01,123][WARN ][o.e.c.DiskMonitor   ] [node-1] high disk watermark",
         "[node-1] high disk watermark", "warning", {"component": "o.e.c.DiskMonitor"}),
        # MySQL: an error code in brackets is not a logger
        ("2026-11-28T10:00:01.123456Z 0 [Warning] [MY-010068] [Server] CA certificate is self signed",
         "[MY-010068] [Server] CA certificate is self signed", "warning", {"component": None}),
        # log4j ``%-5p [%t] %d %F:%L - %m``: the level first, then the thread and the time
        ("WARN  [Gossip:1] 2026-11-28 10:00:01,123 Gossiper.java:456 - Not marking nodes down",
         "Not marking nodes down", "warning", {"thread": "Gossip:1", "logger": "Gossiper.java:456"}),
        # Python's default ``%(levelname)s:%(name)s:%(message)s``; a URL after the level is message
        ("WARNING:app.db:disk almost full", "disk almost full", "warning", {"component": "app.db"}),
        ("ERROR:http://example.org down", "http://example.org down", "error", {"component": None}),
        # a bracketed time of day (not Apache's ``[module:level]``: ``02`` is no level there) and ``LEVEL:``
        ("[10:00:01] INFO: server ready", "server ready", "info", {"module": None}),
        ("[2026-11-28 10:00:01] WARNING: disk 91% full", "disk 91% full", "warning", {"component": None}),
        # log4j ``[%t] %c - %m`` with a thread name that has spaces, and one that holds brackets
        ("2026-11-28 10:00:01,123 INFO  [worker 4] io.netty.Channel - channel closed", "channel closed", "info",
         {"thread": "worker 4", "logger": "io.netty.Channel"}),
        ("2026-11-28 10:00:01,123 INFO  [Peer[myid=2]/10.0.0.7:2181] app.Quorum - leader elected", "leader elected",
         "info", {"thread": "Peer[myid=2]/10.0.0.7:2181", "logger": "app.Quorum"}),
        # an exception type after the level is what happened, not a ``component:``
        ("2026-11-28 10:00:01,123 ERROR java.lang.IllegalStateException: pool closed",
         "java.lang.IllegalStateException: pool closed", "error", {"component": None}),
        # glog's ``file:line]`` ends its header: a bracket after it is the message's
        ("I1128 10:00:01.123456    42 server.go:42] [instance: 7] VM started", "[instance: 7] VM started", "info",
         {"src": "server.go:42", "thread": None}),
        # Elasticsearch's logger bracket ends its header: a ``word:`` after it is the message's
        ("[2026-11-28T10:00:01,123][INFO ][o.e.Node] getTasks: caller 7 denied", "getTasks: caller 7 denied", "info",
         {"component": "o.e.Node"}),
        # PostgreSQL: a zone, the pid in brackets, DEBUG1 to DEBUG5 among its levels
        ("2026-11-28 10:00:01.123 UTC [4242] DEBUG2:  autovacuum launcher started", "autovacuum launcher started",
         "debug", {"thread": "4242"}),
        # containerd/CRI-O: time, stream, F/P, then the container's own line with its own header
        ("2026-11-28T10:00:01.123456789Z stdout F 2026-11-28 10:00:02,000 WARN  [main] app.Db - pool low",
         "pool low", "warning", {"stream": "stdout", "logger": "app.Db"}),
        ("2026-11-28T10:00:01.123456789Z stderr F listening on :8080", "listening on :8080", "unknown",
         {"stream": "stderr"}),
        # Heroku's router tag, pino-pretty's ``(pid):``, an Erlang process, Go's ``log.Lshortfile``
        ("2026-11-28T10:00:01.123+00:00 app[web.1]: booted in 3 s", "booted in 3 s", "unknown",
         {"component": "app[web.1]"}),
        ("[10:00:01.123] ERROR (4242): request failed", "request failed", "error", {"pid": 4242}),
        ("2026-11-28 10:00:01.123 [error] <0.4242.0> supervisor restarted", "supervisor restarted", "error",
         {"pid": "<0.4242.0>"}),
        ("2026/11/28 10:00:01.123456 main.go:42: dial tcp: timeout", "dial tcp: timeout", "warning",
         {"src": "main.go:42"}),
        # Redis: pid and role, a day-first date, a level mark
        ("4242:M 28 Nov 2026 10:00:01.123 # WARNING overcommit_memory is 0", "WARNING overcommit_memory is 0",
         "warning", {"pid": 4242}),
        # pipe-separated columns: time, level, names or a pid, then the message (which keeps its own pipes)
        ("2026-11-28 10:00:01.123|ERROR|billing|charge 42 failed", "charge 42 failed", "error",
         {"component": "billing"}),
        ("2026-11-28 10:00:01.123 | WARN | 4242 | sched | queue depth 90 | above limit",
         "queue depth 90 | above limit", "warning", {"pid": 4242, "component": "sched"}),
        ("2026-11-28 10:00:01.123|WARN|web|[client 192.0.2.4] index forbidden", "[client 192.0.2.4] index forbidden",
         "warning", {"component": "web", "thread": None}),
    ],
)  # fmt: skip
def test_header_shapes_are_inferred(line: str, message: str, severity: str, fields: dict[str, object]) -> None:
    rec = decode(line)
    assert rec.message == message
    assert rec.severity == severity
    for key, value in fields.items():
        assert rec.fields.get(key) == value, (key, rec.fields)


@pytest.mark.parametrize(
    "line",
    [
        "Connection: closed by peer",  # a word and a colon is not a header without a time before it
        "12 files copied in 3 s",
        "user=alice action=login",
    ],
)
def test_lines_without_a_header_keep_their_message(line: str) -> None:
    assert decode(line).message == line


def test_a_service_layout_reads_what_inference_cannot_know() -> None:
    layout = {"billing": r"(?P<ts>\S+) \| (?P<tenant>\w+) \| (?P<level>\w+) \| (?P<msg>.*)"}
    rec = decode("2026-11-28T10:00:01Z | acme | WARN | invoice 17 overdue", key=b"billing", layouts=layout)
    assert (rec.message, rec.severity, rec.fields.get("tenant")) == ("invoice 17 overdue", "warning", "acme")
    assert rec.timestamp == "2026-11-28T10:00:01.000Z"
    # another service, or a line the layout does not match, falls back to inference
    other = decode("2026-11-28 10:00:01 ERROR app.Main: boom", key=b"billing", layouts=layout)
    assert (other.message, other.severity) == ("boom", "error")
    # a layout's time may be epoch digits, as in logfmt and JSON
    epoch = decode("1795860001.250 | acme | INFO | paid", key=b"billing", layouts=layout)
    assert epoch.timestamp == "2026-11-28T10:00:01.250Z"


def test_bad_layouts_are_one_line_config_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMER_LOG_LAYOUTS", '{"billing": "(?P<ts>\\\\S+) (.*)"}')
    with pytest.raises(ConfigError, match="layout of 'billing' has no"):
        load_settings()
    with pytest.raises(ValueError, match="not a valid regex"):
        compile_layouts({"x": "(?P<msg>"})


def test_logfmt_takes_only_the_first_level_and_time_pairs() -> None:
    """A later ``level=`` or ``ts=`` (inside the message) is text; an epoch ``ts`` is read as one."""
    rec = decode('ts=1795860001.5 lvl=warn msg="retry level=3 ts=9" attempt=2')
    assert rec.message == 'msg="retry level=3 ts=9" attempt=2'
    assert rec.severity == "warning" and rec.time_ms == 1_795_860_001_500


@pytest.mark.parametrize(
    "line",
    [
        "[2026-11-28 10:00:01.123] billing.ERROR: Undefined index: user",
        "[2026-11-28T10:00:01,123][WARN ][o.e.c.DiskMonitor] [node-1] high disk watermark",
        "WARN  [Gossip:1] 2026-11-28 10:00:01,123 Gossiper.java:456 - Not marking nodes down",
        "2026-11-28 10:00:01.123|ERROR|billing|charge 42 failed",
        "2026-11-28T10:00:01.123Z stdout F listening on :8080",
        "4242:M 28 Nov 2026 10:00:01.123 * Ready to accept connections",
        "2026/11/28 10:00:01.123456 main.go:42: dial tcp: timeout",
    ],
)
def test_inferred_headers_carry_their_event_time(line: str) -> None:
    """Bursts count by event time: a header read by inference gives it, not the broker's timestamp."""
    assert decode(line).time_ms == 1_795_860_001_123


def test_pipes_without_a_leading_time_are_message() -> None:
    line = "cache|miss|key 42"
    assert decode(line).message == line


def test_a_runtime_wrapper_is_unwrapped_once() -> None:
    """A line of nested runtime prefixes (hostile or doubly shipped) is read in one step, not recursively."""
    line = "2026-11-28T10:00:01.123Z stdout F " * 5000 + "boom"
    rec = decode(line)
    assert rec.fields.get("stream") == "stdout"
    assert rec.message.endswith("boom") and rec.message.startswith("stdout F 2026-11-28T10:00:01.123Z")
