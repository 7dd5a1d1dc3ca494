"""The built-in model `mirage-lsd-v1`: causality, bounded state, sampler, training, errors.

Everything runs on tiny configs on the CPU with one thread; the whole file takes seconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import math
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from mirage_lsd.engine.stream_engine import StreamEngine
from mirage_lsd.errors import UserError
from mirage_lsd.evaluation.metrics import psnr
from mirage_lsd.geometry import apply_fit, plan_fit
from mirage_lsd.models.builtin import network
from mirage_lsd.models.builtin.cache import KVCache
from mirage_lsd.models.builtin.compiled import BackgroundCompiler, dummy_inputs
from mirage_lsd.models.builtin.config import ConfigError, ModelConfig
from mirage_lsd.models.builtin.cuda_graph import (
    GRAPHS_ENV,
    GraphedNet,
    signature,
    tensors,
    with_tensors,
)
from mirage_lsd.models.builtin.flow import FlowEstimator, flow_gray, flow_to_tensor, warp
from mirage_lsd.models.builtin.model import (
    WORK_PIXELS,
    BuiltinModel,
    WeightsError,
    catalog_bank,
    edge_map_u8,
    load_weights,
    save_weights,
    upsample_to_frame,
)
from mirage_lsd.models.builtin.network import (
    LocalLook,
    LSDNet,
    PaletteSnap,
    Pointwise,
    PromptGrade,
    edge_map,
    frame_coordinates,
    guided_upsample,
    trilinear_gather,
)
from mirage_lsd.models.builtin.on_device import shrink_on_device
from mirage_lsd.models.builtin.sampler import (
    Denoised,
    add_noise,
    sample,
    shortcut_target,
    timesteps,
)
from mirage_lsd.models.registry import LoadOptions, load_model
from mirage_lsd.sources import open_source
from mirage_lsd.training.balance import LookBalance
from mirage_lsd.training.config import TrainConfig, load_train_config
from mirage_lsd.training.data import CROP_ALIGN, DataConfig, Source, load_sources, make_sequence
from mirage_lsd.training.ema import ema_model
from mirage_lsd.training.train import train

ROOT = Path(__file__).resolve().parents[1]
TINY_YAML = ROOT / "configs" / "tiny.yaml"
SIZE = 64  # frame side: a multiple of the tiny model's size_multiple


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tiny models run faster on one thread (engines too: they leave torch's count as it
    is under OMP_NUM_THREADS); the next module gets the count back."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_cfg() -> ModelConfig:
    return load_train_config(TINY_YAML).model


@pytest.fixture(scope="module")
def model(tiny_cfg: ModelConfig) -> BuiltinModel:
    """A tiny model with every weight random (no zero-initialized branch), fixed seed."""
    torch.manual_seed(0)
    net = LSDNet(tiny_cfg)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.3)
    return BuiltinModel(net, catalog_bank())


def frames(count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(count)]


def stream(model: BuiltinModel, inputs: list[np.ndarray], steps: int = 1) -> list[np.ndarray]:
    cond = model.look_prompt("thermal")
    state = model.init_state(SIZE, SIZE)
    outputs = []
    for image in inputs:
        out, state = model.step(image, cond, state, steps)
        outputs.append(out)
    return outputs


# ---------------------------------------------------------------- causality and state


def test_changing_a_future_frame_never_changes_an_earlier_output(model: BuiltinModel) -> None:
    a = frames(5, seed=1)
    b = a[:3] + frames(2, seed=2)  # frames 3 and 4 differ
    out_a, out_b = stream(model, a), stream(model, b)
    for t in range(3):
        np.testing.assert_array_equal(out_a[t], out_b[t])
    assert not np.array_equal(out_a[3], out_b[3])


def test_history_reaches_later_frames(model: BuiltinModel) -> None:
    """Past frames matter (through the cache and the warped previous output)."""
    a = frames(3, seed=1)
    b = frames(1, seed=3) + a[1:]  # only frame 0 differs
    assert not np.array_equal(stream(model, a)[2], stream(model, b)[2])


def test_a_non_temporal_model_ignores_its_history(tiny_cfg: ModelConfig) -> None:
    """The regression baseline (`temporal: false`): each output depends on its own frame only."""
    torch.manual_seed(0)
    net = LSDNet(dataclasses.replace(tiny_cfg, temporal=False))
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.3)
    model = BuiltinModel(net, catalog_bank())
    a, b = frames(3, seed=3), frames(3, seed=4)
    alone = stream(model, [a[2]])[0]
    after_a, after_b = stream(model, a)[2], stream(model, [*b[:2], a[2]])[2]
    assert np.array_equal(alone, after_a) and np.array_equal(alone, after_b)


def test_streams_on_several_threads_share_one_model(model: BuiltinModel) -> None:
    """Studio sessions share one model on their own threads: no cross-talk, no crash."""
    inputs = [frames(8, seed=20 + i) for i in range(4)]
    alone = [stream(model, frames_i) for frames_i in inputs]
    together: list[list[np.ndarray] | None] = [None] * 4

    def run(i: int) -> None:
        together[i] = stream(model, inputs[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Cross-talk (another stream's frames, cache or history) would change most pixels; a
    # float kernel may round a last bit differently for tensors placed elsewhere in
    # memory, which flips at most a pixel's level here and there.
    for a, b in zip(alone, together, strict=True):
        assert b is not None
        for x, y in zip(a, b, strict=True):
            assert np.abs(x.astype(np.int16) - y).max() <= 1 and np.mean(x != y) < 1e-3


def test_state_stays_bounded_over_many_frames(model: BuiltinModel) -> None:
    cond = model.encode_prompt(None)
    state = model.init_state(SIZE, SIZE)
    sizes = []
    for image in frames(3, seed=4) * 10:
        _, state = model.step(image, cond, state, 1)
        sizes.append(state.nbytes)
    assert len(state.cache) == model.cfg.cache_frames
    assert state.frame_index == 30
    assert len(set(sizes[model.cfg.cache_frames :])) == 1  # constant once the cache is full


def test_state_is_not_mutated(model: BuiltinModel) -> None:
    """A state can be replayed: step returns a new one and leaves the old one as it was."""
    image = frames(1, seed=5)[0]
    cond = model.look_prompt("winter")
    state = model.init_state(SIZE, SIZE)
    out1, _ = model.step(image, cond, state, 1)
    out2, _ = model.step(image, cond, state, 1)
    np.testing.assert_array_equal(out1, out2)


# ---------------------------------------------------------------- sampler


@pytest.mark.parametrize("steps", [1, 2, 3, 4])
def test_model_runs_1_to_4_steps(
    model: BuiltinModel, steps: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[float] = []
    forward = model.net.forward

    def counted(x, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(float(args[4][0]))  # the noise level t of each denoiser call
        return forward(x, *args, **kwargs)

    monkeypatch.setattr(model.net, "forward", counted)
    outputs = stream(model, frames(2, seed=6), steps)
    assert all(o.shape == (SIZE, SIZE, 3) and o.dtype == np.uint8 for o in outputs)
    # `steps` denoiser calls a frame, from pure noise (t = 1) down the n-step grid
    assert calls == pytest.approx([1.0 - k / steps for k in range(steps)] * 2)


def test_model_rejects_more_steps_than_it_was_trained_for(model: BuiltinModel) -> None:
    with pytest.raises(UserError, match="steps"):
        stream(model, frames(1, seed=6), model.cfg.max_steps + 1)


# ---------------------------------------------------------------- work resolution


@pytest.mark.parametrize(
    ("height", "width", "expected"),
    [
        (64, 64, 4), (512, 512, 4), (480, 640, 4), (720, 1280, 5), (1088, 1920, 8),
        (912, 1600, 7), (2160, 4096, 15),  # no downscale in budget divides: padded inside
        (4320, 7680, 30),  # 8K: 30 divides it
    ],
)  # fmt: skip
def test_automatic_downscale_keeps_the_denoised_image_small(
    model: BuiltinModel, height: int, width: int, expected: int
) -> None:
    ds = model.downscale_for(height, width)
    assert ds == expected
    state = model.init_state(height, width)
    h, w = state.noise.shape[-2:]
    assert h * w <= WORK_PIXELS
    ph, pw = state.padded or (height, width)
    assert (ph % (4 * ds), pw % (4 * ds)) == (0, 0)  # patch 2, one 2x down level
    assert (ph, pw) == (h * ds, w * ds) and 0 <= ph - height < 4 * ds > pw - width >= 0
    assert (state.padded is None) == (expected not in (7, 15))


def test_a_frame_padded_inside_the_model_comes_out_at_its_own_size(model: BuiltinModel) -> None:
    cond = model.look_prompt("thermal")
    state = model.init_state(912, 1600)
    assert state.padded == (924, 1624)
    rng = np.random.default_rng(4)
    for _ in range(2):  # the history and the KV cache at the padded size too
        image = rng.integers(0, 256, (912, 1600, 3), dtype=np.uint8)
        out, state = model.step(image, cond, state, 1)
        assert out.shape == (912, 1600, 3) and out.flags.c_contiguous


def test_a_chosen_downscale_sets_the_denoised_size(tiny_cfg: ModelConfig) -> None:
    torch.manual_seed(0)
    model = BuiltinModel(LSDNet(tiny_cfg), catalog_bank(), downscale=2)
    state = model.init_state(SIZE, SIZE)
    assert state.noise.shape[-2:] == (SIZE // 2, SIZE // 2)
    cond = model.look_prompt("thermal")
    for image in frames(3, seed=8):  # the history and KV cache at this size too
        out, state = model.step(image, cond, state, 1)
        assert out.shape == (SIZE, SIZE, 3)
    assert state.prev_output is not None and state.prev_output.shape[-2:] == (SIZE // 2, SIZE // 2)
    with pytest.raises(UserError, match="multiples of 24"):
        BuiltinModel(LSDNet(tiny_cfg), catalog_bank(), downscale=6).init_state(SIZE, SIZE)
    with pytest.raises(UserError, match="downscale"):
        BuiltinModel(LSDNet(tiny_cfg), catalog_bank(), downscale=0)


@pytest.mark.parametrize("downscale", [3, 5, 6])
def test_the_engine_pads_frames_to_what_a_chosen_downscale_needs(
    tiny_cfg: ModelConfig, downscale: int
) -> None:
    model = BuiltinModel(LSDNet(tiny_cfg), catalog_bank(), downscale=downscale)
    assert model.size_multiple % (downscale * tiny_cfg.image_multiple) == 0
    assert model.size_multiple % tiny_cfg.size_multiple == 0
    engine = StreamEngine(model, device="cpu", resolution=(72, 100), prompt="thermal")
    for image in frames(2, seed=3):
        out = engine.process(image)
        assert out.shape == (72, 100, 3) and out.dtype == np.uint8


def test_the_engine_runs_the_builtin_model_on_one_core_fewer(
    tiny_cfg: ModelConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a CPU the built-in model leaves a core to decoding and encoding, set on the
    thread that runs it; `threads` and OMP_NUM_THREADS take precedence."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    model = BuiltinModel(LSDNet(tiny_cfg), catalog_bank(), device="cpu")
    assert [model.stream_threads(n) for n in (1, 2, 8)] == [1, 1, 7]
    monkeypatch.setattr("mirage_lsd.engine.stream_engine.usable_cores", lambda: 3)
    torch.set_num_threads(3)
    engine = StreamEngine(model, device="cpu", resolution=(SIZE, SIZE))
    assert engine.threads == 2
    seen: dict[str, int] = {}

    def run() -> None:
        engine.process(frames(1, seed=1)[0])
        seen["worker"] = torch.get_num_threads()

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    assert seen["worker"] == 2  # the thread that ran the model ...
    assert torch.get_num_threads() == 3  # ... not this one, which has not yet
    engine.process(frames(1, seed=2)[0])
    assert torch.get_num_threads() == 2
    chosen = StreamEngine(model, device="cpu", resolution=(SIZE, SIZE), threads=3)
    chosen.process(frames(1, seed=3)[0])
    assert chosen.threads == 3 and torch.get_num_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    torch.set_num_threads(3)
    left = StreamEngine(model, device="cpu", resolution=(SIZE, SIZE))
    left.process(frames(1, seed=4)[0])
    assert left.threads is None and torch.get_num_threads() == 3
    for bad in (0, 2.5, True, "2", 1025):
        with pytest.raises(UserError, match="threads must be a whole number from 1 to 1024"):
            StreamEngine(model, device="cpu", threads=bad)  # type: ignore[arg-type]
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(model, "stream_threads", lambda cores: 0)  # a model's own bad choice
    with pytest.raises(UserError, match=r"stream_threads\(\) must be a whole number"):
        StreamEngine(model, device="cpu")


def test_the_background_compile_runs_on_the_requesting_threads_count(
    tiny_cfg: ModelConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inductor builds the thread count into its kernels: the compile thread takes the
    count of the stream that asked, not the last one set elsewhere in the process."""
    seen: list[int] = []

    def recording_compile(net: LSDNet, **kwargs: object) -> LSDNet:
        seen.append(torch.get_num_threads())
        return net

    monkeypatch.setattr(torch, "compile", recording_compile)
    compiler = BackgroundCompiler(LSDNet(tiny_cfg).eval(), contextlib.nullcontext)
    elsewhere = threading.Thread(target=torch.set_num_threads, args=(3,))
    elsewhere.start()  # another stream's thread: the default for new threads is now 3
    elsewhere.join()
    assert torch.get_num_threads() == 1  # this thread's own count (the fixture's)
    compiler.request((16, 16))
    compiler.wait(timeout=60)
    assert seen == [1] and compiler._ready.keys() == {(16, 16)}


