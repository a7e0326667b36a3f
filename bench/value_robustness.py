"""Whether the miner holds on values of shapes its samples never showed: each template's parameters refilled.

    python bench/value_robustness.py [--data /work/shared/data/loghub] [--systems A,B] [--raw] [--json out.json]

A new system's templates are new, and so are the shapes of its values: quoted phrases of a varying length,
durations in varying units (``250ms``, ``1.5s``, ``2m3s``), UUIDs, host:port lists, ``key=value`` runs,
camelCase or dotted names, words. This aligns every Loghub line with its true template, refills one parameter
of each template that stands as a whole token (the same one for all its lines) with a value of one shape,
drawn afresh for every line, and mines the result. The true grouping is unchanged by construction, so the GA
lost against the lines as written is what that shape of value costs on templates nobody tuned for. ``--raw``
mines through the worker's decode -> triage path (redaction included) instead of the miner alone.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import uuid
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamer.commands.logs import EVAL_BATCH, load_samples
from streamer.logs.evaluate import evaluate_content, evaluate_raw

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "loghub"
WORDS = (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima",
    "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango", "uniform", "victor", "whiskey",
)  # fmt: skip
HOSTS = ("db", "cache", "api", "queue", "search")


def _camel(rng: random.Random) -> str:
    return rng.choice(("get", "set", "load", "sync")) + "".join(w.title() for w in rng.sample(WORDS, 2))


#: Value shapes: name -> a fresh value.
SHAPES: dict[str, Callable[[random.Random], str]] = {
    "word": lambda r: r.choice(WORDS),
    "quoted-phrase": lambda r: '"' + " ".join(r.sample(WORDS, r.randint(1, 3))) + '"',
    "duration": lambda r: r.choice(
        (f"{r.randint(1, 999)}ms", f"{r.uniform(0, 9):.3f}s", f"{r.randint(1, 59)}m{r.randint(0, 59)}s")
    ),
    "uuid": lambda r: str(uuid.UUID(int=r.getrandbits(128))),
    "host-port-list": lambda r: ",".join(
        f"{h}{r.randint(1, 9)}.example.org:{r.choice((5432, 6379, 9092))}" for h in r.sample(HOSTS, r.randint(1, 3))
    ),
    "key-value-run": lambda r: " ".join(f"{w}={r.randint(0, 99)}" for w in r.sample(WORDS, r.randint(1, 3))),
    "camel-case": _camel,
    "dotted-name": lambda r: "com.example." + ".".join(r.sample(WORDS, r.randint(1, 2))) + "." + _camel(r).title(),
    "size": lambda r: f"{r.uniform(0, 999):.1f} {r.choice(('KB', 'MB', 'GB'))}",
}  # fmt: skip


def _pattern(template: str) -> re.Pattern[str] | None:
    parts = template.split("<*>")
    if len(parts) < 2:
        return None
    return re.compile("(.*?)".join(re.escape(p) for p in parts) + r"\Z", re.S)


def refill(texts: Sequence[str], templates: Sequence[str], value: Callable[[], str]) -> tuple[list[str], float]:
    """Each line with one parameter of its template (the same one for every line of it) replaced by ``value()``,
    and the share of lines that had one."""
    cache: dict[str, re.Pattern[str] | None] = {}
    out: list[str] = []
    refilled = 0
    for text, template in zip(texts, templates, strict=True):
        if template not in cache:
            cache[template] = _pattern(template)
        rx = cache[template]
        m = rx.match(text) if rx is not None else None
        if m is None:
            out.append(text)
            continue
        pieces = template.split("<*>")
        whole = [  # parameters that are whole tokens: a value glued to text or to another one is a part of one
            i
            for i in range(len(pieces) - 1)
            if ((i == 0 and pieces[0] == "") or pieces[i].endswith(" "))
            and (pieces[i + 1] == "" if i == len(pieces) - 2 else pieces[i + 1].startswith(" "))
        ]
        if not whole:
            out.append(text)
            continue
        chosen = whole[zlib.crc32(template.encode()) % len(whole)]  # one parameter per template, always the same
        line = pieces[0]
        for i, piece in enumerate(pieces[1:]):
            line += (value() if i == chosen else m.group(i + 1)) + piece
        out.append(line)
        refilled += 1
    return out, refilled / max(len(texts), 1)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--systems", default=None, help="comma-separated systems (default: every sample in --data)")
    ap.add_argument("--raw", action="store_true", help="mine through decode -> triage (redaction included)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    systems = [s for s in args.systems.split(",") if s] if args.systems else None
    samples = load_samples(args.data, systems=systems, text_col="Content", template_col="EventTemplate")

    def ga(lines: Sequence[str], truth: Sequence[str]) -> float:
        if args.raw:
            return evaluate_raw(lines, truth, batch=EVAL_BATCH).ga
        return evaluate_content(lines, truth).ga

    base = {s.name: ga(s.texts, s.templates) for s in samples}
    gaps: dict[str, dict[str, float]] = {}
    mode = "decode -> triage" if args.raw else "the miner alone"
    print(f"GA with parameters refilled minus GA as written ({len(samples)} systems, {mode})")
    print(f"{'values':<15} " + " ".join(f"{s.name[:8]:>8}" for s in samples) + f" {'average':>8}")
    for shape, make in SHAPES.items():
        row: dict[str, float] = {}
        for s in samples:
            rng = random.Random(11)
            lines, _ = refill(s.texts, s.templates, lambda make=make, rng=rng: make(rng))
            row[s.name] = ga(lines, s.templates) - base[s.name]
        gaps[shape] = row
        cells = " ".join(f"{row[s.name]:8.3f}" for s in samples)
        print(f"{shape:<15} {cells} {statistics.fmean(row.values()):8.3f}")
    if args.json:
        doc = {"mode": "raw" if args.raw else "content", "ga": base, "gap": gaps}
        args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
