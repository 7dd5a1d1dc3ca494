"""`StreamEngine`: the SDK's front door.

engine = StreamEngine(model="identity", resolution=(720, 1280))
engine.start(input_source=0, on_frame=engine.render)
engine.set_prompt("pencil sketch", transition_frames=15)
engine.wait()
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from numbers import Integral
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mirage_lsd.device import (
    THREAD_ENV,
    check_threads,
    resolve_device,
    resolve_dtype,
    usable_cores,
)
from mirage_lsd.engine.channels import Channel, Closed
from mirage_lsd.engine.pipeline import Mode, Pipeline
from mirage_lsd.engine.processor import FrameProcessor
from mirage_lsd.engine.prompt import PromptSchedule, validate_prompt
from mirage_lsd.engine.stats import Stats, StatsRecorder
from mirage_lsd.errors import UserError
from mirage_lsd.frame import FrameInfo
from mirage_lsd.geometry import FitMode, check_size
from mirage_lsd.models.base import StreamModel
from mirage_lsd.models.registry import DEFAULT_MODEL, LoadOptions, load_model
from mirage_lsd.sinks import Sink, is_live_output, open_sink
from mirage_lsd.sources import Source, open_source

if TYPE_CHECKING:
    from mirage_lsd.sinks.window import WindowSink

log = logging.getLogger(__name__)

InputSpec = Source | str | int | PathLike[str] | Iterable[np.ndarray]
OnFrame = Callable[..., Any]
DEFAULT_FPS = 30.0
LOOK_KEY_TRANSITION = 15  # frames over which a look picked by a window's arrow key blends in


class StreamEngine:
    """Transforms a video stream frame by frame with a model that follows a prompt.

    Args:
        model: a registered model name (see `mirage-lsd models`) or a `StreamModel`.
        device: "auto" (CUDA when present, else CPU), "cpu" or "cuda".
        fp16: half precision; None (the default) uses it on CUDA only, True on CPU falls
            back to float32 with a warning.
        max_steps: upper bound on denoising steps per frame.
        resolution: output (height, width); None keeps the input size.
        fit: "crop" (fill, center crop) or "letterbox" (fit, pad) to keep aspect ratio.
        prompt: the initial prompt.
        strength: 0 (the input) to 1 (all transformed); see `set_strength`.
        seed: the stream's fixed noise (None: the model's default); see `set_seed`.
        model_options: options of the diffusers backend when `model` is a hub id, folder
            or .safetensors file (see `DiffusersOptions`: strength, guidance, loras, ...).
        compile: torch.compile the model. The built-in model compiles its network on a
            background thread; the stream runs uncompiled until it is ready (~40 s the
            first time on 2 cores, seconds from then on), then about 1.5x faster on CPU
            (about 2x on CUDA, replayed as a CUDA graph). None (the default): yes for the
            built-in model on CPU when a C++ compiler is found, on CUDA when Triton and
            a C compiler are (`MIRAGE_LSD_COMPILE=0|1` overrides), no otherwise.
        downscale: the built-in model denoises a frame / `downscale` image; None picks it
            per size (4, its trained value, up to about 40,000 pixels; 5 at 1280x720).
        threads: torch's threads for the model, set on the thread that runs it (torch
            keeps one count per thread; threads started later take it too), over an
            earlier `torch.set_num_threads`. None: the model's choice, every physical
            core, but one fewer for the built-in model on CPU, which leaves a core to
            decoding and encoding (2 cores, 512x512: 100.6 against 78.8 FPS); torch's
            own setting when OMP_NUM_THREADS or MKL_NUM_THREADS is set.
    """

    def __init__(
        self,
        model: str | StreamModel = DEFAULT_MODEL,
        *,
        device: str = "auto",
        fp16: bool | None = None,
        max_steps: int = 1,
        resolution: tuple[int, int] | None = None,
        fit: FitMode = "crop",
        prompt: str | None = None,
        strength: float = 1.0,
        seed: int | None = None,
        model_options: dict[str, Any] | None = None,
        compile: bool | None = None,
        downscale: int | None = None,
        threads: int | None = None,
    ) -> None:
        if threads is not None:
            check_threads(threads)
        if not isinstance(max_steps, int) or not 1 <= max_steps <= 50:
            raise UserError(f"max_steps must be a whole number from 1 to 50, got {max_steps!r}")
        if fit not in ("crop", "letterbox"):
            raise UserError(f"unknown fit mode '{fit}': use crop or letterbox")
        self.resolution = _check_resolution(resolution)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(self.device, fp16)
        self.max_steps = max_steps
        self.fit: FitMode = fit
        if isinstance(model, StreamModel):
            self.model = model
        else:
            diffusers = None
            if model_options:
                from mirage_lsd.models.diffusers_backend import DiffusersOptions

                diffusers = DiffusersOptions.from_kwargs(**model_options)
            opts = LoadOptions(
                self.device,
                self.dtype,
                max_steps,
                diffusers=diffusers,
                compile=compile,
                downscale=downscale,
            )
            self.model = load_model(model, opts)
        if max_steps > self.model.info.max_steps:
            raise UserError(
                f"{self.model.info.name} runs at most {self.model.info.max_steps} step(s) per "
                f"frame, not {max_steps}: ask for 1 to {self.model.info.max_steps} "
                "(--steps, max_steps)"
            )
        text = validate_prompt(prompt) if prompt is not None else None
        self._prompts = PromptSchedule(self.model.encode_prompt(text), self.model.mix_prompts)
        self._prompts.text = text
        self._processor = FrameProcessor(self.model, self._prompts, self.resolution, fit, max_steps)
        if threads is None and not any(os.environ.get(v, "").strip() for v in THREAD_ENV):
            chosen = self.model.stream_threads(usable_cores())
            threads = check_threads(chosen, f"{self.model.info.name}'s stream_threads()")
        self._processor.threads = threads
        self.set_strength(strength)
        self.set_seed(seed)
        self._pipeline: Pipeline | None = None
        self._recorder = self._new_recorder("process")
        self._window: WindowSink | None = None
        self._window_stream: Pipeline | None = None  # the stream that opened the window
        self._stream_frames: Channel[np.ndarray] | None = None  # what `stream()` yields from
        self._lock = threading.Lock()

    # -- prompts and state -----------------------------------------------------
    @property
    def prompt(self) -> str | None:
        return self._prompts.text

    @property
    def threads(self) -> int | None:
        """torch's threads for the model (None: torch's own, from OMP_NUM_THREADS or
        MKL_NUM_THREADS); the identity model runs no torch and uses none."""
        return self._processor.threads

    def set_prompt(self, text: str, transition_frames: int = 0) -> None:
        """Change the prompt, also while running; blended over `transition_frames` frames."""
        bad_type = not isinstance(transition_frames, int) or isinstance(transition_frames, bool)
        if bad_type or transition_frames < 0:
            raise UserError(f"transition_frames must be 0 or more, got {transition_frames!r}")
        text = validate_prompt(text)
        cond = self.model.encode_prompt(text)
        self._prompts.set(cond, transition_frames, text)

    def reset(self) -> None:
        """Drop the stream's history (the model starts over at the next frame)."""
        self._processor.reset()

    @property
    def strength(self) -> float:
        return self._processor.strength

    def set_strength(self, strength: float) -> None:
        """How much of the transformed frame is shown, 0 (the input) to 1 (all); also live.

        Cheap and model-agnostic: a blend with the input after the model. (A diffusers
        model's own img2img strength is its `strength` model option, fixed at load.)
        """
        if not isinstance(strength, int | float) or not 0.0 <= strength <= 1.0:
            raise UserError(f"strength must be from 0 to 1, got {strength!r}")
        self._processor.strength = float(strength)

    @property
    def seed(self) -> int | None:
        return self._processor.seed

    def set_seed(self, seed: int | None) -> None:
        """Pick the stream's fixed noise (None: the model's default); restarts the stream."""
        if seed is not None and (
            not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63
        ):
            raise UserError(f"seed must be a whole number from 0 to 2**63 - 1, got {seed!r}")
        if seed != self._processor.seed:
            self._processor.seed = seed
            self._processor.reset()

    # -- one frame at a time -----------------------------------------------------
    def process(self, frame: np.ndarray) -> np.ndarray:
        """Transform one (H, W, 3) uint8 RGB frame now; consecutive calls form one stream.

        Without a fixed `resolution`, a frame of another size starts a new stream at that
        size (a browser camera stepping up its resolution, for example).
        """
        if self.running:
            raise RuntimeError("process() cannot be used while a stream is running")
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3:
            raise UserError("process() takes an (H, W, 3) uint8 RGB numpy array")
        if frame.dtype != np.uint8:
            raise UserError(f"process() takes uint8 frames, got {frame.dtype}")
        if frame.shape[0] == 0 or frame.shape[1] == 0:
            raise UserError(f"process() got an empty frame of shape {frame.shape}")
        recorder = self._recorder
        if recorder.mode != "process":  # after a stream: new stats, no history carried over
            recorder = self._recorder = self._new_recorder("process")
            self.model.plan_stream(True, None)  # frames come as they come, for as long
            self._processor.restart()
        if recorder.start_time is None:  # the clock starts with the first frame
            recorder.started()
        seen = self._processor.input_size
        if self.resolution is None and seen is not None and seen != frame.shape[:2]:
            self._processor.restart()
        t0 = time.perf_counter()
        image, stage_ms = self._processor(np.ascontiguousarray(frame))
        recorder.captured(None, dropped=False)
        recorder.output_ready((time.perf_counter() - t0) * 1000.0, stage_ms, time.monotonic())
        recorder.size = image.shape[:2]
        return image

    # -- streams ---------------------------------------------------------------
    def start(
        self,
        input_source: InputSpec = 0,
        on_frame: OnFrame | None = None,
        output: str | PathLike[str] | Sink | None = None,
        *,
        mode: Mode | None = None,
        max_frames: int | None = None,
        loop: bool = False,
    ) -> StreamEngine:
        """Start streaming in background threads and return at once.

        `on_frame(image)` or `on_frame(image, info)` is called with every output
        frame (`info` is a `FrameInfo`: index, capture time, latency). `output` is
        a sink or a sink spec (file, folder, "window", "virtualcam", URL, "null").
        `mode`: "live" (newest frame wins, stale frames dropped), "offline" (every
        frame in order) or "bench" (every frame, captured when the model is free);
        by default live for cameras, screens and live streams, offline for files, image
        folders and videos on demand (URLs with a duration). Live plays a file or a video
        on demand at its own frame rate (`Source.pace()`), and so does the default when
        the output is watched as it plays (a window, a virtual camera, a stream URL, a
        sink whose `live` is set, or `on_frame=engine.render`): a model faster than the
        clip would fast-forward it. `mode="offline"` keeps it at the model's speed.
        `max_frames` caps the frames read from the source: offline and bench each one
        gives an output frame; live, those the model was too slow for are dropped.
        """
        return self._launch(input_source, on_frame, output, mode, max_frames, loop, None)

    def _launch(
        self,
        input_source: InputSpec,
        on_frame: OnFrame | None,
        output: str | PathLike[str] | Sink | None,
        mode: Mode | None,
        max_frames: int | None,
        loop: bool,
        on_finish: Callable[[], None] | None,
        stream_frames: Channel[np.ndarray] | None = None,
    ) -> StreamEngine:
        if self.running:
            raise RuntimeError("the engine is already running: stop() it first")
        if mode not in (None, "live", "offline", "bench"):
            raise UserError(f"unknown mode '{mode}': use live, offline or bench")
        if max_frames is not None and (
            not isinstance(max_frames, int) or isinstance(max_frames, bool) or max_frames < 0
        ):
            raise UserError(f"max_frames must be a whole number >= 0, got {max_frames!r}")
        if on_frame is not None and not callable(on_frame):
            raise UserError(
                f"on_frame must be a function, got {on_frame!r} (a sink spec goes in output=)"
            )
        # 1. open the input: its kind, and whether the output is watched, decide the mode
        source = (
            input_source
            if isinstance(input_source, Source)
            else open_source(input_source, loop=loop)
        )
        # a window preview of a file render must not cost the file frames or its audio
        watched = is_live_output(output) if output is not None else on_frame == self.render
        if mode == "live" or (mode is None and watched):
            source.pace()
        run_mode: Mode = mode or ("live" if source.live else "offline")
        try:
            # a benchmark measures the steady state however many frames it takes
            frames = None if run_mode == "bench" else expected_frames(source)
            if max_frames is not None and run_mode != "bench":
                frames = float(max_frames) if frames is None else min(frames, float(max_frames))
            self.model.plan_stream(run_mode == "live", frames)
            lag = self.model.lag_frames(self.max_steps)
            if lag and run_mode == "offline":  # its last frames would never come out
                raise UserError(
                    f"--batch-mode stream_batch outputs each frame {lag} frame(s) late, so a "
                    "file would lose its last frames: use it for live streams, latency_first "
                    "for files"
                )
            # 2. open the output now when its size is known, so bad outputs fail here
            fps = source.fps or DEFAULT_FPS
            self._processor.restart()  # each start() is a new stream: no history carried over
            size = self.resolution or source.size
            sink = self._resolve_sink(output, size, fps, run_mode == "live", source)
        except BaseException:
            source.close()
            raise
        # 3. wire the threads; a failure of the last stream nobody waited for is not lost
        previous = self._pipeline
        error = previous.take_error() if previous is not None else None
        if error is not None:
            log.warning("the previous stream failed, and no wait() or stop() said so: %s", error)
        self._stream_frames = stream_frames
        self._recorder = self._new_recorder(run_mode)
        self._recorder.size = size
        deliver = self._make_deliver(sink, output, fps, run_mode == "live", source, on_frame)
        self._pipeline = Pipeline(
            source,
            self._processor,
            deliver,
            self._recorder,
            run_mode,
            max_frames=max_frames,
            on_finish=self._chain(self._close_outputs, on_finish),
        )
        self._pipeline.start()
        return self

    def wait(self, timeout: float | None = None) -> Stats:
        """Block until the source ends (or `timeout`); re-raise a pipeline failure (once)
        when the stream has ended, so the frames made before it are written and the
        output is finalized first."""
        pipeline = self._pipeline
        if pipeline is not None:
            if pipeline.owns_current_thread:
                raise RuntimeError("wait() cannot be called from on_frame: use stop()")
            try:
                ended = pipeline.join(timeout)
            except KeyboardInterrupt:  # a script's Ctrl-C: finalize the output, then stop
                try:
                    self.stop()
                except Exception as exc:  # the Ctrl-C is what the script is told about
                    log.warning("the stream failed as it stopped: %s", exc)
                raise
            if ended:
                self._raise_error(pipeline)
        return self.stats()

    def stop(self, timeout: float | None = 30.0) -> Stats:
        """Stop taking frames, write out what was processed, finalize outputs.

        From `on_frame` (the output thread) it only asks the stream to stop and returns:
        the frames already processed are written after the callback returns.
        """
        pipeline = self._pipeline
        if pipeline is not None:
            pipeline.request_stop()
            if self._stream_frames is not None:  # frames made but not yet handed to a
                self._stream_frames.close()  # `stream()` are dropped; those handed stay
            if pipeline.owns_current_thread:
                return self.stats()
            if pipeline.join(timeout):
                self._raise_error(pipeline)
        return self.stats()

    def stream(
        self, source: InputSpec, *, mode: Mode | None = None, max_frames: int | None = None
    ) -> Iterator[np.ndarray]:
        """Yield output frames of `source` as they are ready; stops when the loop ends."""
        frames: Channel[np.ndarray] = Channel(4, "block")

        def collect(image: np.ndarray) -> None:
            try:
                frames.put(image)
            except Closed:
                self._pipeline_request_stop()

        self._launch(source, collect, None, mode, max_frames, False, frames.close, frames)
        try:
            while True:
                try:
                    yield frames.get()
                except Closed:
                    break
        finally:
            frames.close(discard=True)
            self.stop()

    @property
    def running(self) -> bool:
        return self._pipeline is not None and self._pipeline.alive

    def stats(self) -> Stats:
        """Telemetry of the current or last stream (or of `process()` calls)."""
        stats = self._recorder.snapshot(self.running)
        prompt = {"text": self._prompts.text, **self.model.describe_prompt(self._prompts.current)}
        lag = self.model.lag_frames(self.max_steps)
        extra = {**stats.extra, "prompt": prompt, "lag_frames": lag}
        return replace(stats, extra=extra)

    def render(self, image: np.ndarray, info: FrameInfo | None = None) -> None:
        """Show a frame in a window (use as `on_frame=engine.render`). Closing it stops."""
        with self._lock:
            window = self._window
            if window is not None and window.closed and self._window_stream is self._pipeline:
                self._pipeline_request_stop()  # closed by the user during this stream
                return
            if window is None or window.closed or window.size != image.shape[:2]:
                from mirage_lsd.sinks.window import WindowSink

                if window is not None:
                    window.close()
                window = self._window = WindowSink(size=image.shape[:2])
                self._window_stream = self._pipeline
                self._watch_keys(window)
        window.write(image, None if info is None else info.pts)
        if window.closed:
            self._pipeline_request_stop()

    def close(self) -> None:
        """Stop any stream and close the window (also when stopping raised)."""
        try:
            self.stop()
        finally:
            with self._lock:
                if self._window is not None:
                    self._window.close()
                    self._window = None

    def __enter__(self) -> StreamEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------
    def _new_recorder(self, mode: str) -> StatsRecorder:
        info = self.model.info
        steps = self.model.steps_run(self.max_steps)  # what runs, if not what was asked
        return StatsRecorder(info.name, self.device, steps, mode)

    def _pipeline_request_stop(self) -> None:
        if self._pipeline is not None:
            self._pipeline.request_stop()

    @staticmethod
    def _raise_error(pipeline: Pipeline) -> None:
        """Raise the stream's failure the first time it is asked for, then never again."""
        error = pipeline.take_error()
        if error is not None:
            raise error

    @staticmethod
    def _chain(*fns: Callable[[], None] | None) -> Callable[[], None]:
        def run() -> None:
            for fn in fns:
                if fn is not None:
                    fn()

        return run

    def _resolve_sink(
        self,
        output: str | PathLike[str] | Sink | None,
        size: tuple[int, int] | None,
        fps: float,
        live: bool,
        source: Source,
    ) -> Sink | None:
        if output is None or isinstance(output, Sink):
            self._sink = output
            return output
        self._sink = None
        if not isinstance(output, str | PathLike):
            raise UserError(
                f"output must be a sink spec (a path, window, virtualcam, a URL, null) or a "
                f"Sink, got {output!r}"
            )
        if not is_live_output(output):  # a file or folder: never the input itself
            self._check_not_input(Path(os.path.expanduser(os.fspath(output))), source)
        if size is None:
            return None  # opened at the first frame, when the size is known
        audio = None if live else source.audio_path
        self._sink = open_sink(output, size=size, fps=fps, live=live, audio_from=audio)
        self._watch_keys(self._sink)
        return self._sink

    @staticmethod
    def _check_not_input(target: Path, source: Source) -> None:
        """Refuse an output file or folder that would overwrite the input."""
        try:
            if source.path is not None and target.exists() and target.samefile(source.path):
                raise UserError(f"the output {target} is the input file: choose another name")
            if target.is_dir() and any(target.samefile(d) for d in source.image_folders):
                raise UserError(
                    f"the output folder {target} holds the input images, which its frames "
                    "would overwrite: choose another folder"
                )
        except OSError as exc:  # a folder on the way that cannot be entered
            raise UserError(f"cannot write to {target}: {exc.strerror or exc}") from None

    def _make_deliver(
        self,
        sink: Sink | None,
        output: str | PathLike[str] | Sink | None,
        fps: float,
        live: bool,
        source: Source,
        on_frame: OnFrame | None,
    ) -> Callable[[np.ndarray, FrameInfo], None]:
        recorder = self._recorder
        callback = _adapt_callback(on_frame)
        audio = None if live else source.audio_path

        def deliver(image: np.ndarray, info: FrameInfo) -> None:
            if self._sink is None and output is not None:
                recorder.size = image.shape[:2]
                self._sink = open_sink(
                    output, size=image.shape[:2], fps=fps, live=live, audio_from=audio
                )
                self._watch_keys(self._sink)
            if self._sink is not None:
                t0 = time.perf_counter()
                # live: the capture clock (a looped or restarted source's pts jump back)
                self._sink.write(image, info.capture_time if live else info.pts)
                recorder.written((time.perf_counter() - t0) * 1000.0)
                if getattr(self._sink, "closed", False):
                    self._pipeline_request_stop()
            if callback is not None:
                callback(image, info)

        return deliver

    def _watch_keys(self, sink: Sink) -> None:
        """In a window, the arrow keys (or n and p) step through the model's looks."""
        from mirage_lsd.sinks.window import WindowSink  # no pygame until a window opens

        if isinstance(sink, WindowSink) and self.model.info.looks:
            sink.on_key = functools.partial(self._step_look, sink)

    def _step_look(self, window: WindowSink, key: str) -> None:
        """Next or previous look, blended over LOOK_KEY_TRANSITION frames (a VJ's cue)."""
        step = {"right": 1, "n": 1, "left": -1, "p": -1}.get(key)
        looks = self.model.info.looks
        if step is None:
            return
        text = self._prompts.text
        if text in looks:
            look = looks[(looks.index(text) + step) % len(looks)]
        else:  # free text, or no prompt: start from either end
            look = looks[0] if step > 0 else looks[-1]
        self.set_prompt(look, transition_frames=LOOK_KEY_TRANSITION)
        window.set_title(f"mirage-lsd: {look}")

    def _close_outputs(self) -> None:
        if self._sink is not None:
            self._sink.close()


