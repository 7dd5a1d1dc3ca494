"""Train `mirage-lsd-v1`: `mirage-lsd train --config configs/builtin.yaml [--resume]`.

The whole recipe, top to bottom:

1. config, seed and threads
2. data: deterministic sequences (batch i is the same in every run and after resume)
3. model and optimizer, or the checkpoint to resume from
4. the loop; each frame of a sequence is denoised in order, as at run time:
   - history augmentation: the previous frame's target or the model's own previous
     output, blurred, color-shifted, misaligned, then warped by the input's flow
   - diffusion forcing: every frame draws its own noise level, and so does its history
   - step sizes: flow matching (d=0), self-consistency (one step of 2d = two of d,
     the shortcut-model objective), and direct targets at the run-time step sizes
   - the low-res x0 is scored, and so is the guided-upsampled full-res output; with
     `look_balance` (on by default), each sample's loss is divided by a power of
     its look's running mean loss (`look_balance_power`, 0.5 by default)
5. eval: held-out clips streamed through the real `BuiltinModel.step`, PSNR at 1 and
   max steps
6. checkpoint (atomic, fsynced) every `checkpoint_every` steps
7. export the weights as safetensors: the last step's, or with `optim.ema` their
   moving average (the eval then scores both)
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch import Tensor
from torch.optim.swa_utils import AveragedModel

from mirage_lsd.device import usable_cpus
from mirage_lsd.errors import UserError, first_line
from mirage_lsd.looks import LOOKS
from mirage_lsd.models.builtin.cache import KVCache
from mirage_lsd.models.builtin.config import ModelConfig
from mirage_lsd.models.builtin.flow import warp
from mirage_lsd.models.builtin.model import (
    ADDED_FIELDS,
    NAME,
    BuiltinModel,
    catalog_bank,
    load_weights,
    save_weights,
)
from mirage_lsd.models.builtin.network import LSDNet, edge_detail, guided_upsample, luma
from mirage_lsd.models.builtin.prompt_embedding import LookBank
from mirage_lsd.models.builtin.sampler import Denoised, Denoiser, add_noise, shortcut_target
from mirage_lsd.training.balance import LookBalance
from mirage_lsd.training.config import (
    ObjectiveConfig,
    OptimConfig,
    TrainConfig,
    load_train_config,
)
from mirage_lsd.training.data import Batch, Sequence, SequenceData, collate
from mirage_lsd.training.ema import ema_model

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
FLOW_MATCHING, SHORTCUT, DIRECT = 0, 1, 2  # how a sample's step size and target are chosen


@dataclass(frozen=True)
class TrainResult:
    weights: Path  # the exported safetensors file
    step: int  # steps done in total
    losses: list[float]  # one per step, this run and the runs it resumed
    metrics: dict[str, float]  # the last eval


# ---------------------------------------------------------------- one frame's inputs


class Noise:
    """This step's random numbers, drawn on the CPU from (seed, step): runs are repeatable."""

    def __init__(self, seed: int, step: int, device: torch.device) -> None:
        state = int(np.random.SeedSequence([seed, step]).generate_state(1)[0])
        self.gen = torch.Generator().manual_seed(state)
        self.device = device

    def uniform(self, *shape: int, low: float = 0.0, high: float = 1.0) -> Tensor:
        return (torch.rand(*shape, generator=self.gen) * (high - low) + low).to(self.device)

    def normal(self, *shape: int) -> Tensor:
        return torch.randn(*shape, generator=self.gen).to(self.device)

    def integers(self, low: Tensor, high: Tensor) -> Tensor:
        """Per element, an integer in [low, high]."""
        u = torch.rand(low.shape, generator=self.gen).to(self.device)
        return (low + (u * (high - low + 1)).floor()).clamp(max=high)


