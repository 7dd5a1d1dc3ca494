"""mirage-lsd-v1: a small causal denoiser for live video, in one file.

Shapes for a 1280x720 frame with the default config at downscale 4 (B = batch; at run
time the model picks downscale 5 for 720p by default, see `BuiltinModel.downscale_for`):

    frame     (B, 3, 720, 1280)  the input, full resolution (used only by the upsampler)
    image     (B, 3, 180, 320)   frame / image_downscale: what is denoised
    grid      (B, C0, 90, 160)   image pixel-unshuffled by `patch`: level 0
    mid       (B, C1, 45, 80)    level 1, where temporal attention reads the cache
    tokens    (B, 23*40, A)      attention queries; keys/values are pooled once more

The network sees, for the current frame only: the noisy target x_t, the input image,
the history (previous output warped to this frame by optical flow, with a validity
mask), the prompt embedding, the noise level t, the step size d and the history's noise
level. Past frames reach it only through the KV cache, so output t never depends on a
future frame. It predicts x0 as a residual on the input image (optionally on the input
under a colour grade picked by the prompt, `PromptGrade`), plus a per-pixel detail
gain that `guided_upsample` uses to bring the result back to full resolution.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mirage_lsd.models.builtin.cache import KV, FrameKV, KVCache
from mirage_lsd.models.builtin.config import ModelConfig

LUMA = (0.299, 0.587, 0.114)  # BT.601 weights of R, G, B
MAX_FREQUENCY = 1000.0  # highest frequency of the sinusoidal embeddings of scalars in [0, 1]
LUT_RANK = 32  # the prompt picks a colour lookup table through this many table mixtures


def scalar_embedding(x: Tensor, dim: int) -> Tensor:
    """(B,) values in about [0, 1] -> (B, dim) sinusoids at geometric frequencies."""
    half = dim // 2
    freqs = torch.exp(torch.linspace(0.0, math.log(MAX_FREQUENCY), half, device=x.device))
    args = x.float()[:, None] * freqs[None]  # (B, half)
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


def position_encoding(height: int, width: int, dim: int, device: torch.device) -> Tensor:
    """(height * width, dim) sinusoids of cell centers in [0, 1]: the same at any size."""
    ys = (torch.arange(height, device=device) + 0.5) / height
    xs = (torch.arange(width, device=device) + 0.5) / width
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    enc_y = scalar_embedding(yy.flatten(), dim // 2)  # (N, dim / 2)
    enc_x = scalar_embedding(xx.flatten(), dim - dim // 2)  # (N, dim / 2)
    return torch.cat([enc_y, enc_x], dim=1)


def frame_coordinates(height: int, width: int, like: Tensor, window: Tensor | None) -> Tensor:
    """(B or 1, 2, height, width): y and x of cell centres, -1 at the frame's edges to 1.

    `window` (B, 4): top, left, bottom, right of these cells in the frame, as shares of
    its side (a training crop); None: the cells cover the whole frame.
    """
    ys = (torch.arange(height, device=like.device, dtype=like.dtype) + 0.5) / height
    xs = (torch.arange(width, device=like.device, dtype=like.dtype) + 0.5) / width
    if window is None:
        window = torch.tensor([[0.0, 0.0, 1.0, 1.0]], device=like.device, dtype=like.dtype)
    top, left, bottom, right = (window[:, i, None] for i in range(4))  # (B, 1) each
    ys = top + (bottom - top) * ys  # (B, height)
    xs = left + (right - left) * xs  # (B, width)
    yy = ys[:, :, None].expand(-1, height, width)
    xx = xs[:, None, :].expand(-1, height, width)
    return torch.stack([yy, xx], dim=1) * 2 - 1


def luma(image: Tensor) -> Tensor:
    """(B, 3, H, W) -> (B, 1, H, W)."""
    weights = torch.tensor(LUMA, device=image.device, dtype=image.dtype).view(1, 3, 1, 1)
    return (image * weights).sum(dim=1, keepdim=True)


class RMSNorm2d(nn.Module):
    """Normalizes each pixel over channels: independent of image size, cheap on CPU."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, dim, 1, 1))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps) * self.weight


