"""Our self-attention: a bounded bank of past frames' K/V (StreamV2V), pooled K/V (ToDo).

Feature bank: every self-attention layer of the UNet attends to its own tokens and to
the keys and values that layer produced for up to `size` past frames. The bank is a
fixed ring of slots per layer, allocated once at the first frame: its memory never
grows, however long the stream runs. When it is full, "fifo" overwrites the oldest slot
and "merge" averages the new frame into the slot whose keys are most similar.

Token downsampling (ToDo, Smith et al. 2024): in the self-attention layers of the
highest resolution that has any (the latent's full resolution in SD 1.5/2.1, half of it
in SDXL, whose first block has no attention), where attention costs the most (it grows
with tokens squared), keys and values come from the hidden states average-pooled by
`kv_downsample` in each direction: queries stay at full resolution, attention costs
1/f^2 as much. Pooling before the
K/V projections equals pooling the keys and values (the projections are linear).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mirage_lsd.models.diffusers_backend.options import BankMerge


@dataclass
class _LayerRing:
    keys: Tensor  # (size, T, C)
    values: Tensor  # (size, T, C)


class FeatureBank:
    """Per-stream K/V of past frames, per self-attention layer, at most `size` frames."""

    def __init__(self, size: int, merge: BankMerge = "fifo") -> None:
        if size < 1:
            raise ValueError(f"bank size must be >= 1, got {size}")
        self.size = size
        self.merge = merge
        self.count = 0  # frames held (<= size)
        self.seen = 0  # frames offered since the stream started
        self._rings: dict[str, _LayerRing] = {}

    @property
    def nbytes(self) -> int:
        return sum(r.keys.nbytes + r.values.nbytes for r in self._rings.values())

    def kv(self, layer: str) -> tuple[Tensor, Tensor] | None:
        """The layer's bank as (1, count * T, C) keys and values, or None when empty."""
        ring = self._rings.get(layer)
        if ring is None or self.count == 0:
            return None
        c = ring.keys.shape[-1]
        return ring.keys[: self.count].reshape(1, -1, c), ring.values[: self.count].reshape(
            1, -1, c
        )

    def add(self, features: dict[str, tuple[Tensor, Tensor]]) -> None:
        """Store one frame's (T, C) keys and values of every layer."""
        if not features:
            return
        if self.count < self.size:
            slot = self.count
            for name, (k, v) in features.items():
                ring = self._ring(name, k, v)
                ring.keys[slot].copy_(k)
                ring.values[slot].copy_(v)
            self.count += 1
        else:
            for name, (k, v) in features.items():
                ring = self._ring(name, k, v)
                if self.merge == "fifo":
                    slot = self.seen % self.size
                    ring.keys[slot].copy_(k)
                    ring.values[slot].copy_(v)
                else:
                    sim = F.cosine_similarity(ring.keys.mean(1), k.mean(0, keepdim=True), dim=-1)
                    slot = int(sim.argmax())
                    ring.keys[slot].lerp_(k, 0.5)
                    ring.values[slot].lerp_(v, 0.5)
        self.seen += 1

    def _ring(self, name: str, k: Tensor, v: Tensor) -> _LayerRing:
        ring = self._rings.get(name)
        if ring is None or ring.keys.shape[1:] != k.shape:  # first frame, or a new frame size
            ring = _LayerRing(
                k.new_zeros((self.size, *k.shape)), v.new_zeros((self.size, *v.shape))
            )
            self._rings[name] = ring
        return ring


class BankContext(threading.local):
    """What the processors read and write during one UNet call (set by the stream model).

    Thread-local: streams that share one model (studio sessions) run their UNet calls
    on their own threads, and each sees only its own bank.
    """

    def __init__(self) -> None:
        self.bank: FeatureBank | None = None
        self.record_index: int | None = None  # batch element whose K/V to keep, or None
        self.recorded: dict[str, tuple[Tensor, Tensor]] = {}
        # (h, w) of the highest-resolution self-attention layers' token grid
        self.latent_size: tuple[int, int] | None = None


class BankAttnProcessor:
    """Self-attention (attn1) that also attends to the bank's keys and values."""

    def __init__(self, name: str, context: BankContext, kv_downsample: int = 1) -> None:
        self.name = name
        self.context = context
        self.kv_downsample = kv_downsample

    def _kv_states(self, hidden_states: Tensor) -> Tensor:
        """The hidden states keys and values are made from: pooled in the layers at
        `context.latent_size`, the highest resolution with attention."""
        size = self.context.latent_size
        batch, tokens, channels = hidden_states.shape
        if self.kv_downsample == 1 or size is None or tokens != size[0] * size[1]:
            return hidden_states  # off, or a lower-resolution layer
        grid = hidden_states.transpose(1, 2).reshape(batch, channels, *size)
        pooled = F.avg_pool2d(grid, self.kv_downsample, ceil_mode=True)
        return pooled.flatten(2).transpose(1, 2)  # (B, T / f^2, C)

    def __call__(
        self,
        attn: Any,  # diffusers.models.attention_processor.Attention
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
        **kwargs: object,
    ) -> Tensor:
        # 1. projections of the current tokens: (B, T, C)
        residual = hidden_states
        batch, _, _ = hidden_states.shape
        query = attn.to_q(hidden_states)
        kv_states = self._kv_states(hidden_states)
        key = attn.to_k(kv_states)
        value = attn.to_v(kv_states)
        ctx = self.context
        # 2. keep this frame's K/V for the bank (committed after the UNet call)
        if ctx.record_index is not None:
            i = ctx.record_index
            ctx.recorded[self.name] = (key[i].detach().clone(), value[i].detach().clone())
        # 3. extend with past frames: (B, T + M, C)
        past = ctx.bank.kv(self.name) if ctx.bank is not None else None
        if past is not None:
            pk, pv = past
            key = torch.cat([key, pk.to(key.dtype).expand(batch, -1, -1)], dim=1)
            value = torch.cat([value, pv.to(value.dtype).expand(batch, -1, -1)], dim=1)
        # 4. attention over heads: (B, heads, T, C / heads)
        heads = attn.heads
        head_dim = key.shape[-1] // heads
        query = query.view(batch, -1, heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, heads, head_dim).transpose(1, 2)
        out = F.scaled_dot_product_attention(query, key, value)
        out = out.transpose(1, 2).reshape(batch, -1, heads * head_dim).to(query.dtype)
        # 5. output projection
        out = attn.to_out[0](out)
        out = attn.to_out[1](out)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def install_bank_processors(unet: Any, context: BankContext, kv_downsample: int = 1) -> int:
    """Route every self-attention (attn1) of `unet` through ours; returns how many."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    procs: dict[str, object] = {}
    n = 0
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            procs[name] = BankAttnProcessor(name.removesuffix(".processor"), context, kv_downsample)
            n += 1
        else:
            procs[name] = AttnProcessor2_0()
    unet.set_attn_processor(procs)
    return n
