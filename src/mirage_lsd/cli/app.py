"""The `mirage-lsd` command line: run, bench, models."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.exceptions import TyperException

from mirage_lsd.cli.diffusers_flags import with_diffusers_flags
from mirage_lsd.cli.errors import fail, guarded, setup_logging
from mirage_lsd.cli.options import CompileOpt, Fp16Opt, ThreadsOpt
from mirage_lsd.cli.progress import make_progress, status_text
from mirage_lsd.cli.serve import serve
from mirage_lsd.device import COMPILE_ENV, SHORT_STREAM
from mirage_lsd.engine.prompt import validate_prompt
from mirage_lsd.engine.stats import Stats
from mirage_lsd.engine.stream_engine import StreamEngine, expected_frames
from mirage_lsd.errors import UserError, first_line
from mirage_lsd.geometry import parse_size
from mirage_lsd.models.registry import DEFAULT_MODEL, available_models, check_model_name
from mirage_lsd.sinks import is_live_output
from mirage_lsd.sources import RetryPolicy, Source, open_source
from mirage_lsd.sources.network import redact_url

app = typer.Typer(
    name="mirage-lsd",
    help="Live-stream diffusion: transform live video with a prompt, in real time.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True, soft_wrap=True)  # one line stays one line in a log or pipe

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Model name or path.")]
SizeOpt = Annotated[
    str | None, typer.Option("--size", "-s", help="Output size WIDTHxHEIGHT (default: input).")
]
StepsOpt = Annotated[int, typer.Option("--steps", help="Denoising steps per frame.", min=1, max=50)]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
DownscaleOpt = Annotated[
    int | None,
    typer.Option(
        "--downscale",
        help="Built-in model: denoise at frame / N (default: 4, 5 at 720p; lower is finer).",
        min=1,
        max=16,
    ),
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")]


def _setup_logging(debug: bool) -> None:
    setup_logging(debug)
    if not debug:  # a warning is one line for the user, not a source location
        warnings.showwarning = _one_line_warning


def _one_line_warning(message: Warning | str, *args: object, **kwargs: object) -> None:
    console.print(f"warning: {message}", highlight=False, markup=False)


def _detach_from_terminal() -> None:
    """Point stdout and stderr at the null device: after a hangup, what the run still
    prints (progress, its summary) must not fail it."""
    with contextlib.suppress(OSError):
        null = os.open(os.devnull, os.O_WRONLY)
        for fd in (1, 2):
            os.dup2(null, fd)
        os.close(null)


class _StopOnSignal:
    """First Ctrl-C / SIGTERM (or SIGHUP: the terminal or the ssh session closed): stop
    cleanly and finalize outputs. Second: finalize the output with what it has and quit
    now."""

    def __init__(self, engine: StreamEngine) -> None:
        self.engine = engine
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopOnSignal:
        signals = [signal.SIGINT, signal.SIGTERM]
        # a hangup (not on Windows), unless `nohup` asked for the run to outlive the terminal
        if hasattr(signal, "SIGHUP") and signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
            signals.append(signal.SIGHUP)
        for sig in signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == getattr(signal, "SIGHUP", None):  # the terminal is gone: writing to it
            _detach_from_terminal()  # would fail, and the run with it, before its output is done
        if self.signal is not None:  # the file stays playable with what it has, unless
            closer = threading.Thread(target=self._close_outputs, daemon=True)
            closer.start()  # its writer is stuck (a stalled server): then quit anyway
            closer.join(timeout=3.0)
            raise SystemExit(128 + signum)
        self.signal = signum
        self._stop_stream()  # first: nothing below may keep the output from being finalized
        console.print("stopping: writing the frames already transformed (again to quit at once)")

    def _close_outputs(self) -> None:
        """Finalize the outputs on the way out; a failure (a full disk) is one line."""
        try:
            self.engine._close_outputs()
        except Exception as exc:
            reason = first_line(exc)
            console.print(f"warning: {reason}", highlight=False, markup=False)

    def started(self) -> None:
        """Call after engine.start(): a signal that came while it was opening stops it now."""
        if self.signal is not None:
            self._stop_stream()

    def _stop_stream(self) -> None:
        pipeline = self.engine._pipeline
        if pipeline is not None:
            pipeline.request_stop()

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _follow(engine: StreamEngine, total: int | None, live: bool, show: bool) -> Stats:
    """Wait for the stream, showing progress; return the final stats. It polls: an
    untimed wait (a thread join) is not interrupted by Ctrl-C on Windows."""
    if not show:
        while engine.running:
            engine.wait(timeout=0.2)
        return engine.wait()
    with make_progress(console, total, live) as progress:
        task = progress.add_task("stream", total=total, status="")
        while engine.running:
            engine.wait(timeout=0.2)
            stats = engine.stats()
            progress.update(task, completed=stats.frames_written, status=status_text(stats))
        stats = engine.wait()
        progress.update(task, completed=stats.frames_written, status=status_text(stats))
    return stats


@app.command()
@with_diffusers_flags
def run(
    input: Annotated[str, typer.Argument(help="Camera index, file, folder/glob, screen, URL.")],
    output: Annotated[
        str,
        typer.Option(
            "--output", "-o", help="File (.mp4 .mkv .webm), folder, window, virtualcam, URL, null."
        ),
    ],
    prompt: Annotated[
        str | None, typer.Option("--prompt", "-p", help="What it should look like.")
    ] = None,
    stdin_prompts: Annotated[
        bool,
        typer.Option(
            "--stdin-prompts",
            help="While it runs, take each line typed (or piped) on standard input as the new "
            "prompt.",
        ),
    ] = False,
    transition: Annotated[
        int,
        typer.Option("--transition", help="Frames over which a new prompt blends in.", min=0),
    ] = 15,
    preview: Annotated[
        bool,
        typer.Option(
            "--preview",
            help="Also show the output in a window (its arrow keys step through the looks; "
            "closing it stops the run).",
        ),
    ] = False,
    model: ModelOpt = DEFAULT_MODEL,
    steps: StepsOpt = 1,
    size: SizeOpt = None,
    device: DeviceOpt = "auto",
    mode: Annotated[
        str | None,
        typer.Option(
            "--mode",
            help="live (newest frame wins; files play in real time) or offline (every frame)."
            " Default: live for cameras, screens, streams and watched outputs.",
        ),
    ] = None,
    fit: Annotated[str, typer.Option("--fit", help="crop or letterbox.")] = "crop",
    frames: Annotated[
        int | None,
        typer.Option(
            "--frames",
            help="Stop after this many input frames (live: those the model was too slow "
            "for are dropped). Default: until the input ends or Ctrl-C.",
            min=1,
        ),
    ] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write final stats as JSON.")
    ] = None,
    reconnect: Annotated[
        int,
        typer.Option("--reconnect", help="Reconnects when an input camera or stream drops.", min=0),
    ] = 5,
    reconnect_delay: Annotated[
        float,
        typer.Option(
            "--reconnect-delay",
            help="First wait before reconnecting, s (doubles, up to 8 s or this).",
            min=0,
        ),
    ] = 0.5,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    compile: CompileOpt = None,
    fp16: Fp16Opt = None,
    downscale: DownscaleOpt = None,
    threads: ThreadsOpt = None,
    debug: DebugOpt = False,
    model_options: dict[str, Any] | None = None,
) -> None:
    """Transform INPUT and write the result to OUTPUT."""
    _setup_logging(debug)

    def body() -> int:
        # 1. check everything the user typed before opening anything
        resolution = parse_size(size) if size else None
        text = validate_prompt(prompt) if prompt is not None else None
        if mode not in (None, "live", "offline"):
            raise UserError(f"unknown mode '{mode}': use live or offline")
        if fit not in ("crop", "letterbox"):
            raise UserError(f"unknown fit mode '{fit}': use crop or letterbox")
        check_model_name(model)
        if report is not None:  # found out before the stream, not after it
            _check_report_path(report, input, output)
        if preview or output.strip().lower() == "window":
            if preview and output.strip().lower() == "window":
                raise UserError("--preview with --output window would show it twice: drop one")
            from mirage_lsd.sinks.window import MACOS_WINDOW, check_display

            if sys.platform == "darwin":  # the stream's output thread would draw it
                raise UserError(MACOS_WINDOW)
            check_display(connect=True)
        # 2. open input, model and output
        realtime = None if mode is None else mode == "live"
        retry = RetryPolicy(  # the waits double up to 8 s, or stay at a longer first one
            attempts=reconnect,
            initial_delay_s=reconnect_delay,
            max_delay_s=max(RetryPolicy().max_delay_s, reconnect_delay),
        )
        source = open_source(input, realtime=realtime, retry=retry)
        if mode is None and is_live_output(output):  # watched as it plays: not fast-forwarded
            source.pace()
        live = source.live if mode is None else mode == "live"
        # the automatic choice, unless MIRAGE_LSD_COMPILE makes it: not for a short file
        auto = compile is None and not os.environ.get(COMPILE_ENV, "").strip()
        short = ends_before_a_compile_pays(source, frames)
        try:
            engine = StreamEngine(
                model,
                device=device,
                max_steps=steps,
                resolution=resolution,
                fit=fit,
                prompt=text,  # type: ignore[arg-type]
                model_options=model_options,
                compile=False if auto and short else compile,
                fp16=fp16,
                downscale=downscale,
                threads=threads,
            )
        except BaseException:
            source.close()  # a camera or a connection is not left open
            raise
        if text is not None and engine.model.info.name == "identity":
            console.print("note: the identity model ignores the prompt (see `mirage-lsd models`)")
        if compile is None and engine.model.info.compile and not quiet:  # chosen for the user
            console.print(
                "note: compiling the model in the background (about 40 s the first time);"
                " it runs slower until then (--no-compile to skip)"
            )
        # 3. stream until the input ends or Ctrl-C; the report is written even on a failure
        context = {"input": redact_url(input), "output": redact_url(output), "prompt": text}
        try:
            with _StopOnSignal(engine) as stopper:
                on_frame = engine.render if preview else None
                mode_name = "live" if live else "offline"
                engine.start(
                    source, output=output, mode=mode_name, on_frame=on_frame, max_frames=frames
                )
                stopper.started()
                if stdin_prompts:
                    _read_prompts(engine, transition)
                total = min(filter(None, (source.frame_count, frames)), default=None)
                stats = _follow(engine, total, live, show=not quiet)
                if preview:
                    engine.close()  # the preview window
        except BaseException as exc:  # a failure, or a second Ctrl-C
            if report is not None:
                error = "interrupted" if isinstance(exc, SystemExit) else str(exc) or repr(exc)
                by = None if stopper.signal is None else signal.Signals(stopper.signal).name
                try:
                    _write_report(report, engine.stats(), **context, error=error, stopped_by=by)
                except UserError as report_error:  # the run's own failure is the one to show
                    console.print(f"warning: {report_error}", highlight=False, markup=False)
            raise
        # 4. report
        if report is not None:
            by = None if stopper.signal is None else signal.Signals(stopper.signal).name
            _write_report(report, stats, **context, error=None, stopped_by=by)
        where = "" if output == "null" else f" to {redact_url(output)}"
        console.print(
            f"{stats.frames_written} frames{where}: {stats.fps:.1f} fps, "
            f"latency p95 {stats.latency_ms['p95'] or 0:.1f} ms, dropped {stats.dropped}"
            + (f", corrupt frames skipped {stats.corrupt_frames}" if stats.corrupt_frames else ""),
            markup=False,  # a path or URL is not markup: "[draft].mp4", "srt://[fe80::1]"
            highlight=False,
        )
        if stopper.signal is not None:
            console.print("stopped by signal; output finalized")
            return 128 + stopper.signal
        return 0

    code = guarded(debug, body)
    if code:
        raise typer.Exit(code)


def _read_prompts(engine: StreamEngine, transition: int) -> None:
    """Apply each line of standard input as the new prompt, blended over `transition`
    frames, while the stream runs (a VJ's console, or a script piping cues). A refused
    line is a warning and the stream goes on; the end of the input ends the reading."""

    def loop() -> None:
        raw_stdin = getattr(getattr(sys.stdin, "buffer", None), "raw", None)
        if raw_stdin is None:  # no standard input at all: a windowless launcher
            return
        encoding = sys.stdin.encoding or "utf-8"
        for raw in _lines(raw_stdin):  # bytes: one undecodable line must not end the reading
            try:
                text = raw.decode(encoding).strip()
                if not text:
                    continue
                engine.set_prompt(text, transition_frames=transition)
            except UnicodeDecodeError:
                console.print(f"warning: a prompt line is not {encoding} text: ignored")
            except Exception as exc:  # refused (UserError) or failed: the stream goes on
                why = first_line(exc)
                console.print(f"warning: {why}", highlight=False, markup=False)
            else:
                console.print(f"prompt: {text}", highlight=False, markup=False)

    threading.Thread(target=loop, name="mirage-stdin-prompts", daemon=True).start()


def _lines(raw: io.RawIOBase) -> Iterator[bytes]:
    """The lines read from the unbuffered stream `raw` (stdin's), until its end or an error.

    Unbuffered, a thread waiting for the next line holds no lock of Python's: one waiting
    in `sys.stdin.buffer` holds the buffer's, and the interpreter, closing stdin at exit,
    aborts on it ("could not acquire lock ... at interpreter shutdown"). On a Windows
    console the raw stream is the one that gives UTF-8 (os.read would give its code page).
    """
    pending = b""
    while True:
        try:
            chunk = raw.read(4096) or b""
        except (OSError, ValueError):  # the terminal went away, or stdin was closed
            chunk = b""
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        yield from lines
    if pending:
        yield pending


def ends_before_a_compile_pays(source: Source, max_frames: int | None = None) -> bool:
    """An input known to have fewer than `SHORT_STREAM` frames (by its frame count, or
    its duration times its frame rate, or the `max_frames` asked for), offline or played
    in real time; cameras, live streams and inputs of unknown length may run long enough
    for a background compile to pay off. (The engine tells the model the same; deciding
    here too keeps the "compiling" note truthful.)"""
    known = [f for f in (expected_frames(source), max_frames) if f is not None]
    return bool(known) and min(known) < SHORT_STREAM


def _check_report_path(path: Path, *others: str) -> None:
    """A report path that can be written and is neither the input nor the output."""
    try:
        if path.is_dir():
            raise UserError(f"cannot write report {path}: it is a folder")
        if not path.parent.is_dir():
            raise UserError(f"cannot write report {path}: no folder {path.parent}")
        for other in others:
            if "://" in other:  # a URL is no file to overwrite (and may be too long for one)
                continue
            mine = Path(os.path.expanduser(other))
            same = path.samefile(mine) if path.exists() and mine.exists() else None
            if same or (same is None and path.resolve() == mine.resolve()):
                raise UserError(f"the report {path} would overwrite {other}: choose another name")
    except OSError as exc:
        raise UserError(f"cannot write report {path}: {exc.strerror or exc}") from None


def _write_report(path: Path, stats: Stats, **context: Any) -> None:
    data = {**context, **stats.to_dict()}
    try:
        path.write_text(json.dumps(data, indent=2) + "\n")
    except OSError as exc:
        raise UserError(f"cannot write report {path}: {exc.strerror}") from None


@app.command()
@with_diffusers_flags
def bench(
    input: Annotated[str, typer.Argument(help="Video file (looped) or any input.")],
    model: ModelOpt = DEFAULT_MODEL,
    size: SizeOpt = None,
    steps: StepsOpt = 1,
    frames: Annotated[int, typer.Option("--frames", help="Frames to measure.", min=1)] = 300,
    warmup: Annotated[
        int,
        typer.Option(
            "--warmup", help="Frames run before measuring (at least 1 when compiling).", min=0
        ),
    ] = 10,
    device: DeviceOpt = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    compile: CompileOpt = None,
    fp16: Fp16Opt = None,
    downscale: DownscaleOpt = None,
    threads: ThreadsOpt = None,
    debug: DebugOpt = False,
    model_options: dict[str, Any] | None = None,
) -> None:
    """Measure throughput, latency and per-stage times on INPUT.

    Each frame is captured the moment the pipeline can take it, so latency is
    the engine's own (no queueing) and FPS is the most the machine can do.
    """
    _setup_logging(debug)

    def body() -> None:
        resolution = parse_size(size) if size else None
        engine = StreamEngine(
            model,
            device=device,
            max_steps=steps,
            resolution=resolution,
            model_options=model_options,
            compile=compile,
            fp16=fp16,
            downscale=downscale,
            threads=threads,
        )
        # compiling: a first frame asks for the compile of its size, which is then waited for
        warm = max(warmup, 1) if engine.model.info.compile else warmup
        if warm:
            engine.start(
                open_source(input, loop=True), output="null", mode="bench", max_frames=warm
            )
            engine.wait()
        if engine.model.info.compile:  # measure the model as it runs once compiled
            with console.status("compiling the model (about 40 s the first time) ..."):
                engine.model.wait_ready()
        source = open_source(input, loop=True)
        engine.start(source, output="null", mode="bench", max_frames=frames)
        stats = engine.wait()
        result = _bench_result(stats, engine)
        if as_json:
            sys.stdout.write(json.dumps(result) + "\n")
        else:
            _print_bench(result)

    guarded(debug, body)


def _bench_result(stats: Stats, engine: StreamEngine) -> dict[str, Any]:
    """The bench JSON: the stream's stats, as the README documents them."""
    return {
        "fps": stats.fps,
        "frames": stats.frames_out,
        "dropped": stats.dropped,
        "drop_ratio": stats.drop_ratio,
        "corrupt_frames": stats.corrupt_frames,
        "reconnects": stats.reconnects,
        "ttff_ms": stats.ttff_ms,
        "latency_ms": stats.latency_ms,
        "stages_ms": stats.stages_ms,
        "stages_p95_ms": stats.stages_p95_ms,
        "model": stats.model,
        "device": stats.device,
        "dtype": engine.model.info.dtype,  # what the model runs in (bf16 on AMX CPUs)
        "compile": engine.model.info.compile,
        "threads": engine.threads,  # torch's, for the model (None: torch's own setting)
        "size": stats.to_dict()["size"],
        "steps": stats.steps,
    }


def _print_bench(result: dict[str, Any]) -> None:
    title = f"bench: {result['model']} on {result['device']}, {result['size']}"
    table = Table(title=escape(title))  # a model path is not markup
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("frames", str(result["frames"]))
    table.add_row("fps", f"{result['fps']:.1f}")
    table.add_row("time to first frame", f"{result['ttff_ms'] or 0:.1f} ms")
    for key, value in result["latency_ms"].items():
        table.add_row(f"latency {key}", f"{value or 0:.2f} ms")
    for key, value in result["stages_ms"].items():
        table.add_row(f"{key} (median)", f"{value or 0:.2f} ms")
    Console().print(table)


@app.command()
def train(
    config: Annotated[Path, typer.Option("--config", "-c", help="Training config (YAML).")],
    device: DeviceOpt = "auto",
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the last checkpoint.")
    ] = False,
    out_dir: Annotated[
        Path | None, typer.Option("--out-dir", help="Checkpoints and weights (default: config's).")
    ] = None,
    debug: DebugOpt = False,
) -> None:
    """Train the built-in model: progress bar, periodic checkpoints, resume, fixed seed."""
    _setup_logging(debug)

    def body() -> None:
        from mirage_lsd.device import resolve_device
        from mirage_lsd.training.train import train as run_training

        result = run_training(config, device=resolve_device(device), resume=resume, out_dir=out_dir)
        metrics = ", ".join(f"{k} {v:.2f}" for k, v in result.metrics.items())
        parts = [f"trained {result.step} steps", f"weights: {result.weights}", metrics]
        console.print("; ".join(p for p in parts if p), markup=False, highlight=False)

    guarded(debug, body)


@app.command("eval")
def eval_command(
    input: Annotated[str, typer.Argument(help="Video file or any input.")],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="The look to evaluate.")],
    model: ModelOpt = DEFAULT_MODEL,
    size: Annotated[
        str, typer.Option("--size", "-s", help="Size the look is scored at, WIDTHxHEIGHT.")
    ] = "512x512",
    steps: StepsOpt = 1,
    frames: Annotated[int, typer.Option("--frames", help="Frames to evaluate.", min=2)] = 100,
    loop: Annotated[
        bool, typer.Option("--loop", help="Restart the input at its end (long drift runs).")
    ] = False,
    device: DeviceOpt = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    downscale: DownscaleOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Score a model against the procedural look: style PSNR/SSIM, flicker, drift."""
    _setup_logging(debug)

    def body() -> None:
        from mirage_lsd.evaluation.evaluate import evaluate

        resolution = parse_size(size) if size else None
        text = validate_prompt(prompt)
        engine = StreamEngine(  # uncompiled: compiling only changes float rounding
            model,
            device=device,
            max_steps=steps,
            resolution=resolution,
            downscale=downscale,
            compile=False,
        )
        result = evaluate(engine, input, text, frames, loop=loop).to_dict()
        if as_json:
            sys.stdout.write(json.dumps(result) + "\n")
            return
        title = f"eval: {result['model']} on '{text}' -> {result['look']}"
        table = Table(title=escape(title))  # the prompt and a model path are not markup
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key, value in result.items():
            table.add_row(key, escape(str(value)))
        Console().print(table)

    guarded(debug, body)


@app.command()
def models() -> None:
    """List the models you can pass to --model."""
    table = Table(title="models")
    table.add_column("name")
    table.add_column("description")
    for entry in available_models():
        name = entry.name + (" (default)" if entry.name == DEFAULT_MODEL else "")
        table.add_row(name, entry.description)
    table.caption = "also: a diffusers hub id (org/name), folder or .safetensors file"
    Console().print(table)
    from mirage_lsd.looks import LOOKS

    looks = Table(title="looks of mirage-lsd-v1 (any text works: it lands on the nearest)")
    looks.add_column("look")
    looks.add_column("say, for example")
    for look in LOOKS.values():
        looks.add_row(look.title, "; ".join(look.descriptions[:3]))
    Console().print(looks)


app.command()(serve)


def main() -> None:
    """Entry point: usage errors become one line and exit code 2."""
    try:
        _main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        _leave_during_a_compile(code)
        raise


def _leave_during_a_compile(code: int) -> None:
    """Exit at once if the built-in model is still compiling in the background.

    Every output is closed by now; a normal exit would wait for a compile nobody will use
    (interpreter shutdown must not meet it midway: the process would abort).
    """
    compiled = sys.modules.get("mirage_lsd.models.builtin.compiled")  # never import torch here
    if compiled is not None and compiled.compiling():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _main() -> None:
    try:
        code = app(standalone_mode=False)
    except TyperException as exc:  # typer's usage errors (bad or missing options)
        if type(exc).__name__ == "NoArgsIsHelpError":  # `mirage-lsd` alone: the help answers
            sys.exit(0)
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        fail(exc.format_message().replace("\n", " ") + hint, getattr(exc, "exit_code", 2))
    except typer.Abort:
        fail("aborted", 130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
