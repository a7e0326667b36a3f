"""Burst detection over event-time windows, and first sightings of error templates."""

from __future__ import annotations

import pytest

from streamer.logs.bursts import Burst, BurstConfig, BurstDetector, ErrorTemplateWatch

W = 60_000
T0 = 1_795_860_000_000  # a window boundary (multiple of 60 s)
CFG = BurstConfig(window_ms=W, allowed_lateness_ms=5_000, min_count=10, factor=3.0, alpha=0.5)


def feed(d: BurstDetector, n: int, start: int, tid: str = "T1", service: str = "svc", step: int = 100) -> list[Burst]:
    out = []
    for i in range(n):
        b = d.observe(service, tid, start + i * step, "error", f"line {i}")
        if b is not None:
            out.append(b)
    return out


def test_no_alert_below_min_count() -> None:
    assert feed(BurstDetector(CFG), 9, T0) == []


def test_exactly_one_alert_per_window_and_key() -> None:
    d = BurstDetector(CFG)
    bursts = feed(d, 50, T0)
    assert len(bursts) == 1
    b = bursts[0]
    assert (b.service, b.template_id, b.window_start_ms, b.window_end_ms) == ("svc", "T1", T0, T0 + W)
    assert (b.count, b.baseline, b.threshold) == (10, 0.0, 10.0)
    assert b.samples == ("line 0", "line 1", "line 2")
    # another template in the same window has its own key
    assert len(feed(d, 10, T0 + 10_000, tid="T2")) == 1


def test_the_baseline_raises_the_bar() -> None:
    d = BurstDetector(CFG)
    assert len(feed(d, 20, T0)) == 1  # baseline 0: min_count decides
    assert feed(d, 20, T0 + W) == []  # baseline 0.5*20 = 10, threshold 30
    assert d.baseline("svc", "T1", T0 + 2 * W) == pytest.approx(0.5 * 20 + 0.5 * 10)
    [b] = feed(d, 60, T0 + 2 * W, step=10)
    assert b.count == 45 and b.baseline == pytest.approx(15.0) and b.threshold == pytest.approx(45.0)


def test_empty_windows_decay_the_baseline() -> None:
    d = BurstDetector(CFG)
    feed(d, 20, T0)  # baseline 10 once the window closes
    d.observe("svc", "other", T0 + 10 * W, "error")  # moves the watermark, closes the first window
    assert d.baseline("svc", "T1", T0 + W) == pytest.approx(10.0)
    assert d.baseline("svc", "T1", T0 + 4 * W) == pytest.approx(10.0 * 0.5**3)  # three empty windows
    assert len(feed(d, 10, T0 + 10 * W)) == 1  # decayed far below min_count again


def test_lines_below_min_severity_are_not_counted() -> None:
    d = BurstDetector(CFG)
    for i in range(30):
        assert d.observe("svc", "T1", T0 + i, "info") is None
    assert feed(d, 9, T0) == []


def test_late_records_are_dropped_after_the_window_closes() -> None:
    d = BurstDetector(CFG)
    feed(d, 5, T0)
    d.observe("svc", "T1", T0 + W + 4_000, "error")  # within lateness: the first window is still open
    assert feed(d, 5, T0 + 1_000) != []  # ... so these count there and take it to 10
    assert d.late == 0
    d.observe("svc", "T1", T0 + W + 6_000, "error")  # the watermark passes end + lateness
    assert d.observe("svc", "T1", T0 + 500, "error") is None
    assert d.late == 1


def test_watermarks_are_per_service() -> None:
    d = BurstDetector(CFG)
    feed(d, 5, T0, service="slow")
    d.observe("fast", "T9", T0 + 10 * W, "error")  # another service far ahead
    assert len(feed(d, 5, T0 + 1_000, service="slow")) == 1  # "slow"'s window is still open
    assert d.late == 0


def test_rename_moves_counts_and_baselines() -> None:
    d = BurstDetector(CFG)
    feed(d, 6, T0, tid="Told")
    feed(d, 3, T0, tid="Tnew")
    d.rename("Told", "Tnew")
    [b] = feed(d, 1, T0 + 30_000, tid="Tnew")
    assert b.count == 10
    feed(d, 1, T0 + 2 * W, tid="Tnew")  # closes the first window
    assert d.baseline("svc", "Tnew", T0 + W) == pytest.approx(5.0)


def test_detection_is_deterministic() -> None:
    events = [("svc", f"T{i % 3}", T0 + i * 137, "error") for i in range(2000)]

    def run() -> list[Burst]:
        d = BurstDetector(CFG)
        return [b for e in events if (b := d.observe(*e)) is not None]

    assert run() == run()
    assert len(run()) > 0


def test_state_roundtrip() -> None:
    d = BurstDetector(CFG)
    feed(d, 20, T0)
    d.observe("svc", "x", T0 + 2 * W, "error")
    restored = BurstDetector(CFG)
    restored.load_state(d.state())
    assert restored.baseline("svc", "T1", T0 + 3 * W) == pytest.approx(d.baseline("svc", "T1", T0 + 3 * W))


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="window_ms"):
        BurstConfig(window_ms=0)
    with pytest.raises(ValueError, match="alpha"):
        BurstConfig(alpha=0)
    with pytest.raises(ValueError, match="severity"):
        BurstConfig(min_severity="loud")


def test_error_template_watch_fires_once_per_template() -> None:
    w = ErrorTemplateWatch()
    assert not w.first_sighting("T1", "warning")
    assert w.first_sighting("T1", "error")
    assert not w.first_sighting("T1", "critical")
    assert w.first_sighting("T2", "critical")
    w.rename("T1", "T3")
    assert not w.first_sighting("T3", "error")  # a generalised template inherits the sighting
    assert w.seen() == ["T1", "T2", "T3"]
