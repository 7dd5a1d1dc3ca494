"""Output sinks on real frames: files are decoded back with PyAV, streams are received."""

from __future__ import annotations

import glob
import re
import signal
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mirage_lsd.errors import UserError
from mirage_lsd.sinks import (
    ImageFolderSink,
    NullSink,
    Sink,
    StreamPushSink,
    VideoFileSink,
    WindowSink,
    _avio,
    is_live_output,
    open_sink,
)
from mirage_lsd.sinks._video import OfflineClock

FPS = 30
N = 30  # frames written in the round trips
TONE_HZ = 440


def decode(path: Path) -> list[np.ndarray]:
    """Every video frame of `path` as (H, W, 3) uint8 RGB."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def decode_audio(path: Path) -> tuple[np.ndarray, int, float]:
    """(mono samples, sample rate, end time in seconds) of the first audio stream."""
    with av.open(str(path)) as container:
        frames = list(container.decode(audio=0))
    last = frames[-1]
    end = float(last.pts * last.time_base) + last.samples / last.sample_rate
    samples = np.concatenate([f.to_ndarray().reshape(f.samples, -1).mean(axis=1) for f in frames])
    return samples, frames[0].sample_rate, end


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def write_all(sink: Sink, frames: list[np.ndarray]) -> None:
    for i, frame in enumerate(frames):
        sink.write(frame, i / FPS)


@pytest.fixture(scope="module")
def walk(media: Path) -> list[np.ndarray]:
    """All 89 frames of walk.mkv (640x480)."""
    return decode(media / "walk.mkv")


@pytest.fixture(scope="module")
def clip_with_audio(walk: list[np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """walk.mkv's video with a 440 Hz AAC tone of the same length, as a source with audio."""
    path = tmp_path_factory.mktemp("clip") / "walk_tone.mp4"
    rate = 44100
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=FPS, options={"preset": "ultrafast"})
        video.height, video.width = walk[0].shape[:2]
        video.pix_fmt = "yuv420p"
        audio = out.add_stream("aac", rate=rate, layout="mono")
        for i, image in enumerate(walk):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        t = np.arange(rate * len(walk) // FPS) / rate
        tone = (0.3 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)[None]
        for start in range(0, tone.shape[1], 1024):
            chunk = np.ascontiguousarray(tone[:, start : start + 1024])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, start
            out.mux(audio.encode(frame))
        out.mux(video.encode(None))
        out.mux(audio.encode(None))
    return path


# -- video files ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "codec"), [(".mp4", "h264"), (".mkv", "h264"), (".webm", "vp9")]
)
def test_video_file_round_trip(
    walk: list[np.ndarray], tmp_path: Path, suffix: str, codec: str
) -> None:
    path = tmp_path / f"out{suffix}"
    sink = open_sink(path, size=(480, 640), fps=FPS)
    assert isinstance(sink, VideoFileSink)
    write_all(sink, walk[:N])
    sink.close()
    sink.close()  # idempotent

    out = decode(path)
    assert sink.frames_written == len(out) == N
    assert out[0].shape == (480, 640, 3)
    assert max(mean_abs_diff(a, b) for a, b in zip(out, walk[:N], strict=True)) < 4
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == codec
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert stream.average_rate == FPS


def test_live_video_file_is_stamped_by_capture_time_in_order(
    walk: list[np.ndarray], tmp_path: Path
) -> None:
    frames = walk[::8][:10]  # far enough apart to tell which is which
    path = tmp_path / "live.mp4"
    stamps = [0, 0.5, 0.51, 0.2, 0.2, 3, 3, 4, 9, 9.01]  # gaps, and times that go back
    with VideoFileSink(path, size=(480, 640), fps=FPS, live=True) as sink:
        for image, pts in zip(frames, stamps, strict=True):
            sink.write(image, pts)
    out = decode(path)
    assert len(out) == 10
    nearest = [int(np.argmin([mean_abs_diff(o, f) for f in frames])) for o in out]
    assert nearest == list(range(10))  # written order kept
    with av.open(str(path)) as container:
        times = [frame.time for frame in container.decode(video=0)]
    # a time that goes back is moved 1 ms past the last one; gaps are kept
    expected = [0, 0.5, 0.51, 0.511, 0.512, 3, 3.001, 4, 9, 9.01]
    assert times == pytest.approx(expected, abs=0.002)


