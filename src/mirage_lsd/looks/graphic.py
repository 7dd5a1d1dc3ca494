"""Flat, quantized looks with crisp edges: cartoon, comic halftone, pixel art, pop art,
blueprint and neon outlines."""

from __future__ import annotations

import cv2
import numpy as np

from mirage_lsd.looks import _ops as op

# DawnBringer's 32-colour palette, a standard among pixel artists (good greys and skin).
_DB32_HEX = (
    "000000 222034 45283c 663931 8f563b df7126 d9a066 eec39a fbf236 99e550 6abe30 37946e "
    "4b692f 524b24 323c39 3f3f74 306082 5b6ee1 639bff 5fcde4 cbdbfc ffffff 9badb7 847e87 "
    "696a6a 595652 76428a ac3232 d95763 d77bba 8f974a 8a6f30"
)
DB32 = np.frombuffer(bytes.fromhex(_DB32_HEX), np.uint8).reshape(1, -1, 3).astype(np.float32) / 255

# Pop-art bands from shadow to highlight.
POP = (
    np.array([[20, 20, 70], [230, 30, 120], [250, 150, 30], [255, 235, 60]], dtype=np.float32)
    / 255.0
)

BLUEPRINT_PAPER = np.array([0.07, 0.23, 0.52], dtype=np.float32)
BLUEPRINT_INK = np.array([0.90, 0.95, 1.00], dtype=np.float32)


