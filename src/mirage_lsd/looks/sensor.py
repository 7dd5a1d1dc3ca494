"""Looks that imitate an imaging device: thermal camera, night-vision goggles."""

from __future__ import annotations

import numpy as np

from mirage_lsd.looks import _ops as op

# "Ironbow" thermal palette, cold to hot.
IRONBOW = (
    np.array(
        [
            [0, 0, 10], [30, 0, 90], [110, 0, 150], [190, 20, 120],
            [235, 80, 40], [255, 160, 0], [255, 225, 60], [255, 255, 220],
        ],
        dtype=np.float32,
    )
    / 255.0
)  # fmt: skip

PHOSPHOR = np.array([0.35, 1.0, 0.45], dtype=np.float32)  # P43 green


@op.rgb_filter
def thermal(image: np.ndarray) -> np.ndarray:
    """Thermal camera: blurry low-resolution heat, warm tones and skin read hot."""
    f = op.to_float(image)
    s = op.short_side(f) / 256.0

    # 1. "heat": brightness plus a bonus for warm (red over blue) colours, like skin.
    small = op.downscale(f, 4)
    warmth = np.clip(small[:, :, 0] - small[:, :, 2], 0.0, 0.5)
    heat = 0.45 * op.luma(small) + 1.3 * warmth

    # 2. sensor: low resolution, soft, then the palette.
    heat = op.upscale_to(op.blur(heat, 1.0), f.shape)
    heat = op.blur(heat, 1.5 * s)
    return op.to_uint8(op.gradient_map(heat * 1.1 - 0.05, IRONBOW))


@op.rgb_filter
def night_vision(image: np.ndarray) -> np.ndarray:
    """Night-vision goggles: amplified green phosphor, glow, grain, scanlines, round eyepiece."""
    f = op.to_float(image)
    h, w = f.shape[:2]
    s = op.short_side(f) / 256.0

    # 1. amplify the light: shadows lifted, contrast kept, highlights bloom.
    g = op.smoothstep(0.0, 1.0, op.luma(f) ** 0.8) * 0.95
    g = g + 0.5 * op.wide_blur(np.maximum(g - 0.75, 0.0), 4.0 * s)

    # 2. tube noise (fixed grain) and scanlines.
    grain = op.hash_noise(h, w, seed=21) - 0.5
    g = op.blur(g, 0.7 * s) + 0.18 * grain
    g = g * np.where(np.arange(h)[:, None] % 3 == 0, 0.8, 1.0).astype(np.float32)

    # 3. round eyepiece: dark outside a soft circle.
    y, x = op.coords(h, w)
    r = np.sqrt((x - x.max() / 2) ** 2 + (y - y.max() / 2) ** 2)
    eyepiece = op.smoothstep(0.62, 0.48, r)
    rgb = op.gray3(g * eyepiece) * PHOSPHOR
    return op.to_uint8(rgb + 0.06 * rgb.max(axis=2, keepdims=True))