KILLED_WRITER = """
import os, signal, sys
import av
from mirage_lsd.sinks.video_file import VideoFileSink
clip, out, offline = sys.argv[1], sys.argv[2], sys.argv[3] == "offline"
with av.open(clip) as container:
    frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
sink = VideoFileSink(out, size=frames[0].shape[:2], fps=30, live=not offline)
for i, image in enumerate(frames):
    sink.write(image, i / 30)
os.kill(os.getpid(), signal.SIGKILL)  # no close(): a crash or a kill
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="no SIGKILL on this platform")
@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_a_live_recording_survives_a_kill_but_its_last_second(
    media: Path, walk: list[np.ndarray], tmp_path: Path, suffix: str
) -> None:
    """A live recording is written out each second: a process killed before it could
    close the file leaves the frames of every finished second playable, in order; of a
    plain (offline) MP4 nothing plays."""
    paths = {mode: tmp_path / f"{mode}{suffix}" for mode in ("live", "offline")}
    for mode, path in paths.items():
        child = [sys.executable, "-c", KILLED_WRITER, str(media / "walk.mkv"), str(path), mode]
        assert subprocess.run(child, timeout=120).returncode == -signal.SIGKILL
    kept = decode(paths["live"])
    assert len(walk) - FPS <= len(kept) < len(walk)  # 89 frames written, the last second lost
    nearest = [int(np.argmin([mean_abs_diff(o, f) for f in walk[::10]])) for o in kept[::10]]
    assert nearest == list(range(len(kept[::10])))  # the first frames, in order
    if suffix == ".mp4":
        with pytest.raises(av.FFmpegError):  # what a plain MP4 leaves: nothing to play
            decode(paths["offline"])


def test_offline_file_follows_the_source_times(walk: list[np.ndarray], tmp_path: Path) -> None:
    frames = walk[::8][:8]
    step = 1 / FPS
    # a start offset, a 1 s pause (a variable-rate source), a frame half a step on, a
    # time that goes back (timestamps that restart), a 20 s pause, and no time at all
    stamps = [0.5, 0.5 + step, 1.5, 1.5 + step, 1.5 + 1.5 * step, 0.2, 20.2, None]
    path = tmp_path / "vfr.mp4"
    with VideoFileSink(path, size=(480, 640), fps=FPS) as sink:
        for image, pts in zip(frames, stamps, strict=True):
            sink.write(image, pts)
        assert sink.duration == pytest.approx(34.5 * step + 20.0)
    with av.open(str(path)) as container:
        times = [frame.time for frame in container.decode(video=0)]
    steps = [0, 1, 30, 31, 31.5, 32.5, 32.5 + 20 * FPS, 33.5 + 20 * FPS]
    assert times == pytest.approx([n * step for n in steps], abs=0.001)


@pytest.mark.parametrize("rate", [Fraction(30000, 1001), Fraction(24000, 1001), Fraction(25)])
def test_offline_constant_rate_is_exact(
    walk: list[np.ndarray], tmp_path: Path, rate: Fraction
) -> None:
    """A constant-rate source from its own clock: every frame exactly one step apart."""
    path = tmp_path / "cfr.mp4"
    with VideoFileSink(path, size=(480, 640), fps=float(rate)) as sink:
        for i, image in enumerate(walk[:12]):
            sink.write(image, 7.0 + i / float(rate))
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == rate
        pts = [frame.pts * frame.time_base for frame in container.decode(video=0)]
    assert set(np.diff(pts)) == {1 / rate}


def test_offline_clock_repeated_and_restarted_times() -> None:
    clock = OfflineClock(Fraction(30))
    step = 3000  # ticks of 1/90000 s
    # a repeated time and a slightly early one go just after the last and keep the
    # source's timing for what follows; a restart (1 s or more back) follows on a step
    pts = [10.0, 10.0 + 1 / 30, 10.0 + 1 / 30, 10.0 + 0.5 / 30, 10.0 + 2 / 30, 3.0, 3.0 + 1 / 30]
    ticks = [clock(t) for t in pts]
    assert ticks == [0, step, step + 1, step + 2, 2 * step, 3 * step, 4 * step]
    assert clock(None) == 5 * step
    assert OfflineClock(Fraction(30), origin=9.5)(10.0) == 45000  # counted from the origin


@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_colours_are_converted_and_tagged_as_bt709(tmp_path: Path, suffix: str) -> None:
    red = np.zeros((64, 64, 3), np.uint8)
    red[..., 0] = 255
    path = tmp_path / f"red{suffix}"
    with VideoFileSink(path, size=(64, 64), fps=FPS) as sink:
        write_all(sink, [red] * 3)
    with av.open(str(path)) as container:
        context = container.streams.video[0].codec_context
        frame = next(container.decode(video=0))
    # what players are told: BT.709 matrix, primaries and transfer, limited range (1 each)
    tags = (context.colorspace, context.color_primaries, context.color_trc, context.color_range)
    assert tags == (1, 1, 1, 1)
    # and what was written: pure red has luma 63 with BT.709's matrix (82 with BT.601's)
    luma = frame.to_ndarray(format="yuv420p")[:64]
    assert abs(float(luma.mean()) - 63) < 1.5


def test_an_encoder_that_cannot_start_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mirage_lsd.sinks import video_file

    def no_encoder(*args: object, **kwargs: object) -> None:
        raise av.FFmpegError(22, "Invalid argument")

    monkeypatch.setattr(video_file, "add_video_stream", no_encoder)
    with pytest.raises(UserError, match=r"cannot write .*out\.mp4: Invalid argument"):
        VideoFileSink(tmp_path / "out.mp4", size=(64, 64), fps=FPS)


@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_odd_size_is_padded_to_an_even_one_that_players_decode(
    walk: list[np.ndarray], tmp_path: Path, suffix: str
) -> None:
    frames = [np.ascontiguousarray(image[:241, :321]) for image in walk[:5]]
    path = tmp_path / f"odd{suffix}"
    with VideoFileSink(path, size=(241, 321), fps=FPS) as sink:
        write_all(sink, frames)
    out = decode(path)
    assert len(out) == 5
    assert out[0].shape == (242, 322, 3)  # one row and one column of the edge repeated
    assert mean_abs_diff(out[0][:241, :321], frames[0]) < 4
    assert mean_abs_diff(out[0][241, :321], frames[0][240]) < 6
    assert mean_abs_diff(out[0][:241, 321], frames[0][:, 320]) < 6
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p"


@pytest.mark.parametrize(("suffix", "audio_codec"), [(".mp4", "aac"), (".webm", "opus")])
def test_audio_is_carried_over(
    walk: list[np.ndarray], clip_with_audio: Path, tmp_path: Path, suffix: str, audio_codec: str
) -> None:
    path = tmp_path / f"with_audio{suffix}"
    with VideoFileSink(path, size=(480, 640), fps=FPS, audio_from=clip_with_audio) as sink:
        write_all(sink, walk)

    assert len(decode(path)) == len(walk)
    samples, rate, end = decode_audio(path)
    assert end == pytest.approx(len(walk) / FPS, abs=0.1)
    spectrum = np.abs(np.fft.rfft(samples[rate // 10 : rate // 10 + rate]))  # skip the start
    assert np.argmax(spectrum) == pytest.approx(TONE_HZ, abs=2)  # 1 s of audio: 1 Hz bins
    with av.open(str(path)) as container:
        assert container.streams.audio[0].codec_context.name == audio_codec


def test_interrupted_write_ends_audio_with_video(
    walk: list[np.ndarray], clip_with_audio: Path, tmp_path: Path
) -> None:
    path = tmp_path / "interrupted.mkv"
    sink = VideoFileSink(path, size=(480, 640), fps=FPS, audio_from=clip_with_audio)
    write_all(sink, walk[:10])
    closer = threading.Thread(target=sink.close, name="closer")  # as on Ctrl-C
    closer.start()
    closer.join()
    sink.write(walk[10], None)  # a late frame after close() is dropped

    assert len(decode(path)) == sink.frames_written == 10
    _, _, end = decode_audio(path)
    assert 10 / FPS - 0.05 < end <= 10 / FPS + 0.2


def test_a_failing_audio_stream_stops_the_audio_not_the_video(
    walk: list[np.ndarray],
    clip_with_audio: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The muxer refuses an audio packet (its clock went back where two recordings were
    joined): the carried audio ends there, with a warning, and every video frame is kept."""
    from mirage_lsd.sinks import _audio

    real = _audio.AudioCarry.mux_until
    calls = []

    def refusing(self: _audio.AudioCarry, end_s: float) -> None:
        calls.append(end_s)
        if len(calls) == 15:
            raise av.error.InvalidDataError(1094995529, "non monotonically increasing dts")
        real(self, end_s)

    monkeypatch.setattr(_audio.AudioCarry, "mux_until", refusing)
    path = tmp_path / "joined.mp4"
    sink = VideoFileSink(path, size=(480, 640), fps=FPS, audio_from=clip_with_audio)
    with caplog.at_level("WARNING"), sink:
        write_all(sink, walk)
    assert "the audio stops at 0.5 s" in caplog.text and "without it" in caplog.text
    assert len(calls) == 15  # no more audio after the failure
    assert len(decode(path)) == len(walk)  # the whole video, playable
    _, _, end = decode_audio(path)
    assert end <= 15 / FPS + 0.2  # the audio muxed before the failure stays