class CondEmbedding(nn.Module):
    """Prompt embedding + noise level t + step size d + history noise -> one vector."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.prompt = nn.Linear(cfg.prompt_dim, cfg.emb_dim)
        self.scalars = nn.Linear(3 * cfg.emb_dim, cfg.emb_dim)
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(cfg.emb_dim, cfg.emb_dim), nn.SiLU())

    def step_code(self, d: Tensor) -> Tensor:
        """Step size d in (0, 1] -> [0, 1]: 0 for one step, 1 for the smallest step (or d=0)."""
        levels = self.cfg.shortcut_levels
        return (-torch.log2(d.clamp_min(2.0**-levels))) / levels

    def forward(self, prompt: Tensor, t: Tensor, d: Tensor, history_sigma: Tensor) -> Tensor:
        e = self.cfg.emb_dim
        scalars = torch.cat(
            [
                scalar_embedding(t, e),
                scalar_embedding(self.step_code(d), e),
                scalar_embedding(history_sigma, e),
            ],
            dim=1,
        )  # (B, 3E)
        return self.mlp(self.prompt(prompt) + self.scalars(scalars))  # (B, E)


class Pointwise(nn.Module):
    """A 1x1 conv; with `experts` > 1, its weights are mixed per sample by the conditioning.

    Why experts: 16 looks share one small network, and a look's colour mapping lives in
    the pointwise layers. A softmax over the conditioning picks a blend of `experts`
    weight sets (CondConv, Yang et al. 2019), so capacity grows with `experts` while the
    per-frame cost barely does: the blend is computed once per frame, not per pixel.
    """

    def __init__(self, cin: int, cout: int, cfg: ModelConfig) -> None:
        super().__init__()
        convs = [nn.Conv2d(cin, cout, 1) for _ in range(max(cfg.experts, 1))]  # default init
        self.router: nn.Linear | None = None
        if cfg.experts <= 1:  # a plain conv, with nn.Conv2d's parameter names and shapes
            self.weight, self.bias = convs[0].weight, convs[0].bias
        else:
            self.weight = nn.Parameter(torch.stack([c.weight.detach()[:, :, 0, 0] for c in convs]))
            self.bias = nn.Parameter(torch.stack([c.bias.detach() for c in convs]))
            self.router = nn.Linear(cfg.emb_dim, cfg.experts)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        if self.router is None:
            return F.conv2d(x, self.weight, self.bias)
        mix = torch.softmax(self.router(emb), dim=1)  # (B, K)
        weight = torch.einsum("bk,koi->boi", mix, self.weight)  # (B, Cout, Cin)
        bias = mix @ self.bias  # (B, Cout)
        return torch.einsum("bihw,boi->bohw", x, weight) + bias[:, :, None, None]


def trilinear_gather(table: Tensor, image: Tensor) -> Tensor:
    """`grid_sample` of a (B, C, n, n, n) table at the (B, 3, h, w) colours of `image`
    (in [-1, 1]; r, g, b index the table's last, middle, first axis) as eight gathers.

    The same numbers as the 5D `grid_sample`, which inductor leaves to its own slow CPU
    kernel (1.09 ms at 128x128 against 0.19 compiled this way); eager, and under
    autograd, `grid_sample` is the faster (benchmarks/RESULTS.md)."""
    b, c, n = table.shape[:3]
    flat = table.reshape(b, c, n**3)
    pos = (image.float() + 1.0) * ((n - 1) / 2)  # each colour's place, 0 .. n - 1
    low = pos.floor().clamp(max=n - 2)
    frac = pos - low
    r, g, bl = low.long().unbind(1)  # (B, h, w) each
    base = (bl * n + g) * n + r
    out = torch.zeros(b, c, *image.shape[-2:], device=image.device)
    for corner in range(8):
        db, dg, dr = corner >> 2, (corner >> 1) & 1, corner & 1
        weight = torch.ones_like(frac[:, 0])
        for step, f in ((dr, frac[:, 0]), (dg, frac[:, 1]), (db, frac[:, 2])):
            weight = weight * (f if step else 1.0 - f)
        idx = (base + (db * n + dg) * n + dr).flatten(1)[:, None].expand(b, c, -1)
        out = out + weight[:, None] * flat.gather(2, idx).view_as(out)
    return out.to(table.dtype)


class PromptGrade(nn.Module):
    """A global colour grade of the input image, chosen by the prompt alone.

    Why: most looks start with a colour mapping of the whole frame (thermal's palette,
    sunset's warm cast, night vision's green), and per-pixel layers behind a norm learn
    exact tone curves slowly. Here the prompt picks a 3x3 colour matrix, an offset and,
    per output channel, a piecewise-linear curve of the input luma (`grade_knots` tent
    functions over [-1, 1]); with `grade_grid`, also a gain and an offset per channel
    that vary smoothly over the frame (bilinear over a lattice from corner to corner:
    vignettes, a sky's gradient, a sun's glow); with `grade_bands`, it then re-weights per
    channel the band-pass layers of the result between low-passes of 32, 16, 8, ...
    cells across the frame's short side (a wash's softness, local contrast, a glow), in
    the frame's terms, so a 512 stream is filtered as a 256 training frame was; with
    `grade_lut`, it also adds a 3D colour lookup table (trilinear, over the input's RGB
    cube): any per-pixel colour map, such as a palette of a mix of channels (thermal's
    warmth-weighted heat) or a hue-selective grade (cyberpunk). The residual branches
    are left the rest. It is computed once per frame (a stream makes
    the grid's maps once per prompt), starts as the identity, and stays the identity with
    no prompt (a zero embedding: the projection has no bias).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.knots, self.grid, self.bands = cfg.grade_knots, cfg.grade_grid, cfg.grade_bands
        outputs = 12 + 3 * self.knots + 6 * self.grid**2 + 3 * self.bands
        self.proj = nn.Linear(cfg.prompt_dim, outputs, bias=False)
        nn.init.zeros_(self.proj.weight)
        self.lut = cfg.grade_lut
        if self.lut:  # low rank: a full projection would be 384 x 3 x lut^3 weights
            self.lut_mix = nn.Linear(cfg.prompt_dim, LUT_RANK, bias=False)
            self.lut_tables = nn.Linear(LUT_RANK, 3 * self.lut**3, bias=False)
            nn.init.zeros_(self.lut_tables.weight)

    def lookup(self, image: Tensor, prompt: Tensor) -> Tensor:
        """(B, 3, h, w) in [-1, 1] -> the prompt's colour table at each pixel's colour."""
        b, n = image.shape[0], self.lut
        table = self.lut_tables(self.lut_mix(prompt)).view(b, 3, n, n, n).to(image.dtype)
        image = image.clamp(-1.0, 1.0)
        if torch.compiler.is_compiling():  # inductor fuses this into one loop: 5x faster
            return trilinear_gather(table, image)
        where = image.permute(0, 2, 3, 1)[:, None]  # (B, 1, h, w, r|g|b)
        out = F.grid_sample(  # trilinear in 5D; the cube's corners are -1 and 1
            table, where, mode="bilinear", padding_mode="border", align_corners=True
        )
        return out[:, :, 0]  # (B, 3, h, w)

    def frame_maps(
        self, prompt: Tensor, height: int, width: int, window: Tensor | None = None
    ) -> Tensor | None:
        """The grid's gain and lift maps (B, 6, height, width), None without a grid.

        They depend on the prompt and the size only, so a stream computes them once per
        prompt (`maps` of `forward`) instead of once per frame.
        """
        if not self.grid:
            return None
        return self._sample_lattice(self.proj(prompt), height, width, window)

    def _sample_lattice(
        self, params: Tensor, height: int, width: int, window: Tensor | None
    ) -> Tensor:
        """(B, outputs) projection of the prompt -> (B, 6, height, width) gain/lift maps."""
        b, first = params.shape[0], 12 + 3 * self.knots
        lattice = params[:, first : first + 6 * self.grid**2].view(b, 6, self.grid, self.grid)
        coords = frame_coordinates(height, width, lattice, window)  # (B or 1, 2, h, w)
        where = coords.flip(1).permute(0, 2, 3, 1).expand(b, -1, -1, -1)  # (B, h, w, x|y)
        return F.grid_sample(lattice, where, mode="bilinear", align_corners=True)

    def forward(
        self,
        image: Tensor,
        prompt: Tensor,
        window: Tensor | None = None,
        maps: Tensor | None = None,
    ) -> Tensor:
        """`window`: where the image lies in its frame, as in `frame_coordinates`;
        `maps`: `frame_maps` for this prompt and size, if already made."""
        b, k = image.shape[0], self.knots
        params = self.proj(prompt).to(image.dtype)  # (B, 12 + 3K + 6G^2 + 3B)
        eye = torch.eye(3, device=image.device, dtype=image.dtype)
        matrix = params[:, :9].view(b, 3, 3) + eye  # (B, 3, 3)
        offset = params[:, 9:12, None, None]  # (B, 3, 1, 1)
        curves = params[:, 12 : 12 + 3 * k].view(b, 3, k)  # (B, 3, K) each knot's value
        knots = torch.linspace(-1.0, 1.0, k, device=image.device, dtype=image.dtype)
        tents = (1 - (luma(image) - knots.view(1, k, 1, 1)).abs() * ((k - 1) / 2)).relu()
        mixed = torch.einsum("bij,bjhw->bihw", matrix, image)
        out = mixed + offset + torch.einsum("bck,bkhw->bchw", curves, tents)
        if self.lut:
            out = out + self.lookup(image, prompt)
        if self.grid:
            if maps is None:
                maps = self._sample_lattice(params, *image.shape[-2:], window)
            gain, lift = maps.to(image.dtype).chunk(2, dim=1)  # (B, 3, h, w) each
            out = out * (1 + gain) + lift
        if self.bands:
            weights = params[:, -3 * self.bands :].view(b, self.bands, 3, 1, 1)
            lows = [out, *low_passes(out, self.bands, window)]
            for i in range(self.bands):  # band i lies between low-passes i and i + 1
                out = out + weights[:, i] * (lows[i] - lows[i + 1])
        return out


class LocalLook(nn.Module):
    """A small MLP of each low-res input pixel's 3x3 neighbourhood, its weights picked by
    the prompt: a residual added to x0's base.

    Why: a look is largely a local function of the input's colours (a palette, a tone
    map, a wash), which a tiny per-look MLP on raw pixel values learns fast; the deep
    branches see it only behind norms. No norm and no noise level: the map depends on
    the input alone. A softmax of the prompt mixes `local_experts` weight sets (once per
    frame, as `Pointwise` does); the last layer starts at zero, so the model starts as
    it would without this path. Off in the bundled recipe: a 700-step A/B
    (configs/ab_local.yaml) scored 20.18 dB against the control's 20.23 and 20.38, and
    one-look nets of this form score no better than the shared network.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        k, width = cfg.local_experts, cfg.local_width
        shapes = ((width, 3, 3), (width, width, 1), (3, width, 1))  # (out, in, kernel)
        weights, biases = [], []
        for i, (cout, cin, ksize) in enumerate(shapes):
            convs = [nn.Conv2d(cin, cout, ksize) for _ in range(k)]  # default init
            weight = torch.stack([c.weight.detach() for c in convs])  # (K, out, in, k, k)
            bias = torch.stack([c.bias.detach() for c in convs])  # (K, out)
            if i == len(shapes) - 1:
                weight, bias = torch.zeros_like(weight), torch.zeros_like(bias)
            weights.append(nn.Parameter(weight))
            biases.append(nn.Parameter(bias))
        self.weights, self.biases = nn.ParameterList(weights), nn.ParameterList(biases)
        self.router = nn.Linear(cfg.prompt_dim, k)

    def forward(self, image: Tensor, prompt: Tensor) -> Tensor:
        """(B, 3, h, w) input image, (B, prompt_dim) -> (B, 3, h, w) residual."""
        b, _, h, w = image.shape
        mix = torch.softmax(self.router(prompt), dim=1).to(image.dtype)  # (B, K)
        # the batch as conv groups: sample i's weights act on its own channels only
        x = F.pad(image, (1, 1, 1, 1), mode="replicate").reshape(1, -1, h + 2, w + 2)
        last = len(self.weights) - 1
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            mixed = torch.einsum("bk,koihw->boihw", mix, weight.to(image.dtype))
            x = F.conv2d(x, mixed.flatten(0, 1), (mix @ bias.to(image.dtype)).flatten(), groups=b)
            if i < last:
                x = F.silu(x)
        return x.view(b, 3, h, w)


class PaletteSnap(nn.Module):
    """Pulls x0 towards a soft nearest colour of a palette that the prompt picks.

    Why: pixel art, pop art and cartoon snap every pixel to a few colours; a small
    network regressing colour blurs across those steps. Here the prompt picks
    `palette_colours` colours, a sharpness and a share: x0 moves that share of the way
    to the softmax-weighted mix of the palette by squared distance. The share starts
    near zero, so the model starts as it would without this step. Off in the bundled
    recipe: in a 700-step A/B (configs/ab_palette.yaml, 20.25 dB against the control's
    20.23 and 20.38) every look opened the share to 0.15-0.52 at low sharpness, a soft
    nonlinearity rather than a snap, since a squared error punishes a snap that lands on
    the wrong colour.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.colours = cfg.palette_colours
        self.palette = nn.Linear(cfg.prompt_dim, 3 * self.colours)
        self.control = nn.Linear(cfg.prompt_dim, 2)  # share (logit), log sharpness
        nn.init.zeros_(self.control.weight)
        with torch.no_grad():
            self.control.bias.copy_(torch.tensor([-4.0, math.log(50.0)]))

    def forward(self, x0: Tensor, prompt: Tensor) -> Tensor:
        b = x0.shape[0]
        palette = torch.tanh(self.palette(prompt)).view(b, self.colours, 3).to(x0.dtype)
        share, log_sharpness = self.control(prompt).to(x0.dtype).unbind(1)  # (B,) each
        dist = (x0[:, None] - palette[:, :, :, None, None]).pow(2).sum(2)  # (B, P, h, w)
        weights = torch.softmax(-dist * log_sharpness.exp()[:, None, None, None], dim=1)
        snapped = torch.einsum("bphw,bpc->bchw", weights, palette)
        return x0 + torch.sigmoid(share)[:, None, None, None] * (snapped - x0)


def low_passes(image: Tensor, levels: int, window: Tensor | None = None) -> list[Tensor]:
    """`levels` blurred copies of (B, C, h, w): area means over 32, 16, 8, ... cells
    across the frame's short side, bilinearly enlarged back to (h, w).

    `window` as in `frame_coordinates`: the image is that part of its frame (training
    crops share its extent); None: the whole frame.
    """
    h, w = image.shape[-2:]
    if window is None:
        frame_short = float(min(h, w))
    else:  # one extent for the batch: every crop of a batch has the same size
        extent = window[0, 2:] - window[0, :2]
        frame_short = min(h / float(extent[0]), w / float(extent[1]))
    lows = []
    for level in range(1, levels + 1):
        cells = 64 / 2**level / frame_short  # cells per image pixel
        size = (max(1, round(h * cells)), max(1, round(w * cells)))
        if size[0] >= h and size[1] >= w:  # an image this small is already that coarse
            lows.append(image)
            continue
        low = F.adaptive_avg_pool2d(image, size)
        lows.append(F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False))
    return lows


