"""Seeded tickets and log lines with planted personal data in many written formats, and a leak check.

Every planted value is recorded as ``Planted(format, kind, value)``, so a test can say, per output record,
which values may appear (those its topic's policy keeps) and find every other one, also when an output
re-spaces it (``compact``). A small pool of returning customers' addresses recurs across tickets and log
lines, to check that one address gets one pseudonym everywhere.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from hypothesis import strategies as st

from streamer.demo import valid_iban, valid_luhn_card

D = string.digits


@dataclass(frozen=True)
class Planted:
    format: str
    kind: str
    value: str


def digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(D) for _ in range(n))


PHONES: dict[str, Callable[[random.Random], str]] = {
    "phone-uk-intl": lambda r: f"+44 7700 900{digits(r, 3)}",
    "phone-us-intl-paren": lambda r: f"+1 (202) 555-0{digits(r, 3)}",
    "phone-us-intl-dash": lambda r: f"+1 202-555-0{digits(r, 3)}",
    "phone-de-intl": lambda r: f"+49 151 {digits(r, 8)}",
    "phone-fr-intl-pairs": lambda r: f"+33 6 {digits(r, 2)} {digits(r, 2)} {digits(r, 2)} {digits(r, 2)}",
    "phone-ie-intl": lambda r: f"+353 87 {digits(r, 3)} {digits(r, 4)}",
    "phone-us-paren": lambda r: f"(415) 555-{digits(r, 4)}",
    "phone-us-dash": lambda r: f"415-555-{digits(r, 4)}",
    "phone-us-paren-run": lambda r: f"(415)555{digits(r, 4)}",
    "phone-us-paren-space-run": lambda r: f"(415) 555{digits(r, 4)}",
    "phone-uk-trunk": lambda r: f"07700 900{digits(r, 3)}",
    "phone-de-slash": lambda r: f"030/{digits(r, 7)}",
    "phone-fr-pairs": lambda r: f"0{r.randint(1, 7)} {digits(r, 2)} {digits(r, 2)} {digits(r, 2)} {digits(r, 2)}",
    "phone-de-mobile": lambda r: f"0176 {digits(r, 8)}",
    "phone-uk-00": lambda r: f"0044 20 7946 {digits(r, 4)}",
    "phone-intl-wrapped": lambda r: f"+44 20\n7946 {digits(r, 4)}",
}


def _card_groups(number: str, sep: str) -> str:
    if len(number) == 15:  # Amex prints 4-6-5
        return sep.join([number[:4], number[4:10], number[10:]])
    return sep.join(number[i : i + 4] for i in range(0, len(number), 4))


def _card16(rng: random.Random) -> str:
    while True:
        number = valid_luhn_card(rng)
        if len(number) == 16:
            return number


CARDS: dict[str, Callable[[random.Random], str]] = {
    "card-compact": lambda r: valid_luhn_card(r),
    "card-spaced": lambda r: _card_groups(valid_luhn_card(r), " "),
    "card-dashed": lambda r: _card_groups(valid_luhn_card(r), "-"),
    "card-wrapped": lambda r: (lambda n: f"{n[:4]} {n[4:8]} {n[8:12]}\n{n[12:]}")(_card16(r)),
    "card-odd-groups": lambda r: (lambda n: f"{n[:5]} {n[5:10]} {n[10:]}")(_card16(r)),
}

_COUNTRIES = ["DE", "GB", "FR", "NL", "ES", "IT", "AT", "BE", "PL", "CH"]


def _iban_groups(value: str, sep: str) -> str:
    return sep.join(value[i : i + 4] for i in range(0, len(value), 4))


IBANS: dict[str, Callable[[random.Random], str]] = {
    "iban-compact": lambda r: valid_iban(r, r.choice(_COUNTRIES)),
    "iban-grouped": lambda r: _iban_groups(valid_iban(r, r.choice(_COUNTRIES)), " "),
    "iban-dashed": lambda r: _iban_groups(valid_iban(r, r.choice(_COUNTRIES)), "-"),
    "iban-wrapped": lambda r: (lambda g: g[:14] + "\n" + g[15:])(_iban_groups(valid_iban(r, "DE"), " ")),
}

_FIRST = ["jane", "omar", "li", "anna-maria", "zoe", "kofi", "mark"]
_LAST = ["doe", "haddad", "wei", "schmidt", "okafor", "nakamura", "brien"]
_DOMAINS = ["example.com", "mail.example.org", "example.co.uk", "sub.example.net"]
_IDN = ["bücher.de", "münchen.example", "пример.рф", "exämple.com"]


def _name(rng: random.Random) -> tuple[str, str, str]:
    return rng.choice(_FIRST), rng.choice(_LAST) + digits(rng, 2), rng.choice(_DOMAINS)


def _email(rng: random.Random, style: str) -> str:
    first, last, domain = _name(rng)
    if style == "plus":
        return f"{first}.{last}+{rng.choice(['support', '2024', 'x'])}@{domain}"
    if style == "apostrophe":
        return f"{first}.o'{last}@{domain}"
    if style == "quoted":
        return f'"{first} {last}"@{domain}'
    if style == "idn":
        return f"{first}{last}@{rng.choice(_IDN)}"
    if style == "punycode":
        return f"{first}.{last}@example.xn--p1ai"
    if style == "upper":
        return f"{first}.{last}@{domain}".upper()
    return f"{first}.{last}@{domain}"


EMAILS: dict[str, Callable[[random.Random], str]] = {
    f"email-{style}": (lambda s: lambda r: _email(r, s))(style)
    for style in ("plain", "plus", "apostrophe", "quoted", "idn", "punycode", "upper")
}


def _ipv6(rng: random.Random) -> str:
    groups = [f"{rng.randrange(1, 0xFFFF):x}" for _ in range(4)]
    return f"2001:db8:{groups[0]}:{groups[1]}::{groups[2]}:{groups[3]}"


IPS: dict[str, Callable[[random.Random], str]] = {
    "ipv4-public": lambda r: f"{r.randint(11, 99)}.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}",
    "ipv6": _ipv6,
    "ipv6-zone": lambda r: f"fe80::{r.randrange(0x100, 0xFFFF):x}:{r.randrange(0x100, 0xFFFF):x}%eth{r.randint(0, 3)}",
}


def _ssn(rng: random.Random, sep: str) -> str:
    area = rng.choice([a for a in range(1, 900) if a != 666])
    return f"{area:03d}{sep}{rng.randint(1, 99):02d}{sep}{rng.randint(1, 9999):04d}"


SSNS: dict[str, Callable[[random.Random], str]] = {
    "ssn-dashed": lambda r: _ssn(r, "-"),
    "ssn-spaced": lambda r: _ssn(r, " "),
}

FORMATS: dict[str, tuple[str, Callable[[random.Random], str]]] = {
    **{name: ("PHONE", make) for name, make in PHONES.items()},
    **{name: ("CARD", make) for name, make in CARDS.items()},
    **{name: ("IBAN", make) for name, make in IBANS.items()},
    **{name: ("EMAIL", make) for name, make in EMAILS.items()},
    **{name: ("IP", make) for name, make in IPS.items()},
    **{name: ("NATIONAL_ID", make) for name, make in SSNS.items()},
}

SENTENCES = {
    "EMAIL": ["Please write to me at {v} instead.", "My login email is {v}.", "CC {v} on the reply, please."],
    "PHONE": ["Call me back on {v} after 5pm.", "My mobile number is {v}.", "You can reach me by phone: {v}."],
    "CARD": ["The charge was on my card {v}.", "Refund it to card number {v} please.", "My visa card {v} was billed."],
    "IBAN": ["Send the refund to IBAN {v}.", "My account is {v}, please use that.", "Bank details: {v}."],
    "IP": ["I was logging in from {v} when it locked me out.", "Your firewall blocked {v} yesterday."],
    "NATIONAL_ID": ["My SSN is {v}, as the form asked.", "Social security number {v} for the tax form."],
}
OPENERS = [
    "I was charged twice for my subscription this month and I want the duplicate refunded.",
    "My account got locked after I changed my password and I can't get back in.",
    "The card payment for order ORD-481516 failed but the money left my account.",
    "Please close my account and delete my personal data.",
    "Your app keeps crashing when I open the statements page.",
    "Where is my parcel? It was due last week.",
]


def returning_customers(rng: random.Random, n: int = 12) -> list[str]:
    """Addresses that recur across tickets and log lines (some written in capitals elsewhere)."""
    return [_email(rng, "plain") for _ in range(n)]


def _inside_another(c: str, seen: set[str]) -> bool:
    """Whether compact value ``c`` lies inside another planted value, or another inside it.

    '+44 20 7946 6080' and '0044 20 7946 6080' are one number: planted in two tickets, the first would be
    "found" in the second's record wherever the policy keeps that ticket's own phone in clear, and read as
    a leak of the first ticket's value. Equal values (returning customers) are attributed correctly.
    """
    return any(c != o and (c in o or o in c) for o in seen if min(len(c), len(o)) >= 8)


def pii_tickets(
    rng: random.Random, n: int, run: str, pool: list[str]
) -> tuple[list[dict[str, Any]], dict[str, list[Planted]]]:
    """``n`` VIP tickets (every one escalates) with 1-4 planted values each, every format in turn.

    No planted value is written inside another (``_inside_another``), so a value found in a record names
    the tickets that planted it.
    """
    tickets: list[dict[str, Any]] = []
    planted: dict[str, list[Planted]] = {}
    seen: set[str] = set()
    names = list(FORMATS)
    for i in range(n):
        chosen = [names[(i + k * 7) % len(names)] for k in range(rng.randint(1, 4))]
        values: list[Planted] = []
        for fmt in dict.fromkeys(chosen):
            kind, make = FORMATS[fmt]
            value = make(rng)
            while _inside_another(compact(value), seen):
                value = make(rng)
            seen.add(compact(value))
            values.append(Planted(fmt, kind, value))
        if rng.random() < 0.15:
            email = rng.choice(pool)
            values.append(Planted("email-returning", "EMAIL", email.upper() if rng.random() < 0.3 else email))
        sentences = []
        for p in values:
            template = rng.choice(SENTENCES[p.kind])
            if p.format == "card-odd-groups":
                template = "My visa card {v} was billed."
            sentences.append(template.format(v=p.value))
        tid = f"PII-{run}-{i}"
        doc: dict[str, Any] = {
            "id": tid,
            "created_at": "2026-11-28T09:00:00Z",
            "channel": rng.choice(["email", "chat", "web"]),
            "body": " ".join([rng.choice(OPENERS), *sentences, "Thanks."]),
            "customer": {"id": f"C-{i}", "tier": "vip", "name": "Jane Doe"},
        }
        if rng.random() < 0.3:  # some in the subject too
            doc["subject"] = f"Urgent - {values[0].value}"
        if rng.random() < 0.2:  # and in metadata, as platforms attach the sender
            doc["metadata"] = {"from": values[0].value, "thread": [f"re: {values[-1].value}"]}
        tickets.append(doc)
        planted[tid] = values
    return tickets, planted


_SERVICES = ["auth", "payments", "checkout", "profile"]
_LOG_KINDS = {
    "EMAIL": ["email-plain", "email-plus", "email-apostrophe", "email-upper"],
    "IP": ["ipv4-public", "ipv4-private", "ipv6", "ipv6-zone"],
    "PHONE": ["phone-uk-intl", "phone-de-intl", "phone-us-paren-run", "phone-us-paren-space-run"],
    "CARD": ["card-spaced", "card-compact"],
    "IBAN": ["iban-compact"],
    "NATIONAL_ID": ["ssn-dashed"],
}
_LOG_FORMATS: dict[str, Callable[[random.Random], str]] = {
    **{k: v for k, (_, v) in FORMATS.items()},
    "ipv4-private": lambda r: f"10.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}",
}
_LOG_MESSAGES = [
    "Login failed for {v}",
    "password reset requested by {v}",
    "payment declined for {v} (insufficient funds)",
    "connection from {v} refused",
    "profile updated: {v}",
]


def pii_log_lines(rng: random.Random, n: int, pool: list[str]) -> tuple[list[bytes], list[Planted]]:
    """``n`` log lines (JSON records, text layouts, stack traces) each carrying one or two planted values."""
    lines: list[bytes] = []
    planted: list[Planted] = []
    kinds = list(_LOG_KINDS)
    for i in range(n):
        values = []
        for kind in rng.sample(kinds, rng.randint(1, 2)):
            fmt = rng.choice(_LOG_KINDS[kind])
            values.append(Planted(f"log-{fmt}", kind, _LOG_FORMATS[fmt](rng)))
        if rng.random() < 0.1:
            values.append(Planted("log-email-returning", "EMAIL", rng.choice(pool)))
        planted.extend(values)
        service = rng.choice(_SERVICES)
        level = rng.choice(["ERROR", "ERROR", "WARN", "INFO"])
        stamp = f"2026-11-28T09:{i // 60 % 60:02d}:{i % 60:02d}.{rng.randint(0, 999):03d}Z"
        message = rng.choice(_LOG_MESSAGES).format(v=values[0].value)
        others = " and ".join(p.value for p in values[1:])  # every planted value is written somewhere
        shape = i % 4
        if shape == 0:  # a shipper's JSON record
            doc: dict[str, Any] = {"timestamp": stamp, "level": level.lower(), "service": service, "message": message}
            if others:
                doc["message"] += f" (also {others})"
            if values[0].kind == "EMAIL":
                doc["user_id"] = values[0].value
            lines.append(orjson.dumps(doc))
        elif shape == 1:  # ISO timestamp, level, [service]
            tail = f" also {others}" if others else ""
            lines.append(f"{stamp} {level} [{service}] {message}{tail}".encode())
        elif shape == 2:  # a stack trace in one JSON record, a value on a continuation line
            trace = (
                f"{message}\njava.lang.IllegalStateException: rejected {others or values[0].value}\n"
                f"\tat com.shop.{service.title()}.handle({service.title()}.java:{rng.randint(10, 300)})"
            )
            lines.append(orjson.dumps({"timestamp": stamp, "level": "error", "service": service, "message": trace}))
        else:  # syslog
            tail = f" peer={others}" if others else ""
            lines.append(
                f"<11>Nov 28 09:{i // 60 % 60:02d}:{i % 60:02d} host-{i % 5} {service}[42]: {message}{tail}".encode()
            )
    return lines, planted


def compact(value: str) -> str:
    return "".join(ch for ch in value if ch.isalnum() or ch in "@.:")


def strings(value: Any) -> Iterator[str]:
    """Every string of a JSON value (keys too)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield str(k)
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def found_in(record: Any, values: list[Planted]) -> list[Planted]:
    """The planted values that appear in ``record``, as written or re-spaced (one string at a time)."""
    texts = list(strings(record))
    compacted = [compact(t) for t in texts]
    hits = []
    for p in values:
        c = compact(p.value)
        if any(p.value in t for t in texts) or (len(c) >= 8 and any(c in t for t in compacted)):
            hits.append(p)
    return hits