def test_bad_video_paths(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        open_sink(tmp_path / "missing" / "out.mp4", size=(48, 64), fps=FPS)
    (tmp_path / "folder.mp4").mkdir()
    with pytest.raises(UserError, match=r"folder\.mp4"):
        open_sink(tmp_path / "folder.mp4", size=(48, 64), fps=FPS)
    with pytest.raises(UserError, match=r"\.mp4 \.mkv \.webm"):
        open_sink(tmp_path / "out.avi", size=(48, 64), fps=FPS)
    with pytest.raises(UserError, match=r"\.mp4 \.mkv \.webm"):
        VideoFileSink(tmp_path / "out.mov", size=(48, 64), fps=FPS)
    with pytest.raises(UserError, match="does not exist"):  # no such user: not expanded
        open_sink("~no-such-user-0/out.mp4", size=(48, 64), fps=FPS)


# -- other sinks ---------------------------------------------------------------------


def test_png_folder_round_trip(walk: list[np.ndarray], tmp_path: Path) -> None:
    folder = tmp_path / "frames" / "run1"
    sink = open_sink(folder, size=(480, 640), fps=FPS)
    assert isinstance(sink, ImageFolderSink)
    write_all(sink, walk[:5])
    sink.close()
    files = sorted(folder.iterdir())
    assert [f.name for f in files] == [f"frame_{i:06d}.png" for i in range(5)]
    for file, image in zip(files, walk, strict=False):
        assert np.array_equal(cv2.cvtColor(cv2.imread(str(file)), cv2.COLOR_BGR2RGB), image)
    # a shorter second run into the same folder replaces the first one's frames, all of
    # them; files that are not its frames stay
    (folder / "notes.txt").write_text("mine")
    (folder / "frame_cover.png").write_bytes(b"mine too")
    sink = open_sink(folder, size=(480, 640), fps=FPS)
    write_all(sink, walk[5:7])
    sink.close()
    names = sorted(f.name for f in folder.iterdir())
    assert names == ["frame_000000.png", "frame_000001.png", "frame_cover.png", "notes.txt"]
    first = cv2.cvtColor(cv2.imread(str(folder / "frame_000000.png")), cv2.COLOR_BGR2RGB)
    assert np.array_equal(first, walk[5])


def test_png_folder_refuses_a_file(tmp_path: Path) -> None:
    (tmp_path / "notes").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        ImageFolderSink(tmp_path / "notes", size=(48, 64))


def test_which_outputs_are_watched_as_they_play(tmp_path: Path) -> None:
    """A file input is paced to its frame rate for these (see `Sink.live`)."""
    for spec in ("window", " VirtualCam ", "rtmp://host/live/key", "srt://host:9000"):
        assert is_live_output(spec), spec
    for spec in ("null", "out.mp4", str(tmp_path), tmp_path / "window"):
        assert not is_live_output(spec), spec
    assert is_live_output(NullSink()) is False
    assert WindowSink.live and StreamPushSink.live


def test_null_sink_counts() -> None:
    sink = open_sink("null", size=(48, 64), fps=FPS)
    assert isinstance(sink, NullSink)
    for _ in range(3):
        sink.write(np.zeros((48, 64, 3), np.uint8), None)
    assert sink.frames_written == 3


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="DISPLAY is an X11 notion")
def test_window_without_display(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(UserError, match=r"no display found .*--output out\.mp4"):
        open_sink("window", size=(48, 64), fps=FPS)


def test_a_window_on_macos_is_drawn_from_the_main_thread_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")  # SDL's headless driver
    monkeypatch.setattr(sys, "platform", "darwin")
    sink = open_sink("window", size=(48, 64), fps=FPS)
    image = np.zeros((48, 64, 3), np.uint8)
    failed: list[BaseException] = []

    def draw() -> None:
        try:
            sink.write(image, None)
        except UserError as exc:
            failed.append(exc)

    drawer = threading.Thread(target=draw)
    drawer.start()
    drawer.join()
    assert failed and "main thread" in str(failed[0]) and "mirage-lsd serve" in str(failed[0])
    sink.write(image, None)  # from the main thread: shown
    assert sink.frames_written == 1
    sink.close()


def test_window_shows_frames_and_reports_close(
    walk: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")  # SDL's headless driver
    import pygame

    sink = WindowSink(size=(480, 640))
    assert not pygame.display.get_init()  # made where it is drawn (Windows routes its events
    drawer = threading.Thread(target=write_all, args=(sink, walk[:3]))  # to that thread)
    drawer.start()
    drawer.join()
    assert pygame.display.get_surface().get_size() == (640, 480)
    assert not sink.closed

    pygame.event.post(pygame.event.Event(pygame.QUIT))
    sink.write(walk[3], None)
    assert sink.closed
    sink.close()
    assert sink.frames_written == 4


def test_a_virtual_camera_gets_even_sides(monkeypatch: pytest.MonkeyPatch) -> None:
    """It converts to 4:2:0 (I420 on Linux, NV12 for OBS), which an odd side shears: odd
    frames go out with their edge repeated. (A stand-in camera: there is no device here.)"""
    import types

    sent: list[np.ndarray] = []

    class Camera:
        device = "/dev/video-test"

        def __init__(self, width: int, height: int, fps: float, fmt: object) -> None:
            self.width, self.height = width, height

        def send(self, frame: np.ndarray) -> None:
            assert frame.shape == (self.height, self.width, 3)
            sent.append(frame)

        def close(self) -> None:
            self.send = None  # as pyvirtualcam drops its backend: no send after close

    fake = types.SimpleNamespace(Camera=Camera, PixelFormat=types.SimpleNamespace(RGB="RGB"))
    monkeypatch.setitem(sys.modules, "pyvirtualcam", fake)
    sink = open_sink("virtualcam", size=(481, 641), fps=FPS)
    image = np.random.default_rng(0).integers(0, 256, (481, 641, 3), dtype=np.uint8)
    sink.write(image, None)
    sink.close()
    sink.write(image, None)  # late, after a close from another thread: dropped
    sink.close()  # twice: fine
    assert len(sent) == 1 and sink.frames_written == 1
    assert sent[0].shape == (482, 642, 3)
    assert np.array_equal(sent[0][:481, :641], image) and np.array_equal(sent[0][481], sent[0][480])


@pytest.mark.skipif(bool(glob.glob("/dev/video*")), reason="a video device exists here")
def test_virtualcam_missing() -> None:
    with pytest.raises(UserError, match="no virtual camera found"):
        open_sink("virtualcam", size=(48, 64), fps=FPS)


# -- network -------------------------------------------------------------------------

# A one-shot RTMP server (FFmpeg's listen mode) in its own process: the pusher holds
# the GIL while it connects, so a listener thread in this process could deadlock.
LISTENER = """
import sys, av
with av.open(sys.argv[1], options={"listen": "1", "timeout": "20"}) as container:
    decoder = container.streams.video[0].codec_context
    frames = []
    try:
        for packet in container.demux(video=0):
            frames += decoder.decode(packet)
    except OSError:
        pass  # the pusher hung up
    frames += decoder.decode(None)
print(len(frames), frames[0].height, frames[0].width, frames[0].colorspace)
"""


@pytest.mark.parametrize("timed", [True, False], ids=["timed-connection", "plain-pyav"])
def test_rtmp_push_reaches_a_listener(
    walk: list[np.ndarray], unused_tcp_port: int, timed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the timed connection, and through PyAV alone where its FFmpeg is unknown."""
    if not timed:
        monkeypatch.setitem(av.library_versions, "libavformat", (99, 0, 0))
    assert _avio.available() is timed
    url = f"rtmp://127.0.0.1:{unused_tcp_port}/live/test"
    listener = subprocess.Popen(
        [sys.executable, "-c", LISTENER, url], stdout=subprocess.PIPE, text=True
    )
    try:
        sink = connect_when_listening(url)
        assert isinstance(sink, StreamPushSink)
        frames = [np.ascontiguousarray(image[:239, :319]) for image in walk[:N]]  # odd: padded
        write_all(sink, frames)
        sink.close()
        sink.close()
        out, _ = listener.communicate(timeout=30)
    finally:
        listener.kill()
    assert out.split() == [str(N), "240", "320", "1"]  # colours tagged BT.709 (1)


def test_a_push_is_capped_at_a_bitrate_ingest_servers_take() -> None:
    from mirage_lsd.sinks.network import push_kbps

    assert push_kbps((720, 1280), 30.0) == 2765  # 0.1 bit per pixel per frame
    assert push_kbps((1080, 1920), 60.0) == 6000  # at most Twitch's 6 Mbit/s
    assert push_kbps((240, 320), 30.0) == 1000  # small streams keep a usable floor


KEYFRAME_LISTENER = LISTENER.replace(
    "print(len(frames), frames[0].height, frames[0].width, frames[0].colorspace)",
    "print(*[i for i, frame in enumerate(frames) if frame.key_frame])",
)


def test_a_live_push_has_a_keyframe_every_two_seconds_however_many_frames_came(
    walk: list[np.ndarray], unused_tcp_port: int
) -> None:
    """A model slower than its 30 fps camera sends 2 frames a second: keyframes come by
    time (a late viewer waits at most 2 s for a picture), not every 60 frames (30 s)."""
    url = f"rtmp://127.0.0.1:{unused_tcp_port}/live/test"
    listener = subprocess.Popen(
        [sys.executable, "-c", KEYFRAME_LISTENER, url], stdout=subprocess.PIPE, text=True
    )
    try:
        sink = connect_when_listening(url)  # opened for a 30 fps source
        for i, image in enumerate(walk[:9]):
            sink.write(np.ascontiguousarray(image[:239, :319]), i * 0.5)  # 2 frames a second
        sink.close()
        out, _ = listener.communicate(timeout=30)
    finally:
        listener.kill()
    assert out.split() == ["0", "4", "8"]  # at 0, 2 and 4 s


def connect_when_listening(url: str) -> Sink:
    """Open the push sink once the listener process accepts connections."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return open_sink(url, size=(239, 319), fps=FPS)
        except UserError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture
def unused_tcp_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("scheme", ["rtmp", "rtsp", "srt"])
def test_unreachable_stream_is_a_user_error(scheme: str, unused_tcp_port: int) -> None:
    url = f"{scheme}://127.0.0.1:{unused_tcp_port}/live/x"
    shown = url.replace("/x", "/***") if scheme == "rtmp" else url  # the stream key hidden
    with pytest.raises(UserError, match=re.escape(f"cannot push to {shown}")):
        open_sink(url, size=(48, 64), fps=FPS)
    with pytest.raises(UserError, match=rf"to {scheme}://me:\*\*\*@127") as exc:  # no password
        open_sink(f"{scheme}://me:secret@127.0.0.1:{unused_tcp_port}/x", size=(48, 64), fps=FPS)
    assert "secret" not in str(exc.value)


def test_an_srt_push_that_would_wait_for_a_peer_is_refused() -> None:
    for mode in ("listener", "Rendezvous"):
        with pytest.raises(UserError, match=rf"mode={mode.lower()}: .*caller"):
            open_sink(f"srt://127.0.0.1:9000?latency=20&mode={mode}", size=(48, 64), fps=FPS)


# The listening socket's backlog completes the TCP handshake: the server "accepts" and
# never says a word, as a stalled server or a wrong port behind a proxy would.
SILENT_SERVER = """
import socket, time
from mirage_lsd.errors import UserError
from mirage_lsd.sinks import open_sink
server = socket.create_server(("127.0.0.1", 0))
url = f"rtmp://127.0.0.1:{server.getsockname()[1]}/live/x"
start = time.monotonic()
try:
    open_sink(url, size=(48, 64), fps=30)
except UserError as exc:
    print(f"{time.monotonic() - start:.1f} {exc}")
"""


def test_a_server_that_never_answers_is_a_user_error_within_seconds() -> None:
    # a process of its own, with a hard timeout: FFmpeg's RTMP handshake, left to
    # itself, waits for good (and holds the GIL, so Ctrl-C cannot stop it)
    result = subprocess.run(
        [sys.executable, "-c", SILENT_SERVER], capture_output=True, text=True, timeout=30
    )
    seconds, message = result.stdout.strip().split(" ", 1)
    assert float(seconds) < 10, result.stdout
    assert message.startswith("cannot push to rtmp://127.0.0.1:") and "no answer" in message


# -- spec parsing --------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["", "  ", "out.avi", "ftp://host/x", "http://host/x.mp4"])
def test_unsupported_specs(spec: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError):
        open_sink(spec, size=(48, 64), fps=FPS)


_PREFIXES = ["", "out", "a/b", "x.", "..", "/proc/", "rtmp://127.0.0.1:1/", "srt://", "ftp://"]
_SUFFIXES = ["", ".mp4", ".MKV", ".webm", ".avi", ".png", "/", "\x00", "://"]
# Relative junk only: a spec like "/x" would create folders outside the temp dir.
_JUNK = st.text(st.characters(exclude_characters="/\\"), max_size=12)
SPECS = st.one_of(
    _JUNK,
    st.tuples(st.sampled_from(_PREFIXES), _JUNK, st.sampled_from(_SUFFIXES)).map("".join),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(spec=SPECS)
def test_open_sink_on_junk_returns_a_sink_or_user_error(
    spec: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER"):
        monkeypatch.delenv(var, raising=False)
    try:
        sink = open_sink(spec, size=(48, 64), fps=FPS)
    except UserError:
        return
    sink.close()


def test_a_write_the_disk_refuses_is_a_one_line_error(
    walk: list[np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mirage_lsd.sinks.video_file as video_file

    sink = VideoFileSink(tmp_path / "full.mp4", size=(480, 640), fps=FPS)
    sink.write(walk[0], 0.0)

    def disk_full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(video_file, "encode", disk_full)
    with pytest.raises(UserError, match=r"cannot write .*full\.mp4: No space left on device"):
        sink.write(walk[1], 1 / FPS)
    with pytest.raises(UserError, match=r"cannot finish .*full\.mp4: No space left"):
        sink.close()
