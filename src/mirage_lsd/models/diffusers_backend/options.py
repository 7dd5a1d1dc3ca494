"""Every option of the diffusers backend, validated once, in one frozen dataclass.

The CLI and the SDK build a `DiffusersOptions` from the same names; bad values raise
a one-line `UserError` at construction, never later in the frame loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Literal

from mirage_lsd.errors import UserError

Guidance = Literal["none", "full", "self", "initialize"]
BatchMode = Literal["latency_first", "stream_batch"]
BankMerge = Literal["fifo", "merge"]
GUIDANCE: tuple[str, ...] = ("none", "full", "self", "initialize")
BATCH_MODES: tuple[str, ...] = ("latency_first", "stream_batch")
BANK_MERGES: tuple[str, ...] = ("fifo", "merge")
KV_DOWNSAMPLES = (1, 2, 4)
#: Grid that `t_index_list` indexes into (as in StreamDiffusion / LCM: 50 steps).
INDEX_GRID = 50


@dataclass(frozen=True)
class LoraSpec:
    """One `--lora ID_OR_PATH[:SCALE]`."""

    source: str
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.scale):
            raise UserError(f"--lora {self.source}: the scale must be a finite number")

    @classmethod
    def parse(cls, text: str) -> LoraSpec:
        """'path', 'org/name' or either with ':SCALE' (a Windows drive 'C:' is no scale)."""
        head, sep, tail = text.rpartition(":")
        if sep and head and _is_float(tail):
            return cls(head, float(tail))
        return cls(text, 1.0)


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class DiffusersOptions:
    """Options of the diffusers backend (CLI flag in brackets).

    Sampling: `strength` [--strength] in (0, 1] picks `steps` evenly spaced timesteps
    below strength * 1000; `t_index_list` [--t-index] picks them explicitly on a
    50-step grid (StreamDiffusion style) instead; giving both is an error.
    """

    loras: tuple[LoraSpec, ...] = ()  # --lora ID_OR_PATH[:SCALE], repeatable
    vae: str = "auto"  # --vae auto|tiny|full|ID_OR_PATH; auto = tiny when available
    negative_prompt: str = ""  # --negative-prompt
    strength: float = 0.5  # --strength
    t_index_list: tuple[int, ...] | None = None  # --t-index 32,45
    guidance: Guidance = "none"  # --guidance none|full|self|initialize (residual CFG)
    # --guidance-scale; None: 1.2 for CFG, and 8.5 for an LCM-distilled UNet's own embedding
    guidance_scale: float | None = None
    rcfg_delta: float = 1.0  # --rcfg-delta: weight of the virtual negative in self/initialize
    seed: int = 2  # --seed: the stream's fixed noise
    batch_mode: BatchMode = "latency_first"  # --batch-mode: stream_batch adds steps-1 lag
    similarity_threshold: float = 0.0  # --similar-threshold: skip inputs this similar (0 off)
    similarity_max_skip: int = 10  # --similar-max-skip: never skip more frames in a row
    latent_feedback: float = 0.0  # --latent-feedback: share of the previous output latent
    bank_size: int = 0  # --bank-size: past frames whose self-attention K/V are reused (0 off)
    bank_merge: BankMerge = "fifo"  # --bank-merge fifo|merge
    flow_blend: float = 0.0  # --flow-blend: share of the flow-warped previous output
    kv_downsample: int = 1  # --kv-downsample 1|2|4: pool self-attention K/V (ToDo); 1 exact

    def __post_init__(self) -> None:
        # 0. types (the SDK passes Python values as they come)
        for f in fields(self):
            _check_type(f.name, getattr(self, f.name), f.type)
        # 1. enumerations
        _one_of("guidance", self.guidance, GUIDANCE)
        _one_of("batch-mode", self.batch_mode, BATCH_MODES)
        _one_of("bank-merge", self.bank_merge, BANK_MERGES)
        # 2. numbers
        if not (math.isfinite(self.strength) and 0.0 < self.strength <= 1.0):
            raise UserError(f"--strength must be in (0, 1], got {self.strength}")
        if self.t_index_list is not None:
            idx = self.t_index_list
            if not idx or any(not 0 <= i < INDEX_GRID for i in idx):
                raise UserError(f"--t-index takes numbers from 0 to {INDEX_GRID - 1}, got {idx}")
            if list(idx) != sorted(set(idx)):
                raise UserError(f"--t-index must be strictly increasing, got {list(idx)}")
        scale = self.guidance_scale
        if scale is not None and not (math.isfinite(scale) and scale >= 1.0):
            raise UserError(f"--guidance-scale must be 1 or more, got {scale}")
        if self.negative_prompt and self.guidance not in ("full", "initialize"):
            raise UserError(
                f"--negative-prompt needs --guidance full or initialize (--guidance "
                f"{self.guidance} would ignore it)"
            )
        for name, value in (
            ("similar-threshold", self.similarity_threshold),
            ("latent-feedback", self.latent_feedback),
            ("flow-blend", self.flow_blend),
            ("rcfg-delta", self.rcfg_delta),
        ):
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise UserError(f"--{name} must be from 0 to 1, got {value}")
        mixes = (("flow-blend", self.flow_blend), ("latent-feedback", self.latent_feedback))
        for name, value in mixes:
            if value > 0 and self.batch_mode == "stream_batch":
                raise UserError(
                    f"--{name} needs --batch-mode latency_first: in stream_batch the output "
                    "lags the input, so it would mix in an older frame"
                )
        if self.latent_feedback >= 1.0:
            raise UserError("--latent-feedback must be below 1 (1 would ignore the input)")
        if self.similarity_max_skip < 0:
            raise UserError(f"--similar-max-skip must be 0 or more, got {self.similarity_max_skip}")
        if not 0 <= self.bank_size <= 64:
            raise UserError(f"--bank-size must be from 0 to 64 frames, got {self.bank_size}")
        if self.kv_downsample not in KV_DOWNSAMPLES:
            raise UserError(f"--kv-downsample must be 1, 2 or 4, got {self.kv_downsample}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise UserError(f"--seed must be a whole number >= 0, got {self.seed!r}")
        if "\x00" in self.negative_prompt:
            raise UserError("--negative-prompt contains a NUL character: remove it")

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> DiffusersOptions:
        """SDK entry: same names as the fields; unknown names are a user error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise UserError(
                f"unknown diffusers option(s) {', '.join(unknown)}: use {', '.join(sorted(known))}"
            )
        if isinstance(kwargs.get("loras"), str | LoraSpec):  # one LoRA, not a list of them
            kwargs["loras"] = (kwargs["loras"],)
        if "loras" in kwargs:
            kwargs["loras"] = tuple(
                x if isinstance(x, LoraSpec) else LoraSpec.parse(str(x)) for x in kwargs["loras"]
            )
        if kwargs.get("t_index_list") is not None:
            kwargs["t_index_list"] = parse_index_list(kwargs["t_index_list"])
            if kwargs.get("strength") is not None:  # said, not silently overridden
                raise UserError(
                    "--strength and --t-index both pick the timesteps: give one of them"
                )
        return cls(**kwargs)


