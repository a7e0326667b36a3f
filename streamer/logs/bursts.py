"""Error bursts per (service, template) over event-time windows, and first sightings of error templates.

Pure and deterministic: callers pass event timestamps; there is no wall clock. Windows are tumbling,
aligned to the epoch, ``window_ms`` wide. A window of a service closes when that service's event time
(its watermark: the latest timestamp seen from it) passes the window's end plus ``allowed_lateness_ms``;
later records for a closed window are counted as late and otherwise ignored. Watermarks are per
service because logs are keyed by service: one slow or skewed service does not close everyone's
windows.

Baseline: per key, an exponentially weighted mean of its counts in past windows (empty windows count
as zero, applied lazily when the key shows up again). A burst is ``count >= max(min_count, factor *
baseline)`` within one window, reported the moment the count crosses the threshold, so alerts are not
held back until the window ends, and at most once per (window, key).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from streamer.logs.decode import SEVERITY_RANK

__all__ = ["Burst", "BurstConfig", "BurstDetector", "ErrorTemplateWatch"]

Key = tuple[str, str]  # (service, template id)


@dataclass(frozen=True, slots=True)
class BurstConfig:
    """Burst settings.

    ``window_ms``: window width (60 s). ``allowed_lateness_ms``: how long after its end a window still
    accepts records (10 s). ``min_count``: a window never bursts below this many records (20).
    ``factor``: how many times the baseline a window must reach (5). ``alpha``: weight of the latest
    window in the baseline (0.3). ``min_severity``: lines below it are not counted (``warning``).
    ``sample_size``: lines kept per window and key for the alert (3).
    """

    window_ms: int = 60_000
    allowed_lateness_ms: int = 10_000
    min_count: int = 20
    factor: float = 5.0
    alpha: float = 0.3
    min_severity: str = "warning"
    sample_size: int = 3

    def __post_init__(self) -> None:
        if self.window_ms <= 0 or self.allowed_lateness_ms < 0 or self.min_count < 1:
            raise ValueError("window_ms must be > 0, allowed_lateness_ms >= 0 and min_count >= 1")
        if not 0 < self.alpha <= 1 or self.factor <= 0:
            raise ValueError("alpha must be in (0, 1] and factor > 0")
        if self.min_severity not in SEVERITY_RANK:
            raise ValueError(f"unknown severity {self.min_severity!r}")


@dataclass(frozen=True, slots=True)
class Burst:
    """One window in which one template of one service crossed its threshold."""

    service: str
    template_id: str
    window_start_ms: int
    window_end_ms: int
    count: int
    baseline: float
    threshold: float
    severity: str
    samples: tuple[str, ...]


@dataclass(slots=True)
class _Cell:
    count: int = 0
    alerted: bool = False
    severity: str = "unknown"
    samples: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Baseline:
    value: float
    window_start_ms: int  # the last window folded into ``value``


class BurstDetector:
    """Counts records per (service, template) and window and reports bursts; see the module docstring."""

    def __init__(self, config: BurstConfig | None = None) -> None:
        self.config = config or BurstConfig()
        self._min_rank = SEVERITY_RANK[self.config.min_severity]
        self._open: dict[str, dict[int, dict[str, _Cell]]] = {}  # service -> window start -> template -> cell
        self._watermark: dict[str, int] = {}
        self._next_close: dict[str, int] = {}
        self._baselines: dict[Key, _Baseline] = {}
        self.late = 0
        self._closed_since_prune = 0

    def observe(
        self, service: str, template_id: str, time_ms: int, severity: str, sample: str | None = None
    ) -> Burst | None:
        """Count one record; a ``Burst`` when this record takes its window over the threshold."""
        if SEVERITY_RANK.get(severity, 2) < self._min_rank:
            return None
        cfg = self.config
        wm = self._watermark.get(service)
        if wm is None or time_ms > wm:
            self._watermark[service] = wm = time_ms
            if wm >= self._next_close.get(service, wm + 1):
                self._close(service)
        start = time_ms - time_ms % cfg.window_ms
        if start + cfg.window_ms + cfg.allowed_lateness_ms <= wm:
            self.late += 1
            return None
        windows = self._open.get(service)
        if windows is None:
            windows = self._open[service] = {}
        cells = windows.get(start)
        if cells is None:
            cells = windows[start] = {}
            close_at = start + cfg.window_ms + cfg.allowed_lateness_ms
            if close_at < self._next_close.get(service, close_at + 1):
                self._next_close[service] = close_at
        cell = cells.get(template_id)
        if cell is None:
            cell = cells[template_id] = _Cell()
        cell.count += 1
        if SEVERITY_RANK.get(severity, 2) > SEVERITY_RANK.get(cell.severity, 2):
            cell.severity = severity
        if sample is not None and len(cell.samples) < cfg.sample_size:
            cell.samples.append(sample)
        if cell.alerted or cell.count < cfg.min_count:
            return None
        baseline = self.baseline(service, template_id, start)
        threshold = max(float(cfg.min_count), cfg.factor * baseline)
        if cell.count < threshold:
            return None
        cell.alerted = True
        return Burst(
            service, template_id, start, start + cfg.window_ms, cell.count, baseline, threshold, cell.severity,
            tuple(cell.samples),
        )  # fmt: skip

    def baseline(self, service: str, template_id: str, window_start_ms: int) -> float:
        """The baseline of a key as seen from a window: every earlier window, decayed over empty ones.

        Earlier windows still open (within their lateness) count with what they have so far, so a
        burst that spans a window boundary is not reported twice against a zero baseline.
        """
        cfg = self.config
        keep = 1.0 - cfg.alpha
        b = self._baselines.get((service, template_id))
        value, last = (b.value, b.window_start_ms) if b is not None else (0.0, None)
        for start in sorted(self._open.get(service, {})):
            if start >= window_start_ms:
                break
            cell = self._open[service][start].get(template_id)
            if cell is None:
                continue
            if last is not None and start > last:
                gap = (start - last) // cfg.window_ms - 1
                value = cfg.alpha * cell.count + keep * value * keep ** max(gap, 0)
            else:
                value = value + cfg.alpha * cell.count if last is not None else cfg.alpha * cell.count
            last = start if last is None else max(last, start)
        if last is None:
            return 0.0
        gap = (window_start_ms - last) // cfg.window_ms - 1
        return value * keep**gap if gap > 0 else value

    def _close(self, service: str) -> None:
        cfg = self.config
        wm = self._watermark[service]
        windows = self._open.get(service, {})
        for start in sorted(windows):
            if start + cfg.window_ms + cfg.allowed_lateness_ms > wm:
                break
            for template_id, cell in windows.pop(start).items():
                self._fold((service, template_id), start, cell.count)
        self._next_close[service] = (
            min(windows) + cfg.window_ms + cfg.allowed_lateness_ms if windows else wm + cfg.window_ms
        )
        self._closed_since_prune += 1
        if self._closed_since_prune >= 256:
            self._prune()

    def _fold(self, key: Key, start: int, count: int) -> None:
        alpha = self.config.alpha
        b = self._baselines.get(key)
        if b is None:
            self._baselines[key] = _Baseline(alpha * count, start)
            return
        if start <= b.window_start_ms:  # a late window after a newer one: fold without decay
            b.value += alpha * count
            return
        gap = (start - b.window_start_ms) // self.config.window_ms - 1
        decayed = b.value * (1.0 - alpha) ** gap if gap > 0 else b.value
        b.value = alpha * count + (1.0 - alpha) * decayed
        b.window_start_ms = start

    def _prune(self) -> None:
        """Forget baselines that decayed to nothing, so keys of retired templates do not pile up."""
        self._closed_since_prune = 0
        for key in [k for k, b in self._baselines.items() if self._decayed(k, b) < 0.01]:
            del self._baselines[key]

    def _decayed(self, key: Key, b: _Baseline) -> float:
        wm = self._watermark.get(key[0], b.window_start_ms)
        return self.baseline(key[0], key[1], wm - wm % self.config.window_ms)

    def rename(self, old_id: str, new_id: str) -> None:
        """Move a superseded template's counts and baseline to the template that replaced it."""
        if old_id == new_id:
            return
        for windows in self._open.values():
            for cells in windows.values():
                cell = cells.pop(old_id, None)
                if cell is None:
                    continue
                into = cells.get(new_id)
                if into is None:
                    cells[new_id] = cell
                else:
                    into.count += cell.count
                    into.alerted = into.alerted or cell.alerted
                    into.samples = (into.samples + cell.samples)[: self.config.sample_size]
                    if SEVERITY_RANK.get(cell.severity, 2) > SEVERITY_RANK.get(into.severity, 2):
                        into.severity = cell.severity
        for service, tid in [k for k in self._baselines if k[1] == old_id]:
            old = self._baselines.pop((service, tid))
            new = self._baselines.get((service, new_id))
            if new is None:
                self._baselines[(service, new_id)] = old
            else:  # counts add up, so baselines do: bring both to the same window and sum
                latest = max(old.window_start_ms, new.window_start_ms)
                new.value = self._decay_to(new, latest) + self._decay_to(old, latest)
                new.window_start_ms = latest

    def _decay_to(self, b: _Baseline, start: int) -> float:
        steps = (start - b.window_start_ms) // self.config.window_ms
        return b.value * (1.0 - self.config.alpha) ** steps if steps > 0 else b.value

    def state(self) -> dict[str, Any]:
        """Baselines and watermarks as plain JSON types (open windows restart empty after a restore)."""
        return {
            "watermarks": dict(self._watermark),
            "baselines": [[s, t, b.value, b.window_start_ms] for (s, t), b in self._baselines.items()],
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what ``state()`` returned."""
        for service, wm in (state.get("watermarks") or {}).items():
            self._watermark[str(service)] = int(wm)
            self._next_close[str(service)] = int(wm) + self.config.window_ms
        for service, tid, value, start in state.get("baselines") or ():
            self._baselines[(str(service), str(tid))] = _Baseline(float(value), int(start))


class ErrorTemplateWatch:
    """Remembers which templates have been seen at error level, so each raises one alert, ever."""

    def __init__(self, seen: Iterable[str] = (), min_severity: str = "error") -> None:
        self._seen: set[str] = set(seen)
        self._min_rank = SEVERITY_RANK[min_severity]

    def first_sighting(self, template_id: str, severity: str) -> bool:
        """True exactly once per template id: the first time it is seen at ``min_severity`` or above."""
        if SEVERITY_RANK.get(severity, 2) < self._min_rank or template_id in self._seen:
            return False
        self._seen.add(template_id)
        return True

    def rename(self, old_id: str, new_id: str) -> None:
        """A template that replaces one already alerted on inherits its sighting."""
        if old_id in self._seen:
            self._seen.add(new_id)

    def mark_seen(self, template_id: str) -> None:
        self._seen.add(template_id)

    def __contains__(self, template_id: object) -> bool:
        return template_id in self._seen

    def seen(self) -> list[str]:
        return sorted(self._seen)
