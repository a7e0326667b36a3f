"""Raw Kafka log values to ``LogRecord``s, or dead letters: JSON from shippers and plain text lines.

Shippers (Vector, Fluent Bit, Filebeat, journald exports) send JSON objects; applications and
appliances send text lines in a handful of layouts. One decoder handles both, picks the layout by the
first byte and a few anchored regexes, and never raises: anything it cannot use becomes a
``DecodeFailure`` with a dead-letter code (``invalid_utf8``, ``invalid_json``, ``schema``,
``oversize``, ``not_an_object`` for tombstones).

Text layouts recognised (the message keeps everything after the header, newlines included, so a
stack trace shipped as one record stays one record):

* ISO timestamp + level: ``2026-11-28T10:00:00Z ERROR [checkout] msg``, log4j/logback
  ``2026-11-28 10:00:00,123 [main] WARN  org.foo.Bar - msg``, postgres ``... UTC [42] LOG:  msg``;
* syslog RFC 3164 ``<34>Nov 28 10:00:00 host sshd[123]: msg`` (priority optional) and RFC 5424;
* Kubernetes klog ``E1128 10:00:00.123456   1 file.go:42] msg``;
* nginx error log ``2026/11/28 10:00:00 [error] 7#7: *3 msg`` and combined access log lines
  (severity from the HTTP status);
* logfmt ``time=... level=warn msg="..." k=v``: the level and time pairs are the header;
* any other header of the usual fields (dates and times in their many spellings, pids, bracketed
  threads, a level, a logger or ``tag[pid]:`` component) is inferred token by token (``_infer_header``),
  also where an exact layout stopped short of the level (``2026-11-28 10:00:01,123 - WARN [t] - msg``), and
  what a layout leaves before the message (Spring Boot's ``pid --- [thread] logger :``, a ``file.go:42`` caller);
* anything else: the whole line is the message, with a level word if one leads it.

Without a level the severity is inferred from strong words (``exception``, ``fatal`` -> error;
``failed``, ``refused`` -> warning), else ``unknown``. Event time falls back to the Kafka record
timestamp; syslog and klog omit the year, which is taken from the Kafka timestamp.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Final, TypeGuard

import orjson

from streamer.events import DecodeFailure, DecodeLimits, RawEvent, Source, oversize

__all__ = [
    "SEVERITIES",
    "SEVERITY_RANK",
    "Layouts",
    "LogRecord",
    "compile_layouts",
    "decode_log",
    "decode_logs",
    "format_time_ms",
    "normalise_severity",
]

#: The severities of ``enriched_log.v1.json``, lowest first.
SEVERITIES: Final = ("trace", "debug", "info", "notice", "warning", "error", "critical", "unknown")
#: Order for thresholds; ``unknown`` (no level, nothing alarming in the text) ranks with ``info``.
SEVERITY_RANK: Final[Mapping[str, int]] = {
    "trace": 0, "debug": 1, "info": 2, "unknown": 2, "notice": 3, "warning": 4, "error": 5, "critical": 6,
}  # fmt: skip

_LEVELS: Final[dict[str, str]] = {
    **dict.fromkeys(("trace", "finest", "finer", "trc", "trce", "verbose", "v"), "trace"),
    **dict.fromkeys(
        ("debug", "dbg", "dbug", "fine", "config", "d", "debug1", "debug2", "debug3", "debug4", "debug5"), "debug"
    ),  # PostgreSQL writes DEBUG1 to DEBUG5
    **dict.fromkeys(("info", "information", "informational", "log", "statement", "detail", "hint", "i"), "info"),
    **dict.fromkeys(("notice", "note"), "notice"),
    **dict.fromkeys(("warn", "warning", "wrn", "w"), "warning"),
    **dict.fromkeys(("error", "err", "eror", "severe", "e", "fail", "failure"), "error"),
    **dict.fromkeys(("fatal", "critical", "crit", "alert", "emerg", "emergency", "panic", "f", "c", "a"), "critical"),
}
# syslog numeric severities 0..7 (RFC 5424 table 2) and pino/bunyan levels 10..60.
_SYSLOG_SEVERITY: Final = ("critical", "critical", "critical", "error", "warning", "notice", "info", "debug")
_NUMERIC_LEVELS: Final = {10: "trace", 20: "debug", 30: "info", 40: "warning", 50: "error", 60: "critical"}


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One decoded log entry.

    ``id`` is the record's own ``id`` field when it has one, else ``topic:partition:offset``, so
    every output keyed on it is idempotent under redelivery. ``time_ms`` is the event time used for
    windows (parsed timestamp, else the Kafka timestamp, else ``None``); ``timestamp`` is the same
    instant as ISO-8601 UTC. ``fields`` holds every JSON key the decoder did not consume, or the
    header parts of a text line (host, pid, logger...).
    """

    id: str
    time_ms: int | None
    level: str | None
    severity: str
    service: str
    message: str
    fields: Mapping[str, Any]
    source: Source
    key: bytes | None = None

    @property
    def timestamp(self) -> str | None:
        """The event time as ISO-8601 UTC with milliseconds, or ``None`` when unknown."""
        return format_time_ms(self.time_ms) if self.time_ms is not None else None


def normalise_severity(level: object) -> str | None:
    """A level as written (``WARN``, ``err``, ``3``, ``50``) to one of ``SEVERITIES``; ``None`` if unknown."""
    if isinstance(level, bool):
        return None
    if isinstance(level, int | float):
        n = int(level)
        if 0 <= n <= 7:
            return _SYSLOG_SEVERITY[n]
        return _NUMERIC_LEVELS.get(n)
    if not isinstance(level, str):
        return None
    key = level.strip().lower()
    found = _LEVELS.get(key)
    if found is not None:
        return found
    if key.isascii() and key.isdigit():  # not superscripts or other scripts' digits, which int() refuses
        return normalise_severity(int(key))
    return None


# --------------------------------------------------------------------------------------------------
# Time
# --------------------------------------------------------------------------------------------------

_ISO_RE: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,9}))?"
    r"\s?(Z|z|[+-]\d{2}:?\d{2}|UTC|GMT)?$"
)
_MONTHS: Final = {
    m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)
}
_DAYS_CACHE: dict[tuple[int, int, int], int] = {}
_FMT_CACHE: dict[int, str] = {}


