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
import torch

import mirage_lsd.evaluation.evaluate as evaluation
from mirage_lsd.engine.stream_engine import StreamEngine
from mirage_lsd.errors import UserError
from mirage_lsd.evaluation.evaluate import evaluate, resolve_look
from mirage_lsd.evaluation.metrics import FlowWarper, psnr, ssim
from mirage_lsd.models.builtin.model import BuiltinModel, catalog_bank
from mirage_lsd.models.builtin.network import LSDNet
from mirage_lsd.models.builtin.prompt_embedding import LookBank
from mirage_lsd.models.identity import IdentityModel
from mirage_lsd.training.config import load_train_config

ROOT = Path(__file__).resolve().parents[1]
OLD_PHOTO = "make it look like an old photograph"


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


def noise_frames(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(count)]


class Scheduled(IdentityModel):
    """Runs a schedule of its own (3 steps, whatever is asked), and may pipeline frames."""

    def __init__(self, lag: int = 0) -> None:
        super().__init__()
        self.lag = lag

    def steps_run(self, steps: int) -> int:
        return 3

    def lag_frames(self, steps: int) -> int:
        return self.lag


def test_eval_reports_steps_run_samples_ssim_over_the_source_and_refuses_lag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--frames beyond the clip's end still spreads SSIM over the clip; a pipelining
    model (its output t is input t - lag's) is refused, not scored against the wrong frame."""
    calls: list[int] = []
    monkeypatch.setattr(evaluation, "SSIM_FRAMES", 4)
    monkeypatch.setattr(evaluation, "ssim", lambda a, b: calls.append(1) or 1.0)
    engine = StreamEngine(Scheduled(), device="cpu", resolution=(64, 64))
    result = evaluate(engine, noise_frames(12), OLD_PHOTO, frames=1000)
    assert (result.frames, result.steps, len(calls)) == (12, 3, 4)  # frames 0, 3, 6, 9
    lagging = StreamEngine(Scheduled(lag=1), device="cpu", resolution=(64, 64))
    with pytest.raises(UserError, match="without lag: use --batch-mode latency_first"):
        evaluate(lagging, noise_frames(4), OLD_PHOTO, frames=4)


def test_eval_scores_a_builtin_model_on_the_look_its_own_bank_picks() -> None:
    full = catalog_bank()
    names = ("thermal", "winter")
    keep = [full.names.index(name) for name in names]
    rows = torch.isin(full.owner, torch.tensor(keep))
    owner = torch.tensor([keep.index(int(i)) for i in full.owner[rows]])
    bank = LookBank(names, full.descriptions[rows], owner, full.anchors[keep])
    net = LSDNet(load_train_config(ROOT / "configs" / "tiny.yaml").model)
    model = BuiltinModel(net, bank, compile=False)
    assert resolve_look(OLD_PHOTO)[0] == "sepia_vintage"  # the catalog's pick
    engine = StreamEngine(model, device="cpu", resolution=(64, 64))
    result = evaluate(engine, noise_frames(3), OLD_PHOTO, frames=3)
    match = model.encode_prompt(OLD_PHOTO).match
    assert (result.look, result.look_weight) == (match.best, match.weights[match.best])
    assert result.look in names
