"""Video files decoded with PyAV: offline by default, or paced to stand in for a camera."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
from av.container import InputContainer
from av.video.stream import VideoStream

from mirage_lsd.errors import EndOfStream, UserError
from mirage_lsd.frame import Frame
from mirage_lsd.sources._av import (
    RgbConverter,
    decode_frames,
    describe,
    display_width,
    frame_rate,
    pixel_aspect,
    quarter_turns,
    set_decoder_threads,
    video_duration,
    video_streams,
)
from mirage_lsd.sources._clock import Pacer, Timeline
from mirage_lsd.sources.base import Source

log = logging.getLogger(__name__)

DEFAULT_FPS = 30.0  # frame step for pts and pacing when the file gives no rate


class VideoFileSource(Source):
    """Frames of the first video stream of a media file (cover art is not video).

    Frames come upright: a display rotation in the file (phones record portrait video
    as landscape frames plus a rotation) is applied, as players do; and with square
    pixels: frames whose pixels are not (anamorphic video) are widened or narrowed.
    `realtime=True` (or `pace()`) hands frames out at the pace of their timestamps, so a
    file can stand in for a live camera (and the source reports `live`). `loop=True`
    starts over at the end, with indices and pts that keep increasing (benchmarks).
    """

    def __init__(self, path: str | os.PathLike[str], realtime: bool = False, loop: bool = False):
        super().__init__()
        self.path = Path(path)
        self.loop = loop
        self._container, self._stream = self._open()
        self._sar = pixel_aspect(self._stream, str(self.path))  # None: square pixels
        self._rgb = RgbConverter(self._sar)
        self.fps = frame_rate(self._stream)
        self.frame_count = self._stream.frames or None
        self.duration_s = video_duration(self._container, self._stream)
        self.audio_path = self.path if self._container.streams.audio else None
        self._step = 1.0 / (self.fps or DEFAULT_FPS)
        self._timeline = Timeline(self._step)
        self._pacer: Pacer | None = None
        if realtime:
            self.pace()
        self._frames = self._decode()
        self._index = 0
        self._pass_frames = 0  # frames of the current pass, so an empty file cannot loop forever
        self._closed = False
        # The first frame is decoded now: its display rotation sets the upright size.
        try:
            first = self._next_frame()
        except EndOfStream:  # a download cut short, every packet corrupt: no frame at all
            self._container.close()
            raise UserError(
                f"no frame of '{self.path}' can be decoded: is the file complete?"
            ) from None
        self._pending: av.VideoFrame | None = first
        self._turns = quarter_turns(first)
        height, width = first.height, first.width
        width = display_width(width, self._sar)
        self.size = (width, height) if self._turns % 2 else (height, width)
        if self._turns:
            log.info("%s: turning frames %d degrees upright", self.path, 90 * self._turns)

    def _open(self) -> tuple[InputContainer, VideoStream]:
        if not self.path.exists():
            raise UserError(f"input file not found: {self.path} (check the path)")
        try:
            container = av.open(str(self.path), metadata_errors="replace")
        except (av.FFmpegError, OSError) as exc:
            raise UserError(
                f"cannot read video '{self.path}': {describe(exc)}. Is it a video file?"
            ) from exc
        videos = video_streams(container)
        if not videos:
            cover = bool(container.streams.video)
            container.close()
            reason = "only cover art, no video stream" if cover else "no video stream"
            raise UserError(f"cannot read video '{self.path}': {reason}. Is it a video file?")
        stream = videos[0]
        set_decoder_threads(stream, live=False)
        return container, stream

    def _decode(self) -> Iterator[av.VideoFrame]:
        return decode_frames(self._container, self._stream, self.counters, str(self.path))

    def _next_frame(self) -> av.VideoFrame:
        """The next decoded frame, starting over at the end when looping."""
        while True:
            try:
                frame = next(self._frames)
            except StopIteration:
                pass
            except (av.FFmpegError, OSError) as exc:
                self.counters.corrupt_frames += 1
                log.warning("%s: reading stopped early (%s)", self.path, describe(exc))
            else:
                self._pass_frames += 1
                return frame
            if self._closed or not self.loop or self._pass_frames == 0:
                self._frames = iter(())
                raise EndOfStream
            self._container.close()
            self._container, self._stream = self._open()
            self._frames = self._decode()
            self._timeline.restart()
            self._pass_frames = 0

    def recv(self) -> Frame:
        frame = self._pending if self._pending is not None else self._next_frame()
        self._pending = None
        image, pts = self._rgb(frame), self._timeline(frame.time)
        if self._turns:
            image = np.ascontiguousarray(np.rot90(image, self._turns))
        if self._pacer is not None:
            self.counters.paced_s += self._pacer.wait_until(pts)
        out = Frame(image, self._index, pts)
        self._index += 1
        return out

    def pace(self) -> bool:
        if self._pacer is None:
            self._pacer = Pacer(slack_s=self._step)
            self.live = True
        return True

    def interrupt(self) -> None:
        if self._pacer is not None:
            self._pacer.interrupt()  # a wait for a frame's time returns at once

    def close(self) -> None:
        self.interrupt()
        self._closed = True
        self._frames = iter(())
        self._pending = None
        self._container.close()
