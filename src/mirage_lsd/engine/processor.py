"""One frame through the model: fit to size, pad, model step, crop. Owns stream state."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import cv2
import numpy as np

from mirage_lsd.device import use_threads
from mirage_lsd.engine.prompt import PromptSchedule
from mirage_lsd.geometry import FitMode, FitPlan, apply_fit, clear_bars, pad_to_multiple, plan_fit
from mirage_lsd.models.base import State, StreamModel


class FrameProcessor:
    """Preprocess, model and postprocess for one stream, timing each stage.

    The output size is fixed by `out_size`, or by the first frame when it is None
    (taken again after `restart()`). The model's per-stream state lives here and is
    replaced on `reset()`. `strength` below 1 blends the output back toward the input
    it was made from (a model that lags `lag_frames` behind is blended with that older
    input, not the newest); `seed` picks the stream's noise. Both are plain attributes
    the engine may change between frames. `threads` (None: torch's own): torch's thread
    count, set on the thread that runs the model (`device.use_threads`).
    """

    def __init__(
        self,
        model: StreamModel,
        prompts: PromptSchedule,
        out_size: tuple[int, int] | None,
        fit: FitMode,
        steps: int,
    ) -> None:
        self.model = model
        self.prompts = prompts
        self.out_size = out_size
        self._fixed_size = out_size
        self.fit = fit
        self.steps = steps
        self.strength = 1.0
        self.seed: int | None = None
        self.threads: int | None = None  # None: torch's own setting
        self._plan: FitPlan | None = None
        self._plan_src: tuple[int, ...] = ()
        self._state: State = None
        # reset() bumps the generation; a state made for an older one is remade. A counter,
        # not a flag: a reset() from another thread during init_state() is not lost.
        self._generation = 0
        self._state_generation = -1
        # the inputs the lagging outputs belong to: the oldest is the next output's
        self._inputs: deque[np.ndarray] = deque(maxlen=model.lag_frames(steps) + 1)
        self._tags: deque[Any] = deque(maxlen=self._inputs.maxlen)  # and their callers' tags
        self.output_tag: Any = None

    def reset(self) -> None:
        """Forget the stream's history; the next frame starts a fresh state."""
        self._generation += 1

    def restart(self) -> None:
        """A new stream: a fresh state, and an automatic output size taken anew."""
        self.out_size = self._fixed_size
        self._plan = None
        self.reset()

    @property
    def input_size(self) -> tuple[int, ...] | None:
        """(height, width) of the frames this stream has had, None before the first."""
        return None if self._plan is None else self._plan_src

    def __call__(self, image: np.ndarray, tag: Any = None) -> tuple[np.ndarray, dict[str, float]]:
        """The output for `image`, or for the input `lag_frames` earlier with a lagging
        model; `output_tag` is then the `tag` that earlier input came with (its frame's
        index and capture time, so that latency counts the lag)."""
        # 1. preprocess: fit to the output size, pad to what the model takes
        t0 = time.perf_counter()
        if self.threads is not None:
            use_threads(self.threads)
        src = image.shape[:2]
        if self.out_size is None:
            self.out_size = (src[0], src[1])
        if self._plan is None or self._plan_src != src:
            self._plan, self._plan_src = plan_fit(src, self.out_size, self.fit), src
        fitted = apply_fit(image, self._plan)
        padded = pad_to_multiple(fitted, self.model.size_multiple)
        if self._state_generation != self._generation:
            generation = self._generation
            self._state = self.model.init_state(*padded.shape[:2], seed=self.seed)
            self._state_generation = generation
            self._inputs.clear()
            self._tags.clear()
        cond = self.prompts.next()
        # 2. model
        t1 = time.perf_counter()
        out, self._state = self.model.step(padded, cond, self._state, self.steps)
        # 3. postprocess: back to exactly the requested size
        t2 = time.perf_counter()
        oh, ow = self.out_size
        if out.shape[0] != oh or out.shape[1] != ow:
            out = out[:oh, :ow]
        if out.dtype != np.uint8 or not out.flags.c_contiguous:
            out = np.ascontiguousarray(out, dtype=np.uint8)
        out = clear_bars(out, self._plan)
        self._inputs.append(fitted if self._inputs.maxlen == 1 else fitted.copy())
        self._tags.append(tag)
        self.output_tag = self._tags[0]
        strength = self.strength
        if strength < 1.0:
            out = cv2.addWeighted(out, strength, self._inputs[0], 1.0 - strength, 0.0)
        t3 = time.perf_counter()
        return out, {
            "preprocess": (t1 - t0) * 1000.0,
            "model": (t2 - t1) * 1000.0,
            "postprocess": (t3 - t2) * 1000.0,
        }
