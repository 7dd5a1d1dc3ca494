"""Network streams (RTSP, RTMP, SRT, HTTP and HLS) through PyAV, reconnected when they drop."""

from __future__ import annotations

import logging
import re
import threading

import av
from av.container import InputContainer
from av.video.stream import VideoStream

from mirage_lsd.errors import EndOfStream, UserError
from mirage_lsd.frame import Frame
from mirage_lsd.sources._av import decode_frames, describe, frame_rate, to_rgb
from mirage_lsd.sources._clock import Timeline
from mirage_lsd.sources.base import RetryPolicy, Source

log = logging.getLogger(__name__)

SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "srt", "http", "https")
DEFAULT_FPS = 30.0  # frame step for pts when the stream gives no rate


def url_scheme(spec: str) -> str | None:
    """The scheme of `spec` when it is written as a URL (`scheme://...`), else None."""
    match = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", spec)
    return match.group(1).lower() if match else None


class _NoVideo(Exception):
    """The stream opened but carries no video."""


class NetworkSource(Source):
    """Frames of the first video stream at `url`.

    A network stream has no natural end: when it drops or ends, it is reopened
    per `retry` with exponential backoff, and `recv()` raises `EndOfStream` only
    when it does not come back. pts stay monotonic across reconnections.
    """

    live = True

    def __init__(self, url: str, retry: RetryPolicy | None = None, timeout_s: float = 5.0) -> None:
        super().__init__()
        scheme = url_scheme(url)
        if scheme not in SCHEMES:
            supported = ", ".join(f"{s}://" for s in SCHEMES)
            raise UserError(f"unsupported stream address '{url}': use one of {supported}")
        self.url = url
        self.retry = retry or RetryPolicy()
        self._options = {"rtsp_transport": "tcp"} if scheme.startswith("rtsp") else {}
        self._timeout = (timeout_s, timeout_s)  # (open, read)
        try:
            self._container, stream = self._connect()
        except (av.FFmpegError, OSError, _NoVideo) as exc:
            raise UserError(
                f"cannot open stream '{url}': {describe(exc)}. "
                "Check the address and that the stream is running"
            ) from exc
        self.fps = frame_rate(stream)
        self.size = (stream.height, stream.width) if stream.width and stream.height else None
        self._frames = decode_frames(self._container, stream, self.counters, url)
        self._timeline = Timeline(1.0 / (self.fps or DEFAULT_FPS))
        self._ended = threading.Event()  # closed or given up; also cuts a backoff wait short
        self._index = 0

    def _connect(self) -> tuple[InputContainer, VideoStream]:
        container = av.open(
            self.url, options=self._options, timeout=self._timeout, metadata_errors="replace"
        )
        if not container.streams.video:
            container.close()
            raise _NoVideo("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return container, stream

    def _reconnect(self, cause: str) -> None:
        """Reopen the stream with backoff; EndOfStream if it does not come back."""
        log.warning("stream %s dropped (%s): reconnecting", self.url, cause)
        self._container.close()
        for delay in self.retry.delays():
            if self._ended.wait(delay):  # closed meanwhile
                raise EndOfStream
            self.counters.reconnect_attempts += 1
            try:
                self._container, stream = self._connect()
            except (av.FFmpegError, OSError, _NoVideo) as exc:
                log.info("stream %s: reconnection failed (%s)", self.url, describe(exc))
                continue
            self.counters.reconnects += 1
            self._frames = decode_frames(self._container, stream, self.counters, self.url)
            self._timeline.restart()
            log.info("stream %s is back", self.url)
            return
        log.warning(
            "stream %s did not come back after %d attempts: ending", self.url, self.retry.attempts
        )
        self._ended.set()
        raise EndOfStream

    def recv(self) -> Frame:
        while not self._ended.is_set():
            try:
                frame = next(self._frames)
            except StopIteration:
                self._reconnect("end of stream")
            except (av.FFmpegError, OSError) as exc:
                self._reconnect(describe(exc))
            else:
                out = Frame(to_rgb(frame), self._index, self._timeline(frame.time))
                self._index += 1
                return out
        raise EndOfStream

    def interrupt(self) -> None:
        self._ended.set()  # a backoff wait returns at once, recv() ends

    def close(self) -> None:
        self._ended.set()
        self._container.close()
