"""Where output frames go: a video file, a PNG folder, a window, a virtual camera, a stream.

`open_sink` turns the CLI's OUTPUT string into a sink. The sink classes are imported
on first use (PEP 562), so importing this package loads neither PyAV, OpenCV, pygame
nor pyvirtualcam.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from mirage_lsd.errors import UserError
from mirage_lsd.sinks.base import Sink

if TYPE_CHECKING:
    from mirage_lsd.sinks.image_folder import ImageFolderSink
    from mirage_lsd.sinks.network import StreamPushSink
    from mirage_lsd.sinks.null import NullSink
    from mirage_lsd.sinks.video_file import VideoFileSink
    from mirage_lsd.sinks.virtualcam import VirtualCameraSink
    from mirage_lsd.sinks.window import WindowSink

__all__ = [
    "ImageFolderSink",
    "NullSink",
    "Sink",
    "StreamPushSink",
    "VideoFileSink",
    "VirtualCameraSink",
    "WindowSink",
    "is_live_output",
    "open_sink",
]

_LAZY = {
    "ImageFolderSink": "image_folder",
    "NullSink": "null",
    "StreamPushSink": "network",
    "VideoFileSink": "video_file",
    "VirtualCameraSink": "virtualcam",
    "WindowSink": "window",
}

# Defined here so that parsing a spec imports no sink module.
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm")
STREAM_SCHEMES = ("rtmp", "srt", "rtsp")
_HELP = (
    f"use a video file ({' '.join(VIDEO_SUFFIXES)}), a folder for PNG frames, "
    f"window, virtualcam, null, or a {' / '.join(s + '://' for s in STREAM_SCHEMES)} URL"
)


def __getattr__(name: str) -> object:
    if name in _LAZY:
        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_sink(
    spec: str | os.PathLike[str],
    *,
    size: tuple[int, int],
    fps: float,
    live: bool = False,
    audio_from: Path | None = None,
) -> Sink:
    """Open the sink that OUTPUT `spec` names, for frames of `size` (h, w) at `fps`."""
    text = os.fspath(spec)
    if not isinstance(spec, os.PathLike):
        keyword = text.strip().lower()
        if keyword == "null":
            return __getattr__("NullSink")()
        if keyword == "window":
            return __getattr__("WindowSink")(size)
        if keyword == "virtualcam":
            return __getattr__("VirtualCameraSink")(size, fps)
        if "://" in text:
            scheme = text.split("://", 1)[0].lower()
            if scheme not in STREAM_SCHEMES:  # not the URL itself: it may hold a password
                raise UserError(f"cannot write to a {scheme}:// URL: unsupported scheme; {_HELP}")
            return __getattr__("StreamPushSink")(text, size, fps)
    if not text.strip():
        raise UserError(f"no output given: {_HELP}")
    path = Path(os.path.expanduser(text))  # Path.expanduser raises on an unknown ~user
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return __getattr__("VideoFileSink")(path, size, fps, live=live, audio_from=audio_from)
    if suffix and not path.is_dir():
        raise UserError(f"cannot write to {path}: unknown extension {suffix}; {_HELP}")
    return __getattr__("ImageFolderSink")(path, size)


def is_live_output(spec: str | os.PathLike[str] | Sink) -> bool:
    """Whether OUTPUT `spec` is watched as it plays (see `Sink.live`), without opening it:
    a window, a virtual camera or a stream URL; files and folders are not."""
    if isinstance(spec, Sink):
        return spec.live
    if not isinstance(spec, str):  # a path, or a wrong type that open_sink refuses
        return False
    return spec.strip().lower() in ("window", "virtualcam") or "://" in spec
