"""Prompt checks and smooth prompt transitions.

A new prompt never resets the stream: the model's conditioning is blended from
wherever it is now to the new one over N frames, so there is no grey or
warm-up frame.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from mirage_lsd.errors import UserError

MAX_PROMPT_CHARS = 1000


def validate_prompt(text: object) -> str:
    """Return the prompt stripped of outer whitespace, or raise a one-line UserError."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise UserError(
                "prompt is not valid UTF-8 text: re-type it or fix its encoding"
            ) from None
    if not isinstance(text, str):
        raise UserError(f"prompt must be text, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UserError("prompt is not valid UTF-8 text: re-type it or fix its encoding") from None
    text = text.strip()
    if not text:
        raise UserError("prompt is empty: describe the look you want, e.g. 'pencil sketch'")
    if len(text) > MAX_PROMPT_CHARS:
        raise UserError(
            f"prompt is {len(text)} characters long: keep it to {MAX_PROMPT_CHARS} or fewer"
        )
    if "\x00" in text:
        raise UserError("prompt contains a NUL character: remove it")
    return text


class PromptSchedule:
    """Conditioning for each frame: the current one, or a blend during a transition.

    `set()` may be called from any thread; `next()` is called once per frame by the
    inference thread. `mix(a, b, w)` is the model's blend (w=0 gives a, w=1 gives b).
    """

    def __init__(self, initial: Any, mix: Callable[[Any, Any, float], Any]) -> None:
        self._lock = threading.Lock()
        self._mix = mix
        self._current = initial
        self._source: Any = None
        self._target: Any = None
        self._total = 0
        self._done = 0
        self.text: str | None = None

    def set(self, cond: Any, transition_frames: int, text: str | None = None) -> None:
        """Move to `cond` over `transition_frames` frames (0: at the next frame)."""
        with self._lock:
            self.text = text
            if transition_frames <= 0:
                self._current, self._target, self._total = cond, None, 0
                return
            self._source, self._target = self._current, cond
            self._total, self._done = transition_frames, 0

    @property
    def current(self) -> Any:
        """The conditioning of the last frame (or the initial one)."""
        with self._lock:
            return self._current

    def next(self) -> Any:
        """The conditioning for the next frame."""
        with self._lock:
            if self._target is not None:
                self._done += 1
                weight = self._done / self._total
                if self._done >= self._total:
                    self._current, self._target = self._target, None
                else:
                    self._current = self._mix(self._source, self._target, weight)
            return self._current
