"""Our engine vs StreamDiffusion 0.1.1 on CPU: same tiny SD weights, frames, size and steps.

Both sides load the tiny pipeline of tests/diffusers_tiny.py (random weights) with its
tiny TAESD, run one step at t_index 32 of the 50-step grid (timestep 359), no guidance,
no similarity filter, float32 (ours autocasts to bfloat16 on CPUs with AMX: then
try --theirs-dtype bf16 too), the same prompt, and the same frames of walk.mkv (center
square, resized to the size). Each frame is timed end to end after warm-up: uint8 RGB
numpy in, uint8 RGB numpy out (ours: `StreamEngine.process`; StreamDiffusion: PIL in,
`stream(image)`, `postprocess_image`, numpy out). Runs alternate, the order flipped each
repeat, so drift on a noisy machine hits both sides. StreamDiffusion pins diffusers 0.24,
so it runs in its own venv through benchmarks/streamdiffusion_side.py. Run on an idle
machine (check `top -bn1`); the ratio is StreamDiffusion ms / our ms (above 1: we are faster).
Our side can run in several configurations in the same alternation, each
`--ours NAME=OPTIONS` with StreamEngine model options and `compile` (for example
`--ours exact= --ours fast=kv_downsample=2,compile=1`): StreamDiffusion's own options
that apply on a CPU (none of its accelerations do) are already at their fastest here.

    python3 -m venv /tmp/sdvenv
    /tmp/sdvenv/bin/pip install torch==2.13.0 streamdiffusion==0.1.1 "huggingface_hub<0.26"
    python benchmarks/streamdiffusion_compare.py --sizes 256 512 --frames 50 --repeats 3 \
        --threads 2 --ours exact= --ours fast=kv_downsample=2,compile=1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import av
import cv2
import diffusers
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from diffusers_tiny import save_tiny_sd, save_tiny_taesd
from streamdiffusion_side import summarize

from mirage_lsd.device import cpu_has_amx
from mirage_lsd.engine.stream_engine import StreamEngine

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "a watercolor"


def decode_frames(path: Path, size: int, count: int) -> np.ndarray:
    """The first `count` frames of `path`, center-cropped to a square and resized, (N, S, S, 3)."""
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            rgb = frame.to_ndarray(format="rgb24")
            h, w = rgb.shape[:2]
            side = min(h, w)
            top, left = (h - side) // 2, (w - side) // 2
            square = rgb[top : top + side, left : left + side]
            frames.append(cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA))
            if len(frames) == count:
                break
    return np.stack(frames)


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """'fast=kv_downsample=2,compile=1' -> ('fast', {'kv_downsample': 2, 'compile': True})."""
    name, _, rest = text.partition("=")
    options: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        options[key] = value == "1" if key == "compile" else json.loads(value)
    return name, options


def run_ours(
    model: Path,
    taesd: Path,
    frames: np.ndarray,
    t_index: tuple[int, ...],
    variant: dict[str, Any],
    args: argparse.Namespace,
) -> dict[str, float]:
    """One run of our engine: load, warm up (compiling, if asked), time `args.frames` frames."""
    size = frames.shape[1]
    options = {"vae": str(taesd), "t_index_list": t_index}
    options |= {k: v for k, v in variant.items() if k != "compile"}
    with StreamEngine(
        str(model),
        device="cpu",
        max_steps=len(t_index),
        resolution=(size, size),
        prompt=PROMPT,
        model_options=options,
        compile=variant.get("compile", False),
        threads=args.threads,  # as StreamDiffusion gets (OMP_NUM_THREADS)
    ) as engine:
        for i in range(args.warmup):
            engine.process(frames[i % len(frames)])
        times = []
        for i in range(args.warmup, args.warmup + args.frames):
            t0 = time.perf_counter()
            out = engine.process(frames[i % len(frames)])
            times.append((time.perf_counter() - t0) * 1000.0)
    assert out.shape == (size, size, 3) and out.dtype == np.uint8
    return summarize(times)


def run_theirs(
    model: Path,
    taesd: Path,
    npy: Path,
    size: int,
    t_index: tuple[int, ...],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One run of StreamDiffusion in its venv (a fresh process: load, warm up, time)."""
    cmd = [args.python, str(ROOT / "benchmarks" / "streamdiffusion_side.py")]
    cmd += ["--model", str(model), "--taesd", str(taesd), "--input", str(npy)]
    cmd += ["--size", str(size), "--frames", str(args.frames), "--warmup", str(args.warmup)]
    cmd += ["--threads", str(args.threads), "--t-index", ",".join(map(str, t_index))]
    cmd += ["--prompt", PROMPT, "--dtype", args.theirs_dtype]
    threads = str(args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        sys.exit(f"streamdiffusion_side.py failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def med(runs: Sequence[Mapping[str, Any]], key: str) -> float:
    """Median over runs of one per-run figure."""
    return round(statistics.median(float(run[key]) for run in runs), 2)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--t-index", default="32", help="comma-separated, e.g. 32,45")
    parser.add_argument("--input", type=Path, default=ROOT.parent / "shared/media/walk.mkv")
    parser.add_argument("--python", default="/tmp/sdvenv/bin/python", help="StreamDiffusion's")
    parser.add_argument("--theirs-dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--ours", action="append", help="NAME=OPTIONS, repeatable")
    args = parser.parse_args()
    variants = dict(parse_variant(v) for v in args.ours or ["exact="])
    torch.set_num_threads(args.threads)
    t_index = tuple(int(i) for i in args.t_index.split(","))
    results: dict[str, dict[str, Any]] = {}
    theirs_versions: Any = None
    with tempfile.TemporaryDirectory() as tmp:
        model = save_tiny_sd(Path(tmp) / "sd")
        taesd = save_tiny_taesd(Path(tmp) / "taesd")
        for size in args.sizes:
            frames = decode_frames(args.input, size, args.warmup + args.frames)
            npy = Path(tmp) / f"frames_{size}.npy"
            np.save(npy, frames)
            ours: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
            theirs: list[dict[str, Any]] = []
            sides = [*variants, "streamdiffusion"]
            for r in range(args.repeats):
                for side in sides if r % 2 == 0 else sides[::-1]:
                    if side == "streamdiffusion":
                        theirs.append(run_theirs(model, taesd, npy, size, t_index, args))
                    else:
                        run = run_ours(model, taesd, frames, t_index, variants[side], args)
                        ours[side].append(run)
            theirs_versions = theirs[-1]["versions"]
            theirs_ms = med(theirs, "median_ms")
            results[f"{size}x{size}"] = {
                "streamdiffusion_ms": theirs_ms,
                "streamdiffusion_p95_ms": med(theirs, "p95_ms"),
                "streamdiffusion_fps": med(theirs, "fps"),
                "streamdiffusion_runs_ms": [run["median_ms"] for run in theirs],
                "streamdiffusion_timesteps": theirs[-1]["timesteps"],
                "ours": {
                    name: {
                        "options": variants[name],
                        "ms": med(runs, "median_ms"),
                        "p95_ms": med(runs, "p95_ms"),
                        "fps": med(runs, "fps"),
                        "ratio": round(theirs_ms / med(runs, "median_ms"), 3),
                        "runs_ms": [run["median_ms"] for run in runs],
                    }
                    for name, runs in ours.items()
                },
            }
    print(
        json.dumps(
            {
                "date": date.today().isoformat(),
                "machine": f"{cpu_name()}, {os.cpu_count()} cpus, threads {args.threads}",
                "input": args.input.name,
                "frames": args.frames,
                "warmup": args.warmup,
                "repeats": args.repeats,
                "t_index": list(t_index),
                "dtype": {
                    # ours: float32, with bfloat16 autocast on CPUs with AMX
                    "ours": "bfloat16 autocast" if cpu_has_amx() else "float32",
                    "streamdiffusion": args.theirs_dtype,
                },
                "versions": {
                    "ours": {"torch": torch.__version__, "diffusers": diffusers.__version__},
                    "streamdiffusion_venv": theirs_versions,
                },
                "results": results,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