def _days(year: int, month: int, day: int) -> int | None:
    key = (year, month, day)
    days = _DAYS_CACHE.get(key)
    if days is None:
        if not (1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]):
            return None
        days = calendar.timegm((year, month, day, 0, 0, 0)) // 86400
        if len(_DAYS_CACHE) > 4096:
            _DAYS_CACHE.clear()
        _DAYS_CACHE[key] = days
    return days


def _to_ms(year: int, month: int, day: int, hh: int, mm: int, ss: int, frac: str | None, offset_s: int) -> int | None:
    if hh > 23 or mm > 59 or ss > 60:
        return None
    days = _days(year, month, day)
    if days is None:
        return None
    ms = ((days * 86400 + hh * 3600 + mm * 60 + min(ss, 59)) - offset_s) * 1000
    if frac:
        ms += int((frac + "00")[:3])
    return ms


def _offset_seconds(tz: str | None) -> int:
    if not tz or tz in ("Z", "z", "UTC", "GMT"):
        return 0
    sign = -1 if tz[0] == "-" else 1
    digits = tz[1:].replace(":", "")
    return sign * (int(digits[:2]) * 3600 + int(digits[2:4]) * 60)


def _iso_ms(text: str) -> int | None:
    m = _ISO_RE.match(text)
    if m is None:
        return None
    y, mo, d, hh, mi, ss, frac, tz = m.groups()
    return _to_ms(int(y), int(mo), int(d), int(hh), int(mi), int(ss), frac, _offset_seconds(tz))


def _text_ms(text: str) -> int | None:
    """A time written as text: epoch digits (seconds to nanoseconds, with a fraction) or ISO 8601."""
    text = text.strip()
    ms = _iso_ms(text)  # the common case first
    if ms is None and _EPOCH_TEXT.fullmatch(text):
        ms = _epoch_ms(float(text))
    return ms


# Nine digits and up: shorter numbers are not plausible instants; ASCII only, as float() reads them.
_EPOCH_TEXT: Final = re.compile(r"\d{9,19}(?:\.\d{1,9})?", re.ASCII)


