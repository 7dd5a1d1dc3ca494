"""Encode frames to an .mp4, .mkv or .webm file with PyAV, optionally with the source's audio.

Offline, frames are stamped at their source times (`OfflineClock`): a constant-rate
source gives a constant-rate file, and a variable-rate one keeps its timing and its
audio sync. Live, frames
are stamped from their capture times in milliseconds: a live stream drops frames when
the model is slower than the source, and a recording must last as long as what it
recorded.
"""

from __future__ import annotations

import errno
import logging
import threading
from os import PathLike
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from mirage_lsd.errors import UserError
from mirage_lsd.sinks import VIDEO_SUFFIXES
from mirage_lsd.sinks._audio import AudioCarry
from mirage_lsd.sinks._video import (
    LiveClock,
    OfflineClock,
    add_video_stream,
    check_frame,
    encode,
    even_padding,
    frame_rate,
    pad_even,
    reason,
)
from mirage_lsd.sinks.base import Sink

log = logging.getLogger(__name__)

_X264_OFFLINE = {"preset": "veryfast", "crf": "20"}
_X264_LIVE = {"preset": "ultrafast", "tune": "zerolatency", "crf": "20"}
# Constant quality (crf with no target bit rate) at libvpx's fastest settings.
_VP9 = {"deadline": "realtime", "cpu-used": "8", "row-mt": "1", "crf": "32", "b": "0"}


# A live recording cannot be made again, so it is written out as it goes: a kill or a
# crash keeps all but about its last second. As MP4 it is fragmented (the index, then a
# fragment each second, each handed to the OS at once; the index waits for the first
# fragment, by when carried AAC has given its decoder settings), where a plain MP4
# without its closing index does not play at all. Matroska (.mkv, .webm) closes a
# cluster each second instead of each 5 s. Offline files stay plain MP4, which every
# editor reads, since their input is still there to run again.
_LIVE_MP4 = {
    "movflags": "empty_moov+delay_moov+default_base_moof",
    "frag_duration": "1000000",  # microseconds
    "flush_packets": "1",
}
_LIVE_MATROSKA = {"cluster_time_limit": "1000", "flush_packets": "1"}  # milliseconds

# errors of the output's disk: a failure to write, not of the carried audio
DISK_ERRORS = frozenset({errno.ENOSPC, errno.EIO, errno.EROFS, getattr(errno, "EDQUOT", 122)})


class VideoFileSink(Sink):
    """H.264 (.mp4, .mkv) or VP9 (.webm) file; `close()` may come from another thread."""

    def __init__(
        self,
        path: str | PathLike[str],
        size: tuple[int, int],
        fps: float,
        live: bool = False,
        audio_from: Path | None = None,
    ) -> None:
        # 1. check the path
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in VIDEO_SUFFIXES:
            raise UserError(
                f"cannot write video to {self.path}: unknown extension {suffix or '(none)'}; "
                f"use one of {' '.join(VIDEO_SUFFIXES)}"
            )
        parent = self.path.parent
        if not parent.is_dir():
            raise UserError(f"cannot write {self.path}: folder {parent} does not exist")
        self.size = size
        self.frames_written = 0
        self._rate = frame_rate(fps)
        self._lock = threading.Lock()
        self._closed = False
        self._warned_closed = False

        # 2. open the container and its streams
        try:
            options = (_LIVE_MP4 if suffix == ".mp4" else _LIVE_MATROSKA) if live else None
            self._container = av.open(str(self.path), "w", container_options=options)
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise UserError(f"cannot write {self.path}: {reason(exc)}") from exc
        if suffix == ".webm":
            codec, options = "libvpx-vp9", _VP9
        else:
            codec, options = "libx264", _X264_LIVE if live else _X264_OFFLINE
        self._audio: AudioCarry | None = None
        self._clock = LiveClock() if live else None
        try:
            self._pad = even_padding(size)
            coded = (size[0] + self._pad[0], size[1] + self._pad[1])
            self._convert = VideoReformatter()
            self._video = add_video_stream(
                self._container, codec, coded, self._rate, "yuv420p", dict(options)
            )
            if audio_from is not None:
                self._audio = AudioCarry.open(audio_from, self._container)
            # the video counts from where the carried audio does: in sync even when the
            # first frames before a keyframe cannot be decoded
            start = self._audio.video_start_s if self._audio is not None else None
            self._offline = OfflineClock(self._rate, origin=start)
            self._video.codec_context.time_base = (
                LiveClock.TIME_BASE if self._clock is not None else self._offline.time_base
            )
            # 3. write the header now, so an unwritable path fails here and not mid-stream
            self._container.start_encoding()
        except BaseException as exc:
            self._abort()  # the container (and the audio input) are not left open
            if isinstance(exc, (av.FFmpegError, OSError)):
                raise UserError(f"cannot write {self.path}: {reason(exc)}") from exc
            raise
        log.info("writing %s (%s, %dx%d at %s fps)", self.path, codec, size[1], size[0], fps)

    def write(self, image: np.ndarray, pts: float | None) -> None:
        """Encode the next frame; `pts`: its capture time live, its source time offline
        (seconds; None when the source has no clock)."""
        check_frame(image, self.size)
        with self._lock:
            if self._closed:
                if not self._warned_closed:
                    log.warning("%s is closed: dropping frames written after close()", self.path)
                    self._warned_closed = True
                return
            stamp = self._offline(pts) if self._clock is None else self._clock(pts)
            try:
                encode(
                    self._container, self._video, pad_even(image, self._pad), stamp, self._convert
                )
                self.frames_written += 1
            except (av.FFmpegError, OSError) as exc:  # a full disk, a removed drive
                raise UserError(f"cannot write {self.path}: {reason(exc)}") from exc
            if self._audio is not None:
                try:
                    self._audio.mux_until(self.duration)
                except (av.FFmpegError, OSError, ValueError) as exc:
                    if getattr(exc, "errno", None) in DISK_ERRORS:  # the output's, not the audio's
                        raise UserError(f"cannot write {self.path}: {reason(exc)}") from exc
                    self._drop_audio(exc)

    @property
    def duration(self) -> float:
        """Seconds of video written so far."""
        if self._clock is not None:
            return self._clock.elapsed_s
        return self._offline.duration_s

    def close(self) -> None:
        """Flush the encoder, end the audio with the video, write the trailer. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                try:
                    encode(self._container, self._video, None, 0, self._convert)
                    if self._audio is not None:
                        try:
                            self._audio.close(self.duration)
                        except (av.FFmpegError, OSError, ValueError) as exc:
                            if getattr(exc, "errno", None) in DISK_ERRORS:
                                raise
                            self._drop_audio(exc)
                finally:
                    if self._audio is not None:
                        self._audio.release()  # the input's second handle, on any path
                    self._container.close()
            except (av.FFmpegError, OSError) as exc:
                raise UserError(f"cannot finish {self.path}: {reason(exc)}") from exc
        log.info("wrote %d frames (%.2f s) to %s", self.frames_written, self.duration, self.path)

    def _drop_audio(self, exc: BaseException) -> None:
        """The carried audio is an extra: when it fails (its clock going back where two
        recordings were joined, a damaged stream), the video goes on without it."""
        assert self._audio is not None
        log.warning(
            "%s: the audio stops at %.1f s (%s); the video goes on without it",
            self.path, self.duration, reason(exc),
        )  # fmt: skip
        self._audio.release()
        self._audio = None

    def _abort(self) -> None:
        """Release what __init__ opened when it fails half way."""
        if self._audio is not None:
            self._audio.release()
        self._container.close()
