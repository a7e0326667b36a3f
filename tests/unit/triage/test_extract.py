"""Entity extraction: ids, amounts, dates, URLs, versions, error codes, and the rule that personal data
never reaches an entity list."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamer.triage.extract import Extraction, extract
from streamer.triage.pii import find_pii, redact


def values(items: list[Any], attr: str = "value") -> list[Any]:
    return [getattr(item, attr) for item in items]


# --- ids -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("my order #12345 hasn't arrived", ["12345"]),
        ("Order 123-4567 is late", ["123-4567"]),
        ("ORD-12345 and ORD98765", ["ORD-12345", "ORD98765"]),
        ("order number: A12345", ["A12345"]),
        ("Order ID 98765 please", ["98765"]),
        ("order no. 55512", ["55512"]),
        ("PO 12345 and SO-2024-0001", ["PO-12345", "SO-2024-0001"]),
        ("Bestellnummer 998877", ["998877"]),
        ("commande n° 12345", ["12345"]),
        ("mi pedido 4455667 no llegó", ["4455667"]),
        ("Where is #998877? I ordered it last week", ["998877"]),
        ("#123456 still not shipped", ["123456"]),
        ("https://shop.example.com/orders/ORD-98765?x=1", ["ORD-98765"]),
        ("Order ORD-12345, again ORD-12345", ["ORD-12345"]),
    ],
)
def test_order_ids(text: str, expected: list[str]) -> None:
    assert values(extract(text).order_ids) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Ticket TCK-1234 is still open", ["TCK-1234"]),
        ("please update ticket #4521", ["4521"]),
        ("Re: [#4521] Refund", ["4521"]),
        ("case 00123456 was closed", ["00123456"]),
        ("INC0012345 and RITM0067890", ["INC0012345", "RITM0067890"]),
        ("Following up on #4521 from the ticket you opened", ["4521"]),
        ("support request 77881 got no reply", ["77881"]),
    ],
)
def test_ticket_ids(text: str, expected: list[str]) -> None:
    assert values(extract(text).ticket_ids) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Account no. 88123456 was charged", ["88123456"]),
        ("account ID: ACC-00123", ["ACC-00123"]),
        ("customer id C-12345", ["C-12345"]),
        ("my account number is 7788990011", ["7788990011"]),
        ("Kundennummer 4711001", ["4711001"]),
        ("CUST-99812 cannot log in", ["CUST-99812"]),
    ],
)
def test_account_ids(text: str, expected: list[str]) -> None:
    assert values(extract(text).account_ids) == expected


@pytest.mark.parametrize(
    "text",
    [
        "I ordered 2 more",
        "order 2024 was fine",
        "my order on 2024-03-12",
        "order 12/03/2024 arrived",
        "my account was charged twice",
        "customer since 2019",
        "case closed",
        "the request 3 times",
        "color #ff0000 and &#8364;",
        "issue #12",
    ],
)
def test_no_ids(text: str) -> None:
    e = extract(text)
    assert e.order_ids == [] and e.ticket_ids == [] and e.account_ids == [], e.to_dict()


def test_account_that_is_an_iban_is_reported_as_pii_only() -> None:
    e = extract("Please change my account DE89 3704 0044 0532 0130 00 to the new one.")
    assert e.account_ids == []
    assert [(p.kind, p.placeholder) for p in e.pii] == [("IBAN", "[IBAN_1]")]
    assert "DE89" not in json.dumps(e.to_dict())


def test_order_number_that_is_a_card_is_reported_as_pii_only() -> None:
    e = extract("order 4111 1111 1111 1111 was charged twice")
    assert e.order_ids == []
    assert e.to_dict()["pii"] == [{"kind": "CARD", "placeholder": "[CARD_1]"}]


def test_order_number_failing_luhn_is_an_order() -> None:
    e = extract("order 4111111111111112 was charged twice")
    assert values(e.order_ids) == ["4111111111111112"]
    assert e.pii == []


# --- amounts -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "amount", "currency"),
    [
        ("charged $1,234.50 twice", "1234.50", "USD"),
        ("only €12", "12", "EUR"),
        ("it was 12 EUR", "12", "EUR"),
        ("£3.99 per month", "3.99", "GBP"),
        ("paid 100 dollars", "100", "USD"),
        ("1.234,56 € zu viel", "1234.56", "EUR"),
        ("12,50 €", "12.50", "EUR"),
        ("CHF 1'234.50", "1234.50", "CHF"),
        ("refund of -$5.00", "-5.00", "USD"),
        ("$5k budget", "5000", "USD"),
        ("€1.5m deal", "1500000", "EUR"),
        ("12 500 € au total", "12500", "EUR"),
        ("USD1,000.00", "1000.00", "USD"),
        ("usd 20", "20", "USD"),
        ("¥500", "500", "JPY"),
        ("CN¥ 20", "20", "CNY"),
        ("R$ 50,00", "50.00", "BRL"),
        ("C$ 15", "15", "CAD"),
        ("20 zł", "20", "PLN"),
        ("50 quid", "50", "GBP"),
        ("5 euros", "5", "EUR"),
        ("₹1,499", "1499", "INR"),
        ("€1.234", "1234", "EUR"),
        ("$1.5", "1.5", "USD"),
        ("1 000 000 USD", "1000000", "USD"),
    ],
)
def test_amounts(text: str, amount: str, currency: str) -> None:
    e = extract(text)
    assert [(a.amount, a.currency) for a in e.amounts] == [(amount, currency)], e.to_dict()


@pytest.mark.parametrize(
    "text",
    ["I paid 1,234.50 today", "100 pounds of flour", "3 kr", "version 5.4", "12 items", "$", "EUR", "page 3 of 10"],
)
def test_no_amounts(text: str) -> None:
    assert extract(text).amounts == []


def test_amounts_are_deduplicated_by_value() -> None:
    e = extract("€12 and 12 EUR and 12,00 € again")
    assert [(a.amount, a.currency) for a in e.amounts] == [("12", "EUR"), ("12.00", "EUR")]


# --- dates ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "raw", "relative", "iso"),
    [
        ("on 2024-03-12 it broke", "2024-03-12", False, "2024-03-12"),
        ("at 2024-03-12T10:15:00Z", "2024-03-12T10:15:00Z", False, "2024-03-12"),
        ("2024/03/12", "2024/03/12", False, "2024-03-12"),
        ("since 12/03/2024", "12/03/2024", False, None),
        ("since 25/03/2024", "25/03/2024", False, "2024-03-25"),
        ("since 03/25/2024", "03/25/2024", False, "2024-03-25"),
        ("am 01.02.2024", "01.02.2024", False, None),
        ("am 13.02.2024", "13.02.2024", False, "2024-02-13"),
        ("on March 3rd", "March 3rd", False, None),
        ("on Mar 3, 2024", "Mar 3, 2024", False, "2024-03-03"),
        ("on 3 March 2024", "3 March 2024", False, "2024-03-03"),
        ("on the 3rd of March", "3rd of March", False, None),
        ("Sept. 12", "Sept. 12", False, None),
        ("since May 2024", "May 2024", False, None),
        ("it stopped yesterday", "yesterday", True, None),
        ("since last Monday", "last Monday", True, None),
        ("2 days ago", "2 days ago", True, None),
        ("a couple of days ago", "a couple of days ago", True, None),
        ("the day before yesterday", "the day before yesterday", True, None),
        ("seit gestern", "gestern", True, None),
        ("earlier today", "earlier today", True, None),
    ],
)
def test_dates(text: str, raw: str, relative: bool, iso: str | None) -> None:
    e = extract(text)
    assert [(d.text, d.relative, d.iso) for d in e.dates] == [(raw, relative, iso)], e.to_dict()


@pytest.mark.parametrize(
    "text",
    ["may I ask", "in May we", "1.2.24 is out", "2024-13-45", "32/13/2024", "version 12.03.2024", "v1.2.2024"],
)
def test_no_dates(text: str) -> None:
    assert extract(text).dates == []


# --- URLs ----------------------------------------------------------------------------------------


def test_urls_keep_placeholders_and_drop_trailing_punctuation() -> None:
    e = extract(
        "See https://x.com/u?email=a@b.com, (https://example.com/x) and www.example.org/help. "
        "Also https://en.wikipedia.org/wiki/Foo_(bar)."
    )
    assert [(u.text, u.value) for u in e.urls] == [
        ("https://x.com/u?email=[EMAIL_1]", "x.com"),
        ("https://example.com/x", "example.com"),
        ("www.example.org/help", "www.example.org"),
        ("https://en.wikipedia.org/wiki/Foo_(bar)", "en.wikipedia.org"),
    ]
    assert "a@b.com" not in json.dumps(e.to_dict())


def test_url_host_is_a_placeholder_when_it_is_an_address() -> None:
    e = extract("dashboard at http://10.0.0.12:8080/status is down; http://[2001:db8::1]/ too")
    assert values(e.urls) == ["[IP_1]", "[IP_2]"]


def test_url_with_credentials() -> None:
    e = extract("ftp://bob:hunter2@ftp.example.com/pub")
    assert [(u.text, u.value) for u in e.urls] == [("ftp://[CREDENTIAL_1]@ftp.example.com/pub", "ftp.example.com")]


def test_entities_inside_urls_are_not_reported_except_ids() -> None:
    e = extract("https://cdn.example.com/v2.3.1/2024-03-12/app.js?price=$5&order=ORD-12345")
    assert e.versions == [] and e.dates == [] and e.amounts == []
    assert values(e.order_ids) == ["ORD-12345"]


# --- versions ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "product", "version"),
    [
        ("crashes on iOS 17.2", "ios", "17.2"),
        ("since v2.3.1", None, "2.3.1"),
        ("app version 5.4", "app", "5.4"),
        ("Android 14 only", "android", "14"),
        ("Mozilla/5.0 Chrome/120.0.0.0", "chrome", "120.0.0.0"),
        ("version 1.2.3.4", None, "1.2.3.4"),
        ("Windows 11", "windows", "11"),
        ("macOS 14.2.1", "macos", "14.2.1"),
        ("Python 3.11.7", "python", "3.11.7"),
        ("V3.0.0-beta.1", None, "3.0.0-beta.1"),
        ("firmware version: 2.0.7", "firmware", "2.0.7"),
        ("build 1234", None, "1234"),
    ],
)
def test_versions(text: str, product: str | None, version: str) -> None:
    e = extract(text)
    assert [(v.product, v.version) for v in e.versions] == [(product, version)], e.to_dict()


def test_version_that_looks_like_an_address_is_not_pii() -> None:
    e = extract("upgraded to v1.2.3.4 and version 10.0.0.1")
    assert e.pii == []
    assert values(e.versions, "version") == ["1.2.3.4", "10.0.0.1"]


@pytest.mark.parametrize("text", ["v2", "the version", "word 2016", "iPhone 15"])
def test_no_versions(text: str) -> None:
    assert extract(text).versions == []


# --- error codes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code", "scheme"),
    [
        ("failed with E1234", "E1234", "alnum"),
        ("ERR_CONNECTION_RESET in Chrome", "ERR_CONNECTION_RESET", "symbolic"),
        ("NET::ERR_CERT_AUTHORITY_INVALID", "NET::ERR_CERT_AUTHORITY_INVALID", "symbolic"),
        ("grpc PERMISSION_DENIED", "PERMISSION_DENIED", "symbolic"),
        ("got HTTP 503", "503", "http"),
        ("HTTP/1.1 404", "404", "http"),
        ("status code 502", "502", "http"),
        ("returned 500 Internal Server Error", "500", "http"),
        ("404 Not Found", "404", "http"),
        ("Windows error 0x80070005", "0x80070005", "hex"),
        ("stop code 0xc000021a", "0xC000021A", "hex"),
        ("error code 504", "504", "numeric"),
        ("exit code 137", "137", "numeric"),
        ("errno 13", "13", "numeric"),
        ("connect ECONNREFUSED", "ECONNREFUSED", "errno"),
        ("java.lang.NullPointerException at", "java.lang.NullPointerException", "exception"),
        ("TypeError: x is undefined", "TypeError", "exception"),
        ("ORA-12154 on connect", "ORA-12154", "alnum"),
        ("AADSTS50076 when signing in", "AADSTS50076", "alnum"),
    ],
)
def test_error_codes(text: str, code: str, scheme: str) -> None:
    e = extract(text)
    assert [(c.code, c.scheme) for c in e.error_codes] == [(code, scheme)], e.to_dict()


@pytest.mark.parametrize(
    "text",
    ["Error: boom", "error 2 times", "promo code SAVE20", "zip code 10001", "MAX_RETRIES = 3", "[NATIONAL_ID_1]"],
)
def test_no_error_codes(text: str) -> None:
    assert extract(text).error_codes == []


# --- the whole record ----------------------------------------------------------------------------

KEYS = ["order_ids", "account_ids", "ticket_ids", "amounts", "dates", "urls", "versions", "error_codes", "pii"]


def test_to_dict_has_stable_keys_and_is_json() -> None:
    assert list(extract("").to_dict()) == KEYS
    text = (
        "Hi, order #12345 (ORD-55512) was charged $1,234.50 on 12/03/2024. The app v2.3.1 on iOS 17.2 shows "
        "ERR_CONNECTION_RESET. Call me at (555) 123-4567 or mail jane@example.com; IBAN DE89370400440532013000. "
        "See https://status.example.com/incidents/42. Ticket TCK-1234."
    )
    d = extract(text).to_dict()
    assert list(d) == KEYS
    assert json.loads(json.dumps(d)) == d
    assert d["pii"] == [
        {"kind": "PHONE", "placeholder": "[PHONE_1]"},
        {"kind": "EMAIL", "placeholder": "[EMAIL_1]"},
        {"kind": "IBAN", "placeholder": "[IBAN_1]"},
    ]
    assert d["amounts"] == [{"text": "$1,234.50", "amount": "1234.50", "currency": "USD"}]
    assert d["error_codes"] == [{"text": "ERR_CONNECTION_RESET", "code": "ERR_CONNECTION_RESET", "scheme": "symbolic"}]
    for span in find_pii(text):
        assert span.value not in json.dumps(d, ensure_ascii=False)


def test_offsets_index_the_redacted_text() -> None:
    e = extract("Call 555-123-4567 about order #12345 and $20.")
    assert e.text == "Call [PHONE_1] about order #12345 and $20."
    for entity in e.order_ids:
        assert e.text[entity.start : entity.end] == entity.text
    for amount in e.amounts:
        assert e.text[amount.start : amount.end] == amount.text
    ref = e.pii[0]
    assert e.text[ref.start : ref.end] == ref.placeholder == "[PHONE_1]"


def test_reusing_a_redaction_gives_the_same_result() -> None:
    text = "order #12345, card 4111 1111 1111 1111, $5, https://x.com/?e=a@b.com"
    assert extract(text, redact(text)) == extract(text)


def test_is_frozen() -> None:
    e = extract("order #12345")
    assert isinstance(e, Extraction)
    with pytest.raises(AttributeError):
        e.text = "x"  # type: ignore[misc]


def test_pathological_inputs_stay_fast() -> None:
    inputs = [
        "https://x" + ")" * 30000,
        "https://a.com/x ORD-12345 $5 2024-03-12 " * 1000,
        "$1," * 15000,
        "ticket #12345 " * 3000,
        "March " * 8000,
        "order " * 8000,
    ]
    for text in inputs:
        t0 = time.perf_counter()
        extract(text)
        assert time.perf_counter() - t0 < 5.0, text[:20]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.text(max_size=10),
            st.sampled_from(
                [
                    "order #12345",
                    "$1,234.50",
                    "a@b.com",
                    "4111 1111 1111 1111",
                    "https://x.com/?e=",
                    "v1.2.3.4",
                    "HTTP 503",
                    "12/03/2024",
                    "yesterday",
                    "[EMAIL_1]",
                    "DE89370400440532013000",
                    "#",
                    "€",
                    " ",
                ]
            ),
        ),
        max_size=10,
    ).map("".join)
)
def test_extract_never_raises_and_never_leaks(text: str) -> None:
    d = extract(text).to_dict()
    dumped = json.dumps(d, ensure_ascii=False)
    assert json.loads(dumped) == d
    for span in find_pii(text):
        assert span.value not in dumped
