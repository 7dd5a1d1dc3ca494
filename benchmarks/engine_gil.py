"""What a model step that holds the GIL costs the engine's other threads: a worst case.

The engine decodes the next frame on its capture thread while the inference thread runs
the model; both need the GIL. A pure-Python step (`--busy-ms` of it per frame) holds it
throughout: a real step holds it less (each torch op lets it go while it runs), so this
bounds the effect from above. Reported in bench mode on a real clip: the step alone, the
model, preprocess and postprocess stages (all on the inference thread), the decode
stage, and the frame period (1000 / FPS). If decode overlapped the model fully, the
period would be the inference thread's stages; the excess is the GIL's doing.

    python benchmarks/engine_gil.py ../shared/media/bottle-detection.mp4 --busy-ms 0 3 6
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from mirage_lsd.engine.stream_engine import StreamEngine
from mirage_lsd.geometry import parse_size
from mirage_lsd.models.base import Conditioning, State
from mirage_lsd.models.identity import IdentityModel
from mirage_lsd.sources import open_source


class BusyModel(IdentityModel):
    """The identity model after `ms` of pure-Python work, which holds the GIL throughout."""

    def __init__(self, ms: float) -> None:
        super().__init__()
        self.ms = ms

    def step(
        self, image: np.ndarray, cond: Conditioning, state: State, steps: int
    ) -> tuple[np.ndarray, State]:
        end = time.perf_counter() + self.ms / 1000.0
        while time.perf_counter() < end:
            pass
        return image, state


def measure(clip: str, size: tuple[int, int], ms: float, frames: int) -> dict[str, float]:
    model = BusyModel(ms)
    image = np.zeros((*size, 3), np.uint8)  # size: (height, width)
    alone = []
    for _ in range(100):
        t0 = time.perf_counter()
        model.step(image, None, None, 1)
        alone.append((time.perf_counter() - t0) * 1000.0)
    engine = StreamEngine(model, resolution=size)
    engine.start(open_source(clip, loop=True), output="null", mode="bench", max_frames=frames)
    stats = engine.wait()
    return {
        "busy_ms": ms,
        "step_alone_ms": round(statistics.median(alone), 3),
        "model_stage_ms": stats.stages_ms["model"],
        "decode_ms": stats.stages_ms["decode"],
        "preprocess_ms": stats.stages_ms["preprocess"],
        "postprocess_ms": stats.stages_ms["postprocess"],
        "period_ms": round(1000.0 / stats.fps, 3),
        "fps": round(stats.fps, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input")
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--busy-ms", type=float, nargs="+", default=[0.0, 3.0, 6.0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    size = parse_size(args.size)
    for ms in args.busy_ms:
        runs = [measure(args.input, size, ms, args.frames) for _ in range(args.repeats)]
        row = {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}
        print(json.dumps({"size": args.size, "repeats": args.repeats, **row}), flush=True)


if __name__ == "__main__":
    main()