def test_fp16_is_for_cuda_only(tiny_cfg: ModelConfig) -> None:
    model = BuiltinModel(LSDNet(tiny_cfg), catalog_bank(), device="cpu", fp16=True)
    assert not model.fp16 and model.info.dtype in ("float32", "bfloat16")


@pytest.mark.gpu  # `pytest -m gpu` on a machine with CUDA
def test_cuda_fp16_stream_is_close_to_float32(media: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    half = BuiltinModel.from_file(device="cuda", compile=False, fp16=True)
    full = BuiltinModel.from_file(device="cuda", compile=False)
    assert half.info.dtype == "float16" and full.info.dtype == "float32"
    from mirage_lsd.evaluation.metrics import psnr
    from mirage_lsd.sources import open_source

    source = open_source(media / "please.mkv")
    images = [
        cv2.resize(source.recv().image, (512, 512), interpolation=cv2.INTER_AREA) for _ in range(8)
    ]
    source.close()
    outs = []
    for model in (half, full):
        state, cond, out = model.init_state(512, 512), model.look_prompt("watercolor"), []
        for image in images:
            o, state = model.step(image, cond, state, 1)
            out.append(o)
        outs.append(out)
    assert all(o.shape == (512, 512, 3) and o.dtype == np.uint8 for o in outs[0])
    assert np.mean([psnr(a, b) for a, b in zip(*outs, strict=True)]) > 35.0


def _first_frames(path: Path, count: int, size: int = 512) -> list[np.ndarray]:
    source = open_source(path)
    images = [cv2.resize(source.recv().image, (size, size)) for _ in range(count)]
    source.close()
    return images


@pytest.mark.gpu  # `pytest -m gpu` on a machine with CUDA
def test_cuda_graph_streams_interleaved_match_the_compiled_network_alone(
    media: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two streams taking turns on one graphed network get what each gets alone from the
    network compiled without a graph: every output the graph writes is copied out before
    the next replay (a stream's KV cache holds outputs of earlier frames)."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    clips = {"watercolor": _first_frames(media / "please.mkv", 10),
             "thermal": _first_frames(media / "walk.mkv", 10)}  # fmt: skip

    def model(graphs: str) -> BuiltinModel:
        monkeypatch.setenv(GRAPHS_ENV, graphs)
        built = BuiltinModel.from_file(device="cuda", compile=True, fp16=True)
        built.init_state(512, 512)  # asks for the compile
        built.wait_ready()
        (net,) = built._compiler._ready.values()
        assert isinstance(net, GraphedNet) == (graphs == "1")
        return built

    graphed, plain = model("1"), model("0")
    steps = {"watercolor": 1, "thermal": 2}  # 2: the graph replays twice in a frame
    states = {look: graphed.init_state(512, 512) for look in clips}
    together: dict[str, list[np.ndarray]] = {look: [] for look in clips}
    for i in range(10):
        for look, images in clips.items():
            cond = graphed.look_prompt(look)
            out, states[look] = graphed.step(images[i], cond, states[look], steps[look])
            together[look].append(out)
    for look, images in clips.items():
        state = plain.init_state(512, 512)
        for i, image in enumerate(images):
            out, state = plain.step(image, plain.look_prompt(look), state, steps[look])
            assert psnr(out, together[look][i]) > 45.0, (look, i)


def test_cuda_graph_arguments_round_trip(tiny_cfg: ModelConfig) -> None:
    """The graph's static buffers stand in for every tensor of the network's arguments,
    the KV cache's included, and a call with other shapes does not replay it."""
    net = LSDNet(tiny_cfg).eval()
    args = dummy_inputs(net, (16, 16))
    flat = tensors(args)
    cache = args[8]
    assert isinstance(cache, KVCache) and len(cache) == 2
    positional = sum(isinstance(a, torch.Tensor) for a in args)  # the grade maps' too
    assert len(flat) == positional + 2 * len(cache.frames) * len(cache.frames[0])
    copies = [t.clone() for t in flat]
    rebuilt = with_tensors(args, copies)
    assert all(a is b for a, b in zip(tensors(rebuilt), copies, strict=True))
    assert signature(rebuilt) == signature(args)
    torch.testing.assert_close(net(*rebuilt).x0, net(*args).x0)
    assert signature(dummy_inputs(net, (16, 32))) != signature(args)


@pytest.mark.parametrize("steps", [1, 2, 3, 4])
def test_sampler_with_an_exact_denoiser_returns_x0(steps: int) -> None:
    """Closed-form stand-in: a denoiser that knows x0 lands exactly on it in any steps."""
    x0 = torch.linspace(-1, 1, 48).view(1, 3, 4, 4)
    seen = []

    def denoiser(x: torch.Tensor, t: torch.Tensor, d: torch.Tensor) -> Denoised:
        seen.append((float(t[0]), float(d[0])))
        return Denoised(x0)

    out = sample(denoiser, torch.randn(1, 3, 4, 4), steps)
    torch.testing.assert_close(out.x0, x0)
    assert [t for t, _ in seen] == pytest.approx(timesteps(steps)[:-1])
    assert all(d == pytest.approx(1 / steps) for _, d in seen)


def test_shortcut_target_of_a_straight_path_is_its_x0() -> None:
    """On a straight noise path the model's own two half steps agree with one full step."""
    x0, eps = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    t, d = torch.tensor([1.0, 0.5]), torch.tensor([0.5, 0.125])
    exact = lambda x, t_, d_: Denoised(x0)  # noqa: E731
    torch.testing.assert_close(shortcut_target(exact, add_noise(x0, eps, t), t, d), x0)


def test_flow_and_warp_follow_a_known_shift() -> None:
    """Content moving right by 2 pixels: flow is about -2 and warping undoes the motion."""
    rng = np.random.default_rng(0)
    texture = cv2_blur(rng.integers(0, 256, (48, 52), dtype=np.uint8))
    previous, current = texture[:, 2:50].copy(), texture[:, 0:48].copy()
    flow = FlowEstimator()(current, previous)
    assert np.median(flow[..., 0]) == pytest.approx(-2.0, abs=0.5)
    assert np.median(np.abs(flow[..., 1])) < 0.5
    prev_t = torch.from_numpy(previous).float()[None, None]
    warped, mask = warp(prev_t, flow_to_tensor(flow))
    inner = (slice(8, -8), slice(8, -8))
    err = np.abs(warped[0, 0].numpy()[inner] - current[inner].astype(np.float32))
    assert err.mean() < 6.0 and mask[0, 0].numpy()[inner].min() == 1.0


@pytest.mark.parametrize("guides", [1, 2])  # luma detail [and the edge map]
@pytest.mark.parametrize("low", [(12, 16), (45, 80)])  # one band, and several bands
def test_fast_upsampler_matches_the_trained_one(low: tuple[int, int], guides: int) -> None:
    """The banded OpenCV run-time path and the differentiable training path agree.

    OpenCV rounds the luma to whole levels, so single pixels may differ by a few levels
    (the rounding times the gain); on average they agree to a small fraction of a level.
    """
    rng = np.random.default_rng(0)
    h, w = low
    frame = cv2.GaussianBlur(rng.integers(0, 256, (4 * h, 4 * w, 3), dtype=np.uint8), (0, 0), 1)
    small = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
    x0, gain = torch.rand(1, 3, h, w) * 2 - 1, torch.randn(1, 3 * guides, h, w) * 0.5 + 1
    tensor = lambda x: torch.from_numpy(x).permute(2, 0, 1)[None].float() / 127.5 - 1  # noqa: E731
    reference = guided_upsample(x0, gain, tensor(frame), tensor(small))
    reference = ((reference[0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).numpy()
    fast = upsample_to_frame(x0, gain, frame, small)
    diff = np.abs(fast.astype(np.float32) - reference)
    assert diff.max() <= 1.0 + 1.5 * gain.abs().max().item() and diff.mean() < 0.5


def test_the_frame_on_the_device_agrees_with_the_opencv_path(
    media: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The GPU run-time path (the shrink, the flow's gray copy and the upsampler; forced
    here on the CPU) gives the OpenCV path's frames, over a stream with history."""
    from mirage_lsd.models.builtin import model as builtin
    from mirage_lsd.sources import open_source

    shrinks: list[int] = []
    monkeypatch.setattr(
        builtin, "shrink_on_device", lambda *a: shrinks.append(1) or shrink_on_device(*a)
    )

    source = open_source(media / "please.mkv")
    images = [cv2.resize(source.recv().image, (256, 256), interpolation=cv2.INTER_AREA)
              for _ in range(4)]  # fmt: skip
    source.close()
    outs = []
    for on_device in (False, True):
        model = BuiltinModel.from_file(compile=False)
        model.frame_on_device = on_device
        state, cond = model.init_state(256, 256), model.look_prompt("neon_edges")  # both guides
        out = []
        for image in images:
            frame, state = model.step(image, cond, state, 1)
            out.append(frame)
        outs.append(out)
    assert len(shrinks) == len(images)  # the device path ran, for the second model only
    for opencv, device in zip(*outs, strict=True):
        assert device.shape == (256, 256, 3) and device.dtype == np.uint8
        diff = np.abs(opencv.astype(np.float32) - device.astype(np.float32))
        assert diff.mean() < 0.5 and diff.max() <= 16


def test_the_detail_input_is_the_edges_inside_each_cell_on_both_paths(
    tiny_cfg: ModelConfig,
) -> None:
    """`model.detail_input`: the stem also reads how much edge each low-res cell holds at
    full resolution (lines thinner than a cell vanish from the shrunk image); the OpenCV
    and the device paths feed it alike."""
    from mirage_lsd.models.builtin.model import edge_detail_u8
    from mirage_lsd.models.builtin.network import edge_detail, luma

    frame = np.full((64, 64, 3), 120, np.uint8)
    frame[:, 9] = 255  # a one-pixel line: the shrunk image keeps a faint trace of it only
    detail = edge_detail_u8(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), (16, 16))[0, 0]
    assert detail.shape == (16, 16) and -1.0 <= float(detail.min()) < float(detail.max()) < 1.0
    assert float(detail[:, 2].min()) > float(detail[:, 8].max()) + 0.3  # cells 2 hold the line
    frame_t = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    in_torch = edge_detail(luma(frame_t), (16, 16))[0, 0]  # the device path's, and training's
    torch.testing.assert_close(in_torch, detail, atol=0.01, rtol=0)
    odd = cv2.resize(frames(1, seed=5)[0], (80, 80))  # downscale 5 (720p's): cells of 2.5
    odd_t = torch.from_numpy(odd).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    torch.testing.assert_close(
        edge_detail(luma(odd_t), (16, 16)),
        edge_detail_u8(cv2.cvtColor(odd, cv2.COLOR_RGB2GRAY), (16, 16)),
        atol=0.01,
        rtol=0,
    )
    torch.manual_seed(0)
    net = LSDNet(dataclasses.replace(tiny_cfg, detail_input=True))
    with torch.no_grad():
        for param in net.parameters():
            param.normal_(0.0, 0.3)
    images = frames(3, seed=11)
    outs = []
    for on_device in (False, True):
        model = BuiltinModel(net, catalog_bank(), compile=False)
        model.frame_on_device = on_device
        state, cond = model.init_state(SIZE, SIZE), model.look_prompt("blueprint")
        outs.append([])
        for image in images:
            out, state = model.step(image, cond, state, 1)
            outs[-1].append(out.astype(np.float32))
    for opencv, device in zip(*outs, strict=True):
        assert np.abs(opencv - device).mean() < 1.0
    plain = BuiltinModel(net, catalog_bank(), compile=False)  # the detail changes the output
    no_lines = plain.step(images[0], cond, plain.init_state(SIZE, SIZE), 1)[0]
    lined = images[0].copy()
    lined[:, ::4] = 255  # a line in every cell, on the same shrunk colours nearly
    assert np.abs(plain.step(lined, cond, plain.init_state(SIZE, SIZE), 1)[0] - no_lines).any()


def test_the_shrink_on_the_device_is_opencvs_area_resize_and_gray() -> None:
    frame = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    full, image, gray = shrink_on_device(frame, 4, 2, torch.device("cpu"))
    assert image.is_contiguous()  # as the CPU path's: a compiled network guards on strides
    torch.testing.assert_close(full[0].permute(1, 2, 0), torch.from_numpy(frame).float())
    small = cv2.resize(frame, (24, 16), interpolation=cv2.INTER_AREA)
    shrunk = ((image[0].permute(1, 2, 0) + 1.0) * 127.5).round().numpy()
    assert np.abs(shrunk - small).max() <= 1.0  # rounding of ties
    expected = flow_gray(small, 8, 12)
    assert gray.shape == (8, 12) and gray.dtype == np.uint8
    assert np.abs(gray.astype(np.int16) - expected).max() <= 1
    with pytest.raises(ValueError, match="does not divide by 8"):
        shrink_on_device(frame[:60], 4, 2, torch.device("cpu"))


def test_the_frame_on_the_device_takes_any_size_the_state_pads() -> None:
    """A frame the downscale does not divide is padded before the device path sees it."""
    model = BuiltinModel.from_file(compile=False)
    model.frame_on_device = True  # the GPU path, forced on the CPU
    state, cond = model.init_state(70, 100), model.look_prompt("sepia_vintage")
    assert state.padded is not None
    image = np.random.default_rng(0).integers(0, 256, (70, 100, 3), dtype=np.uint8)
    for _ in range(2):
        out, state = model.step(image, cond, state, 1)
    assert out.shape == (70, 100, 3) and out.dtype == np.uint8


def cv2_blur(image: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), 1.5)


# ---------------------------------------------------------------- prompts


def test_free_text_lands_on_the_nearest_look(model: BuiltinModel) -> None:
    cond = model.encode_prompt("a drawing made with a graphite pencil")
    assert cond.match.best == "pencil_sketch"
    assert 0.4 < cond.match.similarity <= 1.0
    assert sum(cond.match.weights.values()) == pytest.approx(1.0)
    none = model.encode_prompt(None)
    assert none.match is None and float(none.embedding.abs().sum()) == 0.0
    mixed = model.mix_prompts(model.look_prompt("winter"), model.look_prompt("sunset"), 0.25)
    assert mixed.match.weights == pytest.approx({"winter": 0.75, "sunset": 0.25})


# ---------------------------------------------------------------- training


def test_the_full_resolution_losses_add_up(tmp_path: Path) -> None:
    """The first step's loss: the low-res MSE plus the full-res error as configured, so
    l1+mse is exactly l1's plus mse's full-res terms (same weights, batch and noise)."""
    first = {}
    for loss, weight in (("l1", 1), ("mse", 1), ("l1+mse", 1), ("l1", 0)):
        config = tmp_path / f"{loss}{weight}.yaml"
        config.write_text(
            TINY_YAML.read_text()
            .replace("steps: 40", "steps: 1")
            .replace("eval_every: 40", "eval_every: 1")
            + f"\nobjective:\n  full_res_loss: {loss}\n  full_res_weight: {weight}\n"
            "  look_balance: false\n"
        )
        result = train(config, out_dir=tmp_path / config.stem, show_progress=False)
        first[loss, weight] = result.losses[0]
    low_res = first["l1", 0]
    both = first["l1", 1] + first["mse", 1] - low_res
    assert first["l1+mse", 1] == pytest.approx(both, rel=1e-4)
    assert first["l1+mse", 1] > first["l1", 1] > low_res


def test_short_training_run_lowers_the_loss_and_resumes_exactly(tmp_path: Path) -> None:
    cfg = load_train_config(TINY_YAML)
    full = train(TINY_YAML, out_dir=tmp_path / "full", show_progress=False)
    head = full.losses[:10]
    tail = full.losses[-10:]
    assert np.mean(tail) < 0.8 * np.mean(head)
    assert full.step == cfg.steps and set(full.metrics) >= {"psnr_1step", "psnr_input"}
    # stop half way, resume: the same losses as the uninterrupted run
    half = cfg.steps // 2
    train(TINY_YAML, out_dir=tmp_path / "split", show_progress=False, stop_at=half)
    resumed = train(TINY_YAML, out_dir=tmp_path / "split", show_progress=False, resume=True)
    assert resumed.losses == pytest.approx(full.losses, rel=1e-5)
    # the exported weights load and run, also by path through the engine
    model = BuiltinModel.from_file(full.weights)
    out = stream(model, frames(2, seed=7))
    assert out[0].shape == (SIZE, SIZE, 3)
    engine = StreamEngine(str(full.weights), device="cpu", prompt="thermal camera")
    assert engine.model.info.name == str(full.weights)
    assert engine.process(frames(1, seed=8)[0]).shape == (SIZE, SIZE, 3)
    # fine-tuning from those weights (init_weights), with run-time own history, starts
    # where the run ended, not from scratch
    tune = yaml.safe_load(TINY_YAML.read_text())
    tune |= {"steps": 4, "init_weights": str(full.weights)}
    tune["objective"] = {**tune.get("objective", {}), "p_own_history": 1.0}
    tune["objective"]["own_history_run_time"] = True
    (tmp_path / "tune.yaml").write_text(yaml.safe_dump(tune))
    tuned = train(tmp_path / "tune.yaml", out_dir=tmp_path / "tune", show_progress=False)
    assert np.mean(tuned.losses) < np.mean(head) and np.isfinite(tuned.losses).all()
    tune["model"] = {**tune["model"], "width": tune["model"]["width"] * 2}
    (tmp_path / "wide.yaml").write_text(yaml.safe_dump(tune))
    with pytest.raises(UserError, match=r"init_weights .*different model config"):
        train(tmp_path / "wide.yaml", out_dir=tmp_path / "wide", show_progress=False)


def test_look_balance_weighs_each_look_by_its_running_loss(tmp_path: Path) -> None:
    """`objective.look_balance`: a sample's weight is inverse to its look's running mean
    loss (a blend's: the blend of its looks'); the running means survive a resume."""
    balance = LookBalance(3)  # looks a, b and "no look"
    mix = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    errors = torch.tensor([0.4, 0.1, 0.25, 0.05])
    weights = balance.weights(errors, mix)
    running = balance.state_dict()  # a: (0.4 + 0.5 * 0.25) / 1.5 = 0.35, b: 0.15, none: 0.05
    torch.testing.assert_close(running, torch.tensor([0.35, 0.15, 0.05]))
    torch.testing.assert_close(weights, running.mean() / torch.tensor([0.35, 0.15, 0.25, 0.05]))
    again = balance.weights(torch.tensor([0.2]), mix[:1])  # only look a moves, slowly
    assert balance.state_dict()[0] == pytest.approx(0.98 * 0.35 + 0.02 * 0.2)
    assert balance.state_dict()[1:].tolist() == pytest.approx([0.15, 0.05])
    assert again.shape == (1,)
    soft = LookBalance(3, power=0.5)  # a softer balance: the square root of those weights
    torch.testing.assert_close(soft.weights(errors, mix), weights.sqrt())
    with pytest.raises(UserError, match="look_balance_power"):
        LookBalance(3, power=0.0)
    config = yaml.safe_load(TINY_YAML.read_text()) | {"steps": 6, "eval_every": 100}
    config["objective"] = {**config.get("objective", {}), "look_balance": True}
    (tmp_path / "balance.yaml").write_text(yaml.safe_dump(config))
    full = train(tmp_path / "balance.yaml", out_dir=tmp_path / "full", show_progress=False)
    train(tmp_path / "balance.yaml", out_dir=tmp_path / "split", show_progress=False, stop_at=3)
    resumed = train(
        tmp_path / "balance.yaml", out_dir=tmp_path / "split", show_progress=False, resume=True
    )
    assert np.isfinite(full.losses).all()
    assert resumed.losses == pytest.approx(full.losses, rel=1e-5)


def test_ema_averages_the_weights_with_a_decay_that_warms_up() -> None:
    """The first update copies the weights; the n-th (n >= 1) moves the average toward
    them by 1 - min(decay, (1 + n) / (10 + n))."""
    net = torch.nn.Linear(2, 1)
    average = ema_model(net, 0.95)
    with torch.no_grad():  # after the copy: the first update must take these
        net.weight.fill_(1.0)
    average.update_parameters(net)
    torch.testing.assert_close(average.module.weight, torch.ones(1, 2))
    with torch.no_grad():
        net.weight.fill_(3.0)
    average.update_parameters(net)  # n = 1: rate 2 / 11
    torch.testing.assert_close(average.module.weight, torch.full((1, 2), 1 + 2 * 9 / 11))
    for _ in range(500):  # late on the rate is the decay itself: the average converges
        average.update_parameters(net)
    torch.testing.assert_close(average.module.weight, torch.full((1, 2), 3.0))
    norm = torch.nn.BatchNorm1d(2)  # an integer buffer (num_batches_tracked) is copied
    averaged_norm = ema_model(norm, 0.9)
    for _ in range(3):
        norm(torch.randn(4, 2))
        averaged_norm.update_parameters(norm)
    assert int(averaged_norm.module.num_batches_tracked) == 3


def test_a_run_with_ema_exports_the_average_and_resumes_it_exactly(tmp_path: Path) -> None:
    """`optim.ema`: the weight file is the average (not the last step's weights), the
    eval scores both, and a stopped and resumed run ends with the same average."""
    config = yaml.safe_load(TINY_YAML.read_text()) | {"steps": 6, "eval_every": 100}
    config["optim"] = {**config.get("optim", {}), "ema": 0.9}
    (tmp_path / "ema.yaml").write_text(yaml.safe_dump(config))
    full = train(tmp_path / "ema.yaml", out_dir=tmp_path / "full", show_progress=False)
    assert {"psnr_1step", "raw_psnr_1step"} <= set(full.metrics)
    state = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    exported = load_weights(full.weights)[0].state_dict()
    averaged = {k.removeprefix("module."): v for k, v in state["ema"].items()}
    assert all(torch.equal(exported[k], averaged[k]) for k in exported)
    assert any(not torch.equal(exported[k], state["net"][k]) for k in exported)
    train(tmp_path / "ema.yaml", out_dir=tmp_path / "split", show_progress=False, stop_at=3)
    resumed = train(
        tmp_path / "ema.yaml", out_dir=tmp_path / "split", show_progress=False, resume=True
    )
    again = load_weights(resumed.weights)[0].state_dict()
    assert all(torch.allclose(again[k], exported[k], rtol=1e-5, atol=1e-7) for k in exported)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config | {"optim": {"ema": 1.0}}))
    with pytest.raises(ConfigError, match=r"optim\.ema must be"):
        load_train_config(tmp_path / "bad.yaml")


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path) -> None:
    """The recipes and experiments in configs/ stay valid as the config fields change."""
    cfg = load_train_config(path)
    assert cfg.steps > 0 and cfg.out_dir
    if cfg.init_weights:  # fine-tunes start from a file that exists, made with their model
        assert (ROOT / cfg.init_weights).is_file()
        assert load_weights(ROOT / cfg.init_weights)[0].cfg == cfg.model


