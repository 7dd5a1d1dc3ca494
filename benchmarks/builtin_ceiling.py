"""How close the coarse-to-fine design can get to each look, with a perfect denoiser.

The built-in model denoises at 1/`downscale` of the frame and a guided upsampler brings
the result back to full size. This measures, per look on the held-out clips, the
style PSNR of three oracles that know the target and are limited only by that design:

- coarse: the target shrunk by `downscale` (area) and enlarged again (bilinear);
- luma: per low-res pixel, the best affine map of the full-res input's luma
  (out = a * luma + b, a and b fitted to the target by local least squares, as in
  the guided filter, then shrunk to the low-res grid and enlarged bilinearly); this is
  the form of the model's upsampler (`guided_upsample`);
- rgb: the same with an affine map of all three input channels (12 coefficients).

What is left above the oracles is texture that is in neither the input nor the
coarse image (film grain, halftone dots, scanlines fixed in the frame).

With `--blind K`, the same oracles are also fitted to the look's expectation over its
frame-fixed noise (paper grain, watercolor blotches, underwater ripples, film dust): the
mean of K renders whose noise seeds are all shifted, scored against the real render.
That is the ceiling of a model that cannot know those noise fields. The K-sample mean
keeps 1/K of the noise's variance, so these scores are low by at most 10 log10(1 + 1/K)
dB (0.26 dB at K = 16).

    python benchmarks/builtin_ceiling.py --size 512x512 --downscale 4 [--blind 16]
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import cv2
import numpy as np

from mirage_lsd.errors import EndOfStream
from mirage_lsd.evaluation.metrics import psnr
from mirage_lsd.geometry import apply_fit, parse_size, plan_fit
from mirage_lsd.looks import _ops
from mirage_lsd.looks.catalog import LOOKS
from mirage_lsd.models.builtin.network import LUMA
from mirage_lsd.sources import open_source
from mirage_lsd.training.data import DataConfig

EVAL_CLIPS = DataConfig().eval_clips  # held out of training
LUMA_WEIGHTS = np.array(LUMA, dtype=np.float32)


def frames_of(path: Path, size: tuple[int, int], count: int, every: int) -> list[np.ndarray]:
    """`count` frames of a clip, `every` frames apart, fitted to `size` (h, w) as eval does."""
    stream = open_source(path)
    out: list[np.ndarray] = []
    try:
        for i in range(count * every):
            try:
                frame = stream.recv().image
            except EndOfStream:
                break
            if i % every == 0:
                out.append(apply_fit(frame, plan_fit(frame.shape[:2], size, "crop")))
    finally:
        stream.close()
    return out


def box(x: np.ndarray, r: int) -> np.ndarray:
    """Mean over a (2r+1)^2 window, per channel."""
    return cv2.blur(x, (2 * r + 1, 2 * r + 1), borderType=cv2.BORDER_REFLECT)


def shrink_grow(x: np.ndarray, ds: int) -> np.ndarray:
    """To the low-res grid (area) and back (bilinear): what a low-res prediction can hold."""
    h, w = x.shape[:2]
    small = cv2.resize(x, (w // ds, h // ds), interpolation=cv2.INTER_AREA)
    grown = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    return grown.reshape(x.shape)


def affine_oracle(guide: np.ndarray, target: np.ndarray, ds: int, r: int, eps: float) -> np.ndarray:
    """Guided-filter fit of target (H, W, 3) on guide (H, W, G), coefficients on the low grid."""
    h, w, g = guide.shape
    ones = np.ones((h, w, 1), np.float32)
    basis = np.concatenate([guide, ones], axis=2)  # (H, W, G+1)
    # local normal equations: E[b b^T] coef = E[b t]
    outer = np.einsum("hwi,hwj->hwij", basis, basis).reshape(h, w, -1)
    gram = box(outer, r).reshape(h, w, g + 1, g + 1)
    gram = gram + eps * np.diag([1.0] * g + [0.0]).astype(np.float32)
    cross = np.einsum("hwi,hwc->hwic", basis, target).reshape(h, w, -1)
    rhs = box(cross, r).reshape(h, w, g + 1, 3)
    coef = np.linalg.solve(gram, rhs)  # (H, W, G+1, 3)
    coef = shrink_grow(coef.reshape(h, w, -1), ds).reshape(h, w, g + 1, 3)
    return np.einsum("hwi,hwic->hwc", basis, coef)


def noise_blind_mean(render: Callable[[np.ndarray], np.ndarray], frame: np.ndarray, k: int):
    """Mean of `k` renders of `frame` with every hash-noise seed shifted, (H, W, 3) float32.

    The looks draw all their frame-fixed noise from `_ops.hash_noise` (`smooth_noise` too),
    so shifting its seed gives an independent draw of every noise field.
    """
    real = _ops.hash_noise
    total = np.zeros(frame.shape, np.float64)
    for draw in range(1, k + 1):
        shifted = lambda h, w, seed, d=draw: real(h, w, seed + 7919 * d)  # noqa: E731
        with mock.patch.object(_ops, "hash_noise", shifted):
            total += render(frame)
    return (total / k).astype(np.float32)


def oracles(
    frame: np.ndarray, target: np.ndarray, ds: int, fit_to: np.ndarray | None = None
) -> dict[str, float]:
    """Oracle scores against `target`; `fit_to` (float, 0-255) is what they are fitted to
    (the target itself by default, its noise-blind mean for `--blind`)."""
    f = frame.astype(np.float32) / 255.0
    t = (target if fit_to is None else fit_to).astype(np.float32) / 255.0
    to8 = lambda x: np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)  # noqa: E731
    luma = (f @ LUMA_WEIGHTS)[:, :, None]
    best = lambda guide: max(  # noqa: E731
        psnr(to8(affine_oracle(guide, t, ds, r, eps)), target)
        for r in (ds // 2, ds)
        for eps in (1e-4, 1e-3)
    )
    return {
        **({} if fit_to is None else {"full": psnr(to8(t), target)}),
        "coarse": psnr(to8(shrink_grow(t, ds)), target),
        "luma": best(luma),
        "rgb": best(f),
        "identity": psnr(frame, target),
    }


def print_look_table(rows: list[dict[str, object]], columns: dict[str, str]) -> None:
    """A Markdown table, one row per look: `columns` maps row keys to their headers."""
    print("| look | " + " | ".join(columns.values()) + " |")
    print("| --- |" + " --- |" * len(columns))
    for r in rows:
        print(f"| {r['look']} | " + " | ".join(f"{r[k]:.2f}" for k in columns) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="512x512")
    parser.add_argument("--downscale", type=int, default=4)
    parser.add_argument("--frames", type=int, default=6, help="frames per clip")
    parser.add_argument("--every", type=int, default=10, help="frames apart")
    parser.add_argument("--media", type=Path, default=Path("../shared/media"))
    parser.add_argument(
        "--blind", type=int, default=0, metavar="K", help="also the noise-blind oracles, K draws"
    )
    args = parser.parse_args()
    size = parse_size(args.size)
    frames = [
        f for c in EVAL_CLIPS for f in frames_of(args.media / c, size, args.frames, args.every)
    ]
    rows = []
    for name, look in LOOKS.items():
        scores = []
        for f in frames:
            target = look.render(f)
            score = oracles(f, target, args.downscale)
            if args.blind:
                mean = noise_blind_mean(look.render, f, args.blind)
                blind = oracles(f, target, args.downscale, fit_to=mean)
                score |= {f"blind_{k}": blind[k] for k in ("full", "coarse", "luma")}
            scores.append(score)
        row = {
            "look": name,
            **{k: round(statistics.mean(s[k] for s in scores), 2) for k in scores[0]},
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{len(frames)} frames, {args.size}, downscale {args.downscale}\n")
    columns = {
        "identity": "identity",
        "coarse": "coarse",
        "luma": "luma-guided",
        "rgb": "rgb-guided",
    }
    if args.blind:
        columns |= {
            "blind_full": "noise-blind",
            "blind_coarse": "noise-blind coarse",
            "blind_luma": "noise-blind luma-guided",
        }
    print_look_table(rows, columns)
    # the noise-blind mean itself is exact (100 dB) on looks without noise: no mean of it
    mean = {k: round(statistics.mean(r[k] for r in rows), 2) for k in columns if k != "blind_full"}
    print(f"\nmean over {len(rows)} looks: {json.dumps(mean)}")


if __name__ == "__main__":
    main()