# Numbers as people and programs write them: groups of 1-6 digits, some in parentheses, joined by nothing or
# by the separators phone, card and id detectors accept, after the prefixes they look for.
_DIGIT_GROUP = st.builds(
    lambda n, paren, run: f"({run[:n]})" if paren else run[:n],
    st.integers(1, 6),
    st.booleans(),
    st.text(alphabet="0123456789", min_size=6, max_size=6),
)
_NUMBER = st.builds(
    lambda lead, groups, seps: lead + "".join(g + s for g, s in zip(groups, seps, strict=False)).rstrip(" -./"),
    st.sampled_from(["", "+", "0", "1", "00", "1 ", "+1 "]),
    st.lists(_DIGIT_GROUP, min_size=1, max_size=6),
    st.lists(st.sampled_from(["", " ", "-", ".", "/", "  "]), min_size=6, max_size=6),
)
_BEFORE = st.sampled_from(["", "call ", "phone: ", "tel ", "order ", "SSN ", "card ", "from 10.0.0.1 ", "ES", "X"])
_AFTER = st.sampled_from(["", " ext 12", " x5", " ok", "Z", "-A", " from 10.0.0.1", "\n"])


def written_numbers() -> st.SearchStrategy[str]:
    """Texts around one number in any grouping: where phone, card and id shapes are densest (hypothesis)."""
    return st.builds(lambda before, number, after: before + number + after, _BEFORE, _NUMBER, _AFTER)
