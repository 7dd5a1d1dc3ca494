"""A network output that FFmpeg connects with an I/O timeout, for PyAV to mux into.

PyAV 18 connects an output URL with `avio_open()`: no options, no interrupt callback,
and the GIL held. RTMP's handshake has no timeout of its own, so a server that accepts
the connection and never answers hangs the process for good, deaf to Ctrl-C. Here the
connection is made by libavformat's `avio_open2()`, called through ctypes (which lets
go of the GIL) with `rw_timeout`, which bounds the handshake and every later write;
PyAV's muxer writes into it as into a file.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from pathlib import Path

import av

_AVIO_FLAG_WRITE = 2
#: libavformat major versions whose AVIOContext begins as `_AVIOContext` says (FFmpeg 7, 8).
KNOWN_MAJORS = (61, 62)
_POINTER = ctypes.POINTER(ctypes.c_void_p)


class _AVIOContext(ctypes.Structure):
    """The leading public fields of FFmpeg's AVIOContext, up to `error`, as in FFmpeg 7
    and 8 (which PyAV >= 14 runs on; only a major version may reorder them).
    `avio_write()` returns nothing: a failed write is only told by `error`."""

    _fields_ = (
        ("av_class", ctypes.c_void_p),
        ("buffer", ctypes.c_void_p),
        ("buffer_size", ctypes.c_int),
        ("buf_ptr", ctypes.c_void_p),
        ("buf_end", ctypes.c_void_p),
        ("opaque", ctypes.c_void_p),
        ("read_packet", ctypes.c_void_p),
        ("write_packet", ctypes.c_void_p),
        ("seek", ctypes.c_void_p),
        ("pos", ctypes.c_int64),
        ("eof_reached", ctypes.c_int),
        ("error", ctypes.c_int),
    )


@functools.cache
def _libavformat() -> ctypes.CDLL:
    """The libavformat PyAV runs on: the copy its wheels bundle, else the system's."""
    package = Path(av.__file__).parent
    bundled = sorted(package.parent.glob("av.libs/*avformat*")) + sorted(
        package.glob(".dylibs/*avformat*")  # macOS wheels
    )
    name = str(bundled[0]) if bundled else ctypes.util.find_library("avformat")
    if name is None:
        raise OSError("libavformat not found")
    lib = ctypes.CDLL(name)
    major = lib.avformat_version() >> 16  # a system copy may not be the one PyAV runs on
    if major != av.library_versions["libavformat"][0] or major not in KNOWN_MAJORS:
        raise OSError(f"{name} is libavformat {major}, not PyAV's")
    lib.av_dict_set.argtypes = (_POINTER, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int)
    lib.av_dict_free.argtypes = (_POINTER,)
    lib.av_dict_free.restype = None
    lib.avio_open2.argtypes = (_POINTER, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p, _POINTER)
    lib.avio_write.argtypes = (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int)
    lib.avio_write.restype = None
    lib.avio_flush.argtypes = (ctypes.c_void_p,)
    lib.avio_flush.restype = None
    lib.avio_closep.argtypes = (_POINTER,)
    return lib


def available() -> bool:
    """Whether `TimedConnection` can be used here: a libavformat of a known layout, loadable.

    Elsewhere (a newer FFmpeg, a PyAV built on an unfindable system library) the caller
    connects through PyAV as before, without the timeout, rather than not at all.
    """
    if av.library_versions.get("libavformat", (0,))[0] not in KNOWN_MAJORS:
        return False
    try:
        _libavformat()
    except OSError:
        return False
    return True


class TimedConnection:
    """A write-only connection to `url` whose reads and writes give up after `timeout_s`.

    A file-like object for `av.open(connection, "w", format=...)`. Failures raise
    `av.FFmpegError` (`av.error.TimeoutError` for a peer that went quiet), naming `name`.
    """

    def __init__(self, url: str, timeout_s: float, name: str) -> None:
        self._lib = _libavformat()
        self._name = name
        self._pb = ctypes.c_void_p()
        options = ctypes.c_void_p()
        microseconds = str(round(timeout_s * 1e6)).encode()
        self._lib.av_dict_set(ctypes.byref(options), b"rw_timeout", microseconds, 0)
        try:
            ret = self._lib.avio_open2(
                ctypes.byref(self._pb), url.encode(), _AVIO_FLAG_WRITE, None, ctypes.byref(options)
            )
        finally:
            self._lib.av_dict_free(ctypes.byref(options))
        av.error.err_check(ret, name)

    def write(self, data: bytes) -> int:
        """Send `data` now (PyAV hands over whole packets; a live stream must not wait)."""
        if not self._pb:
            raise ValueError(f"{self._name}: write after close")
        self._lib.avio_write(self._pb, data, len(data))
        self._lib.avio_flush(self._pb)
        av.error.err_check(_AVIOContext.from_address(self._pb.value).error, self._name)
        return len(data)

    def close(self) -> None:
        """Flush and hang up; safe to call twice."""
        if self._pb:
            av.error.err_check(self._lib.avio_closep(ctypes.byref(self._pb)), self._name)
