"""Where one frame of the built-in model spends its time, without the engine.

    python benchmarks/builtin_profile.py ../shared/media/bottle-detection.mp4 --size 1280x720

Times `BuiltinModel.step` and, by wrapping them, its parts: the network (`sample`), the
guided upsampler, the warp of the history, DIS optical flow and the input conversion.
Medians over the measured frames; `--compile` waits for the compiled network first.
Run it alone: anything else on the CPU changes every number.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import cv2

from mirage_lsd.geometry import parse_size
from mirage_lsd.models.builtin import model as builtin
from mirage_lsd.models.builtin.flow import FlowEstimator
from mirage_lsd.sources import open_source

PARTS = {"sample": "network", "upsample_to_frame": "upsampler", "warp": "warp"}
PARTS |= {"to_tensor": "to tensor"}


def timed(fn: Callable[..., Any], times: list[float]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        result = fn(*args, **kwargs)
        times.append(time.perf_counter() - t0)
        return result

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input")
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--frames", type=int, default=180)
    parser.add_argument("--downscale", type=int, default=None)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    height, width = parse_size(args.size)
    source = open_source(args.input, loop=True)
    images = [cv2.resize(source.recv().image, (width, height)) for _ in range(60)]
    source.close()
    model = builtin.BuiltinModel.from_file(compile=args.compile, downscale=args.downscale)
    cond = model.look_prompt("thermal")
    state = model.init_state(height, width)
    for image in images[:5]:  # fill the KV cache, start the compile
        _, state = model.step(image, cond, state, 1)
    model.wait_ready()
    # wrap the parts (module-level names that `_step` looks up at call time)
    times: dict[str, list[float]] = {label: [] for label in (*PARTS.values(), "optical flow")}
    for name, label in PARTS.items():
        setattr(builtin, name, timed(getattr(builtin, name), times[label]))
    FlowEstimator.__call__ = timed(FlowEstimator.__call__, times["optical flow"])  # type: ignore[method-assign]
    total = []
    for i in range(args.frames):
        t0 = time.perf_counter()
        _, state = model.step(images[i % len(images)], cond, state, 1)
        total.append(time.perf_counter() - t0)
    ms = lambda values: round(statistics.median(values) * 1000, 2)  # noqa: E731
    print(f"{args.size}, downscale {state.downscale}, compiled {args.compile}: step {ms(total)} ms")
    for label, values in times.items():
        print(f"  {label}: {ms(values)} ms")


if __name__ == "__main__":
    main()
