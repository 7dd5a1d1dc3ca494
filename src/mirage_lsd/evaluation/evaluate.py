"""`mirage-lsd eval`: run a model on a clip and score it against the procedural look.

The prompt is resolved to its best-matching look (the built-in model's top match; the
model may blend in a second look where two match about as well, and `look_weight`
says how much of the blend the scored look is); every input frame is rendered with
that look's filter, and the model's output is
compared with it (style), with the previous output warped by optical flow
(flicker), and over time (drift).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from mirage_lsd.engine.stream_engine import InputSpec, StreamEngine, expected_frames
from mirage_lsd.errors import EndOfStream, UserError
from mirage_lsd.evaluation.metrics import FlowWarper, psnr, ssim
from mirage_lsd.geometry import apply_fit, plan_fit
from mirage_lsd.looks.catalog import get_look
from mirage_lsd.models.base import StreamModel
from mirage_lsd.sources import open_source

SSIM_FRAMES = 1000


@dataclass(frozen=True)
class EvalResult:
    look: str
    match_similarity: float
    look_weight: float  # the look's share in the built-in model's blend for this prompt
    frames: int
    style_psnr: float
    style_ssim: float
    identity_psnr: float
    warp_error: float | None  # None: no frame pair had a pixel seen in both frames
    warp_error_target: float | None
    warp_error_input: float | None
    drift_db: float
    model: str
    size: str
    steps: int

    def to_dict(self) -> dict[str, object]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def _mean(values: list[float | None]) -> float | None:
    return float(np.mean(values)) if values else None


def resolve_look(prompt: str, model: StreamModel | None = None) -> tuple[str, float, float]:
    """The look a prompt lands on (best match), the match's cosine similarity, and the
    look's weight in the blend the built-in model makes of the prompt: `model`'s own look
    bank and prompt settings when it is a built-in model (it is scored on the look it
    picks), else the bundled model's (the default config and the catalog's looks)."""
    from mirage_lsd.models.builtin.config import ModelConfig
    from mirage_lsd.models.builtin.model import BuiltinModel, catalog_bank
    from mirage_lsd.models.builtin.prompt_embedding import default_encoder, match_prompt

    cfg, bank = (
        (model.cfg, model.bank)
        if isinstance(model, BuiltinModel)
        else (ModelConfig(), catalog_bank())
    )
    embedding = default_encoder()([prompt])[0]
    match = match_prompt(prompt, embedding, bank, cfg.prompt_top_k, cfg.prompt_temperature)
    return match.best, match.similarity, match.weights[match.best]


def evaluate(
    engine: StreamEngine, source: InputSpec, prompt: str, frames: int, loop: bool = False
) -> EvalResult:
    """Stream `frames` frames of `source` through `engine` with `prompt` and score them.

    SSIM, the slowest metric, is taken on at most `SSIM_FRAMES` evenly spaced frames of
    those the source will give (not of those asked for, which may be far more).
    `loop` restarts a file at its end (a cut: long drift runs on short clips).
    """
    # output t must be scored against target t: a pipelining model's is frame t - lag's
    if engine.model.lag_frames(engine.max_steps) > 0:
        raise UserError("eval needs a model without lag: use --batch-mode latency_first")
    # 1. the look the prompt lands on, and the stream
    look_name, similarity, weight = resolve_look(prompt, engine.model)
    look = get_look(look_name)
    engine.set_prompt(prompt)
    engine.reset()
    stream = open_source(source, loop=loop)
    known = expected_frames(stream)
    count = frames if known is None else min(frames, max(1, math.ceil(known)))
    ssim_every = -(-count // SSIM_FRAMES)  # ceil: at most SSIM_FRAMES frames
    warper = FlowWarper()
    style, structure, ident, flick, flick_target, flick_input = [], [], [], [], [], []
    prev: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    try:
        for i in range(frames):
            try:
                frame = stream.recv().image
            except EndOfStream:
                break
            # 2. the model's output and the look's rendering of the same fitted frame
            out = engine.process(frame)
            size = out.shape[:2]
            fitted = apply_fit(frame, plan_fit(frame.shape[:2], size, engine.fit))
            target = look.render(fitted)
            style.append(psnr(out, target))
            ident.append(psnr(fitted, target))
            if i % ssim_every == 0:
                structure.append(ssim(out, target))
            # 3. flicker: each of output, target and input against its warped predecessor
            if prev is not None:
                maps, valid = warper.prepare(prev[0], fitted)
                if valid.any():  # a pair with every pixel occluded says nothing
                    flick_input.append(warper.warp_error(prev[0], fitted, maps, valid))
                    flick_target.append(warper.warp_error(prev[1], target, maps, valid))
                    flick.append(warper.warp_error(prev[2], out, maps, valid))
            prev = (fitted, target, out)
    finally:
        stream.close()
    if len(style) < 2:
        raise UserError("eval needs at least 2 frames of input")
    # 4. drift: the last tenth of the stream against the first
    tenth = max(1, len(style) // 10)
    assert prev is not None
    h, w = prev[2].shape[:2]
    return EvalResult(
        look=look_name,
        match_similarity=similarity,
        look_weight=weight,
        frames=len(style),
        style_psnr=float(np.mean(style)),
        style_ssim=float(np.mean(structure)),
        identity_psnr=float(np.mean(ident)),
        warp_error=_mean(flick),
        warp_error_target=_mean(flick_target),
        warp_error_input=_mean(flick_input),
        drift_db=float(np.mean(style[-tenth:]) - np.mean(style[:tenth])),
        model=engine.model.info.name,
        size=f"{w}x{h}",
        steps=engine.model.steps_run(engine.max_steps),
    )
