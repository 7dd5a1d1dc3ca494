"""StreamEngine semantics on real clips: offline completeness, live freshness, prompts."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
from clips import make_clip_with_a_corrupt_frame

from mirage_lsd import StreamEngine, UserError
from mirage_lsd.device import resolve_dtype
from mirage_lsd.errors import EndOfStream
from mirage_lsd.frame import Frame
from mirage_lsd.models.base import ModelInfo, StreamModel
from mirage_lsd.sinks.base import Sink
from mirage_lsd.sources import Source, open_source


class SlowModel(StreamModel):
    """Inverts colours after sleeping `delay` seconds: a deliberately slow model."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(name="slow", description="sleeps, then inverts")

    def encode_prompt(self, text: str | None) -> object:
        return text

    def init_state(self, height: int, width: int, seed: int | None = None) -> object:
        return None

    def step(self, image, cond, state, steps):  # type: ignore[no-untyped-def]
        time.sleep(self.delay)
        return 255 - image, state


class RecordingModel(StreamModel):
    """Records the conditioning of every frame; can hold a frame until released."""

    size_multiple = 8

    def __init__(self) -> None:
        self.seen: list[float] = []
        self.shapes: list[tuple[int, ...]] = []
        self.hold_at: int | None = None
        self.holding = threading.Event()
        self.release = threading.Event()
        self.states: list[int] = []

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(name="recording", description="records conditioning")

    def encode_prompt(self, text: str | None) -> np.ndarray:
        return np.array([float(len(text or ""))])

    def init_state(self, height: int, width: int, seed: int | None = None) -> int:
        return 0

    def step(self, image, cond, state, steps):  # type: ignore[no-untyped-def]
        if self.hold_at is not None and len(self.seen) == self.hold_at:
            self.holding.set()
            self.release.wait(5)
        self.seen.append(float(cond[0]))
        self.shapes.append(image.shape)
        self.states.append(state)
        return image, state + 1