def expected_frames(source: Source) -> float | None:
    """How many frames `source` will give, if known: its frame count, or its duration
    times its frame rate (30 when it has none); None for unbounded sources (cameras,
    live streams, looping files). A file paced as it plays still ends."""
    if source.loop:
        return None
    if source.frame_count:
        return float(source.frame_count)
    if source.duration_s:
        return source.duration_s * (source.fps or DEFAULT_FPS)
    return None


def _check_resolution(resolution: Any) -> tuple[int, int] | None:
    """(height, width) of whole numbers, or None; anything else is a one-line error."""
    if resolution is None:
        return None
    if (
        not isinstance(resolution, tuple | list)
        or len(resolution) != 2
        or not all(isinstance(v, Integral) and not isinstance(v, bool) for v in resolution)
    ):
        raise UserError(f"resolution must be (height, width) in pixels, got {resolution!r}")
    return check_size((resolution[0], resolution[1]))


def _adapt_callback(on_frame: OnFrame | None) -> Callable[[np.ndarray, FrameInfo], None] | None:
    """Call `on_frame(image)` or `on_frame(image, info)`, whichever it accepts."""
    if on_frame is None:
        return None
    try:
        params = inspect.signature(on_frame).parameters.values()
    except (TypeError, ValueError):
        return lambda image, info: on_frame(image)
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    takes_varargs = any(p.kind == p.VAR_POSITIONAL for p in params)
    if takes_varargs or len(positional) >= 2:
        return lambda image, info: on_frame(image, info)
    return lambda image, info: on_frame(image)
