"""What every frame sink is: `write()` frames of one fixed size, then `close()`.

A sink is opened knowing the output size and frame rate. `close()` must leave a
finished, playable result even when the stream was interrupted (Ctrl-C).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class Sink(ABC):
    """Consumer of output frames, (H, W, 3) uint8 RGB, all of the opened size."""

    frames_written: int = 0
    #: Watched as it plays (a window, a virtual camera, a network push): a file input is
    #: then paced to its own frame rate, not fast-forwarded at the model's speed.
    live: bool = False

    @abstractmethod
    def write(self, image: np.ndarray, pts: float | None) -> None:
        """Write one frame; `pts` is its presentation time in seconds, if known."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Flush and finalize. Safe to call twice."""

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
