"""`DiffusersStreamModel`: an SD / SDXL img2img stream behind the engine's model interface.

Per frame (`step`):
  1. similarity filter: a near-duplicate input returns the previous output (bounded skips)
  2. optional flow-warped blend of the previous output into the input (OpenCV Farneback)
  3. VAE encode, optional latent feedback from the previous output latent
  4. denoise: "latency_first" runs the stages one after another (no lag); "stream_batch"
     runs one stage of each of the last n frames in one UNet call (StreamDiffusion's
     stream batch: faster per frame on a GPU, n - 1 frames of lag)
  5. VAE decode
Every stage re-noises with the stream's fixed noise; prompts are encoded once and
blended by slerp; residual CFG and the feature bank live in the per-stream state.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch._dynamo.exc import TorchDynamoException  # what a failed torch.compile raises

from mirage_lsd.device import cpu_has_amx
from mirage_lsd.errors import UserError, first_line
from mirage_lsd.models.base import ModelInfo, StreamModel
from mirage_lsd.models.diffusers_backend.attention import (
    BankContext,
    FeatureBank,
    install_bank_processors,
)
from mirage_lsd.models.diffusers_backend.loading import Components
from mirage_lsd.models.diffusers_backend.options import DiffusersOptions
from mirage_lsd.models.diffusers_backend.sampler import (
    Schedule,
    add_noise,
    guidance_embedding,
    guide,
    index_timesteps,
    predict_x0,
    rcfg_next_stock,
    slerp,
    strength_timesteps,
    to_eps,
)

log = logging.getLogger(__name__)

#: Guidance scale an LCM-distilled UNet (time_cond_proj_dim) is told unless --guidance-scale
#: says otherwise (diffusers' LCM default).
LCM_EMBEDDED_GUIDANCE = 8.5
#: Classifier-free guidance scale of --guidance full/self/initialize when none is given.
DEFAULT_GUIDANCE_SCALE = 1.2
#: The VAE's spatial factor (SD, SDXL and TAESD all use 8).
LATENT_FACTOR = 8
LATENT_CHANNELS = 4


@dataclass(frozen=True)
class PromptEmbeds:
    """Encoded prompt: token embeddings and, for SDXL, the pooled embedding."""

    embeds: Tensor  # (1, 77, D)
    pooled: Tensor | None = None  # (1, P), SDXL only


@dataclass
class StreamState:
    """Everything one stream carries from frame to frame."""

    height: int
    width: int
    seed: int  # the stream's fixed noise
    schedule: Schedule | None = None
    noise: Tensor | None = None  # (n, 4, h, w): fixed noise of each stage
    stock: Tensor | None = None  # (n, 4, h, w): RCFG stock noise of each stage
    buffer: Tensor | None = None  # (n - 1, 4, h, w): stream batch, frames at stages 1..n-1
    filled: int = 0  # valid entries of `buffer` (warm-up)
    prev_input: Tensor | None = None  # (1, 3, H, W): last input that was processed
    prev_cond: Any = None  # the conditioning it was processed with
    prev_output: np.ndarray | None = None  # (H, W, 3) uint8
    prev_latent: Tensor | None = None  # (1, 4, h, w): last output latent
    prev_gray: np.ndarray | None = None  # (H, W) uint8: last input, for optical flow
    skipped: int = 0  # inputs skipped in a row by the similarity filter
    skipped_total: int = 0
    bank: FeatureBank | None = None


class GraphThread:
    """One daemon thread that runs the calls given to it in turn: the owner of a compiled
    model's CUDA graphs (`_run_transform`). A daemon, unlike a thread pool's worker, so a
    command that ends (Ctrl-C) during a first frame's compile need not wait for it."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="mirage-cuda-graphs", daemon=True).start()

    def _serve(self) -> None:
        while True:
            call, future = self._calls.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(call())
                except BaseException as exc:  # the caller's to raise
                    future.set_exception(exc)

    def submit(self, call: Callable[[], Any]) -> Future[Any]:
        future: Future[Any] = Future()
        self._calls.put((call, future))
        return future


