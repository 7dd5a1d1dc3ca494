"""The media path of one session: newest-frame slot, then the model in a thread.

    remote track --(pump task)--> NewestFrameSlot --(TransformTrack.recv)--> encoder(s)

The pump reads the remote track as fast as it delivers and keeps only the newest
frame; a frame replaced before the model took it is counted as a dropped input.
`TransformTrack.recv()` is paced by the input: it waits for a frame newer than the
last one it processed, converts it, runs `engine.process` and converts back, all
in the session's single model thread, so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NoReturn

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import VIDEO_CLOCK_RATE, VIDEO_TIME_BASE, MediaStreamError

from mirage_lsd.engine.stats import StatsRecorder
from mirage_lsd.engine.stream_engine import StreamEngine
from mirage_lsd.sources._av import RgbConverter

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Arrival:
    """A decoded input frame and when it reached the server (`time.monotonic()`)."""

    frame: av.VideoFrame
    capture_time: float
    seq: int


class NewestFrameSlot:
    """A one-slot, newest-wins hand-off between the pump and the transform track."""

    def __init__(
        self, recorder: StatsRecorder, counting: Callable[[], bool] = lambda: True
    ) -> None:
        self._recorder = recorder
        self._counting = counting  # False: frames replaced unseen are not counted as drops
        self._item: Arrival | None = None
        self._changed = asyncio.Event()
        self._seq = 0
        self.ended = False

    def put(self, frame: av.VideoFrame) -> None:
        replaced = self._item is not None
        if self._counting():
            self._recorder.captured(0.0, dropped=replaced)  # decoding happened in aiortc
        self._item = Arrival(frame, time.monotonic(), self._seq)
        self._seq += 1
        self._changed.set()

    def end(self) -> None:
        self.ended = True
        self._changed.set()

    async def take(self) -> Arrival:
        """The newest frame not taken yet; waits for one. Raises MediaStreamError at end."""
        while self._item is None:
            if self.ended:
                raise MediaStreamError
            self._changed.clear()
            await self._changed.wait()
        item, self._item = self._item, None
        return item


async def pump(source: MediaStreamTrack, slot: NewestFrameSlot) -> None:
    """Read `source` until it ends, handing every frame to `slot`."""
    try:
        while True:
            frame = await source.recv()
            if isinstance(frame, av.VideoFrame):
                slot.put(frame)
    except MediaStreamError:
        log.debug("input track ended")
    finally:
        slot.end()


async def drain(source: MediaStreamTrack) -> None:
    """Read and discard a track nobody uses (a WHIP client's audio): aiortc queues unread frames."""
    with contextlib.suppress(MediaStreamError):
        while True:
            await source.recv()


class TransformTrack(MediaStreamTrack):
    """The session's output video: each newest input frame, transformed by its engine."""

    kind = "video"

    def __init__(
        self,
        slot: NewestFrameSlot,
        engine: StreamEngine,
        executor: ThreadPoolExecutor,
        recorder: StatsRecorder,
        on_fail: Callable[[], None] | None = None,
        watched: asyncio.Event | None = None,
        max_pixels: int | None = None,
    ) -> None:
        super().__init__()
        self._slot = slot
        self._engine = engine
        self._executor = executor
        self._recorder = recorder
        self._on_fail = on_fail  # called (in the event loop) once the model has failed
        # set while someone watches the output (None: always): a relay keeps pulling
        # frames after its last viewer leaves, and the model must not run for nobody
        self._watched = watched
        #: The exception that ended the track (a model failure), reported by the session.
        self.error: BaseException | None = None
        self._first_capture: float | None = None  # the output clock's zero
        self._last_pts = -1
        # one swscale context for the session (its one model thread); it also scales
        # frames above `max_pixels` down
        self._rgb = RgbConverter(max_pixels=max_pixels)

    def stop(self) -> None:
        super().stop()
        if self._watched is not None:
            self._watched.set()  # a recv waiting for a viewer ends now

    async def recv(self) -> av.VideoFrame:
        if self._watched is not None:
            await self._watched.wait()
        if self.readyState != "live":
            raise MediaStreamError
        try:
            arrival = await self._slot.take()
        except MediaStreamError:
            self.stop()
            raise
        loop = asyncio.get_running_loop()
        try:
            out, stage_ms = await loop.run_in_executor(
                self._executor, self._transform, arrival.frame
            )
        except RuntimeError as exc:  # the executor was shut down: the session closed
            if self.readyState != "live":
                raise MediaStreamError from exc
            self._fail(exc)
        except Exception as exc:
            self._fail(exc)
        now = time.monotonic()
        self._recorder.output_ready((now - arrival.capture_time) * 1000.0, stage_ms, now)
        out.pts, out.time_base = self._stamp(arrival.capture_time), VIDEO_TIME_BASE
        return out

    def _stamp(self, capture_time: float) -> int:
        """The output pts: the session's own 90 kHz clock from the first frame, always rising.

        Not the input's pts: that is the sender's RTP timestamp, which starts anywhere and
        wraps at 2**32, and libvpx refuses a pts below its first (the output would freeze).
        """
        if self._first_capture is None:
            self._first_capture = capture_time
        pts = round((capture_time - self._first_capture) * VIDEO_CLOCK_RATE)
        self._last_pts = max(pts, self._last_pts + 1)
        return self._last_pts

    def _fail(self, exc: BaseException) -> NoReturn:
        """The model failed: keep the error for the session, end the output track."""
        debug = log.isEnabledFor(logging.DEBUG)  # a traceback only for --debug
        log.error("model failed, ending the stream: %s", exc, exc_info=exc if debug else None)
        self.error = exc
        self.stop()
        if self._on_fail is not None:
            self._on_fail()
        raise MediaStreamError from exc

    def _transform(self, frame: av.VideoFrame) -> tuple[av.VideoFrame, dict[str, float]]:
        """Runs in the model thread: decode to RGB, model, back to a video frame."""
        t0 = time.perf_counter()
        image = self._rgb(frame)  # (H, W, 3) uint8
        t1 = time.perf_counter()
        result = self._engine.process(image)
        t2 = time.perf_counter()
        out = av.VideoFrame.from_ndarray(result, format="rgb24")
        t3 = time.perf_counter()
        return out, {
            "preprocess": (t1 - t0) * 1000.0,
            "model": (t2 - t1) * 1000.0,
            "postprocess": (t3 - t2) * 1000.0,
        }
