"""A sink that only counts frames: measures the engine without any output cost."""

from __future__ import annotations

import numpy as np

from mirage_lsd.sinks.base import Sink


class NullSink(Sink):
    """Discards every frame, counting it in `frames_written`."""

    def __init__(self) -> None:
        self.frames_written = 0

    def write(self, image: np.ndarray, pts: float | None) -> None:
        self.frames_written += 1
