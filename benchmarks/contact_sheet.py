"""Contact sheet of the model card: for every look, input | procedural look | 1 step | 4 steps.

    python benchmarks/contact_sheet.py [--model PATH] [--out IMAGE]

Each output is frame `--frame` of a held-out clip streamed from its start, so the
model's history is warm, as in a live stream.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from mirage_lsd.engine.stream_engine import StreamEngine
from mirage_lsd.geometry import apply_fit, plan_fit
from mirage_lsd.looks.catalog import LOOKS
from mirage_lsd.sources import open_source

COLUMNS = ("input", "look (target)", "1 step", "4 steps")


def clip_frames(path: Path, count: int) -> list[np.ndarray]:
    stream = open_source(path)
    try:
        return [stream.recv().image for _ in range(count)]
    finally:
        stream.close()


def label(tile: np.ndarray, text: str) -> np.ndarray:
    out = tile.copy()
    cv2.rectangle(out, (0, 0), (out.shape[1], 22), (0, 0, 0), -1)
    cv2.putText(out, text, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mirage-lsd-v1")
    parser.add_argument("--clip", type=Path, default=Path("../shared/media/please.mkv"))
    parser.add_argument("--frame", type=int, default=40)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--per-row", type=int, default=2, help="looks side by side")
    parser.add_argument(
        "--out", type=Path, default=Path("docs/images/mirage-lsd-v1-contact-sheet.jpg")
    )
    args = parser.parse_args()
    size = (args.tile, args.tile)
    frames = clip_frames(args.clip, args.frame + 1)
    fitted = apply_fit(frames[-1], plan_fit(frames[-1].shape[:2], size, "crop"))
    engines = {
        steps: StreamEngine(
            args.model, device="cpu", max_steps=steps, resolution=size, compile=False
        )
        for steps in (1, 4)
    }
    tiles = []
    for name, look in LOOKS.items():
        row = [label(fitted, name), label(look.render(fitted), COLUMNS[1])]
        for steps, engine in engines.items():
            engine.set_prompt(look.descriptions[0])
            engine.reset()
            outputs = [engine.process(frame) for frame in frames]
            row.append(label(outputs[-1], f"{steps} step" + ("s" if steps > 1 else "")))
        tiles.append(np.hstack(row))
        print(f"{name}: done", flush=True)
    blank = np.zeros_like(tiles[0])
    while len(tiles) % args.per_row:
        tiles.append(blank)
    rows = [np.hstack(tiles[i : i + args.per_row]) for i in range(0, len(tiles), args.per_row)]
    sheet = np.vstack(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    bgr = cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(args.out), bgr, [cv2.IMWRITE_JPEG_QUALITY, 85])
    print(f"wrote {args.out} ({sheet.shape[1]}x{sheet.shape[0]})")


if __name__ == "__main__":
    main()
