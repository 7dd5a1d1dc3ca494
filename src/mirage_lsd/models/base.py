"""The one interface between the engine and every model.

The engine knows nothing of a model's internals. It asks a model for three
things: turn a prompt into conditioning, turn (frame, conditioning, per-stream
state) into an output frame and the next state, and make a fresh state (reset).
Frames cross the interface as (H, W, 3) uint8 RGB numpy arrays, with H and W
multiples of `size_multiple`; tensors, dtypes and devices stay inside the model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

Conditioning = Any
State = Any


@dataclass(frozen=True)
class ModelInfo:
    """What a model tells the engine and the user about itself."""

    name: str
    description: str
    device: str = "cpu"
    dtype: str = "float32"
    max_steps: int = 50  # the most steps per frame it runs (the engine's own limit: 50)
    looks: tuple[str, ...] = ()
    # runs torch.compile'd: asked for and not failed (the built-in model compiles in the
    # background and runs eagerly until then)
    compile: bool = False


class StreamModel(ABC):
    """A causal frame-to-frame model: one frame in, one frame out."""

    #: Frame sides the model takes must divide by this; the engine pads and crops.
    size_multiple: int = 1

    @property
    @abstractmethod
    def info(self) -> ModelInfo:
        """Name, device, dtype and capabilities."""

    @abstractmethod
    def encode_prompt(self, text: str | None) -> Conditioning:
        """Prompt text (None: no prompt) to conditioning. May be slow; never per frame."""

    def mix_prompts(self, a: Conditioning, b: Conditioning, weight: float) -> Conditioning:
        """Blend two conditionings (weight 0 gives a, 1 gives b). Default: linear."""
        if a is None or b is None:
            return b if weight >= 0.5 else a
        return a + (b - a) * weight

    def describe_prompt(self, cond: Conditioning) -> dict[str, Any]:
        """What a conditioning resolved to, for stats (e.g. matched looks and similarity)."""
        return {}

    @abstractmethod
    def init_state(self, height: int, width: int, seed: int | None = None) -> State:
        """A fresh per-stream state for frames of this size (reset).

        `seed` picks the stream's fixed noise (None: the model's default); models without
        noise ignore it.
        """

    def steps_run(self, steps: int) -> int:
        """How many denoising steps `step(..., steps)` runs: `steps`, unless the model
        keeps a schedule of its own (a diffusers model's --t-index). Stats report this."""
        return steps

    def lag_frames(self, steps: int) -> int:
        """How many frames late each output comes (a model that pipelines frames); 0 here."""
        return 0

    def stream_threads(self, cores: int) -> int:
        """torch threads for its frames given `cores` usable physical cores, while the
        engine's capture and output threads run beside them. Default: all of them (big
        convolutions, as a diffusers UNet's, keep every core busy)."""
        return cores

    def plan_stream(self, live: bool, frames: float | None) -> None:  # noqa: B027 - optional hook
        """Told by the engine before each stream it starts: whether it is live, and how
        many frames it will have (None: unknown or unbounded). A model may skip work that
        would not pay off within it (the built-in model's background compile on a short
        file); the plan holds for the streams started after it. Default: ignored."""

    def wait_ready(self, timeout: float | None = None) -> None:  # noqa: B027 - optional hook
        """Block until work the model does in the background (compiling) is done.

        Benchmarks call it so that they measure the model as it will run; streams never do.
        """

    @abstractmethod
    def step(
        self, image: np.ndarray, cond: Conditioning, state: State, steps: int
    ) -> tuple[np.ndarray, State]:
        """Transform one frame. Returns the output frame (same shape) and the new state."""
