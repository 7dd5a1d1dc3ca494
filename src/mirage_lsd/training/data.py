"""Training sequences: real images and clips, moved by a synthetic camera, and their looks.

A sequence is `seq_len` frames of `crop` x `crop` pixels, the same look rendered on each
(the target), and the optical flow between consecutive input frames, computed exactly as
the model computes it at run time. With `view` set, the camera films a larger frame, the
look is rendered on all of it (looks scale with the frame), and the crop is a fixed window
of it whose place in the frame travels with the sequence. Every sequence is a pure
function of (seed, index), so a run and its resumption see the same data.

Sources and the train / eval split (eval material is never trained on):

    train  stills  scikit-image: astronaut, camera, coffee, rocket, hubble_deep_field,
                   immunohistochemistry, coins, moon, page, text, retina, colorwheel,
                   brick, grass, gravel, clock, cell, stereo_motorcycle;
                   scikit-learn: china.jpg
           clips   every video or image file in `media_dir` (walk.mkv, book.mkv,
                   bottle-detection.mp4) except the eval clips
    eval   stills  scikit-image: chelsea (also known as `cat`, so that one is in neither
                   train list); scikit-learn: flower.jpg
           clips   please.mkv, classroom.gif

`data.eval_clips` entries name files of `media_dir` (file name, or path within it; any
case, subfolders included); an entry that names no file is an error, not a silently
trained-on clip (a folder of your own: list its held-out clips, or [] for the eval
stills only). A train still with an eval still's pixels (an alias) is refused.

Stills move by a synthetic camera (pan, zoom, rotation); clips are real motion, with a
moving crop on top. Targets are the looks library's renders (or a blend of two looks,
or the input itself for "no prompt").
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

from mirage_lsd.errors import UserError, first_line
from mirage_lsd.looks import LOOKS
from mirage_lsd.models.builtin.config import ConfigError
from mirage_lsd.models.builtin.flow import FlowEstimator, flow_gray
from mirage_lsd.models.builtin.prompt_embedding import LookBank, blend_anchors
from mirage_lsd.sources.images import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (
    ".mkv", ".mp4", ".m4v", ".webm", ".mov", ".avi", ".gif", ".mpg", ".mpeg", ".ts", ".mts",
    ".m2ts", ".flv", ".wmv",
)  # fmt: skip
CROP_ALIGN = 32  # crops start on multiples of this: whole cells of every network level


@dataclass(frozen=True)
class DataConfig:
    media_dir: str = "../shared/media"  # relative to the working directory
    eval_clips: tuple[str, ...] = ("please.mkv", "classroom.gif")
    train_images: tuple[str, ...] = (
        "skimage:astronaut", "skimage:camera", "skimage:coffee", "skimage:rocket",
        "skimage:hubble_deep_field", "skimage:immunohistochemistry", "skimage:coins",
        "skimage:moon", "skimage:page", "skimage:text", "skimage:retina",
        "skimage:colorwheel", "skimage:brick", "skimage:grass", "skimage:gravel",
        "skimage:clock", "skimage:cell", "skimage:stereo_motorcycle", "sklearn:china.jpg",
    )  # fmt: skip
    eval_images: tuple[str, ...] = ("skimage:chelsea", "sklearn:flower.jpg")
    looks: tuple[str, ...] = ()  # looks to train on; empty: all of them
    crop: int = 256  # side of a training frame (full resolution)
    # side of the frame the camera films and the look is rendered on; a crop x crop
    # window of it is trained on. Looks scale with the frame, so a 512 view trains the
    # look at the scale of a 512x512 stream at a 256 crop's cost. 0: the crop itself.
    view: int = 0
    seq_len: int = 4
    source_scale: float = 1.5  # sources are resized so their short side is view * this
    clip_max_frames: int = 300  # frames decoded per clip, from its start
    clip_max_stride: int = 3  # clips are read every 1..this frames
    p_still: float = 0.5  # share of sequences made from still images
    min_view: float = 0.5  # smallest camera window, as a share of the source's short side
    max_shift: float = 8.0  # camera pan, crop pixels per frame
    max_zoom: float = 0.04  # camera zoom, log scale per frame
    max_rotation: float = 2.0  # camera roll, degrees per frame
    p_identity: float = 0.05  # share of sequences with no prompt: the target is the input
    p_blend: float = 0.15  # share of sequences whose target blends two looks

    def __post_init__(self) -> None:
        for name in ("crop", "seq_len", "clip_max_frames", "clip_max_stride"):
            if getattr(self, name) < 1:
                raise ConfigError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("p_still", "p_identity", "p_blend", "min_view"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"data.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.view < 0 or self.source_scale <= 0:
            raise ConfigError("data.view must be >= 0 and data.source_scale > 0")
        if not self.eval_clips and not self.eval_images:
            raise ConfigError("data.eval_clips and data.eval_images are both empty: eval needs one")


@dataclass(frozen=True)
class Source:
    """A still (one frame) or a clip (several), RGB uint8, resized for training."""

    name: str
    frames: tuple[np.ndarray, ...]


@dataclass(frozen=True)
class Sequence:
    """One training or eval sequence, numpy, full resolution."""

    frames: np.ndarray  # (T, S, S, 3) uint8 input
    targets: np.ndarray  # (T, S, S, 3) uint8 the look rendered on each input frame
    weights: dict[str, float]  # look -> blend weight; empty for no prompt
    source: str
    # top, left, bottom, right of the frames in the filmed view, as shares of its side
    window: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)


@dataclass(frozen=True)
class Batch:
    """A batch of sequences as tensors in [-1, 1], ready for the network."""

    frames: Tensor  # (B, T, 3, S, S) full-resolution input
    images: Tensor  # (B, T, 3, s, s) low-resolution input (s = S / image_downscale)
    targets: Tensor  # (B, T, 3, S, S) full-resolution target
    targets_lo: Tensor  # (B, T, 3, s, s) low-resolution target: what is denoised
    flows: Tensor  # (B, T, 2, g, g) flow from frame t into frame t-1 (zero at t=0)
    prompts: Tensor  # (B, prompt_dim)
    windows: Tensor  # (B, 4) where the frames lie in the filmed view (Sequence.window)
    looks: Tensor  # (B, len(LOOKS) + 1) each sequence's blend weights; last: no look

    def to(self, device: str | torch.device) -> Batch:
        return Batch(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


# ---------------------------------------------------------------- sources


# callables of skimage.data that are not sample images
_SKIMAGE_NOT_IMAGES = frozenset({"data_dir", "download_all", "file_hash",
                                 "lbp_frontal_face_cascade_filename"})  # fmt: skip


def _still(name: str, where: str) -> np.ndarray:
    """A scikit-image or scikit-learn sample image as (H, W, 3) uint8; `where` names the
    config entry in errors."""
    library, _, item = name.partition(":")
    if library not in ("skimage", "sklearn"):
        raise UserError(f"unknown image source '{name}': use skimage:NAME or sklearn:NAME")
    not_one = f"{where} '{name}' is not a {library} sample image"
    try:
        if library == "skimage":
            from skimage import data

            if item not in data.__all__ or item in _SKIMAGE_NOT_IMAGES:
                raise ConfigError(f"{not_one}: see skimage.data's list")
            image = getattr(data, item)()
            image = image[0] if isinstance(image, tuple) else image  # stereo pairs
        else:
            from sklearn.datasets import load_sample_image

            image = load_sample_image(item)
    except ConfigError:
        raise
    except Exception as exc:  # a wrong name, or a download that is not possible here
        reason = first_line(exc)
        raise ConfigError(f"{not_one} that loads here: {reason}") from None
    image = np.asarray(image)
    numbers = image.dtype == bool or np.issubdtype(image.dtype, np.number)
    colour = image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (3, 4))
    if not (numbers and colour) or image.size == 0:  # a volume, a stack of faces, a path
        raise ConfigError(f"{not_one}: it gives an array of shape {image.shape}, not an image")
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    elif np.issubdtype(image.dtype, np.integer) and image.dtype != np.uint8:  # 16-bit
        image = (np.clip(image, 0, None) / np.iinfo(image.dtype).max * 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = (np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


def _still_file(name: str) -> Path | None:
    """The file a sample image is read from, where the library ships one by that name."""
    library, _, item = name.partition(":")
    if library == "sklearn":
        import sklearn.datasets

        path = Path(sklearn.datasets.__file__).parent / "images" / item
        return path if path.is_file() else None
    import skimage.data

    return next(iter(sorted(Path(skimage.data.__file__).parent.glob(f"{item}.*"))), None)


def _read_media(path: Path, max_frames: int, short_side: int) -> list[np.ndarray]:
    """The first `max_frames` RGB frames of a video or image file, each resized to
    `short_side` as it is decoded (a 4K clip never sits in memory whole); [] if unreadable.
    Frames come as the sources give them at run time: upright, with square pixels."""
    import av

    from mirage_lsd.sources._av import RgbConverter, pixel_aspect, quarter_turns

    frames: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            to_rgb = RgbConverter(pixel_aspect(container.streams.video[0], str(path)))
            turns = None  # the first frame's display rotation, as the sources keep it
            for frame in container.decode(video=0):
                turns = quarter_turns(frame) if turns is None else turns
                image = to_rgb(frame)
                if turns:
                    image = np.rot90(image, turns)
                frames.append(_fit(image, short_side))
                if len(frames) == max_frames:
                    break
    except (av.FFmpegError, OSError, ValueError, IndexError) as exc:
        log.warning("skipping %s: %s", path, exc)
    return frames


def _fit(image: np.ndarray, short_side: int) -> np.ndarray:
    h, w = image.shape[:2]
    scale = short_side / min(h, w)
    size = (max(short_side, round(w * scale)), max(short_side, round(h * scale)))
    inter = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=inter)


def _pixels_id(image: np.ndarray) -> tuple[tuple[int, ...], bytes]:
    """A still's shape and pixel hash: aliases (skimage's `cat` is `chelsea`) share it."""
    return image.shape, hashlib.blake2b(image.tobytes(), digest_size=16).digest()


def _check_stills_held_out(cfg: DataConfig, train: list[tuple[str, np.ndarray]]) -> None:
    """Refuse a train still whose pixels are an eval still's, whatever either is called."""
    held = {
        _pixels_id(_still(name, f"data.eval_images[{i}]")): name
        for i, name in enumerate(cfg.eval_images)
    }
    for name, image in train:
        if twin := held.get(_pixels_id(image)):
            raise ConfigError(
                f"data.train_images entry '{name}' is data.eval_images entry '{twin}' "
                "(the same pixels): held-out images are never trained on"
            )