def parse_index_list(value: str | tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """'32,45' or [32, 45] -> (32, 45); anything else is a user error."""
    bad = UserError(f"--t-index takes comma-separated numbers like 32,45, got {value!r}")
    if isinstance(value, str):
        try:
            return tuple(int(x) for x in value.split(",") if x.strip())
        except ValueError:
            raise bad from None
    if not isinstance(value, tuple | list) or not all(
        isinstance(x, int) and not isinstance(x, bool) for x in value
    ):
        raise bad
    return tuple(value)


def _check_type(name: str, value: Any, hint: str) -> None:
    """A one-line error for an option of the wrong type (`hint`: the field's annotation)."""
    if "float" in hint:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok or ("None" in hint and value is None)
        want = "a number"
    elif hint.startswith("int"):
        ok = isinstance(value, int) and not isinstance(value, bool)
        want = "a whole number"
    elif hint in ("str", "Guidance", "BatchMode", "BankMerge"):
        ok, want = isinstance(value, str), "text"
    else:  # loras, t_index_list: checked where they are parsed
        return
    if not ok:
        flag = name.replace("_", "-")
        raise UserError(f"diffusers option {flag} must be {want}, got {value!r}")


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise UserError(f"unknown --{name} '{value}': use {', '.join(allowed)}")
