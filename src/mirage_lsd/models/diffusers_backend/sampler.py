"""Few-step img2img sampling math for DDPM-trained models, as pure functions.

Noise path: x_t = a_t * x0 + b_t * eps with a_t = sqrt(alpha_bar_t), b_t = sqrt(1 - alpha_bar_t).
Each denoising stage k has a timestep t_k (decreasing); the network's answer is turned
into eps (whatever it predicts), guidance mixes eps, and x0 = (x_t - b eps) / a. The
next stage re-noises x0 with the stream's fixed noise (StreamDiffusion). Residual CFG
(RCFG, StreamDiffusion) replaces the unconditional pass by a "stock noise" carried from
stage to stage. Nothing here knows the network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from mirage_lsd.models.diffusers_backend.options import INDEX_GRID


def strength_timesteps(strength: float, steps: int, num_train: int = 1000) -> list[int]:
    """`steps` evenly spaced timesteps from strength * num_train down (img2img strength)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    start = strength * num_train
    return [max(int(start * (1.0 - k / steps)) - 1, 0) for k in range(steps)]


def index_timesteps(indices: tuple[int, ...], num_train: int = 1000) -> list[int]:
    """Timesteps at `indices` of the 50-step grid [999, 979, ..., 19] (StreamDiffusion)."""
    stride = num_train // INDEX_GRID
    grid = [stride * (i + 1) - 1 for i in range(INDEX_GRID)][::-1]
    return [grid[i] for i in indices]


@dataclass(frozen=True)
class Schedule:
    """Per-stage timesteps and noise-path coefficients, each (n_stages,)."""

    timesteps: Tensor  # (n,) long
    a: Tensor  # (n,) sqrt(alpha_bar)
    b: Tensor  # (n,) sqrt(1 - alpha_bar)

    @classmethod
    def build(cls, timesteps: list[int], alphas_cumprod: Tensor) -> Schedule:
        t = torch.tensor(timesteps, dtype=torch.long)
        abar = alphas_cumprod.to(torch.float64)[t]
        return cls(t, abar.sqrt().float(), (1.0 - abar).sqrt().float())

    def __len__(self) -> int:
        return int(self.timesteps.shape[0])

    def next_coeffs(self, stages: Tensor) -> tuple[Tensor, Tensor]:
        """(a, b) of the stage after each of `stages`; after the last stage: (1, 1)."""
        a = torch.cat([self.a[1:], torch.ones(1)])
        b = torch.cat([self.b[1:], torch.ones(1)])
        return a[stages], b[stages]


def _col(s: Tensor, like: Tensor) -> Tensor:
    """(B,) -> (B, 1, 1, 1) on `like`'s device and dtype."""
    return s.to(like.device, like.dtype).view(-1, *([1] * (like.dim() - 1)))


def add_noise(x0: Tensor, noise: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """x_t = a x0 + b noise, per-sample coefficients (B,)."""
    return _col(a, x0) * x0 + _col(b, x0) * noise


def to_eps(out: Tensor, x: Tensor, a: Tensor, b: Tensor, prediction_type: str) -> Tensor:
    """The network's answer (epsilon, v or x0) as the noise eps it implies."""
    if prediction_type == "epsilon":
        return out
    if prediction_type == "v_prediction":
        return _col(a, x) * out + _col(b, x) * x
    if prediction_type == "sample":
        return (x - _col(a, x) * out) / _col(b, x)
    raise ValueError(f"unsupported prediction_type {prediction_type!r}")


def predict_x0(x: Tensor, eps: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """x0 = (x_t - b eps) / a."""
    return (x - _col(b, x) * eps) / _col(a, x)


def guide(eps_uncond: Tensor, eps_cond: Tensor, scale: float) -> Tensor:
    """Classifier-free guidance."""
    return eps_uncond + scale * (eps_cond - eps_uncond)


def rcfg_next_stock(
    stock: Tensor,
    eps: Tensor,
    a: Tensor,
    b: Tensor,
    a_next: Tensor,
    b_next: Tensor,
    noise_next: Tensor,
) -> Tensor:
    """RCFG: the stock noise the next stage uses as its virtual negative eps.

    The x0 that the current stock noise would give, minus the one the guided eps gives,
    carried to the next stage's noise level and added to its fixed noise.
    """
    delta_x0 = _col(b, stock) * (stock - eps) / _col(a, stock)
    return noise_next + _col(a_next, stock) * delta_x0 / _col(b_next, stock)


def guidance_embedding(scale: float, dim: int) -> Tensor:
    """LCM's guidance-scale embedding (sinusoidal of (w - 1) * 1000): (1, dim)."""
    w = torch.tensor([(scale - 1.0) * 1000.0])
    half = dim // 2
    freqs = torch.exp(torch.arange(half) * -(math.log(10000.0) / (half - 1)))
    emb = w[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1)
    if dim % 2:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb


def slerp(a: Tensor, b: Tensor, weight: float, eps: float = 1e-4) -> Tensor:
    """Spherical interpolation along the last dim (per token); linear where nearly parallel."""
    an = a / a.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    bn = b / b.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    dot = (an * bn).sum(-1, keepdim=True).clamp(-1.0, 1.0)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    safe = so.abs() > eps
    so_safe = torch.where(safe, so, torch.ones_like(so))
    wa = torch.where(
        safe, torch.sin((1.0 - weight) * omega) / so_safe, torch.full_like(so, 1.0 - weight)
    )
    wb = torch.where(safe, torch.sin(weight * omega) / so_safe, torch.full_like(so, weight))
    return wa * a + wb * b
