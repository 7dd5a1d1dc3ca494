"""Frame metrics. Differences are taken on float32: uint8 subtraction wraps around."""

from __future__ import annotations

import cv2
import numpy as np
from skimage.metrics import structural_similarity

MAX_DB = 100.0  # PSNR of identical frames


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 images, in dB."""
    mse = float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))
    return MAX_DB if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity of two RGB uint8 images (mean over channels)."""
    return float(structural_similarity(a, b, channel_axis=2, data_range=255))


class FlowWarper:
    """Optical flow between consecutive input frames, with an occlusion mask.

    The flow is computed on the input frames only, so the same warp judges the
    model's output, the procedural target and the input alike.
    """

    def __init__(self) -> None:
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)

    def flow(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """(H, W, 2) flow from `src` to `dst` (RGB uint8)."""
        g0 = cv2.cvtColor(src, cv2.COLOR_RGB2GRAY)
        g1 = cv2.cvtColor(dst, cv2.COLOR_RGB2GRAY)
        return self._dis.calc(g0, g1, None)

    def prepare(self, prev: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sampling maps that pull frame t-1 onto frame t, and the valid (non-occluded) mask.

        Forward-backward check: a pixel is kept when following the flow t -> t-1 and
        back again lands within a motion-dependent tolerance of where it started.
        """
        back = self.flow(cur, prev)  # t -> t-1
        fwd = self.flow(prev, cur)  # t-1 -> t
        h, w = cur.shape[:2]
        xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        map_x, map_y = xs + back[..., 0], ys + back[..., 1]
        fwd_at = cv2.remap(fwd, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        round_trip = np.sum((back + fwd_at) ** 2, axis=2)
        tolerance = 0.01 * (np.sum(back**2, axis=2) + np.sum(fwd_at**2, axis=2)) + 0.5
        inside = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
        return np.stack([map_x, map_y]), (round_trip <= tolerance) & inside

    @staticmethod
    def warp_error(
        prev: np.ndarray, cur: np.ndarray, maps: np.ndarray, valid: np.ndarray
    ) -> float | None:
        """Mean absolute difference (0-255 levels) between `cur` and warped `prev` where
        valid; None where nothing is (the pair says nothing about flicker).

        `prev` is warped as float: warping the uint8 frame would round every pixel to a
        whole level first, an error as large as the flicker being measured.
        """
        if not valid.any():
            return None
        warped = cv2.remap(
            prev.astype(np.float32), maps[0], maps[1], cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )  # fmt: skip
        diff = np.abs(cur.astype(np.float32) - warped).mean(axis=2)
        return float(diff[valid].mean())
