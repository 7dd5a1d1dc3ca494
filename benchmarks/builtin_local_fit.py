"""Does `mirage-lsd-v1` underfit the looks or fail to carry them to new footage, and how
far does a small network trained on one look alone get?

    python benchmarks/builtin_local_fit.py --size 256x256 --frames 12

Per look, three numbers, all style PSNR against the look's rendering of the same frames:

- model, trained clips / held-out clips: the model (1 step, through `mirage-lsd eval`)
  on clips it was trained on (walk.mkv, book.mkv) and on the held-out ones. Equal
  scores mean it generalizes as far as it fits: it underfits.
- one-look net: a 3x3-then-pointwise MLP of the low-res input (frame / downscale, 64
  hidden channels, a residual on the input), trained on that look alone (frames of the
  trained clips, Adam, fixed seed) and scored on the held-out clips after bilinear
  enlargement; what a net with nothing to share and no context reaches.
- coarse oracle: the target shrunk to the low-res grid and enlarged, that net's ceiling.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from builtin_ceiling import frames_of, print_look_table
from torch import Tensor, nn

from mirage_lsd.engine.stream_engine import StreamEngine
from mirage_lsd.evaluation.evaluate import evaluate
from mirage_lsd.geometry import parse_size
from mirage_lsd.looks.catalog import LOOKS
from mirage_lsd.training.data import DataConfig

TRAINED_CLIPS = ("walk.mkv", "book.mkv")
EVAL_CLIPS = DataConfig().eval_clips
COLUMNS = {
    "model_trained": "model, trained clips",
    "model_held_out": "model, held-out clips",
    "one_look_net": "one-look net, held-out",
    "coarse_oracle": "coarse oracle, held-out",
}


def to_tensor(frames: list[np.ndarray]) -> Tensor:
    """uint8 (H, W, 3) frames -> (N, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def psnr(a: Tensor, b: Tensor) -> float:
    """PSNR of images in [-1, 1] (a peak-to-peak range of 2)."""
    return float(10 * torch.log10(4.0 / (a - b).pow(2).mean()))


def one_look_net(hidden: int = 64) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, hidden, 3, padding=1, padding_mode="replicate"),
        nn.SiLU(),
        nn.Conv2d(hidden, hidden, 1),
        nn.SiLU(),
        nn.Conv2d(hidden, hidden, 1),
        nn.SiLU(),
        nn.Conv2d(hidden, 3, 1),
    )


def fit_one_look(x: Tensor, y: Tensor, x_test: Tensor, steps: int, seed: int = 0) -> Tensor:
    """Train a one-look net on low-res pairs (x, y); return its prediction for `x_test`."""
    torch.manual_seed(seed)
    net = one_look_net()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (16,))
        loss = (net(x[idx]) + x[idx] - y[idx]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return net(x_test) + x_test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mirage-lsd-v1")
    parser.add_argument("--size", default="256x256")
    parser.add_argument("--frames", type=int, default=12, help="frames per clip for the model")
    parser.add_argument("--downscale", type=int, default=4, help="the one-look net's grid")
    parser.add_argument("--steps", type=int, default=1500, help="the one-look net's training")
    parser.add_argument("--media", type=Path, default=Path("../shared/media"))
    args = parser.parse_args()
    size = parse_size(args.size)
    engine = StreamEngine(args.model, device="cpu", max_steps=1, resolution=size, compile=False)
    train_frames = [f for c in TRAINED_CLIPS for f in frames_of(args.media / c, size, 40, 5)]
    test_frames = [f for c in EVAL_CLIPS for f in frames_of(args.media / c, size, 20, 5)]
    h, w = size
    low = (h // args.downscale, w // args.downscale)

    def shrink(x: Tensor) -> Tensor:
        return F.interpolate(x, size=low, mode="area")

    def grow(x: Tensor) -> Tensor:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    x_train, x_test = shrink(to_tensor(train_frames)), shrink(to_tensor(test_frames))
    rows = []
    for name, look in LOOKS.items():
        prompt = look.descriptions[0]
        model = {
            which: statistics.mean(
                evaluate(engine, args.media / c, prompt, args.frames).style_psnr for c in clips
            )
            for which, clips in (("trained", TRAINED_CLIPS), ("held_out", EVAL_CLIPS))
        }
        y_train = shrink(to_tensor([look.render(f) for f in train_frames]))
        target = to_tensor([look.render(f) for f in test_frames])
        prediction = fit_one_look(x_train, y_train, x_test, args.steps)
        row = {
            "look": name,
            "model_trained": model["trained"],
            "model_held_out": model["held_out"],
            "one_look_net": psnr(grow(prediction), target),
            "coarse_oracle": psnr(grow(shrink(target)), target),
        }
        rows.append(row)
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}))
    rows.append({"look": "**mean**", **{k: statistics.mean(r[k] for r in rows) for k in COLUMNS}})
    print()
    print_look_table(rows, COLUMNS)


if __name__ == "__main__":
    main()