def test_the_bundled_recipe_is_the_default_config() -> None:
    """configs/builtin.yaml promises that its values are the defaults of every field."""
    assert load_train_config(ROOT / "configs" / "builtin.yaml") == TrainConfig()


def test_resume_reads_a_checkpoint_from_before_a_model_field_existed(tmp_path: Path) -> None:
    """A run checkpointed by an older version resumes when the new field's old value
    (`ADDED_FIELDS`) is the config's; a different value is still refused."""
    config = yaml.safe_load(TINY_YAML.read_text()) | {"steps": 4, "eval_every": 100}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    train(tmp_path / "run.yaml", out_dir=tmp_path, show_progress=False, stop_at=2)
    checkpoint = tmp_path / "checkpoint.pt"
    state = torch.load(checkpoint, weights_only=True)
    del state["config"]["model"]["grade_bands"]  # written before grade_bands existed
    torch.save(state, checkpoint)
    resumed = train(tmp_path / "run.yaml", out_dir=tmp_path, show_progress=False, resume=True)
    assert resumed.step == 4
    config["model"] = {**config["model"], "grade_bands": 2}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    state["step"] = 2
    torch.save(state, checkpoint)
    with pytest.raises(UserError, match=r"another model config \(model.grade_bands differ"):
        train(tmp_path / "run.yaml", out_dir=tmp_path, show_progress=False, resume=True)


