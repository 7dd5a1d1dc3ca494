"""Small image operations shared by the look filters.

Conventions: filters work on float32 RGB in [0, 1] (`to_float`), so differences never
wrap, and hand back uint8 through `to_uint8`. Sizes (blur radii, dot pitch, pixel
cells) are fractions of the short side, so a look reads the same at any resolution.
Textures (paper, grain, snow) are fixed functions of pixel coordinates: a static scene
gives a static look.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

import cv2
import numpy as np

MIN_SIDE = 16
"""Smallest height or width a look accepts."""

RgbFilter = Callable[[np.ndarray], np.ndarray]

# Rec.601 luma weights, as a (3,) vector for `img @ LUMA`.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def rgb_filter(fn: RgbFilter) -> RgbFilter:
    """Check that the input is HxWx3 uint8 RGB, run `fn`, check the output matches."""

    @wraps(fn)
    def checked(image: np.ndarray) -> np.ndarray:
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f"a look takes an HxWx3 uint8 RGB image, got {image.dtype} {image.shape}"
            )
        if min(image.shape[:2]) < MIN_SIDE:
            raise ValueError(f"a look needs at least {MIN_SIDE}x{MIN_SIDE} px, got {image.shape}")
        out = fn(np.ascontiguousarray(image))
        assert out.shape == image.shape and out.dtype == np.uint8, (fn.__name__, out.shape)
        return out

    return checked


# --- conversions ------------------------------------------------------------------


def to_float(image: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1]."""
    return image.astype(np.float32) * np.float32(1.0 / 255.0)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """float in [0, 1] (clipped) -> uint8, rounded."""
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def gray3(g: np.ndarray) -> np.ndarray:
    """(H, W) -> (H, W, 3) by repeating the single channel."""
    return np.repeat(g[:, :, None], 3, axis=2)


def luma(f: np.ndarray) -> np.ndarray:
    """Luma of float RGB, (H, W, 3) -> (H, W)."""
    return f @ LUMA


def saturate(f: np.ndarray, amount: float) -> np.ndarray:
    """Scale saturation around luma: 0 is gray, 1 unchanged, >1 more vivid."""
    g = luma(f)[:, :, None]
    return g + (f - g) * np.float32(amount)


def smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - np.float32(e0)) / np.float32(e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def lerp(a: np.ndarray, b: np.ndarray | float, t: np.ndarray | float) -> np.ndarray:
    return a + (b - a) * t


# --- scale and resampling ---------------------------------------------------------


def short_side(x: np.ndarray) -> int:
    return min(x.shape[0], x.shape[1])


def blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with border reflection; sigma in pixels (kernel size derived)."""
    if sigma <= 0.0:
        return x
    return cv2.GaussianBlur(x, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)


def wide_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur for glows and blooms: wide sigmas run at reduced resolution."""
    factor = int(min(4.0, sigma / 2.0))
    if factor < 2 or min(x.shape[:2]) < MIN_SIDE * factor:
        return blur(x, sigma)
    return upscale_to(blur(downscale(x, factor), sigma / factor), x.shape)


def downscale(x: np.ndarray, factor: int) -> np.ndarray:
    """Area-average to 1/factor of the size (at least MIN_SIDE // 2 per side)."""
    h, w = x.shape[:2]
    sh, sw = max(MIN_SIDE // 2, h // factor), max(MIN_SIDE // 2, w // factor)
    if (sh, sw) == (h, w):
        return x
    return cv2.resize(x, (sw, sh), interpolation=cv2.INTER_AREA)


def upscale_to(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Bilinear resize back to `shape` (H, W, ...)."""
    h, w = shape[:2]
    if x.shape[:2] == (h, w):
        return x
    return cv2.resize(x, (w, h), interpolation=cv2.INTER_LINEAR)


def shift(x: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Translate by whole pixels, repeating the border (for chromatic fringes)."""
    h, w = x.shape[:2]
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(x, m, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)


# --- edges ------------------------------------------------------------------------


def gradient(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Central-difference gradient (dx, dy) of a float image, per pixel."""
    dx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3, scale=0.125, borderType=cv2.BORDER_REFLECT)
    dy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3, scale=0.125, borderType=cv2.BORDER_REFLECT)
    return dx, dy


def ink_lines(g: np.ndarray, sigma: float, threshold: float, k: float = 1.6) -> np.ndarray:
    """Hard binary line mask (1 = ink) from a difference of Gaussians of luma `g`.

    Dark side of every edge gets ink when the DoG response is below -threshold; this
    gives clean, closed outlines rather than the speckle of a gradient threshold.
    """
    dog = blur(g, sigma) - blur(g, sigma * k)
    return (dog < -np.float32(threshold)).astype(np.float32)


# --- fixed textures (functions of pixel coordinates only) --------------------------


def hash_noise(h: int, w: int, seed: int) -> np.ndarray:
    """White noise in [0, 1), (H, W) float32: an integer hash of (y, x, seed)."""
    y = np.arange(h, dtype=np.uint32)[:, None]
    x = np.arange(w, dtype=np.uint32)[None, :]
    salt = np.uint32((seed * 0x9E3779B9) & 0xFFFFFFFF)
    v = x * np.uint32(0x8DA6B343) ^ y * np.uint32(0xD8163841) ^ salt
    v ^= v >> np.uint32(15)
    v *= np.uint32(0x2C1B3C6D)
    v ^= v >> np.uint32(12)
    v *= np.uint32(0x297A2D39)
    v ^= v >> np.uint32(15)
    return (v >> np.uint32(8)).astype(np.float32) * np.float32(1.0 / (1 << 24))


def smooth_noise(h: int, w: int, seed: int, cell: float) -> np.ndarray:
    """Value noise in about [0, 1]: hash noise on a grid of `cell` px, bicubic-upscaled."""
    gh, gw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
    coarse = hash_noise(gh, gw, seed)
    fine = cv2.resize(coarse, (int(gw * cell), int(gh * cell)), interpolation=cv2.INTER_CUBIC)
    return fine[:h, :w]


def coords(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centre coordinates normalized by the short side: y (H, 1), x (1, W)."""
    s = np.float32(min(h, w))
    y = (np.arange(h, dtype=np.float32)[:, None] + 0.5) / s
    x = (np.arange(w, dtype=np.float32)[None, :] + 0.5) / s
    return y, x


def vignette(h: int, w: int, strength: float, roundness: float = 1.0) -> np.ndarray:
    """(H, W, 1) falloff, 1 in the centre down to 1 - strength in the corners."""
    y = np.linspace(-1.0, 1.0, h, dtype=np.float32)[:, None]
    x = np.linspace(-1.0, 1.0, w, dtype=np.float32)[None, :] * np.float32(roundness)
    r2 = (x * x + y * y) * np.float32(0.5)
    return (1.0 - np.float32(strength) * smoothstep(0.15, 1.0, r2))[:, :, None]


def gradient_map(t: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] through evenly spaced RGB colour stops, (N, 3) -> (..., 3)."""
    n = stops.shape[0] - 1
    u = np.clip(t, 0.0, 1.0) * np.float32(n)
    i = np.minimum(u.astype(np.int32), n - 1)
    frac = (u - i)[..., None]
    return stops[i] * (1.0 - frac) + stops[i + 1] * frac
