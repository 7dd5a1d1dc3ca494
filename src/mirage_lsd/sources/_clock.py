"""Timing shared by sources: one monotonic pts across restarts, and camera-like pacing."""

from __future__ import annotations

import threading
import time

JUMP_BACK_S = 0.5  # a stream's own clock going back by more is a discontinuity


class Timeline:
    """Maps stream times onto one clock that never goes back.

    A looping file or a reconnected network stream starts again at its own zero;
    the frames it yields next continue one frame step after the last one. So does a
    stream whose own clock goes back without a reconnection (a live HLS playlist's
    discontinuity: an ad, a restarted encoder).
    """

    def __init__(self, step_s: float) -> None:
        self._step = step_s
        self._offset = 0.0
        self._last: float | None = None
        self._restarted = False

    def restart(self) -> None:
        """The stream starts over: its next time is shifted to follow the last one."""
        self._restarted = True

    def __call__(self, t: float | None) -> float:
        """The output pts of a frame at stream time `t` (None: one step after the last)."""
        if t is None:
            out = 0.0 if self._last is None else self._last + self._step
        else:
            # a jump back (a duplicate or a slight step back passes, as before: the
            # sinks' clocks nudge those, without shifting the rest of the stream)
            behind = self._last is not None and t + self._offset < self._last - JUMP_BACK_S
            if self._last is not None and (self._restarted or behind):
                self._offset = self._last + self._step - t
            self._restarted = False
            out = t + self._offset
        self._last = out
        return out


class Pacer:
    """Hands frames out no faster than their timestamps, like a camera.

    When the consumer falls behind by more than `slack_s`, the schedule restarts
    from now instead of bursting through the backlog: a camera does not catch up.
    """

    def __init__(self, slack_s: float) -> None:
        self._slack = slack_s
        self._origin: float | None = None  # monotonic time of stream time 0
        self._interrupted = threading.Event()

    def wait_until(self, t: float) -> float:
        """Block until stream time `t` is due, or `interrupt()`; return the seconds waited."""
        now = time.monotonic()
        if self._origin is None or now - (self._origin + t) > self._slack:
            self._origin = now - t
            return 0.0
        delay = self._origin + t - now
        if delay > 0:
            self._interrupted.wait(delay)
        return time.monotonic() - now

    def interrupt(self) -> None:
        """From another thread: end the current wait and every later one (the stream is
        stopping; a long pause in a variable-rate file must not hold it up)."""
        self._interrupted.set()
