"""A local camera through OpenCV, reopened with backoff when it drops."""

from __future__ import annotations

import logging
import threading
import time

import cv2

from mirage_lsd.errors import EndOfStream, UserError
from mirage_lsd.frame import Frame
from mirage_lsd.sources.base import RetryPolicy, Source

log = logging.getLogger(__name__)


class CameraSource(Source):
    """Frames of camera `index`; `width`, `height`, `fps` are requests the driver may round.

    pts is seconds since the first frame on the monotonic clock: drivers' own
    timestamps differ between backends.
    """

    live = True

    def __init__(
        self,
        index: int,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__()
        if not 0 <= index < 2**31:
            raise UserError(f"camera index {index} is out of range: use 0 for the first camera")
        self.index = index
        self.retry = retry or RetryPolicy()
        self._request = {
            cv2.CAP_PROP_FRAME_WIDTH: width,
            cv2.CAP_PROP_FRAME_HEIGHT: height,
            cv2.CAP_PROP_FPS: fps,
        }
        self._cap = self._open()
        if self._cap is None:
            raise UserError(
                f"camera {index} not found: check it is connected and not in use by another "
                "program (list cameras with `ls /dev/video*` on Linux)"
            )
        self.fps = self._cap.get(cv2.CAP_PROP_FPS) or fps or None
        got_w = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        got_h = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.size = (got_h, got_w) if got_w and got_h else None
        self._ended = threading.Event()  # closed or given up; also cuts a backoff wait short
        self._t0: float | None = None
        self._frame_index = 0
        self._failures = 0  # failed reads since the last frame: the place in the backoff

    def _open(self) -> cv2.VideoCapture | None:
        # OpenCV prints its own warnings for an absent camera; ours is the one line users see
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        cap = cv2.VideoCapture(self.index)
        if not cap.isOpened():
            cap.release()
            return None
        for prop, value in self._request.items():
            if value is not None:
                cap.set(prop, value)
        return cap

    def _recover(self) -> None:
        """After a failed read: wait out the next backoff delay and reopen the camera.

        The schedule only starts over once a frame arrives, so a camera that reopens
        but stays silent also runs it out. Then EndOfStream, or a UserError if the
        camera never sent a frame at all.
        """
        if self._failures == 0:
            what = "stopped delivering frames" if self._frame_index else "sends no frames yet"
            log.warning("camera %d %s: reopening", self.index, what)
        while self._failures < self.retry.attempts:
            delay = self.retry.delay(self._failures)
            self._failures += 1
            if self._cap is not None:
                self._cap.release()
                self._cap = None
            if self._ended.wait(delay):  # closed meanwhile
                raise EndOfStream
            self.counters.reconnect_attempts += 1
            self._cap = self._open()
            if self._ended.is_set():  # closed while opening: release the camera again
                self.close()
                raise EndOfStream
            if self._cap is not None:
                return
        self._ended.set()
        if self._frame_index == 0:  # it never worked: say so, not "0 frames"
            raise UserError(
                f"camera {self.index} opened but sent no frames: it may be in use by another "
                "program, or not support the requested size or frame rate"
            )
        log.warning("camera %d did not come back: ending the stream", self.index)
        raise EndOfStream

    def recv(self) -> Frame:
        while True:
            if self._ended.is_set():
                raise EndOfStream
            ok, bgr = self._cap.read() if self._cap is not None else (False, None)
            if ok:
                break
            self._recover()
        if self._failures:
            self._failures = 0
            if self._frame_index:
                self.counters.reconnects += 1
                log.info("camera %d is back", self.index)
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        frame = Frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), self._frame_index, now - self._t0)
        self._frame_index += 1
        return frame

    def interrupt(self) -> None:
        self._ended.set()  # a backoff wait returns at once, recv() ends

    def close(self) -> None:
        self._ended.set()
        if self._cap is not None:
            self._cap.release()
            self._cap = None
