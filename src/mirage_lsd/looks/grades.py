"""Colour-grade looks: strong re-lighting and atmosphere over the scene's own drawing."""

from __future__ import annotations

import cv2
import numpy as np

from mirage_lsd.looks import _ops as op

CYBER = (
    np.array(
        [[8, 4, 30], [70, 10, 110], [230, 30, 160], [255, 110, 200], [90, 240, 255]],
        dtype=np.float32,
    )
    / 255.0
)
SEPIA = np.array(
    [[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], dtype=np.float32
).T  # rows are output channels; transposed for `f @ SEPIA`
SUNSET_SKY = np.array([[1.0, 0.45, 0.2], [1.0, 0.7, 0.35], [0.55, 0.2, 0.45]], dtype=np.float32)


@op.rgb_filter
def cyberpunk(image: np.ndarray) -> np.ndarray:
    """Neon-noir grade: deep purple shadows, magenta mids, cyan highlights, bloom, RGB split."""
    f = op.to_float(image)
    s = op.short_side(f) / 256.0

    # 1. high-contrast tone, mapped through the neon gradient, keeping a little colour.
    g = op.smoothstep(0.05, 0.95, op.luma(f)) ** 1.5
    graded = op.gradient_map(g, CYBER) * 0.8 + op.saturate(f, 1.5) * 0.2

    # 2. bloom from the highlights.
    bloom = op.wide_blur(np.maximum(graded - 0.6, 0.0), 6.0 * s) * 1.5

    # 3. chromatic aberration: red and blue pulled apart.
    d = max(1, round(2 * s))
    out = graded + bloom
    out[:, :, 0] = op.shift(out[:, :, 0], d, 0)
    out[:, :, 2] = op.shift(out[:, :, 2], -d, 0)
    return op.to_uint8(out)


@op.rgb_filter
def sepia_vintage(image: np.ndarray) -> np.ndarray:
    """Old photograph: sepia toning, faded contrast, vignette, grain, dust and scratches."""
    f = op.to_float(image)
    h, w = f.shape[:2]

    # 1. sepia tone, faded (lifted blacks, dulled whites).
    tone = np.clip(f @ SEPIA, 0.0, 1.0)
    tone = 0.12 + 0.72 * op.smoothstep(-0.1, 1.1, tone)

    # 2. film grain, vertical scratches and dark dust specks, all fixed in the frame.
    grain = (op.hash_noise(h, w, seed=31) - 0.5) * 0.12
    scratch = op.hash_noise(1, w, seed=32) > 0.985
    dust = op.hash_noise(h, w, seed=33) > 0.9993
    out = tone + grain[:, :, None]
    out = np.where(scratch[:, :, None], out + 0.2, out)
    out = np.where(dust[:, :, None], out * 0.3, out)

    # 3. heavy vignette.
    return op.to_uint8(out * op.vignette(h, w, 0.7))


@op.rgb_filter
def winter(image: np.ndarray) -> np.ndarray:
    """Frozen winter day: cold, bright, washed-out blue tones, frosty haze, falling snow."""
    f = op.to_float(image)
    h, w = f.shape[:2]
    s = op.short_side(f) / 256.0

    # 1. cold, pale grade: desaturated, pushed blue, lifted toward icy white.
    cold = op.saturate(f, 0.35) * np.array([0.82, 0.95, 1.15], dtype=np.float32)
    cold = 1.0 - (1.0 - np.clip(cold, 0.0, 1.0)) ** 1.6  # brighten
    cold = op.lerp(cold, np.array([0.86, 0.92, 1.0], dtype=np.float32), 0.3)

    # 2. frost: surfaces that face up (bright over dark below) catch white.
    g = op.blur(op.luma(f), 1.5 * s)
    _, dy = op.gradient(g)
    frost = op.smoothstep(0.01, 0.04, dy * s)[:, :, None] * 0.6

    # 3. snowflakes: sparse soft dots at fixed positions, two sizes.
    flakes = np.zeros((h, w), dtype=np.float32)
    for seed, density, size in ((41, 0.996, 0.8), (42, 0.9985, 1.6)):
        dots = (op.hash_noise(h, w, seed) > density).astype(np.float32)
        flakes += np.minimum(op.blur(dots, size * s) * 6.0 * size, 1.0)
    out = op.lerp(cold, 1.0, np.maximum(frost, np.minimum(flakes, 1.0)[:, :, None]))
    return op.to_uint8(out)


@op.rgb_filter
def sunset(image: np.ndarray) -> np.ndarray:
    """Golden hour: orange sky light from above, long warm glow, purple shadows."""
    f = op.to_float(image)
    h, w = f.shape[:2]
    s = op.short_side(f) / 256.0

    # 1. light colour by height: orange at the top, gold, purple near the bottom.
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    sky = op.gradient_map(np.broadcast_to(t, (h, w)), SUNSET_SKY)

    # 2. relight: luma times the sky colour, shadows pulled to purple.
    g = op.luma(f)[:, :, None]
    lit = op.lerp(f, g, 0.5) * sky * 1.35
    shadows = np.array([0.25, 0.05, 0.3], dtype=np.float32) * (1.0 - g) ** 3
    out = lit + shadows

    # 3. the low sun: a warm glow from the upper right, and bloom of the highlights.
    y, x = op.coords(h, w)
    sun = np.exp(-((x - 0.85 * x.max()) ** 2 + (y - 0.1) ** 2) / 0.08)[:, :, None]
    out = out + sun * np.array([1.0, 0.6, 0.2], dtype=np.float32) * 0.6
    out = out + op.wide_blur(np.maximum(out - 0.7, 0.0), 6.0 * s)
    return op.to_uint8(out)


@op.rgb_filter
def underwater(image: np.ndarray) -> np.ndarray:
    """Under the sea: red light absorbed, teal haze deeper down, rippling caustics, wobble."""
    f = op.to_float(image)
    h, w = f.shape[:2]
    s = op.short_side(f)

    # 1. water wobble: a fixed sinusoidal displacement.
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    amp, wave = 0.006 * s, 0.12 * s
    map_x = x + amp * np.sin(2 * np.pi * y / wave)
    map_y = y + amp * np.sin(2 * np.pi * x / (1.3 * wave))
    f = cv2.remap(f, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

    # 2. absorption and haze: red goes first, everything fades to teal with depth.
    absorbed = f * np.array([0.25, 0.85, 1.0], dtype=np.float32)
    depth = (y / h)[:, :, None] * 0.35 + 0.2
    water = np.array([0.0, 0.35, 0.45], dtype=np.float32)
    out = op.lerp(absorbed, water, depth)

    # 3. caustics: a network of thin bright curves (three families of wave fronts at 60
    # degrees, domain-warped by smooth noise), strongest near the surface.
    u, v = x / (0.028 * s), y / (0.028 * s)
    cell = 0.14 * s + 2.0
    warp_u = u + 7.0 * op.smooth_noise(h, w, seed=51, cell=cell)
    warp_v = v + 7.0 * op.smooth_noise(h, w, seed=52, cell=cell)
    fronts = [
        np.abs(np.sin(k * (warp_u * np.cos(a) + warp_v * np.sin(a))))
        for k, a in ((0.5, 0.3), (0.55, 0.3 + 2 * np.pi / 3), (0.6, 0.3 + 4 * np.pi / 3))
    ]
    near = np.minimum(np.minimum(fronts[0], fronts[1]), fronts[2])
    caustic = np.exp(-((near / 0.15) ** 2)) * (1.0 - 0.7 * y / h) * 0.45
    out = out + caustic[:, :, None] * np.array([0.25, 0.45, 0.45], dtype=np.float32)
    return op.to_uint8(op.blur(out, 0.5 * s / 256.0 + 0.4))