def _eval_clip_files(cfg: DataConfig, folder: Path, files: list[Path]) -> set[Path]:
    """The files of `folder` that `data.eval_clips` names, by file name or by path within
    the folder, case-insensitively; an entry that names none is an error, so that a
    misspelt held-out clip cannot go to the train split."""
    keys = {p: {p.name.lower(), p.relative_to(folder).as_posix().lower()} for p in files}
    found: set[Path] = set()
    for entry in cfg.eval_clips:
        matches = {p for p, names in keys.items() if entry.lower() in names}
        if not matches:
            raise ConfigError(
                f"data.eval_clips entry '{entry}' is not in data.media_dir {folder}: list "
                "held-out clips of that folder, or [] to evaluate on data.eval_images only"
            )
        found |= matches
    _check_clips_held_out(folder, files, found)
    return found


def _first_copy(files: list[Path], originals: dict[Path, str]) -> tuple[Path, str] | None:
    """The first of `files` whose bytes are one of `originals` (a copy or a link), with
    that original's name; compared by size first, so most files are never read."""
    sizes = {p.stat().st_size for p in originals}
    twins = [p for p in files if p not in originals and p.stat().st_size in sizes]
    if not twins:
        return None
    ids = {_file_digest(p): name for p, name in originals.items()}
    for path in twins:
        if name := ids.get(_file_digest(path)):
            return path, name
    return None


