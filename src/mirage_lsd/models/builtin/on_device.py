"""The frame's trip through a GPU: shrunk where the network runs, and upsampled there.

Why: on a GPU the network is the cheap part. With the network replayed as a CUDA graph,
a 1280x720 fp16 step on an H200 machine took 5.7 ms, of which torch.profiler put about
1.9 ms in converting the shrunk frame to float on the CPU; OpenCV's shrink of the frame,
timed alone, took 1.3 ms (16 cores). Here only the uint8 frame goes up (once, for both
the shrink and the upsampler), the flow's small gray copy comes down, and the uint8
output comes down.
On the CPU the OpenCV path (`model.upsample_to_frame`) is faster and stays.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mirage_lsd.models.builtin.network import guided_upsample

RGB_TO_GRAY = (0.299, 0.587, 0.114)  # OpenCV's COLOR_RGB2GRAY


def shrink_on_device(
    frame: np.ndarray, ds: int, patch: int, device: torch.device
) -> tuple[Tensor, Tensor, np.ndarray]:
    """The frame on the device, its shrink, and the flow's gray copy.

    frame: (H, W, 3) uint8, H and W multiples of `ds * patch`. Returns the frame as
    (1, 3, H, W) float in 0-255, the denoiser's image (1, 3, H/ds, W/ds) in [-1, 1], and
    the (H/(ds*patch), W/(ds*patch)) uint8 gray image the optical flow reads. Each is
    what OpenCV's INTER_AREA resize (an average over whole blocks, rounded to uint8) and
    RGB2GRAY give on the CPU path, to within rounding.
    """
    if frame.shape[0] % (ds * patch) or frame.shape[1] % (ds * patch):
        h, w = frame.shape[:2]
        raise ValueError(f"a {w}x{h} frame does not divide by {ds * patch} (init_state pads it)")
    full = torch.from_numpy(frame).to(device).permute(2, 0, 1)[None].float()
    small = F.avg_pool2d(full, ds).round()
    tiny = F.avg_pool2d(small, patch).round()
    r, g, b = RGB_TO_GRAY  # Python scalars: no weight tensor to upload every frame
    luma = tiny[0, 0] * r + tiny[0, 1] * g + tiny[0, 2] * b
    gray = luma.round().to(torch.uint8).cpu().numpy()
    # contiguous, as the CPU path's: the compiled network was traced on such inputs
    return full, (small / 127.5 - 1.0).contiguous(), gray


def upsample_on_device(x0: Tensor, gain: Tensor, full: Tensor, image: Tensor) -> np.ndarray:
    """`network.guided_upsample` where the network ran; the uint8 frame comes down.

    x0, image: (1, 3, h, w); gain: (1, 3 * guides, h, w); full: (1, 3, H, W) in 0-255
    (`shrink_on_device`).
    """
    out = guided_upsample(x0.float(), gain.float(), full / 127.5 - 1.0, image.float())
    pixels = ((out[0].clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
    return pixels.permute(1, 2, 0).contiguous().cpu().numpy()
