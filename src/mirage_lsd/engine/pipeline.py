"""Three threads joined by bounded channels: capture -> inference -> output.

Capture stamps each frame's capture time and hands it on under the mode's
policy (live: newest frame wins; offline: wait for room; bench: hand over the
moment inference is free). Inference runs the model. Output writes to the sink
and calls the user's callback. A failure in any thread stops the others and is
re-raised to the caller by `join()`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from mirage_lsd.engine.channels import Channel, Closed, Policy
from mirage_lsd.engine.processor import FrameProcessor
from mirage_lsd.engine.stats import StatsRecorder
from mirage_lsd.errors import EndOfStream
from mirage_lsd.frame import Frame, FrameInfo
from mirage_lsd.sources.base import Source

log = logging.getLogger(__name__)

Mode = Literal["live", "offline", "bench"]
Deliver = Callable[[np.ndarray, FrameInfo], None]


@dataclass(frozen=True)
class ModePolicy:
    """The hand-off policies and queue sizes that make a mode."""

    capture: Policy
    capture_size: int
    output: Policy
    output_size: int


POLICIES: dict[str, ModePolicy] = {
    "live": ModePolicy("newest", 1, "drop_oldest", 2),
    "offline": ModePolicy("block", 4, "block", 4),
    "bench": ModePolicy("handoff", 1, "block", 4),
}


class Pipeline:
    """Runs one stream from `source` through `processor` to `deliver`."""

    def __init__(
        self,
        source: Source,
        processor: FrameProcessor,
        deliver: Deliver,
        stats: StatsRecorder,
        mode: Mode,
        max_frames: int | None = None,
        on_finish: Callable[[], None] | None = None,
    ) -> None:
        policy = POLICIES[mode]
        self.source, self.processor, self.deliver, self.stats = source, processor, deliver, stats
        self.max_frames = max_frames
        self.on_finish = on_finish
        self._inputs: Channel[Frame] = Channel(policy.capture_size, policy.capture)
        self._outputs: Channel[tuple[np.ndarray, FrameInfo]] = Channel(
            policy.output_size, policy.output
        )
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.error: BaseException | None = None
        self._error_taken = False
        self._threads = [
            threading.Thread(
                target=self._guard, args=(fn, name), name=f"mirage-{name}", daemon=True
            )
            for name, fn in (
                ("capture", self._capture),
                ("inference", self._infer),
                ("output", self._output),
            )
        ]

    # -- control ---------------------------------------------------------------
    def start(self) -> None:
        self.stats.started()
        for thread in self._threads:
            thread.start()

    def request_stop(self) -> None:
        """Stop taking new frames; frames already processed are still written."""
        self._stop.set()
        self.source.interrupt()  # a source waiting to reconnect stops waiting
        self.stats.discarded(len(self._inputs.close(discard=True)))

    def join(self, timeout: float | None = None) -> bool:
        """Wait for all threads (except the caller's own); True when all ended."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            if thread is threading.current_thread():
                continue
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(left)
        return not self.alive

    def take_error(self) -> BaseException | None:
        """The failure, if any, the first time it is asked for; None from then on."""
        with self._lock:
            if self._error_taken:
                return None
            self._error_taken = self.error is not None
            return self.error

    @property
    def owns_current_thread(self) -> bool:
        """True on one of this stream's threads (an `on_frame` callback runs on one)."""
        return threading.current_thread() in self._threads

    @property
    def alive(self) -> bool:
        return any(t.is_alive() for t in self._threads if t is not threading.current_thread())

    # -- threads ---------------------------------------------------------------
    def _guard(self, body: Callable[[], None], role: str) -> None:
        try:
            body()
        except BaseException as exc:  # reported to the caller by the engine
            with self._lock:
                if self.error is None:
                    self.error = exc
            log.debug("pipeline thread %s failed", threading.current_thread().name, exc_info=exc)
            self._stop.set()
            self.source.interrupt()
            # frames already read (when reading failed), transformed, or in the model now
            # are still written (inference closes the outputs when its inputs end), unless
            # writing failed
            if role != "capture":
                self.stats.discarded(len(self._inputs.close(discard=True)))
            if role == "output":
                self._outputs.close(discard=True)

    def _capture(self) -> None:
        source, inputs = self.source, self._inputs
        count = 0
        try:
            while not self._stop.is_set():
                if self.max_frames is not None and count >= self.max_frames:
                    break
                t0, paced = time.perf_counter(), source.counters.paced_s
                try:
                    frame = source.recv()
                except EndOfStream:
                    break
                # a paced source's wait for the frame's due time is not decoding
                decode_s = time.perf_counter() - t0 - (source.counters.paced_s - paced)
                decode_ms = max(0.0, decode_s) * 1000.0
                try:
                    if inputs.policy == "handoff":
                        inputs.wait_ready()
                    frame.capture_time = time.monotonic()
                    dropped = inputs.put(frame)
                except Closed:
                    break
                count += 1
                self.stats.captured(decode_ms, dropped is not None)
                counters = source.counters  # live, as a stream reconnects or skips frames
                self.stats.source_counters(counters.corrupt_frames, counters.reconnects)
        finally:
            inputs.close()
            counters = source.counters
            self.stats.source_counters(counters.corrupt_frames, counters.reconnects)
            source.close()

    def _infer(self) -> None:
        try:
            while True:
                try:
                    frame = self._inputs.get()
                except Closed:
                    break
                image, stage_ms = self.processor(frame.image, frame)
                ready = time.monotonic()
                made_from = self.processor.output_tag  # a lagging model's: an earlier frame
                info = FrameInfo(made_from.index, made_from.pts, made_from.capture_time, ready,
                                 stage_ms)  # fmt: skip
                self.stats.output_ready(info.latency_ms, stage_ms, ready)
                try:
                    if self._outputs.put((image, info)) is not None:
                        self.stats.output_dropped()
                except Closed:
                    break
        finally:
            self._outputs.close()

    def _output(self) -> None:
        try:
            while True:
                try:
                    image, info = self._outputs.get()
                except Closed:
                    break
                self.deliver(image, info)
        finally:
            self.stats.finished()
            if self.on_finish is not None:
                self.on_finish()
