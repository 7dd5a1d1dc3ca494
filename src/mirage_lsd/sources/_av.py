"""PyAV helpers shared by the file and network sources."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import av
import numpy as np
from av.container import InputContainer
from av.video.stream import VideoStream

from mirage_lsd.sources.base import SourceCounters

log = logging.getLogger(__name__)


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


def to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """(H, W, 3) uint8 RGB, C-contiguous (PyAV returns a padded view for some widths)."""
    return np.ascontiguousarray(frame.to_ndarray(format="rgb24"))


def frame_rate(stream: VideoStream) -> float | None:
    """The stream's frame rate, or None when the container does not say."""
    rate = stream.average_rate or stream.guessed_rate
    return float(rate) if rate else None
