"""Network streams (RTSP, RTMP, SRT, HTTP and HLS) through PyAV, reconnected when they drop."""

from __future__ import annotations

import logging
import re
import threading

import av
import numpy as np
from av.container import InputContainer
from av.stream import Discard
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
    video_end,
    video_streams,
)
from mirage_lsd.sources._clock import Pacer, Timeline
from mirage_lsd.sources.base import RetryPolicy, Source

log = logging.getLogger(__name__)

SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "srt", "http", "https")
DEFAULT_FPS = 30.0  # frame step for pts when the stream gives no rate
HLS_READ_TIMEOUT_S = 20.0  # over a live playlist's wait for its next 10 s segment
# query values that are credentials: SRT's passphrase and streamid (MediaMTX puts a login
# in it), passwords, tokens, keys and signatures of signed URLs (a CDN's HLS, Facebook's
# RTMPS, S3's X-Amz-Signature, Akamai's hdnts): any name that ends in one of these words
# (access_token, accessToken, apiKey, ...). A value runs to the next '&': FFmpeg's
# srt, rtsp and rtmp handlers read '#' as part of it (SRT's access-control streamid
# starts with "#!::"); only in http(s) does '#' end it.
_SECRET_NAMES = r"[\w.-]*?(?:passphrase|password|passwd|pass|pwd|token|streamid|key|sig"
_SECRET_NAMES += r"|signature|secret|auth|credential|hmac|hdnts|hdnea|tokenhash)"
_SECRET_PARAMS = re.compile(rf"([?&]{_SECRET_NAMES}=)[^&]*", re.IGNORECASE)
_SECRET_HTTP_PARAMS = re.compile(rf"([?&]{_SECRET_NAMES}=)[^&#]*", re.IGNORECASE)


def url_scheme(spec: str) -> str | None:
    """The scheme of `spec` when it is written as a URL (`scheme://...`), else None."""
    match = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", spec)
    return match.group(1).lower() if match else None


def redact_url(url: str) -> str:
    """`url` as it may be shown in messages, logs and reports: a password
    (rtsp://user:***@host/...), secret query values (SRT's passphrase) and an RTMP stream
    key (rtmp://host/app/***?***: the last of two or more path parts, what Twitch and
    YouTube give as the key, and any query, where Facebook signs it; a streamer's
    terminal is often on screen) hidden."""
    match = re.match(r"([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*)", url)
    if match is None:
        return url
    scheme, netloc = match.groups()
    userinfo, _, host = netloc.rpartition("@")  # a password may hold an '@' itself
    if ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
    rest = url[match.end() :]
    if scheme.lower() in ("rtmp://", "rtmps://"):
        path, sep, query = rest.partition("?")
        parts = path.split("/")  # "", app, [...,] key
        if len([p for p in parts if p]) >= 2 and parts[-1]:
            rest = "/".join([*parts[:-1], "***"]) + sep + ("***" if query else "")
    secrets = _SECRET_HTTP_PARAMS if scheme.lower().startswith("http") else _SECRET_PARAMS
    return scheme + netloc + secrets.sub(r"\1***", rest)


_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def redact_urls(text: str) -> str:
    """`text` with every URL in it passed through `redact_url` (tracebacks, FFmpeg's
    messages: they quote the URL they failed on, password and stream key included)."""
    return _URL_IN_TEXT.sub(lambda match: redact_url(match[0]), text)


class _NoVideo(Exception):
    """The stream opened but carries no video."""


