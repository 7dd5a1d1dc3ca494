"""Quality of a model on every look, on clips never trained on (`mirage-lsd eval` per look).

    python benchmarks/builtin_quality.py --model mirage-lsd-v1 --size 512x512 --steps 1 4
    python benchmarks/builtin_quality.py --size 1280x720 --frames 12 --steps 1 --downscale 4

Prints one row per (look, steps) and the averages, as JSON lines and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from mirage_lsd.engine.stream_engine import StreamEngine
from mirage_lsd.evaluation.evaluate import evaluate
from mirage_lsd.geometry import parse_size
from mirage_lsd.looks.catalog import LOOKS
from mirage_lsd.training.data import DataConfig

EVAL_CLIPS = DataConfig().eval_clips  # held out of training
KEYS = (
    "style_psnr",
    "style_ssim",
    "identity_psnr",
    "warp_error",
    "warp_error_target",
    "warp_error_input",
    "drift_db",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mirage-lsd-v1")
    parser.add_argument("--size", default="512x512")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--media", type=Path, default=Path("../shared/media"))
    parser.add_argument("--downscale", type=int, default=None, help="default: the model's choice")
    args = parser.parse_args()
    rows = []
    for steps in args.steps:
        engine = StreamEngine(
            args.model,
            device="cpu",
            max_steps=steps,
            resolution=parse_size(args.size),
            downscale=args.downscale,
            compile=False,
        )
        for name, look in LOOKS.items():
            per_clip = [
                evaluate(engine, args.media / clip, look.descriptions[0], args.frames)
                for clip in EVAL_CLIPS
            ]
            row = {"look": name, "steps": steps, "resolved": [r.look for r in per_clip]}
            for key in KEYS:
                row[key] = round(statistics.mean(getattr(r, key) for r in per_clip), 3)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(
        "\n| look | steps | style PSNR | SSIM | identity PSNR | warp err | warp err target"
        " | drift dB |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['look']} | {r['steps']} | {r['style_psnr']:.2f} | {r['style_ssim']:.3f} | "
            f"{r['identity_psnr']:.2f} | {r['warp_error']:.2f} | {r['warp_error_target']:.2f} | "
            f"{r['drift_db']:+.2f} |"
        )
    for steps in args.steps:
        sel = [r for r in rows if r["steps"] == steps]
        means = {k: round(statistics.mean(r[k] for r in sel), 3) for k in KEYS}
        print(f"\nmean over {len(sel)} looks at {steps} step(s): {json.dumps(means)}")


if __name__ == "__main__":
    main()
