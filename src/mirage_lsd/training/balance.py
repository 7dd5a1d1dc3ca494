"""Per-look loss balance (`objective.look_balance`): every look's progress counts alike.

Why: the benchmark averages PSNR, a log of the error, over looks; a plain mean of the
errors lets the looks that no small network matches (comic halftone's dots, neon's
hairlines, near 10 dB) dominate the gradient, at the cost of the looks it nearly has
(thermal, sunset, above 30 dB), where halving the error is worth the same 3 dB. Each
sample's loss is divided by its look's running mean loss (a blend's: by the blend of its
looks' means), which makes the step follow the gradient of the sum of log losses over
looks, as the benchmark scores them. In a full run that starves the hardest looks
(neon edges and blueprint turned to blocks), so the bundled recipe divides by the square
root (`look_balance_power: 0.5`), halfway between the plain mean and the log loss.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mirage_lsd.errors import UserError

DECAY = 0.98  # running means span about 50 steps


class LookBalance:
    """Running mean loss per look column of `Batch.looks`, and the weights they give."""

    def __init__(self, columns: int, power: float = 1.0) -> None:
        if not 0.0 < power <= 1.0:
            raise UserError(f"objective.look_balance_power must be in (0, 1], got {power}")
        self.running = torch.full((columns,), float("nan"))
        self.power = power

    def weights(self, errors: Tensor, mix: Tensor) -> Tensor:
        """Update the running means with this batch, then weigh its samples.

        errors: (B,) each sample's loss (not differentiated); mix: (B, L) each sample's
        look weights, rows summing to 1. Returns (B,) weights whose mean is about 1.
        """
        errors, mix = errors.detach().float().cpu(), mix.float().cpu()
        share = mix.sum(dim=0)  # (L,)
        seen = share > 0
        batch_mean = (mix * errors[:, None]).sum(dim=0) / share.clamp_min(1e-12)
        first = seen & self.running.isnan()
        blended = DECAY * self.running + (1 - DECAY) * batch_mean
        self.running = torch.where(first, batch_mean, torch.where(seen, blended, self.running))
        difficulty = mix @ self.running.nan_to_num(0.0)  # (B,)
        scale = self.running[~self.running.isnan()].mean()
        return (scale / difficulty.clamp_min(1e-8)).pow(self.power).to(errors.dtype)

    def state_dict(self) -> Tensor:
        return self.running.clone()

    def load_state_dict(self, running: Tensor) -> None:
        if running.shape != self.running.shape:
            raise ValueError(f"a look balance of {len(running)} columns, not {len(self.running)}")
        self.running = running.clone().float()
