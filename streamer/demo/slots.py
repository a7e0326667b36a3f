"""Placeholder values of the demo traffic: ``{order}``, ``{amount}``, ``{ip}``, ... drawn from one seeded generator.

Tickets and log lines share them. The value lists are data (``phrasings/slots.yaml``); how a value is
made (an order number's range, an IP's networks, a date relative to the ticket's time) is code here.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from functools import cache

from streamer.demo.phrasings import slot_values

__all__ = ["DERIVED", "MONTHS", "START", "Slots", "alnum", "amount", "email", "hex_digits", "ip", "phone", "slot_names"]

#: Where demo time starts unless a caller says otherwise: never the wall clock, so runs repeat.
START = datetime(2024, 6, 3, 8, 0, 0, tzinfo=timezone.utc)
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NAMES = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def amount(rng: random.Random) -> str:
    return f"${rng.choice((9, 12, 19, 24, 29, 49, 79, 99, 149, 199, 249, 499))}.{rng.choice(('00', '99', '50', '95'))}"


def ip(rng: random.Random) -> str:
    net = rng.choice(("10.{}.{}.{}", "192.0.2.{2}", "198.51.100.{2}", "203.0.113.{2}", "172.16.{1}.{2}"))
    return net.format(rng.randint(0, 255), rng.randint(0, 255), rng.randint(1, 254))


def hex_digits(rng: random.Random, k: int) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(k))


def alnum(rng: random.Random, k: int) -> str:
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(k))


def phone(rng: random.Random) -> str:
    d = string.digits
    return rng.choice(
        (
            "+49 151 " + "".join(rng.choice(d) for _ in range(7)),
            "+44 7700 900" + "".join(rng.choice(d) for _ in range(3)),
            f"+1 202-555-01{rng.randint(0, 99):02d}",
            "+33 6 " + " ".join(f"{rng.randint(0, 99):02d}" for _ in range(4)),
            "0176 " + "".join(rng.choice(d) for _ in range(8)),
        )
    )


def email(rng: random.Random) -> str:
    values = slot_values()
    first, last = rng.choice(values.first_names).lower(), rng.choice(values.last_names).lower()
    local = rng.choice((f"{first}.{last}", f"{first[0]}.{last}", f"{first}{rng.randint(70, 99)}", f"{last}.{first}"))
    return f"{local}@{rng.choice(('example.com', 'example.org', 'example.net', 'mail.example.com'))}"


@cache
def _generators() -> dict[str, Callable[[random.Random], str]]:
    """Slot name -> how to draw a value (built once, over the lists of ``slots.yaml``)."""
    v = slot_values()

    def path(r: random.Random) -> str:
        return r.choice(v.paths).format(id=r.randint(1000, 999999), small=r.randint(1, 40), hex=hex_digits(r, 8))

    return {
        "order": lambda r: f"ORD-{r.randint(100000, 999999)}",
        "invoice": lambda r: f"INV-{r.randint(10000, 99999)}",
        "amount": amount,
        "amount2": amount,
        "amt": lambda r: f"{r.randint(5, 400)}.{r.choice(('00', '49', '90', '99'))}",
        "eur": lambda r: f"{r.choice((19, 29, 39, 59, 89, 129))},{r.choice(('00', '90', '99'))} €",
        "code": lambda r: f"E{r.randint(100, 999)}",
        "version": lambda r: r.choice(v.versions),
        "plan": lambda r: r.choice(v.plans),
        "item": lambda r: r.choice(v.items),
        "days": lambda r: str(r.randint(3, 19)),
        "n": lambda r: str(r.randint(2, 6)),
        "seats": lambda r: str(r.randint(4, 60)),
        "many": lambda r: str(r.choice((40, 85, 120, 300, 650, 1200))),
        "time": lambda r: f"{r.randint(5, 22):02d}:{r.choice(('00', '05', '12', '20', '34', '41', '55'))}",
        "city": lambda r: r.choice(v.cities),
        "carrier": lambda r: r.choice(v.carriers),
        "feature": lambda r: r.choice(v.features),
        "integration": lambda r: r.choice(v.integrations),
        "agent": lambda r: r.choice(v.agents),
        "endpoint": lambda r: r.choice(v.endpoints),
        # log slots
        "ip": ip,
        "port": lambda r: str(r.randint(1024, 65535)),
        "user": lambda r: r.choice(v.users),
        "ms": lambda r: str(int(r.lognormvariate(3.5, 0.9)) + 1),
        "slow_ms": lambda r: str(r.randint(1200, 30000)),
        "pid": lambda r: str(r.randint(300, 65000)),
        "charge": lambda r: "ch_" + alnum(r, 14),
        "cust": lambda r: f"C-{r.randint(10000, 99999)}",
        "trace": lambda r: hex_digits(r, 16),
        "path": path,
        "bytes": lambda r: str(r.randint(120, 90000)),
        "ua": lambda r: r.choice(v.user_agents),
        "table": lambda r: r.choice(v.tables),
        "decline": lambda r: r.choice(v.declines),
        "part": lambda r: str(r.randint(0, 11)),
        "count": lambda r: str(r.randint(10, 5000)),
        "pct": lambda r: str(r.randint(86, 99)),
        "conn": lambda r: str(r.randint(1000, 999999)),
        "key": lambda r: hex_digits(r, 10),
        "sha": lambda r: alnum(r, 43),
        "line": lambda r: str(r.randint(30, 900)),
        "rss": lambda r: str(r.randint(2_000_000, 9_000_000)),
    }


#: Slots whose value depends on the time or on another slot (drawn by ``Slots`` itself).
DERIVED = frozenset({"plan2", "date", "date2", "datum", "fecha"})


def slot_names() -> frozenset[str]:
    """Every placeholder a ticket or log text may use (``clf``, the access-log time, is set per line)."""
    return frozenset(_generators()) | DERIVED | {"clf"}


class Slots(dict[str, str]):
    """Lazily filled template values: a value is drawn the first time a template asks for it, then reused,
    so the subject and the body of one ticket talk about the same order, plan or amount."""

    def __init__(self, rng: random.Random, now: datetime, fixed: dict[str, str] | None = None) -> None:
        super().__init__(fixed or {})
        self._rng = rng
        self._now = now

    def __missing__(self, key: str) -> str:
        rng = self._rng
        if key == "plan2":
            value = rng.choice([p for p in slot_values().plans if p != self["plan"]])
        elif key in ("date", "date2", "datum", "fecha"):
            day = (self._now - timedelta(days=rng.randint(2, 20))).date()
            value = {
                "date": f"{_MONTH_NAMES[day.month - 1]} {day.day}",
                "date2": f"{_MONTH_NAMES[day.month - 1]} {day.day}",
                "datum": f"{day.day:02d}.{day.month:02d}.",
                "fecha": f"{day.day}/{day.month:02d}",
            }[key]
        elif key == "amount2":
            value = amount(rng)
            while value == self.get("amount"):
                value = amount(rng)
        else:
            value = _generators()[key](rng)
        self[key] = value
        return value
