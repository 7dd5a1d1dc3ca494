"""Pieces shared by the PyAV sinks: frame checks and encoder set-up."""

from __future__ import annotations

import logging
import math
import time
from fractions import Fraction

import av
import numpy as np
from av.container import OutputContainer
from av.video.frame import PictureType
from av.video.reformatter import (
    ColorPrimaries,
    ColorRange,
    Colorspace,
    ColorTrc,
    VideoReformatter,
)
from av.video.stream import VideoStream

log = logging.getLogger(__name__)


def check_frame(image: np.ndarray, size: tuple[int, int]) -> None:
    """Reject frames that are not (H, W, 3) uint8 of the size the sink was opened with."""
    if image.shape != (*size, 3) or image.dtype != np.uint8:
        raise ValueError(
            f"sink expects {size[0]}x{size[1]}x3 uint8 frames, got {image.shape} {image.dtype}"
        )


def frame_rate(fps: float) -> Fraction:
    """`fps` as a rational PyAV accepts (29.97 -> 30000/1001)."""
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return Fraction(fps).limit_denominator(1001)


def even_padding(size: tuple[int, int]) -> tuple[int, int]:
    """Rows and columns (0 or 1) that make `size` even: 4:2:0, the only chroma layout
    browsers, phones and most players decode, needs even sides. The edge pixels are
    repeated, which no one sees; 4:4:4 would keep the size but not play there."""
    pad = (size[0] % 2, size[1] % 2)
    if any(pad):
        log.info(
            "%dx%d has an odd side: encoding %dx%d (the edge repeated) for players",
            size[1], size[0], size[1] + pad[1], size[0] + pad[0],
        )  # fmt: skip
    return pad


def pad_even(image: np.ndarray, pad: tuple[int, int]) -> np.ndarray:
    """`image` with `pad` (from `even_padding`) rows and columns of its edge repeated."""
    if not any(pad):
        return image
    return np.pad(image, ((0, pad[0]), (0, pad[1]), (0, 0)), mode="edge")


def add_video_stream(
    container: OutputContainer,
    codec: str,
    size: tuple[int, int],
    rate: Fraction,
    pix_fmt: str,
    options: dict[str, str],
) -> VideoStream:
    """Add a video encoder whose time base is one frame (1/rate), tagged BT.709 at
    limited range: the colours `encode()` converts to. Untagged, a player guesses (BT.601
    for SD, BT.709 for HD) and shifts the colours whenever it guesses otherwise."""
    stream = container.add_stream(codec, rate=rate, options=options)
    stream.height, stream.width = size
    stream.pix_fmt = pix_fmt
    context = stream.codec_context
    context.time_base = 1 / rate
    context.colorspace = Colorspace.ITU709  # = AVCOL_SPC_BT709
    context.color_primaries = ColorPrimaries.BT709  # sRGB's primaries
    context.color_trc = ColorTrc.BT709
    context.color_range = ColorRange.MPEG
    return stream


class LiveClock:
    """Millisecond pts from the frames' capture times, for live streams.

    A live stream drops frames when the model is slower than the source, so frame
    counts are not time: stamping by capture time keeps a recording as long as what
    it recorded. Strictly increasing, as muxers require.
    """

    TIME_BASE = Fraction(1, 1000)

    def __init__(self) -> None:
        self._t0: float | None = None
        self._last = -1

    def __call__(self, pts: float | None) -> int:
        """`pts` in seconds (None: now) -> milliseconds since the first frame."""
        now = time.monotonic() if pts is None else pts
        if self._t0 is None:
            self._t0 = now
        self._last = max(self._last + 1, round((now - self._t0) / self.TIME_BASE))
        return self._last

    @property
    def elapsed_s(self) -> float:
        """Seconds from the first frame to the last one stamped."""
        return float(max(self._last, 0) * self.TIME_BASE)


class OfflineClock:
    """Pts at the source's own times, for files written offline.

    The time base is 1/90000 s (MPEG's), refined to hold one frame step exactly
    (24000/1001 fps: 1/360000 s, 15015 ticks), so in an .mp4 a constant-rate source
    stays exactly constant-rate (Matroska and WebM store milliseconds). A variable-rate
    source (phone videos, screen recordings, GIFs) keeps its pauses, so the video lasts
    as long as the source and carried audio stays in sync. Muxers need strictly
    increasing pts: a frame stamped no later than the last goes one tick after it, a
    frame with no time one step after it, and timestamps that restart (a second or more
    back) go on one step after the last.
    """

    RESTART_S = 1.0

    def __init__(self, rate: Fraction, origin: float | None = None) -> None:
        """`origin`: the source time of tick 0 (where its carried audio starts counting);
        by default the first frame's."""
        ticks = math.lcm(90000, rate.numerator)
        self.time_base = Fraction(1, ticks if ticks <= 2**26 else 90000)
        self._step = max(1, round(1 / (rate * self.time_base)))  # ticks per frame
        self._origin = origin
        self.last: int | None = None  # the last tick given

    def __call__(self, pts: float | None) -> int:
        """`pts` in seconds on the source's clock (None: unknown) -> a tick."""
        after = 0 if self.last is None else self.last + self._step
        if pts is None:
            tick = after
        else:
            if self._origin is None:
                self._origin = pts
            tick = round((pts - self._origin) / self.time_base)
            if self.last is None:
                tick = max(0, tick)
            elif tick <= self.last:
                if (self.last - tick) * self.time_base >= self.RESTART_S:  # a new timeline
                    self._origin, tick = pts - after * self.time_base, after
                else:  # a repeated or slightly early time: just after the last
                    tick = self.last + 1
        self.last = tick
        return tick

    @property
    def duration_s(self) -> float:
        """Seconds from tick 0 to the end of the last frame."""
        return 0.0 if self.last is None else float((self.last + self._step) * self.time_base)


def encode(
    container: OutputContainer,
    stream: VideoStream,
    image: np.ndarray | None,
    pts: int,
    convert: VideoReformatter,
    keyframe: bool = False,
) -> None:
    """Encode one RGB frame at `pts` (stream time base) and mux its packets; None flushes;
    `keyframe` makes it one (an IDR: a viewer who joins can start there).

    The frame is converted here by `convert` (one per stream: it keeps its swscale
    context from frame to frame), with the BT.709 matrix the stream is tagged with (the
    encoder's own conversion would use swscale's default, BT.601).
    """
    frame = None
    if image is not None:
        frame = convert.reformat(
            av.VideoFrame.from_ndarray(image, format="rgb24"),
            format=stream.codec_context.pix_fmt,
            dst_colorspace=Colorspace.ITU709,
            dst_color_range=ColorRange.MPEG,
        )
        frame.pts = pts
        frame.time_base = stream.codec_context.time_base
        if keyframe:
            frame.pict_type = PictureType.I
    container.mux(stream.encode(frame))


def reason(exc: Exception) -> str:
    """The short cause of an FFmpeg/OS error, without the path or URL it repeats."""
    return getattr(exc, "strerror", None) or str(exc)