def _epoch_ms(value: float) -> int | None:
    """Epoch seconds, milliseconds, microseconds or nanoseconds, told apart by magnitude."""
    if value != value or value <= 0:  # NaN or not a plausible instant
        return None
    if value < 1e11:
        return int(value * 1000)
    if value < 1e14:
        return int(value)
    if value < 1e17:
        return int(value // 1000)
    return int(value // 1_000_000)


# The instants an ISO-8601 timestamp can write (years 1 to 9999); a time outside them is not read.
_FIRST_MS: Final = int(datetime(1, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)
_LAST_MS: Final = int(datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=timezone.utc).timestamp() * 1000)


def _writable(ms: int | None) -> TypeGuard[int]:
    return ms is not None and _FIRST_MS <= ms <= _LAST_MS


def _year_hint(source: Source) -> tuple[int, int] | None:
    """(year, month) of the Kafka timestamp, for layouts that omit the year."""
    if not _writable(source.timestamp_ms):
        return None
    t = datetime.fromtimestamp(source.timestamp_ms / 1000, timezone.utc)
    return t.year, t.month


def _yearless_ms(month: int, day: int, hh: int, mm: int, ss: int, frac: str | None, source: Source) -> int | None:
    hint = _year_hint(source)
    if hint is None:
        return None
    year, kafka_month = hint
    if month == 12 and kafka_month == 1:  # written on Dec 31st, read on Jan 1st
        year -= 1
    elif month == 1 and kafka_month == 12:
        year += 1
    return _to_ms(year, month, day, hh, mm, ss, frac, 0)


def format_time_ms(ms: int) -> str:
    """Epoch milliseconds as ISO-8601 UTC with milliseconds (``2026-11-28T10:00:00.123Z``)."""
    secs, millis = divmod(ms, 1000)
    head = _FMT_CACHE.get(secs)
    if head is None:
        t = datetime.fromtimestamp(secs, timezone.utc)
        head = f"{t:%Y-%m-%dT%H:%M:%S}"
        if len(_FMT_CACHE) > 4096:
            _FMT_CACHE.clear()
        _FMT_CACHE[secs] = head
    return f"{head}.{millis:03d}Z"


# --------------------------------------------------------------------------------------------------
# Text layouts
# --------------------------------------------------------------------------------------------------

_LEVEL_ALT: Final = (
    r"(?i:trace|debug[1-5]?|dbg|info|information|notice|warn|warning|error|err|fatal|critical|crit|severe|"
    r"alert|emerg|emergency|panic|fine|finer|finest|log|statement|detail|hint)"
)
_ISO_LINE: Final = re.compile(
    r"(?P<ts>\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d{1,9})?(?:\s?(?:Z|z|[+-]\d{2}:?\d{2}|UTC|GMT))?)"
    r"\s+(?:\[(?P<thread>[^\]\n]{1,64})\]\s+)?"
    r"(?:(?P<level>" + _LEVEL_ALT + r")(?=[\s:\]])(?:\s*:)?\s*)?"
    r"(?:\[(?P<svc>[^\[\]\s]{1,128})\]\s*)?"
    r"(?:(?P<logger>[A-Za-z_$][\w$.]{0,200}(?::\d{1,6})?)\s+-\s+)?"
    r"(?P<msg>.*)",
    re.S,
)
_SYSLOG_3164: Final = re.compile(
    r"(?:<(?P<pri>\d{1,3})>)?(?P<mon>[A-Z][a-z]{2}) +(?P<day>\d{1,2}) (?P<h>\d{2}):(?P<m>\d{2}):(?P<s>\d{2}) "
    r"(?P<host>\S+) (?P<tag>[\w./@()-]{1,64}?)(?:\[(?P<pid>\d+)\])?: ?(?P<msg>.*)",
    re.S,
)
_SYSLOG_5424: Final = re.compile(
    r"<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+) (?P<msgid>\S+) "
    r"(?P<sd>-|(?:\[(?:[^\]\\]|\\.)*\])+)(?: \ufeff?(?P<msg>.*))?",
    re.S,
)
_SD_ELEMENT: Final = re.compile(r"\[(?P<id>[^\s\]]+)(?P<params>(?:[^\]\\]|\\.)*)\]")
_SD_PARAM: Final = re.compile(r'(?P<k>[^\s=\]]+)="(?P<v>(?:[^"\\]|\\.)*)"')
_KLOG: Final = re.compile(
    r"(?P<lvl>[IWEF])(?P<mo>\d{2})(?P<d>\d{2}) (?P<h>\d{2}):(?P<m>\d{2}):(?P<s>\d{2})(?:\.(?P<frac>\d{1,9}))?"
    r" +(?P<pid>\d+) (?P<src>[^\]\s]+)\] ?(?P<msg>.*)",
    re.S,
)
_NGINX_ERROR: Final = re.compile(
    r"(?P<y>\d{4})/(?P<mo>\d{2})/(?P<d>\d{2}) (?P<h>\d{2}):(?P<m>\d{2}):(?P<s>\d{2}) \[(?P<level>\w+)\] "
    r"(?P<pid>\d+)#(?P<tid>\d+): (?:\*(?P<conn>\d+) )?(?P<msg>.*)",
    re.S,
)
# Redis: ``pid:role day Mon year time.ms <level mark> msg`` (marks . debug, - verbose, * notice, # warning).
_REDIS: Final = re.compile(
    r"(?P<pid>\d{1,10}):(?P<role>[XCSM]) (?P<d>\d{1,2}) (?P<mon>[A-Z][a-z]{2}) (?P<y>\d{4}) (?P<h>\d{2}):(?P<m>\d{2}):"
    r"(?P<s>\d{2})(?:\.(?P<frac>\d{1,6}))? (?P<mark>[.\-*#]) (?P<msg>.*)",
    re.S,
)
_REDIS_LEVELS: Final = {".": "debug", "-": "debug", "*": "notice", "#": "warning"}
_ACCESS: Final = re.compile(
    r"(?P<client>\S+) \S+ \S+ \[(?P<d>\d{2})/(?P<mon>[A-Z][a-z]{2})/(?P<y>\d{4}):(?P<h>\d{2}):(?P<m>\d{2}):"
    r"(?P<s>\d{2}) (?P<tz>[+-]\d{4})\] \"(?P<req>[^\"]*)\" (?P<status>\d{3}) "
)
_BARE_LEVEL: Final = re.compile(
    r"\s*(?:\[(?P<l1>" + _LEVEL_ALT + r")\]|(?P<l2>TRACE|DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|FATAL|CRITICAL|SEVERE)"
    r"\b|(?P<l3>(?i:error|warning|warn|fatal|panic|critical|info|debug|dbug|trce|fail|crit)):)[:\s]*(?P<msg>.*)",
    re.S,
)
_LEVEL_NEAR_START: Final = re.compile(r"\b(TRACE|DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|FATAL|CRITICAL|SEVERE)\b")
_ERROR_WORDS: Final = re.compile(
    r"(?i:\b(?:error|exception|fatal|panic|segfault|segmentation fault|out of memory|traceback|critical|"
    r"oom-?killed|kernel bug)\b)|[a-z0-9_$][A-Z]\w*?(?:Exception|Error)\b"
)
_WARNING_WORDS: Final = re.compile(
    r"(?i)\b(?:warn(?:ing)?|fail(?:ed|ure|s)?|denied|refused|timed out|timeout|unable|cannot|can't|invalid|"
    r"deprecated|unreachable|retrying)\b"
)


def infer_severity(message: str) -> str:
    """Severity of a line that states none: strong error words, then warning words, else ``unknown``."""
    head = message[:2000]
    if _ERROR_WORDS.search(head):
        return "error"
    if _WARNING_WORDS.search(head):
        return "warning"
    return "unknown"


@dataclass(slots=True)
class _Parsed:
    """A text line split into header parts; mutable scratch, never leaves this module."""

    message: str
    level: str | None = None
    severity: str | None = None
    time_ms: int | None = None
    service: str | None = None
    fields: dict[str, Any] | None = None


# containerd/CRI-O's ``<time> stdout F <line>``: the stream and a full (F) or partial (P) line mark.
_CRI: Final = re.compile(r"(?P<ts>\d{4}-\d{2}-\d{2}T\S+) (?P<stream>stdout|stderr) (?P<tag>[FP]) ")


def _cri(line: str, source: Source) -> _Parsed | None:
    """A container runtime's line: its time and stream, then the container's own line with its own header."""
    m = _CRI.match(line)
    if m is None or (time_ms := _iso_ms(m.group("ts"))) is None:
        return None
    inner = _parse_text(line[m.end() :], source, runtime=False)  # one runtime wrapper: the rest is the container's
    inner.time_ms = inner.time_ms if inner.time_ms is not None else time_ms
    inner.fields = {**(inner.fields or {}), "stream": m.group("stream")}
    return inner


# A bracket after the level names the service (``ERROR [payments] ...``) unless it reads as a thread: ``main``, or a
# name with a digit, ``:``, ``@`` or ``#`` in it (``pool-1-thread-3``, ``nio-8080-exec-1``, ``Gossip:1``).
_THREAD_NAME: Final = re.compile(r"\Amain\Z|[0-9:@#]")


def _iso_layout(line: str) -> _Parsed | None:
    m = _ISO_LINE.match(line)
    if m is None:
        return None
    level = m.group("level")
    fields: dict[str, Any] = {}
    if m.group("thread"):
        fields["thread"] = m.group("thread")
    if m.group("logger"):
        fields["logger"] = m.group("logger")
    service = m.group("svc")
    if service is not None and _THREAD_NAME.search(service):
        fields.setdefault("thread", service)  # log4j's ``[%t]`` (``[main]``, ``[pool-1-thread-3]``), not a service
        service = None
    return _Parsed(
        message=m.group("msg"),
        level=level,
        severity=normalise_severity(level) if level else None,
        time_ms=_iso_ms(m.group("ts")),
        service=service,
        fields=fields or None,
    )


def _pri_severity(pri: str | None) -> str | None:
    if pri is None:
        return None
    n = int(pri)
    return _SYSLOG_SEVERITY[n & 7] if n <= 191 else None


def _leading_level(message: str) -> tuple[str | None, str | None]:
    """A level word that opens a message (``error: ...``), as (raw, normalised)."""
    m = _BARE_LEVEL.match(message)
    if m is None:
        return None, None
    raw = m.group("l1") or m.group("l2") or m.group("l3")
    return raw, normalise_severity(raw)


def _syslog_3164(line: str, source: Source) -> _Parsed | None:
    m = _SYSLOG_3164.match(line)
    if m is None or m.group("mon") not in _MONTHS:
        return None
    month = _MONTHS[m.group("mon")]
    time_ms = _yearless_ms(
        month, int(m.group("day")), int(m.group("h")), int(m.group("m")), int(m.group("s")), None, source
    )
    fields: dict[str, Any] = {"host": m.group("host")}
    if m.group("pid"):
        fields["pid"] = int(m.group("pid"))
    pri = m.group("pri")
    if pri is not None:
        fields["facility"] = int(pri) >> 3
    message = m.group("msg")
    level, severity = (pri, _pri_severity(pri)) if pri is not None else _leading_level(message)
    return _Parsed(message, level, severity, time_ms, m.group("tag"), fields)


def _structured_data(sd: str) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for el in _SD_ELEMENT.finditer(sd):
        out[el.group("id")] = {
            p.group("k"): re.sub(r"\\(.)", r"\1", p.group("v")) for p in _SD_PARAM.finditer(el.group("params"))
        }
    return out


def _syslog_5424(line: str) -> _Parsed | None:
    m = _SYSLOG_5424.match(line)
    if m is None:
        return None
    pri = m.group("pri")
    ts = m.group("ts")
    fields: dict[str, Any] = {}
    for name in ("host", "procid", "msgid"):
        if m.group(name) != "-":
            fields[name] = m.group(name)
    if m.group("sd") != "-":
        fields["structured_data"] = _structured_data(m.group("sd"))
    app = m.group("app")
    return _Parsed(
        message=m.group("msg") or "",
        level=pri,
        severity=_pri_severity(pri),
        time_ms=_iso_ms(ts) if ts != "-" else None,
        service=app if app != "-" else None,
        fields=fields or None,
    )


def _klog(line: str, source: Source) -> _Parsed | None:
    m = _KLOG.match(line)
    if m is None:
        return None
    time_ms = _yearless_ms(
        int(m.group("mo")), int(m.group("d")), int(m.group("h")), int(m.group("m")), int(m.group("s")),
        m.group("frac"), source,
    )  # fmt: skip
    lvl = m.group("lvl")
    return _Parsed(
        m.group("msg"), lvl, normalise_severity(lvl), time_ms, None, {"pid": int(m.group("pid")), "src": m.group("src")}
    )


def _nginx_error(line: str) -> _Parsed | None:
    m = _NGINX_ERROR.match(line)
    if m is None:
        return None
    time_ms = _to_ms(
        int(m.group("y")), int(m.group("mo")), int(m.group("d")), int(m.group("h")), int(m.group("m")),
        int(m.group("s")), None, 0,
    )  # fmt: skip
    fields: dict[str, Any] = {"pid": int(m.group("pid")), "tid": int(m.group("tid"))}
    if m.group("conn"):
        fields["connection"] = int(m.group("conn"))
    level = m.group("level")
    return _Parsed(m.group("msg"), level, normalise_severity(level), time_ms, None, fields)


def _redis(line: str) -> _Parsed | None:
    m = _REDIS.match(line)
    if m is None or m.group("mon") not in _MONTHS:
        return None
    time_ms = _to_ms(
        int(m.group("y")), _MONTHS[m.group("mon")], int(m.group("d")), int(m.group("h")), int(m.group("m")),
        int(m.group("s")), m.group("frac"), 0,
    )  # fmt: skip
    mark = m.group("mark")
    return _Parsed(m.group("msg"), mark, _REDIS_LEVELS[mark], time_ms, None, {"pid": int(m.group("pid"))})


def _access(line: str) -> _Parsed | None:
    m = _ACCESS.match(line)
    if m is None or m.group("mon") not in _MONTHS:
        return None
    time_ms = _to_ms(
        int(m.group("y")), _MONTHS[m.group("mon")], int(m.group("d")), int(m.group("h")), int(m.group("m")),
        int(m.group("s")), None, _offset_seconds(m.group("tz")),
    )  # fmt: skip
    status = int(m.group("status"))
    severity = "error" if status >= 500 else "warning" if status >= 400 else "info"
    return _Parsed(line, str(status), severity, time_ms, None, {"http_status": status, "request": m.group("req")})


def _bare(line: str) -> _Parsed:
    level, severity = _leading_level(line)
    if level is not None:
        m = _BARE_LEVEL.match(line)
        rest = m.group("msg") if m else line
        return _after_level(rest, level, severity, line.startswith(level + ":"))
    near = _LEVEL_NEAR_START.search(line, 0, 80)
    if near is not None:
        return _Parsed(line, near.group(1), normalise_severity(near.group(1)))
    return _Parsed(line)


def _after_level(rest: str, level: str, severity: str | None, glued: bool) -> _Parsed:
    """What follows a level that opens a line: log4j's ``%-5p [%t] %d ...`` (a thread, then a timestamped
    header), Python's ``%(levelname)s:%(name)s:%(message)s`` (``glued``: ``WARNING:app.db:...``), or the message."""
    fields: dict[str, Any] = {}
    tail = rest
    if tail.startswith("["):
        close = _bracket_end(tail, 0, 258)
        if close > 0:
            fields["thread"] = tail[1:close]
            tail = tail[close + 1 :].lstrip(" ")
    if tail[:1].isdigit() and (timed := _iso_layout(tail)) is not None and timed.level is None:
        fields.update(timed.fields or {})
        return _Parsed(timed.message, level, severity, timed.time_ms, timed.service, fields)
    if glued:
        name, colon, message = rest.partition(":")
        if colon and message and not message.startswith("/") and _H_NAME.fullmatch(name):
            return _Parsed(message, level, severity, None, None, {"component": name})
    return _Parsed(rest, level, severity)


# --------------------------------------------------------------------------------------------------
# Header inference: the layouts above are exact; this reads any header made of the usual fields
# --------------------------------------------------------------------------------------------------

_H_DATE: Final = re.compile(
    r"(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/]\d{1,2}(?:[-/]\d{2,4})?|\d{6}|\d{8})"
    r"(?:[-T_](?:\d{1,2}[:.]\d{2}[:.]\d{2}(?:[.,:]\d{1,9})?))?(?:Z|[+-]\d{2}:?\d{2})?,?"
)
_H_TIME: Final = re.compile(r"\d{1,2}:\d{2}(?::\d{2})?(?:[.,:]\d{1,9})?(?:Z|[+-]\d{2}:?\d{2})?,?|\d{6}")
_H_EPOCH: Final = re.compile(r"\d{10}(?:\.\d{1,9})?")
_H_NUMBER: Final = re.compile(r"\d{1,10}")
_H_NAMES: Final = frozenset(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
     "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun", "UTC", "GMT")
)  # fmt: skip
# A logger or component closing the header: ``sshd[42]:``, ``dfs.DataNode$PacketResponder:``, ``su(pam_unix)[7]:``.
_H_COMPONENT: Final = re.compile(r"[A-Za-z_$][\w$.\-/()@]{0,127}(?:\[[\w.\-]{1,32}\])?:")
_H_TAG: Final = re.compile(r"(?=[\w\-.:]{1,64}$)(?:[A-Z][A-Z0-9_]{1,15}|.*\d.*)")
_H_SHORT_LEVELS: Final = frozenset("VDIWEFA")
_H_MAX_TOKENS: Final = 12
_H_NAME: Final = re.compile(r"[A-Za-z_$][\w$.\-]{0,127}")
# A process id right after the level: pino's ``(42):``, an Erlang process ``<0.42.0>``.
_H_PID: Final = re.compile(r"\((\d{1,10})\):|<\d{1,10}\.\d{1,10}\.\d{1,10}>")


# A dotted logger right after the level (``INFO c.e.Service - msg``, ``INFO app.api [req-7] msg``); a dotted
# name ending in Error or Exception is what happened, not who logged it.
_H_LOGGER: Final = re.compile(r"[A-Za-z_$][\w$]*(?:\.[\w$]+)+(?::\d{1,6})?(?<!Error)(?<!Exception)")


def _logger_column(line: str, tok: str, stop: int) -> int:
    """Where the message starts when ``tok`` (ending at ``stop``) is a logger column, else 0."""
    if not _H_LOGGER.fullmatch(tok):
        return 0
    if line.startswith(" - ", stop):
        return stop + 3
    if line.startswith(" [", stop):
        return stop
    return 0


def _bracket_end(text: str, start: int, limit: int) -> int:
    """Where the ``]`` closing the ``[`` at ``start`` is, one level of nesting allowed (a thread named
    ``Peer[id=1]/10.0.0.7:2181``); -1 when it does not close before ``limit``."""
    close = text.find("]", start + 1, limit)
    if close < 0 or text.find("[", start + 1, close) < 0:
        return close
    return text.find("]", close + 1, limit)


def _is_time_token(tok: str, after_date: bool) -> bool:
    if _H_TIME.fullmatch(tok) is None:
        return False
    return ":" in tok or after_date


def _infer_header(line: str) -> _Parsed | None:
    """Split a header of timestamp parts, pids, bracketed fields, a level and a component off ``line``.

    No fixed layout: each leading token is classified by its shape, and the header ends after the level
    (and a thread and component right behind it) or after a ``component:``. Needs a date or time among
    the first tokens and a level or component to end on, else it claims nothing (``None``).
    """
    pos, n = 0, len(line)
    saw_time = saw_date = False
    level: str | None = None
    fields: dict[str, Any] = {}
    end = -1
    tags = 0
    bracketed_level = False
    time_ms: int | None = None
    day = ""
    for _ in range(_H_MAX_TOKENS):
        while pos < n and line[pos] in " \t":
            pos += 1
        if pos >= n:
            break
        if line[pos] == "[":
            close = _bracket_end(line, pos, pos + 258)
            if close < 0:
                break
            inner = line[pos + 1 : close].strip()
            nxt = close + 1
            words = inner.split()
            module, _, named = inner.rpartition(":")
            if level is None and len(words) == 1 and not inner.isdigit() and normalise_severity(inner) is not None:
                level, end, bracketed_level = inner, nxt, True
            elif level is None and len(words) == 1 and module and named.isalpha() and normalise_severity(named):
                level, end, bracketed_level = named, nxt, True  # Apache's ``[module:level]``
                fields["module"] = module
            elif bracketed_level and inner.startswith("pid ") and inner[4:5].isdigit():
                fields["pid"] = inner[4:]  # Apache's ``[pid 42:tid 7]``
                end = nxt
            elif bracketed_level and line[pos - 1] == "]" and "component" not in fields and _H_NAME.fullmatch(inner):
                fields["component"] = inner  # a logger glued to a bracketed level (``[WARN ][o.e.Node]``)
                end = nxt
                break  # the header ends with it: a ``word:`` next is the message's
            elif (
                words
                and all(w.rstrip(",") in _H_NAMES or w.lstrip("+-#")[:1].isdigit() for w in words)
                and any(":" in w for w in words)
            ):
                saw_time = True
                if time_ms is None and inner[:4].isdigit():
                    time_ms = _iso_ms(inner)  # ``[2026-11-28 10:00:01,123]``
                pid = next((w[1:] for w in words if w[:1] == "#" and w[1:].isascii() and w[1:].isdigit()), None)
                if pid is not None:
                    fields.setdefault("pid", int(pid))  # Ruby's ``[time #pid]``
            elif saw_time and inner and not bracketed_level:
                fields.setdefault("thread", inner)
                if level is not None:
                    end = nxt
            else:
                break
            pos = nxt
            continue
        stop = pos
        while stop < n and line[stop] not in " \t":
            stop += 1
        tok = line[pos:stop]
        if level is None and not (saw_time and tok.endswith(":") and _H_COMPONENT.fullmatch(tok)):
            if tok == "-" or tok in _H_NAMES or tok.rstrip(",") in _H_NAMES:
                pos = stop
                continue
            if _H_DATE.fullmatch(tok) and not (saw_date and _H_TIME.fullmatch(tok)):
                saw_date = True
                saw_time = saw_time or "-" in tok[8:] or "T" in tok or ":" in tok
                if tok[:4].isdigit() and tok[4:5] in ("-", "/"):
                    day = tok  # a year-first date: with the time after it, the line's event time
                pos = stop
                continue
            if _is_time_token(tok, saw_date) or _H_EPOCH.fullmatch(tok):
                if day and time_ms is None and ":" in tok:
                    time_ms = _iso_ms(f"{day.replace('/', '-')} {tok.rstrip(',')}")
                saw_time = True
                pos = stop
                continue
            if (saw_time or saw_date) and _H_NUMBER.fullmatch(tok):
                fields.setdefault("pid", int(tok)) if "pid" not in fields else fields.setdefault("tid", int(tok))
                pos = stop
                continue
        if not (saw_time or saw_date):
            if pos == 0 and _H_TAG.match(tok) and not tok[:1].isdigit():
                pos = stop  # a label before the timestamp (``APPREAD 1117869872 ...``)
                continue
            if pos == 0 and len(tok) == 2 and tok[1] == "," and tok[0] in _H_SHORT_LEVELS:
                pos = stop  # Ruby's severity letter (``I, [time #pid]  INFO -- : msg``)
                continue
            break
        word = tok[:-1] if tok.endswith(":") else tok  # ``INFO:``
        sev = normalise_severity(word) if (len(word) > 1 or word in _H_SHORT_LEVELS) and not word.isdigit() else None
        if sev is not None and level is None:
            level, end = word, stop
            pos = stop
            continue
        if tok.endswith(":") and _CALLER.fullmatch(tok[:-1]):
            fields["src"] = tok[:-1]  # Go's ``log.Lshortfile``: ``main.go:42:``
            end = stop
            break
        if _H_COMPONENT.fullmatch(tok) and (level is not None or tags < 4):
            channel, dot, named = tok[:-1].rpartition(".")
            if level is None and dot and named.isupper() and normalise_severity(named) is not None:
                level, fields["component"] = named, channel  # Monolog's ``channel.LEVEL:``
            else:
                fields["component"] = tok[:-1]
            end = stop
            break
        if level is not None:
            if tok in ("-", "--") and end == pos - 1:
                end = stop
            elif (process := _H_PID.fullmatch(tok)) is not None and end == pos - 1:
                fields.setdefault("pid", int(process.group(1)) if process.group(1) else process.group())
                end = stop  # pino's ``(42):``, an Erlang process ``<0.42.0>``
            elif (logger := _logger_column(line, tok, stop)) and line[end:pos].strip() == "":
                fields["component"] = tok
                end = logger
            elif _H_TAG.match(tok) and line.startswith("  ", stop):
                fields["component"] = tok  # a padded column right after the level
                end = stop
            break
        if _H_TAG.match(tok) and tags < 4:
            tags += 1
            pos = stop
            continue
        between_dashes = line.startswith(" - ", stop) and line[max(0, pos - 3) : pos] == " - "
        if level is None and between_dashes and _H_NAME.fullmatch(tok):
            fields["component"] = tok  # a logger column between dashes (``time - app.db - ERROR - msg``)
            pos = stop
            continue
        break
    if end < 0 or not (saw_time or saw_date):
        return None
    message = line[end:].lstrip(" \t")
    if message.startswith(("- ", ": ")):
        message = message[2:]
    if not message.strip():
        return None
    return _Parsed(message, level, normalise_severity(level) if level else None, time_ms, None, fields or None)


#: Per-service text layouts: service (the record key) -> a regex with a ``msg`` group and optionally
#: ``ts`` (ISO-8601 or epoch digits), ``level`` and any other named groups (kept as fields).
Layouts = Mapping[str, "re.Pattern[str]"]


def compile_layouts(layouts: Mapping[str, str]) -> dict[str, re.Pattern[str]]:
    """Compile per-service layouts; ``ValueError`` naming the service for a bad regex or one without ``msg``."""
    out: dict[str, re.Pattern[str]] = {}
    for service, pattern in layouts.items():
        try:
            rx = re.compile(pattern, re.S)
        except re.error as exc:
            raise ValueError(f"layout of {service!r} is not a valid regex: {exc}") from None
        if "msg" not in rx.groupindex:
            raise ValueError(f"layout of {service!r} has no (?P<msg>...) group")
        out[service] = rx
    return out


def _layout(line: str, rx: re.Pattern[str]) -> _Parsed | None:
    m = rx.match(line)
    if m is None:
        return None
    groups = {k: v for k, v in m.groupdict().items() if v is not None}
    level = groups.pop("level", None)
    ts = groups.pop("ts", None)
    message = groups.pop("msg", "")
    return _Parsed(
        message,
        level,
        normalise_severity(level) if level else None,
        _text_ms(ts) if ts else None,
        None,
        dict(groups) or None,
    )


_PIPE_HEADER_FIELDS: Final = 3


def _pipe_header(line: str) -> _Parsed | None:
    """``time|LEVEL|logger|message`` (``|`` or `` | ``): a time, then up to three one-word fields (a level, a
    pid, names), then the message, which keeps any ``|`` of its own. ``None`` unless the time reads."""
    parts = line.split("|", _PIPE_HEADER_FIELDS + 1)
    if len(parts) < 3 or (time_ms := _text_ms(parts[0])) is None:
        return None
    level: str | None = None
    fields: dict[str, Any] = {}
    taken = 1
    for part in parts[1:-1]:
        word = part.strip()
        if not word or len(word) > 64 or " " in word or "\t" in word:
            break
        if level is None and not word.isdigit() and normalise_severity(word) is not None:
            level = word
        elif word.isascii() and word.isdigit():
            fields.setdefault("pid", int(word))
        else:
            fields.setdefault("component" if "component" not in fields else "thread", word)
        taken += 1
    message = "|".join(parts[taken:]).strip()
    if taken == 1 or not message:
        return None
    return _Parsed(message, level, normalise_severity(level) if level else None, time_ms, None, fields or None)


def _parse_text(line: str, source: Source, *, runtime: bool = True) -> _Parsed:
    first = line[:1]
    parsed: _Parsed | None = None
    if first.isdigit():
        if "|" in line[:40] and (piped := _pipe_header(line)) is not None:
            return piped  # its columns are the whole header: a ``[...]`` or ``name:`` next is the message's
        parsed = _cri(line, source) if runtime and line[10:11] == "T" and " std" in line[:48] else None
        if parsed is not None:
            return parsed
        parsed = _iso_layout(line) or _nginx_error(line) or _redis(line) or _access(line)
    elif first == "<":
        parsed = _syslog_5424(line) or _syslog_3164(line, source)
    elif first in "IWEF" and line[1:2].isdigit():
        parsed = _klog(line, source)
    elif first.isupper():
        parsed = _syslog_3164(line, source)
    if parsed is None and first.isalnum() and ":" in line[:64]:
        parsed = _access(line)  # IPv6 or host-named clients
    if parsed is None:
        parsed = _infer_header(line) or _logfmt(line)
    elif parsed.level is None and first.isdigit():
        parsed = _fuller_header(line, parsed)
    elif parsed.level is not None and not (fields := parsed.fields or {}).get("logger") and "src" not in fields:
        _component_after_header(parsed)  # not after glog's ``file:line]``, which ends its header
    return parsed if parsed is not None else _bare(line)


def _fuller_header(line: str, exact: _Parsed) -> _Parsed:
    """An ISO-timestamped line whose header the exact layout cut short (``... - WARN [t] -``, ``... 42 INFO x.y``,
    ``... host app[42]:``).

    Inference reads the same timestamp and goes on through pids, dashes, hosts and brackets to the level or
    a syslog tag; the exact layout's time (with its zone) is kept.
    """
    inferred = _infer_header(line)
    if inferred is None or not (inferred.level or _SYSLOG_TAG.fullmatch((inferred.fields or {}).get("component", ""))):
        return exact
    inferred.time_ms = exact.time_ms
    inferred.service = exact.service
    return inferred


_SYSLOG_TAG: Final = re.compile(r"[\w.\-/]{1,64}\[[\w.\-]{1,32}\]")  # ``nginx[812]``, Heroku's ``app[web.1]``

# logfmt (``time=... level=warn msg="..." k=v``): the level and time pairs are the header; the rest, with
# ``msg=`` and every other pair as written, is the message.
_LOGFMT_HEADER: Final = re.compile(r'(?:^|(?<=\s))(?P<key>level|lvl|time|ts)=(?P<value>"[^"]*"|\S*)\s*')


def _logfmt(line: str) -> _Parsed | None:
    head = line[:48]
    if "=" not in head or not head[:1].isalpha() or " " not in line:
        return None
    first = line.split(" ", 1)[0]
    if "=" not in first or not first.split("=", 1)[0].isidentifier():
        return None
    level: str | None = None
    time_ms: int | None = None
    timed = False
    cut: list[tuple[int, int]] = []  # the first level pair and the first time pair; a later one is text
    for m in _LOGFMT_HEADER.finditer(line):
        value = m.group("value").strip('"')
        if m.group("key") in ("level", "lvl"):
            if level is None:
                level = value
                cut.append(m.span())
        elif not timed:
            timed = True
            time_ms = _text_ms(value)
            cut.append(m.span())
    severity = normalise_severity(level) if level else None
    if severity is None:
        return None
    parts: list[str] = []
    pos = 0
    for start, stop in sorted(cut):
        parts.append(line[pos:start])
        pos = stop
    parts.append(line[pos:])
    message = "".join(parts)
    return _Parsed(message.strip() or line, level, severity, time_ms)


_PID_DASHES: Final = re.compile(r"(\d{1,10}) +--- +")
# A dotted logger, padded, then `` : `` (Spring Boot's ``%-40.40logger{39} : %m``).
_LOGGER_COLON: Final = re.compile(r"([A-Za-z_$][\w$.\[\]/]*\.[\w$.\[\]/]+) +: ")
_CALLER: Final = re.compile(r"[\w./\-]+\.[A-Za-z]\w{0,9}:\d{1,6}")
# A logger column and a dash after the thread (log4j's ``[%t] %c - %m`` when the thread name has spaces).
_LOGGER_DASH: Final = re.compile(r"([A-Za-z_$][\w$.]{0,200}(?::\d{1,6})?) +- ")


def _component_after_header(parsed: _Parsed) -> None:
    """A thread in brackets and a ``logger:`` left at the head of a message once a layout took its header."""
    msg = parsed.message
    fields = parsed.fields if parsed.fields is not None else {}
    spring = _PID_DASHES.match(msg)
    if spring is not None:  # Spring Boot's ``pid --- [thread] logger : msg``
        fields.setdefault("pid", int(spring.group(1)))
        msg = msg[spring.end() :]
    if msg.startswith("["):
        close = _bracket_end(msg, 0, 258)
        if close > 0:
            fields.setdefault("thread", msg[1:close])
            msg = msg[close + 1 :].lstrip(" ")
    head, sep, rest = msg.partition(" ")
    if (
        sep
        and _H_COMPONENT.fullmatch(head)
        and ("." in head or "$" in head or "[" in head)
        and not head.endswith(("Exception:", "Error:"))  # ``java.lang.IllegalStateException: boom`` is message
    ):
        fields["component"] = head[:-1]
        msg = rest.lstrip(" ")
    elif (column := _LOGGER_COLON.match(msg)) is not None:
        fields["component"] = column.group(1)
        msg = msg[column.end() :]
    elif "thread" in fields and (dashed := _LOGGER_DASH.match(msg)) is not None:
        fields.setdefault("logger", dashed.group(1))
        msg = msg[dashed.end() :]
    else:
        caller, tab, rest = msg.partition("\t") if "\t" in msg[:130] else (head, sep, rest)
        if (tab or sep) and _CALLER.fullmatch(caller):
            fields["src"] = caller  # zap's or a ``%(filename)s:%(lineno)d`` caller column
            msg = rest.lstrip(" \t")
    if msg is not parsed.message and msg.strip():
        parsed.message = msg
        parsed.fields = fields


# --------------------------------------------------------------------------------------------------
# JSON records
# --------------------------------------------------------------------------------------------------

_MESSAGE_KEYS: Final = ("message", "msg", "log", "MESSAGE", "short_message")
_LEVEL_KEYS: Final = ("level", "severity", "log.level", "lvl", "levelname", "loglevel", "PRIORITY")
_TIME_KEYS: Final = ("timestamp", "@timestamp", "time", "ts", "datetime", "__REALTIME_TIMESTAMP")
_SERVICE_KEYS: Final = (
    "service", "service.name", "app", "application", "app_name", "appname", "logger", "logger_name",
    "SYSLOG_IDENTIFIER",
)  # fmt: skip


def _first_str(doc: Mapping[str, Any], keys: Iterable[str]) -> tuple[str | None, str | None]:
    for key in keys:
        value = doc.get(key)
        if isinstance(value, str) and value.strip():
            return key, value
        if isinstance(value, Mapping):  # ECS style: {"service": {"name": ...}}
            inner = value.get("name")
            if isinstance(inner, str) and inner.strip():
                return key, inner
    return None, None


def _json_time(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return _epoch_ms(float(value))
    if isinstance(value, str):
        return _text_ms(value)
    return None


def _service_of(doc: Mapping[str, Any]) -> tuple[str | None, str | None]:
    key, service = _first_str(doc, _SERVICE_KEYS)
    if service is None:
        k8s = doc.get("kubernetes")
        if isinstance(k8s, Mapping):
            labels = k8s.get("labels")
            app = labels.get("app") if isinstance(labels, Mapping) else None
            name = app if isinstance(app, str) and app else k8s.get("container_name")
            if isinstance(name, str) and name:
                return None, name
    return key, service


def _decode_json(raw: RawEvent, text: str) -> LogRecord | DecodeFailure:
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return DecodeFailure(raw, "invalid_json", f"not valid JSON: {exc}")
    if not isinstance(doc, dict):
        return DecodeFailure(raw, "not_an_object", f"expected a JSON object, got {type(doc).__name__}")
    own_id = doc.get("id") if isinstance(doc.get("id"), str) and doc.get("id") else None
    msg_key = next((k for k in _MESSAGE_KEYS if k in doc and not isinstance(doc[k], Mapping)), None)
    message = doc.get(msg_key) if msg_key is not None else None
    if not isinstance(message, str):
        field = msg_key or "message"
        what = "missing" if message is None else f"must be a string, got {type(message).__name__}"
        return DecodeFailure(raw, "schema", f"{field}: {what}", field=field, id=own_id)
    message = message.rstrip("\r\n")
    if not message.strip():
        return DecodeFailure(raw, "schema", f"{msg_key}: is blank", field=msg_key, id=own_id)
    consumed = {msg_key, "id"}

    level_key, level = _first_str(doc, _LEVEL_KEYS)
    if level is None:
        for key in ("level", "severity", "PRIORITY"):
            if isinstance(doc.get(key), int | float) and not isinstance(doc.get(key), bool):
                level_key, level = key, str(doc[key])
                break
        else:
            log_obj = doc.get("log")
            if isinstance(log_obj, Mapping) and isinstance(log_obj.get("level"), str):
                level_key, level = "log", log_obj["level"]
    consumed.add(level_key)
    time_key = next((k for k in _TIME_KEYS if k in doc), None)
    time_ms = _json_time(doc[time_key]) if time_key is not None else None
    consumed.add(time_key)
    service_key, service = _service_of(doc)
    consumed.add(service_key)

    severity = normalise_severity(level) if level is not None else None
    if level is None or time_ms is None:
        # A shipper wrapping a raw line ({"log": "2026-... ERROR ..."}): read its header too.
        inner = _parse_text(message, raw.source)
        if inner.level is not None or inner.time_ms is not None:
            if level is None and inner.level is not None:
                level, severity = inner.level, inner.severity
            if time_ms is None:
                time_ms = inner.time_ms
            if service is None and inner.service:
                service = inner.service
            message = inner.message or message
    fields = {k: v for k, v in doc.items() if k not in consumed}
    return _record(raw, own_id, time_ms, level, severity, service, message, fields)


# --------------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------------


def _record(
    raw: RawEvent,
    own_id: str | None,
    time_ms: int | None,
    level: str | None,
    severity: str | None,
    service: str | None,
    message: str,
    fields: Mapping[str, Any],
) -> LogRecord:
    src = raw.source
    if time_ms is None or not _FIRST_MS <= time_ms <= _LAST_MS:  # _writable, inline: once per record
        time_ms = src.timestamp_ms if _writable(src.timestamp_ms) else None
    if severity is None:
        severity = infer_severity(message)
    if not service or not service.strip():
        service = raw.key.decode("utf-8", "replace") if raw.key else "unknown"
    return LogRecord(
        id=own_id or f"{src.topic}:{src.partition}:{src.offset}",
        time_ms=time_ms,
        level=level,
        severity=severity,
        service=service.strip()[:128] or "unknown",
        message=message,
        fields=fields,
        source=src,
        key=raw.key,
    )


def decode_log(
    raw: RawEvent, limits: DecodeLimits | None = None, layouts: Layouts | None = None
) -> LogRecord | DecodeFailure:
    """Bytes to a ``LogRecord`` (JSON object or text line), or a failure with a dead-letter code.

    ``layouts``: a text line whose key names a service with a layout is read with it first; lines it
    does not match fall back to header inference.
    """
    value = raw.value
    if value is None:
        return DecodeFailure(raw, "not_an_object", "record has no value (tombstone)")
    too_large = oversize(raw, value, (limits or _DEFAULT_LIMITS).max_event_bytes)
    if too_large is not None:
        return too_large
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return DecodeFailure(raw, "invalid_utf8", f"not UTF-8 at byte {exc.start}: {exc.reason}")
    if text[:1] == "\ufeff":  # a byte order mark some Windows shippers prepend
        text = text[1:]
    stripped = text.strip()
    if stripped[:1] == "{":
        return _decode_json(raw, stripped)
    line = text.rstrip("\r\n")
    if not stripped:
        return DecodeFailure(raw, "schema", "message: empty log line", field="message")
    p: _Parsed | None = None
    if layouts and raw.key is not None:
        rx = layouts.get(raw.key.decode("utf-8", "replace"))
        if rx is not None:
            p = _layout(line, rx)
    if p is None:
        p = _parse_text(line, raw.source)
    message = p.message if p.message.strip() else line
    return _record(raw, None, p.time_ms, p.level, p.severity, p.service, message, p.fields or {})


_DEFAULT_LIMITS: Final = DecodeLimits()


def decode_logs(
    raws: Iterable[RawEvent], limits: DecodeLimits | None = None, layouts: Layouts | None = None
) -> tuple[list[LogRecord], list[DecodeFailure]]:
    """Decode a batch, keeping order; failures go to the dead-letter topic, records to triage."""
    records: list[LogRecord] = []
    failures: list[DecodeFailure] = []
    for raw in raws:
        try:
            out = decode_log(raw, limits, layouts)
        except Exception as exc:
            out = DecodeFailure.decoder_error(raw, exc)
        if isinstance(out, LogRecord):
            records.append(out)
        else:
            failures.append(out)
    return records, failures
