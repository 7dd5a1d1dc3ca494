"""Write each frame as a numbered PNG: lossless, and easy to inspect or re-encode later."""

from __future__ import annotations

import contextlib
import logging
import re
from os import PathLike
from pathlib import Path

import cv2
import numpy as np

from mirage_lsd.errors import UserError
from mirage_lsd.sinks._video import check_frame
from mirage_lsd.sinks.base import Sink

log = logging.getLogger(__name__)

# Level 1 of 9: PNG stays lossless, and writing is several times faster than the default 3.
_PNG_OPTIONS = [cv2.IMWRITE_PNG_COMPRESSION, 1]
FRAME_NAME = re.compile(r"frame_(\d{6,})\.png")  # what `write` names them, nothing else


class ImageFolderSink(Sink):
    """frame_000000.png, frame_000001.png, ... in `folder`, created if missing."""

    def __init__(self, folder: str | PathLike[str], size: tuple[int, int]) -> None:
        self.folder = Path(folder)
        self.size = size
        self.frames_written = 0
        if self.folder.exists() and not self.folder.is_dir():
            raise UserError(
                f"cannot write frames to {self.folder}: it is a file; give a folder, "
                "or a video file name ending .mp4 .mkv .webm"
            )
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise UserError(f"cannot create folder {self.folder}: {reason}") from exc
        # an earlier run's frames are replaced, as a video file is: each as this run writes
        # its own, and those past its last frame when it ends, so a shorter run does not
        # leave the tail of a longer one behind its frames (nor lose them if it fails early)
        self._earlier = sorted(
            (int(m.group(1)), p) for p in self.folder.glob("frame_*.png")
            if (m := FRAME_NAME.fullmatch(p.name))
        )  # fmt: skip
        if self._earlier:
            log.warning("%s holds %d frames of an earlier run: replacing them", self.folder,
                        len(self._earlier))  # fmt: skip
        log.info("writing PNG frames to %s", self.folder)

    def write(self, image: np.ndarray, pts: float | None) -> None:
        check_frame(image, self.size)
        path = self.folder / f"frame_{self.frames_written:06d}.png"
        if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), _PNG_OPTIONS):
            raise UserError(f"cannot write {path}: is the disk full or the folder read-only?")
        self.frames_written += 1

    def close(self) -> None:
        """Remove the earlier run's frames past this run's last one, once (idempotent)."""
        stale, self._earlier = [p for i, p in self._earlier if i >= self.frames_written], []
        for path in stale:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
