"""Telemetry: percentiles from a bounded histogram."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from mirage_lsd.engine.stats import Histogram, StatsRecorder


def test_histogram_percentiles_match_numpy_within_two_percent() -> None:
    values = np.random.default_rng(1).lognormal(mean=2.0, sigma=0.8, size=20000)
    hist = Histogram()
    for v in values:
        hist.add(float(v))
    for p in (50, 90, 95, 99):
        expected = float(np.percentile(values, p))
        assert abs(hist.percentile(p) - expected) / expected < 0.02  # type: ignore[operator]


def test_histogram_memory_is_fixed() -> None:
    hist = Histogram()
    size = hist.counts.nbytes
    for i in range(100000):
        hist.add(i * 0.37)
    for outlier in (1e9, 1e-9, 0.0):  # far outside the binned range: clamped, not grown
        hist.add(outlier)
    assert hist.counts.nbytes == size
    assert hist.count == 100003
    assert 99_000.0 < hist.percentile(100) < 101_000.0  # type: ignore[operator]  # top bin, 100 s
    assert hist.percentile(0) == 0.01  # the bottom bin


def test_snapshot_counts_drops_and_ttff() -> None:
    rec = StatsRecorder("identity", "cpu", 1, "live")
    rec.started()
    for dropped in (False, True, True, False):
        rec.captured(1.0, dropped)
    rec.output_ready(
        5.0, {"preprocess": 1.0, "model": 3.0, "postprocess": 1.0}, now=rec.start_time + 0.02
    )  # type: ignore[operator]
    stats = rec.snapshot(running=False)
    assert stats.frames_in == 4 and stats.dropped == 2 and stats.drop_ratio == 0.5
    assert abs(stats.ttff_ms - 20.0) < 0.01  # type: ignore[operator]
    data = stats.to_dict()
    assert set(data["latency_ms"]) == {"p50", "p90", "p95", "p99"}
    assert set(data["stages_ms"]) == {"decode", "preprocess", "model", "postprocess", "encode"}


def test_counting_drops_from_inside_a_snapshot_does_not_deadlock() -> None:
    """Ctrl-C's handler runs on the main thread, which may be inside snapshot() then."""
    recorder = StatsRecorder("m", "cpu", 1, "live")

    def handler_inside_snapshot() -> None:
        with recorder._lock:  # what snapshot() holds
            recorder.discarded(3)  # what the handler's request_stop() does

    thread = threading.Thread(target=handler_inside_snapshot, daemon=True)
    thread.start()
    thread.join(5)
    assert not thread.is_alive()
    assert recorder.snapshot(running=False).dropped_input == 3


def test_recent_fps_follows_a_slowdown_that_the_lifetime_rate_hides() -> None:
    recorder = StatsRecorder("m", "cpu", 1, "live")
    recorder.started()
    t0 = recorder.start_time
    assert t0 is not None
    for i in range(600):  # 20 s at 30 FPS, then 10 s at 5 FPS
        recorder.output_ready(10.0, {}, t0 + i / 30)
    for i in range(50):
        recorder.output_ready(10.0, {}, t0 + 20 + (i + 1) / 5)
    recorder.end_time = t0 + 30
    stats = recorder.snapshot(running=False)
    assert stats.fps == pytest.approx(650 / 30, rel=0.01)  # 21.7: most of the run was fast
    assert stats.fps_recent == pytest.approx(5.0, rel=0.05)  # the last 5 s
