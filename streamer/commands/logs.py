"""``streamer logs eval``: check the template miner on labelled log samples (Loghub folders or any CSV)."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from streamer.errors import StreamerError
from streamer.tables import table_rows

__all__ = ["EVAL_BATCH", "LabelledSample", "add_logs_commands", "load_samples", "run_eval"]

#: Lines per ``triage_logs`` call in ``--raw`` runs: a quiet service's fetch, where ids written on
#: enriched records have had the least evidence (a 2,000-line batch would hide the difference).
EVAL_BATCH = 100


@dataclass(frozen=True, slots=True)
class LabelledSample:
    """One system's labelled lines: messages (or whole lines), true templates, raw lines when known."""

    name: str
    texts: list[str]
    templates: list[str]
    raw: list[str] | None


def _read_csv(path: Path, text_col: str, template_col: str) -> tuple[list[str], list[str]]:
    try:
        with table_rows(path) as reader:
            columns = reader.fieldnames or []
            missing = [c for c in (text_col, template_col) if c not in columns]
            if missing:
                raise StreamerError(
                    f"{path}: no column {', '.join(repr(c) for c in missing)} "
                    f"(columns: {', '.join(columns) or 'none'}); choose them with --text-col/--template-col"
                )
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise StreamerError(f"{path}: cannot read: {exc}") from exc
    for line, row in enumerate(rows, start=2):
        if row[text_col] is None or row[template_col] is None:  # a short row, not an empty cell
            raise StreamerError(f"{path}: line {line} has no {text_col!r} or {template_col!r} cell")
    return [r[text_col] for r in rows], [r[template_col] for r in rows]


def _read_raw(path: Path, expected: int) -> list[str] | None:
    if not path.is_file():
        return None
    lines = path.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
    if len(lines) != expected:
        raise StreamerError(f"{path}: {len(lines)} lines, but its labelled CSV has {expected} rows")
    return lines


def _structured_csv(folder: Path) -> Path | None:
    preferred = folder / f"{folder.name}_2k.log_structured_corrected.csv"
    if preferred.is_file():
        return preferred
    found = sorted(folder.glob("*_structured*.csv"))
    return found[0] if found else None


def load_samples(
    data: Path, *, systems: Sequence[str] | None, text_col: str, template_col: str
) -> list[LabelledSample]:
    """Labelled samples under ``data``: a CSV file, a folder of CSVs, or Loghub-style ``<S>/<S>_2k...`` folders."""
    if not data.exists():
        raise StreamerError(f"{data}: no such file or folder")
    found: dict[str, tuple[Path, Path | None]] = {}
    if data.is_file():
        found[data.stem] = (data, None)
    else:
        for sub in sorted(p for p in data.iterdir() if p.is_dir()):
            structured = _structured_csv(sub)
            if structured is not None:
                found[sub.name] = (structured, sub / structured.name.split("_structured")[0])
        for path in sorted(data.glob("*.csv")):
            found.setdefault(path.stem, (path, None))
    if not found:
        raise StreamerError(f"{data}: no labelled log samples (<S>/<S>_2k.log_structured_corrected.csv or *.csv)")
    if systems:
        unknown = [s for s in systems if s not in found]
        if unknown:
            raise StreamerError(f"{data}: no sample for {', '.join(unknown)} (found: {', '.join(found)})")
        names = list(systems)
    else:
        names = list(found)
    samples: list[LabelledSample] = []
    for name in names:
        csv_path, log_path = found[name]
        texts, templates = _read_csv(csv_path, text_col, template_col)
        if not texts:
            raise StreamerError(f"{csv_path}: no rows")
        raw = _read_raw(log_path, len(texts)) if log_path is not None else None
        samples.append(LabelledSample(name, texts, templates, raw))
    return samples