@pytest.mark.parametrize(
    ("section", "name", "old", "other"),
    [("objective", "full_res_loss", "l1", "l1+mse"),
     ("objective", "own_history_run_time", False, True),  # its default changed since
     ("optim", "ema", 0.0, 0.9)],
)  # fmt: skip
def test_resume_reads_a_checkpoint_from_before_a_training_field_existed(
    tmp_path: Path, section: str, name: str, old: object, other: object
) -> None:
    """A checkpoint written before an option existed ran with the option's old value
    (`TRAIN_ADDED_FIELDS`, which may not be today's default): resuming with that value
    continues the run, with another it is refused, as a changed option is."""
    config = yaml.safe_load(TINY_YAML.read_text()) | {"steps": 4, "eval_every": 100}
    config[section] = {**config.get(section, {}), name: old}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    train(tmp_path / "run.yaml", out_dir=tmp_path, show_progress=False, stop_at=2)
    checkpoint = tmp_path / "checkpoint.pt"
    state = torch.load(checkpoint, weights_only=True)
    del state["config"][section][name]  # written before the option existed
    torch.save(state, checkpoint)
    config[section] = {**config[section], name: other}
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(UserError, match=rf"other values of {section}\.{name}:"):
        train(tmp_path / "other.yaml", out_dir=tmp_path, show_progress=False, resume=True)
    resumed = train(tmp_path / "run.yaml", out_dir=tmp_path, show_progress=False, resume=True)
    assert resumed.step == 4


@pytest.mark.parametrize("cache_run_time", [False, True])
def test_the_cache_of_the_next_frame_is_the_training_pass_or_the_run_time_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_run_time: bool
) -> None:
    """`objective.cache_run_time`: the next frame attends to the keys of the one-step pass
    from noise made for its history (no gradient), as at run time, not to this step's."""
    from mirage_lsd.models.builtin.cache import KVCache

    config = yaml.safe_load(TINY_YAML.read_text()) | {"steps": 2, "eval_every": 100}
    config["objective"] = {**config.get("objective", {}), "own_history_run_time": True}
    config["objective"]["cache_run_time"] = cache_run_time
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    pushed, push = [], KVCache.push

    def recording(self: KVCache, frame: tuple) -> KVCache:  # type: ignore[type-arg]
        if torch.is_grad_enabled():  # training passes, not the no-grad run-time ones
            pushed.append(frame[0].k.requires_grad)
        return push(self, frame)

    monkeypatch.setattr(KVCache, "push", recording)
    result = train(tmp_path / "run.yaml", out_dir=tmp_path, show_progress=False)
    assert np.isfinite(result.losses).all() and pushed
    # a sequence's last frame has no next one to read the cache: its push is the same
    seq_len = config["data"]["seq_len"]
    assert pushed.count(False) == (len(pushed) // seq_len * (seq_len - 1) if cache_run_time else 0)


def test_self_consistency_samples_may_skip_the_full_resolution_target(tmp_path: Path) -> None:
    """`objective.shortcut_full_res: false`: with every sample a self-consistency one, the
    loss is the low-res term alone, as with no full-resolution weight at all."""
    losses = {}
    for name, extra in {
        "default": {},
        "skipped": {"shortcut_full_res": False},
        "unweighted": {"full_res_weight": 0.0},
    }.items():
        config = yaml.safe_load(TINY_YAML.read_text()) | {"steps": 2, "eval_every": 100}
        config["objective"] = {
            **config.get("objective", {}), "shortcut_fraction": 1.0, "direct_fraction": 0.0,
            **extra,
        }  # fmt: skip
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(config))
        run = train(tmp_path / f"{name}.yaml", out_dir=tmp_path / name, show_progress=False)
        losses[name] = run.losses
    assert losses["skipped"] == losses["unweighted"]
    assert losses["default"][0] > losses["skipped"][0]


def test_a_run_resumed_on_another_kind_of_device_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = yaml.safe_load(TINY_YAML.read_text()) | {"steps": 3, "eval_every": 100}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    train(tmp_path / "run.yaml", out_dir=tmp_path, show_progress=False, stop_at=2)
    checkpoint = tmp_path / "checkpoint.pt"
    state = torch.load(checkpoint, weights_only=True)
    assert state["device"] == "cpu"
    state["device"] = "cuda"  # as a run started on a GPU and resumed on a laptop
    torch.save(state, checkpoint)
    with caplog.at_level(logging.WARNING, logger="mirage_lsd.training.train"):
        resumed = train(tmp_path / "run.yaml", out_dir=tmp_path, show_progress=False, resume=True)
    assert resumed.step == 3
    assert "was trained on cuda and goes on on cpu" in caplog.text


def test_resume_without_a_checkpoint_says_so(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no checkpoint"):
        train(TINY_YAML, out_dir=tmp_path, show_progress=False, resume=True)


def test_a_run_is_never_overwritten_nor_resumed_into_another(tmp_path: Path) -> None:
    config = yaml.safe_load(TINY_YAML.read_text()) | {"steps": 4, "eval_every": 100}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    train(tmp_path / "run.yaml", out_dir=tmp_path, show_progress=False, stop_at=2)
    with pytest.raises(UserError, match=r"already holds a training run.*--resume"):
        train(tmp_path / "run.yaml", out_dir=tmp_path, show_progress=False)
    changed = config | {"optim": {**config.get("optim", {}), "lr": 0.1}, "steps": 6}
    (tmp_path / "changed.yaml").write_text(yaml.safe_dump(changed))
    with pytest.raises(UserError, match=r"other values of optim\.lr:"):
        train(tmp_path / "changed.yaml", out_dir=tmp_path, show_progress=False, resume=True)
    longer = config | {"steps": 6}  # more steps is a longer run of the same training
    (tmp_path / "longer.yaml").write_text(yaml.safe_dump(longer))
    assert (
        train(tmp_path / "longer.yaml", out_dir=tmp_path, show_progress=False, resume=True).step
        == 6
    )
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint" * 4)
    with pytest.raises(UserError, match="corrupted or not a training checkpoint"):
        train(tmp_path / "run.yaml", out_dir=tmp_path, show_progress=False, resume=True)


# ---------------------------------------------------------------- bad input


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model\.widht"):
        ModelConfig.from_dict({"widht": 16})
    with pytest.raises(ConfigError, match=r"model\.width.*int"):
        ModelConfig.from_dict({"width": "wide"})
    with pytest.raises(ConfigError, match=r"model\.kernel"):
        ModelConfig.from_dict({"kernel": 4})
    with pytest.raises(ConfigError, match=r"model\.experts"):
        ModelConfig.from_dict({"experts": -2})
    with pytest.raises(ConfigError, match=r"model\.experts must be 0 or >= 2, got 1"):
        ModelConfig.from_dict({"experts": 1})  # one weight set: the plain network
    with pytest.raises(ConfigError, match=r"model\.grade_knots"):
        ModelConfig.from_dict({"grade_knots": 1})
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: 10\ndata:\n  crop: large\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*data\.crop"):
        load_train_config(bad)
    bad.write_text("stpes: 10\n")
    with pytest.raises(ConfigError, match=r"stpes"):
        load_train_config(bad)
    bad.write_text("data:\n  eval_clips: please.mkv\n")
    with pytest.raises(ConfigError, match=r"data\.eval_clips"):
        load_train_config(bad)
    bad.write_text("objective:\n  full_res_loss: l2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*objective\.full_res_loss.*l1, mse, l1\+mse"):
        load_train_config(bad)
    bad.write_text("model:\n  experts: 8\n  width: 16\n  experts: 0\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*'experts' is given twice"):
        load_train_config(bad)
    for text, field in (
        ("steps: 0\n", "steps"),
        ("eval_every: 0\n", "eval_every"),
        ("data:\n  crop: 200\n", r"data\.crop must be a multiple of 16"),
        ("data:\n  view: 520\n", r"data\.view must be a multiple of 16"),
        ("data:\n  seq_len: 0\n", r"data\.seq_len"),
        ("data:\n  p_blend: 1.5\n", r"data\.p_blend"),
        ("model:\n  prompt_temperature: 0\n", r"model\.prompt_temperature"),
        ("model:\n  prompt_top_k: 0\n", r"model\.prompt_top_k"),
        ("model:\n  mid_blocks: -1\n", r"model\.mid_blocks"),
        ("- steps: 10\n", "must be a mapping"),
    ):
        bad.write_text(text)
        with pytest.raises(ConfigError, match=field):
            load_train_config(bad)
    bad.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ConfigError, match="not a text file"):
        load_train_config(bad)
    for text, field in (
        ("optim:\n  beta1: 1.0\n", r"optim\.beta1"),
        ("optim:\n  lr: -1e-3\n", r"optim\.lr"),
        ("optim:\n  min_lr: 0.5\n", r"optim\.min_lr"),
        ("optim:\n  grad_clip: 0\n", r"optim\.grad_clip"),
        ("objective:\n  history_blur: -1\n", r"objective\.history_blur"),
        ("objective:\n  p_own_history: 2\n", r"objective\.p_own_history"),
        ("objective:\n  look_balance_power: 0\n", r"objective\.look_balance_power.*\(0, 1\]"),
        ("model:\n  edge_guide: true\ndata:\n  view: 512\n", r"model\.edge_guide.*data\.view"),
        ("? [a, b]\n: 1\n", r"line 1, column 3\): a key must be a plain name"),
        ("1: x\nfoo: y\n", "unknown config field '1'"),
        ("optim:\n  lr: .inf\n", r"optim\.lr' must be a finite number"),  # YAML's infinity
        ("data:\n  source_scale: .nan\n", r"data\.source_scale' must be a finite number"),
        ("model:\n  prompt_dim: 256\n", r"model\.prompt_dim must be 384"),
    ):
        bad.write_text(text)
        with pytest.raises(ConfigError, match=field) as err:
            load_train_config(bad)
        assert "\n" not in str(err.value)


