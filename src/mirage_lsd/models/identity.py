"""The identity model: output equals input. It measures the engine itself."""

from __future__ import annotations

import numpy as np

from mirage_lsd.models.base import Conditioning, ModelInfo, State, StreamModel


class IdentityModel(StreamModel):
    """Returns each frame unchanged; prompts are accepted and ignored."""

    def __init__(self, device: str = "cpu") -> None:
        self._info = ModelInfo(
            name="identity",
            description="passes frames through unchanged (for measuring the engine)",
            device=device,
        )

    @property
    def info(self) -> ModelInfo:
        return self._info

    def encode_prompt(self, text: str | None) -> Conditioning:
        return None

    def init_state(self, height: int, width: int, seed: int | None = None) -> State:
        return None

    def step(
        self, image: np.ndarray, cond: Conditioning, state: State, steps: int
    ) -> tuple[np.ndarray, State]:
        return image, state