def _nearest_colour(f: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Each pixel of float RGB `f` replaced by the perceptually nearest colour (in Lab) of
    `palette`, (1, N, 3) float RGB."""
    lab = cv2.cvtColor(f, cv2.COLOR_RGB2Lab)
    pal = cv2.cvtColor(palette, cv2.COLOR_RGB2Lab)
    d = ((lab[:, :, None, :] - pal) ** 2).sum(axis=3)  # (H, W, N)
    return palette[0, np.argmin(d, axis=2)]


@op.rgb_filter
def cartoon(image: np.ndarray) -> np.ndarray:
    """Cel shading: flat posterized colour regions with bold black outlines."""
    f = op.to_float(image)
    s = op.short_side(f) / 256.0

    # 1. flatten: edge-preserving smoothing at half resolution, back up smoothly.
    small = op.downscale(f, 2)
    for _ in range(3):
        small = cv2.bilateralFilter(small, d=5, sigmaColor=0.12, sigmaSpace=4.0)
    flat = op.upscale_to(small, f.shape)

    # 2. cels: lightness snapped to a few bands, colour (a, b) to coarse steps, in Lab so
    # that banding follows shading and hues stay true.
    lab = cv2.cvtColor(op.saturate(flat, 1.4), cv2.COLOR_RGB2Lab)  # L 0..100, a/b +-127
    lab[:, :, 0] = np.minimum(np.round(lab[:, :, 0] / 20.0) * 20.0 + 8.0, 100.0)
    lab[:, :, 1:] = np.round(lab[:, :, 1:] / 12.0) * 12.0
    cels = op.to_uint8(cv2.cvtColor(lab, cv2.COLOR_Lab2RGB))
    cels = cv2.medianBlur(cels, 2 * max(1, round(3 * s)) + 1)  # clear single-pixel specks

    # 3. outlines from the smoothed luma.
    ink = op.ink_lines(op.luma(flat), sigma=1.0 * s, threshold=0.02) > 0
    cels[ink] = 0
    return cels


@op.rgb_filter
def comic_halftone(image: np.ndarray) -> np.ndarray:
    """Printed comic: CMYK halftone dots on rotated screens, plus black ink outlines."""
    f = op.to_float(image)
    h, w = f.shape[:2]

    # 1. punchy colours, smoothed to the dot pitch (64 dots across the short side, at
    # least 4 px) so the screens do not alias.
    pitch = max(4.0, op.short_side(f) / 64.0)
    f = op.saturate(np.clip((f - 0.5) * 1.3 + 0.55, 0.0, 1.0), 1.6)
    f = op.blur(f, pitch * 0.35)

    # 2. CMYK separation with full under-colour removal.
    cmy = 1.0 - f
    k = cmy.min(axis=2)
    cmy = (cmy - k[:, :, None]) / np.maximum(1.0 - k[:, :, None], 1e-3)

    # 3. one round-dot screen per ink at the classic angles; ink where coverage > screen.
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    freq = np.float32(2.0 * np.pi / pitch)

    def screen(angle_deg: float) -> np.ndarray:
        a = np.deg2rad(angle_deg)
        u = (x * np.cos(a) + y * np.sin(a)) * freq
        v = (-x * np.sin(a) + y * np.cos(a)) * freq
        return 0.5 - 0.25 * (np.cos(u) + np.cos(v))  # 0 at dot centres .. 1 between dots

    inks = [cmy[:, :, i] * 0.9 > screen(a) for i, a in enumerate((15.0, 75.0, 0.0))]
    k_ink = k * 0.9 > screen(45.0)

    # 4. print: paper minus inks, then outlines on top.
    out = np.ones_like(f)
    for i, ink in enumerate(inks):
        out[:, :, i] -= ink  # cyan removes red, magenta green, yellow blue
    ink_line = op.ink_lines(op.luma(f), sigma=pitch * 0.3, threshold=0.015) > 0
    out[k_ink | ink_line] = 0.0
    return op.to_uint8(out * np.array([1.0, 0.97, 0.9], dtype=np.float32))


@op.rgb_filter
def pixel_art(image: np.ndarray) -> np.ndarray:
    """8-bit game sprite: big square pixels on a grid anchored top-left, 32-colour palette."""
    f = op.to_float(image)
    h, w = f.shape[:2]

    # 1. cell size: about 64 cells across the short side; pad to whole cells.
    cell = max(2, round(op.short_side(f) / 64))
    ph, pw = -h % cell, -w % cell
    padded = cv2.copyMakeBorder(f, 0, ph, 0, pw, cv2.BORDER_REPLICATE)

    # 2. average each cell, boost, snap to the nearest palette colour (in Lab), blow the
    # cells back up.
    size = ((w + pw) // cell, (h + ph) // cell)
    small = cv2.resize(padded, size, interpolation=cv2.INTER_AREA)
    small = op.saturate(np.clip((small - 0.5) * 1.2 + 0.55, 0.0, 1.0), 1.3)
    small = _nearest_colour(small, DB32)
    big = np.repeat(np.repeat(small, cell, axis=0), cell, axis=1)
    return op.to_uint8(big[:h, :w])


@op.rgb_filter
def pop_art(image: np.ndarray) -> np.ndarray:
    """Warhol screen print: four flat neon bands by brightness, black outlines."""
    f = op.to_float(image)
    s = op.short_side(f) / 256.0
    g = op.blur(op.luma(f), 1.2 * s)
    band = np.clip((g * 1.15 - 0.05) * 4.0, 0, 3.999).astype(np.int32)
    out = POP[band]
    ink = op.ink_lines(g, sigma=1.2 * s, threshold=0.025)
    return op.to_uint8(out * (1.0 - ink[:, :, None]))


@op.rgb_filter
def blueprint(image: np.ndarray) -> np.ndarray:
    """Technical blueprint: white line drawing on Prussian blue with a drafting grid."""
    f = op.to_float(image)
    h, w = f.shape[:2]
    s = op.short_side(f) / 256.0

    # 1. line drawing: gradient magnitude of smoothed luma, thin and bright.
    g = op.blur(op.luma(f), 0.8 * s)
    dx, dy = op.gradient(g)
    lines = op.smoothstep(0.015, 0.05, np.sqrt(dx * dx + dy * dy) * s)

    # 2. drafting grid every ~16 px at 256 px, anchored top-left.
    pitch = max(4, round(16 * s))
    yy, xx = np.arange(h)[:, None], np.arange(w)[None, :]
    grid = ((yy % pitch == 0) | (xx % pitch == 0)).astype(np.float32) * 0.25

    # 3. ink on paper, with a faint tint of the scene's tone.
    paper = BLUEPRINT_PAPER * (0.8 + 0.4 * op.blur(g, 3.0 * s))[:, :, None]
    a = np.maximum(lines, grid)[:, :, None]
    return op.to_uint8(op.lerp(paper, BLUEPRINT_INK, a))


@op.rgb_filter
def neon_edges(image: np.ndarray) -> np.ndarray:
    """Glowing neon tubes tracing the edges on a near-black background."""
    f = op.to_float(image)
    h, w = f.shape[:2]
    s = op.short_side(f) / 256.0

    # 1. edges of the smoothed luma.
    g = op.blur(op.luma(f), 1.0 * s)
    dx, dy = op.gradient(g)
    edge = op.smoothstep(0.012, 0.045, np.sqrt(dx * dx + dy * dy) * s)

    # 2. tube colour: the scene's hue at full saturation where it has one, otherwise a
    # fixed cyan-to-magenta sweep across the frame.
    hsv = cv2.cvtColor(op.blur(f, 2.0 * s), cv2.COLOR_RGB2HSV)  # H in [0, 360)
    y, x = op.coords(h, w)
    sweep = np.broadcast_to((190.0 + 110.0 * (x + y) / (x.max() + y.max())) % 360.0, (h, w))
    hue = np.where(hsv[:, :, 1] > 0.25, hsv[:, :, 0], sweep).astype(np.float32)
    ones = np.ones_like(hue)
    tube = cv2.cvtColor(np.dstack([hue, ones, ones]), cv2.COLOR_HSV2RGB)

    # 3. light: the tube, a wide glow around it, a white-hot core, a dark scene behind.
    lit = tube * edge[:, :, None]
    glow = op.blur(lit, 3.0 * s) * 2.0 + op.wide_blur(lit, 8.0 * s) * 1.5
    core = op.smoothstep(0.6, 1.0, edge)[:, :, None] * 0.5
    return op.to_uint8(f * 0.06 + lit + glow + core)
