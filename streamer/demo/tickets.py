"""Demo support tickets: realistic, labelled, identical for identical ``(n, seed)``.

The wording is data (``phrasings/tickets.yaml``); the traffic mix (channels, tiers, how often a ticket
is angry, urgent, foreign, multi-issue or carries PII) and the labels it implies are decided here.
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from streamer.demo.identifiers import valid_iban, valid_luhn_card
from streamer.demo.phrasings import PRIORITIES, TicketPhrasings, slot_values, ticket_phrasings
from streamer.demo.slots import START, Slots, email, hex_digits, ip, phone

__all__ = ["CHANNELS", "TIERS", "demo_tickets"]

TIERS = ("free", "pro", "business", "enterprise", "vip")
_TIER_WEIGHTS = (38, 30, 18, 11, 3)
CHANNELS = ("email", "chat", "web", "phone", "api")
_CHANNEL_WEIGHTS = (38, 27, 22, 8, 5)
#: Intents that stop a customer from working: an enterprise or VIP customer's ticket about one is raised.
_BLOCKING = frozenset({"login_problem", "account_locked", "payment_failed"})


def _fields(template: str) -> set[str]:
    """Placeholders of a template, so a detail never repeats a value the problem already stated."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def _bump(priority: str, steps: int = 1, cap: str = "urgent") -> str:
    i = min(PRIORITIES.index(priority) + steps, PRIORITIES.index(cap))
    return PRIORITIES[i]


def _format_card(rng: random.Random, number: str) -> str:
    if rng.random() < 0.5:
        return number
    sep = rng.choice((" ", "-"))
    return sep.join(number[i : i + 4] for i in range(0, len(number), 4))


def _pii_line(rng: random.Random, kind: str, phrasings: TicketPhrasings) -> str:
    values = {
        "email": email(rng),
        "phone": phone(rng),
        "card": _format_card(rng, valid_luhn_card(rng)),
        "expiry": f"{rng.randint(1, 12):02d}/{rng.randint(25, 30)}",
        "iban": valid_iban(rng, rng.choice(("DE", "DE", "FR", "ES", "NL", "GB", "AT"))),
        "ip": ip(rng),
    }
    return rng.choice(phrasings.pii_lines[kind]).format_map(values)


def _join(channel: str, greeting: str, sentences: Sequence[str], closing: str, name: str) -> str:
    text = " ".join(s for s in sentences if s)
    if channel == "email":
        parts = [greeting, text, f"{closing}\n{name}" if closing else name]
        return "\n\n".join(p for p in parts if p)
    if channel == "phone":
        return f"[Call transcript] {text}"
    return " ".join(p for p in (greeting, text, closing) if p)


