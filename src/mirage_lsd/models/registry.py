"""Model names users can ask for, and how each is loaded."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mirage_lsd.errors import UserError
from mirage_lsd.models.base import StreamModel

if TYPE_CHECKING:
    from mirage_lsd.models.diffusers_backend import DiffusersOptions


@dataclass(frozen=True)
class LoadOptions:
    """What the engine passes to every model loader."""

    device: str = "cpu"
    dtype: str = "float32"
    max_steps: int = 1
    compile: bool | None = None  # torch.compile; None: the built-in model decides (on CPU: yes)
    downscale: int | None = None  # built-in model: denoise at frame / N (None: automatic)
    diffusers: DiffusersOptions | None = None  # only read by the diffusers backend


@dataclass(frozen=True)
class ModelEntry:
    name: str
    description: str
    load: Callable[[LoadOptions], StreamModel]


def _load_identity(opts: LoadOptions) -> StreamModel:
    from mirage_lsd.models.identity import IdentityModel

    if opts.downscale is not None:  # said, not ignored
        raise UserError("--downscale applies to the built-in model only")
    return IdentityModel(device=opts.device)


def _load_builtin(opts: LoadOptions) -> StreamModel:
    from mirage_lsd.models.builtin.model import BuiltinModel

    return BuiltinModel.from_file(
        device=opts.device,
        compile=opts.compile,
        downscale=opts.downscale,
        fp16=opts.dtype == "float16",
    )


_REGISTRY: dict[str, ModelEntry] = {
    "identity": ModelEntry(
        "identity", "passes frames through unchanged (measures the engine)", _load_identity
    ),
    "mirage-lsd-v1": ModelEntry(
        "mirage-lsd-v1",
        "built-in causal live-stream diffusion model, 1-4 steps, prompts pick looks",
        _load_builtin,
    ),
}

DEFAULT_MODEL = "mirage-lsd-v1"


def available_models() -> list[ModelEntry]:
    """Registered models, default first."""
    return sorted(_REGISTRY.values(), key=lambda e: (e.name != DEFAULT_MODEL, e.name))


def register_model(entry: ModelEntry) -> None:
    """Add a model name (plugins and tests)."""
    _REGISTRY[entry.name] = entry


def load_model(name: str, opts: LoadOptions) -> StreamModel:
    """Load a registered name, else a diffusers hub id, folder or .safetensors file.

    Unknown names are a one-line user error.
    """
    entry = _REGISTRY.get(name)
    if entry is not None and opts.diffusers is not None:
        raise _not_diffusers(name)
    if entry is None and name.endswith(".safetensors") and Path(name).is_file():
        from mirage_lsd.models.builtin.model import BuiltinModel, is_weight_file

        if is_weight_file(Path(name)):  # weights of our own model, e.g. from `mirage-lsd train`
            if opts.diffusers is not None:
                raise _not_diffusers(name)
            return BuiltinModel.from_file(
                Path(name),
                device=opts.device,
                compile=opts.compile,
                downscale=opts.downscale,
                fp16=opts.dtype == "float16",
            )
    if entry is None:
        from mirage_lsd.models.diffusers_backend import load_diffusers_model

        check_model_name(name)
        if opts.downscale is not None:
            raise UserError("--downscale applies to the built-in model only")
        return load_diffusers_model(name, opts, opts.diffusers)
    return entry.load(opts)


def _not_diffusers(name: str) -> UserError:
    return UserError(
        f"diffusers options (--strength, --lora, --guidance, ...) do not apply to '{name}':"
        " drop them, or pick a diffusers model (org/name, folder or .safetensors)"
    )


def check_model_name(name: str) -> None:
    """Refuse, without loading anything, a name that is neither registered nor a weight
    file, folder or hub id (so a command fails before it opens a camera or a stream)."""
    if name in _REGISTRY:
        return
    from mirage_lsd.models.diffusers_backend import looks_like_diffusers_spec

    if not looks_like_diffusers_spec(name):
        names = ", ".join(e.name for e in available_models())
        raise UserError(
            f"unknown model '{name}': choose one of {names}, or give a diffusers hub id"
            " (org/name), folder or .safetensors file (list them with `mirage-lsd models`)"
        )
