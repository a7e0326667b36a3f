"""``find_ips_only``: the cheap path for log lines must give exactly what ``find_pii`` gives, or decline."""

from __future__ import annotations

import pytest
from fakes.pii_corpus import written_numbers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamer.triage.pii import _shows_non_ip, find_ips_only, find_pii, redact, redact_spans

_PARTS = st.sampled_from(
    ["bob@example.com", "a%40b.io", "+44 20 7946 0958", "(555) 123-4567", "555-123-4567 phone", "4111 1111 1111 1111",
     "DE89 3704 0044 0532 0130 00", "123-45-6789", "SSN 123456789", "AB 12 34 56 C", "12345678Z", "X1234567L",
     "RSSMRA85T10A562S", "10.0.0.1", "192.168.1.20:8080", "v1.2.3.4", "version 10.0.0.1",
     "2001:db8:85a3::8a2e:370:7334", "fe80::1%eth0", "::1", "[10.0.0.1]",
     "https://u:p@h.example.com/", "call 07700 900123", "port 22", "pid=4242",
     "2024:08:00:00", "200 64092", "1.2.3.4.5", "01.02.2024", "255.255.255.255", "010.1.1.1", "0.0.0.0"]
)  # fmt: skip
_FILLER = st.text(alphabet=st.sampled_from(list("abc XYZ019:-./@()+%[]\n")), max_size=30)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(_PARTS, _FILLER), max_size=7), st.sampled_from([" ", "", ":", "/", "-", "."]))
def test_ips_only_is_find_pii_or_declines(parts: list[str], sep: str) -> None:
    text = sep.join(parts)
    fast = find_ips_only(text)
    if fast is not None:
        assert fast == find_pii(text), text
        assert redact_spans(text, fast) == redact(text), text


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(_PARTS, _FILLER), max_size=6))
def test_every_non_ip_value_holds_the_gate_within_itself(parts: list[str]) -> None:
    """The premise of the fast path: what other detectors report shows by itself (``_shows_non_ip``).

    In a text without line breaks: the fast path declines every other text before it looks.
    """
    text = " ".join(parts).replace("\n", " ")
    for span in find_pii(text):
        if span.kind != "IP":  # a URL credential is followed by its '@'
            assert _shows_non_ip(text[span.start : span.end + 1], text), span


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(written_numbers())
def test_every_number_shape_a_detector_reports_holds_the_gate(text: str) -> None:
    """Digit runs in every grouping: the premise and the fast path hold where the shapes are densest."""
    for span in find_pii(text):
        if span.kind != "IP" and "\n" not in text:
            assert _shows_non_ip(text[span.start : span.end + 1], text), (text, span)
    fast = find_ips_only(text)
    if fast is not None:
        assert fast == find_pii(text), text


@pytest.mark.parametrize(
    "line",
    ["call me at (555)1234567", "phone (555) 1234567 from 10.0.0.1", "tel 1(555)1234567"],
)
def test_nanp_numbers_without_a_separated_group_are_not_taken_for_ip_only(line: str) -> None:
    assert any(span.kind == "PHONE" for span in find_pii(line))
    assert find_ips_only(line) is None


@pytest.mark.parametrize(
    "line",
    [
        "Failed password for root from 203.0.113.9 port 41234 ssh2",
        "Accepted publickey for deploy from 10.0.0.1 port 22 ssh2: RSA key",
        "connection from 192.0.2.1 to 198.51.100.7:8443 closed at 10:00:01",
        '10.0.0.9 - - [03/Jun/2024:08:00:00 +0000] "GET /api/v1/orders/74731 HTTP/1.1" 200 64092 "-" "curl/8.0"',
        "BLOCK* NameSystem.addStoredBlock: blockMap updated: 10.251.73.220:50010 is added to blk_1",
        '10.32.74.224 - - [03/Jun/2024:08:00:16 +0000] "GET /checkout/confirm HTTP/1.1" 200 5887 "-" "curl/8.0"',
        "Accepted publickey for deploy from 192.0.2.151 port 25140 ssh2: RSA SHA256:IpzMGni3WhRGfI2rVXWybQ",
    ],
)
def test_log_lines_with_addresses_take_the_fast_path(line: str) -> None:
    fast = find_ips_only(line)
    assert fast is not None and fast == find_pii(line) and fast


@pytest.mark.parametrize(
    "line",
    [
        "login bob@example.com from 10.0.0.1",
        "call +44 20 7946 0958 from 10.0.0.1",
        "card 4111 1111 1111 1111",
        "callback 555-1234 from 10.0.0.1",  # a local number only counts near a phone word: there is one
        "from 10.0.0.1 IBAN DE89 3704 0044 0532 0130 00",
        "connection from 192.0.2.1 to fe80::1:2:3:4 closed",
    ],
)
def test_lines_with_other_kinds_decline(line: str) -> None:
    assert find_ips_only(line) is None


def _curated_texts() -> list[str]:
    """Every string literal of the redaction tests: the curated positives and negatives of each kind."""
    import ast
    from pathlib import Path

    tree = ast.parse((Path(__file__).parent / "test_pii.py").read_text(encoding="utf-8"))
    return sorted({n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)})


def test_the_premise_holds_on_every_curated_example() -> None:
    texts = _curated_texts()
    assert len(texts) > 100
    checked = 0
    for text in texts:
        for span in find_pii(text):
            if span.kind != "IP" and "\n" not in text:  # the fast path declines every text with a line break
                checked += 1
                assert _shows_non_ip(text[span.start : span.end + 1], text), (text, span)
        fast = find_ips_only(text)
        if fast is not None:
            assert fast == find_pii(text), text
    assert checked > 50
