"""The replay report: what ran (so it can be run again), what it read, and what changed.

One record, three renderings: JSON for machines, a terminal table for the operator, and a single HTML
file (inline CSS and SVG, no scripts, nothing fetched) that can be attached to a ticket or mailed.
Every text that may come from a ticket or a log line is already redacted by ``diff`` / ``logdiff``;
here it is only escaped. Ticket and log replays share everything but the section on what changed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from streamer.replay.diff import KINDS, DiffReport
from streamer.replay.logdiff import LOG_KINDS, LogDiffReport
from streamer.replay.ranges import PartitionRange, Window

FORMAT = "streamer-replay-report"
FORMAT_VERSION = 1


@dataclass
class ReplayReport:
    """Everything a replay did and found; ``to_dict`` is the JSON report."""

    run_id: str
    topic: str
    output_topic: str | None
    live_topic: str | None
    window: Window
    ranges: list[PartitionRange]
    bundle: dict[str, Any]
    settings: dict[str, Any]
    started_at: str
    finished_at: str = ""
    notes: list[str] = field(default_factory=list)
    records: int = 0
    processed: int = 0
    written: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    outside_window: int = 0
    replay_seconds: float = 0.0
    live_records_read: int = 0
    live_seconds: float = 0.0
    diff: DiffReport | LogDiffReport | None = None
    #: Log replays: records before the ranges replayed first to rebuild the live state (not compared).
    warmup_records: int = 0

    @property
    def dry_run(self) -> bool:
        return self.output_topic is None

    @property
    def planned(self) -> int:
        return sum(r.count for r in self.ranges)

    @property
    def events_per_s(self) -> float:
        return self.records / self.replay_seconds if self.replay_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "run_id": self.run_id,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "topic": self.topic,
            "output_topic": self.output_topic,
            "dry_run": self.dry_run,
            "live_topic": self.live_topic,
            "window": self.window.to_dict(),
            "partitions": [r.to_dict() for r in self.ranges],
            "notes": list(self.notes),
            "bundle": self.bundle,
            "settings": self.settings,
            "stats": {
                "planned": self.planned,
                "records": self.records,
                "processed": self.processed,
                "dead_letters": dict(self.dead_letters),
                "written": self.written,
                "outside_window": self.outside_window,
                "replay_seconds": round(self.replay_seconds, 3),
                "events_per_s": round(self.events_per_s, 1),
                "live_records_read": self.live_records_read,
                "live_seconds": round(self.live_seconds, 3),
                "warmup_records": self.warmup_records,
            },
            "diff": self.diff.to_dict() if self.diff is not None else None,
        }


def write_json(report: ReplayReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _pct(part: int | float, whole: int | float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


# --- terminal -------------------------------------------------------------------------------------


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], right: Sequence[int] = ()) -> list[str]:
    """Plain aligned columns; the columns listed in ``right`` (numbers) are right-aligned.

    Control characters become ``?``: ids and texts come from tickets and must not drive the terminal.
    """
    cells = [[_CONTROL.sub("?", str(c)) for c in headers]] + [[_CONTROL.sub("?", str(c)) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        return "  ".join(parts).rstrip()

    return [line(cells[0]), *(line(r) for r in cells[1:])]


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_text(report: ReplayReport) -> str:
    """The report as the terminal shows it."""
    out: list[str] = []
    target = report.output_topic or "(dry run: nothing written)"
    out.append(f"replay {report.run_id}: {report.topic} -> {target}")
    bundle = report.bundle
    out.append(f"bundle {bundle.get('name')}@{bundle.get('version')} ({bundle.get('path')})")
    window = report.window
    if window.from_ms is not None or window.to_ms is not None:
        out.append(f"window {window.to_dict()['from'] or 'beginning'} .. {window.to_dict()['to'] or 'end'}")
    if window.from_offset is not None or window.to_offset is not None:
        out.append(
            f"offsets {window.from_offset or 0} .. {window.to_offset if window.to_offset is not None else 'end'}"
        )
    out.append("")
    rows: list[tuple[object, ...]] = [(r.partition, r.start, r.end, r.count) for r in report.ranges]
    rows.append(("total", "", "", report.planned))
    out.extend(table(["partition", "start", "end (excl.)", "records"], rows, right=(0, 1, 2, 3)))
    for note in report.notes:
        out.append(f"note: {note}")
    out.append("")
    dead = sum(report.dead_letters.values())
    out.append(
        f"replayed {report.records} records ({report.processed} triaged, {dead} dead letters, "
        f"{report.written} written) in {report.replay_seconds:.1f} s: {report.events_per_s:.1f} events/s"
    )
    if report.outside_window:
        out.append(f"{report.outside_window} records in the offset ranges have timestamps outside the window")
    if report.warmup_records:
        out.append(f"{report.warmup_records} earlier records replayed first to rebuild the state (not compared)")
    diff = report.diff
    if diff is None:
        out.append("no comparison with live decisions (--no-diff)")
        return "\n".join(out) + "\n"
    if isinstance(diff, LogDiffReport):
        out.extend(_log_text(report, diff))
        return "\n".join(out) + "\n"
    out.append(
        f"live decisions ({report.live_topic}): {diff.compared} compared, {diff.live_only} only live, "
        f"{diff.replay_only} only replayed; live models: "
        + (", ".join(f"{m} ({n})" for m, n in diff.live_models.items()) or "none")
    )
    out.append("")
    change_rows = [(kind, diff.changed[kind], _pct(diff.changed[kind], diff.compared)) for kind in KINDS]
    change_rows.append(("any", diff.any_changed, _pct(diff.any_changed, diff.compared)))
    out.extend(table(["changed", "count", "share"], change_rows, right=(1, 2)))
    out.append("")
    out.append(
        f"escalation rate: {_pct(diff.escalated_before, diff.compared)} before, "
        f"{_pct(diff.escalated_after, diff.compared)} after "
        f"(+{diff.newly_escalated} newly escalated, -{diff.no_longer_escalated} no longer)"
    )
    if diff.intent_changes:
        out.append("")
        out.extend(
            table(["intent before", "intent after", "count"], [(o, n, c) for o, n, c in diff.intent_changes[:10]], (2,))
        )
    changed_routes = [(r, b, a) for r, (b, a) in diff.routes.items() if b != a]
    if changed_routes:
        out.append("")
        out.extend(table(["route", "before", "after"], changed_routes, right=(1, 2)))
    shown = [(kind, e) for kind in KINDS for e in diff.examples.get(kind, [])]
    if shown:
        out.append("")
        out.append("examples (text redacted):")
        rows2 = [(kind, e.id, _clip(e.old, 30), _clip(e.new, 30), _clip(e.text, 70)) for kind, e in shown]
        out.extend(table(["kind", "id", "before", "after", "text"], rows2))
    return "\n".join(out) + "\n"


def _log_text(report: ReplayReport, diff: LogDiffReport) -> list[str]:
    """What changed in a log replay, for the terminal."""
    out = [
        f"live records ({report.live_topic}): {diff.compared} lines compared, {diff.live_only} only live, "
        f"{diff.replay_only} only replayed; live models: "
        + (", ".join(f"{m} ({n})" for m, n in diff.live_models.items()) or "none"),
        "",
    ]
    change_rows = [(kind, diff.changed[kind], _pct(diff.changed[kind], diff.compared)) for kind in LOG_KINDS]
    change_rows.append(("any", diff.any_changed, _pct(diff.any_changed, diff.compared)))
    out.extend(table(["changed", "lines", "share"], change_rows, right=(1, 2)))
    out.append("")
    out.append(f"templates: {diff.templates[0]} before, {diff.templates[1]} after")
    for title, counts in (("severity", diff.severities), ("incident class", diff.incident_classes)):
        moved = [(k, b, a) for k, (b, a) in counts.items() if b != a]
        if moved:
            out.append("")
            out.extend(table([title, "before", "after"], moved, right=(1, 2)))
    out.append("")
    alert_rows = [(k, b, a) for k, (b, a) in diff.alerts.items()]
    out.extend(table(["alert", "before", "after"], alert_rows, right=(1, 2)) if alert_rows else ["no alerts"])
    changed_routes = [(r, b, a) for r, (b, a) in diff.routes.items() if b != a]
    if changed_routes:
        out.append("")
        out.extend(table(["route", "before", "after"], changed_routes, right=(1, 2)))
    if diff.template_changes:
        out.append("")
        rows = [(_clip(o, 50), _clip(n, 50), c) for o, n, c in diff.template_changes[:10]]
        out.extend(table(["template before", "template after", "lines"], rows, right=(2,)))
    shown = [(kind, e) for kind in LOG_KINDS for e in diff.examples.get(kind, [])]
    if shown:
        out.append("")
        out.append("examples (partition:offset, message redacted):")
        rows2 = [(kind, e.id, _clip(e.old, 30), _clip(e.new, 30), _clip(e.text, 60)) for kind, e in shown]
        out.extend(table(["kind", "line", "before", "after", "text"], rows2))
    return out


# --- HTML -----------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1120px;
color:#1d2330;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde2ea;
padding-bottom:4px}
.meta{color:#5b6475}.cards{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}
.card{border:1px solid #dde2ea;border-radius:8px;padding:10px 14px;min-width:130px}
.card b{display:block;font-size:22px}.card span{color:#5b6475;font-size:12px}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{border:1px solid #dde2ea;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f5f9}td.n{text-align:right;font-variant-numeric:tabular-nums}
td.t{max-width:520px;color:#333c4d}code{font-size:12px}.note{color:#9a5b00}
.charts{display:flex;flex-wrap:wrap;gap:24px}.up{color:#b42318}.down{color:#067647}
"""