def _file_digest(path: Path) -> bytes:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "blake2b").digest()


def _check_clips_held_out(folder: Path, files: list[Path], held: set[Path]) -> None:
    """Refuse a file of the folder that is a held-out clip under another name (a copy or
    a link): it would go to the train split."""
    if copy := _first_copy(files, {p: p.relative_to(folder).as_posix() for p in held}):
        raise ConfigError(
            f"data.media_dir file '{copy[0].relative_to(folder)}' is the held-out clip "
            f"'{copy[1]}' under another name: remove the copy, or list it in data.eval_clips too"
        )


def _check_files_not_eval_stills(cfg: DataConfig, folder: Path, files: list[Path]) -> None:
    """Refuse a file of the folder that is a copy of an eval still's file."""
    held = {p: name for name in cfg.eval_images if (p := _still_file(name)) is not None}
    if copy := _first_copy(files, held):
        raise ConfigError(
            f"data.media_dir file '{copy[0].relative_to(folder)}' is the data.eval_images "
            f"entry '{copy[1]}': held-out images are never trained on"
        )


def load_sources(cfg: DataConfig, split: str) -> list[Source]:
    """The stills and clips of `split` ("train" or "eval"), resized for the filmed view."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be train or eval, got {split}")
    short = round(view_side(cfg) * cfg.source_scale)
    names = cfg.train_images if split == "train" else cfg.eval_images
    field = "train_images" if split == "train" else "eval_images"
    stills = [(name, _still(name, f"data.{field}[{i}]")) for i, name in enumerate(names)]
    if split == "train":
        _check_stills_held_out(cfg, stills)
    sources = [Source(name, (_fit(image, short),)) for name, image in stills]
    folder = Path(cfg.media_dir).expanduser()
    if not folder.exists():
        raise UserError(f"data folder {folder} does not exist (data.media_dir)")
    if not folder.is_dir():
        raise UserError(f"data.media_dir {folder} is a file: give the folder that holds it")
    suffixes = VIDEO_SUFFIXES + tuple(sorted(IMAGE_SUFFIXES))
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in suffixes and p.is_file())
    if not files and (split == "train" or cfg.eval_clips):
        raise UserError(
            f"data folder {folder} has no video or image files (data.media_dir); these types "
            f"are read, subfolders included: {' '.join(suffixes)}"
        )
    held_out = _eval_clip_files(cfg, folder, files)
    chosen = [p for p in files if (p in held_out) == (split == "eval")]
    if split == "train":
        _check_files_not_eval_stills(cfg, folder, chosen)
        if not chosen:
            raise UserError(
                f"all {len(files)} video and image files of data folder {folder} are held out "
                "by data.eval_clips: leave some to train on"
            )
    clips = []
    for path in chosen:
        frames = _read_media(path, cfg.clip_max_frames, short)
        if frames:
            clips.append(Source(path.name, tuple(frames)))
    if not clips and (split == "train" or cfg.eval_clips):
        raise UserError(
            f"data folder {folder} has no readable video or image for the {split} split"
            + (f" (looked for {', '.join(cfg.eval_clips)})" if split == "eval" else "")
            + f"; files of these types are read, subfolders included: {' '.join(suffixes)}"
        )
    return sources + clips


# ---------------------------------------------------------------- sequences


def view_side(cfg: DataConfig) -> int:
    """Side of the filmed view: `view`, or the crop when it is 0."""
    if cfg.view and cfg.view < cfg.crop:
        raise UserError(f"data.view ({cfg.view}) must be 0 or at least data.crop ({cfg.crop})")
    return cfg.view or cfg.crop


def _camera(rng: np.random.Generator, shape: tuple[int, ...], cfg: DataConfig) -> list[np.ndarray]:
    """(T,) 2x3 affine maps from view pixels to source pixels: a smoothly moving camera."""
    h, w = shape[:2]
    s, strength = view_side(cfg), rng.uniform(0.0, 1.0)  # some sequences barely move
    side = rng.uniform(cfg.min_view, 1.0) * min(h, w)  # camera window in source pixels
    center = np.array([rng.uniform(side / 2, w - side / 2), rng.uniform(side / 2, h - side / 2)])
    velocity = rng.uniform(-1, 1, 2) * strength * cfg.max_shift * side / s
    zoom = rng.uniform(-1, 1) * strength * cfg.max_zoom
    roll = math.radians(rng.uniform(-1, 1) * strength * cfg.max_rotation)
    maps = []
    for i in range(cfg.seq_len):
        scale = side * math.exp(zoom * i) / s
        c, sn = scale * math.cos(roll * i), scale * math.sin(roll * i)
        linear = np.array([[c, -sn], [sn, c]])
        offset = center + velocity * i - linear @ np.array([s / 2, s / 2])
        maps.append(np.hstack([linear, offset[:, None]]))
    return maps


def _render(frames: np.ndarray, weights: dict[str, float]) -> np.ndarray:
    """The looks of `frames` (T, S, S, 3), blended by `weights`; the input if none."""
    if not weights:
        return frames.copy()
    out = np.zeros(frames.shape, np.float32)
    for name, weight in weights.items():
        out += weight * np.stack([LOOKS[name].render(f) for f in frames]).astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def make_sequence(
    rng: np.random.Generator,
    sources: list[Source],
    cfg: DataConfig,
    look: str | None = None,
    whole_view: bool = False,
) -> Sequence:
    """One sequence drawn with `rng`; `look` fixes the look (eval), else it is drawn too.

    `whole_view` keeps the filmed view instead of cutting the training crop out of it.
    """
    # 1. a source: a still or a clip
    stills = [s for s in sources if len(s.frames) == 1]
    clips = [s for s in sources if len(s.frames) > 1]
    pool = stills if (rng.random() < cfg.p_still and stills) or not clips else clips
    source = pool[rng.integers(len(pool))]
    # 2. which source frames: the one still, or a run of a clip
    n = len(source.frames)
    stride = int(rng.integers(1, cfg.clip_max_stride + 1)) if n > 1 else 0
    start = int(rng.integers(max(1, n - stride * (cfg.seq_len - 1))))
    picks = [min(start + i * stride, n - 1) for i in range(cfg.seq_len)]
    # 3. the camera moves over them
    maps = _camera(rng, source.frames[0].shape, cfg)
    flags, side = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, view_side(cfg)
    frames = np.stack(
        [
            cv2.warpAffine(source.frames[i], m, (side, side), flags=flags,
                           borderMode=cv2.BORDER_REFLECT_101)
            for i, m in zip(picks, maps, strict=True)
        ]
    )  # fmt: skip
    if rng.random() < 0.5:
        frames = np.ascontiguousarray(frames[:, :, ::-1])
    # 4. the look: one, a blend of two, or none
    names = cfg.looks or tuple(LOOKS)
    if look is not None:
        weights = {look: 1.0}
    elif rng.random() < cfg.p_identity:
        weights = {}
    elif rng.random() < cfg.p_blend and len(names) > 1:
        a, b = rng.choice(len(names), size=2, replace=False)
        w = float(rng.uniform(0.0, 1.0))
        weights = {names[a]: 1.0 - w, names[b]: w}
    else:
        weights = {names[rng.integers(len(names))]: 1.0}
    targets = _render(frames, weights)
    # 5. the window trained on: fixed in the view, on the coarsest grid of the network
    if side == cfg.crop or whole_view:
        return Sequence(frames, targets, weights, source.name)
    cells = (side - cfg.crop) // CROP_ALIGN
    top, left = (int(v) * CROP_ALIGN for v in rng.integers(0, cells + 1, size=2))
    rows, cols = slice(top, top + cfg.crop), slice(left, left + cfg.crop)
    window = (top / side, left / side, (top + cfg.crop) / side, (left + cfg.crop) / side)
    return Sequence(
        np.ascontiguousarray(frames[:, rows, cols]),
        np.ascontiguousarray(targets[:, rows, cols]),
        weights,
        source.name,
        window,
    )


def _tensor(images: np.ndarray) -> Tensor:
    """(..., H, W, 3) uint8 -> (..., 3, H, W) float32 in [-1, 1]."""
    return torch.from_numpy(images).movedim(-1, -3).float() / 127.5 - 1.0


def collate(
    sequences: list[Sequence], bank: LookBank, image_downscale: int, grid_downscale: int
) -> Batch:
    """Tensors for a list of sequences; low-res images and flow as the model makes them."""
    crop = sequences[0].frames.shape[1]
    lo, grid = crop // image_downscale, crop // grid_downscale
    resize = lambda x: cv2.resize(x, (lo, lo), interpolation=cv2.INTER_AREA)  # noqa: E731
    flow = FlowEstimator()
    images, targets_lo, flows = [], [], []
    for seq in sequences:
        small = np.stack([resize(f) for f in seq.frames])
        grays = [flow_gray(f, grid, grid) for f in small]
        zero = np.zeros((grid, grid, 2), np.float32)
        flows.append(np.stack([zero] + [flow(c, p) for p, c in itertools.pairwise(grays)]))
        images.append(small)
        targets_lo.append(np.stack([resize(f) for f in seq.targets]))
    return Batch(
        frames=_tensor(np.stack([s.frames for s in sequences])),
        images=_tensor(np.stack(images)),
        targets=_tensor(np.stack([s.targets for s in sequences])),
        targets_lo=_tensor(np.stack(targets_lo)),
        flows=torch.from_numpy(np.stack(flows)).permute(0, 1, 4, 2, 3),
        prompts=torch.stack([blend_anchors(s.weights, bank) for s in sequences]),
        windows=torch.tensor([s.window for s in sequences], dtype=torch.float32),
        looks=torch.tensor([look_row(s.weights) for s in sequences], dtype=torch.float32),
    )


def look_row(weights: dict[str, float]) -> list[float]:
    """A sequence's blend weights over the catalog's looks, then 1 for no look at all."""
    return [weights.get(name, 0.0) for name in LOOKS] + [0.0 if weights else 1.0]


class SequenceData:
    """Deterministic batches of one split: batch i is the same in every run."""

    def __init__(self, cfg: DataConfig, split: str, seed: int) -> None:
        unknown = [name for name in cfg.looks if name not in LOOKS]
        if unknown:
            raise UserError(f"unknown look '{unknown[0]}' in data.looks")
        self.cfg = cfg
        self.seed = seed
        self.split_id = 0 if split == "train" else 1
        self.sources = load_sources(cfg, split)

    def sequences(self, index: int, count: int, looks: bool = False) -> list[Sequence]:
        """`count` sequences for batch `index`; with `looks`, sequence i gets look i and
        the whole filmed view (what a stream of that size shows the model)."""
        rng = np.random.default_rng([self.seed, self.split_id, index])
        names = self.cfg.looks or tuple(LOOKS)
        return [
            make_sequence(
                rng, self.sources, self.cfg, names[i % len(names)] if looks else None, looks
            )
            for i in range(count)
        ]
