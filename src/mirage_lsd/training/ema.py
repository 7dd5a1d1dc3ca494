"""An exponential moving average of the network's weights (`optim.ema`).

The last steps of a run still move the weights by their batches' noise; the average of
the weights over the last steps is the usual, cheaper cure than more steps, and is what
a run with `optim.ema` exports. The decay after n updates is min(decay, (1 + n) /
(10 + n)), so that the random initial weights are forgotten even in a short run: the
average spans about the last n / 9 steps until 1 / (1 - decay) is the shorter (for a
decay of 0.999, until about 9,000 updates; a 7,000-step run averages about its last 780).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel


def ema_model(net: nn.Module, decay: float) -> AveragedModel:
    """A copy of `net` whose `update_parameters(net)` moves it toward `net`'s weights."""

    def step(averaged: list[Tensor], current: list[Tensor], updates: Tensor | int) -> None:
        n = int(updates)
        rate = min(decay, (1 + n) / (10 + n))
        floats = [(a, c) for a, c in zip(averaged, current, strict=True) if a.is_floating_point()]
        if floats:
            torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], 1.0 - rate)
        for a, c in zip(averaged, current, strict=True):  # counters and such: the latest
            if not a.is_floating_point():
                a.copy_(c)

    return AveragedModel(net, multi_avg_fn=step, use_buffers=True)
