"""Carry a source file's audio into an output file, never running ahead of its video.

The output's video is written frame by frame, so the audio is read from a second
demuxer in step with it: each call muxes the packets that start before the video
written so far ends. A stream cut short (Ctrl-C) therefore ends its audio with its
video instead of playing the rest of the source over a frozen last frame.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
from av.audio.stream import AudioStream
from av.container import InputContainer, OutputContainer

from mirage_lsd.sources._av import video_streams

log = logging.getLogger(__name__)


class AudioCarry:
    """Copies (or, where the container refuses the codec, transcodes) one audio stream."""

    def __init__(self, source: InputContainer, output: OutputContainer) -> None:
        self._source = source
        self._output = output
        self._in: AudioStream = source.streams.audio[0]
        self._offset = _video_start(source)
        self._copy = self._in.codec_context.name in output.supported_codecs
        if self._copy:
            self._out = output.add_stream_from_template(self._in)
        else:
            codec = "aac" if "aac" in output.supported_codecs else "libopus"
            rate = 48000 if codec == "libopus" else self._in.rate
            layout = "stereo" if self._in.channels >= 2 else "mono"
            self._out = output.add_stream(codec, rate=rate, layout=layout)
        log.info(
            "audio from %s: %s %s",
            source.name,
            "copying" if self._copy else "transcoding to",
            self._out.codec_context.name,
        )
        self._packets: Iterator[av.Packet] = source.demux(self._in)
        self._pending: av.Packet | None = None
        self.damaged = 0  # audio packets that did not decode, left out

    @classmethod
    def open(cls, path: Path, output: OutputContainer) -> AudioCarry | None:
        """An `AudioCarry` for the first audio stream of `path`, or None if it has none."""
        try:
            source = av.open(str(path))
        except (av.FFmpegError, OSError) as exc:
            log.warning("not carrying audio: cannot read %s (%s)", path, exc)
            return None
        if not source.streams.audio:
            log.info("%s has no audio to carry", path)
            source.close()
            return None
        try:
            return cls(source, output)
        except BaseException:
            source.close()
            raise

    @property
    def video_start_s(self) -> float:
        """Source time at which its video starts: output time zero, for lip sync."""
        return self._offset

    def mux_until(self, end: float) -> None:
        """Mux the source audio that starts before `end` seconds of output video."""
        while True:
            packet = self._pending if self._pending is not None else self._next_packet()
            self._pending = None
            if packet is None:
                return
            if packet.size == 0:  # the demuxer's end-of-stream marker
                continue
            start = self._start(packet)
            if start is not None and start >= end:
                self._pending = packet
                return
            self._mux(packet)

    def close(self, end: float) -> None:
        """Mux what remains up to `end` seconds, flush the encoder, release the source."""
        try:
            self.mux_until(end)
            if not self._copy:
                self._output.mux(self._out.encode(None))
        finally:
            self.release()

    def release(self) -> None:
        """Close the source without muxing anything more."""
        self._source.close()

    def _next_packet(self) -> av.Packet | None:
        """The source's next audio packet, or None at its end. A demuxing error (a file
        damaged or cut short) ends the audio there: the video goes on, as it does past a
        damaged video packet, and the output keeps the audio read so far."""
        try:
            return next(self._packets, None)
        except av.FFmpegError as exc:
            log.warning("audio from %s ends early: %s", self._source.name, exc)
            self._packets = iter(())
            return None

    def _start(self, packet: av.Packet) -> float | None:
        ts = packet.pts if packet.pts is not None else packet.dts
        if ts is None or packet.time_base is None:
            return None
        return float(ts * packet.time_base) - self._offset

    def _mux(self, packet: av.Packet) -> None:
        if self._copy:
            shift = self._ticks(packet.time_base)
            if packet.pts is not None:
                packet.pts -= shift
            if packet.dts is not None:
                packet.dts -= shift
            packet.stream = self._out
            self._output.mux(packet)
            return
        try:
            frames = self._in.codec_context.decode(packet)
        except av.FFmpegError as exc:  # one damaged packet: a moment of silence, not a failure
            self.damaged += 1
            level = logging.WARNING if self.damaged == 1 else logging.DEBUG
            log.log(level, "audio from %s: a damaged packet left out (%s)", self._source.name, exc)
            return
        for frame in frames:
            if frame.pts is not None:
                frame.pts -= self._ticks(frame.time_base)
                if frame.pts < 0:  # before the first video frame
                    continue
            self._output.mux(self._out.encode(frame))

    def _ticks(self, time_base: Fraction | None) -> int:
        """The video start offset in units of `time_base`."""
        return round(self._offset / time_base) if time_base else 0


def _video_start(source: InputContainer) -> float:
    """Seconds at which the source's video starts: output time zero, for lip sync."""
    videos = video_streams(source)
    if videos:
        video = videos[0]
        if video.start_time is not None and video.time_base is not None:
            return float(video.start_time * video.time_base)
    if source.start_time is not None:
        return source.start_time / av.time_base
    return 0.0
