"""The diffusers backend's flags, declared once and added to `run` and `bench`.

`with_diffusers_flags` appends the flags to a command's signature (typer reads the
signature) and hands the command one `model_options` dict with the flags the user
actually gave, in the names `StreamEngine(model_options=...)` takes.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any

import typer

PANEL = "Diffusers models (--model org/name, DIR or FILE.safetensors)"


#: (parameter, option name in DiffusersOptions, annotated type, default)
_FLAGS: list[tuple[str, str, Any, Any]] = []


def _flag(field: str, kind: Any, default: Any, flag: str, help: str) -> None:
    """The parameter's own default is None, "not given": a flag typed at its default value
    (`--seed 2`) is still given, and a model that takes no diffusers flags refuses it."""
    shown = False if default in (None, "") else str(default)
    option = typer.Option(flag, help=help, rich_help_panel=PANEL, show_default=shown)
    _FLAGS.append((flag[2:].replace("-", "_"), field, Annotated[kind | None, option], None))


_flag("loras", list[str] | None, None, "--lora", "LoRA ID_OR_PATH[:SCALE], repeatable.")
_flag("vae", str, "auto", "--vae", "auto, tiny, full or ID_OR_PATH.")
_flag(
    "negative_prompt",
    str,
    "",
    "--negative-prompt",
    "Steer away from it (guidance full/initialize).",
)
_flag("strength", float, 0.5, "--strength", "How far from the input, 0-1.")
_flag("t_index_list", str | None, None, "--t-index", "Step indices on a 50-step grid: 32,45.")
_flag("guidance", str, "none", "--guidance", "none, full, self or initialize (residual CFG).")
_flag(
    "guidance_scale", float | None, None, "--guidance-scale",
    "CFG scale (>= 1; 1.2 by default); on an LCM-distilled model its own guidance (8.5).",
)  # fmt: skip
_flag("rcfg_delta", float, 1.0, "--rcfg-delta", "Virtual negative's weight (self/initialize).")
_flag("seed", int, 2, "--seed", "The stream's fixed noise.")
_flag(
    "batch_mode", str, "latency_first", "--batch-mode",
    "latency_first (1 in, 1 out) or stream_batch (steps-1 frames of lag).",
)  # fmt: skip
_flag("similarity_threshold", float, 0.0, "--similar-threshold", "Skip near-duplicates, 0-1.")
_flag("similarity_max_skip", int, 10, "--similar-max-skip", "Never skip more frames in a row.")
_flag("latent_feedback", float, 0.0, "--latent-feedback", "Share of the last output latent.")
_flag("bank_size", int, 0, "--bank-size", "Past frames whose attention K/V are reused.")
_flag("bank_merge", str, "fifo", "--bank-merge", "fifo or merge.")
_flag("flow_blend", float, 0.0, "--flow-blend", "Share of the flow-warped last output.")
_flag(
    "kv_downsample", int, 1, "--kv-downsample", "Pool self-attention K/V by 2 or 4 (faster, ToDo)."
)


def with_diffusers_flags(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the flags to `command`, which takes a `model_options: dict` keyword."""
    signature = inspect.signature(command, eval_str=True)
    kept = [p for p in signature.parameters.values() if p.name != "model_options"]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind)
        for name, _, kind, default in _FLAGS
    ]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        options: dict[str, Any] = {}
        for name, field, _, _ in _FLAGS:
            value = kwargs.pop(name, None)
            if value is not None and value != []:  # given on the command line
                options[field] = value
        return command(*args, model_options=options, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=kept + added)  # type: ignore[attr-defined]
    return wrapper
