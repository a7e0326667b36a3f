"""Whether common log headers come off any message: each system's Content column behind generated headers.

    python bench/header_robustness.py [--data /work/shared/data/loghub] [--systems A,B] [--json out.json]

A new user's logs carry a header their framework writes (log4j, syslog, glog, Python's logging, Monolog,
Elasticsearch, logfmt, pipe columns...) in front of messages the miner has never seen. This puts every
Loghub sample's ``Content`` behind each header shape, with a time, pid, thread, level and logger that change
from line to line, feeds the lines through the worker's decode -> triage path (``evaluate_raw``) and compares
the grouping accuracy with the miner on ``Content`` alone. A header left in the message splits templates, so
the gap is what the decoder leaves behind; 0.000 is a header that comes off cleanly. The last column is the
share of lines whose severity is the level their header wrote (what escalation and alerts read).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamer.commands.logs import EVAL_BATCH, load_samples
from streamer.events import RawEvent, Source
from streamer.logs.decode import LogRecord, decode_log, normalise_severity
from streamer.logs.evaluate import evaluate_content, evaluate_raw

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "loghub"
T0 = datetime(2026, 11, 28, 10, 0, 0, tzinfo=timezone.utc)
LEVELS = ("INFO", "WARN", "ERROR", "DEBUG")
PG_LEVEL = {"INFO": "LOG", "WARN": "WARNING", "ERROR": "ERROR", "DEBUG": "DEBUG1"}
REDIS_LEVEL = {"INFO": "*", "WARN": "#", "ERROR": "#", "DEBUG": "."}  # Redis writes . - * #
GLOG_LEVEL = {"INFO": "I", "WARN": "W", "ERROR": "E", "DEBUG": "I"}  # glog writes I, W, E and F only
THREADS = ("main", "pool-1-thread-3", "http-nio-8080-exec-12", "Peer[myid=2]/10.0.0.7:2181", "worker 4")
LOGGERS = ("org.example.rpc.Server", "app.db", "c.e.s.OrderService", "io.netty.Channel")


class Fields:
    """What one line's header holds: all of it changes from line to line, as it does in real logs."""

    def __init__(self, i: int, rng: random.Random) -> None:
        self.t = T0 + timedelta(milliseconds=i * 137 + rng.randrange(100))
        self.level = rng.choice(LEVELS)
        self.pid = rng.randrange(100, 65000)
        self.thread = rng.choice(THREADS)
        self.logger = rng.choice(LOGGERS)
        self.host = f"node-{rng.randrange(1, 40)}"

    def iso(self, sep: str = " ", frac: str = ",") -> str:
        return self.t.strftime(f"%Y-%m-%d{sep}%H:%M:%S") + f"{frac}{self.t.microsecond // 1000:03d}"


