"""Frames handed over by the caller: any iterable of RGB arrays (SDK users pass generators)."""

from __future__ import annotations

from collections.abc import Iterable, Sized

import numpy as np

from mirage_lsd.errors import EndOfStream, UserError
from mirage_lsd.frame import Frame
from mirage_lsd.sources._clock import Pacer
from mirage_lsd.sources.base import Source


def _check(image: object, index: int) -> np.ndarray:
    if not (
        isinstance(image, np.ndarray)
        and image.ndim == 3
        and image.shape[2] == 3
        and image.dtype == np.uint8
    ):
        got = (
            f"shape {image.shape} dtype {image.dtype}"
            if isinstance(image, np.ndarray)
            else type(image).__name__
        )
        raise UserError(f"frame {index}: expected an (H, W, 3) uint8 RGB array, got {got}")
    # A copy, because the frame crosses threads and a generator may reuse its buffer.
    return np.array(image, order="C")


class ArraySource(Source):
    """Frames from `frames`, an iterable of (H, W, 3) uint8 RGB arrays, timed at `fps`.

    The first frame is read at once, so the size is known when the stream opens.
    """

    def __init__(self, frames: Iterable[np.ndarray], fps: float = 30.0) -> None:
        super().__init__()
        if isinstance(frames, np.ndarray) and frames.ndim != 4:
            raise UserError(
                f"an array of frames must be (N, H, W, 3), got shape {frames.shape}: "
                "wrap a single frame in a list"
            )
        if not fps > 0:
            raise UserError(f"frame rate must be positive, got {fps}")
        self.fps = self._fps = fps
        self.frame_count = len(frames) if isinstance(frames, Sized) else None
        self._frames = iter(frames)
        self._index = 0
        self._pacer: Pacer | None = None
        self._pending = self._next()
        if self._pending is not None:
            height, width = self._pending.shape[:2]
            self.size = (height, width)

    def _next(self) -> np.ndarray | None:
        """The next frame, checked, or None at the end."""
        for image in self._frames:
            return _check(image, self._index)
        return None

    def recv(self) -> Frame:
        image, self._pending = self._pending, None
        if image is None:
            image = self._next()
        if image is None:
            raise EndOfStream
        frame = Frame(image, self._index, self._index / self._fps)
        if self._pacer is not None:
            self.counters.paced_s += self._pacer.wait_until(frame.pts or 0.0)
        self._index += 1
        return frame

    def pace(self) -> bool:
        """Hand a list or an array of frames out at `fps`, as a camera would (live mode).
        A generator is left as it is: it may be a live feed already, paced by its camera."""
        if self.frame_count is None:
            return False
        if self._pacer is None:
            self._pacer = Pacer(slack_s=1.0 / self._fps)
            self.live = True
        return True

    def interrupt(self) -> None:
        if self._pacer is not None:
            self._pacer.interrupt()

    def close(self) -> None:
        self._frames = iter(())