class ConvBlock(nn.Module):
    """Depthwise conv -> norm -> FiLM by the conditioning -> pointwise MLP, residual."""

    def __init__(self, dim: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, cfg.kernel, padding=cfg.kernel // 2, groups=dim)
        self.norm = RMSNorm2d(dim)
        self.film = nn.Linear(cfg.emb_dim, 2 * dim)
        self.fc1 = Pointwise(dim, dim * cfg.mlp_ratio, cfg)
        self.fc2 = Pointwise(dim * cfg.mlp_ratio, dim, cfg)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)  # (B, C, 1, 1) x2
        h = self.norm(self.dw(x)) * (1 + scale) + shift  # (B, C, H, W)
        return x + self.fc2(F.silu(self.fc1(h, emb)), emb)  # (B, C, H, W)


class TemporalAttention(nn.Module):
    """Current frame attends, at low resolution, to its own and the cached frames' keys."""

    def __init__(self, dim: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.heads = cfg.attn_heads
        self.head_dim = cfg.attn_dim // cfg.attn_heads
        self.norm = RMSNorm2d(dim)
        self.q = nn.Linear(dim, cfg.attn_dim)
        self.kv = nn.Linear(dim, 2 * cfg.attn_dim)
        # which frame a key comes from: 0 the current one, 1 the previous one, ...
        self.age = nn.Parameter(torch.zeros(cfg.cache_frames + 1, self.heads, 1, self.head_dim))
        self.proj = nn.Linear(cfg.attn_dim, dim)

    def forward(self, x: Tensor, past: tuple[KV, ...]) -> tuple[Tensor, KV]:
        b, c, height, width = x.shape
        heads, hd = self.heads, self.head_dim
        # 1. pool: queries from the mid level, keys/values pooled once more
        q_map = F.avg_pool2d(self.norm(x), self.cfg.attn_pool, ceil_mode=True)  # (B, C, Hq, Wq)
        kv_map = F.avg_pool2d(q_map, self.cfg.kv_pool, ceil_mode=True)  # (B, C, Hk, Wk)
        hq, wq = q_map.shape[-2:]
        hk, wk = kv_map.shape[-2:]
        q_tok = q_map.flatten(2).transpose(1, 2) + position_encoding(hq, wq, c, x.device)
        kv_tok = kv_map.flatten(2).transpose(1, 2) + position_encoding(hk, wk, c, x.device)
        # 2. project; this frame's keys/values are returned for the cache
        q = self.q(q_tok).view(b, hq * wq, heads, hd).transpose(1, 2)  # (B, h, Nq, hd)
        k, v = self.kv(kv_tok).view(b, hk * wk, 2, heads, hd).permute(2, 0, 3, 1, 4)
        new = KV(k, v)  # (B, h, Nk, hd) each
        # 3. attend over [oldest cached, ..., previous, current], keys tagged with their age
        frames = (*past, new)
        ages = range(len(frames) - 1, -1, -1)
        keys = torch.cat([kv.k + self.age[age] for kv, age in zip(frames, ages, strict=True)], 2)
        values = torch.cat([kv.v for kv in frames], dim=2)  # (B, h, F * Nk, hd)
        out = F.scaled_dot_product_attention(q, keys, values)  # (B, h, Nq, hd)
        # 4. back to the mid level
        out = self.proj(out.transpose(1, 2).reshape(b, hq * wq, heads * hd))  # (B, Nq, C)
        out = out.transpose(1, 2).reshape(b, c, hq, wq)
        out = F.interpolate(out, size=(height, width), mode="bilinear", align_corners=False)
        return x + out, new  # (B, C, H, W)


class NetOutput(NamedTuple):
    x0: Tensor  # (B, 3, h, w) predicted clean output image, [-1, 1]
    gain: Tensor  # (B, 3 * guides, h, w) how much of each full-res guide each channel takes
    kv: FrameKV  # this frame's keys/values, one per temporal layer


class LSDNet(nn.Module):
    """The denoiser. One call denoises one frame of a batch of streams."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c0, c1, ci = cfg.width, cfg.mid_width, cfg.image_channels
        self.embed = CondEmbedding(cfg)
        # x_t, image [+ its edge detail], history, history mask, the cell's (y, x)
        detail = cfg.patch**2 * int(cfg.detail_input)
        self.stem = nn.Conv2d(3 * ci + detail + 1 + 2 * cfg.position, c0, 1)
        self.enc = nn.ModuleList(ConvBlock(c0, cfg) for _ in range(cfg.enc_blocks))
        self.down = nn.Conv2d(c0, c1, 2, stride=2)
        self.mid = nn.ModuleList(ConvBlock(c1, cfg) for _ in range(cfg.mid_blocks))
        self.temporal = nn.ModuleList(TemporalAttention(c1, cfg) for _ in range(cfg.mid_blocks))
        self.up = nn.Sequential(nn.Conv2d(c1, 4 * c0, 1), nn.PixelShuffle(2))
        self.dec = nn.ModuleList(ConvBlock(c0, cfg) for _ in range(cfg.dec_blocks))
        self.head_norm = RMSNorm2d(c0)
        # x0 residual and one gain per upsampler guide, unshuffled
        self.head = nn.Conv2d(c0, (1 + cfg.guides) * ci, 1)
        self.grade = PromptGrade(cfg) if cfg.grade_knots else None
        self.local = LocalLook(cfg) if cfg.local_experts else None
        self.snap = PaletteSnap(cfg) if cfg.palette_colours else None
        self._init_weights()

    def _init_weights(self) -> None:
        """Zero the last layer of every residual branch: at start the net is the identity."""
        zero = [self.head, *(b.fc2 for b in (*self.enc, *self.mid, *self.dec))]
        zero += [
            *(a.proj for a in self.temporal),
            *(b.film for b in (*self.enc, *self.mid, *self.dec)),
        ]
        for layer in zero:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(
        self,
        x_t: Tensor,  # (B, 3, h, w) noisy target
        image: Tensor,  # (B, 3, h, w) input frame, low resolution, [-1, 1] (+ `edge_detail`)
        history: Tensor,  # (B, 3, h, w) previous output warped to this frame
        history_mask: Tensor,  # (B, 1, h, w) 1 where the history is valid
        prompt: Tensor,  # (B, prompt_dim)
        t: Tensor,  # (B,) noise level of x_t
        d: Tensor,  # (B,) step size asked for
        history_sigma: Tensor,  # (B,) noise level of the history
        cache: KVCache,  # past frames' keys/values
        window: Tensor | None = None,  # (B, 4) where a training crop lies in its frame
        grade_maps: Tensor | None = None,  # `PromptGrade.frame_maps`, if already made
    ) -> NetOutput:
        p = self.cfg.patch
        emb = self.embed(prompt, t, d, history_sigma)  # (B, E)
        inputs = [
            F.pixel_unshuffle(x_t, p),
            F.pixel_unshuffle(image, p),  # with `detail_input`, its edge detail too
            F.pixel_unshuffle(history, p),
            F.avg_pool2d(history_mask, p),
        ]
        image = image[:, :3]
        if self.cfg.position:  # a conv net cannot tell the frame's middle from its edges
            gh, gw = inputs[-1].shape[-2:]
            coords = frame_coordinates(gh, gw, x_t, window)  # (B or 1, 2, gh, gw)
            inputs.append(coords.expand(x_t.shape[0], -1, -1, -1))
        x = torch.cat(inputs, dim=1)  # (B, 3 * 3p^2 + 1 [+ 2], gh, gw)
        h0 = self.stem(x)  # (B, C0, gh, gw)
        for block in self.enc:
            h0 = block(h0, emb)
        h1 = self.down(h0)  # (B, C1, gh/2, gw/2)
        kvs = []
        for i, (block, attention) in enumerate(zip(self.mid, self.temporal, strict=True)):
            h1 = block(h1, emb)
            h1, kv = attention(h1, cache.layer(i))
            kvs.append(kv)
        h = h0 + self.up(h1)  # (B, C0, gh, gw)
        for block in self.dec:
            h = block(h, emb)
        out = F.pixel_shuffle(self.head(self.head_norm(h)), p)  # (B, 3 + 3 * guides, h, w)
        residual, gain = out[:, :3], out[:, 3:]  # (B, 3, h, w), (B, 3 * guides, h, w)
        gain = torch.cat([1.0 + gain[:, :3], gain[:, 3:]], dim=1)  # detail kept at start
        base = image if self.grade is None else self.grade(image, prompt, window, grade_maps)
        if self.local is not None:
            base = base + self.local(image, prompt)
        x0 = base + residual
        if self.snap is not None:
            x0 = self.snap(x0, prompt)
        return NetOutput(x0=x0, gain=gain, kv=tuple(kvs))


EDGE_KNEE = 0.06
"""Luma gradient where the edge map is 0.5: [-1, 1] units per pixel at a 256-pixel short side."""
SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0


def half_edges(frame_luma: Tensor) -> Tensor:
    """(B, 1, H, W) luma in [-1, 1] -> (B, 1, H // 2, W // 2) edge strength in [0, 1).

    The Sobel gradient magnitude at half resolution (which smooths video noise the way a
    look's pre-blur does), scaled by the frame's size so that an edge reads the same at
    any resolution, softly saturated.
    """
    height, width = frame_luma.shape[-2:]
    half = F.avg_pool2d(frame_luma, 2)  # (B, 1, H // 2, W // 2)
    padded = F.pad(half, (1, 1, 1, 1), mode="reflect")  # OpenCV's default border
    kernels = torch.stack([SOBEL, SOBEL.T])[:, None].to(frame_luma)  # (2, 1, 3, 3)
    dx, dy = F.conv2d(padded, kernels).chunk(2, dim=1)
    strength = torch.hypot(dx, dy) * (min(height, width) / 512)
    return strength / (strength + EDGE_KNEE)


def edge_map(frame_luma: Tensor) -> Tensor:
    """(B, 1, H, W) luma in [-1, 1] -> (B, 1, H, W): `half_edges` enlarged to full size."""
    size = frame_luma.shape[-2:]
    return F.interpolate(half_edges(frame_luma), size=size, mode="bilinear", align_corners=False)


def edge_detail(frame_luma: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, 1, H, W) luma in [-1, 1] -> (B, 1, h, w): `half_edges` averaged over each cell
    of the denoiser's image (`model.detail_input`), as [-1, 1] like the image. The mean
    over each cell's area, as OpenCV's INTER_AREA takes it (`model.edge_detail_u8`): at an
    odd downscale a cell holds whole and half pixels of the half-resolution map."""
    half = half_edges(frame_luma)
    if half.shape[-2] % size[0] or half.shape[-1] % size[1]:
        full = F.interpolate(half, scale_factor=2.0, mode="nearest")  # each as its 4 pixels
        cells = F.avg_pool2d(full, (full.shape[-2] // size[0], full.shape[-1] // size[1]))
    else:
        cells = F.adaptive_avg_pool2d(half, size)
    return cells * 2.0 - 1.0


def guided_upsample(x0: Tensor, gain: Tensor, frame: Tensor, image: Tensor) -> Tensor:
    """Full-resolution output: the low-res result plus the input's own fine detail.

    x0, image: (B, 3, h, w); gain: (B, 3 * guides, h, w); frame: (B, 3, H, W) the
    full-res input; all in [-1, 1]. The first guide is the detail: the full-res luma
    minus the upsampled low-res luma; its gain (learned, per channel and place) says how
    much of it each output channel keeps: 1 keeps it, 0 gives a soft image (pixel art,
    paint), negative inverts it (thermal, blueprint). The second guide, if any, is the
    full-res `edge_map`, whose gain draws thin lines in any colour (neon, blueprint).
    """
    size = frame.shape[-2:]
    up = lambda x: F.interpolate(x, size=size, mode="bilinear", align_corners=False)  # noqa: E731
    frame_luma = luma(frame)
    guides = [frame_luma - up(luma(image[:, :3]))]  # (B, 1, H, W) each
    if gain.shape[1] > 3:
        guides.append(edge_map(frame_luma))
    out = up(x0)
    for i, guide in enumerate(guides):
        out = out + up(gain[:, 3 * i : 3 * i + 3]) * guide
    return out  # (B, 3, H, W)