def _ticket(
    rng: random.Random, ticket_id: str, created: datetime, customer: dict[str, str], p: TicketPhrasings
) -> dict[str, Any]:
    channel = rng.choices(CHANNELS, _CHANNEL_WEIGHTS)[0]
    slots = Slots(rng, created)
    roll = rng.random()
    language: str | None = rng.choice(("en", None))
    angry = False
    urgent = False
    multi = False
    pii: list[str] = []
    if roll < 0.03:
        foreign = rng.choice(p.foreign)
        language = foreign.language
        intents = [foreign.intent]
        subject = foreign.subject.format_map(slots)
        body = foreign.body.format_map(slots)
        priority = p.intents[foreign.intent].priority
    else:
        if roll < 0.08:
            multi = True
            intents = rng.sample(p.help_intents, rng.choice((2, 2, 3)))
        elif roll < 0.115:
            urgent = angry = True
            intents = [rng.choice(p.urgent_intents)]
        else:
            intents = [rng.choice(sorted(p.intents))]
            angry = intents[0] != "praise_feedback" and rng.random() < 0.07
        sentences: list[str] = []
        if angry:
            sentences.append(rng.choice(p.angry_openers))
        for k, intent in enumerate(intents):
            if k:
                sentences.append(rng.choice(p.joiners))
            pool = p.intents[intent].urgent if urgent else p.intents[intent].problems
            sentences.append(rng.choice(pool).format_map(slots))
            if multi or rng.random() < 0.6:
                fresh = [d for d in p.details_for[intent] if not _fields(d) & slots.keys()]
                if fresh:
                    sentences.append(rng.choice(fresh).format_map(slots))
        if urgent:
            subject = rng.choice(p.urgent_subject_prefixes) + rng.choice(p.intents[intents[0]].subjects).format_map(
                slots
            )
        else:
            subject = rng.choice(p.intents[intents[0]].subjects).format_map(slots)
            if multi:
                subject += rng.choice(p.multi_subject_suffixes)
            if angry:
                subject = rng.choice((subject.upper(), "Still not fixed: " + subject, subject + "!!"))
        if rng.random() < 0.05:
            kind = rng.choice(p.intents[intents[-1]].pii)
            pii.append(kind)
            sentences.append(_pii_line(rng, kind, p))
        if angry:
            sentences.append(rng.choice(p.angry_closers))
        greeting = rng.choice(p.greetings[channel])
        closing = "" if angry else rng.choice(p.closings[channel])
        name = rng.choice(slot_values().first_names)
        body = _join(channel, greeting, sentences, closing, name)
        priority = max((p.intents[i].priority for i in intents), key=PRIORITIES.index)
        if urgent:
            priority = "urgent"
    if not urgent and customer["tier"] in ("enterprise", "vip") and _BLOCKING.intersection(intents):
        priority = _bump(priority, cap="high")
    sentiment = "negative" if angry else ("positive" if intents == ["praise_feedback"] else "neutral")
    metadata: dict[str, Any] = {"source": "demo"}
    if channel == "chat":
        metadata["chat_session"] = f"CS-{hex_digits(rng, 8)}"
    elif channel == "web":
        metadata["form"] = rng.choice(("contact", "billing", "technical", "returns"))
    elif channel == "phone":
        metadata["call_seconds"] = rng.randint(40, 1500)
    elif channel == "api":
        metadata["integration"] = rng.choice(slot_values().integrations)
    # Ground truth for scoring the pipeline on demo traffic; a classifier must never read it.
    metadata["expected"] = {
        "intents": intents,
        "priority": priority,
        "sentiment": sentiment,
        "multi_issue": multi,
        "pii": pii,
    }
    ticket: dict[str, Any] = {
        "id": ticket_id,
        "created_at": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "channel": channel,
        "subject": subject,
        "body": body,
        "customer": dict(customer),
        "metadata": metadata,
    }
    if language is not None:
        ticket["language"] = language
    return ticket


def demo_tickets(n: int, seed: int = 7) -> Iterator[dict[str, Any]]:
    """Yield ``n`` support tickets in the ingest contract, identical for identical ``(n, seed)``.

    Each ticket has ``id`` (unique ``TCK-…``), ``created_at`` (ISO-8601 UTC), ``channel``, ``subject``,
    ``body``, ``customer`` (``id``, ``tier``), optional ``language`` and ``metadata``. About 5% carry PII
    (email, phone, Luhn-valid card, mod-97-valid IBAN, IP), 5% raise two or three issues, 3% are German,
    Spanish or French, ~3% are angry outage-level reports. ``metadata["expected"]`` holds the intended
    labels so demo accuracy can be measured. The first k tickets do not depend on ``n``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    phrasings = ticket_phrasings()
    rng = random.Random(seed)
    first_id = rng.randint(100000, 899999)
    customers: list[dict[str, str]] = []
    created = START
    for i in range(n):
        created += timedelta(seconds=round(rng.expovariate(1 / 45), 3))
        if customers and rng.random() < 0.3:
            customer = rng.choice(customers)
        else:
            customer = {"id": f"C-{rng.randint(100000, 999999)}", "tier": rng.choices(TIERS, _TIER_WEIGHTS)[0]}
            customers.append(customer)
        yield _ticket(rng, f"TCK-{first_id + i}", created, customer, phrasings)
