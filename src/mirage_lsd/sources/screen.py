"""Screen capture with mss: a monitor or a region, paced to a target frame rate."""

from __future__ import annotations

import logging
import re
import time

import cv2
import mss
import numpy as np

from mirage_lsd.errors import EndOfStream, UserError
from mirage_lsd.frame import Frame
from mirage_lsd.sources._clock import Pacer
from mirage_lsd.sources.base import Source

log = logging.getLogger(__name__)

Region = tuple[int, int, int, int]  # x, y, width, height

_SPEC_HELP = "use screen, screen:N (monitor N) or screen:X,Y,W,H (a region)"


def parse_screen_spec(spec: str) -> tuple[int, Region | None]:
    """`screen`, `screen:N` or `screen:X,Y,W,H` as (monitor, region)."""
    match = re.fullmatch(r"screen(?::(-?[0-9]+)(?:,(-?[0-9]+),([0-9]+),([0-9]+))?)?", spec)
    if match is None:
        raise UserError(f"bad screen input '{spec}': {_SPEC_HELP}")
    first, *rest = match.groups()
    if first is None:
        return 1, None
    if rest[0] is None:
        return int(first), None
    x, y, w, h = int(first), *(int(v) for v in rest)
    return 1, (x, y, w, h)


class ScreenSource(Source):
    """Frames grabbed from the screen, no faster than `fps` so capture does not spin.

    `monitor` follows mss: 1 is the first monitor, 0 all of them together.
    `region` (x, y, width, height) in desktop pixels overrides `monitor`; it must lie
    on the desktop, checked here: a grab outside it fails, which would end the stream
    at its first frame.
    """

    live = True

    def __init__(self, monitor: int = 1, region: Region | None = None, fps: float = 30.0) -> None:
        super().__init__()
        if not fps > 0:
            raise UserError(f"screen capture rate must be positive, got {fps}")
        if region is not None and (region[2] <= 0 or region[3] <= 0):
            raise UserError(f"screen region {region} is empty: give a positive width and height")
        try:
            self._mss = mss.MSS()
            monitors = self._mss.monitors
        except (mss.ScreenShotError, OSError) as exc:
            raise UserError(
                f"screen capture needs a display ({' '.join(str(exc).split())}): "
                "run it in a desktop session (on Linux, set DISPLAY)"
            ) from exc
        if region is not None:
            self._area = _region_on(monitors[0], region)
            if self._area is None:
                self._mss.close()
                raise UserError(
                    f"screen region {','.join(map(str, region))} (X,Y,W,H) does not fit on "
                    f"the screen, which is {_describe(monitors[0])}: give one inside it"
                )
        elif 0 <= monitor < len(monitors):
            m = monitors[monitor]
            self._area = {k: m[k] for k in ("left", "top", "width", "height")}
        else:
            self._mss.close()
            raise UserError(
                f"monitor {monitor} not found: this display has {len(monitors) - 1} "
                "(screen:1 is the first, screen:0 all together)"
            )
        self.fps = self._fps = fps
        self.size = (self._area["height"], self._area["width"])
        self._pacer = Pacer(slack_s=1.0 / fps)
        self._t0: float | None = None
        self._index = 0
        self._closed = False

    def recv(self) -> Frame:
        if self._closed:
            raise EndOfStream
        self.counters.paced_s += self._pacer.wait_until(self._index / self._fps)
        try:
            shot = self._mss.grab(self._area)
        except mss.ScreenShotError as exc:
            log.warning("screen capture stopped (%s): ending the stream", exc)
            raise EndOfStream from exc
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        bgra = np.frombuffer(shot.bgra, np.uint8).reshape(shot.height, shot.width, 4)
        frame = Frame(cv2.cvtColor(bgra, cv2.COLOR_BGRA2RGB), self._index, now - self._t0)
        self._index += 1
        return frame

    def close(self) -> None:
        self._closed = True
        self._mss.close()


def _region_on(desktop: dict[str, int], region: Region) -> dict[str, int] | None:
    """`region` as an mss area, or None when it reaches past `desktop` (mss's monitor 0,
    the box around all monitors)."""
    x, y, w, h = region
    left, top = desktop["left"], desktop["top"]
    if x < left or y < top or x + w > left + desktop["width"] or y + h > top + desktop["height"]:
        return None
    return {"left": x, "top": y, "width": w, "height": h}


def _describe(desktop: dict[str, int]) -> str:
    """'1920x1080', or '3840x1080 from -1920,0' when the desktop does not start at 0,0."""
    size = f"{desktop['width']}x{desktop['height']}"
    if desktop["left"] or desktop["top"]:
        size += f" from {desktop['left']},{desktop['top']}"
    return size
