"""Few-step sampling with step-size conditioning (shortcut models), as pure functions.

Noise path (rectified flow): x_t = (1 - t) * x0 + t * eps, t in [0, 1], t = 1 is pure
noise. Every denoiser predicts x0 and is told the step size d it is asked to jump
(Frans et al., "One Step Diffusion via Shortcut Models", 2024): the same network
samples in 1, 2, 3 or 4 steps. `shortcut_target` is the training target that makes a
step of size 2d agree with two steps of size d. Nothing here knows the network.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor


class Denoised(NamedTuple):
    """A denoiser's answer: the x0 prediction, and anything else it wants passed on."""

    x0: Tensor
    extra: Any = None


#: (x_t (B, ...), t (B,), d (B,)) -> prediction of x0
Denoiser = Callable[[Tensor, Tensor, Tensor], Denoised]


def timesteps(steps: int) -> list[float]:
    """`steps` equal steps from pure noise to clean: [1, ..., 0], steps + 1 values."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return [1.0 - i / steps for i in range(steps + 1)]


def _bcast(s: Tensor, like: Tensor) -> Tensor:
    return s.view(-1, *([1] * (like.dim() - 1)))


def add_noise(x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
    """x_t for per-sample noise levels t (B,)."""
    t = _bcast(t, x0)
    return (1.0 - t) * x0 + t * eps


def step_to(x: Tensor, x0: Tensor, t: Tensor, t_next: Tensor) -> Tensor:
    """Move x_t to x_{t_next} along the straight path through the predicted x0."""
    t, t_next = _bcast(t, x), _bcast(t_next, x)
    eps = (x - (1.0 - t) * x0) / t  # the noise implied by the prediction
    return (1.0 - t_next) * x0 + t_next * eps


def sample(denoiser: Denoiser, noise: Tensor, steps: int) -> Denoised:
    """Run `steps` shortcut steps from `noise`; returns the last denoiser answer."""
    batch = noise.shape[0]
    ts = timesteps(steps)
    x, out = noise, None
    for t, t_next in itertools.pairwise(ts):
        t_b = noise.new_full((batch,), t)
        t_next_b = noise.new_full((batch,), t_next)
        out = denoiser(x, t_b, t_b - t_next_b)
        x = step_to(x, out.x0, t_b, t_next_b)
    assert out is not None
    return out


@torch.no_grad()
def shortcut_target(denoiser: Denoiser, x_t: Tensor, t: Tensor, d: Tensor) -> Tensor:
    """Target x0 for one step of size 2d from t: where two steps of size d land.

    Needs t >= 2d. The two small steps are taken by the denoiser itself (no gradient).
    """
    first = denoiser(x_t, t, d).x0
    x_mid = step_to(x_t, first, t, t - d)
    second = denoiser(x_mid, t - d, d).x0
    x_end = step_to(x_mid, second, t - d, t - 2 * d)
    # the x0 whose straight path from x_t passes through x_end at t - 2d
    return _x0_through(x_t, x_end, _bcast(t, x_t), _bcast(t - 2 * d, x_t))


def _x0_through(x_t: Tensor, x_s: Tensor, t: Tensor, s: Tensor) -> Tensor:
    """The x0 of the straight noise path that passes through x_t at t and x_s at s < t.

    On x_u = (1 - u) x0 + u eps the velocity v = eps - x0 is constant, so
    v = (x_t - x_s) / (t - s) and x0 = x_t - t v.
    """
    v = (x_t - x_s) / (t - s)
    return x_t - t * v
