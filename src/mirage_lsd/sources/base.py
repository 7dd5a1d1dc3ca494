"""What every frame source is: a blocking `recv()` that returns the next frame.

The shape follows aiortc's `MediaStreamTrack.recv()`, but synchronous: sources
wrap blocking libraries (PyAV, OpenCV, mss), and the engine runs each one in its
own capture thread.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from mirage_lsd.frame import Frame


@dataclass(slots=True)
class SourceCounters:
    """What a source reports about trouble it got past."""

    corrupt_frames: int = 0  # undecodable frames skipped
    reconnects: int = 0  # successful reconnections of a live source
    reconnect_attempts: int = 0
    paced_s: float = 0.0  # time spent waiting for frames' due times (not decode time)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a live source that drops is retried: exponential backoff, then give up."""

    attempts: int = 5
    initial_delay_s: float = 0.5
    max_delay_s: float = 8.0

    def delay(self, attempt: int) -> float:
        """The wait before attempt `attempt` (0 first), in seconds: computed, not listed,
        so that a huge `attempts` ("retry for ever") costs nothing."""
        return min(self.initial_delay_s * 2.0 ** min(attempt, 64), self.max_delay_s)


class Source(ABC):
    """A stream of RGB frames.

    Subclasses set `live` (camera, screen, network: newest frame wins) and, when
    known, `fps`, `size` as (height, width), `frame_count` and `duration_s`.
    """

    live: bool = False
    fps: float | None = None
    size: tuple[int, int] | None = None
    frame_count: int | None = None
    #: Seconds a file lasts, when its container says (mkv files often give no frame count).
    duration_s: float | None = None
    #: A media file whose audio a file sink may carry over (file inputs only).
    audio_path: Path | None = None
    #: The video file read, if any (an output must not overwrite it).
    path: Path | None = None
    #: The folders an image-sequence input reads from (an output folder must not be one).
    image_folders: tuple[Path, ...] = ()
    #: Starts over at its end: it never ends by itself (benchmarks, long drift runs).
    loop: bool = False

    def __init__(self) -> None:
        self.counters = SourceCounters()

    @abstractmethod
    def recv(self) -> Frame:
        """Block until the next frame; raise `EndOfStream` when there is none."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release devices and files. Safe to call twice."""

    def pace(self) -> bool:
        """Hand frames out at the pace of their timestamps from now on, as a camera would:
        for an output someone watches as it plays (a window, a virtual camera, a network
        push), which a file read at model speed would fast-forward; image folders, lists
        and arrays play at their frame rate (30 fps for a folder). True when the source is
        now live; live sources (cameras, screens, live streams) keep their own pace, and so
        do generators."""
        return self.live

    def interrupt(self) -> None:  # noqa: B027 - optional hook
        """From another thread: cut short a wait inside `recv()` (a reconnect backoff), which
        then ends the stream. Sources that never wait long need not implement it."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
