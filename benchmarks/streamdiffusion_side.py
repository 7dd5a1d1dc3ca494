"""StreamDiffusion 0.1.1 side of benchmarks/streamdiffusion_compare.py, run from its own venv.

StreamDiffusion pins diffusers 0.24, so it cannot share our venv; the driver calls this
script with that venv's python. It builds a StreamDiffusion stream at its fastest CPU
setting (TAESD, cfg_type "none", the given t_index list, frame_buffer_size 1, denoising
batch, no similarity filter) and times each frame end to end: a uint8 RGB numpy frame in
(to PIL, as its demos feed it), `stream(image)`, `postprocess_image` to PIL, uint8 numpy
out. Only StreamDiffusion's public API is called; on CPU its per-frame `torch.cuda.Event`
timing is replaced by a no-op here (nothing in site-packages is edited). Prints one JSON line.

    python3 -m venv /tmp/sdvenv
    /tmp/sdvenv/bin/pip install torch==2.13.0 streamdiffusion==0.1.1 "huggingface_hub<0.26"
    /tmp/sdvenv/bin/python benchmarks/streamdiffusion_side.py --model DIR --taesd DIR \\
        --input frames.npy --size 256 --frames 50 --warmup 5 --threads 2 --t-index 32
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np


def summarize(times_ms: list[float]) -> dict[str, float]:
    """Median, p95 and throughput of per-frame times (shared with the driver)."""
    return {
        "median_ms": round(float(np.median(times_ms)), 2),
        "p95_ms": round(float(np.percentile(times_ms, 95)), 2),
        "fps": round(1000.0 * len(times_ms) / sum(times_ms), 2),
    }


class _NoCudaEvent:
    """Stands in for torch.cuda.Event, which StreamDiffusion.__call__ records every frame."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def record(self, *args: Any, **kwargs: Any) -> None:
        pass

    def elapsed_time(self, other: Any) -> float:
        return 0.0  # feeds only the similarity filter's sleep, which is off


def _guard_cuda() -> None:
    """Let StreamDiffusion run on a CPU-only torch without editing its code."""
    import torch

    if not torch.cuda.is_available():
        torch.cuda.Event = _NoCudaEvent  # type: ignore[misc, assignment]
        torch.cuda.synchronize = lambda *args, **kwargs: None


def _import_postprocess() -> Any:
    """streamdiffusion.image_utils.postprocess_image; the module imports torchvision only
    for process_image (unused here), so a stand-in does while torchvision is missing (PyPI
    has no CPU build of it: its CUDA build does not load beside CPU torch)."""
    try:
        import torchvision  # noqa: F401
    except Exception:
        sys.modules["torchvision"] = types.ModuleType("torchvision")
        try:
            from streamdiffusion.image_utils import postprocess_image
        finally:
            del sys.modules["torchvision"]
        return postprocess_image
    from streamdiffusion.image_utils import postprocess_image

    return postprocess_image


def _text_encoder(folder: Path, dtype: Any) -> Any:
    """CLIPTextModel; transformers 5 saves its weights without the `text_model.` prefix
    that transformers 4 expects, so the prefix is put back before a strict load."""
    from safetensors.torch import load_file
    from transformers import CLIPTextConfig, CLIPTextModel

    model = CLIPTextModel(CLIPTextConfig.from_pretrained(folder))
    state = load_file(folder / "model.safetensors")
    state = {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in state.items()}
    model.load_state_dict(state, strict=True)
    return model.to(dtype).eval()


def load_pipe(folder: Path, dtype: Any) -> Any:
    """The SD pipeline from a diffusers folder, built from its parts: tiny test folders
    are saved by transformers 5 (only tokenizer.json, which the slow CLIPTokenizer that
    diffusers 0.24's from_pretrained insists on cannot read; AutoTokenizer's fast one can)."""
    from diffusers import AutoencoderKL, LCMScheduler, StableDiffusionPipeline
    from diffusers import UNet2DConditionModel as UNet
    from transformers import AutoTokenizer

    return StableDiffusionPipeline(
        vae=AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=dtype),
        text_encoder=_text_encoder(folder / "text_encoder", dtype),
        tokenizer=AutoTokenizer.from_pretrained(folder / "tokenizer"),
        unet=UNet.from_pretrained(folder / "unet", torch_dtype=dtype),
        scheduler=LCMScheduler.from_pretrained(folder / "scheduler"),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="diffusers SD folder")
    parser.add_argument("--taesd", type=Path, required=True, help="AutoencoderTiny folder")
    parser.add_argument("--input", type=Path, required=True, help=".npy of (N, H, W, 3) uint8")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--t-index", default="32", help="comma-separated, e.g. 32,45")
    parser.add_argument("--prompt", default="a watercolor")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    _guard_cuda()
    from diffusers import AutoencoderTiny
    from PIL import Image
    from streamdiffusion import StreamDiffusion

    postprocess_image = _import_postprocess()

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    t_index = [int(i) for i in args.t_index.split(",")]
    stream = StreamDiffusion(
        load_pipe(args.model, dtype),
        t_index_list=t_index,
        torch_dtype=dtype,
        width=args.size,
        height=args.size,
        use_denoising_batch=True,
        frame_buffer_size=1,
        cfg_type="none",
    )
    stream.vae = AutoencoderTiny.from_pretrained(args.taesd, torch_dtype=dtype)
    stream.disable_similar_image_filter()
    stream.prepare(args.prompt, num_inference_steps=50)

    frames = np.load(args.input)
    assert frames.shape[1:] == (args.size, args.size, 3), frames.shape

    def one(frame: np.ndarray) -> np.ndarray:
        out = stream(Image.fromarray(frame))
        return np.asarray(postprocess_image(out, output_type="pil")[0])

    for i in range(args.warmup):
        one(frames[i % len(frames)])
    times = []
    for i in range(args.warmup, args.warmup + args.frames):
        t0 = time.perf_counter()
        out = one(frames[i % len(frames)])
        times.append((time.perf_counter() - t0) * 1000.0)
    assert out.shape == (args.size, args.size, 3) and out.dtype == np.uint8
    print(
        json.dumps(
            {
                "side": "streamdiffusion",
                "size": args.size,
                "dtype": args.dtype,
                "timesteps": [int(t) for t in stream.sub_timesteps],
                **summarize(times),
                "times_ms": [round(t, 3) for t in times],
                "versions": {
                    p: version(p) for p in ("streamdiffusion", "torch", "diffusers", "transformers")
                },
            }
        )
    )


if __name__ == "__main__":
    main()