def decoded_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_offline_file_to_file_keeps_every_frame(media: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    engine = StreamEngine("identity", device="cpu")
    engine.start(media / "walk.mkv", output=out)
    stats = engine.wait()
    assert stats.mode == "offline"
    assert stats.frames_in == stats.frames_out == stats.frames_written == 89
    assert stats.dropped == 0
    assert decoded_frames(out) == 89


def test_downscale_on_the_identity_model_is_said_not_ignored() -> None:
    with pytest.raises(UserError, match="--downscale applies to the built-in model only"):
        StreamEngine("identity", device="cpu", downscale=4)


def test_each_start_is_a_new_stream_at_its_own_size(media: Path, tmp_path: Path) -> None:
    model = RecordingModel()
    engine = StreamEngine(model, device="cpu")
    sizes = []
    for clip, out in (("walk.mkv", "a.mp4"), ("classroom.gif", "b.mp4")):  # 640x480, 480x270
        engine.start(media / clip, output=tmp_path / out, mode="offline", max_frames=3)
        engine.wait()
        with av.open(str(tmp_path / out)) as container:
            stream = container.streams.video[0]
            sizes.append((stream.codec_context.height, stream.codec_context.width))
    assert sizes == [(480, 640), (270, 480)]
    assert model.states == [0, 1, 2, 0, 1, 2]  # no history carried from the first clip


def test_process_follows_the_input_size_without_a_fixed_resolution() -> None:
    model = RecordingModel()
    engine = StreamEngine(model, device="cpu")
    small, large = np.zeros((240, 320, 3), np.uint8), np.zeros((480, 640, 3), np.uint8)
    shapes = [engine.process(f).shape for f in (small, small, large, large)]
    assert shapes == [(240, 320, 3)] * 2 + [(480, 640, 3)] * 2
    assert model.states == [0, 1, 0, 1]  # the new size started afresh
    fixed = StreamEngine(RecordingModel(), device="cpu", resolution=(240, 320))
    assert [fixed.process(f).shape for f in (small, large)] == [(240, 320, 3)] * 2


def test_live_mode_with_a_slow_model_drops_and_keeps_latency_bounded(media: Path) -> None:
    latencies: list[float] = []
    engine = StreamEngine(SlowModel(delay=0.1), device="cpu", resolution=(90, 160))
    engine.start(
        media / "bottle-detection.mp4",
        on_frame=lambda image, info: latencies.append(info.latency_ms),
        mode="live",
    )
    time.sleep(3.0)
    stats = engine.stop()
    assert stats.mode == "live"
    # 30 fps in, ~10 fps out: about two of three frames are dropped and counted
    assert stats.dropped_input > stats.frames_out
    assert stats.frames_in == stats.frames_out + stats.dropped_input
    assert len(latencies) >= 15
    # latency never builds up: a frame waits at most one model step before inference
    assert max(latencies) < 350.0
    assert np.mean(latencies[-5:]) < np.mean(latencies[:5]) + 50.0


def test_a_live_recording_lasts_as_long_as_what_it_recorded(media: Path, tmp_path: Path) -> None:
    out = tmp_path / "live.mp4"
    engine = StreamEngine(SlowModel(delay=0.1), device="cpu", resolution=(90, 160))
    engine.start(media / "bottle-detection.mp4", output=out, mode="live")  # 30 fps source
    time.sleep(3.0)
    stats = engine.stop()
    assert stats.dropped_input > stats.frames_written  # about 10 of 30 frames a second kept
    with av.open(str(out)) as container:
        times = [frame.time for frame in container.decode(video=0)]
    assert len(times) == stats.frames_written
    assert all(b > a for a, b in itertools.pairwise(times))
    # stamped by capture time: ~3 s long, where a constant 30 fps would give ~1 s
    assert times[-1] - times[0] > 2.0


class WatchedSink(Sink):
    """Records when each frame is written; watched as it plays, like a window."""

    live = True

    def __init__(self) -> None:
        self.times: list[float] = []

    def write(self, image: np.ndarray, pts: float | None) -> None:
        self.times.append(time.monotonic())


def test_a_file_played_to_a_watched_output_keeps_its_own_pace(
    media: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = StreamEngine("identity", device="cpu", resolution=(48, 64))
    sink, paced = WatchedSink(), open_source(media / "walk.mkv")
    engine.start(paced, output=sink, max_frames=60)  # 2 s at 30 fps
    stats = engine.wait(timeout=20)
    assert stats.mode == "live" and len(sink.times) >= 2  # a loaded machine may drop some
    assert sink.times[-1] - sink.times[0] >= 0.9 * 59 / 30
    assert paced.counters.paced_s > 0.5  # it waited for the frames' times
    fast, unpaced = WatchedSink(), open_source(media / "walk.mkv")  # unless asked otherwise
    engine.start(unpaced, output=fast, mode="offline", max_frames=60)
    engine.wait(timeout=20)
    assert len(fast.times) == 60 and unpaced.counters.paced_s == 0.0
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")  # SDL's headless driver
    engine.start(media / "walk.mkv", on_frame=engine.render, max_frames=3)  # a window too
    assert engine.wait(timeout=20).mode == "live"
    engine.close()


class LookingModel(RecordingModel):
    """A model with three named looks."""

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(name="looking", description="three looks", looks=("a", "bb", "ccc"))


def test_arrow_keys_in_the_window_step_through_the_looks(
    media: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")  # SDL's headless driver
    import pygame

    engine = StreamEngine(LookingModel(), device="cpu", resolution=(48, 64), prompt="bb")
    frame = np.zeros((48, 64, 3), np.uint8)
    engine.render(frame)  # opens the window the keys are read from
    seen = []
    for key in (pygame.K_RIGHT, pygame.K_RIGHT, pygame.K_n, pygame.K_LEFT, pygame.K_SPACE):
        pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=key))
        engine.render(frame)  # the window handles its events as it draws
        seen.append(engine.prompt)
    assert seen == ["ccc", "a", "bb", "a", "a"]  # wraps around; other keys do nothing
    assert pygame.display.get_caption()[0] == "mirage-lsd: a"
    engine.close()
    free = StreamEngine(LookingModel(), device="cpu", resolution=(48, 64), prompt="free text")
    free.render(frame)
    pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_LEFT))
    free.render(frame)
    assert free.prompt == "ccc"  # from free text: the last look going back
    free.close()
    looking = StreamEngine(LookingModel(), device="cpu")  # an output="window" listens too
    looking.start(media / "walk.mkv", output="window", max_frames=2)
    looking.wait(timeout=20)
    assert looking._sink is not None and looking._sink.on_key is not None  # type: ignore[attr-defined]
    looking.close()
    plain = StreamEngine("identity", device="cpu")  # no looks: keys change nothing
    plain.start(media / "walk.mkv", output="window", max_frames=2)
    plain.wait(timeout=20)
    assert plain._sink is not None and plain._sink.on_key is None  # type: ignore[attr-defined]
    plain.close()


