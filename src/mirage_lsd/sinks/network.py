"""Push frames as a live H.264 stream to an RTMP, SRT or RTSP server.

Unlike a file, a live stream is stamped with the frames' own times (or the wall
clock when they have none): a viewer plays it in real time, so a model running
slower than `fps` must show up as a lower frame rate, not as slow motion.

Every step that waits on the server gives up after `TIMEOUT_S`: RTMP and SRT are
connected by `TimedConnection` (PyAV alone would wait forever for a server that never
answers), RTSP by its muxer's own `timeout`.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from mirage_lsd.errors import UserError
from mirage_lsd.sinks._avio import TimedConnection
from mirage_lsd.sinks._avio import available as timed_connection_available
from mirage_lsd.sinks._video import (
    LiveClock,
    add_video_stream,
    check_frame,
    encode,
    even_padding,
    frame_rate,
    pad_even,
    reason,
)
from mirage_lsd.sinks.base import Sink
from mirage_lsd.sources.network import redact_url

log = logging.getLogger(__name__)

TIMEOUT_S = 5.0  # how long a server may leave the connection, or a write, unanswered
# URL scheme -> (muxer, muxer options). RTSP over TCP: UDP loses packets on busy links.
_FORMATS = {
    "rtmp": ("flv", {}),
    "srt": ("mpegts", {}),
    "rtsp": ("rtsp", {"rtsp_transport": "tcp", "timeout": str(round(TIMEOUT_S * 1e6))}),
}
_X264 = {"preset": "ultrafast", "tune": "zerolatency", "forced-idr": "1"}
# A push's bitrate is capped (x264's VBV): diffusion output is detailed and noisy, and an
# uncapped stream runs to tens of Mbit/s, past what ingest servers take (Twitch: 6) and
# what a home uplink sends. 0.1 bit per pixel per frame: 2.8 Mbit/s at 720p30.
_BITS_PER_PIXEL = 0.1
_KBPS_RANGE = (1000, 6000)


def push_kbps(size: tuple[int, int], fps: float) -> int:
    """The cap of a push of (height, width) frames at `fps`, in kbit/s."""
    kbps = round(size[0] * size[1] * fps * _BITS_PER_PIXEL / 1000)
    return min(max(kbps, _KBPS_RANGE[0]), _KBPS_RANGE[1])


_KEYFRAME_MS = 2000  # how long a viewer who joins late waits for a picture, at most


class StreamPushSink(Sink):
    """Live push of yuv420p H.264 (ultrafast, zerolatency) to `url`; messages and logs
    name it by `name`, the URL with its password hidden."""

    live = True

    def __init__(self, url: str, size: tuple[int, int], fps: float) -> None:
        # 1. pick the muxer from the scheme
        self.url = url
        self.name = name = redact_url(url)
        scheme = url.split("://", 1)[0].lower()
        if scheme not in _FORMATS:
            raise UserError(f"cannot push to {name}: use an rtmp://, srt:// or rtsp:// URL")
        muxer, options = _FORMATS[scheme]
        waits = re.search(r"[?&]mode=(listener|rendezvous)(?:&|$)", url, re.IGNORECASE)
        if scheme == "srt" and waits:  # FFmpeg's libsrt waits for a peer past any timeout
            raise UserError(
                f"cannot push to {name} in mode={waits.group(1).lower()}: it would wait for "
                "a peer with no way to stop it; push as a caller (the default) to a server"
            )
        self.size = size
        self.frames_written = 0
        self._lock = threading.Lock()
        self._closed = False
        self._clock = LiveClock()
        self._last_keyframe_ms: int | None = None
        self._pad = even_padding(size)
        coded = (size[0] + self._pad[0], size[1] + self._pad[1])

        # 2. connect (RTSP's muxer connects when it writes the header)
        rate = frame_rate(fps)
        self._connection: TimedConnection | None = None
        try:
            if muxer != "rtsp" and timed_connection_available():
                self._connection = TimedConnection(url, TIMEOUT_S, name)
            target = url if self._connection is None else self._connection
            self._container = av.open(target, "w", format=muxer, container_options=options)
            self._convert = VideoReformatter()
            kbps = push_kbps(coded, float(rate))
            x264 = {**_X264, "crf": "23", "maxrate": f"{kbps}k", "bufsize": f"{2 * kbps}k"}
            self._video = add_video_stream(self._container, "libx264", coded, rate, "yuv420p", x264)
            # keyframes are placed by time (`write`): a live stream drops the frames the
            # model is too slow for, so a count of frames is no measure of time
            self._video.codec_context.gop_size = max(1, round(10 * _KEYFRAME_MS / 1000 * rate))
            self._video.codec_context.time_base = LiveClock.TIME_BASE  # FLV counts milliseconds
            self._container.start_encoding()
        except BaseException as exc:
            if self._connection is not None:  # its own failure to hang up is moot
                with contextlib.suppress(av.FFmpegError, OSError):
                    self._connection.close()
            if isinstance(exc, av.error.ProtocolNotFoundError):
                raise UserError(
                    f"cannot push to {name}: this FFmpeg build has no {scheme} support; "
                    "use rtmp:// or rtsp://"
                ) from exc
            if isinstance(exc, TimeoutError):
                raise UserError(
                    f"cannot push to {name}: no answer from the server in {TIMEOUT_S:.0f} s "
                    "(is it an RTMP/SRT server, and is it running?)"
                ) from exc
            if isinstance(exc, av.FFmpegError | OSError | ValueError):
                raise UserError(f"cannot push to {name}: {reason(exc)}") from exc
            raise
        log.info("pushing %dx%d H.264 to %s", coded[1], coded[0], name)

    def write(self, image: np.ndarray, pts: float | None) -> None:
        """Encode and send the frame, stamped with `pts` (or the time it arrived)."""
        check_frame(image, self.size)
        image = pad_even(image, self._pad)
        with self._lock:
            if self._closed:
                return
            ms = self._clock(pts)
            key = self._last_keyframe_ms is None or ms - self._last_keyframe_ms >= _KEYFRAME_MS
            if key:
                self._last_keyframe_ms = ms
            try:
                encode(self._container, self._video, image, ms, self._convert, keyframe=key)
            except (av.FFmpegError, OSError) as exc:
                raise UserError(f"stream to {self.name} broke off: {reason(exc)}") from exc
            self.frames_written += 1

    def close(self) -> None:
        """Flush and end the stream; a server that already hung up is only logged."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            steps = [
                lambda: encode(self._container, self._video, None, 0, self._convert),
                self._container.close,
            ]
            if self._connection is not None:  # once the container has sent its last bytes
                steps.append(self._connection.close)
            for step in steps:
                try:
                    step()
                except (av.FFmpegError, OSError) as exc:
                    log.warning("closing the stream to %s: %s", self.name, reason(exc))
        log.info("pushed %d frames to %s", self.frames_written, self.name)