def run_eval(args: argparse.Namespace) -> int:
    """``streamer logs eval``: per-system GA, PA, template counts and lines/s, then the average."""
    from streamer.logs.evaluate import SystemScore, average, evaluate_content, evaluate_raw

    systems = [s.strip() for s in args.systems.split(",") if s.strip()] if args.systems else None
    samples = load_samples(args.data, systems=systems, text_col=args.text_col, template_col=args.template_col)
    raw = bool(args.raw)
    hold = raw and (args.hold if args.hold is not None else _worker_holds())  # read only where it counts
    scores: dict[str, SystemScore] = {}
    for sample in samples:
        if raw:
            lines = sample.raw if sample.raw is not None else sample.texts
            scores[sample.name] = evaluate_raw(
                lines, sample.templates, batch=args.batch, service=sample.name, hold=hold
            )
        else:
            scores[sample.name] = evaluate_content(sample.texts, sample.templates)
    mean = average(list(scores.values()))
    if args.json:
        doc = {"systems": {name: s.to_dict() for name, s in scores.items()}, "average": mean}
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    width = max(8, *(len(n) for n in scores))
    head = f"{'system':<{width}} {'lines':>6} {'GA':>6} {'PA':>6}"
    other = "ga_enriched_unheld" if hold else "ga_enriched_held"
    head += f" {'GA enr':>6} {'unheld' if hold else 'held':>6} {'warm':>6}" if raw else ""
    head += f" {'templates':>11} {'churn':>6} {'lines/s':>9}"
    print(head)
    print("-" * len(head))
    for name, s in scores.items():
        row = f"{name:<{width}} {s.lines:>6} {s.ga:6.3f} {s.pa:6.3f}"
        row += (
            f" {s.ga_enriched or 0.0:6.3f} {getattr(s, other) or 0.0:6.3f} {s.ga_enriched_warm or 0.0:6.3f}"
            if raw
            else ""
        )
        row += f" {f'{s.templates}/{s.true_templates}':>11} {s.churn:6.3f} {s.lines_per_s:9.0f}"
        print(row)
    print("-" * len(head))
    row = f"{'average':<{width}} {'':>6} {mean['ga']:6.3f} {mean['pa']:6.3f}"
    if raw:
        row += f" {mean.get('ga_enriched', 0.0):6.3f} {mean.get(other, 0.0):6.3f}"
        row += f" {mean.get('ga_enriched_warm', 0.0):6.3f}"
    row += f" {'':>11} {mean['churn']:6.3f} {mean['lines_per_s']:9.0f}"
    print(row)
    mode = f"raw lines through decode -> triage in batches of {args.batch}" if raw else f"column {args.text_col!r}"
    print(f"{len(scores)} system(s), {mode}; GA/PA against {args.template_col!r}")
    if raw:
        written = "held one batch, as the worker writes them" if hold else "as written, no hold"
        print(f"GA enr: ids on enriched records ({written}); warm: GA enr on each sample's second half")
    return 0


def _worker_holds() -> bool:
    """Whether the worker holds log batches (``STREAMER_LOG_HOLD_BATCH``, read as the worker reads it)."""
    from streamer.settings import load_settings

    return load_settings().log_hold_batch


def add_logs_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``streamer logs ...`` on the top-level parser."""
    logs = commands.add_parser("logs", help="log path tools: evaluate template mining on labelled samples")
    actions = logs.add_subparsers(dest="logs_command", metavar="ACTION", required=True)
    ev = actions.add_parser(
        "eval",
        help="grouping/parsing accuracy of the template miner on labelled log lines",
        description=(
            "Mine labelled log lines and score them as the Loghub papers do: GA (a line's mined group is "
            "exactly its true group) and PA (the mined template text equals the true one). DATA is a folder "
            "of Loghub-style samples (<S>/<S>_2k.log_structured_corrected.csv with Content and EventTemplate, "
            "and <S>/<S>_2k.log for --raw), a folder of CSV files, or one CSV file."
        ),
    )
    ev.add_argument("--data", type=Path, required=True, help="folder of samples or one CSV file")
    ev.add_argument("--systems", default=None, help="comma-separated systems (folder or file names); default all")
    ev.add_argument(
        "--raw",
        action="store_true",
        help="feed whole raw lines through the worker's decode -> triage path (redaction included) and also "
        "score the ids as written on enriched records (ga_enriched)",
    )
    ev.add_argument(
        "--hold",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="with --raw: score enriched ids as a worker that holds each batch for one batch writes them "
        "(default: STREAMER_LOG_HOLD_BATCH, on)",
    )
    ev.add_argument("--batch", type=int, default=EVAL_BATCH, help=f"lines per batch with --raw (default {EVAL_BATCH})")
    ev.add_argument("--json", action="store_true", help="print JSON: {systems: {S: {ga, pa, ...}}, average: {...}}")
    ev.add_argument("--text-col", default="Content", help="CSV column with the message (default Content)")
    ev.add_argument("--template-col", default="EventTemplate", help="CSV column with the true template")
    ev.set_defaults(handler=run_eval)
