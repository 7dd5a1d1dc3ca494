"""Evaluation metrics on real frames with known motion, and `mirage-lsd eval`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from mirage_lsd.evaluation.metrics import FlowWarper, psnr, ssim


def a_frame(media: Path) -> np.ndarray:
    with av.open(str(media / "walk.mkv")) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == 30:
                return frame.to_ndarray(format="rgb24")
    raise AssertionError("clip too short")


def test_psnr_does_not_wrap_around() -> None:
    black, white = np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 255, np.uint8)
    assert psnr(black, white) == 0.0  # uint8 subtraction would give 1 level, not 255
    assert psnr(white, white) == 100.0
    assert ssim(white, white) == 1.0


def test_warp_error_follows_known_motion(media: Path) -> None:
    prev = a_frame(media)
    shift = np.float32([[1, 0, 4], [0, 1, 3]])  # 4 px right, 3 px down
    cur = cv2.warpAffine(prev, shift, (prev.shape[1], prev.shape[0]), borderMode=cv2.BORDER_REFLECT)
    warper = FlowWarper()
    maps, valid = warper.prepare(prev, cur)
    assert valid.mean() > 0.8
    aligned = warper.warp_error(prev, cur, maps, valid)
    unaligned = float(np.abs(cur.astype(np.float32) - prev.astype(np.float32)).mean())
    assert aligned < 2.0 < unaligned  # the flow explains the motion
    # a frame that flickers (brightness jump) is caught even though nothing moved
    flicker = np.clip(cur.astype(np.int16) + 20, 0, 255).astype(np.uint8)
    assert warper.warp_error(prev, flicker, maps, valid) > 10.0


def test_warp_error_warps_in_float_and_skips_pairs_with_nothing_in_view() -> None:
    stripes = np.zeros((32, 32, 3), np.uint8)
    stripes[:, 1::2] = 1  # columns 0, 1, 0, 1, ...
    ys, xs = np.mgrid[0:32, 0:32].astype(np.float32)
    maps = np.stack([xs + 0.5, ys])  # half a pixel over: every warped pixel is 0.5
    valid = np.ones((32, 32), bool)
    valid[:, -1] = False  # the last column samples past the edge
    black = np.zeros_like(stripes)
    assert FlowWarper.warp_error(stripes, black, maps, valid) == pytest.approx(0.5)
    assert FlowWarper.warp_error(stripes, black, maps, np.zeros_like(valid)) is None


def test_eval_cli_on_identity(media: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mirage_lsd.cli.app",
            "eval",
            str(media / "walk.mkv"),
            "--prompt",
            "make it look like an old photograph",
            "--model",
            "identity",
            "--size",
            "256x256",
            "--frames",
            "12",
            "--json",
        ],
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr.decode()
    data = json.loads(result.stdout)
    assert data["look"] == "sepia_vintage" and data["frames"] == 12 and data["size"] == "256x256"
    # identity's output is its input: style equals identity, flicker equals the input's
    assert data["style_psnr"] == data["identity_psnr"] < 20.0
    assert data["warp_error"] == data["warp_error_input"]
    for key in ("style_ssim", "warp_error_target", "drift_db", "match_similarity"):
        assert isinstance(data[key], float)
    assert 0.5 < data["look_weight"] <= 1.0
