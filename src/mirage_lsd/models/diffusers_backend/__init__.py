"""Diffusers backend: SD 1.5 / 2.1 / SDXL few-step img2img streams behind `StreamModel`.

model = load_diffusers_model("stabilityai/sd-turbo", LoadOptions(device="cpu"),
                             DiffusersOptions(strength=0.5, guidance="self"))

Nothing heavy is imported until a model is loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mirage_lsd.models.diffusers_backend.loading import looks_like_diffusers_spec
from mirage_lsd.models.diffusers_backend.options import DiffusersOptions, LoraSpec

if TYPE_CHECKING:
    from mirage_lsd.models.base import StreamModel
    from mirage_lsd.models.registry import LoadOptions

__all__ = ["DiffusersOptions", "LoraSpec", "load_diffusers_model", "looks_like_diffusers_spec"]


def load_diffusers_model(
    spec: str, opts: LoadOptions, options: DiffusersOptions | None = None
) -> StreamModel:
    """Load a hub id, diffusers folder or single .safetensors file as a stream model."""
    # 1. device and precision (CUDA asked without CUDA is a user error)
    import torch

    from mirage_lsd.device import resolve_device
    from mirage_lsd.models.diffusers_backend.loading import load_components, load_vae
    from mirage_lsd.models.diffusers_backend.stream import DiffusersStreamModel

    options = options or DiffusersOptions()
    device = resolve_device(opts.device)
    cuda_fp16 = device.startswith("cuda") and opts.dtype == "float16"
    dtype = torch.float16 if cuda_fp16 else torch.float32
    # 2. weights, LoRAs, VAE
    parts = load_components(spec, options, dtype)
    vae = load_vae(options.vae, parts, device, dtype)
    # 3. the stream model
    return DiffusersStreamModel(parts, vae, options, device, dtype, compile=bool(opts.compile))
