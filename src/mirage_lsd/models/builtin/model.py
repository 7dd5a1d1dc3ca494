"""`mirage-lsd-v1` as a StreamModel: uint8 frames in and out, everything else inside.

Per frame (see `BuiltinModel.step`): downscale the input, compute optical flow on the
input against the previous input, warp the previous output by it (the history), run
1-4 shortcut steps of the denoiser at low resolution, and bring the result back to full
resolution with the guided upsampler. The per-stream state (`StreamState`) goes in and
comes out; the model object holds only weights and tools.

Weights are a safetensors file: the network's tensors under `net.`, the look bank
(embeddings of every look's descriptions) under `looks.`, and the config as JSON in
the metadata, so a file is self-describing.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

from mirage_lsd.device import COMPILE_ENV, SHORT_STREAM, compile_by_default, cpu_has_amx
from mirage_lsd.errors import UserError
from mirage_lsd.models.base import Conditioning, ModelInfo, State, StreamModel
from mirage_lsd.models.builtin.cache import KVCache, StreamState
from mirage_lsd.models.builtin.compiled import BackgroundCompiler
from mirage_lsd.models.builtin.config import ConfigError, ModelConfig
from mirage_lsd.models.builtin.flow import FlowEstimator, flow_gray, flow_to_tensor, warp
from mirage_lsd.models.builtin.network import EDGE_KNEE, LSDNet, NetOutput, edge_detail, luma
from mirage_lsd.models.builtin.on_device import shrink_on_device, upsample_on_device
from mirage_lsd.models.builtin.prompt_embedding import (
    LookBank,
    PromptMatch,
    blend_anchors,
    default_encoder,
    match_prompt,
)
from mirage_lsd.models.builtin.sampler import Denoised, sample

log = logging.getLogger(__name__)

NAME = "mirage-lsd-v1"
WEIGHTS_FORMAT = "mirage-lsd-v1/1"  # bump when the file layout changes
# config fields added after weight files were first written, with the value that a file
# written before them was made with (their defaults may differ)
ADDED_FIELDS: dict[str, object] = {
    "detail_input": False,
    "experts": 0,
    "grade_knots": 0,
    "grade_grid": 0,
    "grade_bands": 0,
    "grade_lut": 0,
    "edge_guide": False,
    "local_experts": 0,
    "local_width": 32,
    "palette_colours": 0,
}
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / f"{NAME}.safetensors"
# every stream starts from the same noise: the same input gives the same output (up to
# float rounding once a background compile swaps in the compiled network)
NOISE_SEED = 0
# The denoiser's image has at most this many pixels when the downscale is automatic: big
# frames are denoised on a coarser grid (720p: 256x144, frame / 5, instead of 320x180),
# which keeps 720p real-time on 2 CPU cores; the guided upsampler restores full detail.
WORK_PIXELS = 40_000
MAX_AUTO_DOWNSCALE = 32  # 7680x4320 (8K) fits the budget at 30 (256x144), not at 29


class WeightsError(UserError):
    """A weight file that is missing, corrupted, or does not match its config."""


@dataclass(frozen=True)
class PromptCond:
    """Conditioning for the built-in model: the embedding the network sees, and the match."""

    embedding: Tensor  # (prompt_dim,) a blend of look anchors; zeros for no prompt
    match: PromptMatch | None = None  # None: no prompt (the input passes through)


def to_tensor(image: np.ndarray) -> Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [-1, 1]."""
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None]
    return tensor.float().div_(127.5).sub_(1.0).contiguous()


UPSAMPLE_BAND = 16  # low-res rows per band: a band's working set stays in the CPU cache


def _band_up(x: np.ndarray, rows: slice, top: int, count: int, width: int, s: int) -> np.ndarray:
    """Bilinear x`s` upsampling of `x[rows]`, keeping `count` output rows from `top`."""
    size = (width, (rows.stop - rows.start) * s)
    return cv2.resize(x[rows], size, interpolation=cv2.INTER_LINEAR)[top : top + count]


