"""Speed of the built-in model through the engine, its FLOPs, and how much of the CPU it uses.

    python benchmarks/builtin_speed.py ../shared/media/bottle-detection.mp4

1. FLOPs of one 1-step frame (torch's FlopCounterMode: convolutions and matmuls).
2. The machine's convolution throughput: a dense 3x3 convolution, 64 -> 64 channels,
   fp32, on torch's default threads (every core); GFLOP/s = FLOPs / median time.
3. `mirage-lsd bench INPUT --model mirage-lsd-v1 --size SIZE --steps N --json` for each
   variant (alternating, so all see the same machine), repeated; medians over the
   repeats of FPS and latency percentiles, and each variant's FPS over the first's.
   Variants: `eager`, `compiled` (--compile), either with `:dsN` (--downscale N; without
   it the model picks its downscale, e.g. 5 at 1280x720), `:tN` (--threads N; without it
   the model's choice, one fewer than the cores on CPU) and/or `@MODEL` (another model
   or weight file than --model: two networks side by side, e.g. `compiled@wide.safetensors`).
The model's share of the machine: FLOPs per frame / model-stage median time, over (2).
Run it alone: anything else on the CPU changes every number.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import date

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from mirage_lsd.models.registry import LoadOptions, load_model


def model_flops(
    model_name: str, height: int, width: int, steps: int, downscale: int | None
) -> float:
    """FLOPs of one frame (after the first, so the history path is on)."""
    model = load_model(model_name, LoadOptions(compile=False, downscale=downscale))
    cond = model.encode_prompt("pencil sketch")
    state = model.init_state(height, width)
    frame = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    _, state = model.step(frame, cond, state, steps)
    with FlopCounterMode(display=False) as counter:
        model.step(frame, cond, state, steps)
    return float(counter.get_total_flops())


def conv_throughput(repeats: int = 20) -> float:
    """GFLOP/s of a dense 3x3 fp32 convolution, 64 -> 64 channels, on 1x64x180x320."""
    conv = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False).eval()
    x = torch.randn(1, 64, 180, 320)
    flops = 2 * 64 * 64 * 9 * 180 * 320
    times = []
    with torch.inference_mode():
        for _ in range(3):
            conv(x)
        for _ in range(repeats):
            t0 = time.perf_counter()
            conv(x)
            times.append(time.perf_counter() - t0)
    return flops / statistics.median(times) / 1e9


def parse_variant(variant: str, default_model: str) -> tuple[bool, int | None, int | None, str]:
    """'eager' or 'compiled', optionally ':dsN', ':tN' and '@MODEL' -> (compiled,
    downscale, threads, model)."""
    spec, _, model = variant.partition("@")
    kind, *options = spec.split(":")
    found: dict[str, str] = {}
    for option in options:
        key = "ds" if option.startswith("ds") else option[:1]
        found[key] = option[len(key) :]
    if (
        kind not in ("eager", "compiled")
        or not set(found) <= {"ds", "t"}
        or len(found) != len(options)
        or not all(v.isdigit() for v in found.values())
    ):
        raise SystemExit(
            f"unknown variant {variant!r}: eager or compiled, optionally :dsN, :tN and @MODEL"
        )
    number = lambda key: int(found[key]) if key in found else None  # noqa: E731
    return kind == "compiled", number("ds"), number("t"), model or default_model


def bench(model: str, source: str, size: str, steps: int, frames: int, variant: str) -> dict:
    compiled, downscale, threads, model = parse_variant(variant, model)
    cmd = [
        sys.executable, "-m", "mirage_lsd.cli.app", "bench", source, "--model", model,
        "--size", size, "--steps", str(steps), "--frames", str(frames), "--json",
    ]  # fmt: skip
    cmd.append("--compile" if compiled else "--no-compile")
    if downscale is not None:
        cmd += ["--downscale", str(downscale)]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def _medians(runs: list[dict]):  # type: ignore[no-untyped-def]
    def med(get):  # type: ignore[no-untyped-def]
        return round(statistics.median(get(r) for r in runs), 2)

    return med


def _row(runs: list[dict], size: str, steps: int, variant: str, gflop: float, conv: float) -> dict:
    med = _medians(runs)
    model_ms = med(lambda r: r["stages_ms"]["model"])
    return {
        "size": size,
        "steps": steps,
        "variant": variant,
        "fps": med(lambda r: r["fps"]),
        "latency_p50_ms": med(lambda r: r["latency_ms"]["p50"]),
        "latency_p95_ms": med(lambda r: r["latency_ms"]["p95"]),
        "model_ms": model_ms,
        "stages_ms": {k: med(lambda r, k=k: r["stages_ms"][k]) for k in runs[0]["stages_ms"]},
        "dtype": runs[0]["dtype"],
        "model_threads": runs[0]["threads"],
        "gflop_per_frame": round(gflop, 3),
        "model_gflops": round(gflop / (model_ms / 1000), 1),
        "share_of_conv_throughput": round(gflop / (model_ms / 1000) / conv, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input")
    parser.add_argument("--model", default="mirage-lsd-v1")
    parser.add_argument("--sizes", nargs="+", default=["1280x720", "512x512"])
    parser.add_argument("--steps", type=int, nargs="+", default=[1])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=["eager", "compiled"])
    args = parser.parse_args()
    for variant in args.variants:
        parse_variant(variant, args.model)  # fail before measuring anything
    threads = torch.get_num_threads()
    conv_gflops = conv_throughput()
    rows = []
    for size in args.sizes:
        width, height = (int(v) for v in size.split("x"))
        for steps in args.steps:
            gflop = {}
            for v in args.variants:
                _, downscale, _, model = parse_variant(v, args.model)
                gflop[v] = model_flops(model, height, width, steps, downscale) / 1e9
            runs: dict[str, list[dict]] = {v: [] for v in args.variants}
            for _ in range(args.repeats):  # alternate the variants
                for variant in args.variants:
                    result = bench(args.model, args.input, size, steps, args.frames, variant)
                    runs[variant].append(result)
            fps = {}
            for variant, vruns in runs.items():
                row = _row(vruns, size, steps, variant, gflop[variant], conv_gflops)
                fps[variant] = row["fps"]
                rows.append(row)
                print(json.dumps(row), flush=True)
            first = args.variants[0]
            ratios = {f"{v}_over_{first}": round(fps[v] / fps[first], 2) for v in args.variants[1:]}
            print(json.dumps({"size": size, "steps": steps, **ratios}))
    summary = {
        "date": date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "torch_threads": threads,
        "conv3x3_gflops": round(conv_gflops, 1),
        "input": args.input,
        "frames": args.frames,
        "repeats": args.repeats,
        "rows": rows,
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
