"""PyAV helpers shared by the file and network sources."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from fractions import Fraction

import av
import numpy as np
from av.container import InputContainer
from av.video.reformatter import VideoReformatter
from av.video.stream import VideoStream

from mirage_lsd.sources.base import SourceCounters

log = logging.getLogger(__name__)


ATTACHED_PIC = 0x0400  # FFmpeg's AV_DISPOSITION_ATTACHED_PIC: a cover image, not video


def video_streams(container: InputContainer) -> list[VideoStream]:
    """The container's video streams that are video: cover art (an attached picture of
    an audio file) is left out."""
    return [s for s in container.streams.video if not int(s.disposition) & ATTACHED_PIC]


def video_duration(container: InputContainer, stream: VideoStream) -> float | None:
    """Seconds the video lasts; None for a live stream, which has no duration. The video
    stream's own where the container gives it (the audio may run longer), else the
    container's."""
    if stream.duration and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration and container.duration > 0:
        return container.duration / av.time_base
    return None


def video_end(container: InputContainer, stream: VideoStream) -> float | None:
    """Stream time (s) at which a video on demand's video ends; None for a live stream."""
    duration = video_duration(container, stream)
    if duration is None:
        return None
    if stream.duration and stream.time_base is not None:
        start = float((stream.start_time or 0) * stream.time_base)
    else:
        start = (container.start_time or 0) / av.time_base
    return start + duration


def set_decoder_threads(stream: VideoStream, live: bool) -> None:
    """Slice threads for a live stream, frame and slice threads (AUTO) otherwise.

    Frame threading holds (threads - 1) frames back before the first comes out: latency
    a live picture cannot spare, while a file or a video on demand, whose next packets
    are already there, decodes fastest with it.
    """
    stream.thread_type = "SLICE" if live else "AUTO"


def quarter_turns(frame: av.VideoFrame | None) -> int:
    """Counter-clockwise quarter turns (0-3) that show `frame` upright, from the file's
    display matrix; a rotation that is not a multiple of 90 degrees is ignored."""
    degrees = 0 if frame is None else getattr(frame, "rotation", 0)  # PyAV >= 14
    if degrees % 90:
        log.warning("ignoring a display rotation of %s degrees (not a multiple of 90)", degrees)
        return 0
    return round(degrees / 90) % 4


def describe(exc: BaseException) -> str:
    """The reason of a PyAV or OS error as a short phrase, for one-line messages."""
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(reason).split())


def decode_frames(
    container: InputContainer, stream: VideoStream, counters: SourceCounters, name: str
) -> Iterator[av.VideoFrame]:
    """Decoded frames of `stream`, skipping packets that fail to decode.

    A damaged packet costs one frame, not the stream: it is counted in
    `counters.corrupt_frames` and decoding goes on. Demuxing errors (a read that
    fails) propagate: the caller decides whether that ends or restarts the stream.
    """
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.FFmpegError as exc:
            counters.corrupt_frames += 1
            level = logging.WARNING if counters.corrupt_frames == 1 else logging.DEBUG
            log.log(level, "%s: skipped a frame that does not decode (%s)", name, describe(exc))
            continue
        yield from frames


def pixel_aspect(stream: VideoStream, name: str) -> Fraction | None:
    """The stream's pixel aspect ratio (SAR) when its pixels are not square, else None.

    DVDs, broadcast and some camera formats store frames whose pixels are wider or
    narrower than tall (720x576 shown as 16:9); players scale them to square pixels,
    and so do our sources (`RgbConverter`), or the look would be drawn on a squashed picture.
    The first SAR is kept for the whole stream (its frame size is fixed). Real ones lie
    between about 1:2 and 2:1; one outside 1:4 to 4:1 is taken for a broken header.
    """
    sar = stream.sample_aspect_ratio
    if not sar or sar == 1:
        return None
    if not Fraction(1, 4) <= sar <= 4:
        log.warning("%s: ignoring a pixel aspect ratio of %s (out of range)", name, sar)
        return None
    sar = Fraction(sar)
    width, height = stream.width, stream.height
    shown = f"{width}x{height} shown as {display_width(width, sar)}x{height}" if width else ""
    log.info("%s: pixels %d:%d (not square) %s", name, sar.numerator, sar.denominator, shown)
    return sar


def display_width(width: int, sar: Fraction | None) -> int:
    """The width a frame `width` pixels wide shows at with square pixels (even, >= 2)."""
    if sar is None or width <= 0:
        return width
    return max(2, round(width * sar / 2) * 2)


ONE_THREAD_PIXELS = 1920 * 1088  # up to 1080p one thread converts faster than many


class RgbConverter:
    """Decoded frames to (H, W, 3) uint8 RGB, C-contiguous, with square pixels (`sar`).

    Through one swscale context, on one thread up to 1080p. Why: `frame.to_ndarray()`
    makes a context per frame, threaded over every core; on 2 vCPUs this is 0.12 against
    0.17-0.20 ms a 640x360/640x480 frame and 0.64 against 0.72 ms at 1920x1080, with
    identical pixels; at 3840x2160 threads pay (2.38 against 2.85 ms), so bigger frames
    keep them (benchmarks/RESULTS.md, "The RGB conversion of decoded frames"). One per
    source: a context is not thread-safe.
    """

    def __init__(self, sar: Fraction | None = None, max_pixels: int | None = None) -> None:
        self.sar = sar
        self.max_pixels = max_pixels  # bigger frames are scaled down to about this many
        self._reformatter = VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        width, height = display_width(frame.width, self.sar), frame.height
        if self.max_pixels is not None and width * height > self.max_pixels:
            scale = math.sqrt(self.max_pixels / (width * height))  # in the same swscale pass
            width, height = max(2, int(width * scale) & ~1), max(2, int(height * scale) & ~1)
        threads = 1 if frame.width * frame.height <= ONE_THREAD_PIXELS else 0  # 0: automatic
        rgb = self._reformatter.reformat(
            frame, width=width, height=height, format="rgb24", threads=threads
        )
        return np.ascontiguousarray(rgb.to_ndarray())  # PyAV pads some widths


def frame_rate(stream: VideoStream) -> float | None:
    """The stream's frame rate, or None when the container does not say."""
    rate = stream.average_rate or stream.guessed_rate
    return float(rate) if rate else None
