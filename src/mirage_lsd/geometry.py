"""Fitting frames to the requested output size.

The output is always exactly the requested (height, width). The aspect ratio is
kept: `crop` fills the frame and cuts the overflow at the center, `letterbox`
fits the whole frame and pads with black. Cropping happens in source
coordinates before resizing, so no pixel that will be thrown away is resized.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from mirage_lsd.errors import UserError

FitMode = Literal["crop", "letterbox"]
MAX_SIDE = 8192

_SIZE_RE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def parse_size(text: str) -> tuple[int, int]:
    """Parse 'WxH' (as users write it) into (height, width) (as arrays are shaped)."""
    match = _SIZE_RE.match(text)
    if not match:
        raise UserError(f"malformed size '{text}': write it as WIDTHxHEIGHT, e.g. 1280x720")
    width, height = int(match[1]), int(match[2])
    check_size((height, width))
    return height, width


def check_size(size: tuple[int, int]) -> tuple[int, int]:
    """Reject sizes no stream can have."""
    height, width = size
    if not (16 <= width <= MAX_SIDE and 16 <= height <= MAX_SIDE):
        raise UserError(
            f"size {width}x{height} is out of range: width and height must be 16 to {MAX_SIDE}"
        )
    return int(height), int(width)


@dataclass(frozen=True, slots=True)
class FitPlan:
    """How one input size maps to the output size; computed once per input size."""

    crop: tuple[int, int, int, int]  # y0, y1, x0, x1 in the source
    resized: tuple[int, int]  # (h, w) the crop is resized to
    offset: tuple[int, int]  # (y, x) where it lands in the output
    out: tuple[int, int]  # output (h, w)
    src: tuple[int, int] = (0, 0)  # the source (h, w) it was planned for

    @property
    def is_identity(self) -> bool:
        return self.src == self.out and self.resized == self.out


def plan_fit(src: tuple[int, int], out: tuple[int, int], mode: FitMode = "crop") -> FitPlan:
    """Plan the crop, resize and placement that take a `src` frame to `out`."""
    sh, sw = src
    oh, ow = out
    if mode == "crop":
        scale = max(oh / sh, ow / sw)
        ch, cw = max(1, min(sh, round(oh / scale))), max(1, min(sw, round(ow / scale)))
        y0, x0 = (sh - ch) // 2, (sw - cw) // 2
        return FitPlan((y0, y0 + ch, x0, x0 + cw), (oh, ow), (0, 0), out, (sh, sw))
    if mode == "letterbox":
        scale = min(oh / sh, ow / sw)
        rh, rw = max(1, min(oh, round(sh * scale))), max(1, min(ow, round(sw * scale)))
        return FitPlan((0, sh, 0, sw), (rh, rw), ((oh - rh) // 2, (ow - rw) // 2), out, (sh, sw))
    raise UserError(f"unknown fit mode '{mode}': use crop or letterbox")


def apply_fit(image: np.ndarray, plan: FitPlan) -> np.ndarray:
    """Crop, resize and place `image` as `plan` says. Returns a new or the same array."""
    if plan.is_identity:
        return image
    y0, y1, x0, x1 = plan.crop
    region = image[y0:y1, x0:x1]
    rh, rw = plan.resized
    if region.shape[:2] != (rh, rw):
        shrinking = rh * rw < region.shape[0] * region.shape[1]
        interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        region = cv2.resize(region, (rw, rh), interpolation=interp)
    if plan.resized == plan.out:
        return np.ascontiguousarray(region)
    canvas = np.zeros((*plan.out, 3), dtype=np.uint8)
    oy, ox = plan.offset
    canvas[oy : oy + rh, ox : ox + rw] = region
    return canvas


def clear_bars(image: np.ndarray, plan: FitPlan) -> np.ndarray:
    """A model's output with a letterbox's bars black again (a model paints them like
    the picture: glow spills in, a wash turns them grey); a copy when there are bars."""
    if plan.resized == plan.out:
        return image
    image = image.copy()  # the model's array may be its own (a cached frame)
    (oy, ox), (rh, rw) = plan.offset, plan.resized
    image[:oy] = 0
    image[oy + rh :] = 0
    image[:, :ox] = 0
    image[:, ox + rw :] = 0
    return image


def pad_to_multiple(image: np.ndarray, multiple: int) -> np.ndarray:
    """Reflect-pad bottom and right so both sides divide by `multiple`."""
    if multiple <= 1:
        return image
    h, w = image.shape[:2]
    ph, pw = -h % multiple, -w % multiple
    if ph == 0 and pw == 0:
        return image
    return cv2.copyMakeBorder(image, 0, ph, 0, pw, cv2.BORDER_REFLECT_101)
