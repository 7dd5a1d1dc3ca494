"""How much of `mirage-lsd-v1`'s low-res output a global colour grade already explains.

    python benchmarks/builtin_grade_fit.py --size 512x512 --frames 8 --every 3

Per look, on frames of the held-out clips, all scored at the denoiser's grid against the
look's rendering shrunk to it (area), in PSNR:

- model: the denoiser's low-res x0, streamed at 1 step (as in `builtin_error_split.py`);
- its grade: the bundled network's `PromptGrade` alone (x0's base, no residual);
- fitted grade: the same form (colour matrix, offset, per-channel curves of the luma
  over `grade_knots` tents, gain and lift over a `grade_grid` lattice) fitted by Adam
  to these very frames: an oracle of the form, not of what a prompt can pick;
- fitted, full-res tents: the same, but the curves read the full-res luma (each tent
  taken per full-res pixel, then averaged over the cell), so a curve applies to every
  pixel before the shrink, as the look does. If this beat the plain fit, the denoiser
  would lack sub-pixel statistics of its input.

The model's grade config must have no `grade_bands` (the bundled one has none).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from builtin_ceiling import frames_of, print_look_table
from builtin_error_split import split
from torch import Tensor

from mirage_lsd.evaluation.metrics import psnr
from mirage_lsd.geometry import parse_size
from mirage_lsd.looks.catalog import LOOKS
from mirage_lsd.models.builtin.model import DEFAULT_WEIGHTS, BuiltinModel, to_tensor
from mirage_lsd.models.builtin.network import luma
from mirage_lsd.training.data import DataConfig

KEYS = ("model", "grade", "fitted", "fitted_full_res_tents")
HEADERS = ("model x0", "its grade alone", "fitted grade", "fitted, full-res tents")
FIT_STEPS = 500


def levels(x: Tensor) -> list[np.ndarray]:
    """(N, 3, h, w) in [-1, 1] -> N (h, w, 3) float arrays in 0-255 levels."""
    return list(((x.detach().clamp(-1, 1) + 1) * 127.5).permute(0, 2, 3, 1).numpy())


def tents(lum: Tensor, knots: int) -> Tensor:
    """(N, 1, h, w) luma -> (N, knots, h, w) piecewise-linear tents over [-1, 1]."""
    centres = torch.linspace(-1.0, 1.0, knots).view(1, knots, 1, 1)
    return (1 - (lum - centres).abs() * ((knots - 1) / 2)).relu()


def fit_grade(image: Tensor, curve_tents: Tensor, target: Tensor, grid: int) -> Tensor:
    """The grade's form fitted to (image, target) by Adam; returns its output."""
    h, w = image.shape[-2:]
    matrix = torch.zeros(3, 3, requires_grad=True)
    offset = torch.zeros(1, 3, 1, 1, requires_grad=True)
    curves = torch.zeros(3, curve_tents.shape[1], requires_grad=True)
    lattice = torch.zeros(1, 6, grid, grid, requires_grad=True)
    opt = torch.optim.Adam([matrix, offset, curves, lattice], lr=0.01)

    def grade() -> Tensor:
        out = torch.einsum("ij,bjhw->bihw", matrix + torch.eye(3), image) + offset
        out = out + torch.einsum("ck,bkhw->bchw", curves, curve_tents)
        maps = F.interpolate(lattice, size=(h, w), mode="bilinear", align_corners=True)
        gain, lift = maps.chunk(2, dim=1)
        return out * (1 + gain) + lift

    for _ in range(FIT_STEPS):
        loss = (grade() - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return grade()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--size", default="512x512")
    parser.add_argument("--frames", type=int, default=8, help="frames per clip")
    parser.add_argument("--every", type=int, default=3, help="frames apart")
    parser.add_argument("--media", type=Path, default=Path("../shared/media"))
    args = parser.parse_args()
    torch.manual_seed(0)
    height, width = parse_size(args.size)
    model = BuiltinModel.from_file(args.model, compile=False)
    cfg = model.cfg
    if cfg.grade_bands or not cfg.grade_knots or model.net.grade is None:
        raise SystemExit("needs weights with a colour grade and no grade_bands")
    clips = [
        frames_of(args.media / c, (height, width), args.frames, args.every)
        for c in DataConfig().eval_clips
    ]
    frames = [f for clip in clips for f in clip]
    ds = model.downscale_for(height, width)
    low = (width // ds, height // ds)
    small = torch.cat([to_tensor(cv2.resize(f, low, interpolation=cv2.INTER_AREA)) for f in frames])
    full = torch.cat([to_tensor(f) for f in frames])
    low_tents = tents(luma(small), cfg.grade_knots)
    pooled_tents = F.avg_pool2d(tents(luma(full), cfg.grade_knots), ds)
    rows = []
    for look in LOOKS:
        shrunk = [
            cv2.resize(LOOKS[look].render(f).astype(np.float32), low, interpolation=cv2.INTER_AREA)
            for f in frames
        ]
        target = torch.from_numpy(np.stack(shrunk)).permute(0, 3, 1, 2) / 127.5 - 1
        prompt = model.look_prompt(look).embedding[None].float().expand(len(frames), -1)
        with torch.no_grad():
            own = model.net.grade(small, prompt)
        outputs = {
            "grade": own,
            "fitted": fit_grade(small, low_tents, target, cfg.grade_grid),
            "fitted_full_res_tents": fit_grade(small, pooled_tents, target, cfg.grade_grid),
        }
        row: dict[str, object] = {"look": look}
        row["model"] = round(statistics.mean(split(model, look, c)["low_res"] for c in clips), 2)
        for key, out in outputs.items():
            scores = [psnr(a, b) for a, b in zip(levels(out), shrunk, strict=True)]
            row[key] = round(statistics.mean(scores), 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{args.model}, {args.size} (grid {low[0]}x{low[1]}), {len(frames)} frames\n")
    print_look_table(rows, dict(zip(KEYS, HEADERS, strict=True)))
    mean = {k: round(statistics.mean(float(r[k]) for r in rows), 2) for k in KEYS}  # type: ignore[arg-type]
    print(f"\nmean over {len(rows)} looks: {json.dumps(mean)}")


if __name__ == "__main__":
    main()
