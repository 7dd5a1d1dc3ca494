"""Looks that imitate a medium on paper or canvas: pencil, watercolor, oil paint."""

from __future__ import annotations

import cv2
import numpy as np

from mirage_lsd.looks import _ops as op

PAPER = np.array([0.97, 0.95, 0.90], dtype=np.float32)  # warm off-white


@op.rgb_filter
def pencil_sketch(image: np.ndarray) -> np.ndarray:
    """Graphite on paper: colour-dodge lines, diagonal hatching in the shadows, paper grain."""
    f = op.to_float(image)
    h, w = f.shape[:2]
    s = op.short_side(f) / 256.0

    # 1. lines: dodge the luma by its blur, which keeps only local detail, then darken.
    g = op.luma(f)
    lines = np.minimum(1.0, g / np.maximum(op.blur(g, 2.5 * s), 1e-3)) ** 4

    # 2. hatching where the (smoothed) tone is dark: two diagonal stroke families.
    tone = op.blur(g, 3.0 * s)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    pitch = np.float32(max(3.0, 4.0 * s))
    wobble = 0.25 * op.smooth_noise(h, w, seed=11, cell=12.0 * s + 2.0)
    hatch1 = np.abs(((x + 0.6 * y) / pitch + wobble) % 1.0 - 0.5) < 0.13
    hatch2 = np.abs(((x - 1.4 * y) / pitch + wobble) % 1.0 - 0.5) < 0.13
    shade = 0.35 * hatch1 * op.smoothstep(0.5, 0.2, tone)
    shade += 0.35 * hatch2 * op.smoothstep(0.3, 0.08, tone)

    # 3. graphite value times paper grain.
    grain = 0.9 + 0.1 * op.blur(op.hash_noise(h, w, seed=7), 0.6)
    graphite = np.clip(lines - shade, 0.0, 1.0) * grain
    return op.to_uint8(op.gray3(graphite) * PAPER)


@op.rgb_filter
def watercolor(image: np.ndarray) -> np.ndarray:
    """Soft washes of pigment: flattened colour, pale bleeding, dark wet edges, paper."""
    f = op.to_float(image)
    h, w = f.shape[:2]
    s = op.short_side(f) / 256.0

    # 1. flatten colour at quarter resolution (edge-preserving), then bleed when upscaling.
    small = op.downscale(f, 4)
    for _ in range(3):
        small = cv2.bilateralFilter(small, d=5, sigmaColor=0.15, sigmaSpace=3.0)
    wash = op.saturate(op.blur(op.upscale_to(small, f.shape), 1.5 * s), 1.4)

    # 2. pigment is transparent: its density is how far the wash is from white, with the
    # highlights left as bare paper and a blotchy, uneven density inside each wash.
    density = np.clip(1.0 - wash - 0.1, 0.0, 1.0) * 0.85
    blotch = op.smooth_noise(h, w, seed=3, cell=24.0 * s + 2.0)[:, :, None]
    density = density * (0.8 + 0.4 * blotch)

    # 3. wet edges: pigment pools at the rim of each wash, on its darker side.
    g = op.luma(wash)
    rim = op.smoothstep(0.005, 0.04, op.blur(g, 2.5 * s) - g)[:, :, None]
    density = density * (1.0 + 0.6 * rim) + 0.05 * rim

    # 4. paper: fine grain takes a little more pigment in its pits.
    paper = op.blur(op.hash_noise(h, w, seed=4), 0.8 * s + 0.3)
    density = density * (1.0 + 0.8 * (paper[:, :, None] - 0.5))
    return op.to_uint8(PAPER * (1.0 - density))


def _kuwahara(f: np.ndarray, r: int) -> np.ndarray:
    """Kuwahara filter: each pixel takes the mean of its least-varied (r+1)^2 quadrant."""
    g = op.luma(f)
    g2 = g * g
    size = (r + 1, r + 1)
    best_mean = np.zeros_like(f)
    best_var = np.full(g.shape, np.inf, dtype=np.float32)
    for anchor in ((0, 0), (r, 0), (0, r), (r, r)):
        box = {"ksize": size, "anchor": anchor, "borderType": cv2.BORDER_REFLECT}
        mean = cv2.boxFilter(f, -1, **box)
        var = cv2.boxFilter(g2, -1, **box) - cv2.boxFilter(g, -1, **box) ** 2
        take = var < best_var
        best_var = np.where(take, var, best_var)
        best_mean = np.where(take[:, :, None], mean, best_mean)
    return best_mean


@op.rgb_filter
def oil_paint(image: np.ndarray) -> np.ndarray:
    """Thick oil on canvas: Kuwahara-flattened strokes, rich colour, lit impasto relief."""
    f = op.to_float(image)
    h, w = f.shape[:2]
    s = op.short_side(f) / 256.0

    # 1. paint patches: Kuwahara at half resolution, vivid colour.
    small = _kuwahara(op.downscale(f, 2), r=3)
    paint = op.blur(op.upscale_to(_kuwahara(small, r=2), f.shape), 0.7 * s)
    paint = op.saturate(np.clip((paint - 0.5) * 1.3 + 0.5, 0.0, 1.0), 1.6)

    # 2. brush strokes: coordinate noise smeared along the local edge direction (four
    # quantized orientations, from the structure tensor), plus the paint's own tone.
    g = op.luma(paint)
    dx, dy = op.gradient(op.blur(g, 1.0 * s))
    jxx, jxy, jyy = (op.blur(a, 4.0 * s) for a in (dx * dx, dx * dy, dy * dy))
    along = 0.5 * np.arctan2(2.0 * jxy, jxx - jyy) + np.pi / 2  # edge tangent, radians
    which = np.round(along / (np.pi / 4)).astype(np.int32) % 4  # 0, 45, 90, 135 degrees
    noise = op.blur(op.hash_noise(h, w, seed=5), 0.9 * s)
    length = max(3, int(13 * s) | 1)
    strokes = np.zeros_like(noise)
    for i in range(4):
        kernel = np.zeros((length, length), dtype=np.float32)
        a, c = i * np.pi / 4, (length - 1) / 2
        ex, ey = c * np.cos(a), c * np.sin(a)
        cv2.line(kernel, (round(c - ex), round(c - ey)), (round(c + ex), round(c + ey)), 1.0)
        smeared = cv2.filter2D(noise, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REFLECT)
        strokes = np.where(which == i, smeared, strokes)
    height = 0.5 * op.blur(g, 1.0 * s) + 0.5 * strokes

    # 3. light the relief from the upper left.
    dx, dy = op.gradient(height)
    light = 1.0 + np.clip((-dx - dy) * (6.0 * s), -0.35, 0.35)
    return op.to_uint8(paint * light[:, :, None])
