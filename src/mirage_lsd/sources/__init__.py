"""Frame sources, and `open_source()` which turns an INPUT spec into one.

INPUT is read the way the CLI reads it: a camera index (`0`), `screen`,
`screen:N` or `screen:X,Y,W,H`, a stream URL, a folder or glob pattern of images,
an image or video file; from Python also an iterable of RGB arrays.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from mirage_lsd.errors import UserError
from mirage_lsd.sources.base import RetryPolicy, Source, SourceCounters
from mirage_lsd.sources.camera import CameraSource
from mirage_lsd.sources.file import VideoFileSource
from mirage_lsd.sources.images import ImageFolderSource, is_image
from mirage_lsd.sources.iterable import ArraySource
from mirage_lsd.sources.network import NetworkSource, url_scheme
from mirage_lsd.sources.screen import ScreenSource, parse_screen_spec

__all__ = [
    "ArraySource",
    "CameraSource",
    "ImageFolderSource",
    "NetworkSource",
    "RetryPolicy",
    "ScreenSource",
    "Source",
    "SourceCounters",
    "VideoFileSource",
    "open_source",
]

InputSpec = str | int | os.PathLike[str] | Iterable[np.ndarray]


def open_source(
    spec: InputSpec,
    *,
    realtime: bool | None = None,
    loop: bool = False,
    retry: RetryPolicy | None = None,
) -> Source:
    """Open the source that `spec` names.

    `realtime=True` paces a video file or a video on demand (an HTTP file, a finished
    HLS playlist) to its timestamps, as a camera would (default: as fast as it
    decodes). `loop=True` restarts files and image folders at their end. `retry`
    governs reconnection of cameras and streams.
    Bad or missing inputs raise `UserError`.
    """
    # 1. Python objects: camera index or frames
    if isinstance(spec, bool):
        raise UserError(f"unsupported input {spec!r}: give a camera index, path or URL")
    if isinstance(spec, int):
        return CameraSource(spec, retry=retry)
    if not isinstance(spec, str | os.PathLike):
        if isinstance(spec, bytes) or not isinstance(spec, Iterable):
            raise UserError(
                f"unsupported input of type {type(spec).__name__}: give a camera index, path, "
                "URL or an iterable of (H, W, 3) uint8 arrays"
            )
        return ArraySource(spec)
    # 2. strings that name a device or a stream
    text = os.fspath(spec)
    if isinstance(spec, str):
        if re.fullmatch(r"[0-9]+", text):
            return CameraSource(int(text), retry=retry)
        if text == "screen" or text.startswith("screen:"):
            monitor, region = parse_screen_spec(text)
            return ScreenSource(monitor, region)
        if url_scheme(text) is not None:
            return NetworkSource(text, retry=retry, realtime=bool(realtime))
    # 3. paths: image folders and patterns, image and video files
    text = os.path.expanduser(text)  # a quoted "~/clips/*.mp4" reaches us unexpanded
    path = Path(text)
    kind = _path_kind(path)
    # a missing name with * ? [ is an image pattern, unless it names a video ("take [2].mp4")
    wild = any(c in text for c in "*?[")
    pattern = wild and (not path.suffix or is_image(path) or any(c in path.suffix for c in "*?["))
    if kind == "dir" or (kind == "missing" and pattern):
        return ImageFolderSource(text, loop=loop)
    if kind == "missing":
        raise UserError(f"input file not found: {text} (check the path)")
    if is_image(path):
        return ImageFolderSource(text, loop=loop)
    return VideoFileSource(path, realtime=bool(realtime), loop=loop)


def _path_kind(path: Path) -> str:
    """'dir', 'file' (anything else that exists) or 'missing'; unusable names are missing."""
    try:
        if path.is_dir():
            return "dir"
        return "file" if path.exists() else "missing"
    except (OSError, ValueError):  # a name too long, a NUL byte
        return "missing"
