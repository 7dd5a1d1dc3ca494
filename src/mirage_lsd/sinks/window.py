"""Show frames in a pygame window; closing the window asks the engine to stop.

pygame is imported when a window is opened, not with this package: it is slow to
load and prints a banner unless PYGAME_HIDE_SUPPORT_PROMPT is set first. Like most
GUI toolkits, it wants to be driven from one thread: on Windows a window's events go to
the thread that made it, so the window is made by the first `write`, on the thread that
draws and reads its events (the engine's output thread). On macOS that thread must be
the main one: `engine.render` called there (a `for frame in engine.stream(...)` loop)
works; the engine's own threads are refused.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from mirage_lsd.errors import UserError
from mirage_lsd.sinks._video import check_frame
from mirage_lsd.sinks.base import Sink

log = logging.getLogger(__name__)

_FALLBACK = "Write to a file instead: --output out.mp4"
MACOS_WINDOW = (
    "cannot open a window on macOS from the stream's own thread: there only the main "
    "thread may draw. Use the studio (mirage-lsd serve), a file or virtualcam, or, in "
    "Python, call engine.render from the main thread (for frame in engine.stream(...))"
)


class WindowSink(Sink):
    """A window of the frame size; `closed` turns True once the user closes it.

    `on_key`, if set, gets the name of each key pressed in the window ("right", "n"),
    from the thread that writes the frames.
    """

    live = True
    on_key: Callable[[str], None] | None = None

    def __init__(self, size: tuple[int, int], title: str = "mirage-lsd") -> None:
        check_display(connect=True)  # here, so a missing display fails before the stream
        import pygame

        self._pygame = pygame
        self.size = size
        self.frames_written = 0
        self.closed = False
        self._title = title
        self._screen: Any = None  # a pygame.Surface, made by the first `write`

    def _open(self) -> Any:
        if sys.platform == "darwin" and threading.current_thread() is not threading.main_thread():
            raise UserError(MACOS_WINDOW)  # SDL makes and drives windows on it only, there
        pygame, (height, width) = self._pygame, self.size
        try:
            pygame.display.init()
            screen = pygame.display.set_mode((width, height))
        except pygame.error as exc:
            pygame.display.quit()
            raise UserError(f"cannot open a window: {exc}. {_FALLBACK}") from exc
        pygame.display.set_caption(self._title)
        log.info("showing frames in a %dx%d window", width, height)
        return screen

    def write(self, image: np.ndarray, pts: float | None) -> None:
        """Draw the frame, then handle window events (a close request sets `closed`)."""
        check_frame(image, self.size)
        if self.closed:
            return
        if self._screen is None:
            self._screen = self._open()
        pygame = self._pygame
        surface = pygame.image.frombuffer(
            np.ascontiguousarray(image), self._screen.get_size(), "RGB"
        )
        self._screen.blit(surface, (0, 0))
        pygame.display.flip()
        self.frames_written += 1
        for event in pygame.event.get():
            if event.type == pygame.QUIT:
                log.info("window closed by the user")
                self.close()
                return
            if event.type == pygame.KEYDOWN and self.on_key is not None:
                self.on_key(pygame.key.name(event.key))

    def set_title(self, title: str) -> None:
        """Called from the drawing thread (a key handler), or before the first frame."""
        self._title = title
        if self._screen is not None and not self.closed:
            self._pygame.display.set_caption(title)

    def close(self) -> None:
        self.closed = True
        if self._screen is not None:
            self._pygame.display.quit()


def check_display(connect: bool = False) -> None:
    """Fail fast with a clear message when there is no display to open: on Linux, none
    named; with `connect`, also one named that does not answer (ssh without X
    forwarding), found by connecting to it (before a run writes anything)."""
    if sys.platform.startswith("linux") and not os.environ.get("SDL_VIDEODRIVER"):
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise UserError(
                f"cannot open a window: no display found (DISPLAY is not set). {_FALLBACK}"
            )
    if connect:
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        import pygame

        try:
            pygame.display.init()
        except pygame.error as exc:
            raise UserError(f"cannot open a window: {exc}. {_FALLBACK}") from None
        finally:
            pygame.display.quit()