def half_edges_u8(luma: np.ndarray) -> np.ndarray:
    """`network.half_edges` of an (H, W) uint8 luma with OpenCV: (H // 2, W // 2) float32."""
    height, width = luma.shape
    even = luma[: height // 2 * 2, : width // 2 * 2].astype(np.float32)
    half = cv2.resize(even, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
    scale = 2.0 / 255.0 / 8.0  # levels to [-1, 1] units, and Sobel's weights to one pixel
    dx = cv2.Sobel(half, cv2.CV_32F, 1, 0, ksize=3, scale=scale)
    dy = cv2.Sobel(half, cv2.CV_32F, 0, 1, ksize=3, scale=scale)
    strength = cv2.magnitude(dx, dy) * np.float32(min(height, width) / 512)
    return strength / (strength + np.float32(EDGE_KNEE))


def edge_map_u8(luma: np.ndarray) -> np.ndarray:
    """`network.edge_map` of an (H, W) uint8 luma with OpenCV: (H, W) float32 in [0, 1)."""
    height, width = luma.shape
    return cv2.resize(half_edges_u8(luma), (width, height), interpolation=cv2.INTER_LINEAR)


def edge_detail_u8(luma: np.ndarray, size: tuple[int, int]) -> Tensor:
    """`network.edge_detail` of an (H, W) uint8 luma with OpenCV, several times faster
    than torch on a CPU: (1, 1, h, w) float32 in [-1, 1)."""
    edges = half_edges_u8(luma)
    cells = cv2.resize(edges, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(cells * np.float32(2.0) - np.float32(1.0))[None, None]


def upsample_to_frame(
    x0: Tensor, gain: Tensor, frame: np.ndarray, small: np.ndarray, luma: np.ndarray | None = None
) -> np.ndarray:
    """`network.guided_upsample` for one frame, in uint8 pixels with OpenCV: the run-time path.

    Same math (bilinear, half-pixel centers, BT.601 luma), with the luma rounded to whole
    levels by OpenCV (outputs within a few levels of the tensor version). At 720p it is
    bound by memory traffic, so it runs in horizontal bands whose full-resolution planes
    fit in the cache: each band is resized from its low-res rows plus one row of margin
    (bilinear needs one neighbour), which gives exactly the rows a whole-frame resize would.
    x0: (1, 3, h, w); gain: (1, 3 * guides, h, w); frame: (H, W, 3) uint8; small: (h, w, 3)
    uint8; H = s * h.
    """
    height, width = frame.shape[:2]
    h = small.shape[0]
    s = height // h
    base = ((x0[0].float() + 1.0) * 127.5).permute(1, 2, 0).contiguous().numpy()  # (h, w, 3)
    gains = [
        g.permute(1, 2, 0).contiguous().numpy() for g in gain[0].float().split(3)
    ]  # (h, w, 3) per guide
    small_luma = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32)  # (h, w)
    if luma is None:  # the frame's, unless the step already made it
        luma = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)  # (H, W) uint8
    # in levels, as the detail is (the network's edge map is in [-1, 1] units of output)
    edges = edge_map_u8(luma) * np.float32(127.5) if len(gains) > 1 else None
    out = np.empty_like(frame)
    for r0 in range(0, h, UPSAMPLE_BAND):
        r1 = min(r0 + UPSAMPLE_BAND, h)
        a, b = max(r0 - 1, 0), min(r1 + 1, h)  # low-res rows read, with margin
        band = slice(a, b), (r0 - a) * s, (r1 - r0) * s, width, s
        rows = slice(r0 * s, r1 * s)
        detail = cv2.subtract(luma[rows], _band_up(small_luma, *band), dtype=cv2.CV_32F)
        scaled = cv2.multiply(_band_up(gains[0], *band), cv2.merge([detail, detail, detail]))
        if edges is not None:
            edge = edges[rows]
            lines = cv2.multiply(_band_up(gains[1], *band), cv2.merge([edge, edge, edge]))
            scaled = cv2.add(scaled, lines)
        # rounds to the nearest level and saturates to 0..255
        cv2.add(scaled, _band_up(base, *band), dst=out[rows], dtype=cv2.CV_8U)
    return out


# ---------------------------------------------------------------- weight files


def save_weights(path: Path, net: LSDNet, bank: LookBank) -> None:
    """Write the network, its config and the look bank to one safetensors file."""
    from safetensors.torch import save

    tensors = {f"net.{k}": v.detach().contiguous() for k, v in net.state_dict().items()}
    tensors |= {
        "looks.descriptions": bank.descriptions.contiguous(),
        "looks.owner": bank.owner.contiguous(),
        "looks.anchors": bank.anchors.contiguous(),
    }
    metadata = {
        "format": WEIGHTS_FORMAT,
        "config": json.dumps(net.cfg.to_dict()),
        "looks": json.dumps(list(bank.names)),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    # written by us, not by safetensors' `save_file`, which makes the file private (0600)
    with tmp.open("wb") as file:  # on disk before the rename: a crash leaves the old file
        file.write(save(tensors, metadata=metadata))
        file.flush()
        os.fsync(file.fileno())
    tmp.replace(path)


def is_weight_file(path: Path) -> bool:
    """True for a safetensors file written by `save_weights`, of any format version, or
    one whose header cannot be read (truncated, corrupted), so that `load_weights` says
    what is wrong with it; False for other safetensors files (reads the header only)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return str((f.metadata() or {}).get("format", "")).startswith("mirage-lsd")
    except (SafetensorError, OSError, ValueError, RuntimeError):
        return True


def load_weights(path: Path) -> tuple[LSDNet, LookBank]:
    """Read a weight file; every failure is a WeightsError that names the file."""
    from safetensors import SafetensorError, safe_open

    # 1. the file itself
    if not path.is_file():
        raise WeightsError(f"weight file {path} not found (train one with `mirage-lsd train`)")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"weight file {path} is corrupted or not safetensors: {exc}") from None
    # 2. its metadata: format, config, look names
    if metadata.get("format") != WEIGHTS_FORMAT:
        raise WeightsError(
            f"weight file {path} is not a {NAME} weight file "
            f"(format {metadata.get('format')!r}, expected {WEIGHTS_FORMAT!r})"
        )
    try:
        cfg = ModelConfig.from_dict({**ADDED_FIELDS, **json.loads(metadata["config"])})
        names = tuple(json.loads(metadata["looks"]))
        bank = LookBank(
            names, tensors["looks.descriptions"], tensors["looks.owner"], tensors["looks.anchors"]
        )
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise WeightsError(f"weight file {path} has a bad config or look bank: {exc}") from None
    if problem := _bank_problem(bank, cfg.prompt_dim):
        raise WeightsError(f"weight file {path} has a bad look bank: {problem}")
    # stored as float16 or int32 by another writer: what the prompt's matching computes in
    bank = LookBank(names, bank.descriptions.float(), bank.owner.long(), bank.anchors.float())
    # 3. the network: every tensor present, with the shape its config implies
    net = LSDNet(cfg)
    state = {k.removeprefix("net."): v for k, v in tensors.items() if k.startswith("net.")}
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise WeightsError(
            f"weight file {path} does not match its config: "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise WeightsError(
                f"weight file {path}: tensor {name} has shape {tuple(tensor.shape)}, "
                f"its config implies {tuple(expected[name].shape)}"
            )
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise WeightsError(f"weight file {path}: tensor {name} holds NaN or infinite values")
    net.load_state_dict(state)
    return net.eval(), bank


def _bank_problem(bank: LookBank, dim: int) -> str | None:
    """What is wrong with a look bank read from a file, or None."""
    d = bank.descriptions.shape[0] if bank.descriptions.ndim == 2 else -1
    if len(set(bank.names)) != len(bank.names) or not bank.names:
        return "its look names are missing or repeated"
    if tuple(bank.descriptions.shape) != (d, dim) or tuple(bank.anchors.shape) != (
        len(bank.names),
        dim,
    ):
        return f"its embeddings are not {dim} wide, or not one anchor per look"
    if tuple(bank.owner.shape) != (d,) or bank.owner.is_floating_point():
        return "its description owners are not one look index per description"
    if d and not (int(bank.owner.min()) >= 0 and int(bank.owner.max()) < len(bank.names)):
        return "a description belongs to a look that is not there"
    if not d or int(torch.bincount(bank.owner.long(), minlength=len(bank.names)).min()) == 0:
        return "a look has no descriptions"  # no prompt could match it: the scores are -inf
    if not (torch.isfinite(bank.descriptions).all() and torch.isfinite(bank.anchors).all()):
        return "it holds NaN or infinite values"
    return None


# ---------------------------------------------------------------- the model


class BuiltinModel(StreamModel):
    """The small causal live-stream diffusion model that ships with mirage-lsd."""

    def __init__(
        self,
        net: LSDNet,
        bank: LookBank,
        device: str = "cpu",
        name: str = NAME,
        compile: bool | None = None,
        downscale: int | None = None,
        fp16: bool = False,
    ) -> None:
        if downscale is not None and (not isinstance(downscale, int) or downscale < 1):
            raise UserError(f"downscale must be a whole number >= 1, got {downscale!r}")
        self.cfg = net.cfg
        self.downscale = downscale  # None: automatic (see `downscale_for`)
        self.net = net.to(device).eval().requires_grad_(False)
        self.bank = bank
        self.device = torch.device(device)
        # the engine pads frames to this; a fixed downscale needs its own multiple
        self.size_multiple = (
            self.cfg.size_multiple
            if downscale is None
            else math.lcm(self.cfg.size_multiple, downscale * self.cfg.image_multiple)
        )
        self._local = threading.local()  # a flow estimator per thread: OpenCV's is not shared
        self.bf16 = self.device.type == "cpu" and cpu_has_amx()
        self.fp16 = fp16 and self.device.type == "cuda"
        # on a GPU the frame is shrunk and upsampled there (`on_device`), on a CPU by OpenCV
        self.frame_on_device = self.device.type != "cpu"
        # chosen for the caller (not asked for, nor set by MIRAGE_LSD_COMPILE): see plan_stream
        self._auto_compile = compile is None and not os.environ.get(COMPILE_ENV, "").strip()
        if compile is None:
            compile = compile_by_default(self.device.type)
        self._compiler = BackgroundCompiler(self.net, self._autocast) if compile else None
        self._compile_streams = True  # see `plan_stream`
        self._info = ModelInfo(
            name=name,
            description="small causal live-stream diffusion model (1-4 steps)",
            device=str(self.device),
            dtype="bfloat16" if self.bf16 else "float16" if self.fp16 else "float32",
            max_steps=self.cfg.max_steps,
            looks=bank.names,
            compile=compile,
        )

    def _flow(self) -> FlowEstimator:
        """This thread's flow estimator: streams sharing the model may run on several threads."""
        flow = getattr(self._local, "flow", None)
        if flow is None:
            flow = self._local.flow = FlowEstimator()
        return flow

    def _autocast(self) -> torch.autocast:
        """fp16 on CUDA when asked, bf16 on CPUs with AMX, fp32 elsewhere (a no-op context)."""
        if self.fp16:
            return torch.autocast("cuda", dtype=torch.float16)
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16)

    @classmethod
    def from_file(
        cls,
        path: Path = DEFAULT_WEIGHTS,
        device: str = "cpu",
        compile: bool | None = None,
        downscale: int | None = None,
        fp16: bool = False,
    ) -> BuiltinModel:
        net, bank = load_weights(path)
        name = NAME if path == DEFAULT_WEIGHTS else str(path)
        return cls(net, bank, device, name, compile, downscale, fp16)

    def downscale_for(self, height: int, width: int) -> int:
        """How much smaller than the frame the denoiser's image is.

        The trained downscale, or the one asked for; when automatic, the smallest
        larger one that keeps the image within WORK_PIXELS and divides the frame, else
        (no such one divides it) the smallest within WORK_PIXELS, the frame then padded
        inside the model to a size it divides (`init_state`).
        """
        if self.downscale is not None:
            return self.downscale
        unit = self.cfg.image_multiple
        work = range(self.cfg.image_downscale, MAX_AUTO_DOWNSCALE + 1)

        def pixels(ds: int) -> int:  # of the denoised image, the frame padded for `ds`
            m = ds * unit
            return (-(-height // m) * m // ds) * (-(-width // m) * m // ds)

        fitting = [ds for ds in work if pixels(ds) <= WORK_PIXELS] or [MAX_AUTO_DOWNSCALE]
        dividing = [ds for ds in fitting if height % (ds * unit) == 0 == width % (ds * unit)]
        return (dividing or fitting)[0]

    def stream_threads(self, cores: int) -> int:
        """On a CPU one core fewer, at least one. This network is hundreds of small
        operators: a second thread for them is worth less than a core left to decoding
        and encoding, and on a thread other than Python's main one torch's threads ran
        them slower still, likely OpenMP's idle threads spinning less once a second pool
        of them exists (2 cores, 512x512 through the engine: 100.6 against 78.8 FPS;
        benchmarks/RESULTS.md, "One torch thread for the built-in model")."""
        return cores if self.device.type == "cuda" else max(1, cores - 1)

    def plan_stream(self, live: bool, frames: float | None) -> None:
        """An automatic compile is skipped for a stream known to end within SHORT_STREAM
        frames, offline or played in real time: it would end before the compile paid off
        (a 73-frame clip took 18 s compiled against 7 s uncompiled on 2 cores,
        benchmarks/RESULTS.md)."""
        short = frames is not None and frames < SHORT_STREAM
        self._compile_streams = not (self._auto_compile and short)

    def wait_ready(self, timeout: float | None = None) -> None:
        if self._compiler is not None:
            self._compiler.wait(timeout)

    @property
    def info(self) -> ModelInfo:
        if self._compiler is not None and self._compiler.failed:  # it runs eagerly
            return replace(self._info, compile=False)
        return self._info

    # -- prompts

    def encode_prompt(self, text: str | None) -> Conditioning:
        if text is None or not text.strip():
            return PromptCond(torch.zeros(self.cfg.prompt_dim))
        embedding = default_encoder()([text])[0]
        match = match_prompt(
            text, embedding, self.bank, self.cfg.prompt_top_k, self.cfg.prompt_temperature
        )
        log.info("prompt %r -> %s (similarity %.2f)", text, match.weights, match.similarity)
        return PromptCond(blend_anchors(match.weights, self.bank), match)

    def look_prompt(self, name: str) -> PromptCond:
        """Conditioning for exactly one look, by name (no text model needed)."""
        if name not in self.bank.names:
            raise UserError(f"unknown look '{name}': use one of {', '.join(self.bank.names)}")
        weights = {name: 1.0}
        match = PromptMatch(name, weights, similarity=1.0, scores=weights)
        return PromptCond(blend_anchors(weights, self.bank), match)

    def mix_prompts(self, a: Conditioning, b: Conditioning, weight: float) -> Conditioning:
        embedding = a.embedding + (b.embedding - a.embedding) * weight
        looks: dict[str, float] = {}
        for cond, w in ((a, 1.0 - weight), (b, weight)):
            for name, v in (cond.match.weights if cond.match else {}).items():
                looks[name] = looks.get(name, 0.0) + w * v
        if not looks:
            return PromptCond(embedding)
        best = max(a.match.similarity if a.match else 0.0, b.match.similarity if b.match else 0.0)
        match = PromptMatch(
            f"mix({weight:.2f})", dict(sorted(looks.items(), key=lambda kv: -kv[1])), best, {}
        )
        return PromptCond(embedding, match)

    def describe_prompt(self, cond: Conditioning) -> dict[str, object]:
        if cond.match is None:
            return {}
        looks = {name: round(w, 3) for name, w in cond.match.weights.items()}
        return {"looks": looks, "similarity": round(cond.match.similarity, 3)}

    # -- streaming

    def init_state(self, height: int, width: int, seed: int | None = None) -> State:
        ds = self.downscale_for(height, width)
        m = ds * self.cfg.image_multiple
        if height <= 0 or width <= 0 or (self.downscale is not None and (height % m or width % m)):
            raise UserError(
                f"{NAME} at downscale {ds} needs frame sides that are multiples of {m}, "
                f"got {width}x{height}"
            )
        ph, pw = -(-height // m) * m, -(-width // m) * m  # automatic: padded here if need be
        log.info("%dx%d frames, denoised at %dx%d", width, height, pw // ds, ph // ds)
        generator = torch.Generator().manual_seed(NOISE_SEED if seed is None else seed)
        noise = torch.randn(1, 3, ph // ds, pw // ds, generator=generator)
        if self._compiler is not None and self._compile_streams:
            self._compiler.request((ph // ds, pw // ds))
        cache = KVCache(self.cfg.cache_frames if self.cfg.temporal else 0)
        padded = None if (ph, pw) == (height, width) else (ph, pw)
        return StreamState(height, width, ds, cache, noise.to(self.device), padded=padded)

    def step(
        self, image: np.ndarray, cond: Conditioning, state: State, steps: int
    ) -> tuple[np.ndarray, State]:
        # 1. check inputs
        height, width = state.height, state.width
        if image.shape != (height, width, 3) or image.dtype != np.uint8:
            raise ValueError(f"expected a ({height}, {width}, 3) uint8 frame, got {image.shape}")
        if not 1 <= steps <= self.cfg.max_steps:
            raise UserError(f"{NAME} runs 1 to {self.cfg.max_steps} steps, not {steps}")
        if state.padded is not None:  # edge pixels repeated out to a size the downscale divides
            ph, pw = state.padded
            image = cv2.copyMakeBorder(image, 0, ph - height, 0, pw - width, cv2.BORDER_REPLICATE)
        with torch.inference_mode(), self._autocast():  # one tensor kind: compiled nets rely on it
            output, state = self._step(image, cond, state, steps)
        if state.padded is not None:
            output = np.ascontiguousarray(output[:height, :width])
        return output, state

    def _step(
        self, image: np.ndarray, cond: PromptCond, state: StreamState, steps: int
    ) -> tuple[np.ndarray, StreamState]:
        height, width = image.shape[:2]  # padded, if the state says so
        ds = state.downscale
        gds = ds * self.cfg.patch
        # 2. the input at full and low resolution, and a small gray copy for flow
        on_device = self.frame_on_device  # the frame's sides divide by gds (init_state pads)
        if on_device:
            full, image_t, gray = shrink_on_device(image, ds, self.cfg.patch, self.device)
        else:
            small = cv2.resize(image, (width // ds, height // ds), interpolation=cv2.INTER_AREA)
            gray = flow_gray(small, height // gds, width // gds)
            image_t = to_tensor(small).to(self.device)  # (1, 3, h, w)
        frame_luma: np.ndarray | None = None  # on the CPU, shared with the upsampler
        if self.cfg.detail_input:  # the full-res edges inside each cell, as a fourth channel
            size = (height // ds, width // ds)
            if on_device:
                detail = edge_detail(luma(full / 127.5 - 1.0), size)
            else:
                frame_luma = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
                detail = edge_detail_u8(frame_luma, size).to(self.device)
            image_t = torch.cat([image_t, detail.to(image_t.dtype)], dim=1)
        # 3. history: the previous output, moved by the input's optical flow
        if state.prev_output is None or not self.cfg.temporal:
            history = torch.zeros_like(image_t[:, :3])
            mask = torch.zeros_like(image_t[:, :1])
        else:
            flow = flow_to_tensor(self._flow()(gray, state.prev_gray)).to(self.device)
            history, mask = warp(state.prev_output, flow)
        prompt = cond.embedding.to(self.device, copy=True)[None]  # (1, prompt_dim)
        sigma = torch.full((1,), self.cfg.history_sigma, device=self.device)
        grade_maps = self._grade_maps(cond.embedding, prompt, image_t.shape[-2:], state.grade_maps)
        maps = None if grade_maps is None else grade_maps[1]
        compiled = self._compiler and self._compiler.get((height // ds, width // ds), state.cache)
        net = self.net if compiled is None else compiled

        def denoiser(x: Tensor, t: Tensor, d: Tensor) -> Denoised:
            out = net(x, image_t, history, mask, prompt, t, d, sigma, state.cache, None, maps)
            return Denoised(out.x0, out)

        # 4. denoise at low resolution, upsample guided by the full-resolution input
        result: NetOutput = sample(denoiser, state.noise.clone(), steps).extra
        if on_device:
            output = upsample_on_device(result.x0, result.gain, full, image_t[:, :3])
        else:
            output = upsample_to_frame(result.x0.cpu(), result.gain.cpu(), image, small, frame_luma)
        # 5. the next state
        new_state = replace(
            state,
            cache=state.cache.push(result.kv) if self.cfg.temporal else state.cache,
            prev_output=result.x0.float().clamp(-1.0, 1.0),
            prev_gray=gray,
            frame_index=state.frame_index + 1,
            grade_maps=grade_maps,
        )
        return output, new_state

    def _grade_maps(
        self,
        embedding: Tensor,
        prompt: Tensor,
        size: tuple[int, ...],
        cached: tuple[Tensor, Tensor] | None,
    ) -> tuple[Tensor, Tensor] | None:
        """(embedding, the grade's maps over the frame): the stream's own unless the prompt
        changed (a new prompt, or each frame of a blend between two). `embedding` is the
        conditioning's own, on the CPU: comparing copies on a GPU would wait for it."""
        if self.net.grade is None or not self.cfg.grade_grid:
            return None
        if cached is not None and torch.equal(cached[0], embedding):
            return cached
        with torch.autocast(prompt.device.type, enabled=False):  # float32, as in training
            maps = self.net.grade.frame_maps(prompt.float(), size[0], size[1])
        assert maps is not None
        return embedding, maps


@functools.lru_cache(maxsize=1)
def catalog_bank() -> LookBank:
    """The look bank of the current looks catalog (runs the text model once)."""
    from mirage_lsd.looks import LOOKS

    looks = {name: look.descriptions for name, look in LOOKS.items()}
    return LookBank.build(looks, default_encoder())


def random_model(cfg: ModelConfig, device: str = "cpu", seed: int = 0) -> BuiltinModel:
    """An untrained model (for benchmarks and tests)."""
    torch.manual_seed(seed)
    return BuiltinModel(LSDNet(cfg), catalog_bank(), device)
