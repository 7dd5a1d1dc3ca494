"""The `mirage-lsd` command, run as a user runs it: a real process on real clips."""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from clips import make_clip_with_a_corrupt_frame, make_clip_with_audio

from mirage_lsd.cli.app import ends_before_a_compile_pays
from mirage_lsd.device import SHORT_STREAM, THREAD_ENV, cxx_compiler, usable_cores
from mirage_lsd.models.base import ModelInfo, StreamModel
from mirage_lsd.sources import open_source

CLI = [sys.executable, "-m", "mirage_lsd.cli.app"]


def mirage(*args: str | bytes, env: dict[str, str] | None = None, timeout: float = 120):
    return subprocess.run(
        [*CLI, *args], capture_output=True, timeout=timeout, env=env or os.environ.copy()
    )


def assert_one_line_error(result: subprocess.CompletedProcess[bytes], *words: str) -> None:
    stderr = result.stderr.decode(errors="replace").strip()
    assert result.returncode == 2, stderr
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error:"), stderr
    for word in words:
        assert word.lower() in stderr.lower(), stderr


def video_info(path: Path) -> tuple[int, tuple[int, int], bool]:
    """(decoded video frames, (height, width), has audio) of a media file."""
    with av.open(str(path)) as container:
        has_audio = bool(container.streams.audio)
        frames = [f for f in container.decode(video=0)]
    return len(frames), (frames[0].height, frames[0].width), has_audio