def gaussian_blur(x: Tensor, sigma: Tensor, radius: int) -> Tensor:
    """Blur each sample of x (B, C, H, W) by its own sigma (B,), separably."""
    b, c, h, w = x.shape
    taps = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)  # (K,)
    kernel = torch.exp(-(taps[None] ** 2) / (2 * sigma[:, None].clamp_min(1e-3) ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (B*C, K)
    y = x.reshape(1, b * c, h, w)
    y = F.conv2d(
        F.pad(y, (radius, radius, 0, 0), mode="replicate"), kernel[:, None, None], groups=b * c
    )
    y = F.conv2d(
        F.pad(y, (0, 0, radius, radius), mode="replicate"), kernel[:, None, :, None], groups=b * c
    )
    return y.reshape(b, c, h, w)


def make_history(
    batch: Batch, frame: int, own: Tensor | None, obj: ObjectiveConfig, noise: Noise
) -> tuple[Tensor, Tensor, Tensor]:
    """History for `frame`: the previous output, corrupted, warped and noised.

    Returns history (B, 3, h, w), validity mask (B, 1, h, w), history noise level (B,).
    """
    target = batch.targets_lo[:, frame]
    b = target.shape[0]
    if frame == 0:  # a stream's first frame has no history
        return (
            torch.zeros_like(target),
            torch.zeros_like(target[:, :1]),
            torch.zeros(b, device=target.device),
        )
    # 1. source: the previous target, or the model's own previous output
    previous = batch.targets_lo[:, frame - 1]
    if own is not None:
        use_own = (noise.uniform(b) < obj.p_own_history).view(b, 1, 1, 1)
        previous = torch.where(use_own, own, previous)
    # 2. corrupt: blur, color shift, misalignment
    radius = math.ceil(3 * obj.history_blur)
    previous = gaussian_blur(previous, noise.uniform(b, high=obj.history_blur), radius)
    gain = noise.uniform(b, 3, 1, 1, low=-1, high=1) * obj.history_color_shift
    offset = noise.uniform(b, 3, 1, 1, low=-1, high=1) * obj.history_color_shift
    previous = previous * (1 + gain) + offset
    flow = batch.flows[:, frame] + noise.uniform(b, 2, 1, 1, low=-1, high=1) * obj.history_misalign
    # 3. warp to this frame, as at run time
    history, mask = warp(previous, flow)
    # 4. diffusion forcing on the history: its own noise level, which the network is told
    sigma = noise.uniform(b, high=obj.history_max_sigma)
    sigma = torch.where(noise.uniform(b) < obj.p_clean_history, torch.zeros_like(sigma), sigma)
    history = add_noise(history, noise.normal(*history.shape), sigma)
    # 5. sometimes none at all (a cut): the mask says so
    keep = (noise.uniform(b) >= obj.p_drop_history).float().view(b, 1, 1, 1)
    return history * keep, mask * keep, sigma


def sample_steps(
    b: int, cfg: ModelConfig, obj: ObjectiveConfig, noise: Noise
) -> tuple[Tensor, Tensor, Tensor]:
    """Per sample: noise level t (B,), step size d (B,), and kind (B,) (see FLOW_MATCHING)."""
    u = noise.uniform(b)
    kind = torch.full((b,), FLOW_MATCHING, device=u.device)
    kind[u < obj.shortcut_fraction + obj.direct_fraction] = DIRECT
    kind[u < obj.shortcut_fraction] = SHORTCUT
    one = torch.ones(b, device=u.device)
    # flow matching: any t in (0, 1], d = 0
    t = 1.0 - noise.uniform(b)
    d = torch.zeros(b, device=u.device)
    # direct: the grid of an n-step run, n in 1..max_steps
    n = noise.integers(one, one * cfg.max_steps)
    k = noise.integers(one, n)
    t = torch.where(kind == DIRECT, k / n, t)
    d = torch.where(kind == DIRECT, 1 / n, d)
    # shortcut: small step 2**-level, big step twice that, t on the small-step grid >= 2 small
    level = noise.integers(one, one * cfg.shortcut_levels)
    small = 2.0**-level
    j = noise.integers(2 * one, 2.0**level)
    t = torch.where(kind == SHORTCUT, j * small, t)
    d = torch.where(kind == SHORTCUT, 2 * small, d)
    return t, d, kind


def frame_denoiser(
    net: LSDNet, image: Tensor, history: Tensor, mask: Tensor, prompts: Tensor, sigma: Tensor,
    cache: KVCache, window: Tensor,
) -> Denoiser:  # fmt: skip
    """The network as a sampler's denoiser, for one frame's fixed inputs."""

    def denoiser(x: Tensor, t: Tensor, d: Tensor) -> Denoised:
        return Denoised(net(x, image, history, mask, prompts, t, d, sigma, cache, window).x0)

    return denoiser


def sequence_loss(
    net: LSDNet, batch: Batch, obj: ObjectiveConfig, noise: Noise, per_sample: bool = False
) -> Tensor:
    """Mean loss over the frames of a batch of sequences, streamed in order; with
    `per_sample`, one per sequence (B,) instead of the batch's mean."""
    b, frames = batch.frames.shape[:2]
    cache = KVCache(net.cfg.cache_frames)
    own: Tensor | None = None
    losses = []
    for f in range(frames):
        image, target = batch.images[:, f], batch.targets_lo[:, f]
        if net.cfg.detail_input:  # the full-res edges inside each cell, as at run time
            detail = edge_detail(luma(batch.frames[:, f]), tuple(image.shape[-2:]))
            image = torch.cat([image, detail], dim=1)
        history, mask, sigma = make_history(batch, f if net.cfg.temporal else 0, own, obj, noise)
        t, d, kind = sample_steps(b, net.cfg, obj, noise)
        x_t = add_noise(target, noise.normal(*target.shape), t)
        # shortcut samples: the target is where two half steps of the model itself land
        x0_target = target
        idx = (kind == SHORTCUT).nonzero().squeeze(1)
        if len(idx):
            sub = frame_denoiser(
                net, image[idx], history[idx], mask[idx], batch.prompts[idx], sigma[idx],
                cache.select(idx), batch.windows[idx],
            )  # fmt: skip
            half_steps = shortcut_target(sub, x_t[idx], t[idx], d[idx] / 2)
            x0_target = target.index_copy(0, idx, half_steps)
        out = net(x_t, image, history, mask, batch.prompts, t, d, sigma, cache, batch.windows)
        full = guided_upsample(out.x0, out.gain, batch.frames[:, f], image)
        full_error = full - batch.targets[:, f]
        if obj.full_res_loss == "l1":
            full_error = full_error.abs()
        elif obj.full_res_loss == "mse":
            full_error = full_error.square()
        else:  # l1+mse
            full_error = full_error.abs() + full_error.square()
        full_weight = torch.full((b,), obj.full_res_weight, device=target.device)
        if not obj.shortcut_full_res:
            full_weight[kind == SHORTCUT] = 0.0
        loss = (out.x0 - x0_target).pow(2).flatten(1).mean(1) + full_weight * (
            full_error.flatten(1).mean(1)
        )  # (B,)
        if not per_sample:
            loss = loss.mean()
        losses.append(loss)
        pushed = out.kv  # gradients flow through the cache within a sequence
        if obj.own_history_run_time and net.cfg.temporal and f + 1 < frames:
            with torch.no_grad():  # the next history as the run-time model would make it
                one = torch.ones(b, device=target.device)
                run_time = net(
                    noise.normal(*target.shape), image, history, mask, batch.prompts, one, one,
                    sigma, cache, batch.windows,
                )  # fmt: skip
            own = run_time.x0.clamp(-1.0, 1.0)
            if obj.cache_run_time:
                pushed = run_time.kv
        else:
            own = out.x0.detach()
        if net.cfg.temporal:
            cache = cache.push(pushed)
    return torch.stack(losses).mean(dim=0)


# ---------------------------------------------------------------- eval


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * math.log10(255.0**2 / max(mse, 1e-10))


@torch.no_grad()
def evaluate(
    net: LSDNet, bank: LookBank, sequences: list[Sequence], device: str
) -> dict[str, float]:
    """Stream held-out sequences through the real model; mean PSNR at 1 and max steps."""
    model = BuiltinModel(copy.deepcopy(net), bank, device, compile=False)
    metrics = {}
    for steps in sorted({1, net.cfg.max_steps}):
        scores = []
        for seq in sequences:
            state = model.init_state(*seq.frames.shape[1:3])
            cond = model.look_prompt(*seq.weights) if seq.weights else model.encode_prompt(None)
            for frame, target in zip(seq.frames, seq.targets, strict=True):
                output, state = model.step(frame, cond, state, steps)
                scores.append(psnr(output, target))
        metrics[f"psnr_{steps}step"] = float(np.mean(scores))
    metrics["psnr_input"] = float(np.mean([psnr(s.frames, s.targets) for s in sequences]))
    return metrics


# ---------------------------------------------------------------- checkpoints


def save_checkpoint(
    path: Path,
    net: LSDNet,
    opt: torch.optim.Optimizer,
    cfg: TrainConfig,
    step: int,
    losses: list[float],
    balance: LookBalance | None = None,
    average: AveragedModel | None = None,
) -> None:
    tmp = path.with_suffix(".tmp")
    state = {
        "step": step,
        "device": next(net.parameters()).device.type,  # a resume elsewhere is not exact
        "net": net.state_dict(),
        "optim": opt.state_dict(),
        "config": cfg.to_dict(),
        "losses": losses,
    }
    if balance is not None:
        state["look_balance"] = balance.state_dict()
    if average is not None:
        state["ema"] = average.state_dict()
    with tmp.open("wb") as file:
        torch.save(state, file)
        file.flush()
        os.fsync(file.fileno())  # on disk before the rename: a crash leaves old or new, whole
    tmp.replace(path)
    if os.name == "posix":  # the rename itself on disk too: a power loss keeps the new one
        with contextlib.suppress(OSError):  # a file system that cannot sync a folder
            folder = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)


#: Fields a resumed run may change: how long it runs and how it reports, not what it learns.
RUN_CONTROL = (
    "steps", "out_dir", "threads", "eval_every", "eval_sequences", "checkpoint_every",
    "init_weights",
)  # fmt: skip


#: Training fields added after checkpoints were first written, with the value that a
#: checkpoint written before them ran with (several defaults changed since).
TRAIN_ADDED_FIELDS: dict[str, Any] = {
    "init_weights": "",
    "data": {"view": 0},
    "optim": {"ema": 0.0},
    "objective": {
        "full_res_loss": "l1",
        "look_balance": False,
        "look_balance_power": 1.0,
        "own_history_run_time": False,
        "cache_run_time": False,
        "shortcut_full_res": True,
    },
}


def with_added(saved: dict[str, Any], added: dict[str, Any]) -> dict[str, Any]:
    """`saved` with the fields it lacks at their values in `added` (`TRAIN_ADDED_FIELDS`):
    what a run checkpointed before those fields existed ran with. So resuming it with
    another value (today's default, say) is refused."""
    out = dict(saved)
    for key, value in added.items():
        if key not in out:
            out[key] = value
        elif isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = with_added(out[key], value)
    return out


def changed_fields(saved: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the fields of `now` that differ in `saved` (a field `saved` lacks
    and `with_added` does not know counts as unchanged)."""
    out = []
    for key, value in now.items():
        name = f"{prefix}{key}"
        if key not in saved or (not prefix and key in RUN_CONTROL):
            continue
        if isinstance(value, dict):
            out += changed_fields(saved[key], value, f"{name}.")
        elif json.dumps(saved[key]) != json.dumps(value):  # tuples and lists alike
            out.append(name)
    return out


def read_checkpoint(path: Path, cfg: TrainConfig, device: str) -> dict[str, Any]:
    """A run's checkpoint, checked against the run that would resume it: the same model
    and training config. Read before the data is loaded, so a run that cannot resume
    says so at once. A run resumed on another kind of device goes on, with a warning:
    its numbers differ from there on."""
    if not path.is_file():
        raise UserError(f"nothing to resume: no checkpoint {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model_config = state["config"]["model"]
    except Exception as exc:
        reason = first_line(exc)
        raise UserError(
            f"checkpoint {path} is corrupted or not a training checkpoint: {reason}"
        ) from None
    # a checkpoint from before a model field existed was made with that field's old value
    model = cfg.model.to_dict()
    changed_model = changed_fields({**ADDED_FIELDS, **model_config}, model, "model.")
    if changed_model or {**ADDED_FIELDS, **model_config} != model:
        names = ", ".join(changed_model) or "the model's fields"
        raise UserError(
            f"checkpoint {path} was made with another model config ({names} differ): "
            "resume with its config, or start a new run in another --out-dir"
        )
    here, there = torch.device(device).type, state.get("device")
    if there is not None and there != here:
        log.warning(
            "checkpoint %s was trained on %s and goes on on %s: the run will not end with "
            "the weights an uninterrupted run on %s gives (pass --device %s for those)",
            path, there, here, there, there,
        )  # fmt: skip
    saved = with_added(state["config"], TRAIN_ADDED_FIELDS)
    changed = changed_fields({**saved, "model": {}}, {**cfg.to_dict(), "model": {}})
    if changed:  # a resumed run must be the run it continues
        raise UserError(
            f"checkpoint {path} was made with other values of {', '.join(changed)}: "
            "resume with its config, or start a new run in another --out-dir"
        )
    if here == "cpu" and saved.get("threads", cfg.threads) != cfg.threads:
        log.warning(
            "checkpoint %s was trained with %d threads and goes on with %d: CPU sums split "
            "by thread, so the run will not end with the weights an uninterrupted run gives",
            path, saved["threads"], cfg.threads,
        )  # fmt: skip
    return state


def load_checkpoint(
    path: Path,
    state: dict[str, Any],
    net: LSDNet,
    opt: torch.optim.Optimizer,
    balance: LookBalance | None = None,
    average: AveragedModel | None = None,
) -> tuple[int, list[float], int]:
    """Load a checkpoint read by `read_checkpoint` into `net`, `opt`, `balance` and
    `average`: (step, losses, the run's `steps`, which its learning-rate schedule was
    made for)."""
    try:
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["optim"])
        if balance is not None and "look_balance" in state:
            balance.load_state_dict(state["look_balance"])
        if average is not None:
            average.load_state_dict(state["ema"])
    except (KeyError, RuntimeError, ValueError) as exc:
        reason = first_line(exc)
        raise UserError(f"checkpoint {path} does not fit this run: {reason}") from None
    return int(state["step"]), list(state["losses"]), int(state["config"]["steps"])


def initial_weights(path: Path, model: ModelConfig) -> dict[str, Tensor]:
    """The network weights of a weight file to fine-tune, checked against `model`."""
    loaded, _ = load_weights(path)
    if loaded.cfg != model:
        names = ", ".join(changed_fields(loaded.cfg.to_dict(), model.to_dict(), "model."))
        raise UserError(
            f"init_weights {path} was made with a different model config ({names} differ)"
        )
    return loaded.state_dict()


class CtrlC:
    """The first Ctrl-C ends the run after the step under way, with a checkpoint (the
    loop checks `pressed`); a second one stops it at once, saving nothing more."""

    def __enter__(self) -> CtrlC:
        self.pressed = False
        self._previous: Any = None
        if threading.current_thread() is threading.main_thread():  # signals go there only
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self.pressed:
            raise KeyboardInterrupt
        self.pressed = True
        log.warning("stopping after this step (Ctrl-C again to stop at once)")

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def lr_at(step: int, optim: OptimConfig, total: int) -> float:
    """Linear warmup, then cosine decay to min_lr."""
    if step < optim.warmup:
        return optim.lr * (step + 1) / optim.warmup
    progress = (step - optim.warmup) / max(1, total - optim.warmup)
    return optim.min_lr + 0.5 * (optim.lr - optim.min_lr) * (1 + math.cos(math.pi * progress))


# ---------------------------------------------------------------- the run


def train(
    config: Path,
    device: str = "cpu",
    resume: bool = False,
    out_dir: Path | None = None,
    show_progress: bool = True,
    stop_at: int | None = None,
) -> TrainResult:
    """Train from `config`; `stop_at` ends early (with a checkpoint) at that step."""
    # 1. config, seed and threads: torch's, and OpenCV's (the data's looks and flow) for
    # the run only, as the caller's process may use OpenCV on its own terms
    cfg = load_train_config(config)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    opencv_threads = cv2.getNumThreads()
    cv2.setNumThreads(cfg.threads)
    try:
        return _run(cfg, Path(out_dir or cfg.out_dir), device, resume, show_progress, stop_at)
    finally:
        cv2.setNumThreads(opencv_threads)


def _run(
    cfg: TrainConfig, out: Path, device: str, resume: bool, show_progress: bool,
    stop_at: int | None,
) -> TrainResult:  # fmt: skip
    """`train` once its config is read and its threads set."""
    # 2. the run to continue, or the proof that there is none: before minutes of loading
    if not resume and (out / CHECKPOINT).exists():  # never overwrite a run by accident
        raise UserError(
            f"{out} already holds a training run ({CHECKPOINT}): add --resume to continue it, "
            "or choose another --out-dir to start over"
        )
    resumed = read_checkpoint(out / CHECKPOINT, cfg, device) if resume else None
    # 3. data
    bank = catalog_bank()
    train_data = SequenceData(cfg.data, "train", cfg.seed)
    eval_sequences = SequenceData(cfg.data, "eval", cfg.seed).sequences(
        0, cfg.eval_sequences, looks=True
    )
    ds, gds = cfg.model.image_downscale, cfg.model.grid_downscale
    # 4. model and optimizer
    net = LSDNet(cfg.model).to(device)
    opt = torch.optim.AdamW(
        net.parameters(),
        lr=cfg.optim.lr,
        betas=(cfg.optim.beta1, cfg.optim.beta2),
        weight_decay=cfg.optim.weight_decay,
    )
    if cfg.init_weights and not resume:
        net.load_state_dict(initial_weights(Path(cfg.init_weights), cfg.model))
    average = ema_model(net, cfg.optim.ema) if cfg.optim.ema else None
    exported = net if average is None else average.module  # what the run's weights are
    balance = (
        LookBalance(len(LOOKS) + 1, cfg.objective.look_balance_power)
        if cfg.objective.look_balance
        else None
    )
    start, losses, was = (
        load_checkpoint(out / CHECKPOINT, resumed, net, opt, balance, average)
        if resumed is not None
        else (0, [], cfg.steps)
    )
    if was != cfg.steps:
        log.warning(
            "resuming a run of %d steps as one of %d: the learning-rate schedule now decays "
            "to step %d, so the rate goes from %.3g to %.3g at step %d",
            was, cfg.steps, cfg.steps, lr_at(start - 1, cfg.optim, was),
            lr_at(start, cfg.optim, cfg.steps), start,
        )  # fmt: skip
    log.info(
        "training %s: %d parameters, steps %d..%d",
        NAME,
        sum(p.numel() for p in net.parameters()),
        start,
        cfg.steps,
    )
    out.mkdir(parents=True, exist_ok=True)  # only now: a run that cannot start leaves none
    metrics: dict[str, float] = {}
    # a live bar on a terminal; in a log or a pipe, a plain line at each checkpoint instead
    out_console = Console(stderr=True, soft_wrap=True)
    bar = show_progress and out_console.is_terminal
    columns = (
        TextColumn("train"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
    )
    with (
        Progress(*columns, console=out_console, disable=not bar) as progress,
        ThreadPoolExecutor(max_workers=1) as prefetch,
        CtrlC() as ctrl_c,
    ):
        task = progress.add_task("train", total=cfg.steps, completed=start, status="")
        # 5. the loop; with a core to spare, batch i + 1 is rendered on a thread while
        # batch i trains (the looks and the flow are numpy/OpenCV work). Without one the
        # thread only preempts torch's threads: on 2 cores, 2 torch threads and the
        # thread took 0.81 s a step, one after the other 0.70 (benchmarks/RESULTS.md).
        end = min(cfg.steps, stop_at or cfg.steps)
        make_batch = lambda i: collate(train_data.sequences(i, cfg.batch_size), bank, ds, gds)  # noqa: E731
        overlap = device != "cpu" or usable_cpus() > cfg.threads
        upcoming = prefetch.submit(make_batch, start) if overlap else None
        saved = start  # the last step a checkpoint holds
        for step in range(start, end):
            net.train()
            for group in opt.param_groups:
                group["lr"] = lr_at(step, cfg.optim, cfg.steps)
            batch = (upcoming.result() if upcoming else make_batch(step)).to(device)
            if overlap and step + 1 < end:
                upcoming = prefetch.submit(make_batch, step + 1)
            noise = Noise(cfg.seed, step, torch.device(device))
            if balance is None:
                loss = sequence_loss(net, batch, cfg.objective, noise)
            else:
                errors = sequence_loss(net, batch, cfg.objective, noise, per_sample=True)
                loss = (errors * balance.weights(errors, batch.looks).to(errors.device)).mean()
            if not torch.isfinite(loss):
                raise RuntimeError(f"loss is {loss.item()} at step {step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.optim.grad_clip)
            opt.step()
            if average is not None:
                average.update_parameters(net)
            losses.append(loss.item())
            done = step + 1
            # 6. checkpoint, before the eval: an eval that fails or is cut short loses nothing
            if done % cfg.checkpoint_every == 0 or done in (cfg.steps, stop_at):
                save_checkpoint(out / CHECKPOINT, net, opt, cfg, done, losses, balance, average)
                saved = done
            # 7. eval
            if done % cfg.eval_every == 0 or done == cfg.steps:
                metrics = evaluate(exported.eval(), bank, eval_sequences, device)
                if average is not None:  # and the last step's weights, to compare
                    raw = evaluate(net.eval(), bank, eval_sequences, device)
                    metrics |= {f"raw_{k}": v for k, v in raw.items() if k != "psnr_input"}
                log.info("step %d: %s", done, metrics)
            status = f"loss {np.mean(losses[-20:]):.4f}" + "".join(
                f"  {k} {v:.2f}" for k, v in metrics.items() if k.endswith("step")
            )
            progress.update(task, completed=done, status=status)
            if show_progress and not bar and done == saved:
                out_console.print(f"step {done}/{cfg.steps}  {status}", highlight=False)
            if ctrl_c.pressed:  # after a whole step: the checkpoint is one a resume continues
                if done > saved:
                    save_checkpoint(out / CHECKPOINT, net, opt, cfg, done, losses, balance, average)
                out_console.print(f"stopped at step {done}, checkpoint saved: --resume continues")
                raise KeyboardInterrupt
    # 8. export
    weights = out / f"{NAME}.safetensors"
    save_weights(weights, exported.eval(), bank)
    return TrainResult(weights, len(losses), losses, metrics)
