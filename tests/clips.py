"""Damaged clips made from the shared ones, for tests of what a bad input does."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def make_clip_with_a_corrupt_frame(src: Path, dst: Path) -> None:
    """MJPEG in Matroska with one packet of garbage in the middle."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vs = out.add_stream("mjpeg", rate=30)
        vs.width, vs.height, vs.pix_fmt = 640, 480, "yuvj420p"
        for n, frame in enumerate(inp.decode(video=0)):
            if n == 20:
                break
            vf = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")
            vf.pts = n
            for packet in vs.encode(vf.reformat(format="yuvj420p")):
                if n == 10:
                    packet = _garbage_like(packet)
                out.mux(packet)


def _garbage_like(packet: av.Packet) -> av.Packet:
    bad = av.Packet(b"\xff\xd8" + bytes(range(256)) * 4)
    bad.pts, bad.dts, bad.time_base, bad.stream = (
        packet.pts,
        packet.dts,
        packet.time_base,
        packet.stream,
    )
    return bad


def make_clip_with_audio(
    src: Path, dst: Path, seconds: float = 2.0, damaged_packet: int | None = None
) -> int:
    """Re-encode the first `seconds` of `src` with a 440 Hz tone in AAC (its packet number
    `damaged_packet` replaced by garbage); returns its frame count."""
    rate = 44100
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vs = out.add_stream("libx264", rate=30)
        vs.width, vs.height, vs.pix_fmt = 640, 480, "yuv420p"
        aus = out.add_stream("aac", rate=rate)
        aus.layout = "mono"
        n = 0
        for frame in inp.decode(video=0):
            if n >= seconds * 30:
                break
            vf = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")
            vf.pts = n
            out.mux(vs.encode(vf))
            n += 1
        out.mux(vs.encode())
        t = np.arange(int(seconds * rate)) / rate
        tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        packets = 0
        for i in range(0, len(tone), 1024):
            af = av.AudioFrame.from_ndarray(tone[None, i : i + 1024], format="flt", layout="mono")
            af.sample_rate, af.pts, af.time_base = rate, i, Fraction(1, rate)
            for packet in aus.encode(af):
                packets += 1
                out.mux(_garbage_like(packet) if packets == damaged_packet else packet)
        out.mux(aus.encode())
    return n
