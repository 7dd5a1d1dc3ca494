"""Engine overhead: `mirage-lsd bench` with the identity model, repeated, medians reported.

With the identity model the model stage costs nothing, so the bench latency
(capture -> output ready, every frame captured the moment the pipeline can take
it) is the engine's own cost: preprocess, hand-offs and postprocess.

    python benchmarks/engine_overhead.py ../shared/media/bottle-detection.mp4 --size 1280x720
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
from datetime import date


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input")
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    runs = []
    for _ in range(args.repeats):
        cmd = [
            sys.executable,
            "-m",
            "mirage_lsd.cli.app",
            "bench",
            args.input,
            "--model",
            "identity",
            "--size",
            args.size,
            "--frames",
            str(args.frames),
            "--json",
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        runs.append(json.loads(out))

    def med(get):  # type: ignore[no-untyped-def]
        return round(statistics.median(get(r) for r in runs), 3)

    summary = {
        "date": date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {_cpus()} CPUs",
        "input": args.input,
        "size": args.size,
        "frames": args.frames,
        "repeats": args.repeats,
        "fps": med(lambda r: r["fps"]),
        "overhead_p50_ms": med(lambda r: r["latency_ms"]["p50"]),
        "overhead_p95_ms": med(lambda r: r["latency_ms"]["p95"]),
        "overhead_p99_ms": med(lambda r: r["latency_ms"]["p99"]),
        "stages_median_ms": {
            k: med(lambda r, k=k: r["stages_ms"][k]) for k in runs[0]["stages_ms"]
        },
        "stages_p95_ms": {
            k: med(lambda r, k=k: r["stages_p95_ms"][k]) for k in runs[0]["stages_p95_ms"]
        },
    }
    print(json.dumps(summary, indent=2))


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
