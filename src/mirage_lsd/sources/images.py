"""A folder, glob pattern or single file of still images, read in natural order."""

from __future__ import annotations

import glob
import logging
import os
import re
from pathlib import Path

import cv2
import numpy as np

from mirage_lsd.errors import EndOfStream, UserError
from mirage_lsd.frame import Frame
from mirage_lsd.sources._clock import Pacer
from mirage_lsd.sources.base import Source

PACED_FPS = 30.0  # the rate a folder plays at in live mode, where it stands in for a camera

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})


def natural_key(path: Path) -> list[int | str]:
    """Sort key that puts frame2 before frame10 (digit runs compare as numbers)."""
    parts = re.split(r"([0-9]+)", str(path))
    return [int(part) if i % 2 else part.lower() for i, part in enumerate(parts)]


def is_image(path: Path) -> bool:
    """Whether `path` names an image file this source reads."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def _list_images(spec: str) -> list[Path]:
    path = Path(spec)
    if path.is_dir():
        found = [p for p in path.iterdir() if is_image(p) and p.is_file()]
    elif path.is_file():
        found = [path] if is_image(path) else []
    else:  # a glob pattern; not recursive, so "**" cannot walk a whole disk
        found = [p for p in map(Path, glob.glob(spec)) if is_image(p) and p.is_file()]
    return sorted(found, key=natural_key)


class ImageFolderSource(Source):
    """Still images as frames (png, jpg, jpeg, bmp, webp, tif).

    Unreadable files are skipped and counted in `counters.corrupt_frames`. There is
    no frame rate (`fps` is None) and no pts: the consumer picks the rate; `pace()` (live
    mode) plays them at `PACED_FPS` instead, with pts. `loop=True` starts over after the
    last image (benchmarks).
    """

    def __init__(self, spec: str | os.PathLike[str], loop: bool = False) -> None:
        super().__init__()
        self.spec = os.fspath(spec)
        self.loop = loop
        try:
            self._paths = _list_images(self.spec)
        except (OSError, ValueError) as exc:  # unreadable folder, a name too long
            reason = getattr(exc, "strerror", None) or exc
            raise UserError(f"cannot list images at '{self.spec}': {reason}") from exc
        if not self._paths:
            suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
            raise UserError(f"no images found at '{self.spec}' (looked for {suffixes})")
        self.frame_count = len(self._paths)
        self.image_folders = tuple(sorted({p.parent for p in self._paths}))
        self._position = 0  # next path to read
        self._index = 0
        self._pacer: Pacer | None = None
        # Read the first image now: the size is known at open and an all-broken set fails here.
        self._pending = self._read_next()
        if self._pending is None:
            raise UserError(f"none of the {len(self._paths)} images at '{self.spec}' can be read")
        height, width = self._pending.shape[:2]
        self.size = (height, width)

    def _read_next(self) -> np.ndarray | None:
        """The next readable image of this pass as RGB, or None at the end of the list."""
        while self._position < len(self._paths):
            path = self._paths[self._position]
            self._position += 1
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is not None:
                return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            self.counters.corrupt_frames += 1
            log.warning("skipped unreadable image %s", path)
        return None

    def recv(self) -> Frame:
        image, self._pending = self._pending, None
        if image is None:
            image = self._read_next()
        if image is None and self.loop and self._index > 0:
            self._position = 0
            image = self._read_next()
        if image is None:
            raise EndOfStream
        if self._pacer is None:
            frame = Frame(image, self._index)
        else:
            frame = Frame(image, self._index, self._index / PACED_FPS)
            self.counters.paced_s += self._pacer.wait_until(self._index / PACED_FPS)
        self._index += 1
        return frame

    def pace(self) -> bool:
        if self._pacer is None:
            self._pacer = Pacer(slack_s=1.0 / PACED_FPS)
            self.fps, self.live = PACED_FPS, True
        return True

    def interrupt(self) -> None:
        if self._pacer is not None:
            self._pacer.interrupt()

    def close(self) -> None:
        self._position = len(self._paths)
        self.loop = False
