"""Optical flow on input frames (OpenCV DIS, at low resolution) and warping by it.

The flow is computed on the *input* frames only, so the output stays causal: frame t's
history is the previous output moved to where its content is in input frame t.
Convention: `flow[y, x] = (dx, dy)` with `current(x, y) ~ previous(x + dx, y + dy)`,
in pixels of the flow image. `warp` takes it in tensor form (B, 2, h, w).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

DIS_MIN_SIDE = 32  # OpenCV's DIS needs at least 12 pixels; below 32 it sees too little


def flow_gray(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (height, width) uint8 gray, area-downsampled."""
    small = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)


class FlowEstimator:
    """Dense backward flow between two gray frames. One per model; not thread-safe."""

    def __init__(self) -> None:
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)

    def __call__(self, current: np.ndarray, previous: np.ndarray) -> np.ndarray:
        """(h, w) uint8 gray x2 -> (h, w, 2) float32 flow from `current` into `previous`."""
        h, w = current.shape
        scale = math.ceil(DIS_MIN_SIDE / min(h, w))
        if scale == 1:
            return self._dis.calc(current, previous, None)
        # tiny frames (tests, thumbnails): DIS needs a few patches, so work upscaled
        big = (w * scale, h * scale)
        flow = self._dis.calc(cv2.resize(current, big), cv2.resize(previous, big), None)
        return cv2.resize(flow, (w, h), interpolation=cv2.INTER_AREA) / scale


def flow_to_tensor(flow: np.ndarray) -> Tensor:
    """(h, w, 2) numpy flow -> (1, 2, h, w) float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(flow.transpose(2, 0, 1)))[None]


def warp(image: Tensor, flow: Tensor) -> tuple[Tensor, Tensor]:
    """Pull `image` (B, C, H, W) along `flow` (B, 2, h, w) given at any resolution.

    Returns the warped image (B, C, H, W) and a validity mask (B, 1, H, W): 1 where the
    source point lies inside the previous frame, 0 where content entered the view.
    """
    b, _, height, width = image.shape
    fh, fw = flow.shape[-2:]
    # 1. flow to image resolution, in image pixels
    flow = F.interpolate(flow, size=(height, width), mode="bilinear", align_corners=False)
    flow = flow * torch.tensor([width / fw, height / fh], device=flow.device).view(1, 2, 1, 1)
    # 2. sampling positions in normalized coordinates (-1..1, pixel centers)
    ys = torch.arange(height, device=image.device, dtype=flow.dtype)
    xs = torch.arange(width, device=image.device, dtype=flow.dtype)
    x = (xs.view(1, 1, width) + flow[:, 0] + 0.5) * (2.0 / width) - 1.0  # (B, H, W)
    y = (ys.view(1, height, 1) + flow[:, 1] + 0.5) * (2.0 / height) - 1.0  # (B, H, W)
    grid = torch.stack((x, y), dim=-1)  # (B, H, W, 2)
    # 3. sample, and mark points that came from outside
    warped = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
    inside = (x.abs() <= 1.0) & (y.abs() <= 1.0)
    return warped, inside.unsqueeze(1).to(image.dtype).expand(b, 1, height, width)
