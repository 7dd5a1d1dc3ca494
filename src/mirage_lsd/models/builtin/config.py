"""The built-in model's configuration: one frozen dataclass, saved next to the weights.

Every size the network uses is derived here once (`grid_downscale`, `size_multiple`,
channel counts), so no other file repeats a number. `config_from_dict` is shared with
the training config: unknown keys and wrong types are errors that name the field.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, TypeVar

from mirage_lsd.errors import UserError

T = TypeVar("T")
PROMPT_DIM = 384  # the width of all-MiniLM-L6-v2's sentence embeddings (prompt_embedding.py)
MAX_GRADE_BANDS = 5  # the coarsest low-pass has 2 cells across the frame's short side


class ConfigError(UserError):
    """A config file or dict with an unknown field, a missing field or a wrong type."""


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of `mirage-lsd-v1`. The defaults are the bundled model."""

    # resolution pyramid: frame -> image (denoised) -> grid (level 0) -> mid (level 1)
    image_downscale: int = 4  # the denoiser's image is frame / 4 (e.g. 320x180 at 720p)
    patch: int = 2  # pixel-unshuffle of that image: level-0 grid is frame / 8
    width: int = 32  # channels at level 0
    mid_width: int = 64  # channels at level 1 (grid / 2)
    enc_blocks: int = 1
    mid_blocks: int = 2  # each mid block is a conv block + a temporal attention layer
    dec_blocks: int = 1
    kernel: int = 5  # depthwise kernel of the conv blocks
    mlp_ratio: int = 2
    emb_dim: int = 128  # conditioning vector (prompt, noise level, step size, history noise)
    # temporal attention: queries pooled from level 1, keys/values pooled further
    attn_dim: int = 32
    attn_heads: int = 2
    attn_pool: int = 2
    kv_pool: int = 2
    cache_frames: int = 2  # past frames whose keys/values are kept (memory is bounded)
    # prompt: sentence-embedding size and how free text resolves to looks
    prompt_dim: int = PROMPT_DIM  # the prompt model's: no other width can be fed
    prompt_top_k: int = 2
    prompt_temperature: float = 0.03
    # sampling: steps 1..max_steps; step sizes are powers of two down to 2**-shortcut_levels
    max_steps: int = 4
    shortcut_levels: int = 6
    history_sigma: float = 0.0  # noise level the history is told it has at run time
    # False: no history and no temporal cache (the per-frame regression baseline)
    temporal: bool = True
    # the stem also sees each cell's (y, x) in the frame (configs/position.yaml)
    position: bool = False
    # > 1: the conv blocks' pointwise layers mix this many weight sets by the prompt
    experts: int = 0
    # >= 2: x0's base is the input under a per-prompt colour grade (3x3 matrix, offset
    # and luma curves of this many knots; `network.PromptGrade`); 0: the input itself
    grade_knots: int = 16
    # >= 2: the grade also scales and lifts each channel by maps over the frame, a
    # grade_grid x grade_grid lattice of values per prompt (vignettes, sky gradients)
    grade_grid: int = 6
    # >= 1: the grade also re-weights, per channel, this many band-pass layers of the
    # graded image between low-passes at 32, 16, 8, ... cells across the frame's short
    # side (softening, local contrast, glow: watercolor, oil paint, bloom)
    grade_bands: int = 0
    # >= 2: the grade also adds a 3D colour lookup table of this many cells per axis that
    # the prompt picks (through a rank-`LUT_RANK` projection): any per-pixel colour map,
    # such as thermal's palette of a warmth-weighted brightness
    grade_lut: int = 0
    # the upsampler also adds, per channel, a learned share of an edge map of the
    # full-resolution input (thin lines: neon edges, blueprint, pencil)
    edge_guide: bool = False
    # the stem also sees, per low-res pixel, the mean over it of the full-res input's edge
    # map: how much line the look draws inside a cell, which the shrunk image has lost
    # (blueprint, neon edges); the image then carries it as a fourth channel
    detail_input: bool = True
    # >= 1: x0's base also gets a small per-look MLP of each low-res input pixel's 3x3
    # neighbourhood (`network.LocalLook`), this many weight sets mixed by the prompt
    local_experts: int = 0
    local_width: int = 32  # hidden channels of that MLP
    # >= 2: x0 is pulled, by a share the prompt picks, towards a soft nearest colour of
    # a palette of this many colours the prompt picks (`network.PaletteSnap`)
    palette_colours: int = 0

    def __post_init__(self) -> None:
        positive = ("image_downscale", "patch", "width", "mid_width", "kernel", "mlp_ratio")
        for name in (*positive, "emb_dim", "attn_dim", "attn_heads", "attn_pool", "kv_pool"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if self.attn_dim % self.attn_heads:
            raise ConfigError("model.attn_dim must be a multiple of model.attn_heads")
        if self.kernel % 2 == 0:
            raise ConfigError(f"model.kernel must be odd, got {self.kernel}")
        if self.shortcut_levels < 1:  # level 0 would ask training for a step past t = 0
            raise ConfigError(f"model.shortcut_levels must be >= 1, got {self.shortcut_levels}")
        if not 1 <= self.max_steps <= 2**self.shortcut_levels:
            raise ConfigError("model.max_steps must be between 1 and 2**model.shortcut_levels")
        for name in ("cache_frames", "enc_blocks", "mid_blocks", "dec_blocks"):
            if getattr(self, name) < 0:
                raise ConfigError(f"model.{name} must be >= 0, got {getattr(self, name)}")
        if self.prompt_dim != PROMPT_DIM:
            raise ConfigError(
                f"model.prompt_dim must be {PROMPT_DIM}, the width of the prompt model's "
                f"embeddings (all-MiniLM-L6-v2), got {self.prompt_dim}"
            )
        if self.prompt_top_k < 1:
            raise ConfigError(f"model.prompt_top_k must be >= 1, got {self.prompt_top_k}")
        if not self.prompt_temperature > 0:
            raise ConfigError(
                f"model.prompt_temperature must be > 0, got {self.prompt_temperature}"
            )
        if self.local_experts < 0 or self.local_width < 1:
            raise ConfigError("model.local_experts must be >= 0 and model.local_width >= 1")
        if self.palette_colours < 0 or self.palette_colours == 1:
            raise ConfigError(
                f"model.palette_colours must be 0 or >= 2, got {self.palette_colours}"
            )
        if self.experts < 0 or self.experts == 1:  # one weight set is the plain network
            raise ConfigError(f"model.experts must be 0 or >= 2, got {self.experts}")
        if self.grade_knots < 0 or self.grade_knots == 1:
            raise ConfigError(f"model.grade_knots must be 0 or >= 2, got {self.grade_knots}")
        if self.grade_grid < 0 or self.grade_grid == 1:
            raise ConfigError(f"model.grade_grid must be 0 or >= 2, got {self.grade_grid}")
        if self.grade_grid and not self.grade_knots:
            raise ConfigError("model.grade_grid needs model.grade_knots >= 2")
        if self.grade_lut < 0 or self.grade_lut == 1:
            raise ConfigError(f"model.grade_lut must be 0 or >= 2, got {self.grade_lut}")
        if self.grade_lut and not self.grade_knots:
            raise ConfigError("model.grade_lut needs model.grade_knots >= 2")
        if not 0 <= self.grade_bands <= MAX_GRADE_BANDS:
            raise ConfigError(
                f"model.grade_bands must be 0 to {MAX_GRADE_BANDS}, got {self.grade_bands}"
            )
        if self.grade_bands and not self.grade_knots:
            raise ConfigError("model.grade_bands needs model.grade_knots >= 2")

    @property
    def grid_downscale(self) -> int:
        """Frame pixels per level-0 grid cell."""
        return self.image_downscale * self.patch

    @property
    def image_multiple(self) -> int:
        """The denoised image's sides must divide by this (level 1 is grid / 2)."""
        return self.patch * 2

    @property
    def size_multiple(self) -> int:
        """Frame sides must divide by this at the trained downscale."""
        return self.image_downscale * self.image_multiple

    @property
    def guides(self) -> int:
        """Full-resolution guide images of the upsampler: luma detail [, edge map]."""
        return 1 + int(self.edge_guide)

    @property
    def image_inputs(self) -> int:
        """Channels of the denoiser's image input: RGB [, the edge detail]."""
        return 3 + int(self.detail_input)

    @property
    def image_channels(self) -> int:
        """Channels of one RGB image after pixel-unshuffle onto the grid."""
        return 3 * self.patch * self.patch

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "model") -> ModelConfig:
        return config_from_dict(cls, data, where)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def config_from_dict(cls: type[T], data: Any, where: str) -> T:
    """Build dataclass `cls` from a plain dict; errors name the field as `where.field`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    path = (lambda name: f"{where}.{name}") if where else (lambda name: name)
    unknown = sorted(set(data) - set(fields), key=str)
    if unknown:
        raise ConfigError(
            f"unknown config field '{path(unknown[0])}': known fields are {', '.join(fields)}"
        )
    hints = typing.get_type_hints(cls)
    values = {name: _check_type(hints[name], value, path(name)) for name, value in data.items()}
    return cls(**values)


def _check_type(hint: Any, value: Any, where: str) -> Any:
    """`value` converted to `hint` (dataclasses recursively), or a ConfigError naming `where`."""
    if dataclasses.is_dataclass(hint):
        return config_from_dict(hint, value, where)  # type: ignore[arg-type]
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        hint = next(o for o in options if o is not type(None))
        origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"config field '{where}' must be a list, got {value!r}")
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        return tuple(_check_type(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(hint)
    if ok is None:
        raise TypeError(f"config field '{where}' has an unsupported type {hint}")
    if not ok:
        raise ConfigError(
            f"config field '{where}' must be {hint.__name__}, got {type(value).__name__} {value!r}"
        )
    if hint is float:
        try:  # a 400-digit YAML integer does not fit a float
            value = float(value)
        except OverflowError:
            raise ConfigError(f"config field '{where}' is out of range, got {value!r}") from None
        if not math.isfinite(value):  # YAML's .inf and .nan parse as floats
            raise ConfigError(f"config field '{where}' must be a finite number, got {value!r}")
    return value
