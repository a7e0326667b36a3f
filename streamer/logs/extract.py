"""Entities of a log line that ops tooling pivots on: exceptions and the top stack frame, error codes,
HTTP status, trace/span/request ids, user and tenant ids, IP addresses.

Built for the hot path: every pattern is precompiled and guarded by a substring test, so a line
without a stack trace or an id pays a few ``in`` checks, not a dozen regex scans.

Privacy: triage runs this on the *redacted* message, so ids that are personal data arrive as
placeholders (``[EMAIL_1]``). Values taken from structured fields are masked here by kind
(``[EMAIL]``). ``ip_entities`` lists infrastructure addresses (private, loopback, link-local), which
on-call pivots on, and only counts public ones; triage lists redacted addresses by placeholder, and the
privacy policy of the output topic decides what they become.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any, Final

from streamer.triage.pii import find_pii

__all__ = ["exception_type", "extract_log_entities", "ip_entities", "ip_is_internal"]

_EXCEPTION_LINE: Final = re.compile(
    r"^[ \t]*(?:Caused by: |Exception in thread \"[^\"\n]*\" |Uncaught |\w+Error: Uncaught )?"
    r"(?P<type>(?:[A-Za-z_$][\w$]*\.)*[A-Z][\w$]*(?:Exception|Error|Throwable|Exit|Interrupt|Fault))"
    r"(?::[ \t]?(?P<msg>[^\n]*))?[ \t]*$",
    re.M,
)
_JAVA_FRAME: Final = re.compile(r"^[ \t]*at (?P<frame>[\w$.<>/-]+\([^)\n]*\))", re.M)
_JS_FRAME: Final = re.compile(r"^[ \t]*at (?:(?P<fn>[^\s(]+) \()?(?P<loc>[^\s()]+:\d+:\d+)\)?[ \t]*$", re.M)
_PY_FRAME: Final = re.compile(r'^[ \t]*File "(?P<file>[^"\n]+)", line (?P<line>\d+), in (?P<fn>[^\s\n]+)', re.M)
_GO_PANIC: Final = re.compile(r"^panic: (?P<msg>[^\n]*)", re.M)
_GO_FRAME: Final = re.compile(r"^(?P<fn>[\w./*()-]+)\([^\n]*\)\n\t(?P<loc>\S+:\d+)", re.M)

_TRACEPARENT: Final = re.compile(r"\b00-(?P<trace>[0-9a-f]{32})-(?P<span>[0-9a-f]{16})-[0-9a-f]{2}\b")
_KEYED_ID: Final = re.compile(
    r"(?i)(?<![\w.-])(?P<key>x-request-id|x-correlation-id|trace[_.-]?id|span[_.-]?id|request[_.-]?id|req[_.-]?id|"
    r"correlation[_.-]?id|user[_.-]?id|tenant[_.-]?id|org(?:anization)?[_.-]?id|account[_.-]?id)"
    r"[\"']?\s*[=:]\s*[\"']?(?P<value>\[[A-Z_]+_\d+\]|[^\s\"',;)\]}>\[]{1,128})"
)
_KEY_ENTITY: Final = {
    "x-request-id": "request_id", "requestid": "request_id", "reqid": "request_id",
    "x-correlation-id": "request_id", "correlationid": "request_id",
    "traceid": "trace_id", "spanid": "span_id", "userid": "user_id", "tenantid": "tenant_id",
    "orgid": "tenant_id", "organizationid": "tenant_id", "accountid": "tenant_id",
}  # fmt: skip
_FIELD_ENTITY: Final = {
    "trace_id": "trace_id", "traceId": "trace_id", "trace.id": "trace_id", "dd.trace_id": "trace_id",
    "span_id": "span_id", "spanId": "span_id", "span.id": "span_id",
    "request_id": "request_id", "requestId": "request_id", "req_id": "request_id", "x_request_id": "request_id",
    "correlation_id": "request_id", "user_id": "user_id", "userId": "user_id", "tenant_id": "tenant_id",
    "tenantId": "tenant_id", "org_id": "tenant_id", "account_id": "tenant_id",
}  # fmt: skip
_STATUS_FIELDS: Final = ("http_status", "status", "status_code", "statusCode", "http.status_code", "response_status")

_HTTP_STATUS: Final = re.compile(
    r"(?:HTTP/\d(?:\.\d)?\"? (?P<a>[1-5]\d\d)\b|\bstatus(?:[ _-]?code)?[\"']?\s*[=:]?\s*(?P<b>[1-5]\d\d)\b"
    r"|\b(?:returned|responded with|response code) (?P<c>[1-5]\d\d)\b)",
    re.I,
)
# Substring gates: one C-level scan decides whether the full pattern is worth running.
_CODE_GATE: Final = re.compile(
    r"ERR|ORA-|SQLSTATE|errno|rror|code|ECONN|ETIMEDOUT|UNREACH|EPIPE|ENOENT|EACCES|EPERM|ENOSPC|EADDRINUSE|"
    r"ENOTFOUND|EAI_|EMFILE|ENOMEM|failed \(|timed out \("
)
_STATUS_GATE: Final = re.compile(r"HTTP|tatus|TATUS|returned |responded with|response code")
_ERROR_CODE: Final = re.compile(
    r"\b(?P<ora>ORA-\d{5})\b"
    r"|\bSQLSTATE\[?\s*(?P<sqlstate>[0-9A-Z]{5})\b"
    r"|\b(?P<errname>E(?:CONNREFUSED|CONNRESET|CONNABORTED|TIMEDOUT|HOSTUNREACH|NETUNREACH|PIPE|NOENT|ACCES|PERM|"
    r"NOSPC|ADDRINUSE|NOTFOUND|AI_AGAIN|MFILE|NOMEM|IO|BUSY|EXIST|ROFS|DQUOT))\b"
    r"|\b(?P<errconst>ERR_[A-Z0-9_]{3,})\b"
    r"|\bcode = (?P<grpc>[A-Z][A-Za-z]+)\b"
    r"|\b(?:errno|error[ _-]?code|err[ _-]?code)[\"']?\s*[=:]?\s*(?P<num>-?\d{1,6}|[A-Z][A-Z0-9_]{2,40})\b"
    r"|\((?P<paren>\d{1,5}): [A-Z][a-z]"
)
_IPV4: Final = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(?![\d.])")  # leads with a digit: fast scan
_IPV6: Final = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{1,4}(?![\w:])")
_DIGIT_DOT: Final = frozenset("0123456789.")
_IP_CACHE: dict[str, bool | None] = {}


def exception_type(message: str) -> str | None:
    """The first exception class named in a multi-line record (``java.lang.NullPointerException``)."""
    if "\n" not in message and "Exception" not in message and "Error" not in message:
        return None
    m = _EXCEPTION_LINE.search(message)
    if m is not None:
        return m.group("type")
    if "panic: " in message and "goroutine " in message:
        return "panic"
    return None


def _stack(message: str, out: dict[str, Any]) -> None:
    types: list[str] = []
    first_msg: str | None = None
    for m in _EXCEPTION_LINE.finditer(message):
        t = m.group("type")
        if t not in types:
            types.append(t)
            if first_msg is None and m.group("msg"):
                first_msg = m.group("msg").strip()[:300]
    frame: str | None = None
    if "\n" in message:
        if 'File "' in message:
            frames = _PY_FRAME.findall(message)
            if frames:  # Python prints the innermost frame last
                file, line, fn = frames[-1]
                frame = f"{file}:{line} in {fn}"
        if frame is None and "at " in message:
            jm = _JAVA_FRAME.search(message)
            if jm is not None:
                frame = jm.group("frame")
            else:
                js = _JS_FRAME.search(message)
                if js is not None:
                    frame = f"{js.group('fn')} ({js.group('loc')})" if js.group("fn") else js.group("loc")
        if frame is None and "goroutine " in message:
            panic = _GO_PANIC.search(message)
            if panic is not None:
                if "panic" not in types:
                    types.insert(0, "panic")
                first_msg = first_msg or panic.group("msg")[:300]
            gm = _GO_FRAME.search(message)
            if gm is not None:
                frame = f"{gm.group('fn')} {gm.group('loc')}"
    if types:
        out["exception_types"] = types
    if first_msg:
        out["exception_message"] = first_msg
    if frame:
        out["top_frame"] = frame


def ip_is_internal(text: str) -> bool | None:
    """True for infrastructure addresses, False for public ones, None for a non-address."""
    if text in _IP_CACHE:
        return _IP_CACHE[text]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        result: bool | None = None
    else:
        result = ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_unspecified
    if len(_IP_CACHE) > 65536:
        _IP_CACHE.clear()
    _IP_CACHE[text] = result
    return result


def ip_entities(message: str) -> dict[str, Any]:
    """Internal IPs in clear (``ips``) and how many public ones appear (``public_ips``)."""
    found: list[str] = []
    if "." in message:
        found = [
            m.group() for m in _IPV4.finditer(message) if m.start() == 0 or message[m.start() - 1] not in _DIGIT_DOT
        ]
    if "::" in message or message.count(":") >= 7:
        found += _IPV6.findall(message)
    internal: list[str] = []
    public = 0
    for text in found:
        kind = ip_is_internal(text)
        if kind is True:
            if text not in internal:
                internal.append(text)
        elif kind is False:
            public += 1
    out: dict[str, Any] = {}
    if internal:
        out["ips"] = internal
    if public:
        out["public_ips"] = public
    return out


_PERSONAL: Final = frozenset({"user_id", "tenant_id"})


def _field_value(name: str, value: Any) -> str | None:
    if isinstance(value, bool) or value is None or isinstance(value, Mapping | list):
        return None
    text = str(value).strip()[:128]
    if not text:
        return None
    if name in _PERSONAL:  # machine ids (trace, span, request) are not personal data; people's may be
        text = _mask_kinds(text)
    return text


def _mask_kinds(text: str) -> str:
    """Personal data replaced by its kind alone (``[EMAIL]``): a field's own numbering would clash with
    the message's ``[EMAIL_1]``, which the privacy policy may put a value back into."""
    spans = find_pii(text)
    for span in reversed(spans):
        text = f"{text[: span.start]}[{span.kind}]{text[span.end :]}"
    return text