def test_config_numbers_and_merge_keys_read_as_yaml_1_2(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(
        "optim: &fast\n  lr: 5e-4\n  min_lr: 1E-5\n"
        "objective:\n  <<: {full_res_weight: 2, history_blur: .5}\n  history_misalign: 2\n"
        "  history_blur: 0.25\n"  # overrides the merged value
    )
    cfg = load_train_config(path)
    assert (cfg.optim.lr, cfg.optim.min_lr) == (5e-4, 1e-5)  # PyYAML alone reads '5e-4' as text
    assert (cfg.objective.full_res_weight, cfg.objective.history_blur) == (2.0, 0.25)
    assert cfg.objective.history_misalign == 2.0


def test_bad_weight_files_name_the_file(tmp_path: Path, tiny_cfg: ModelConfig) -> None:
    good = tmp_path / "good.safetensors"
    save_weights(good, LSDNet(tiny_cfg), catalog_bank())
    load_weights(good)
    missing = tmp_path / "missing.safetensors"
    with pytest.raises(WeightsError, match=r"missing\.safetensors.*not found"):
        load_weights(missing)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01not a weight file" * 10)
    with pytest.raises(WeightsError, match=r"garbage\.safetensors.*corrupted"):
        load_weights(garbage)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(WeightsError, match=r"truncated\.safetensors"):
        load_weights(truncated)
    other = dataclasses.replace(tiny_cfg, width=tiny_cfg.width * 2)
    mismatched = tmp_path / "mismatched.safetensors"
    save_weights(mismatched, LSDNet(other), catalog_bank())
    raw = mismatched.read_bytes()  # claim the old width, same header length
    wide, narrow = rb"width\": 16", rb"width\":  8"
    assert wide in raw and tiny_cfg.width == 8
    mismatched.write_bytes(raw.replace(wide, narrow))
    with pytest.raises(WeightsError, match=r"mismatched\.safetensors.*shape"):
        load_weights(mismatched)
    # another format version of our own file: the format error, also through --model
    raw = good.read_bytes()
    newer = tmp_path / "newer.safetensors"
    newer.write_bytes(raw.replace(b"mirage-lsd-v1/1", b"mirage-lsd-v1/9"))
    with pytest.raises(WeightsError, match=r"newer\.safetensors.*format 'mirage-lsd-v1/9'"):
        load_weights(newer)
    with pytest.raises(WeightsError, match=r"format 'mirage-lsd-v1/9'"):
        load_model(str(newer), LoadOptions(device="cpu"))
    # a damaged file given to --model is named as ours to fix, not handed to diffusers
    with pytest.raises(WeightsError, match=r"truncated\.safetensors is corrupted"):
        load_model(str(truncated), LoadOptions(device="cpu", downscale=4))


def test_frame_coordinates_span_the_frame_at_any_size() -> None:
    for h, w in ((4, 4), (9, 16), (18, 32)):
        yx = frame_coordinates(h, w, torch.zeros(1), None)[0]  # (2, h, w)
        assert yx.shape == (2, h, w)
        # cell centres: symmetric about the middle, half a cell in from -1 and 1
        torch.testing.assert_close(yx, -yx.flip(1, 2))
        assert yx[0, 0, 0] == pytest.approx(-1 + 1 / h) and yx[1, 0, -1] == pytest.approx(1 - 1 / w)


def test_frame_coordinates_of_a_crop_are_its_part_of_the_whole_frame() -> None:
    """A training crop (data.view) sees the coordinates the full frame has there."""
    whole = frame_coordinates(16, 16, torch.zeros(1), None)  # (1, 2, 16, 16)
    windows = torch.tensor([[0.0, 0.5, 0.5, 1.0], [0.25, 0.25, 0.75, 0.75]])
    crops = frame_coordinates(8, 8, torch.zeros(1), windows)  # (2, 2, 8, 8)
    torch.testing.assert_close(crops[0], whole[0, :, :8, 8:])
    torch.testing.assert_close(crops[1], whole[0, :, 4:12, 4:12])


def test_position_channels_round_trip_through_a_weight_file(
    tmp_path: Path, tiny_cfg: ModelConfig
) -> None:
    """`position: true` (configs/position.yaml): two more stem inputs, saved and streamed."""
    path = tmp_path / "position.safetensors"
    save_weights(path, LSDNet(dataclasses.replace(tiny_cfg, position=True)), catalog_bank())
    net, bank = load_weights(path)
    assert net.cfg.position is True
    assert net.stem.in_channels == LSDNet(tiny_cfg).stem.in_channels + 2
    outputs = stream(BuiltinModel(net, bank), frames(3, seed=5))
    assert all(o.shape == (SIZE, SIZE, 3) and o.dtype == np.uint8 for o in outputs)


def test_expert_layers_are_per_sample_blends_of_their_weight_sets(
    tmp_path: Path, tiny_cfg: ModelConfig
) -> None:
    """`experts: K`: each sample's 1x1 conv uses the router's blend of K weight sets."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(tiny_cfg, experts=4)
    layer = Pointwise(6, 5, cfg)
    x, emb = torch.randn(2, 6, 3, 3), torch.randn(2, cfg.emb_dim)
    mix = torch.softmax(layer.router(emb), dim=1)  # type: ignore[misc]
    assert not torch.allclose(mix[0], mix[1], atol=1e-3)  # two conditionings, two blends
    out = layer(x, emb)
    for i in range(2):
        weight = torch.einsum("k,koi->oi", mix[i], layer.weight)[:, :, None, None]
        expected = torch.nn.functional.conv2d(x[i : i + 1], weight, mix[i] @ layer.bias)
        torch.testing.assert_close(out[i : i + 1], expected)
    path = tmp_path / "experts.safetensors"
    save_weights(path, LSDNet(cfg), catalog_bank())
    net, bank = load_weights(path)
    assert net.cfg.experts == 4 and net.mid[0].fc1.weight.shape[0] == 4
    outputs = stream(BuiltinModel(net, bank), frames(3, seed=6))
    assert all(o.shape == (SIZE, SIZE, 3) and o.dtype == np.uint8 for o in outputs)


def test_local_look_is_a_per_sample_mlp_of_each_pixels_neighbourhood(
    tmp_path: Path, tiny_cfg: ModelConfig
) -> None:
    """`local_experts: K`: zero at start; then, per sample, the prompt's blend of K MLPs
    of each pixel's 3x3 neighbourhood (edge pixels repeat the border)."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(tiny_cfg, local_experts=3, local_width=4)
    local = LocalLook(cfg)
    image, prompts = torch.rand(2, 3, 5, 6) * 2 - 1, torch.randn(2, cfg.prompt_dim)
    assert local(image, prompts).abs().max() == 0  # a fresh path adds nothing
    with torch.no_grad():
        local.weights[-1].normal_()
        local.biases[-1].normal_()
    out = local(image, prompts)
    mix = torch.softmax(local.router(prompts), dim=1)
    assert not torch.allclose(mix[0], mix[1], atol=1e-3)  # two prompts, two blends
    for i in range(2):
        x = F.pad(image[i : i + 1], (1, 1, 1, 1), mode="replicate")
        for j, (weight, bias) in enumerate(zip(local.weights, local.biases, strict=True)):
            x = F.conv2d(x, torch.einsum("k,koihw->oihw", mix[i], weight), mix[i] @ bias)
            x = F.silu(x) if j < 2 else x
        torch.testing.assert_close(out[i : i + 1], x)
    path = tmp_path / "local.safetensors"
    save_weights(path, LSDNet(cfg), catalog_bank())
    net, bank = load_weights(path)
    assert net.local is not None and net.local.weights[0].shape == (3, 4, 3, 3, 3)
    outputs = stream(BuiltinModel(net, bank), frames(3, seed=7))
    assert all(o.shape == (SIZE, SIZE, 3) and o.dtype == np.uint8 for o in outputs)
    with pytest.raises(ConfigError, match="local_experts"):
        dataclasses.replace(tiny_cfg, local_experts=-1)


def test_palette_snap_pulls_each_pixel_to_the_prompts_nearest_colour(
    tmp_path: Path, tiny_cfg: ModelConfig
) -> None:
    """`palette_colours: P`: barely any pull at start; at full share and high sharpness,
    each pixel becomes the nearest of the prompt's P colours."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(tiny_cfg, palette_colours=2)
    snap = PaletteSnap(cfg)
    x0, prompt = torch.rand(1, 3, 4, 5) * 2 - 1, torch.randn(1, cfg.prompt_dim)
    assert (snap(x0, prompt) - x0).abs().max() < 0.05  # a share of 2% at start
    with torch.no_grad():
        snap.palette.weight.zero_()
        snap.palette.bias.copy_(torch.atanh(torch.tensor([-0.5, -0.5, -0.5, 0.5, 0.5, 0.5])))
        snap.control.bias.copy_(torch.tensor([30.0, 10.0]))  # share 1, sharpness e^10
    nearest = torch.where(x0.sum(1, keepdim=True) < 0, -0.5, 0.5).expand(-1, 3, -1, -1)
    torch.testing.assert_close(snap(x0, prompt), nearest)
    path = tmp_path / "palette.safetensors"
    save_weights(path, LSDNet(cfg), catalog_bank())
    net, bank = load_weights(path)
    assert net.snap is not None and net.snap.palette.out_features == 6
    outputs = stream(BuiltinModel(net, bank), frames(3, seed=8))
    assert all(o.shape == (SIZE, SIZE, 3) and o.dtype == np.uint8 for o in outputs)
    with pytest.raises(ConfigError, match="palette_colours"):
        dataclasses.replace(tiny_cfg, palette_colours=1)


def test_prompt_grade_is_a_colour_matrix_plus_luma_curves_chosen_by_the_prompt(
    tmp_path: Path, tiny_cfg: ModelConfig
) -> None:
    """`grade_knots: K`: identity at start and with no prompt; else the prompt's matrix,
    offset and curves."""
    cfg = dataclasses.replace(tiny_cfg, grade_knots=5)  # knots at -1, -0.5, 0, 0.5, 1
    grade = PromptGrade(cfg)
    image = torch.rand(2, 3, 4, 6) * 2 - 1
    prompts = torch.randn(2, cfg.prompt_dim)
    torch.testing.assert_close(grade(image, prompts), image)  # a fresh grade changes nothing
    with torch.no_grad():  # prompt 0 -> swap red and blue, + 0.1 on green, red curve = luma
        grade.proj.weight[:, 0] = 0.0
        matrix = torch.tensor([[0.0, 0, 1], [0, 1, 0], [1, 0, 0]]) - torch.eye(3)
        grade.proj.weight[:9, 0] = matrix.flatten()
        grade.proj.weight[10, 0] = 0.1
        grade.proj.weight[12:17, 0] = torch.linspace(-1, 1, 5)  # piecewise linear: exact
    one_hot = torch.zeros(2, cfg.prompt_dim)
    one_hot[0, 0] = 1.0
    out = grade(image, one_hot)
    y = (image * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)
    torch.testing.assert_close(out[0, 0], image[0, 2] + y[0])
    torch.testing.assert_close(out[0, 1], image[0, 1] + 0.1)
    torch.testing.assert_close(out[0, 2], image[0, 0])
    torch.testing.assert_close(out[1], image[1])  # the other prompt keeps the identity
    torch.testing.assert_close(grade(image, torch.zeros_like(one_hot)), image)  # no prompt
    path = tmp_path / "grade.safetensors"
    save_weights(path, LSDNet(cfg), catalog_bank())
    net, bank = load_weights(path)
    assert net.cfg.grade_knots == 5 and net.grade is not None
    outputs = stream(BuiltinModel(net, bank), frames(3, seed=7))
    assert all(o.shape == (SIZE, SIZE, 3) and o.dtype == np.uint8 for o in outputs)


def test_grade_lut_is_a_colour_table_chosen_by_the_prompt_read_trilinearly(
    tmp_path: Path, tiny_cfg: ModelConfig
) -> None:
    """`grade_lut: N`: nothing at start and with no prompt; else the prompt's N^3 table,
    exact at its nodes (red along the table's last axis, blue along its first) and
    trilinear between them. A weight file with it saves, loads and streams."""
    cfg = dataclasses.replace(tiny_cfg, grade_knots=2, grade_lut=3)
    grade = PromptGrade(cfg)
    levels = torch.tensor([-1.0, 0.0, 1.0])  # the nodes of a 3-cell axis
    r, g, b = torch.meshgrid(levels, levels, levels, indexing="ij")
    image = torch.stack([r, g, b]).reshape(1, 3, 3, 9)  # every node colour once
    prompt = torch.zeros(1, cfg.prompt_dim)
    prompt[0, 0] = 1.0
    torch.testing.assert_close(grade(image, prompt), image)  # a fresh table adds nothing
    table = torch.randn(3, 3, 3, 3)  # (channel, blue, green, red)
    with torch.no_grad():  # prompt 0 -> mixture 0 -> this table; the grade's own part stays 0
        grade.lut_mix.weight.zero_()
        grade.lut_mix.weight[0, 0] = 1.0
        grade.lut_tables.weight[:, 0] = table.flatten()
    index = ((image + 1).round().long())[0]  # (3, 3, 9): each pixel's node on each axis
    expected = table[:, index[2], index[1], index[0]]  # (3, 3, 9)
    torch.testing.assert_close(grade(image, prompt)[0], image[0] + expected)
    halfway = torch.full((1, 3, 1, 1), -0.5)  # between the nodes -1 and 0 on every axis
    corners = table[:, :2, :2, :2].mean(dim=(1, 2, 3))
    torch.testing.assert_close(grade(halfway, prompt)[0, :, 0, 0], -0.5 + corners)
    torch.testing.assert_close(grade(image, torch.zeros_like(prompt)), image)  # no prompt
    with pytest.raises(ConfigError, match="grade_lut"):
        dataclasses.replace(tiny_cfg, grade_knots=2, grade_lut=1)
    with pytest.raises(ConfigError, match="grade_lut needs"):
        dataclasses.replace(tiny_cfg, grade_knots=0, grade_grid=0, grade_lut=4)
    path = tmp_path / "lut.safetensors"
    save_weights(path, LSDNet(cfg), catalog_bank())
    net, bank = load_weights(path)
    assert net.cfg.grade_lut == 3 and net.grade is not None and net.grade.lut == 3
    outputs = stream(BuiltinModel(net, bank), frames(3, seed=7))
    assert all(o.shape == (SIZE, SIZE, 3) and o.dtype == np.uint8 for o in outputs)


def test_trilinear_gather_reads_the_table_as_grid_sample_does() -> None:
    """The compiled path's eight gathers give `grid_sample`'s numbers, for colours
    inside, on and beyond the cube's faces (clamped first, as `lookup` does)."""
    gen = torch.Generator().manual_seed(3)
    table = torch.randn(2, 3, 5, 5, 5, generator=gen)
    image = (torch.rand(2, 3, 7, 11, generator=gen) * 2.4 - 1.2).clamp(-1.0, 1.0)
    image[:, :, 0, :3] = torch.tensor([-1.0, 0.0, 1.0])  # nodes and the far faces exactly
    where = image.permute(0, 2, 3, 1)[:, None]
    expected = F.grid_sample(
        table, where, mode="bilinear", padding_mode="border", align_corners=True
    )[:, :, 0]
    torch.testing.assert_close(trilinear_gather(table, image), expected)


def test_compiled_grade_lut_matches_the_eager_lookup(
    tiny_cfg: ModelConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch.compile takes the gather path (`torch.compiler.is_compiling`), eager code
    does not; the compiled output is the eager `grid_sample` one."""
    calls: list[int] = []

    def counted(table: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return trilinear_gather(table, image)

    monkeypatch.setattr(network, "trilinear_gather", counted)
    grade = PromptGrade(dataclasses.replace(tiny_cfg, grade_knots=2, grade_lut=4))
    with torch.no_grad():
        grade.lut_tables.weight.normal_()
    image = torch.rand(1, 3, 9, 13) * 2 - 1
    prompt = torch.randn(1, tiny_cfg.prompt_dim)
    with torch.no_grad():
        eager = grade(image, prompt)
        assert not calls
        compiled = torch.compile(grade, dynamic=False)(image, prompt)
    assert calls  # traced once
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)


def test_grade_grid_scales_and_lifts_channels_by_place_in_the_frame(
    tmp_path: Path, tiny_cfg: ModelConfig
) -> None:
    """`grade_grid: G`: a gain and an offset per channel, bilinear over a G x G lattice
    from the frame's corners; a training crop (`window`) reads its part of the lattice.
    With the edge guide too, a weight file saves, loads and streams."""
    cfg = dataclasses.replace(tiny_cfg, grade_knots=2, grade_grid=2)
    grade = PromptGrade(cfg)
    image = torch.rand(1, 3, 8, 8) * 2 - 1
    prompt = torch.zeros(1, cfg.prompt_dim)
    prompt[0, 0] = 1.0
    lattice = 12 + 3 * 2  # where the lattice starts among the projection's outputs
    with torch.no_grad():  # red gain: -1 (black) along the top, 0 along the bottom
        grade.proj.weight[lattice : lattice + 2, 0] = -1.0  # red gain, top row
        grade.proj.weight[lattice + 3 * 4 + 2 * 4 + 2 : lattice + 3 * 4 + 2 * 4 + 4, 0] = 0.5
    out = grade(image, prompt)  # ... and a blue lift of 0.5 along the bottom
    rows = (torch.arange(8) + 0.5) / 8  # cell centres, 0 at the top edge, 1 at the bottom
    torch.testing.assert_close(out[0, 0], image[0, 0] * rows[:, None].expand(8, 8))
    torch.testing.assert_close(out[0, 1], image[0, 1])
    torch.testing.assert_close(out[0, 2], image[0, 2] + 0.5 * rows[:, None].expand(8, 8))
    bottom_half = torch.tensor([[0.5, 0.0, 1.0, 1.0]])  # top, left, bottom, right
    crop = grade(image, prompt, bottom_half)
    torch.testing.assert_close(crop[0, 0], image[0, 0] * (0.5 + rows / 2)[:, None].expand(8, 8))
    torch.testing.assert_close(grade(image, torch.zeros_like(prompt)), image)  # no prompt
    with pytest.raises(ConfigError, match="grade_grid"):
        dataclasses.replace(tiny_cfg, grade_knots=0, grade_grid=4)
    path = tmp_path / "grid.safetensors"
    save_weights(path, LSDNet(dataclasses.replace(cfg, edge_guide=True)), catalog_bank())
    net, bank = load_weights(path)
    assert net.cfg.grade_grid == 2 and net.cfg.edge_guide and net.head.out_channels == 3 * 12
    outputs = stream(BuiltinModel(net, bank), frames(3, seed=7))
    assert all(o.shape == (SIZE, SIZE, 3) and o.dtype == np.uint8 for o in outputs)


def test_a_stream_makes_the_grade_maps_once_per_prompt(model: BuiltinModel) -> None:
    """The grid's maps depend on the prompt and the size only: a stream keeps them while
    its prompt stays, makes new ones when it changes, and the net gives the same output
    from kept maps as from its own."""
    assert model.cfg.grade_grid and model.net.grade is not None
    thermal, winter = model.look_prompt("thermal"), model.look_prompt("winter")
    state = model.init_state(SIZE, SIZE)
    inputs = frames(4, seed=11)
    _, state = model.step(inputs[0], thermal, state, 1)
    kept = state.grade_maps
    assert kept is not None and kept[1].shape[-2:] == (SIZE // 4, SIZE // 4)
    _, state = model.step(inputs[1], thermal, state, 1)
    assert state.grade_maps is kept  # the same prompt: not made again
    _, state = model.step(inputs[2], winter, state, 1)
    assert state.grade_maps is not None and not torch.equal(state.grade_maps[1], kept[1])
    image = torch.rand(1, 3, 16, 16) * 2 - 1
    prompt = thermal.embedding[None]
    with torch.no_grad():
        maps = model.net.grade.frame_maps(prompt, 16, 16)
        made = model.net.grade(image, prompt)
        torch.testing.assert_close(model.net.grade(image, prompt, None, maps), made)


def test_grade_bands_soften_or_sharpen_in_the_frames_terms(
    tmp_path: Path, tiny_cfg: ModelConfig
) -> None:
    """`grade_bands: B`: per channel, the prompt re-weights the band-pass layers between
    low-passes of 32, 16, ... cells across the frame's short side: a weight of -1 on
    every band leaves the coarsest low-pass (a soft image), the same picture at any size;
    a training crop (`window`) is filtered in its frame's terms."""
    cfg = dataclasses.replace(tiny_cfg, grade_knots=2, grade_grid=0, grade_bands=2)
    grade = PromptGrade(cfg)
    rng = np.random.default_rng(3)
    small = cv2.resize(rng.uniform(-1, 1, (8, 8)).astype(np.float32), (64, 64))
    sharp = torch.from_numpy(np.where(small > 0, 1.0, -1.0).astype(np.float32))
    image = sharp.expand(1, 3, 64, 64).contiguous()  # a sharp-edged picture
    prompt = torch.zeros(1, cfg.prompt_dim)
    prompt[0, 0] = 1.0
    bands = 12 + 3 * 2  # where the band weights start among the projection's outputs
    with torch.no_grad():  # red: every band removed; green: the finest band doubled
        grade.proj.weight[bands + 0, 0] = grade.proj.weight[bands + 3, 0] = -1.0
        grade.proj.weight[bands + 1, 0] = 1.0
    out = grade(image, prompt)
    coarsest = F.interpolate(F.adaptive_avg_pool2d(image, 16), size=64, mode="bilinear")
    torch.testing.assert_close(out[0, 0], coarsest[0, 0])  # 16 cells across: soft
    assert (out[0, 1] - image[0, 1]).abs().mean() > 0.05  # sharpened: over- and undershoot
    torch.testing.assert_close(out[0, 2], image[0, 2])  # blue untouched
    double = grade(F.interpolate(image, size=128, mode="nearest"), prompt)
    halved = F.avg_pool2d(double, 2)
    assert (halved[0, 0] - out[0, 0]).abs().mean() < 0.02  # the same softness at 128x128
    corner = torch.tensor([[0.0, 0.0, 0.5, 0.5]])  # the image is a quarter of its frame
    crop = grade(image, prompt, corner)  # so 16 cells across the frame: 8 in the image
    eight = F.interpolate(F.adaptive_avg_pool2d(image, 8), size=64, mode="bilinear")
    torch.testing.assert_close(crop[0, 0], eight[0, 0])
    torch.testing.assert_close(grade(image, torch.zeros_like(prompt)), image)  # no prompt
    with pytest.raises(ConfigError, match="grade_bands"):
        dataclasses.replace(tiny_cfg, grade_knots=0, grade_grid=0, grade_bands=2)
    path = tmp_path / "bands.safetensors"
    save_weights(path, LSDNet(cfg), catalog_bank())
    net, bank = load_weights(path)
    assert net.cfg.grade_bands == 2
    outputs = stream(BuiltinModel(net, bank), frames(3, seed=7))
    assert all(o.shape == (SIZE, SIZE, 3) and o.dtype == np.uint8 for o in outputs)


def test_edge_map_marks_edges_alike_at_any_size() -> None:
    """The upsampler's edge guide: near 1 on a strong edge, near 0 on flat or noisy
    ground, and the same picture at twice the resolution."""
    rng = np.random.default_rng(0)
    step = np.full((256, 256), 60, dtype=np.uint8)
    step[:, 128:] = 180  # a vertical edge
    noisy = np.clip(step + rng.normal(0, 2, step.shape), 0, 255).astype(np.uint8)
    edges = edge_map_u8(noisy)
    assert edges.dtype == np.float32 and edges.shape == (256, 256)
    assert edges[:, 127:129].mean() > 0.75 and edges[:, :100].mean() < 0.1
    soft = cv2.GaussianBlur(step, (0, 0), 2)  # a camera's edge, filmed at two resolutions
    double = edge_map_u8(cv2.resize(soft, (512, 512), interpolation=cv2.INTER_LINEAR))
    shrunk = cv2.resize(double, (256, 256), interpolation=cv2.INTER_AREA)
    profile, profile_double = edge_map_u8(soft)[128], shrunk[128]
    assert profile.max() > 0.5 and np.abs(profile - profile_double).max() < 0.1
    as_tensor = torch.from_numpy(noisy.astype(np.float32) / 127.5 - 1)[None, None]
    np.testing.assert_allclose(edge_map(as_tensor)[0, 0].numpy(), edges, atol=1e-4)


def test_weight_files_from_before_a_config_field_load_with_its_old_value(
    tmp_path: Path, tiny_cfg: ModelConfig
) -> None:
    """Files written before `experts`, `grade_knots`, `grade_grid`, `grade_bands` and
    `edge_guide` existed lack them: they mean off, whatever the defaults are now (the
    bundled recipe's grade has 16 knots and a 6x6 grid)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = tmp_path / "old.safetensors"
    cfg = dataclasses.replace(tiny_cfg, grade_knots=0, grade_grid=0)
    save_weights(path, LSDNet(cfg), catalog_bank())
    with safe_open(str(path), framework="pt") as f:
        metadata = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    config = json.loads(metadata["config"])
    for name in ("experts", "grade_knots", "grade_grid", "grade_bands", "edge_guide"):
        del config[name]
    save_file(tensors, str(path), metadata=metadata | {"config": json.dumps(config)})
    assert (ModelConfig().grade_knots, ModelConfig().grade_grid) == (16, 6)  # the defaults now
    net, _ = load_weights(path)
    assert (net.cfg.grade_knots, net.cfg.grade_grid, net.cfg.experts) == (0, 0, 0)
    assert not net.cfg.edge_guide and net.cfg.grade_bands == 0 and net.grade is None


def test_training_crops_are_windows_of_the_look_rendered_on_the_whole_view() -> None:
    """data.view: the look is rendered at the view's scale (vignette, sky, grain placed
    by the whole frame) and the crop, with its window, is cut out of that."""
    from skimage import data

    cfg = DataConfig(crop=64, view=128, seq_len=2)
    source = Source("astronaut", (np.ascontiguousarray(data.astronaut()[::2, ::2]),))
    for seed in range(3):
        whole, crop = (
            make_sequence(np.random.default_rng(seed), [source], cfg, "sepia_vintage", w)
            for w in (True, False)
        )
        assert whole.frames.shape == (2, 128, 128, 3) and crop.frames.shape == (2, 64, 64, 3)
        top, left, bottom, right = (round(v * 128) for v in crop.window)
        assert (bottom - top, right - left) == (64, 64)
        assert top % CROP_ALIGN == left % CROP_ALIGN == 0
        np.testing.assert_array_equal(crop.frames, whole.frames[:, top:bottom, left:right])
        np.testing.assert_array_equal(crop.targets, whole.targets[:, top:bottom, left:right])
    with pytest.raises(UserError, match=r"data\.view"):
        make_sequence(np.random.default_rng(0), [source], DataConfig(crop=64, view=32))


def test_data_folder_without_media_says_so(tmp_path: Path) -> None:
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    cfg = DataConfig(media_dir=str(tmp_path), train_images=(), eval_clips=(), crop=64)
    with pytest.raises(UserError, match=r"no readable video or image.*\.mp4.*\.tiff"):
        load_sources(cfg, "train")
    with pytest.raises(UserError, match="is a file: give the folder"):
        load_sources(dataclasses.replace(cfg, media_dir=str(tmp_path / "broken.mp4")), "train")
    # an empty folder says so, before the held-out clips it does not hold are looked for
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match=r"empty has no video or image files.*\.mp4"):
        load_sources(dataclasses.replace(cfg, media_dir=str(empty), eval_clips=("a.mp4",)), "train")
    # every file held out: said as such, not as an unreadable folder
    with pytest.raises(UserError, match=r"all 1 video and image files .* are held out"):
        load_sources(dataclasses.replace(cfg, eval_clips=("broken.mp4",)), "train")


def test_a_sample_image_that_does_not_exist_names_the_config_entry(tmp_path: Path) -> None:
    cfg = DataConfig(media_dir=str(tmp_path), eval_clips=(), crop=64)
    cases = {
        "skimage:chelsey": r"data\.train_images\[1\] 'skimage:chelsey' is not a skimage sample",
        "skimage:download_all": r"data\.train_images\[1\] 'skimage:download_all' is not a",
        "sklearn:flowers.jpg": r"data\.train_images\[1\] 'sklearn:flowers\.jpg' is not a",
    }
    for name, message in cases.items():
        with pytest.raises(UserError, match=message) as err:
            load_sources(dataclasses.replace(cfg, train_images=("skimage:camera", name)), "train")
        assert "\n" not in str(err.value)
    with pytest.raises(UserError, match=r"data\.eval_images\[0\] 'skimage:chelsey'"):
        load_sources(dataclasses.replace(cfg, eval_images=("skimage:chelsey",)), "train")


def test_a_copy_of_an_eval_still_in_the_data_folder_is_refused(tmp_path: Path) -> None:
    import shutil

    import sklearn.datasets

    flower = Path(sklearn.datasets.__file__).parent / "images" / "flower.jpg"
    shutil.copy(flower, tmp_path / "my_flower.jpg")
    cfg = DataConfig(media_dir=str(tmp_path), train_images=(), eval_clips=(), crop=64)
    assert "sklearn:flower.jpg" in cfg.eval_images
    with pytest.raises(UserError, match=r"'my_flower\.jpg' is the data\.eval_images entry"):
        load_sources(cfg, "train")
    (train,) = load_sources(dataclasses.replace(cfg, eval_images=("skimage:chelsea",)), "train")
    assert train.name == "my_flower.jpg"


def test_a_users_folder_is_read_with_subfolders_and_every_file_shrunk(
    tmp_path: Path, media: Path
) -> None:
    (tmp_path / "shots").mkdir()
    with av.open(str(media / "walk.mkv")) as container:
        image = next(container.decode(video=0)).to_ndarray(format="bgr24")  # 640x480
    cv2.imwrite(str(tmp_path / "shots" / "still.tif"), image)
    cv2.imwrite(str(tmp_path / "held.png"), image)
    cfg = DataConfig(media_dir=str(tmp_path), train_images=(), eval_clips=("held.png",), crop=64)
    (train_clip,) = load_sources(cfg, "train")
    assert train_clip.name == "still.tif"
    assert min(train_clip.frames[0].shape[:2]) == round(64 * cfg.source_scale)


def test_eval_clips_are_found_in_any_case_and_subfolder_or_named_as_missing(
    tmp_path: Path,
) -> None:
    """A held-out clip never reaches the train split: `data.eval_clips` matches file names
    (or paths in the folder) in any case, and an entry that matches nothing is an error."""
    (tmp_path / "shots").mkdir()
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "shots" / "Held.PNG"), image)
    cv2.imwrite(str(tmp_path / "trained.png"), image[::-1])
    cfg = DataConfig(
        media_dir=str(tmp_path), train_images=(), eval_images=(), eval_clips=("held.png",), crop=64
    )
    for entry in ("held.png", "SHOTS/held.png"):
        cfg = dataclasses.replace(cfg, eval_clips=(entry,))
        assert [s.name for s in load_sources(cfg, "train")] == ["trained.png"]
        assert [s.name for s in load_sources(cfg, "eval")] == ["Held.PNG"]
    missing = dataclasses.replace(cfg, eval_clips=("held.png", "please.mkv"))
    with pytest.raises(ConfigError, match=r"data\.eval_clips entry 'please\.mkv' .*\[\]") as err:
        load_sources(missing, "train")
    assert "\n" not in str(err.value)
    # a folder of one's own without held-out clips: eval on the eval stills only
    stills_only = dataclasses.replace(cfg, eval_clips=(), eval_images=("skimage:chelsea",))
    assert len(load_sources(stills_only, "train")) == 2
    assert [s.name for s in load_sources(stills_only, "eval")] == ["skimage:chelsea"]
    with pytest.raises(ConfigError, match=r"data\.eval_clips and data\.eval_images"):
        dataclasses.replace(cfg, eval_clips=())
    # the held-out clip copied, or linked, under another name would be trained on
    held = tmp_path / "shots" / "Held.PNG"
    for twin in (tmp_path / "copy.png", tmp_path / "link.png"):
        if twin.name == "copy.png":
            twin.write_bytes(held.read_bytes())
        else:
            twin.symlink_to(held)
        said = rf"'{twin.name}' is the held-out clip 'shots/Held.PNG'"
        with pytest.raises(ConfigError, match=said):
            load_sources(cfg, "train")
        twin.unlink()


def test_a_train_still_that_is_an_eval_still_under_another_name_is_refused(media: Path) -> None:
    cfg = DataConfig(
        media_dir=str(media), train_images=("skimage:astronaut", "skimage:cat"),
        eval_images=("skimage:chelsea",), crop=64, clip_max_frames=2,
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"train_images entry 'skimage:cat' .*'skimage:chelsea'"):
        load_sources(cfg, "train")


def test_training_sets_opencv_threads_for_the_run_and_checkpoints_are_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`threads` is OpenCV's too while training (the data's looks and flow), and the
    caller's own setting comes back after; a checkpoint is on disk before its rename."""
    import mirage_lsd.training.train as training

    config = yaml.safe_load(TINY_YAML.read_text()) | {
        "steps": 2, "eval_every": 100, "checkpoint_every": 100, "eval_sequences": 1,
    }  # fmt: skip
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    real_collate, real_fsync = training.collate, os.fsync
    seen_threads: list[int] = []
    synced: list[tuple[int, bool]] = []  # (size synced, checkpoint already in place)

    def collate(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen_threads.append(cv2.getNumThreads())
        return real_collate(*args, **kwargs)

    def fsync(fd: int) -> None:
        synced.append((os.fstat(fd).st_size, (tmp_path / "run" / "checkpoint.pt").exists()))
        real_fsync(fd)

    monkeypatch.setattr(training, "collate", collate)
    monkeypatch.setattr(os, "fsync", fsync)
    before = cv2.getNumThreads()
    cv2.setNumThreads(3)
    try:
        train(tmp_path / "run.yaml", out_dir=tmp_path / "run", show_progress=False)
        assert cv2.getNumThreads() == 3
    finally:
        cv2.setNumThreads(before)
    assert seen_threads and set(seen_threads) == {config["threads"]}
    assert synced[0] == ((tmp_path / "run" / "checkpoint.pt").stat().st_size, False)


# ---------------------------------------------------------------- the bundled weights


@pytest.mark.parametrize("prompt", ["thermal camera", "underwater", "winter"])
def test_bundled_weights_beat_identity_by_a_wide_margin(media: Path, prompt: str) -> None:
    """On a clip never trained on, the output is far closer to the look than the input is."""
    from mirage_lsd.evaluation.evaluate import evaluate

    engine = StreamEngine(device="cpu", max_steps=1, resolution=(256, 256))  # the default
    assert engine.model.info.name == "mirage-lsd-v1"
    result = evaluate(engine, media / "please.mkv", prompt, frames=12)
    assert result.style_psnr > result.identity_psnr + 8.0, result
    if prompt == "underwater":  # four steps too: the same look, within a dB of one step
        four = StreamEngine(device="cpu", max_steps=4, resolution=(256, 256))
        result4 = evaluate(four, media / "please.mkv", prompt, frames=12)
        assert result4.style_psnr > result.identity_psnr + 8.0, result4
        assert abs(result4.style_psnr - result.style_psnr) < 1.0


def test_a_prompt_change_moves_the_output_gradually_to_the_new_look(media: Path) -> None:
    from mirage_lsd.looks import get_look

    engine = StreamEngine(device="cpu", resolution=(128, 128), prompt="thermal camera")
    source = open_source(media / "please.mkv")
    images = [source.recv().image for _ in range(14)]
    source.close()
    outputs = [engine.process(image) for image in images[:4]]
    engine.set_prompt("underwater", transition_frames=8)
    outputs += [engine.process(image) for image in images[4:]]
    plan = plan_fit(images[0].shape[:2], (128, 128), "crop")
    underwater = get_look("underwater")
    closeness = [
        psnr(out, underwater.render(apply_fit(image, plan)))
        for out, image in zip(outputs, images, strict=True)
    ]
    blend = closeness[3:13]  # the last thermal frame, the 8 blended ones, the first after
    assert closeness[13] > closeness[3] + 8.0  # it ends far closer to the new look
    assert all(b >= a - 0.5 for a, b in itertools.pairwise(blend))  # and gets there steadily
    steps = [float(np.abs(b.astype(np.float32) - a).mean()) for a, b in itertools.pairwise(outputs)]
    assert max(steps[3:12]) < 0.5 * sum(steps[3:12])  # no single frame makes the jump


def test_ctrl_c_ends_after_the_step_with_a_checkpoint_and_resume_continues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import mirage_lsd.training.train as training

    config = yaml.safe_load(TINY_YAML.read_text()) | {
        "steps": 5, "eval_every": 100, "checkpoint_every": 100,
    }  # fmt: skip
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    real, calls = training.sequence_loss, []

    def interrupted_at_the_fourth_step(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 4:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C in the middle of the fourth step
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "sequence_loss", interrupted_at_the_fourth_step)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "run.yaml", out_dir=tmp_path / "run", show_progress=False)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 4  # the step under way was finished, then saved
    monkeypatch.setattr(training, "sequence_loss", real)
    config["steps"] = 8  # resumed as a longer run: the schedule's jump is logged
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    with caplog.at_level("WARNING"):
        resumed = train(
            tmp_path / "run.yaml", out_dir=tmp_path / "run", show_progress=False, resume=True
        )
    assert resumed.step == 8
    assert "resuming a run of 5 steps as one of 8" in caplog.text


def test_a_checkpoint_is_written_before_an_eval_that_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mirage_lsd.training.train as training

    config = yaml.safe_load(TINY_YAML.read_text()) | {
        "steps": 2, "eval_every": 2, "checkpoint_every": 2,
    }  # fmt: skip
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))

    def failing_eval(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("out of memory")

    monkeypatch.setattr(training, "evaluate", failing_eval)
    with pytest.raises(RuntimeError, match="out of memory"):
        train(tmp_path / "run.yaml", out_dir=tmp_path, show_progress=False)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 2


def test_a_bad_look_bank_or_non_finite_weights_name_the_file(
    tmp_path: Path, tiny_cfg: ModelConfig
) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    good = tmp_path / "good.safetensors"
    save_weights(good, LSDNet(tiny_cfg), catalog_bank())
    with safe_open(str(good), framework="pt") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    cases = {  # the change, and the reason the error gives
        "one anchor short": {"looks.anchors": tensors["looks.anchors"][:-1]},
        "narrow embeddings": {
            "looks.descriptions": tensors["looks.descriptions"][:, :100].contiguous()
        },
        "owner out of range": {"looks.owner": tensors["looks.owner"] + 100},
        "a NaN weight": {"net.head.bias": torch.full_like(tensors["net.head.bias"], math.nan)},
        "a look with no description": {"looks.owner": torch.zeros_like(tensors["looks.owner"])},
        "no descriptions": {
            "looks.descriptions": tensors["looks.descriptions"][:0].contiguous(),
            "looks.owner": tensors["looks.owner"][:0].contiguous(),
        },
    }
    reasons = {
        "a look with no description": "a look has no descriptions",
        "no descriptions": "a look has no descriptions",
        "one anchor short": "not one anchor per look",
        "narrow embeddings": "embeddings are not",
        "owner out of range": "a look that is not there",
        "a NaN weight": "tensor head.bias holds NaN",
    }
    for case, change in cases.items():
        bad = tmp_path / f"{case.replace(' ', '_')}.safetensors"
        save_file({**tensors, **change}, str(bad), metadata=metadata)
        with pytest.raises(WeightsError, match=rf"{bad.name}.*{reasons[case]}") as err:
            load_weights(bad)
        assert "\n" not in str(err.value), case
    # a bank another writer stored narrower (float16, int32) matches prompts as ours does
    narrow = tmp_path / "narrow_bank.safetensors"
    smaller = {"looks.descriptions": tensors["looks.descriptions"].half()}
    smaller |= {"looks.anchors": tensors["looks.anchors"].half()}
    smaller |= {"looks.owner": tensors["looks.owner"].int()}
    save_file({**tensors, **smaller}, str(narrow), metadata=metadata)
    model = BuiltinModel(*load_weights(narrow), "cpu", compile=False)
    match = model.encode_prompt("infrared camera").match
    assert match is not None and match.best == "thermal"


def test_runtime_edge_cases_of_the_model(model: BuiltinModel) -> None:
    with pytest.raises(UserError, match=r"unknown look 'plaid'.*thermal"):
        model.look_prompt("plaid")
    with pytest.raises(UserError, match="seed"):
        StreamEngine(model, device="cpu").set_seed(2**64)
    # weights without the temporal path keep no cache, so a compiled network is used at once
    flat = BuiltinModel(LSDNet(dataclasses.replace(model.cfg, temporal=False)), catalog_bank())
    assert flat.init_state(SIZE, SIZE).cache.max_frames == 0
    assert dummy_inputs(flat.net, (SIZE // 4, SIZE // 4))[8].max_frames == 0


def test_grade_maps_stay_float32_under_bfloat16(model: BuiltinModel) -> None:
    model.bf16 = True  # as on a CPU with AMX (bfloat16 autocast runs on any CPU)
    try:
        cond = model.look_prompt("sunset")
        _, state = model.step(frames(1, seed=2)[0], cond, model.init_state(SIZE, SIZE), 1)
    finally:
        model.bf16 = False
    assert model.cfg.grade_grid  # the tiny config has the grade's maps, as the bundled one
    assert state.grade_maps is not None
    embedding, maps = state.grade_maps  # the conditioning's own (dim,) embedding
    assert embedding is cond.embedding
    assert model.net.grade is not None
    with torch.no_grad():  # exactly the float32 maps of training, not bfloat16 rounded
        expected = model.net.grade.frame_maps(embedding[None].float(), *maps.shape[-2:])
        assert torch.equal(maps, expected)


def test_an_automatic_compile_is_skipped_for_a_short_file(
    tiny_cfg: ModelConfig, media: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("mirage_lsd.models.builtin.model.compile_by_default", lambda d: True)
    monkeypatch.delenv("MIRAGE_LSD_COMPILE", raising=False)
    model = BuiltinModel(LSDNet(tiny_cfg), catalog_bank())  # compile=None: automatic
    assert model._compiler is not None
    requested: list[tuple[int, int]] = []
    monkeypatch.setattr(model._compiler, "request", requested.append)  # never compile here
    engine = StreamEngine(model, device="cpu", resolution=(64, 64))
    engine.start(media / "walk.mkv", max_frames=3)  # 89 frames: over before a compile pays
    engine.wait()
    assert requested == []
    engine.start(media / "walk.mkv", max_frames=3, mode="live")  # in real time: as short
    engine.wait()
    assert requested == []
    engine.start(media / "walk.mkv", max_frames=3, mode="bench")  # measures the steady state
    engine.wait()
    assert requested == [(16, 16)]
    first = threading.Event()
    looped = open_source(media / "walk.mkv", loop=True)  # never ends: may run for hours
    engine.start(looped, mode="live", on_frame=lambda image: first.set())
    assert first.wait(30)
    engine.stop()
    assert requested == [(16, 16)] * 2
    engine.start(media / "walk.mkv", max_frames=3)  # short again: no compile ...
    engine.wait()
    engine.process(frames(1, seed=3)[0])  # ... but frames pushed one by one may go on for hours
    assert requested == [(16, 16)] * 3
    asked = BuiltinModel(LSDNet(tiny_cfg), catalog_bank(), compile=True)  # asked for: always
    monkeypatch.setattr(asked._compiler, "request", requested.append)
    asked.plan_stream(live=False, frames=10)
    asked.init_state(64, 64)
    assert requested == [(16, 16)] * 4


def test_each_look_name_resolves_to_that_look(model: BuiltinModel) -> None:
    """What a window's arrow keys send: the look's own name must pick that look alone."""
    for name in model.info.looks:
        match = model.encode_prompt(name).match
        assert match is not None and max(match.weights, key=match.weights.get) == name
        assert match.weights[name] > 0.99


def test_memory_stays_flat_over_a_long_stream_of_the_model(model: BuiltinModel) -> None:
    """The state's own accounting aside: the process itself does not grow."""

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    pool = frames(8, seed=11)
    engine = StreamEngine(model, device="cpu", prompt="thermal")

    def looped(n: int):  # type: ignore[no-untyped-def]
        for i in range(n):
            yield pool[i % len(pool)]

    for _ in engine.stream(looped(300)):  # warm up allocators and caches
        pass
    before = rss()
    count = sum(1 for _ in engine.stream(looped(3000)))
    growth = rss() - before
    assert count == 3000
    assert growth < 8 * 1024 * 1024, f"RSS grew by {growth / 1e6:.1f} MB over 3000 frames"


def test_weight_files_get_the_usual_file_mode(tmp_path: Path, tiny_cfg: ModelConfig) -> None:
    import os

    path = tmp_path / "w.safetensors"
    save_weights(path, LSDNet(tiny_cfg), catalog_bank())
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # safetensors' own writer: 0600
    load_weights(path)
