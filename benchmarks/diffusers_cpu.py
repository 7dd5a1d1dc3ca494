"""Diffusers backend on CPU: the tiny SD pipeline through the engine vs bare UNet + VAE calls.

The tiny pipeline (tests/diffusers_tiny.py: random weights, 32/64-channel UNet, tiny
TAESD) costs little, so the difference between the two timings is what the backend
and the engine add per frame: numpy <-> tensor, similarity check, scheduling, prompt
schedule, fit/pad/crop. Run it only on an idle machine (check `top -bn1`).

    python benchmarks/diffusers_cpu.py --sizes 256 512 --frames 50 --threads 2
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from diffusers_tiny import save_tiny_sd, save_tiny_taesd

from mirage_lsd.engine.stream_engine import StreamEngine
from mirage_lsd.models.diffusers_backend import (
    DiffusersOptions,
    load_diffusers_model,
)
from mirage_lsd.models.registry import LoadOptions


def _median_ms(fn, frames: int, warmup: int = 3) -> float:  # type: ignore[no-untyped-def]
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(frames):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return round(statistics.median(times), 2)


def bench_size(folder: Path, taesd: Path, size: int, frames: int, steps: int) -> dict[str, float]:
    options = DiffusersOptions(vae=str(taesd), strength=0.5)
    model = load_diffusers_model(str(folder), LoadOptions(device="cpu"), options)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    # 1. through the engine: fit, pad, prompt schedule, model.step, crop
    engine = StreamEngine(model=model, prompt="a watercolor", device="cpu", max_steps=steps)
    engine_ms = _median_ms(lambda: engine.process(image), frames)
    # 2. bare calls: the same encode, `steps` UNet calls and decode on prepared tensors
    m = model
    cond = m.encode_prompt("a watercolor").embeds
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    t = torch.tensor([499])

    @torch.inference_mode()
    def bare() -> None:
        z = m.vae.encode(x).latents
        for _ in range(steps):
            z = m.unet(z, t, encoder_hidden_states=cond, return_dict=False)[0]
        m.vae.decode(z)

    bare_ms = _median_ms(bare, frames)
    return {
        "engine_ms": engine_ms,
        "bare_ms": bare_ms,
        "overhead_ms": round(engine_ms - bare_ms, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_tiny_sd(Path(tmp) / "sd")
        taesd = save_tiny_taesd(Path(tmp) / "taesd")
        for size in args.sizes:
            results[f"{size}x{size}"] = bench_size(folder, taesd, size, args.frames, args.steps)
    print(
        json.dumps(
            {
                "date": date.today().isoformat(),
                "machine": f"{platform.processor() or platform.machine()}, threads {args.threads}",
                "torch": torch.__version__,
                "steps": args.steps,
                "frames": args.frames,
                "results": results,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
