"""The frame that travels through the engine.

Like an aiortc media frame, every frame carries its presentation time and a
sequence number; the engine adds the monotonic capture time so latency can be
measured from the moment the frame entered the pipeline to the moment its output
is ready.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(slots=True)
class Frame:
    """One video frame: RGB pixels plus timing.

    image: (H, W, 3) uint8 RGB, C-contiguous.
    index: sequence number assigned by the source, starting at 0.
    pts: presentation time in seconds on the source's clock (None if unknown).
    capture_time: `time.monotonic()` when the frame entered the pipeline.
    """

    image: np.ndarray
    index: int
    pts: float | None = None
    capture_time: float = 0.0


@dataclass(slots=True, frozen=True)
class FrameInfo:
    """Metadata of an output frame, handed to `on_frame(image, info)` callbacks."""

    index: int
    pts: float | None
    capture_time: float
    ready_time: float
    stage_ms: dict[str, float] = field(default_factory=dict)

    @property
    def latency_ms(self) -> float:
        """Capture to output ready, in milliseconds."""
        return (self.ready_time - self.capture_time) * 1000.0
