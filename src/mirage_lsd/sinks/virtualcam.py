"""Send frames to a virtual camera, so video-call and streaming apps can pick them up."""

from __future__ import annotations

import logging
import threading

import numpy as np

from mirage_lsd.errors import UserError
from mirage_lsd.sinks._video import check_frame, even_padding, pad_even
from mirage_lsd.sinks.base import Sink

log = logging.getLogger(__name__)


class VirtualCameraSink(Sink):
    """pyvirtualcam camera (OBS on Windows/macOS, v4l2loopback on Linux), RGB frames."""

    live = True

    def __init__(self, size: tuple[int, int], fps: float) -> None:
        import pyvirtualcam

        self.size = size
        self.frames_written = 0
        # close() may come from another thread (a second Ctrl-C) while a frame is sent
        self._lock = threading.Lock()
        self._closed = False
        # the camera converts to 4:2:0 (I420, NV12), whose chroma rows need even sides
        self._pad = even_padding(size)
        height, width = size[0] + self._pad[0], size[1] + self._pad[1]
        try:
            self._camera = pyvirtualcam.Camera(
                width=width, height=height, fps=fps, fmt=pyvirtualcam.PixelFormat.RGB
            )
        except RuntimeError as exc:
            log.debug("pyvirtualcam: %s", exc)
            raise UserError(
                "no virtual camera found: install OBS Studio (its virtual camera) or, on Linux, "
                "v4l2loopback (`sudo modprobe v4l2loopback`), or write to a file: --output out.mp4"
            ) from exc
        log.info("sending to virtual camera %s", self._camera.device)

    def write(self, image: np.ndarray, pts: float | None) -> None:
        """Hand the frame to the camera; the engine, not the camera, sets the pace."""
        check_frame(image, self.size)
        with self._lock:
            if self._closed:  # a frame after close() is dropped, not sent to no camera
                return
            self._camera.send(pad_even(image, self._pad))
            self.frames_written += 1

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._camera.close()
