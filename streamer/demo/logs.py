"""Demo service log lines: shipper records and text lines of several layouts, with bursts and stack traces.

The templates are data (``phrasings/logs.yaml``); the timeline (gaps, how often a burst or a trace comes)
and the layouts lines are rendered in are decided here. ``demo_log_story`` places the incidents ``make run``
always shows into that background.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from streamer.demo.phrasings import LogTemplate, log_phrasings
from streamer.demo.slots import MONTHS, START, Slots, alnum, hex_digits

__all__ = ["STORY_BURST", "codename", "demo_log_lines", "demo_log_story", "first_seen_error"]

_FIELD_NAMES = {"ms": "duration_ms", "cust": "customer_id", "user": "user"}


def _iso_ms(ts: datetime) -> str:
    return f"{ts:%Y-%m-%dT%H:%M:%S}.{ts.microsecond // 1000:03d}Z"


def _hosts(rng: random.Random) -> dict[str, tuple[str, ...]]:
    pods = {
        s: tuple(f"{s}-{hex_digits(rng, 9)}-{alnum(rng, 5).lower()}" for _ in range(3))
        for s in ("checkout-api", "auth-service", "payments-worker", "orders-service")
    }
    return {
        **pods,
        "sshd": ("bastion-1", "bastion-2"),
        "systemd": ("app-1", "app-2", "app-3"),
        "cron": ("app-1", "app-2", "app-3"),
        "kernel": ("node-4", "node-7", "node-9"),
        "kubelet": ("node-4", "node-7", "node-9"),
        "smartd": ("db-1",),
    }


def _render(
    rng: random.Random, tpl: LogTemplate, ts: datetime, slots: Slots, hosts: dict[str, tuple[str, ...]]
) -> dict[str, Any] | str:
    slots["clf"] = f"{ts.day:02d}/{MONTHS[ts.month - 1]}/{ts:%Y:%H:%M:%S} +0000"
    message = tpl.text.format_map(slots)
    if tpl.style == "json":
        record: dict[str, Any] = {
            "timestamp": _iso_ms(ts),
            "level": tpl.level,
            "service": tpl.service,
            "message": message,
            "host": rng.choice(hosts[tpl.service]),
            "trace_id": hex_digits(rng, 16),
        }
        for name in tpl.fields:
            value = slots[name]
            record[_FIELD_NAMES.get(name, f"{name}_id")] = int(value) if name == "ms" else value
        return record
    if tpl.style == "iso":
        return f"{_iso_ms(ts)} {tpl.level:<5} [{tpl.service}] {message}"
    if tpl.style == "syslog":
        host = rng.choice(hosts.get(tpl.service, ("app-1",)))
        return f"{MONTHS[ts.month - 1]} {ts.day:>2} {ts:%H:%M:%S} {host} {message}"
    if tpl.style == "postgres":
        return f"{ts:%Y-%m-%d %H:%M:%S}.{ts.microsecond // 1000:03d} UTC [{slots['pid']}] {message}"
    if tpl.style == "nginx_error":
        return f"{ts:%Y/%m/%d %H:%M:%S} [error] {slots['pid']}#{slots['pid']}: *{slots['conn']} {message}"
    return message  # nginx_access carries its own timestamp


def _stack_trace(rng: random.Random, ts: datetime, hosts: dict[str, tuple[str, ...]]) -> dict[str, Any] | str:
    trace = rng.choice(log_phrasings().traces)
    service, exc = trace.service, trace.exception
    slots = Slots(rng, ts)
    lines = [trace.headline.format_map(slots), exc]
    lines += ["\tat " + f.format(line=rng.randint(30, 900)) for f in trace.frames]
    if trace.cause is not None:
        lines += ["Caused by: " + trace.cause, *("\tat " + f for f in trace.cause_frames)]
    lines.append(f"\t... {rng.randint(12, 80)} more")
    text = "\n".join(lines)
    if rng.random() < 0.7:
        return {
            "timestamp": _iso_ms(ts),
            "level": "ERROR",
            "service": service,
            "message": text,
            "host": rng.choice(hosts[service]),
            "exception": exc.split(":", 1)[0],
        }
    return f"{_iso_ms(ts)} ERROR [{service}] {text}"


def _log_timeline(
    rng: random.Random, hosts: dict[str, tuple[str, ...]], n: int, start: datetime, mean_gap_ms: float
) -> Iterator[tuple[datetime, dict[str, Any] | str]]:
    """The entries of ``demo_log_lines`` with their timestamps (callers place more lines between them)."""
    phrasings = log_phrasings()
    templates = phrasings.routine + phrasings.rare
    weights = [t.weight for t in templates]
    ts = start
    burst_left = 0
    burst: LogTemplate | None = None
    burst_fixed: dict[str, str] = {}
    for _ in range(n):
        if burst is not None and burst_left > 0:
            ts += timedelta(milliseconds=rng.randint(3, 250))
            burst_left -= 1
            yield ts, _render(rng, burst, ts, Slots(rng, ts, burst_fixed), hosts)
            continue
        ts += timedelta(milliseconds=int(rng.expovariate(1 / mean_gap_ms)) + 1)
        roll = rng.random()
        if roll < 0.008:
            chosen = rng.choice(phrasings.bursts)
            burst, keep = chosen.template, chosen.keep
            seed_slots = Slots(rng, ts)
            burst_fixed = {k: seed_slots[k] for k in keep}
            burst_left = rng.randint(8, 25)
            burst_left -= 1
            yield ts, _render(rng, burst, ts, Slots(rng, ts, burst_fixed), hosts)
        elif roll < 0.02:
            yield ts, _stack_trace(rng, ts, hosts)
        else:
            tpl = rng.choices(templates, weights)[0]
            yield ts, _render(rng, tpl, ts, Slots(rng, ts), hosts)


def demo_log_lines(
    n: int, seed: int = 7, *, start: datetime | None = None, mean_gap_ms: float = 300.0
) -> Iterator[dict[str, Any] | str]:
    """Yield ``n`` log entries, identical for identical ``(n, seed)``: JSON-style records (dicts with
    ``timestamp``, ``level``, ``service``, ``message`` and extra fields) mixed with plain text lines
    (nginx, syslog, postgres, ISO-timestamp-plus-level). Mostly recurring templates with varying
    parameters, a few rare templates, multi-line Java stack traces as single entries, and occasional
    bursts of one error. Timestamps never go backwards. The first k entries do not depend on ``n``.

    ``start`` (default: a fixed day in 2024) is the time just before the first entry, ``mean_gap_ms``
    the mean gap between entries outside bursts.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    hosts = _hosts(rng)
    for _, entry in _log_timeline(rng, hosts, n, start or START, mean_gap_ms):
        yield entry