class DiffusersStreamModel(StreamModel):
    """SD 1.5 / 2.1 / SDXL (turbo, LCM, LCM-LoRA) as a causal frame-to-frame model."""

    size_multiple = LATENT_FACTOR

    def __init__(
        self,
        parts: Components,
        vae: Any,
        options: DiffusersOptions,
        device: str,
        dtype: Any,
        compile: bool = False,
    ) -> None:
        from diffusers import AutoencoderTiny, LCMScheduler

        self.options = options
        self.device = torch.device(device)
        self.dtype = dtype
        self.family = parts.family
        # weights were loaded in `dtype`: only move them (the SDXL VAE overflows in fp16)
        self.unet = parts.unet.to(self.device).eval().requires_grad_(False)
        if self.device.type == "cuda":  # cuDNN's fastest convolutions take NHWC
            self.unet = self.unet.to(memory_format=torch.channels_last)
        self._tiny_vae = isinstance(vae, AutoencoderTiny)
        upcast = not self._tiny_vae and bool(getattr(vae.config, "force_upcast", False))
        self._vae_dtype = torch.float32 if upcast and dtype == torch.float16 else dtype
        if self._vae_dtype != dtype:
            vae = vae.to(dtype=self._vae_dtype)
        self.vae = vae.to(self.device).eval().requires_grad_(False)
        self.text_encoders = [e.to(self.device).eval() for e in parts.text_encoders]
        self.tokenizers = parts.tokenizers
        self._latent_scale = float(vae.config.scaling_factor)
        sched = LCMScheduler.from_config(parts.scheduler_config)
        # a zero-terminal-SNR schedule ends at alpha = 0, where x0 = x_t / sqrt(alpha)
        # divides by zero at strength 1: the smallest positive value, as diffusers does
        self._alphas_cumprod = sched.alphas_cumprod.float().clamp(min=2.0**-24)
        self._num_train = int(sched.config.num_train_timesteps)
        self._prediction = str(sched.config.prediction_type)
        self.bf16 = self.device.type == "cpu" and cpu_has_amx()
        cond_dim = getattr(self.unet.config, "time_cond_proj_dim", None)
        scale = options.guidance_scale
        if cond_dim is None and options.guidance == "none" and scale is not None:
            raise UserError(
                "--guidance-scale needs --guidance full, self or initialize: this model has "
                "no guidance input of its own (an LCM-distilled UNet has)"
            )
        self._cfg_scale = DEFAULT_GUIDANCE_SCALE if scale is None else scale
        # the scale is the LCM input itself only with no CFG (diffusers' LCM pipeline);
        # with CFG it is the CFG scale, and the LCM input keeps its default
        lcm = scale if options.guidance == "none" and scale is not None else LCM_EMBEDDED_GUIDANCE
        self._w_embedding = (
            None if cond_dim is None else guidance_embedding(lcm, cond_dim).to(self.device, dtype)
        )
        self._bank_ctx = BankContext()
        if options.bank_size > 0 or options.kv_downsample > 1:
            install_bank_processors(self.unet, self._bank_ctx, options.kv_downsample)
        self._eager: tuple[Any, Any, Any] | None = None  # the modules before torch.compile
        self._uncompile_lock = threading.Lock()  # studio sessions share the model
        self._compile_asked = compile
        self._graph_thread: GraphThread | None = None  # compiled on CUDA only
        if compile and options.bank_size > 0:
            # the bank's keys grow frame by frame: each length (and each stage's recording
            # or not) is a new graph, and past dynamo's limit the UNet runs eager, silently
            raise UserError(
                "--compile does not go with --bank-size: the compiled UNet would be "
                "recompiled for every length of the bank; drop one of them"
            )
        if compile:
            self._compile()
        self._uncond: PromptEmbeds | None = None  # negative prompt, encoded once
        self._zero_negative = parts.zero_empty_negative
        self._no_prompt: PromptEmbeds | None = None
        steps = len(options.t_index_list) if options.t_index_list else 50
        self._info = ModelInfo(
            name=parts.name,
            description=f"diffusers {parts.family.upper()} img2img stream ({options.batch_mode})",
            device=str(self.device),
            dtype="bfloat16 autocast" if self.bf16 else str(dtype).removeprefix("torch."),
            max_steps=steps,
            compile=compile,
        )

    @property
    def info(self) -> ModelInfo:
        return self._info

    # -- torch.compile -----------------------------------------------------------
    def _compile(self) -> None:
        """torch.compile the UNet and the VAE's encoder and decoder, for fixed shapes.

        Compiling is lazy: the first frame of each new shape (size, UNet batch) compiles,
        about a minute on 2 CPU cores the first time, seconds once Inductor's on-disk
        cache has it. On CUDA, "reduce-overhead" also captures CUDA graphs.
        """
        mode = "reduce-overhead" if self.device.type == "cuda" else None
        if mode is not None:  # see `_run_transform`
            self._graph_thread = GraphThread()
        self._eager = (self.unet, self.vae.encoder, self.vae.decoder)
        self.unet = torch.compile(self.unet, dynamic=False, mode=mode)
        self.vae.encoder = torch.compile(self.vae.encoder, dynamic=False, mode=mode)
        self.vae.decoder = torch.compile(self.vae.decoder, dynamic=False, mode=mode)

    def _uncompile(self, exc: Exception) -> None:
        """Back to the eager modules after a compiler failure (no C++ compiler, ...).

        Once: streams sharing the model may fail together, and each then retries eagerly."""
        with self._uncompile_lock:
            if self._eager is None:  # eager already (another stream got here first)
                return
            log.warning("torch.compile failed, running uncompiled: %s", first_line(exc))
            self.unet, self.vae.encoder, self.vae.decoder = self._eager
            self._eager = None
            self._info = replace(self._info, compile=False)  # what `bench` reports

    # -- prompts -----------------------------------------------------------------
    @torch.inference_mode()
    def encode_prompt(self, text: str | None) -> PromptEmbeds:
        hidden, pooled = [], None
        for tokenizer, encoder in zip(self.tokenizers, self.text_encoders, strict=True):
            ids = tokenizer(
                text or "",
                padding="max_length",
                max_length=tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids.to(self.device)  # (1, 77)
            if self.family == "sdxl":
                out = encoder(ids, output_hidden_states=True)
                hidden.append(out.hidden_states[-2])  # (1, 77, D_i)
                pooled = getattr(out, "text_embeds", pooled)  # (1, P) from the 2nd encoder
            else:
                hidden.append(encoder(ids)[0])  # (1, 77, D)
        embeds = torch.cat(hidden, dim=-1).to(self.dtype)
        return PromptEmbeds(embeds, None if pooled is None else pooled.to(self.dtype))

    def mix_prompts(self, a: Any, b: Any, weight: float) -> Any:
        """Slerp of the cached embeddings (per token), so transitions keep their norm."""
        if a is None or b is None:
            return b if weight >= 0.5 else a
        pooled = None
        if a.pooled is not None and b.pooled is not None:
            pooled = slerp(a.pooled, b.pooled, weight)
        return PromptEmbeds(slerp(a.embeds, b.embeds, weight), pooled)

    def _negative(self) -> PromptEmbeds:
        if self._uncond is None:
            neg = self.encode_prompt(self.options.negative_prompt)
            if self.family == "sdxl" and not self.options.negative_prompt and self._zero_negative:
                pooled = None if neg.pooled is None else torch.zeros_like(neg.pooled)
                neg = PromptEmbeds(torch.zeros_like(neg.embeds), pooled)
            self._uncond = neg
        return self._uncond

    def _empty(self) -> PromptEmbeds:
        if self._no_prompt is None:
            self._no_prompt = self.encode_prompt(None)
        return self._no_prompt

    # -- state -------------------------------------------------------------------
    def init_state(self, height: int, width: int, seed: int | None = None) -> StreamState:
        if height % LATENT_FACTOR or width % LATENT_FACTOR:
            raise UserError(
                f"frame size {width}x{height} is not divisible by {LATENT_FACTOR}: "
                "pick a --size whose sides are multiples of 8"
            )
        bank = None
        if self.options.bank_size > 0:
            bank = FeatureBank(self.options.bank_size, self.options.bank_merge)
        seed = self.options.seed if seed is None else seed
        return StreamState(height, width, seed, bank=bank)

    def _timesteps(self, steps: int) -> list[int]:
        if self.options.t_index_list:
            return index_timesteps(self.options.t_index_list, self._num_train)
        return strength_timesteps(self.options.strength, steps, self._num_train)

    def _prepare(self, state: StreamState, steps: int) -> Schedule:
        """Per-stage schedule and fixed noise; rebuilt only when the timesteps change."""
        timesteps = self._timesteps(steps)
        if state.schedule is not None and state.schedule.timesteps.tolist() == timesteps:
            return state.schedule
        n = len(timesteps)
        state.schedule = Schedule.build(timesteps, self._alphas_cumprod)
        shape = (n, LATENT_CHANNELS, state.height // LATENT_FACTOR, state.width // LATENT_FACTOR)
        gen = torch.Generator().manual_seed(state.seed)
        state.noise = torch.randn(shape, generator=gen).to(self.device, self.dtype)
        state.stock = state.noise.clone()
        state.buffer = torch.zeros((n - 1, *shape[1:]), device=self.device, dtype=self.dtype)
        state.filled = 0
        return state.schedule

    # -- one frame ---------------------------------------------------------------
    def steps_run(self, steps: int) -> int:
        """With --t-index, the list's length, whatever `steps` says."""
        return len(self._timesteps(steps))

    def lag_frames(self, steps: int) -> int:
        """stream_batch outputs each frame one frame late per extra step it runs (with
        --t-index, the list sets how many run, whatever `steps` says)."""
        stages = len(self._timesteps(steps))
        return stages - 1 if self.options.batch_mode == "stream_batch" else 0

    @torch.inference_mode()
    def step(
        self, image: np.ndarray, cond: Any, state: StreamState, steps: int
    ) -> tuple[np.ndarray, StreamState]:
        # 1. check the frame; per-stage tensors for this step count
        if image.shape[:2] != (state.height, state.width):
            raise UserError(
                f"frame is {image.shape[1]}x{image.shape[0]} but the stream was started at "
                f"{state.width}x{state.height}: reset the stream after changing size"
            )
        if cond is None:
            cond = self._empty()
        schedule = self._prepare(state, steps)
        x = self._to_tensor(image)  # (1, 3, H, W) in [-1, 1]
        # 2. similarity filter
        if self._skip(x, cond, state):
            assert state.prev_output is not None
            return state.prev_output.copy(), state  # the caller may draw on what it gets
        # 3. flow-warped blend of the previous output
        if self.options.flow_blend > 0:
            image = flow_blend(image, state, self.options.flow_blend)
            x = self._to_tensor(image)
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16)
        with autocast:
            try:
                latent, out = self._run_transform(x, cond, state, schedule)
            except TorchDynamoException as exc:  # compiling failed: eager from then on
                if not self._compile_asked:  # it was never compiled: a real failure
                    raise
                self._uncompile(exc)
                latent, out = self._run_transform(x, cond, state, schedule)
        state.prev_latent = latent
        # kept apart from what is handed out: an overlay a callback draws on its frame
        # must not reach the next skipped frame or the next flow-blended input
        state.prev_output = out.copy()
        return out, state

    def _run_transform(
        self, x: Tensor, cond: PromptEmbeds, state: StreamState, schedule: Schedule
    ) -> tuple[Tensor, np.ndarray]:
        """`_transform`, on the one thread that owns the CUDA graphs when there is one.

        torch.compile's "reduce-overhead" keeps its CUDA graph trees per thread: a graph
        first recorded on another thread than the first one's fails (pytorch#123177), and
        every stream (a studio session, each engine start) calls from a thread of its own.
        A frame size new to a second stream would stop it; on one thread it records.
        """
        if self._graph_thread is None:
            return self._transform(x, cond, state, schedule)

        def call() -> tuple[Tensor, np.ndarray]:
            with torch.inference_mode():  # thread-local: the caller's does not carry over
                return self._transform(x, cond, state, schedule)

        return self._graph_thread.submit(call).result()

    def _transform(
        self, x: Tensor, cond: PromptEmbeds, state: StreamState, schedule: Schedule
    ) -> tuple[Tensor, np.ndarray]:
        """Encode, denoise, decode one frame: (its latent, the output image)."""
        # 4. encode, latent feedback
        z = self._encode(x)  # (1, 4, h, w)
        f = self.options.latent_feedback
        if f > 0 and state.prev_latent is not None:
            z = torch.lerp(z, state.prev_latent, f)
        # 5. denoise
        if self.options.batch_mode == "stream_batch":
            latent = self._denoise_stream_batch(z, cond, state, schedule)
        else:
            latent = self._denoise_sequential(z, cond, state, schedule)
        # 6. decode
        return latent, self._decode(latent)

    def _skip(self, x: Tensor, cond: Any, state: StreamState) -> bool:
        """Skip an input nearly equal to the last processed one, at most max_skip in a row,
        unless the prompt changed since (a new prompt or each frame of a transition)."""
        threshold = self.options.similarity_threshold
        prev = state.prev_input
        same_prompt = cond is state.prev_cond
        if threshold > 0 and prev is not None and state.prev_output is not None and same_prompt:
            sim = float(torch.nn.functional.cosine_similarity(prev.flatten(), x.flatten(), dim=0))
            if sim >= threshold and state.skipped < self.options.similarity_max_skip:
                state.skipped += 1
                state.skipped_total += 1
                return True
        state.prev_input, state.prev_cond = x, cond
        state.skipped = 0
        return False

    def _denoise_sequential(
        self, z: Tensor, cond: PromptEmbeds, state: StreamState, schedule: Schedule
    ) -> Tensor:
        """All stages of this frame, one UNet call each: output for this frame, no lag."""
        assert state.noise is not None
        n = len(schedule)
        x = add_noise(z, state.noise[0:1], schedule.a[0:1], schedule.b[0:1])
        x0 = x
        for k in range(n):
            x0 = self._denoise(x, torch.tensor([k]), cond, state, schedule)
            if k + 1 < n:
                nxt = slice(k + 1, k + 2)
                x = add_noise(x0, state.noise[nxt], schedule.a[nxt], schedule.b[nxt])
        return x0

    def _denoise_stream_batch(
        self, z: Tensor, cond: PromptEmbeds, state: StreamState, schedule: Schedule
    ) -> Tensor:
        """One stage of each frame in flight in one UNet call; returns the oldest frame's x0.

        After warm-up the output is the frame from n - 1 calls ago; during warm-up it is
        the current estimate of the oldest frame in flight.
        """
        assert state.noise is not None and state.buffer is not None
        n = len(schedule)
        x_new = add_noise(z, state.noise[0:1], schedule.a[0:1], schedule.b[0:1])
        x = torch.cat([x_new, state.buffer[: state.filled]])  # (filled + 1, 4, h, w)
        stages = torch.arange(state.filled + 1)
        x0 = self._denoise(x, stages, cond, state, schedule)
        moving = stages[stages < n - 1]  # every frame but a finished one goes one stage on
        if len(moving):
            nxt = moving + 1
            state.buffer[: len(moving)] = add_noise(
                x0[: len(moving)], state.noise[nxt], schedule.a[nxt], schedule.b[nxt]
            )
        state.filled = min(state.filled + 1, n - 1)
        return x0[-1:]

    def _denoise(
        self, x: Tensor, stages: Tensor, cond: PromptEmbeds, state: StreamState, sch: Schedule
    ) -> Tensor:
        """One UNet call for latents `x` (B, 4, h, w) at `stages` (B,): their x0 (B, 4, h, w)."""
        assert state.noise is not None and state.stock is not None
        opts = self.options
        n, batch = len(sch), x.shape[0]
        a, b = sch.a[stages], sch.b[stages]
        t = sch.timesteps[stages].to(self.device)
        mode = opts.guidance if self._cfg_scale > 1.0 else "none"
        # 1. rows of the UNet batch: unconditional rows first (CFG), then conditional
        if mode == "full":
            n_unc = batch
        elif mode == "initialize" and int(stages[0]) == 0:
            n_unc = 1  # RCFG onion: one real negative pass for the newest frame
        else:
            n_unc = 0
        xs = torch.cat([x[:n_unc], x])
        ts = torch.cat([t[:n_unc], t])
        emb, added = self._conditioning(cond, n_unc, batch, state)
        # 2. UNet, recording the finished stage's self-attention K/V for the bank
        ctx = self._bank_ctx
        ctx.bank = state.bank
        ctx.latent_size = self._attention_grid(x.shape[-2], x.shape[-1])
        last = int(stages[-1]) == n - 1
        ctx.record_index = n_unc + batch - 1 if state.bank is not None and last else None
        try:
            w_emb = self._w_embedding
            out = self.unet(
                xs,
                ts,
                encoder_hidden_states=emb,
                timestep_cond=None if w_emb is None else w_emb.expand(xs.shape[0], -1),
                added_cond_kwargs=added,
                return_dict=False,
            )[0]
        finally:
            ctx.bank, ctx.record_index = None, None
        if state.bank is not None and ctx.recorded:
            state.bank.add(ctx.recorded)
        ctx.recorded = {}
        a_all, b_all = torch.cat([a[:n_unc], a]), torch.cat([b[:n_unc], b])
        eps_all = to_eps(out.to(x.dtype), xs, a_all, b_all, self._prediction)
        eps_unc, eps = eps_all[:n_unc], eps_all[n_unc:]
        # 3. guidance: full CFG, or residual CFG with the stock noise as the negative
        if mode == "full":
            eps = guide(eps_unc, eps, self._cfg_scale)
        elif mode in ("self", "initialize"):
            stock = state.stock[stages].clone()
            if n_unc:
                stock[0:1] = eps_unc
            eps = guide(stock * opts.rcfg_delta, eps, self._cfg_scale)
            nxt = (stages + 1) % n
            a_next, b_next = sch.next_coeffs(stages)
            state.stock[nxt] = rcfg_next_stock(
                stock, eps, a, b, a_next, b_next, state.noise[nxt]
            ).to(state.stock.dtype)
        return predict_x0(x, eps, a, b)

    def _conditioning(
        self, cond: PromptEmbeds, n_unc: int, batch: int, state: StreamState
    ) -> tuple[Tensor, dict[str, Tensor] | None]:
        rows = [cond.embeds.expand(batch, -1, -1)]
        pooled = [cond.pooled.expand(batch, -1)] if cond.pooled is not None else []
        if n_unc:
            neg = self._negative()
            rows.insert(0, neg.embeds.expand(n_unc, -1, -1))
            if neg.pooled is not None:
                pooled.insert(0, neg.pooled.expand(n_unc, -1))
        emb = torch.cat(rows)  # (n_unc + B, 77, D)
        if self.family != "sdxl":
            return emb, None
        h, w = state.height, state.width
        time_ids = torch.tensor([[h, w, 0, 0, h, w]], device=self.device, dtype=self.dtype)
        return emb, {
            "text_embeds": torch.cat(pooled),  # (n_unc + B, P)
            "time_ids": time_ids.expand(emb.shape[0], -1),  # (n_unc + B, 6)
        }

    def _attention_grid(self, height: int, width: int) -> tuple[int, int]:
        """Token grid of the highest-resolution self-attention layers, for a latent of
        `height` x `width`: each down block without attention before them halves it."""
        blocks = list(getattr(self.unet.config, "down_block_types", ()))
        plain = next((i for i, b in enumerate(blocks) if "Attn" in b), 0)
        for _ in range(plain):  # a stride-2 convolution with padding 1: ceil(n / 2)
            height, width = (height + 1) // 2, (width + 1) // 2
        return height, width

    # -- pixels <-> latents ------------------------------------------------------
    def _to_tensor(self, image: np.ndarray) -> Tensor:
        t = torch.from_numpy(np.ascontiguousarray(image)).to(self.device)
        t = t.permute(2, 0, 1).unsqueeze(0)  # (1, 3, H, W)
        return t.to(self.dtype) / 127.5 - 1.0

    def _encode(self, x: Tensor) -> Tensor:
        x = x.to(self._vae_dtype)
        encoded = self.vae.encode(x)
        z = encoded.latents if self._tiny_vae else encoded.latent_dist.mean
        return (z * self._latent_scale).to(self.dtype)

    def _decode(self, z: Tensor) -> np.ndarray:
        z = z.to(self._vae_dtype)
        if self._tiny_vae:
            img = self.vae.decode(z).sample
        else:
            img = self.vae.decode(z / self._latent_scale).sample
        img = ((img.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
        return img[0].permute(1, 2, 0).cpu().numpy()  # (H, W, 3)


def flow_blend(image: np.ndarray, state: StreamState, weight: float) -> np.ndarray:
    """Blend the previous output, warped along the optical flow, into the input frame."""
    import cv2

    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    prev_gray, prev_out = state.prev_gray, state.prev_output
    state.prev_gray = gray
    if prev_gray is None or prev_out is None or prev_gray.shape != gray.shape:
        return image
    # flow from the current frame to the previous one: cur(y, x) ~ prev(y + fy, x + fx)
    h, w = gray.shape
    flow = np.zeros((h, w, 2), np.float32)
    flow = cv2.calcOpticalFlowFarneback(gray, prev_gray, flow, 0.5, 3, 15, 3, 5, 1.2, 0)
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    warped = cv2.remap(
        prev_out,
        grid_x + flow[..., 0],
        grid_y + flow[..., 1],
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return cv2.addWeighted(image, 1.0 - weight, warped, weight, 0.0)
