"""Where `mirage-lsd-v1`'s error is made: the low-res denoiser or the upsampler.

    python benchmarks/builtin_error_split.py --size 512x512 --frames 10

For every look, the model streams the first frames of each held-out clip at 1 step; per
frame it scores, against the look's rendering of the same frame:

- low-res: the denoiser's own output (the low-res x0 it carries to the next frame)
  against the target shrunk to that grid (area), in PSNR;
- output: the model's full-resolution output (the style PSNR of `mirage-lsd eval`);
- no detail: the low-res x0 enlarged bilinearly, without the upsampler's detail;
- coarse oracle: the target itself shrunk to the grid and enlarged bilinearly, what a
  perfect denoiser would give without detail (as in `builtin_ceiling.py`).

If "output" sits near "no detail" and far below "coarse oracle", the upsampler is not
what is missing: the denoiser's low-res prediction is.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import cv2
import numpy as np
from builtin_ceiling import frames_of, print_look_table
from torch import Tensor

from mirage_lsd.evaluation.metrics import psnr
from mirage_lsd.geometry import parse_size
from mirage_lsd.looks.catalog import LOOKS
from mirage_lsd.models.builtin.model import DEFAULT_WEIGHTS, BuiltinModel
from mirage_lsd.training.data import DataConfig

KEYS = ("low_res", "output", "no_detail", "coarse_oracle")
HEADERS = ("low-res x0 vs shrunk target", "output", "no detail", "coarse oracle")


def to_pixels(x0: Tensor | None) -> np.ndarray:
    """(1, 3, h, w) tensor in [-1, 1] -> (h, w, 3) float32 in 0-255 levels."""
    assert x0 is not None, "the model keeps its last low-res output after every frame"
    return ((x0[0].float().clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).numpy()


def split(model: BuiltinModel, look: str, frames: list[np.ndarray]) -> dict[str, float]:
    """Mean scores of one look over a clip's frames, streamed in order."""
    height, width = frames[0].shape[:2]
    state = model.init_state(height, width)
    cond = model.look_prompt(look)
    scores: dict[str, list[float]] = {k: [] for k in KEYS}
    for frame in frames:
        output, state = model.step(frame, cond, state, 1)
        target = LOOKS[look].render(frame).astype(np.float32)
        x0 = to_pixels(state.prev_output)
        low = (x0.shape[1], x0.shape[0])
        shrunk = cv2.resize(target, low, interpolation=cv2.INTER_AREA)
        grow = lambda x: cv2.resize(x, (width, height), interpolation=cv2.INTER_LINEAR)  # noqa: E731
        scores["low_res"].append(psnr(x0, shrunk))
        scores["output"].append(psnr(output.astype(np.float32), target))
        scores["no_detail"].append(psnr(grow(x0), target))
        scores["coarse_oracle"].append(psnr(grow(shrunk), target))
    return {k: statistics.mean(v) for k, v in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--size", default="512x512")
    parser.add_argument("--frames", type=int, default=10, help="first frames of each clip")
    parser.add_argument("--media", type=Path, default=Path("../shared/media"))
    args = parser.parse_args()
    size = parse_size(args.size)
    model = BuiltinModel.from_file(args.model, compile=False)
    clips = [frames_of(args.media / c, size, args.frames, 1) for c in DataConfig().eval_clips]
    rows = []
    for look in LOOKS:
        per_clip = [split(model, look, frames) for frames in clips]
        row = {"look": look, **{k: round(statistics.mean(c[k] for c in per_clip), 2) for k in KEYS}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{args.model}, {args.size}, first {args.frames} frames of each held-out clip\n")
    print_look_table(rows, dict(zip(KEYS, HEADERS, strict=True)))
    mean = {k: round(statistics.mean(r[k] for r in rows), 2) for k in KEYS}
    print(f"\nmean over {len(rows)} looks: {json.dumps(mean)}")


if __name__ == "__main__":
    main()