def test_a_window_preview_of_a_file_render_keeps_every_frame(
    media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file output decides: previewing it costs it no frames (nor its audio)."""
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    model = RecordingModel()
    engine = StreamEngine(model, device="cpu", resolution=(48, 64))
    out = tmp_path / "o.mp4"
    engine.start(media / "walk.mkv", output=out, on_frame=engine.render, max_frames=30)
    stats = engine.wait(timeout=30)
    engine.close()
    assert stats.mode == "offline" and stats.frames_written == 30 and stats.dropped == 0
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 30


class ClosingSource(Source):
    """A few black frames; remembers whether it was closed."""

    def __init__(self) -> None:
        super().__init__()
        self.size, self.fps, self.closed = (48, 64), 30.0, False

    def recv(self) -> Frame:
        raise EndOfStream

    def close(self) -> None:
        self.closed = True


def test_a_bad_output_closes_the_input_and_is_one_line(media: Path) -> None:
    engine = StreamEngine("identity", device="cpu")
    for bad in (42, b"o.mp4"):
        source = ClosingSource()
        with pytest.raises(UserError):
            engine.start(source, output=bad)  # type: ignore[arg-type]
        assert source.closed


class PlanningModel(RecordingModel):
    def __init__(self) -> None:
        super().__init__()
        self.plans: list[tuple[bool, float | None]] = []

    def plan_stream(self, live: bool, frames: float | None) -> None:
        self.plans.append((live, frames))


def test_the_model_is_told_how_long_a_bounded_stream_is(media: Path) -> None:
    model = PlanningModel()
    engine = StreamEngine(model, device="cpu", resolution=(48, 64))
    engine.start(media / "walk.mkv", loop=True, max_frames=10, mode="offline")
    engine.wait(timeout=20)
    engine.start(media / "walk.mkv", mode="live", max_frames=5)  # paced, and still ends
    engine.wait(timeout=20)
    engine.start(media / "walk.mkv", loop=True)  # unbounded
    engine.stop()
    assert model.plans[:2] == [(False, 10.0), (True, 5.0)]
    assert model.plans[2] == (False, None)


def test_set_prompt_while_running_reaches_the_model_at_the_next_frame(media: Path) -> None:
    model = RecordingModel()
    model.hold_at = 5
    engine = StreamEngine(model, device="cpu", prompt="ab")
    engine.start(media / "walk.mkv", mode="offline", max_frames=12)
    assert model.holding.wait(5)
    engine.set_prompt("pencil sketch")  # while frame 5 is inside the model
    model.release.set()
    engine.wait()
    assert model.seen[:6] == [2.0] * 6
    assert model.seen[6:] == [13.0] * 6


def test_prompt_transition_blends_without_jumps(media: Path) -> None:
    model = RecordingModel()
    engine = StreamEngine(model, device="cpu", prompt="abcd")
    engine.set_prompt("abcdefgh", transition_frames=4)
    for frame in engine.stream(media / "walk.mkv", max_frames=6):
        assert frame.shape == (480, 640, 3)
    assert model.seen == [5.0, 6.0, 7.0, 8.0, 8.0, 8.0]


def test_any_output_size_is_exact_even_when_the_model_needs_padding(media: Path) -> None:
    model = RecordingModel()  # needs multiples of 8
    engine = StreamEngine(model, device="cpu", resolution=(241, 321), fit="letterbox")
    frames = list(engine.stream(media / "walk.mkv", max_frames=3))
    assert [f.shape for f in frames] == [(241, 321, 3)] * 3
    assert model.shapes[0] == (248, 328, 3)
    assert model.states == [0, 1, 2]  # state carried from frame to frame


def test_process_is_synchronous_and_keeps_state() -> None:
    model = RecordingModel()
    engine = StreamEngine(model, device="cpu", resolution=(64, 96))
    frame = np.full((120, 160, 3), 77, np.uint8)
    out = [engine.process(frame) for _ in range(3)]
    assert all(o.shape == (64, 96, 3) and o.dtype == np.uint8 for o in out)
    assert model.states == [0, 1, 2]
    engine.reset()
    engine.process(frame)
    assert model.states[-1] == 0
    with pytest.raises(UserError):
        engine.process(np.zeros((10, 10), np.uint8))


def test_strength_blends_toward_the_input_and_seed_reaches_the_model() -> None:
    frame = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    engine = StreamEngine(SlowModel(0.0), device="cpu", strength=0.0)
    assert np.array_equal(engine.process(frame), frame)
    engine.set_strength(1.0)
    assert np.array_equal(engine.process(frame), 255 - frame)
    engine.set_strength(0.25)
    expected = frame.astype(np.float64) * 0.75 + (255 - frame.astype(np.float64)) * 0.25
    assert np.abs(engine.process(frame) - expected).max() <= 1.0
    with pytest.raises(UserError, match="strength"):
        engine.set_strength(1.5)
    # a seed restarts the stream with that seed
    recording = RecordingModel()
    seeds: list[int | None] = []
    recording.init_state = lambda h, w, seed=None: seeds.append(seed) or 0  # type: ignore[method-assign]
    engine = StreamEngine(recording, device="cpu", seed=7)
    engine.process(frame)
    engine.process(frame)
    engine.set_seed(8)
    engine.process(frame)
    assert seeds == [7, 8] and recording.states == [0, 1, 0]
    with pytest.raises(UserError, match="seed"):
        engine.set_seed(-1)


def test_model_failure_reaches_the_caller(media: Path) -> None:
    class Broken(SlowModel):
        def step(self, image, cond, state, steps):  # type: ignore[no-untyped-def]
            raise ValueError("model exploded")

    engine = StreamEngine(Broken(0), device="cpu")
    engine.start(media / "walk.mkv")
    with pytest.raises(ValueError, match="exploded"):
        engine.wait(timeout=10)
    assert not engine.running


def test_frames_made_before_a_model_failure_are_still_written(media: Path) -> None:
    class FailsAtSix(SlowModel):
        def step(self, image, cond, state, steps):  # type: ignore[no-untyped-def]
            self.made = getattr(self, "made", 0) + 1
            if self.made == 6:
                raise ValueError("model exploded")
            return image, state

    class SlowSink(Sink):
        def __init__(self) -> None:
            self.written: list[int] = []

        def write(self, image: np.ndarray, pts: float | None) -> None:
            time.sleep(0.1)  # the made frames wait in the output queue when the model fails
            self.written.append(len(self.written))

    sink = SlowSink()
    engine = StreamEngine(FailsAtSix(0), device="cpu")
    engine.start(media / "walk.mkv", output=sink, mode="offline")
    with pytest.raises(ValueError, match="exploded"):
        engine.wait(timeout=10)
    assert len(sink.written) == 5  # every frame the model made before it failed


def test_context_manager_stops_the_stream(media: Path) -> None:
    with StreamEngine("identity", device="cpu") as engine:
        engine.start(media / "bottle-detection.mp4", mode="live")
        time.sleep(0.3)
        assert engine.running
    assert not engine.running


class SlowStartModel(RecordingModel):
    """init_state() waits until released: a reset can land while a state is being made."""

    def __init__(self) -> None:
        super().__init__()
        self.seeds: list[int | None] = []
        self.in_init = threading.Event()
        self.finish_init = threading.Event()

    def init_state(self, height: int, width: int, seed: int | None = None) -> int:
        self.seeds.append(seed)
        self.in_init.set()
        self.finish_init.wait(5)
        return 0


def test_a_seed_set_while_a_state_is_being_made_is_not_lost() -> None:
    model = SlowStartModel()
    engine = StreamEngine(model, device="cpu")
    frame = np.zeros((64, 64, 3), np.uint8)
    first = threading.Thread(target=engine.process, args=(frame,))
    first.start()
    assert model.in_init.wait(5)
    engine.set_seed(5)  # lands inside init_state()
    model.finish_init.set()
    first.join(5)
    engine.process(frame)
    assert model.seeds == [None, 5]


def test_fp16_on_cpu_warns_and_uses_float32() -> None:
    with pytest.warns(RuntimeWarning, match="fp16"):
        engine = StreamEngine("identity", device="cpu", fp16=True)
    assert engine.dtype == "float32"


def test_precision_defaults_to_fp16_on_cuda_only() -> None:
    assert resolve_dtype("cuda") == resolve_dtype("cuda:1") == "float16"
    assert resolve_dtype("cuda", fp16=False) == "float32"
    assert resolve_dtype("cpu") == "float32"
    assert StreamEngine("identity", device="cpu").dtype == "float32"


def test_bad_engine_arguments_are_user_errors() -> None:
    with pytest.raises(UserError, match="unknown model"):
        StreamEngine("no-such-model", device="cpu")
    with pytest.raises(UserError, match="max_steps"):
        StreamEngine("identity", device="cpu", max_steps=0)
    with pytest.raises(UserError, match="unknown device"):
        StreamEngine("identity", device="tpu")
    engine = StreamEngine("identity", device="cpu")
    with pytest.raises(UserError, match="empty"):
        engine.set_prompt("   ")
    with pytest.raises(UserError, match="1000"):
        engine.set_prompt("x" * 1001)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_memory_stays_flat_over_a_long_stream() -> None:
    rng = np.random.default_rng(0)
    pool = [rng.integers(0, 256, (72, 128, 3), dtype=np.uint8) for _ in range(8)]

    def frames(n: int):  # type: ignore[no-untyped-def]
        for i in range(n):
            yield pool[i % len(pool)]

    engine = StreamEngine("identity", device="cpu")
    for _ in engine.stream(open_source(frames(1000))):
        pass
    before = _rss_bytes()
    count = sum(1 for _ in engine.stream(open_source(frames(20000))))
    growth = _rss_bytes() - before
    assert count == 20000
    assert growth < 8 * 1024 * 1024, f"RSS grew by {growth / 1e6:.1f} MB over 20000 frames"


def test_stream_of_a_short_source_ends() -> None:
    engine = StreamEngine("identity", device="cpu", resolution=(32, 48))
    for _ in range(20):  # a one-frame source may finish before the caller starts reading
        frames = list(engine.stream([np.zeros((64, 64, 3), np.uint8)]))
        assert [f.shape for f in frames] == [(32, 48, 3)]


def test_a_step_count_the_model_cannot_run_is_refused_before_anything_opens(
    media: Path, tmp_path: Path
) -> None:
    class OneStep(RecordingModel):
        @property
        def info(self) -> ModelInfo:
            return ModelInfo(name="one-step", description="runs one step", max_steps=1)

    with pytest.raises(UserError, match="at most 1 step"):
        StreamEngine(OneStep(), device="cpu", max_steps=2)
    assert StreamEngine(RecordingModel(), device="cpu", max_steps=3).max_steps == 3  # any
    with pytest.raises(UserError, match="mirage-lsd-v1 runs at most 4"):
        StreamEngine("mirage-lsd-v1", device="cpu", max_steps=5, compile=False)
    assert StreamEngine("identity", device="cpu", max_steps=50).max_steps == 50


def test_a_failure_is_raised_once_so_cleanup_after_handling_it_does_not_raise(
    media: Path,
) -> None:
    class Broken(SlowModel):
        def step(self, image, cond, state, steps):  # type: ignore[no-untyped-def]
            raise ValueError("model exploded")

    with StreamEngine(Broken(0), device="cpu") as engine:
        engine.start(media / "walk.mkv")
        with pytest.raises(ValueError, match="exploded"):
            engine.wait(timeout=10)
        stats = engine.stop()  # handled above: stopping for the stats does not raise again
        assert not stats.running
    engine.close()
    # a failure nobody waited for is raised by the first stop()
    engine.start(media / "walk.mkv")
    deadline = time.monotonic() + 10
    while engine.running and time.monotonic() < deadline:  # the first frame fails it
        time.sleep(0.05)
    with pytest.raises(ValueError, match="exploded"):
        engine.stop()
    engine.stop()


def test_stop_from_on_frame_returns_at_once_and_the_processed_frames_are_written(
    media: Path,
) -> None:
    class SlowSink(Sink):
        def __init__(self) -> None:
            self.written = 0

        def write(self, image: np.ndarray, pts: float | None) -> None:
            time.sleep(0.05)  # slower than the model: the output queue stays full
            self.written += 1

    engine = StreamEngine("identity", device="cpu", resolution=(48, 64))
    sink, seen, errors = SlowSink(), [], []

    def on_frame(image: np.ndarray, info) -> None:  # type: ignore[no-untyped-def]
        seen.append(info.index)
        if info.index == 3:
            engine.stop()
            try:
                engine.wait()
            except RuntimeError as exc:
                errors.append(str(exc))

    start = time.monotonic()
    engine.start(media / "walk.mkv", output=sink, on_frame=on_frame, mode="offline")
    stats = engine.wait(timeout=20)
    assert time.monotonic() - start < 10  # stopping from the callback used to stall 30 s
    assert not stats.running
    assert errors and "on_frame" in errors[0]
    assert 4 <= sink.written == len(seen) < 89
    assert stats.frames_written == sink.written


def test_stop_with_a_stream_nobody_reads_any_more_does_not_stall(media: Path) -> None:
    engine = StreamEngine("identity", device="cpu", resolution=(48, 64))
    frames = engine.stream(media / "walk.mkv")
    next(frames)
    time.sleep(0.3)  # the output thread is now blocked handing over the next frames
    start = time.monotonic()
    engine.stop()
    assert time.monotonic() - start < 5 and not engine.running
    frames.close()


def test_process_keeps_its_own_stats_and_starts_afresh_after_a_stream(media: Path) -> None:
    model = RecordingModel()
    engine = StreamEngine(model, device="cpu")
    frame = np.zeros((48, 64, 3), np.uint8)
    for _ in range(3):
        engine.process(frame)
    stats = engine.stats()
    assert (stats.mode, stats.frames_in, stats.frames_out) == ("process", 3, 3)
    assert stats.size == (48, 64)
    assert stats.fps > 0 and stats.ttff_ms is not None
    assert stats.stages_ms["decode"] is None  # frames come decoded
    engine.start(media / "walk.mkv", mode="offline", max_frames=2)
    engine.wait()
    engine.process(frame)
    stats = engine.stats()
    assert (stats.mode, stats.frames_in, stats.frames_out) == ("process", 1, 1)
    assert model.states == [0, 1, 2, 0, 1, 0]  # no history from the stream before


def test_decode_time_of_a_paced_file_leaves_out_the_wait_for_its_frames(media: Path) -> None:
    engine = StreamEngine("identity", device="cpu", resolution=(48, 64))
    engine.start(media / "walk.mkv", mode="live", max_frames=15)  # 30 fps, played in time
    stats = engine.wait(timeout=20)
    assert stats.frames_in == 15
    # a frame is due every 33 ms: with the wait counted, decode read about that
    assert stats.stages_ms["decode"] < 0.5 * 1000 / 30


def test_skipped_corrupt_frames_show_in_the_stats_while_it_runs(
    media: Path, tmp_path: Path
) -> None:
    """A live status line ("corrupt N") and a studio read stats mid-stream, not at its end."""
    clip = tmp_path / "corrupt.mkv"
    make_clip_with_a_corrupt_frame(media / "walk.mkv", clip)  # packet 10 of 20 is garbage
    model = RecordingModel()
    model.hold_at = 15  # frame 16 of 19 waits in the model until the stats are read
    engine = StreamEngine(model, device="cpu")
    engine.start(clip, output="null")
    assert model.holding.wait(20)
    during = engine.stats()
    model.release.set()
    final = engine.wait(timeout=20)
    assert during.corrupt_frames == 1 and final.corrupt_frames == 1
    assert final.frames_written == 19


def test_frames_thrown_away_after_a_failure_are_counted(media: Path) -> None:
    class FailsAtSix(SlowModel):
        def step(self, image, cond, state, steps):  # type: ignore[no-untyped-def]
            self.made = getattr(self, "made", 0) + 1
            if self.made == 6:
                time.sleep(0.2)  # capture fills the input queue meanwhile
                raise ValueError("model exploded")
            return image, state

    engine = StreamEngine(FailsAtSix(0), device="cpu")
    engine.start(media / "walk.mkv", mode="offline")
    with pytest.raises(ValueError, match="exploded"):
        engine.wait(timeout=10)
    stats = engine.stats()
    assert stats.frames_out == 5 and stats.dropped_input >= 1
    assert stats.frames_in == stats.frames_out + stats.dropped + 1  # + the frame that failed


def test_render_opens_a_new_window_for_a_new_size_or_after_a_close(
    media: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")  # SDL's headless driver
    import pygame

    engine = StreamEngine("identity", device="cpu")
    engine.render(np.zeros((48, 64, 3), np.uint8))
    engine.render(np.zeros((96, 128, 3), np.uint8))  # a camera stepping up its size
    assert engine._window is not None and engine._window.size == (96, 128)
    pygame.event.post(pygame.event.Event(pygame.QUIT))
    engine.render(np.zeros((96, 128, 3), np.uint8))
    closed = engine._window
    assert closed.closed
    engine.render(np.zeros((96, 128, 3), np.uint8))  # closed by the user: not reopened
    assert engine._window is closed
    engine.start(media / "walk.mkv", on_frame=engine.render, mode="offline", max_frames=5)
    stats = engine.wait(timeout=20)
    assert engine._window is not closed and engine._window.frames_written == 5
    assert stats.frames_out == 5
    engine.close()


def test_bad_stream_arguments_are_user_errors(media: Path) -> None:
    with pytest.raises(UserError, match=r"resolution must be \(height, width\)"):
        StreamEngine("identity", device="cpu", resolution="1280x720")  # type: ignore[arg-type]
    engine = StreamEngine("identity", device="cpu", resolution=(np.int64(48), 64))
    with pytest.raises(UserError, match="max_frames"):
        engine.start(media / "walk.mkv", max_frames="10")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="output="):
        engine.start(media / "walk.mkv", on_frame="window")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="live, offline or bench"):
        engine.start(media / "walk.mkv", mode="fast")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="empty frame"):
        engine.process(np.zeros((0, 8, 3), np.uint8))
    assert not engine.running


def test_letterbox_bars_stay_black_whatever_the_model_paints(media: Path) -> None:
    engine = StreamEngine(SlowModel(delay=0), device="cpu", resolution=(120, 120), fit="letterbox")
    frame = np.full((90, 160, 3), 100, np.uint8)  # 16:9 in a square: bars above and below
    out = engine.process(frame)  # the model inverts: the bars would come out white
    assert out.shape == (120, 120, 3)
    assert out[:26].max() == 0 and out[-26:].max() == 0
    assert (out[40:80] == 155).all()  # the picture itself is the model's


def test_a_second_start_or_a_process_call_while_streaming_is_refused(media: Path) -> None:
    model = RecordingModel()
    model.hold_at = 2
    engine = StreamEngine(model, device="cpu")
    engine.start(media / "walk.mkv", mode="offline", max_frames=6)
    try:
        assert model.holding.wait(5)
        with pytest.raises(RuntimeError, match="already running"):
            engine.start(media / "walk.mkv", mode="offline")
        with pytest.raises(RuntimeError, match="while a stream is running"):
            engine.process(np.zeros((64, 64, 3), np.uint8))
    finally:
        model.release.set()
    stats = engine.wait()
    assert stats.frames_out == 6 and len(model.seen) == 6  # the first stream went on


def test_a_sink_slower_than_the_model_drops_the_oldest_outputs_live_and_counts_them(
    media: Path,
) -> None:
    delivered: list[int] = []

    def slow_sink(image: np.ndarray, info: object) -> None:
        delivered.append(info.index)  # type: ignore[attr-defined]
        time.sleep(0.1)  # 10 fps out of a 30 fps clip, with a fast model

    engine = StreamEngine(SlowModel(delay=0.0), device="cpu", resolution=(90, 160))
    engine.start(media / "bottle-detection.mp4", on_frame=slow_sink, mode="live", max_frames=45)
    stats = engine.wait()
    assert stats.dropped_output > 0
    assert stats.dropped == stats.dropped_input + stats.dropped_output
    assert stats.frames_out == len(delivered) + stats.dropped_output
    assert delivered == sorted(delivered)  # the newest frames win, in order


def test_prompts_that_are_not_clean_text_are_refused_in_one_line() -> None:
    from mirage_lsd.engine.prompt import validate_prompt

    cases = {
        "a\x00b": "NUL character",
        42: "prompt must be text, got int",
        "\ud800": "not valid UTF-8",
        b"\xff\xfe": "not valid UTF-8",
        "  \n ": "prompt is empty",
        "x" * 1001: "1001 characters long",
    }
    for bad, message in cases.items():
        with pytest.raises(UserError, match=message) as err:
            validate_prompt(bad)
        assert "\n" not in str(err.value)
    assert validate_prompt(b" pencil sketch\n") == "pencil sketch"
    engine = StreamEngine(RecordingModel(), device="cpu", prompt="ab")
    for frames in (-1, 1.5, True):
        with pytest.raises(UserError, match="transition_frames must be 0 or more"):
            engine.set_prompt("abcd", transition_frames=frames)  # type: ignore[arg-type]
    assert engine.prompt == "ab"


def test_a_prompt_changed_again_mid_transition_blends_on_from_where_it_is() -> None:
    from mirage_lsd.engine.prompt import PromptSchedule

    schedule = PromptSchedule(4.0, lambda a, b, w: a + (b - a) * w)
    schedule.set(8.0, 4)
    assert [schedule.next() for _ in range(2)] == [5.0, 6.0]  # halfway to 8
    schedule.set(2.0, 2)  # a new target: from 6, where the stream is, not from 4 or 8
    assert [schedule.next() for _ in range(3)] == [4.0, 2.0, 2.0]
    schedule.set(10.0, 0)  # no transition: at the next frame
    assert schedule.next() == 10.0 and schedule.current == 10.0


class LaggingModel(StreamModel):
    """Hands out each frame two frames late, as a pipelined (stream_batch) model does."""

    def lag_frames(self, steps: int) -> int:
        return 2

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(name="lagging", description="two frames late")

    def encode_prompt(self, text: str | None) -> object:
        return text

    def init_state(self, height: int, width: int, seed: int | None = None) -> list[np.ndarray]:
        return []

    def step(self, image, cond, state, steps):  # type: ignore[no-untyped-def]
        state = [*state, image.copy()][-3:]
        return state[0], state


def test_a_lagging_models_output_is_labelled_with_the_frame_it_was_made_from() -> None:
    def numbered(count: int):  # type: ignore[no-untyped-def]
        for i in range(count):
            yield np.full((16, 16, 3), i, np.uint8)  # frame i shows i

    seen: list[tuple[int, int]] = []
    engine = StreamEngine(LaggingModel(), device="cpu")
    engine.start(
        numbered(40),
        mode="bench",  # every frame, each when the model is free
        on_frame=lambda image, info: seen.append((int(image[0, 0, 0]), info.index)),
    )
    engine.wait(timeout=30)
    assert len(seen) >= 4
    assert seen[0][0] == seen[1][0] == seen[2][0]  # the model's first frame, three times
    assert all(shown == index for shown, index in seen)  # labelled with the frame it shows


def test_frames_read_before_the_input_fails_are_still_written(tmp_path: Path) -> None:
    def frames():  # type: ignore[no-untyped-def]
        for i in range(20):
            yield np.full((64, 64, 3), i * 10, np.uint8)
        yield np.zeros((64, 64, 3), np.float32)  # a bad frame: the input fails here

    engine = StreamEngine("identity", device="cpu")
    engine.start(frames(), output=tmp_path / "out.mp4", mode="offline")
    with pytest.raises(UserError, match="uint8"):
        engine.wait(timeout=30)
    assert decoded_frames(tmp_path / "out.mp4") == 20  # none of the queued ones thrown away


def test_a_failure_nobody_waited_for_is_logged_by_the_next_start(
    media: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def failing():  # type: ignore[no-untyped-def]
        yield np.zeros((64, 64, 3), np.uint8)
        yield "not a frame"

    engine = StreamEngine("identity", device="cpu")
    engine.start(failing(), mode="offline", on_frame=lambda image: None)
    deadline = time.monotonic() + 30
    while engine.running:  # polled, as a UI would, with no wait() or stop()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with caplog.at_level("WARNING"):
        engine.start(media / "walk.mkv", mode="offline", max_frames=3, on_frame=lambda i: None)
    assert "the previous stream failed" in caplog.text and "frame 1: expected" in caplog.text
    assert engine.wait(timeout=30).frames_out == 3  # the new stream is not blamed for it


def test_a_refused_start_inside_a_stream_loop_leaves_the_loop_stoppable(media: Path) -> None:
    engine = StreamEngine("identity", device="cpu")
    for _ in engine.stream(media / "walk.mkv", mode="offline"):
        with pytest.raises(RuntimeError, match="already running"):
            engine.start(media / "walk.mkv")
        time.sleep(0.5)  # the stream fills the loop's queue and waits on it
        engine.stop(timeout=10)  # closes that queue, so the stream can end
        assert not engine.running
        break