def extract_log_entities(message: str, fields: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Entities of one log line; keys are present only when found. Run it on the redacted message."""
    out: dict[str, Any] = {}
    if "\n" in message or "Exception" in message or "Error" in message or "panic: " in message:
        _stack(message, out)
    if fields:
        for key, name in _FIELD_ENTITY.items():
            if name not in out and key in fields:
                value = _field_value(name, fields[key])
                if value is not None:
                    out[name] = value
        for key in _STATUS_FIELDS:
            status = fields.get(key)
            if isinstance(status, int) and not isinstance(status, bool) and 100 <= status <= 599:
                out["http_status"] = status
                break
            if isinstance(status, str) and status.isascii() and status.isdigit() and 100 <= int(status) <= 599:
                out["http_status"] = int(status)
                break
    if "00-" in message and "trace_id" not in out:
        tp = _TRACEPARENT.search(message)
        if tp is not None:
            out["trace_id"] = tp.group("trace")
            out.setdefault("span_id", tp.group("span"))
    if "id" in message or "Id" in message or "ID" in message:
        for m in _KEYED_ID.finditer(message):
            written = m.group("key").lower()
            entity = _KEY_ENTITY.get(written) or _KEY_ENTITY.get(re.sub(r"[_.-]", "", written))
            if entity is not None and entity not in out:
                out[entity] = m.group("value")
    if "http_status" not in out and _STATUS_GATE.search(message):
        hs = _HTTP_STATUS.search(message)
        if hs is not None:
            out["http_status"] = int(hs.group("a") or hs.group("b") or hs.group("c"))
    if _CODE_GATE.search(message):
        codes: list[str] = []
        for m in _ERROR_CODE.finditer(message):
            code = next(g for g in m.groups() if g is not None)
            if code not in codes:
                codes.append(code)
        if codes:
            out["error_codes"] = codes[:10]
    return out