#: The burst the story always has: one error template of one service, many times within seconds.
STORY_BURST = log_phrasings().story_burst
_SYLLABLES = tuple(c + v for c in "bdfgklmnprstvz" for v in "aeiou")


def codename(tag: str) -> str:
    """A pronounceable, digit-free name for ``tag`` (``Kovamu``): a word, so log templates keep it."""
    rng = random.Random(f"codename:{tag}")
    return "".join(rng.choice(_SYLLABLES) for _ in range(3)).capitalize()


def first_seen_error(tag: str) -> str:
    """The message of the story's new error: its first word is ``codename(tag)``.

    A template's first token never generalises, so every tag gives a template no earlier run has
    seen, and a demo run on a broker that remembers earlier runs' templates still shows a first sighting.
    """
    return f"{codename(tag)} reconciliation aborted: settlement totals differ from the ledger"


def demo_log_story(
    n: int,
    *,
    start: datetime,
    tag: str,
    seed: int = 7,
    mean_gap_ms: float = 100.0,
    burst: int = 60,
) -> Iterator[dict[str, Any] | str]:
    """``demo_log_lines(n, seed, start=start, mean_gap_ms=mean_gap_ms)`` with three incidents placed in it.

    A third of the way in, a first-seen error template (``first_seen_error(tag)``, from
    ``payments-worker``); half-way, a burst of ``burst`` lines of ``STORY_BURST`` interleaved one by one
    with the next ``burst`` entries (so within seconds of event time); at seven tenths, a Java stack
    trace. These happen on every run, where the background's own incidents are left to chance.
    Timestamps never go backwards; ``n + burst + 2`` entries in all.
    """
    if n < 0 or burst < 0:
        raise ValueError(f"n and burst must be >= 0, got {n} and {burst}")
    rng = random.Random(seed)
    hosts = _hosts(rng)
    extra = random.Random(f"{seed}:{tag}")
    novel = LogTemplate(1, "json", "payments-worker", "ERROR", first_seen_error(tag) + " by {amt} USD")
    burst_fixed: dict[str, str] = {}
    for i, (ts, entry) in enumerate(_log_timeline(rng, hosts, n, start, mean_gap_ms)):
        yield entry
        if i == n * 3 // 10:
            yield _render(extra, novel, ts, Slots(extra, ts), hosts)
        if n // 2 <= i < n // 2 + burst:
            at = ts + timedelta(milliseconds=1)
            yield _render(extra, STORY_BURST, at, Slots(extra, at, burst_fixed), hosts)
        if i == n * 7 // 10:
            yield _stack_trace(extra, ts, hosts)
