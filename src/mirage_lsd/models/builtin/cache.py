"""Per-stream state of the built-in model: a bounded temporal KV cache and the last output.

Both are immutable: `step` takes a state and returns a new one, so a stream can be
replayed or forked, and nothing hides in the model object. Memory is bounded by
construction: the cache keeps at most `max_frames` frames, and the rest of the state
is one low-resolution image, one small gray image and one noise tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from torch import Tensor


@dataclass(frozen=True)
class KV:
    """Keys and values of one frame for one temporal attention layer."""

    k: Tensor  # (B, heads, N, head_dim)
    v: Tensor  # (B, heads, N, head_dim)

    def select(self, index: Tensor) -> KV:
        return KV(self.k[index], self.v[index])

    def detach(self) -> KV:
        return KV(self.k.detach(), self.v.detach())


FrameKV = tuple[KV, ...]  # one KV per temporal attention layer


@dataclass(frozen=True)
class KVCache:
    """Keys/values of the last `max_frames` frames, oldest first."""

    max_frames: int
    frames: tuple[FrameKV, ...] = ()

    def push(self, frame: FrameKV) -> KVCache:
        """A new cache with `frame` appended and the oldest frame dropped past `max_frames`."""
        if self.max_frames == 0:
            return self
        return replace(self, frames=(*self.frames, frame)[-self.max_frames :])

    def layer(self, index: int) -> tuple[KV, ...]:
        """The cached keys/values of temporal layer `index`, oldest frame first."""
        return tuple(frame[index] for frame in self.frames)

    def select(self, index: Tensor) -> KVCache:
        """The cache of a sub-batch."""
        frames = tuple(tuple(kv.select(index) for kv in f) for f in self.frames)
        return replace(self, frames=frames)

    def detach(self) -> KVCache:
        return replace(self, frames=tuple(tuple(kv.detach() for kv in f) for f in self.frames))

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def nbytes(self) -> int:
        return sum(kv.k.nbytes + kv.v.nbytes for f in self.frames for kv in f)


@dataclass(frozen=True)
class StreamState:
    """Everything one stream carries from frame to frame."""

    height: int
    width: int
    downscale: int  # the denoiser works on frame / downscale (see `BuiltinModel.downscale_for`)
    cache: KVCache
    noise: Tensor  # (1, 3, h, w): the stream's fixed starting noise (steady output)
    prev_output: Tensor | None = None  # (1, 3, h, w) last low-res output in [-1, 1]
    prev_gray: np.ndarray | None = None  # (gh, gw) uint8 last input, for optical flow
    frame_index: int = 0
    # the grade's maps over the frame and the prompt embedding they were made for
    grade_maps: tuple[Tensor, Tensor] | None = None
    # (height, width) the frame is padded to inside the model, when the automatic
    # downscale does not divide it; None: the frame as it comes
    padded: tuple[int, int] | None = None

    @property
    def nbytes(self) -> int:
        total = self.cache.nbytes + self.noise.nbytes
        if self.prev_output is not None:
            total += self.prev_output.nbytes
        if self.prev_gray is not None:
            total += self.prev_gray.nbytes
        if self.grade_maps is not None:
            total += sum(t.nbytes for t in self.grade_maps)
        return total
