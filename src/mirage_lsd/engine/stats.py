"""Stream telemetry: latency percentiles, throughput, drops and per-stage times.

Every timing goes into a fixed log-bucketed histogram (about 1% resolution from
10 us to 100 s), so percentiles cover the whole run and memory stays flat for
streams of any length.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

STAGES = ("decode", "preprocess", "model", "postprocess", "encode")
RECENT_S = 5.0  # the window of `fps_recent`
RECENT_FRAMES = 4096  # output times kept for it: enough for 800 FPS over the window


class Histogram:
    """Counts of millisecond values in geometric bins; percentiles within ~1%."""

    _LO_MS = 0.01
    _RATIO = 1.01
    _BINS = int(math.log(1e7) / math.log(1.01)) + 2  # 0.01 ms .. 100 s

    def __init__(self) -> None:
        self.counts = np.zeros(self._BINS, dtype=np.int64)
        self.count = 0
        self.total = 0.0

    def add(self, ms: float) -> None:
        i = 0 if ms <= self._LO_MS else int(math.log(ms / self._LO_MS) / math.log(self._RATIO)) + 1
        self.counts[min(i, self._BINS - 1)] += 1
        self.count += 1
        self.total += ms

    def percentile(self, p: float) -> float | None:
        """The value below which `p` percent of samples fall (bin center), or None."""
        if self.count == 0:
            return None
        rank = max(1, math.ceil(self.count * p / 100.0))
        i = int(np.searchsorted(np.cumsum(self.counts), rank))
        if i == 0:
            return self._LO_MS
        lo = self._LO_MS * self._RATIO ** (i - 1)
        return lo * math.sqrt(self._RATIO)

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


@dataclass(frozen=True)
class Stats:
    """A snapshot of a stream's telemetry, JSON-ready through `to_dict()`."""

    model: str
    device: str
    size: tuple[int, int] | None  # output (height, width)
    steps: int
    mode: str
    running: bool
    elapsed_s: float
    frames_in: int
    frames_out: int
    frames_written: int
    dropped: int
    dropped_input: int
    dropped_output: int
    drop_ratio: float
    corrupt_frames: int
    reconnects: int
    fps: float  # over the whole stream
    ttff_ms: float | None
    latency_ms: dict[str, float | None]
    stages_ms: dict[str, float | None]
    stages_p95_ms: dict[str, float | None]
    extra: dict[str, Any] = field(default_factory=dict)
    fps_recent: float = 0.0  # over the last RECENT_S seconds: what a live readout shows

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["size"] = f"{self.size[1]}x{self.size[0]}" if self.size else None
        return data


class StatsRecorder:
    """Collects timings from the pipeline threads; `snapshot()` reads them consistently."""

    def __init__(self, model: str, device: str, steps: int, mode: str) -> None:
        # reentrant: Ctrl-C's handler counts discarded frames on the main thread, which may
        # be inside snapshot() at that moment
        self._lock = threading.RLock()
        self.model, self.device, self.steps, self.mode = model, device, steps, mode
        self.size: tuple[int, int] | None = None
        self.start_time: float | None = None
        self.end_time: float | None = None
        self.first_output_time: float | None = None
        self.frames_in = self.frames_out = self.frames_written = 0
        self.dropped_input = self.dropped_output = 0
        self.corrupt_frames = self.reconnects = 0
        self.latency = Histogram()
        self.stages = {name: Histogram() for name in STAGES}
        self._recent: deque[float] = deque(maxlen=RECENT_FRAMES)  # output times

    def started(self) -> None:
        with self._lock:
            self.start_time = time.monotonic()

    def finished(self) -> None:
        with self._lock:
            if self.end_time is None:
                self.end_time = time.monotonic()

    def captured(self, decode_ms: float | None, dropped: bool) -> None:
        """A frame came in; `decode_ms` None: it came decoded (`process()`)."""
        with self._lock:
            self.frames_in += 1
            if decode_ms is not None:
                self.stages["decode"].add(decode_ms)
            self.dropped_input += dropped

    def output_ready(self, latency_ms: float, stage_ms: dict[str, float], now: float) -> None:
        with self._lock:
            self.frames_out += 1
            self._recent.append(now)
            if self.first_output_time is None:
                self.first_output_time = now
            self.latency.add(latency_ms)
            for name, ms in stage_ms.items():
                self.stages[name].add(ms)

    def written(self, encode_ms: float) -> None:
        with self._lock:
            self.frames_written += 1
            self.stages["encode"].add(encode_ms)

    def discarded(self, count: int) -> None:
        """Captured frames thrown away on stop: counted as input drops."""
        with self._lock:
            self.dropped_input += count

    def output_dropped(self) -> None:
        with self._lock:
            self.dropped_output += 1

    def source_counters(self, corrupt: int, reconnects: int) -> None:
        with self._lock:
            self.corrupt_frames, self.reconnects = corrupt, reconnects

    def snapshot(self, running: bool) -> Stats:
        with self._lock:
            now = self.end_time or time.monotonic()
            elapsed = now - self.start_time if self.start_time is not None else 0.0
            ttff = None
            if self.first_output_time is not None and self.start_time is not None:
                ttff = (self.first_output_time - self.start_time) * 1000.0
            dropped = self.dropped_input + self.dropped_output
            return Stats(
                model=self.model,
                device=self.device,
                size=self.size,
                steps=self.steps,
                mode=self.mode,
                running=running,
                elapsed_s=round(elapsed, 3),
                frames_in=self.frames_in,
                frames_out=self.frames_out,
                frames_written=self.frames_written,
                dropped=dropped,
                dropped_input=self.dropped_input,
                dropped_output=self.dropped_output,
                drop_ratio=round(dropped / self.frames_in, 4) if self.frames_in else 0.0,
                corrupt_frames=self.corrupt_frames,
                reconnects=self.reconnects,
                fps=round(self.frames_out / elapsed, 2) if elapsed > 0 else 0.0,
                ttff_ms=_r(ttff),
                latency_ms={f"p{p}": _r(self.latency.percentile(p)) for p in (50, 90, 95, 99)},
                stages_ms={k: _r(h.percentile(50)) for k, h in self.stages.items()},
                stages_p95_ms={k: _r(h.percentile(95)) for k, h in self.stages.items()},
                fps_recent=self._recent_fps(now),
            )

    def _recent_fps(self, now: float) -> float:
        """Frames out per second over the last RECENT_S seconds (early on, since the
        stream started, as `fps`)."""
        start = self.start_time
        if start is None or self.first_output_time is None:
            return 0.0
        since = max(start, now - RECENT_S)
        count = sum(1 for t in self._recent if t >= since)
        return round(count / (now - since), 2) if now > since else 0.0
