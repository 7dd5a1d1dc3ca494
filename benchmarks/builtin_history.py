"""Ablation: what the warped-history input adds to `mirage-lsd-v1`, look by look.

    python benchmarks/builtin_history.py --size 512x512 --frames 30

Every look is evaluated (`mirage-lsd eval` metrics) on the held-out clips twice with the
same weights: as shipped, and with the history input blanked every frame (the previous
output is not fed and its mask says "no history", as after a cut in training; the
temporal KV cache is kept). Prints JSON lines and the means of both.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from torch import Tensor

import mirage_lsd.models.builtin.model as builtin_model
from mirage_lsd.engine.stream_engine import StreamEngine
from mirage_lsd.evaluation.evaluate import evaluate
from mirage_lsd.geometry import parse_size
from mirage_lsd.looks.catalog import LOOKS
from mirage_lsd.training.data import DataConfig

KEYS = ("style_psnr", "warp_error", "warp_error_target", "drift_db")
shipped_warp = builtin_model.warp


def blank_history(image: Tensor, flow: Tensor) -> tuple[Tensor, Tensor]:
    """The model's warp, replaced by "there is no history" (zeros and a zero mask)."""
    warped, mask = shipped_warp(image, flow)
    return torch.zeros_like(warped), torch.zeros_like(mask)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mirage-lsd-v1")
    parser.add_argument("--size", default="512x512")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--media", type=Path, default=Path("../shared/media"))
    args = parser.parse_args()
    means = {}
    for variant, warp in (("shipped", shipped_warp), ("history blanked", blank_history)):
        builtin_model.warp = warp
        rows = []
        engine = StreamEngine(
            args.model, device="cpu", max_steps=1, resolution=parse_size(args.size), compile=False
        )
        for clip in DataConfig().eval_clips:
            for look in LOOKS.values():
                result = evaluate(engine, args.media / clip, look.descriptions[0], args.frames)
                row = {"variant": variant, "clip": clip, "look": look.name}
                row |= {k: round(getattr(result, k), 3) for k in KEYS}
                print(json.dumps(row), flush=True)
                rows.append(row)
        means[variant] = {k: round(statistics.mean(r[k] for r in rows), 3) for k in KEYS}
    for variant, mean in means.items():
        print(f"mean over looks and clips, {variant}: {json.dumps(mean)}")


if __name__ == "__main__":
    main()