#: Header shapes: name -> the header of one line (the message follows).
SHAPES: dict[str, Callable[[Fields], str]] = {
    "log4j": lambda f: f"{f.iso()} {f.level:<5} [{f.thread}] {f.logger} - ",
    "log4j-level-first": lambda f: f"{f.level:<5} [{f.thread}] {f.iso()} {f.logger.rsplit('.', 1)[-1]}.java:42 - ",
    "logback": lambda f: f"{f.t:%H:%M:%S}.{f.t.microsecond // 1000:03d} [{f.thread}] {f.level:<5} {f.logger} - ",
    "python": lambda f: f"{f.iso()} - {f.logger} - {f.level} - ",
    "python-basic": lambda f: f"{f.level}:{f.logger}:",
    "syslog": lambda f: f"{f.t:%b} {f.t.day:>2} {f.t:%H:%M:%S} {f.host} app[{f.pid}]: ",
    "rfc3339-syslog": lambda f: f"{f.iso('T', '.')}+00:00 {f.host} app[{f.pid}]: ",
    "glog": lambda f: f"{GLOG_LEVEL[f.level]}{f.t:%m%d %H:%M:%S}.{f.t.microsecond:06d} {f.pid:>7} server.go:42] ",
    "spring-boot": lambda f: f"{f.iso(frac='.')} {f.level:>5} {f.pid} --- [{f.thread[:15]:>15}] {f.logger:<40} : ",
    "monolog": lambda f: f"[{f.iso(frac='.')}] app.{f.level}: ",
    "elasticsearch": lambda f: f"[{f.iso('T')}][{f.level:<5}][{f.logger:<25}] ",
    "logfmt": lambda f: f"time={f.iso('T', '.')}Z level={f.level.lower()} msg=",
    "pipe": lambda f: f"{f.iso(frac='.')}|{f.level}|{f.logger}|",
    "cri-log4j": lambda f: f"{f.iso('T', '.')}123456Z stdout F {f.iso()} {f.level:<5} [{f.thread}] {f.logger} - ",
    "postgres": lambda f: f"{f.iso(frac='.')} UTC [{f.pid}] {PG_LEVEL[f.level]}:  ",
    "heroku": lambda f: f"{f.iso('T', '.')}+00:00 app[web.{f.pid % 4 + 1}]: ",
    "erlang": lambda f: f"{f.iso(frac='.')} [{f.level.lower()}] <0.{f.pid}.0> ",
    "pino-pretty": lambda f: f"[{f.t:%H:%M:%S}.{f.t.microsecond // 1000:03d}] {f.level} ({f.pid}): ",
    "level-bracket": lambda f: f"[{f.level}] {f.iso()} ",
    "go-log-file": lambda f: f"{f.t:%Y/%m/%d %H:%M:%S}.{f.t.microsecond:06d} main.go:{f.pid % 300}: ",
    "redis": lambda f: f"{f.pid}:M {f.t:%d %b %Y %H:%M:%S}.{f.t.microsecond // 1000:03d} {REDIS_LEVEL[f.level]} ",
}


#: Shapes whose header writes no level (syslog's is in the priority, which these lines leave out).
NO_LEVEL = frozenset({"syslog", "rfc3339-syslog", "heroku", "go-log-file"})


def written_level(shape: str, f: Fields) -> str | None:
    """The severity the header of ``shape`` wrote for ``f``, as ``normalise_severity`` names it."""
    if shape in NO_LEVEL:
        return None
    if shape == "redis":
        return {"*": "notice", "#": "warning", ".": "debug"}[REDIS_LEVEL[f.level]]
    written = {"glog": GLOG_LEVEL, "postgres": PG_LEVEL}.get(shape, {}).get(f.level, f.level)
    return normalise_severity(written)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--systems", default=None, help="comma-separated systems (default: every sample in --data)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    systems = [s for s in args.systems.split(",") if s] if args.systems else None
    samples = load_samples(args.data, systems=systems, text_col="Content", template_col="EventTemplate")
    content = {s.name: evaluate_content(s.texts, s.templates).ga for s in samples}
    gaps: dict[str, dict[str, float]] = {}
    levels: dict[str, float] = {}
    print(f"GA behind each header minus GA on Content ({len(samples)} systems; 0.000: the header came off)")
    print(f"{'header':<18} " + " ".join(f"{s.name[:8]:>8}" for s in samples) + f" {'average':>8} {'level read':>9}")
    for shape, header in SHAPES.items():
        row: dict[str, float] = {}
        read = total = 0
        for s in samples:
            rng = random.Random(7)
            fields = [Fields(i, rng) for i in range(len(s.texts))]
            lines = [header(f) + text for f, text in zip(fields, s.texts, strict=True)]
            row[s.name] = evaluate_raw(lines, s.templates, batch=EVAL_BATCH).ga - content[s.name]
            for f, line in zip(fields, lines, strict=True):
                if (want := written_level(shape, f)) is not None:
                    rec = decode_log(RawEvent(line.encode(), Source("bench", 0, 0, None), b"bench"))
                    read += isinstance(rec, LogRecord) and rec.severity == want
                    total += 1
        gaps[shape] = row
        cells = " ".join(f"{row[s.name]:8.3f}" for s in samples)
        level_cell = f"{read / total:9.3f}" if total else f"{'-':>9}"
        if total:
            levels[shape] = read / total
        print(f"{shape:<18} {cells} {statistics.fmean(row.values()):8.3f} {level_cell}")
    if args.json:
        doc = {"content_ga": content, "gap": gaps, "level_read": levels}
        args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