class NetworkSource(Source):
    """Frames of the first video stream at `url`.

    A live stream has no natural end: when it drops or ends, it is reopened per
    `retry` with exponential backoff, and `recv()` raises `EndOfStream` only when
    it does not come back; pts stay monotonic across reconnections. A video on
    demand (an HTTP file, a finished HLS playlist: it has a duration) is not live:
    every frame is wanted, its end is the end, and a drop resumes where it broke;
    with `realtime=True` (or `pace()`) it is handed out at the pace of its timestamps,
    as a live stream would be (and reports `live`). Messages and logs name the stream
    by `name`, the URL with its password hidden.
    """

    live = True

    def __init__(
        self,
        url: str,
        retry: RetryPolicy | None = None,
        timeout_s: float = 5.0,
        realtime: bool = False,
    ) -> None:
        super().__init__()
        scheme = url_scheme(url)
        self.name = redact_url(url)
        if scheme not in SCHEMES:
            supported = ", ".join(f"{s}://" for s in SCHEMES)
            raise UserError(f"unsupported stream address '{self.name}': use one of {supported}")
        self.url = url
        self.retry = retry or RetryPolicy()
        self._options = {"rtsp_transport": "tcp"} if scheme.startswith("rtsp") else {}
        self._timeout: tuple[float, float | None] = (timeout_s, timeout_s)  # (open, read)
        if scheme.startswith("http"):
            # A live HLS read waits inside FFmpeg for the next segment, up to its length (6
            # to 10 s is common): a 5 s timeout on the whole read would cut it and
            # reconnect, replaying old segments. Each network transfer is bounded instead
            # (seeks too), and a playlist that stops growing ends after a few reloads; the
            # read's own timeout, longer than a segment's wait, is what lets a stop in.
            self._timeout = (timeout_s, max(timeout_s, HLS_READ_TIMEOUT_S))
            self._options = {"rw_timeout": str(round(timeout_s * 1e6)), "m3u8_hold_counters": "8"}
        try:
            self._container, stream = self._connect()
        except (av.FFmpegError, OSError, _NoVideo) as exc:
            raise UserError(
                f"cannot open stream '{self.name}': {describe(exc)}. "
                "Check the address and that the stream is running"
            ) from exc
        self.fps = frame_rate(stream)
        self._sar = pixel_aspect(stream, self.name)  # None: square pixels (kept on reconnects)
        self._rgb = RgbConverter(self._sar)
        self.size = (
            (stream.height, display_width(stream.width, self._sar))
            if stream.width and stream.height
            else None
        )
        self._end_s = video_end(self._container, stream)  # None: a live stream
        self.duration_s = video_duration(self._container, stream)
        self.live = self._end_s is None
        self._last_time: float | None = None  # stream time of the last frame handed out
        self._frames = decode_frames(self._container, stream, self.counters, self.name)
        self._step = 1.0 / (self.fps or DEFAULT_FPS)
        self._timeline = Timeline(self._step)
        self._pacer: Pacer | None = None
        if realtime:
            self.pace()
        self._ended = threading.Event()  # closed or given up; also cuts a backoff wait short
        self._index = 0
        self._fresh_connection = True  # no frame yet since the last (re)connection
        self._failures = 0  # reconnections since the last frame: the place in the backoff
        self._seekable = True  # a video on demand resumes by a seek until one fails
        self._seeked = False  # this connection was resumed by a seek
        # The first frame is decoded now: its display rotation (a phone clip served over
        # HTTP) sets the upright size. A failed read is dealt with at the first recv().
        self._pending: av.VideoFrame | None = None
        self._open_error: Exception | None = None
        try:
            self._pending = next(self._frames)
        except StopIteration:
            pass
        except (av.FFmpegError, OSError) as exc:
            self._open_error = exc
        self._turns = quarter_turns(self._pending)
        if self._pending is not None:
            height, width = self._pending.height, display_width(self._pending.width, self._sar)
            self.size = (width, height) if self._turns % 2 else (height, width)

    def _connect(self) -> tuple[InputContainer, VideoStream]:
        container = av.open(
            self.url, options=self._options, timeout=self._timeout, metadata_errors="replace"
        )
        videos = video_streams(container)
        if not videos:
            container.close()
            raise _NoVideo("no video stream")
        # An HLS master playlist lists every variant: the largest is the one to transform,
        # and the others must be discarded, or FFmpeg fetches all of their segments too
        stream = max(videos, key=lambda s: ((s.width or 0) * (s.height or 0), s.bit_rate or 0))
        for other in container.streams:
            if other.index != stream.index:
                other.discard = Discard.all
        set_decoder_threads(stream, live=video_end(container, stream) is None)
        return container, stream

    def _reconnect(self, cause: str) -> None:
        """Reopen the stream after the next backoff delay; EndOfStream once the delays
        run out. The schedule starts over only when a frame arrives, so a stream that
        reopens and fails at once cannot loop forever."""
        if self._failures == 0 and not self._seeked:  # said once per drop
            log.warning("stream %s dropped (%s): reconnecting", self.name, cause)
        self._container.close()
        attempts = self.retry.attempts
        while self._failures < attempts:
            delay = self.retry.delay(self._failures)
            self._failures += 1
            if self._ended.wait(delay):  # closed meanwhile
                raise EndOfStream
            self.counters.reconnect_attempts += 1
            try:
                self._container, stream = self._connect()
            except (av.FFmpegError, OSError, _NoVideo) as exc:
                log.info("stream %s: reconnection failed (%s)", self.name, describe(exc))
                continue
            if self._ended.is_set():  # closed while connecting: release what was opened
                self._container.close()
                raise EndOfStream
            self.counters.reconnects += 1
            self._frames = decode_frames(self._container, stream, self.counters, self.name)
            if self._end_s is not None:
                self._resume()
            elif video_end(self._container, stream) is not None:
                # a live event whose playlist has been finished: it would start over
                log.info("stream %s has finished", self.name)
                self._ended.set()
                raise EndOfStream
            else:
                self._timeline.restart()
            self._fresh_connection = True
            log.info("stream %s is back", self.name)
            return
        self._ended.set()
        if self._end_s is not None:  # a video on demand cut short is a failure, not its end
            at = f" at {self._last_time:.1f} s" if self._last_time is not None else ""
            raise UserError(
                f"stream {self.name} broke off{at} of its {self._end_s:.1f} s and did not come "
                f"back after {attempts} attempts"
            )
        log.warning("stream %s did not come back after %d attempts: ending", self.name, attempts)
        raise EndOfStream

    def _resume(self) -> None:
        """A video on demand reopened after a drop: on from the last frame handed out,
        by a seek where the server allows one (range requests), else by skipping."""
        last = self._last_time
        if last is None:
            return
        self._seeked = self._seekable
        if self._seeked:
            try:
                self._container.seek(int(last * 1e6))
            except (av.FFmpegError, OSError):
                self._seekable = self._seeked = False
        frames = self._frames
        self._frames = (f for f in frames if f.time is None or f.time > last)

    def _at_end(self) -> bool:
        """A video on demand ended cleanly: within a second of its video's end, or it had
        nothing new after a reconnection (the end was only an estimate)."""
        if self._end_s is None:
            return False
        last = self._last_time
        return last is None or last >= self._end_s - 1.0 or self._fresh_connection

    def _next_frame(self) -> av.VideoFrame:
        """The next decoded frame, through drops and reconnections; EndOfStream at the end."""
        while not self._ended.is_set():
            try:
                if self._open_error is not None:  # the read at open failed: a drop
                    error, self._open_error = self._open_error, None
                    raise error
                return next(self._frames)
            except StopIteration:
                if self._at_end():
                    self._ended.set()
                    break
                self._reconnect("end of stream")
            except (av.FFmpegError, OSError) as exc:
                if self._fresh_connection and self._seeked:  # the seek broke the read
                    log.info("stream %s cannot seek: skipping to where it broke", self.name)
                    self._seekable = False
                    self._failures -= 1  # not the server's failure: no backoff slot spent
                self._reconnect(describe(exc))
        raise EndOfStream

    def recv(self) -> Frame:
        if self._ended.is_set():
            raise EndOfStream
        frame = self._pending if self._pending is not None else self._next_frame()
        self._pending = None
        self._fresh_connection = self._seeked = False
        self._failures = 0
        if frame.time is not None:
            self._last_time = frame.time
        pts = self._timeline(frame.time)
        if self._pacer is not None:
            self.counters.paced_s += self._pacer.wait_until(pts)
        image = self._rgb(frame)
        if self._turns:
            image = np.ascontiguousarray(np.rot90(image, self._turns))
        out = Frame(image, self._index, pts)
        self._index += 1
        return out

    def pace(self) -> bool:
        if not self.live:  # a video on demand; a live stream has its own pace
            self._pacer = Pacer(slack_s=self._step)
            self.live = True
        return True

    def interrupt(self) -> None:
        self._ended.set()  # a backoff wait returns at once, recv() ends
        if self._pacer is not None:
            self._pacer.interrupt()

    def close(self) -> None:
        self.interrupt()
        self._container.close()