BEFORE, AFTER, CHANGE = "#98a2b3", "#2f6fdf", "#e07b24"


def bar_chart(
    title: str,
    rows: Sequence[tuple[str, Sequence[float]]],
    series: Sequence[tuple[str, str]],
    *,
    fmt: str = "{:g}",
    width: int = 520,
) -> str:
    """A horizontal grouped bar chart as inline SVG: one group per row, one bar per series."""
    labels = [_clip(label, 44) for label, _ in rows]
    # Sized to the longest label (about 7 px a character at 12 px), so long "old → new" pairs fit.
    label_w = min(max((7 * len(label) + 16 for label in labels), default=80), 320)
    bar_h, gap, top = 16, 10, 44
    width = max(width, label_w + 260)
    plot_w = width - label_w - 70
    peak = max((v for _, values in rows for v in values), default=0.0) or 1.0
    group_h = bar_h * len(series) + gap
    height = top + max(len(rows), 1) * group_h + 10
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(title)}" font-family="system-ui,sans-serif" font-size="12">',
        f'<text x="0" y="16" font-size="14" font-weight="600">{escape(title)}</text>',
    ]
    x = label_w
    for name, color in series:  # the legend
        parts.append(f'<rect x="{x}" y="24" width="10" height="10" fill="{color}"/>')
        parts.append(f'<text x="{x + 14}" y="33">{escape(name)}</text>')
        x += 18 + 7 * len(name) + 14
    if not rows:
        parts.append(f'<text x="{label_w}" y="{top + 12}" fill="#5b6475">nothing to show</text>')
    for i, ((_, values), label) in enumerate(zip(rows, labels, strict=True)):
        y0 = top + i * group_h
        parts.append(f'<text x="{label_w - 8}" y="{y0 + group_h / 2 + 1:.0f}" text-anchor="end">{escape(label)}</text>')
        for j, ((_, color), value) in enumerate(zip(series, values, strict=True)):
            y = y0 + j * bar_h
            w = max(plot_w * value / peak, 1.0 if value else 0.0)
            parts.append(f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h - 3}" fill="{color}"/>')
            parts.append(f'<text x="{label_w + w + 5:.1f}" y="{y + bar_h - 5}">{escape(fmt.format(value))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[object]], numeric: Sequence[int] = ()) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            cls = ' class="n"' if i in numeric else (' class="t"' if headers[i] == "text" else "")
            cells.append(f"<td{cls}>{escape(str(cell))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _or(value: object, missing: str) -> str:
    return missing if value is None else str(value)


def _card(value: str, label: str) -> str:
    return f'<div class="card"><b>{escape(value)}</b><span>{escape(label)}</span></div>'


def render_html(report: ReplayReport) -> str:
    """The report as one self-contained HTML page: inline CSS and SVG charts, no scripts, no links out."""
    diff = report.diff
    bundle = report.bundle
    window = report.window.to_dict()
    dead = sum(report.dead_letters.values())
    h: list[str] = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Replay {escape(report.run_id)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Replay {escape(report.run_id)}</h1>",
        f'<div class="meta">{escape(report.topic)} &rarr; {escape(report.output_topic or "dry run, nothing written")}'
        f" &middot; bundle <code>{escape(str(bundle.get('name')))}@{escape(str(bundle.get('version')))}</code>"
        f" &middot; window {escape(str(window['from'] or 'beginning'))} .. {escape(str(window['to'] or 'end'))}"
        f" &middot; {escape(report.started_at)}</div>",
        '<div class="cards">',
        _card(str(report.records), "records replayed"),
        _card(f"{report.events_per_s:.1f}", "events/s"),
        _card(str(dead), "dead letters"),
    ]
    if isinstance(diff, LogDiffReport):
        h += [
            _card(str(diff.compared), "lines compared with live"),
            _card(_pct(diff.any_changed, diff.compared), "with any change"),
            _card(_pct(diff.changed["template"], diff.compared), "template changed"),
            _card(f"{sum(b for b, _ in diff.alerts.values())} → {sum(a for _, a in diff.alerts.values())}", "alerts"),
        ]
    elif diff is not None:
        h += [
            _card(str(diff.compared), "compared with live"),
            _card(_pct(diff.any_changed, diff.compared), "with any change"),
            _card(_pct(diff.changed["intent"], diff.compared), "intent changed"),
            _card(
                f"{_pct(diff.escalated_before, diff.compared)} → {_pct(diff.escalated_after, diff.compared)}",
                "escalation rate",
            ),
        ]
    h.append("</div>")
    for note in report.notes:
        h.append(f'<p class="note">{escape(note)}</p>')
    if report.outside_window:
        h.append(
            f'<p class="note">{report.outside_window} records in the ranges have timestamps outside the window.</p>'
        )
    if report.warmup_records:
        h.append(
            f'<p class="note">{report.warmup_records} earlier records were replayed first to rebuild the state '
            "(not compared).</p>"
        )

    if isinstance(diff, LogDiffReport):
        h.extend(_log_html(diff))
    elif diff is not None:
        h.append("<h2>Changes</h2>")
        h.append('<div class="charts">')
        h.append(
            bar_chart(
                "Escalation rate",
                [("escalated", [100 * diff.escalation_rate_before, 100 * diff.escalation_rate_after])],
                [("before", BEFORE), ("after", AFTER)],
                fmt="{:.1f}%",
            )
        )
        h.append(
            bar_chart(
                "Intent changes (before → after)",
                [(f"{o} → {n}", [float(c)]) for o, n, c in diff.intent_changes[:12]],
                [("tickets", CHANGE)],
            )
        )
        h.append(
            bar_chart(
                "Intents before and after",
                [(k, [float(b), float(a)]) for k, (b, a) in list(diff.intents.items())[:16]],
                [("before", BEFORE), ("after", AFTER)],
            )
        )
        h.append("</div>")
        rows = [(k, diff.changed[k], _pct(diff.changed[k], diff.compared)) for k in KINDS]
        rows.append(("any", diff.any_changed, _pct(diff.any_changed, diff.compared)))
        h.append(_html_table(["decision", "changed", "share"], rows, numeric=(1, 2)))
        h.append(
            f"<p>{diff.compared} tickets compared; {diff.live_only} decided live but not replayed; "
            f"{diff.replay_only} replayed without a live decision. Escalated: {diff.escalated_before} before, "
            f"{diff.escalated_after} after (<span class=up>+{diff.newly_escalated}</span> newly, "
            f"<span class=down>-{diff.no_longer_escalated}</span> no longer). Live models: "
            f"{escape(', '.join(f'{m} ({n})' for m, n in diff.live_models.items()) or 'none')}.</p>"
        )
        h.append("<h2>Intent confusion (top changes)</h2>")
        h.append(
            _html_table(["before", "after", "tickets"], [(o, n, c) for o, n, c in diff.intent_changes], numeric=(2,))
            if diff.intent_changes
            else "<p>No intent changed.</p>"
        )
        h.append("<h2>Routes</h2>")
        h.append(
            _html_table(
                ["route", "before", "after", "delta"],
                [(r, b, a, f"{a - b:+d}") for r, (b, a) in diff.routes.items()],
                (1, 2, 3),
            )
        )
        h.append("<h2>Escalation reasons</h2>")
        h.append(
            _html_table(
                ["reason", "before", "after", "delta"],
                [(r, b, a, f"{a - b:+d}") for r, (b, a) in diff.reasons.items()],
                (1, 2, 3),
            )
            if diff.reasons
            else "<p>No ticket escalated on either side.</p>"
        )
        h.append("<h2>Examples (text redacted)</h2>")
        for kind in KINDS:
            examples = diff.examples.get(kind, [])
            if examples:
                h.append(f"<h3>{escape(kind)}</h3>")
                h.append(
                    _html_table(["id", "before", "after", "text"], [(e.id, e.old, e.new, e.text) for e in examples])
                )

    h.append("<h2>Offsets</h2>")
    offsets = [(r.partition, r.start, r.end, r.count, r.beginning, r.end_offset) for r in report.ranges]
    h.append(
        _html_table(
            ["partition", "start", "end (excl.)", "records", "first offset", "end offset"], offsets, (0, 1, 2, 3, 4, 5)
        )
    )
    h.append("<h2>Reproduce</h2>")
    repro = [
        ("run id", report.run_id),
        ("bundle", f"{bundle.get('name')}@{bundle.get('version')} ({bundle.get('path')})"),
        ("manifest sha256", bundle.get("manifest_sha256", "")),
        ("window", f"{_or(window['from'], 'beginning')} .. {_or(window['to'], 'end')}"),
        (
            "offsets",
            f"{_or(window['from_offset'], 'first')} .. {_or(window['to_offset'], 'end')} (per partition above)",
        ),
        ("replay time", f"{report.replay_seconds:.2f} s ({report.events_per_s:.1f} events/s)"),
    ]
    h.append(_html_table(["what", "value"], repro))
    files = bundle.get("files") or {}
    h.append(_html_table(["bundle file", "sha256"], sorted(files.items())))
    h.append(_html_table(["setting", "value"], [(k, json.dumps(v)) for k, v in report.settings.items()]))
    h.append("</body></html>")
    return "\n".join(h) + "\n"


def _log_html(diff: LogDiffReport) -> list[str]:
    """What changed in a log replay, as HTML sections."""
    h = ["<h2>Changes</h2>", '<div class="charts">']
    h.append(
        bar_chart(
            "Alerts before and after",
            [(k, [float(b), float(a)]) for k, (b, a) in diff.alerts.items()],
            [("before", BEFORE), ("after", AFTER)],
        )
    )
    h.append(
        bar_chart(
            "Incident classes before and after",
            [(k, [float(b), float(a)]) for k, (b, a) in list(diff.incident_classes.items())[:16]],
            [("before", BEFORE), ("after", AFTER)],
        )
    )
    h.append("</div>")
    rows = [(k, diff.changed[k], _pct(diff.changed[k], diff.compared)) for k in LOG_KINDS]
    rows.append(("any", diff.any_changed, _pct(diff.any_changed, diff.compared)))
    h.append(_html_table(["decision", "changed", "share"], rows, numeric=(1, 2)))
    h.append(
        f"<p>{diff.compared} lines compared; {diff.live_only} triaged live but not replayed; {diff.replay_only} "
        f"replayed without a live record. Templates: {diff.templates[0]} before, {diff.templates[1]} after. "
        f"Live models: {escape(', '.join(f'{m} ({n})' for m, n in diff.live_models.items()) or 'none')}.</p>"
    )
    for title, table_rows in (
        ("Severities", diff.severities),
        ("Incident classes", diff.incident_classes),
        ("Alerts", diff.alerts),
        ("Routes", diff.routes),
    ):
        h.append(f"<h2>{title}</h2>")
        h.append(
            _html_table(
                ["value", "before", "after", "delta"],
                [(k, b, a, f"{a - b:+d}") for k, (b, a) in table_rows.items()],
                (1, 2, 3),
            )
            if table_rows
            else "<p>None on either side.</p>"
        )
    h.append("<h2>Template changes (top)</h2>")
    h.append(
        _html_table(["before", "after", "lines"], [(o, n, c) for o, n, c in diff.template_changes], numeric=(2,))
        if diff.template_changes
        else "<p>No line changed template.</p>"
    )
    h.append("<h2>Examples (message redacted)</h2>")
    for kind in LOG_KINDS:
        examples = diff.examples.get(kind, [])
        if examples:
            h.append(f"<h3>{escape(kind)}</h3>")
            h.append(_html_table(["line", "before", "after", "text"], [(e.id, e.old, e.new, e.text) for e in examples]))
    return h


def write_html(report: ReplayReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(report), encoding="utf-8")
