"""Diffusers backend on CPU: the tiny SD pipeline through the engine vs bare UNet + VAE calls.

The tiny pipeline (tests/diffusers_tiny.py: random weights, 32/64-channel UNet, tiny
TAESD) costs little, so the difference between the two timings is what the backend
and the engine add per frame: numpy <-> tensor, similarity check, scheduling, prompt
schedule, fit/pad/crop. The two are timed frame by frame in turn (the order flipped
every frame), so a noisy machine slows both alike. Run it on an idle machine.

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
from collections.abc import Callable
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


def interleaved_ms(fns: dict[str, Callable[[], object]], frames: int, warmup: int = 3) -> dict:
    """Median ms per call of each function, calls interleaved (order flipped every round)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(frames):
        for name in list(fns) if i % 2 == 0 else list(fns)[::-1]:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append((time.perf_counter() - t0) * 1000.0)
    return {name: round(statistics.median(ts), 2) for name, ts in times.items()}


def bench_size(
    folder: Path, taesd: Path, size: int, frames: int, steps: int, threads: int
) -> dict[str, float]:
    options = DiffusersOptions(vae=str(taesd), strength=0.5)
    model = load_diffusers_model(str(folder), LoadOptions(device="cpu"), options)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    # 1. through the engine: fit, pad, prompt schedule, model.step, crop
    engine = StreamEngine(
        model=model, prompt="a watercolor", device="cpu", max_steps=steps, threads=threads
    )
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

    ms = interleaved_ms({"engine": lambda: engine.process(image), "bare": bare}, frames)
    return {
        "engine_ms": ms["engine"],
        "bare_ms": ms["bare"],
        "overhead_ms": round(ms["engine"] - ms["bare"], 2),
        "overhead_pct": round(100.0 * (ms["engine"] / ms["bare"] - 1.0), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_tiny_sd(Path(tmp) / "sd")
        taesd = save_tiny_taesd(Path(tmp) / "taesd")
        for size in args.sizes:
            results[f"{size}x{size}"] = bench_size(
                folder, taesd, size, args.frames, args.steps, args.threads
            )
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