def test_file_to_file_preserves_frames_and_carries_audio(media: Path, tmp_path: Path) -> None:
    clip = tmp_path / "tone.mp4"
    n = make_clip_with_audio(media / "walk.mkv", clip)
    out, report = tmp_path / "out.mp4", tmp_path / "report.json"
    result = mirage(
        "run",
        str(clip),
        "--output",
        str(out),
        "--model",
        "identity",
        "--report",
        str(report),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr.decode()
    frames, size, has_audio = video_info(out)
    assert frames == n and size == (480, 640) and has_audio
    data = json.loads(report.read_text())
    assert data["frames_written"] == n and data["dropped"] == 0
    assert set(data["latency_ms"]) == {"p50", "p90", "p95", "p99"}


def test_names_with_brackets_are_printed_as_they_are(media: Path, tmp_path: Path) -> None:
    """Square brackets are rich's markup: a file name with them must neither vanish from
    the summary nor fail a finished run."""
    out = tmp_path / "[draft] [b]take.mp4"
    result = mirage("run", str(media / "classroom.gif"), "-o", str(out), "--model", "identity")
    assert result.returncode == 0, result.stderr.decode()
    said = b"".join(result.stderr.split())  # as wrapped to the terminal's width
    assert b"".join(f"45 frames to {out}".encode().split()) in said, result.stderr


def test_a_damaged_audio_packet_is_left_out_not_the_run(media: Path, tmp_path: Path) -> None:
    """WebM transcodes AAC to Opus: a packet that does not decode is a moment of silence,
    as a damaged video packet is a skipped frame; the run and its audio go on."""
    clip = tmp_path / "damaged.mp4"
    n = make_clip_with_audio(media / "walk.mkv", clip, damaged_packet=30)
    out = tmp_path / "out.webm"
    result = mirage("run", str(clip), "-o", str(out), "--model", "identity", "-q")
    assert result.returncode == 0, result.stderr.decode()
    assert b"damaged packet left out" in result.stderr
    frames, _, has_audio = video_info(out)
    assert frames == n and has_audio
    with av.open(str(out)) as container:  # audio after the damaged packet is there too
        assert sum(f.samples for f in container.decode(audio=0)) > 1.5 * 48000


@pytest.mark.parametrize("suffix", [".mkv", ".webm"])
def test_other_containers_and_sizes(media: Path, tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"out{suffix}"
    result = mirage("run", str(media / "classroom.gif"), "-o", str(out), "--size", "320x240", "-q")
    assert result.returncode == 0, result.stderr.decode()
    frames, size, _ = video_info(out)
    assert frames == 45 and size == (240, 320)


def test_image_folder_output(media: Path, tmp_path: Path) -> None:
    result = mirage("run", str(media / "please.mkv"), "-o", str(tmp_path / "frames"), "-q")
    assert result.returncode == 0, result.stderr.decode()
    assert len(list((tmp_path / "frames").glob("*.png"))) == 73


def test_automatic_compile_is_announced_and_can_be_refused(media: Path, tmp_path: Path) -> None:
    """The suite runs with MIRAGE_LSD_COMPILE=0 (conftest); here the automatic choice is on.

    With an empty Inductor cache the clip ends long before the compile: the command must
    still exit at once and cleanly (interpreter shutdown during a compile aborts).
    """
    args = ["run", str(media / "walk.mkv"), "-p", "sepia", "--size", "128x96"]
    cold = str(tmp_path / "inductor-cache")
    env = {**os.environ, "MIRAGE_LSD_COMPILE": "1", "TORCHINDUCTOR_CACHE_DIR": cold}
    auto = mirage(*args, "-o", str(tmp_path / "auto.mp4"), env=env)
    assert auto.returncode == 0, auto.stderr.decode()
    assert b"compiling the model in the background" in auto.stderr
    assert b"terminate called" not in auto.stderr
    assert video_info(tmp_path / "auto.mp4")[0] == 89
    refused = mirage(*args, "--no-compile", "-o", str(tmp_path / "eager.mp4"), env=env)
    assert refused.returncode == 0, refused.stderr.decode()
    assert b"compiling" not in refused.stderr


@pytest.mark.skipif(cxx_compiler() is None, reason="no C++ compiler: nothing compiles")
def test_a_short_file_is_not_compiled_automatically(media: Path, tmp_path: Path) -> None:
    """A 89-frame file ends long before a background compile would pay off on 2 cores
    (RESULTS.md), whether it runs offline or plays in real time."""
    env = {k: v for k, v in os.environ.items() if k != "MIRAGE_LSD_COMPILE"}
    env["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path / "inductor-cache")
    args = ["run", str(media / "walk.mkv"), "-p", "sepia", "--size", "128x96"]
    offline = mirage(*args, "-o", str(tmp_path / "offline.mp4"), env=env)
    assert offline.returncode == 0, offline.stderr.decode()
    assert b"compiling" not in offline.stderr
    live = mirage(*args, "--mode", "live", "-o", str(tmp_path / "live.mp4"), env=env)
    assert live.returncode == 0, live.stderr.decode()
    assert b"compiling" not in live.stderr  # 3 s in real time: still too short


def test_which_inputs_end_before_a_compile_pays(media: Path, tmp_path: Path) -> None:
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(tmp_path / name), np.zeros((8, 8, 3), np.uint8))
    walk = open_source(media / "walk.mkv")  # no frame count: 2.97 s at 30 fps
    assert walk.frame_count is None and walk.duration_s == pytest.approx(2.966)
    assert ends_before_a_compile_pays(walk)
    assert walk.pace() and ends_before_a_compile_pays(walk)  # played in real time: 3 s
    assert ends_before_a_compile_pays(open_source(media / "bottle-detection.mp4"))
    assert ends_before_a_compile_pays(open_source(tmp_path))  # 2 images, no fps
    assert not ends_before_a_compile_pays(open_source(iter([])))  # unknown length
    assert not ends_before_a_compile_pays(open_source(media / "walk.mkv", loop=True))
    walk.frame_count = SHORT_STREAM  # as long as a 100 s file
    assert not ends_before_a_compile_pays(walk)
    assert ends_before_a_compile_pays(walk, max_frames=SHORT_STREAM - 1)  # --frames
    camera_like = open_source(iter([]))
    assert ends_before_a_compile_pays(camera_like, max_frames=300)
    assert not ends_before_a_compile_pays(camera_like, max_frames=SHORT_STREAM)
    walk.close()


def test_frames_stops_the_run_after_that_many_input_frames(media: Path, tmp_path: Path) -> None:
    """`--frames N` ends a long file after N frames (offline: N written), with a
    playable output and the report; its progress bar counts to N, not the file's 1189."""
    out, report = tmp_path / "first.mp4", tmp_path / "r.json"
    args = ["run", str(media / "bottle-detection.mp4"), "-o", str(out), "--size", "128x72"]
    result = mirage(*args, "--model", "identity", "--frames", "25", "--report", str(report))
    assert result.returncode == 0, result.stderr.decode()
    assert video_info(out)[0] == 25
    assert json.loads(report.read_text())["frames_written"] == 25
    said = result.stdout + result.stderr  # the progress display is on stderr
    assert b"/25" in said and b"/1189" not in said
    refused = mirage(*args, "--frames", "0")
    assert refused.returncode == 2 and b"Traceback" not in refused.stderr


def test_corrupt_frame_is_skipped_counted_and_reported(media: Path, tmp_path: Path) -> None:
    clip = tmp_path / "corrupt.mkv"
    make_clip_with_a_corrupt_frame(media / "walk.mkv", clip)
    out, report = tmp_path / "out.mp4", tmp_path / "r.json"
    result = mirage("run", str(clip), "-o", str(out), "--report", str(report), "-q")
    assert result.returncode == 0, result.stderr.decode()
    data = json.loads(report.read_text())
    assert data["corrupt_frames"] >= 1
    assert video_info(out)[0] == data["frames_written"] == 20 - data["corrupt_frames"]
    assert "corrupt" in result.stderr.decode()


def test_fp16_on_cpu_is_a_one_line_warning(media: Path) -> None:
    args = ("bench", str(media / "walk.mkv"), "--model", "identity", "--device", "cpu")
    result = mirage(*args, "--frames", "5", "--warmup", "0", "--fp16", "--json")
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads(result.stdout)["dtype"] == "float32"
    stderr = result.stderr.decode()
    assert "warning: fp16 is not supported on CPU: using float32" in stderr
    assert "device.py" not in stderr and "Traceback" not in stderr


def test_the_input_file_is_never_the_output(media: Path, tmp_path: Path) -> None:
    clip = tmp_path / "clip.mkv"
    clip.write_bytes((media / "walk.mkv").read_bytes())
    before = clip.read_bytes()
    result = mirage("run", str(clip), "-o", str(clip), "--model", "identity", "-q")
    assert_one_line_error(result, "is the input file")
    assert clip.read_bytes() == before


def vfr_clip_with_tone(media: Path, path: Path) -> list[float]:
    """walk.mkv's first 40 frames at 30 fps with a 6 s pause after frame 20 (a
    variable-rate file, as phones and screen recorders make) and a tone as long as the
    video; returns the frame times."""
    with av.open(str(media / "walk.mkv")) as src:
        frames = itertools.islice(src.decode(video=0), 40)
        images = [frame.to_ndarray(format="rgb24") for frame in frames]
    times = [i / 30 + (6.0 if i >= 20 else 0.0) for i in range(40)]
    rate = 48000
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=30, options={"preset": "ultrafast"})
        video.height, video.width = images[0].shape[:2]
        video.pix_fmt = "yuv420p"
        video.codec_context.time_base = Fraction(1, 1000)
        audio = out.add_stream("aac", rate=rate, layout="mono")
        for image, t in zip(images, times, strict=True):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = round(t * 1000), Fraction(1, 1000)
            out.mux(video.encode(frame))
        tone = (0.3 * np.sin(np.arange(int(rate * (times[-1] + 1 / 30))) * 0.05)).astype(np.float32)
        for start in range(0, len(tone), 1024):
            chunk = np.ascontiguousarray(tone[None, start : start + 1024])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, start
            out.mux(audio.encode(frame))
        out.mux(video.encode(None))
        out.mux(audio.encode(None))
    return times


def test_a_variable_rate_file_keeps_its_timing_and_audio_sync(media: Path, tmp_path: Path) -> None:
    clip, out = tmp_path / "vfr.mkv", tmp_path / "out.mp4"
    times = vfr_clip_with_tone(media, clip)
    result = mirage("run", str(clip), "-o", str(out), "--model", "identity", "-q")
    assert result.returncode == 0, result.stderr.decode()
    with av.open(str(out)) as container:
        video = [frame.time for frame in container.decode(video=0)]
    with av.open(str(out)) as container:
        last = list(container.decode(audio=0))[-1]
        audio_end = float(last.pts * last.time_base) + last.samples / last.sample_rate
    assert len(video) == 40
    # the pause is kept, every frame at its source time (constant-rate stamps would
    # have lost the 6 s), and the audio ends with the video
    assert np.diff(video) == pytest.approx(np.diff(times), abs=0.002)
    assert audio_end == pytest.approx(video[-1] + 1 / 30, abs=0.1)


def test_a_home_relative_path_is_expanded(media: Path, tmp_path: Path) -> None:
    (tmp_path / "walk.mkv").write_bytes((media / "walk.mkv").read_bytes())
    env = {**os.environ, "HOME": str(tmp_path)}
    result = mirage("run", "~/walk.mkv", "-o", "~/frames", "--model", "identity", "-q", env=env)
    assert result.returncode == 0, result.stderr.decode()
    assert len(list((tmp_path / "frames").glob("*.png"))) == 89


def test_report_in_a_missing_folder_is_refused_before_the_stream(
    media: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.mp4"
    report = tmp_path / "missing" / "r.json"
    args = ("run", str(media / "walk.mkv"), "-o", str(out), "--model", "identity", "-q")
    assert_one_line_error(mirage(*args, "--report", str(report)), "report", "no folder")
    assert not out.exists()  # nothing was started
    assert_one_line_error(mirage(*args, "--report", str(tmp_path)), "report", "folder")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bad_inputs(media: Path, tmp_path: Path) -> dict[str, tuple[list[str | bytes], tuple[str, ...]]]:
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(os.urandom(4096))
    clip = str(media / "walk.mkv")
    out = str(tmp_path / "o.mp4")
    return {
        "missing file": (["run", "nope.mp4", "-o", out], ("not found",)),
        "unreadable file": (["run", str(garbage), "-o", out], ("garbage.mp4",)),
        "camera absent": (["run", "7", "-o", out], ("camera 7",)),
        "unsupported url": (["run", "ftp://example.com/a.mp4", "-o", out], ("ftp",)),
        "unreachable url": (
            ["run", f"rtsp://127.0.0.1:{_closed_port()}/x", "-o", out],
            ("127.0.0.1",),
        ),
        "virtualcam absent": (["run", clip, "-o", "virtualcam"], ("virtual camera",)),
        "no display": (["run", clip, "-o", "window"], ("display",)),
        "unknown model": (
            ["run", clip, "-o", out, "--model", "nope"],
            ("unknown model", "identity"),
        ),
        "malformed size": (["run", clip, "-o", out, "--size", "12x"], ("size",)),
        "empty prompt": (["run", clip, "-o", out, "--prompt", "  "], ("empty",)),
        "long prompt": (["run", clip, "-o", out, "--prompt", "x" * 1001], ("1000",)),
        "undecodable prompt": (["run", clip, "-o", out, "--prompt", b"caf\xe9 \xff"], ("utf-8",)),
        "bad output suffix": (["run", clip, "-o", str(tmp_path / "o.xyz")], (".mp4",)),
        "missing option": (["run", clip], ("--output",)),
        "bench bad size": (["bench", clip, "--size", "axb"], ("size",)),
        "eval one frame": (["eval", clip, "--prompt", "sepia", "--frames", "1"], ("--frames",)),
        "eval no prompt": (["eval", clip], ("--prompt",)),
        "eval unknown model": (["eval", clip, "-p", "sepia", "-m", "nope"], ("unknown model",)),
    }


CASES = [
    "missing file",
    "unreadable file",
    "camera absent",
    "unsupported url",
    "unreachable url",
    "virtualcam absent",
    "no display",
    "unknown model",
    "malformed size",
    "empty prompt",
    "long prompt",
    "undecodable prompt",
    "bad output suffix",
    "missing option",
    "bench bad size",
    "eval one frame",
    "eval no prompt",
    "eval unknown model",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gives_one_line_and_exit_code_2(media: Path, tmp_path: Path, case: str) -> None:
    args, words = bad_inputs(media, tmp_path)[case]
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    result = mirage(*args, env=env, timeout=60)
    assert_one_line_error(result, *words)
    assert not (tmp_path / "o.mp4").exists() and not (tmp_path / "o.xyz").exists()


def test_a_file_shown_in_a_window_plays_in_real_time(media: Path, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy"}  # SDL's headless driver
    args = ("run", str(media / "walk.mkv"), "-o", "window", "--model", "identity", "-q")
    result = mirage(*args, "--size", "64x48", "--report", str(report), env=env)
    assert result.returncode == 0, result.stderr.decode()
    stats = json.loads(report.read_text())
    assert stats["mode"] == "live"
    assert stats["elapsed_s"] >= 0.9 * 89 / 30  # the clip's 89 frames at 30 fps


def test_passwords_in_urls_stay_out_of_errors_and_the_report(media: Path, tmp_path: Path) -> None:
    port, out, report = _closed_port(), str(tmp_path / "o.mp4"), tmp_path / "r.json"
    failing_input = mirage("run", f"rtsp://user:secret@127.0.0.1:{port}/x", "-o", out)
    assert_one_line_error(failing_input, f"rtsp://user:***@127.0.0.1:{port}/x")
    assert b"secret" not in failing_input.stderr
    push = f"rtmp://user:secret@127.0.0.1:{port}/live/x"
    args = ("run", str(media / "walk.mkv"), "-o", push, "--model", "identity")
    failing_output = mirage(*args, "--report", str(report))
    assert_one_line_error(failing_output, f"rtmp://user:***@127.0.0.1:{port}/live/***")
    assert b"secret" not in failing_output.stderr and "secret" not in report.read_text()
    assert json.loads(report.read_text())["output"] == f"rtmp://user:***@127.0.0.1:{port}/live/***"


def test_a_signed_url_input_fails_as_an_input_with_its_signature_hidden(tmp_path: Path) -> None:
    """A URL is no file the report could overwrite: the run fails on the input alone."""
    report = tmp_path / "r.json"
    report.write_text("{}")
    url = f"http://127.0.0.1:{_closed_port()}/x.m3u8?Signature={'A' * 300}"
    result = mirage("run", url, "-o", str(tmp_path / "o.mp4"), "--report", str(report))
    assert result.returncode == 2
    assert b"report" not in result.stderr and b"too long" not in result.stderr
    assert b"127.0.0.1" in result.stderr and b"AAAA" not in result.stderr  # signature hidden


def test_prompts_typed_while_it_runs_change_the_look(media: Path, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    args = ["run", str(media / "walk.mkv"), "-o", str(tmp_path / "o.mp4"), "-p", "sepia"]
    args += ["--size", "128x96", "--no-compile", "--stdin-prompts", "--report", str(report)]
    # blank, not UTF-8, too long, a look
    lines = b"\n".join([b"", b"sepia \xff", b"x" * 1001, b"thermal camera"]) + b"\n"
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict", "PYTHONUTF8": "0"}
    result = subprocess.run([*CLI, *args], input=lines, capture_output=True, timeout=120, env=env)
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    assert "Traceback" not in stderr and "warning: a prompt line is not utf-8 text" in stderr
    assert "warning: prompt is 1001 characters long" in stderr
    assert "prompt: thermal camera" in stderr
    stats = json.loads(report.read_text())
    assert stats["prompt"] == "sepia"  # as started
    assert stats["extra"]["prompt"]["text"] == "thermal camera"  # as it ended
    looks = stats["extra"]["prompt"]["looks"]
    assert max(looks, key=looks.get) == "thermal"


def test_a_run_ends_cleanly_while_its_prompt_console_still_waits_for_a_line(
    media: Path, tmp_path: Path
) -> None:
    """The input ends while standard input (a terminal, a cue script) stays open: the
    process exits 0, not "Fatal Python error ... could not acquire lock" (134)."""
    out, log = tmp_path / "o.mp4", tmp_path / "stderr.txt"
    args = ["run", str(media / "walk.mkv"), "-o", str(out), "--model", "identity", "-q"]
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [*CLI, *args, "--stdin-prompts"], stdin=subprocess.PIPE, stderr=stderr
        )
        assert proc.stdin is not None
        try:
            proc.stdin.write(b"sepia\n")  # a line, then silence with the pipe open
            proc.stdin.flush()
            code = proc.wait(timeout=120)
        finally:
            proc.kill()
            proc.stdin.close()
    assert code == 0, log.read_text()
    assert "Fatal Python error" not in log.read_text() and video_info(out)[0] == 89


def test_preview_shows_the_output_in_a_window_beside_the_file(media: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "o.mp4", tmp_path / "r.json"
    args = ("run", str(media / "walk.mkv"), "-o", str(out), "--model", "identity", "-q")
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy"}  # SDL's headless driver
    result = mirage(*args, "--size", "64x48", "--preview", "--report", str(report), env=env)
    assert result.returncode == 0, result.stderr.decode()
    stats = json.loads(report.read_text())
    assert stats["mode"] == "offline" and stats["frames_written"] == 89  # the file decides
    headless = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    headless.pop("SDL_VIDEODRIVER", None)
    other = tmp_path / "other.mp4"
    refused = mirage(*args[:3], str(other), "--preview", env=headless)
    assert_one_line_error(refused, "no display")
    assert not other.exists()  # refused before anything was written
    twice = mirage(*args[:3], "window", "--preview", env=env)
    assert_one_line_error(twice, "would show it twice")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = mirage("run", "nope.mp4", "-o", str(tmp_path / "o.mp4"), "--debug")
    assert result.returncode != 0
    assert b"Traceback" in result.stderr


def test_debug_traceback_hides_secrets_in_urls(tmp_path: Path) -> None:
    """FFmpeg's own error quotes the URL it failed on; the traceback must not show the
    password or token (tracebacks get pasted into bug reports)."""
    with socket.socket() as closed:  # a port nothing listens on: refused at once
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    url = f"rtsp://user:hunter2@127.0.0.1:{port}/live?token=s3cr3t"
    result = mirage("run", url, "-o", str(tmp_path / "o.mp4"), "--debug")
    assert result.returncode == 2 and b"Traceback" in result.stderr
    assert b"Connection refused" in result.stderr  # FFmpeg's message, with its URL, is there
    assert b"hunter2" not in result.stderr and b"s3cr3t" not in result.stderr
    assert f"rtsp://user:***@127.0.0.1:{port}/live?token=***".encode() in result.stderr


def test_debug_logs_hide_secrets_in_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    """--debug logs a failing thread's traceback; FFmpeg's error in it quotes the raw URL.
    The command's own URL is hidden whole, even with a quote and a space in its password
    (where a URL found in text would end)."""
    from mirage_lsd.cli.errors import RedactingFormatter

    url = "rtsp://admin:it's s3cret@cam.local/x"
    monkeypatch.setattr(sys, "argv", ["mirage-lsd", "run", url, "-o", "rtmp://h/app/KEY"])
    try:
        raise OSError(f"[Errno 32] Broken pipe: {url!r} and 'rtmp://h/app/KEY'")
    except OSError:
        exc_info = sys.exc_info()
    record = logging.LogRecord("m", logging.DEBUG, __file__, 1, "thread failed", None, exc_info)
    text = RedactingFormatter("%(message)s").format(record)
    assert "thread failed" in text and "Broken pipe" in text and "Traceback" in text
    assert "s3cret" not in text and "KEY" not in text
    assert "rtsp://admin:***@cam.local/x" in text and "rtmp://h/app/***" in text


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_finalizes_a_playable_output(media: Path, tmp_path: Path, sig: int) -> None:
    out, report = tmp_path / "partial.mp4", tmp_path / "r.json"
    proc = subprocess.Popen(
        [
            *CLI,
            "run",
            str(media / "bottle-detection.mp4"),
            "-o",
            str(out),
            "--size",
            "1280x720",
            "--report",
            str(report),
            "-q",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60  # interrupted mid-stream: once frames are being written
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and out.stat().st_size > 100_000:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    assert out.stat().st_size > 100_000, "no frames were written within 60 s"
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, stderr.decode()
    data = json.loads(report.read_text())
    assert data["stopped_by"] == signal.Signals(sig).name and data["error"] is None
    frames, size, _ = video_info(out)
    assert 0 < frames < 1189
    assert frames == data["frames_written"]
    assert size == (720, 1280)


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no hangups on Windows")
def test_a_closed_terminal_still_gets_a_playable_output(media: Path, tmp_path: Path) -> None:
    """SIGHUP after the terminal is gone (a closed window, a dropped ssh session): writing
    to it fails, and the run must still stop cleanly and finalize its file."""
    import pty

    out, report = tmp_path / "partial.mp4", tmp_path / "r.json"
    master, terminal = pty.openpty()
    args = ["run", str(media / "bottle-detection.mp4"), "-o", str(out), "--size", "1280x720"]
    proc = subprocess.Popen(
        [*CLI, *args, "--report", str(report), "-q"],
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
        # as from a shell: a test runner started under `nohup` passes on an ignored
        # SIGHUP, which the run then rightly leaves ignored
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL),
    )
    os.close(terminal)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and out.stat().st_size > 100_000:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it could be interrupted"
    finally:
        os.close(master)  # the terminal goes away: the run's writes to it now fail
    proc.send_signal(signal.SIGHUP)
    assert proc.wait(timeout=60) == 128 + signal.SIGHUP
    data = json.loads(report.read_text())
    assert data["stopped_by"] == "SIGHUP" and data["error"] is None
    frames, size, _ = video_info(out)
    assert 0 < frames == data["frames_written"] and size == (720, 1280)


def test_bench_json(media: Path) -> None:
    result = mirage(
        "bench",
        str(media / "walk.mkv"),
        "--model",
        "identity",
        "--size",
        "320x240",
        "--frames",
        "120",
        "--warmup",
        "5",
        "--json",
        "--device",
        "cpu",  # what is asserted below, on a machine with a GPU too
    )
    assert result.returncode == 0, result.stderr.decode()
    data = json.loads(result.stdout)
    assert data["frames"] == 120 and data["dropped"] == 0  # looped past the clip's 89 frames
    assert data["model"] == "identity" and data["size"] == "320x240" and data["steps"] == 1
    assert data["device"] == "cpu" and data["fps"] > 0 and data["ttff_ms"] > 0
    assert data["compile"] is False  # the identity model has nothing to compile
    assert data["dtype"] == "float32"  # the model's own (the built-in one is bf16 on AMX CPUs)
    # torch's threads for the model: every core but for the built-in model on CPU
    set_outside = any(os.environ.get(name, "").strip() for name in THREAD_ENV)
    assert data["threads"] == (None if set_outside else usable_cores())
    assert data["drop_ratio"] == 0.0 and data["corrupt_frames"] == 0 and data["reconnects"] == 0
    assert set(data["latency_ms"]) == {"p50", "p90", "p95", "p99"}
    assert data["latency_ms"]["p50"] <= data["latency_ms"]["p99"]
    assert set(data["stages_ms"]) == {"decode", "preprocess", "model", "postprocess", "encode"}


def test_threads_below_one_is_one_line(media: Path) -> None:
    result = mirage("bench", str(media / "walk.mkv"), "--frames", "5", "--threads", "0")
    assert_one_line_error(result, "--threads")


def test_bad_compile_setting_in_the_environment_is_one_line(media: Path) -> None:
    env = {**os.environ, "MIRAGE_LSD_COMPILE": "sometimes"}
    result = mirage("bench", str(media / "walk.mkv"), "--frames", "5", env=env)
    assert_one_line_error(result, "MIRAGE_LSD_COMPILE must be 0 or 1")


def test_models_lists_models_and_looks() -> None:
    result = mirage("models", env={**os.environ, "COLUMNS": "160"})
    assert result.returncode == 0
    for word in (b"identity", b"mirage-lsd-v1", b"Night vision", b"Pixel art", b"pencil sketch"):
        assert word in result.stdout


@pytest.mark.parametrize(
    ("yaml_text", "word"),
    [("steps: 10\nmodel:\n  widht: 8\n", "widht"), ("steps: ten\n", "steps")],
)
def test_train_config_errors_name_the_field(tmp_path: Path, yaml_text: str, word: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(yaml_text)
    result = mirage("train", "--config", str(config), "--device", "cpu")
    assert_one_line_error(result, word)


class _FailsAtFive(StreamModel):
    """Passes frames through, then fails at the fifth: a model that breaks mid-stream."""

    def __init__(self) -> None:
        self.made = 0

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(name="fails-at-five", description="breaks at the fifth frame")

    def encode_prompt(self, text: str | None) -> object:
        return None

    def init_state(self, height: int, width: int, seed: int | None = None) -> object:
        return None

    def step(self, image, cond, state, steps):  # type: ignore[no-untyped-def]
        self.made += 1
        if self.made == 5:
            raise ValueError("model exploded")
        return image, state


@pytest.mark.parametrize("quiet", [True, False])
def test_a_run_that_fails_midway_keeps_its_frames_and_writes_its_report(
    media: Path, tmp_path: Path, quiet: bool
) -> None:
    from typer.testing import CliRunner

    from mirage_lsd.cli.app import app
    from mirage_lsd.models.registry import ModelEntry, register_model

    register_model(ModelEntry("fails-at-five", "test", lambda opts: _FailsAtFive()))
    out, report = tmp_path / "out.mp4", tmp_path / "r.json"
    args = ["run", str(media / "walk.mkv"), "-o", str(out), "-m", "fails-at-five"]
    result = CliRunner().invoke(app, [*args, "--report", str(report), *(["-q"] * quiet)])
    assert result.exit_code == 1 and "model exploded" in result.output
    data = json.loads(report.read_text())
    assert data["error"] == "model exploded" and data["frames_written"] == 4
    frames, size, _ = video_info(out)  # finalized, with every frame made before the failure
    assert frames == 4 and size == (480, 640)


def test_the_report_never_overwrites_the_input_or_the_output(media: Path, tmp_path: Path) -> None:
    clip = tmp_path / "clip.mkv"
    clip.write_bytes((media / "walk.mkv").read_bytes())
    before = clip.read_bytes()
    out = tmp_path / "out.mp4"
    args = ("run", str(clip), "-o", str(out), "--model", "identity", "-q")
    assert_one_line_error(mirage(*args, "--report", str(clip)), "would overwrite")
    assert clip.read_bytes() == before
    assert_one_line_error(mirage(*args, "--report", str(out)), "would overwrite")  # not yet
    assert not out.exists()
    out.write_bytes(b"a video from before")
    assert_one_line_error(mirage(*args, "--report", str(out)), "would overwrite")


def test_frames_are_never_written_over_the_input_images(media: Path, tmp_path: Path) -> None:
    with av.open(str(media / "walk.mkv")) as container:
        image = next(container.decode(video=0)).to_ndarray(format="bgr24")
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"frame_{i:06d}.png"), image)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    result = mirage("run", str(tmp_path), "-o", str(tmp_path), "--model", "identity", "-q")
    assert_one_line_error(result, "holds the input images")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    glob_input = str(tmp_path / "*.png")
    assert_one_line_error(mirage("run", glob_input, "-o", str(tmp_path), "-q"), "input images")


def test_an_unknown_model_is_refused_before_the_input_is_opened(tmp_path: Path) -> None:
    url = f"rtsp://127.0.0.1:{_closed_port()}/x"
    result = mirage("run", url, "-o", str(tmp_path / "o.mp4"), "--model", "nope", timeout=30)
    assert_one_line_error(result, "unknown model 'nope'")  # not the connection's error


def test_errors_the_machine_raises_are_one_line_exit_2(capsys: pytest.CaptureFixture) -> None:
    from mirage_lsd.cli.errors import guarded

    def denied() -> None:
        raise PermissionError(13, "Permission denied", "/root/out.mp4")

    with pytest.raises(SystemExit) as exc:
        guarded(False, denied)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "cannot use /root/out.mp4: Permission denied" in err and err.count("\n") == 1

    def reset() -> None:  # not the user's to fix: exit 1, with the --debug hint
        raise ConnectionResetError(104, "Connection reset by peer")

    with pytest.raises(SystemExit) as exc:
        guarded(False, reset)
    assert exc.value.code == 1 and "--debug" in capsys.readouterr().err
