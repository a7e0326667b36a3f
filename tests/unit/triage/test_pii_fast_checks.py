"""The cheap checks on the redactor's hot path answer exactly what the checks they stand for answer."""

from __future__ import annotations

import ipaddress
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamer.logs.triage import _MAYBE_PII
from streamer.triage.pii import (
    _VERSION_CONTEXT_RE,
    _before,
    _canonical_ipv4,
    _ipv6_parts_ok,
    _version_labelled,
    normalise,
)

_WORDS = st.sampled_from(
    ["v", "V", "ver", "Version", "VERSIONS", "build", "release", "rel", "firmware", "fw", "SDK", "patch", "rev",
     "revision", "Chrome", "chromium", "Firefox", "Safari", "Edge", "Edg", "OPR", "Opera", "AppleWebKit", "CriOS",
     "FxiOS", "Gecko", "Trident", "MSIE", "SamsungBrowser", "YaBrowser", "Mobile", "is", "IS", "from", "to", "xv",
     "vv", "buildx", "ſdk", "rEV", "\u212ait", "edgE", "İs"]
)  # fmt: skip
_GLUE = st.text(alphabet=st.sampled_from(list(" \t\u00a0\u3000\n:=#/._-[]()\"',;ſ\u212a0129aZ")), max_size=4)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(_WORDS, _GLUE), max_size=10), st.sampled_from(["1.2.3.4", "10.0.0.1", "x"]))
def test_version_label_check_is_the_search_it_replaces(parts: list[str], value: str) -> None:
    head = "".join(parts)
    text = head + value
    expected = _VERSION_CONTEXT_RE.search(_before(text, len(head))) is not None
    assert _version_labelled(text, len(head)) == expected, repr(head)


@pytest.mark.parametrize(
    ("head", "labelled"),
    [
        ("version ", True), ("fw: ", True), ("Build #", True), ("ver is ", True), ("Chrome/", True),
        ("updated to ", False), ("from ", False), ("", False), ("[", False), ("(version ", True),
        ("version\n", False), ("x" * 60 + " rev ", True), ("prev ", False), ("Edg/", True),
    ],
)  # fmt: skip
def test_version_labels(head: str, labelled: bool) -> None:
    assert _version_labelled(head + "1.2.3.4", len(head)) is labelled


def _ipv6_parses(addr: str) -> bool:
    try:
        ipaddress.IPv6Address(addr)
    except ValueError:
        return False
    return True


_HEX_GROUPS = st.lists(
    st.one_of(st.text(alphabet="0123456789abcdefABCDEF", max_size=5), st.sampled_from(["1.2.3.4", "256.1.1.1"])),
    min_size=1,
    max_size=10,
)


@settings(max_examples=3000, deadline=None)
@given(_HEX_GROUPS)
def test_ipv6_pre_check_never_rejects_an_address(groups: list[str]) -> None:
    addr = ":".join(groups)
    if _ipv6_parses(addr):
        assert _ipv6_parts_ok(addr), addr


@pytest.mark.parametrize(
    ("addr", "ok"),
    [("2001:db8::1", True), ("1:2:3:4:5:6:7:8", True), ("::ffff:1.2.3.4", True), ("1:2:3:4:5:6:1.2.3.4", True),
     ("2024:08:22:55", False), ("10:00:00", False), ("1:2:3:4:5:6:7", False)],
)  # fmt: skip
def test_ipv6_pre_check(addr: str, ok: bool) -> None:
    assert _ipv6_parts_ok(addr) is ok
    assert _ipv6_parses(addr) is ok


@settings(max_examples=3000, deadline=None)
@given(
    st.lists(
        st.one_of(st.integers(0, 300).map(str), st.sampled_from(["01", "00", "0", "255", "256", "1\u0661", "", " 1"])),
        min_size=1,
        max_size=5,
    )
)
def test_ip_normal_form_is_what_ipaddress_writes(octets: list[str]) -> None:
    value = ".".join(octets)
    try:
        expected = str(ipaddress.ip_address(value))
    except ValueError:
        expected = value
    assert normalise("IP", value) == expected
    if _canonical_ipv4(value):
        assert expected == value


# The log redaction gate as first written, letters tried at every offset; ``_MAYBE_PII`` looks letters behind.
_GATE_AS_WRITTEN = re.compile(
    r"@|%40|\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}|[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{0,4}:|\d(?:[\s\-./()+]{0,3}\d){6,}"
    r"|[A-Za-z]{2} ?\d{2}(?: ?\d{2}){2}|[A-Za-z]{6}\d{2}"
)


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("abcdefXYZg019\u0661 \t:-./@()+%\n")), max_size=24))
def test_the_log_redaction_gate_matches_where_it_did(text: str) -> None:
    assert (_MAYBE_PII.search(text) is None) == (_GATE_AS_WRITTEN.search(text) is None), repr(text)
