"""Studio glass-to-glass latency: fake camera -> WebRTC -> model -> WebRTC -> page.

Chromium's fake camera plays a clip with a 16-bit frame counter drawn into its top
rows; the page reads the counter on its input preview and on the output video
(requestVideoFrameCallback), so latency = output display time - camera capture time
of the same frame. `--sessions N` opens N pages at once (one session each) and reports
each one's FPS. The counter must survive the look: pick one that keeps black and
white apart (night vision does), or `--strength 0` (the model still runs on every
frame; its output is blended away). Needs chromium and `npm ci --prefix tests/browser`.

    python benchmarks/studio.py ../shared/media/walk.mkv --model mirage-lsd-v1 \
        --prompt "night vision goggles" --size 512x512 --seconds 20 --sessions 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import av
import numpy as np
import uvicorn

from mirage_lsd.server.app import create_app
from mirage_lsd.server.settings import ServerSettings

BITS, BLOCK = 16, 20  # the counter: 16 blocks of 20x20 pixels along the top
GLASS = Path(__file__).resolve().parents[1] / "tests" / "browser" / "glass.mjs"


def write_counter_clip(src: str, dst: Path, size: tuple[int, int], fps: int, frames: int) -> None:
    """A y4m of `frames` frames of `src` at `size` (W, H), each with its index drawn in."""
    width, height = size
    with av.open(src) as container, dst.open("wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for index, frame in enumerate(container.decode(video=0)):
            if index >= frames:
                break
            rgb = frame.to_ndarray(format="rgb24", width=width, height=height)
            for bit in range(BITS):
                on = (index >> (BITS - 1 - bit)) & 1
                rgb[:BLOCK, bit * BLOCK : (bit + 1) * BLOCK] = 255 if on else 0
            yuv = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            out.write(b"FRAME\n" + np.ascontiguousarray(yuv.to_ndarray()).tobytes())


def serve(settings: ServerSettings) -> tuple[uvicorn.Server, str]:
    sock = socket.socket()
    sock.bind((settings.host, 0))
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="bench-uvicorn")
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{sock.getsockname()[1]}"


def percentile(values: list[float], q: float) -> float | None:
    return round(values[round(q * (len(values) - 1))], 1) if values else None


def session_report(result: dict) -> dict:
    """One page's numbers: FPS it displayed, glass-to-glass percentiles, server stats."""
    lat = sorted(result["latencies_ms"])
    stats = result["stats"] or {}
    return {
        "matched_frames": len(lat),
        "output_fps_page": round(result["output_frames"] / result["seconds"], 1),
        "glass_to_glass_ms": {
            "p50": percentile(lat, 0.5),
            "p95": percentile(lat, 0.95),
            "min": lat[0] if lat else None,
            "from": "camera capture" if result["capture_times"] else "input preview display",
        },
        "preview_to_output_ms_p50": percentile(sorted(result["from_preview_ms"]), 0.5),
        "server": {
            "fps": stats.get("fps"),
            "ttff_ms": stats.get("ttff_ms"),
            "latency_ms": stats.get("latency_ms"),
            "drop_ratio": stats.get("drop_ratio"),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input")
    parser.add_argument("--size", default="512x512")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--model", default="mirage-lsd-v1")
    parser.add_argument("--prompt", default=None)
    parser.add_argument("--strength", type=float, default=None)
    parser.add_argument("--sessions", type=int, default=1)
    parser.add_argument("--screenshot", type=Path, default=None, help="PNG of the first page")
    parser.add_argument("--chromium", default=os.environ.get("CHROMIUM", "/usr/bin/chromium"))
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    node = shutil.which("node")
    if node is None:
        raise SystemExit("node not found: apt-get install -y nodejs npm")
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "counter.y4m"
        write_counter_clip(args.input, clip, (width, height), args.fps, frames=10 * args.fps)
        settings = ServerSettings(model=args.model, max_sessions=max(args.sessions, 1))
        server, url = serve(settings)
        try:
            cfg = {
                "url": url,
                "chromium": args.chromium,
                "y4m": str(clip),
                "seconds": args.seconds,
                "prompt": args.prompt,
                "strength": args.strength,
                "sessions": args.sessions,
                "screenshot": str(args.screenshot.resolve()) if args.screenshot else None,
            }
            run = subprocess.run(
                [node, str(GLASS), json.dumps(cfg)],
                capture_output=True,
                text=True,
                cwd=GLASS.parent,
                timeout=args.seconds + 60 + 30 * args.sessions,
            )
        finally:
            server.should_exit = True
    result = json.loads(run.stdout.strip().splitlines()[-1])
    if "error" in result:
        raise SystemExit(result["error"])
    report = {
        "size": args.size,
        "model": args.model,
        "prompt": args.prompt,
        "strength": args.strength,
        "seconds": args.seconds,
        "sessions": [session_report(r) for r in result["sessions"]],
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "load_avg": os.getloadavg(),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
