"""The diffusers backend on tiny random SD / SDXL pipelines, loaded through the user path."""

from __future__ import annotations

import json
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import MEDIA
from diffusers_tiny import save_tiny_lora, save_tiny_sd, save_tiny_sdxl, save_tiny_taesd

from mirage_lsd.engine.stream_engine import StreamEngine
from mirage_lsd.errors import UserError
from mirage_lsd.models.base import StreamModel
from mirage_lsd.models.diffusers_backend import (
    DiffusersOptions,
    LoraSpec,
    load_diffusers_model,
    looks_like_diffusers_spec,
)
from mirage_lsd.models.diffusers_backend.attention import (
    BankAttnProcessor,
    BankContext,
    FeatureBank,
)
from mirage_lsd.models.diffusers_backend.sampler import (
    Schedule,
    add_noise,
    index_timesteps,
    predict_x0,
    slerp,
    strength_timesteps,
    to_eps,
)
from mirage_lsd.models.registry import LoadOptions

SIZE = 64  # frames are 64x64: 8x8 latents


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
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sd = save_tiny_sd(root / "sd")
        sdxl = save_tiny_sdxl(root / "sdxl")
        return {
            "sd": sd,
            "sdxl": sdxl,
            "taesd": save_tiny_taesd(root / "taesd"),
            "lora": save_tiny_lora(root / "lora", sd),
            "sdxl_unet_lora": save_tiny_lora(root / "sdxl_lora", sdxl),
        }
    finally:
        torch.set_num_threads(before)


def load(tiny: dict[str, Path], family: str = "sd", **kwargs: object) -> StreamModel:
    kwargs.setdefault("vae", str(tiny["taesd"]))
    options = DiffusersOptions.from_kwargs(**kwargs)
    return load_diffusers_model(str(tiny[family]), LoadOptions(device="cpu"), options)


def frames(n: int, seed: int = 0) -> list[np.ndarray]:
    """A smooth moving gradient with a little noise: consecutive frames differ a bit."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    out = []
    for i in range(n):
        base = np.stack([xx + 3 * i, yy, (xx + yy) / 2 + 5 * i], axis=-1) * 3.0
        noisy = base + rng.normal(0, 4, base.shape)
        out.append(np.clip(noisy % 256, 0, 255).astype(np.uint8))
    return out


def run(model: StreamModel, images: list[np.ndarray], prompt: str = "a cat", steps: int = 1):
    cond = model.encode_prompt(prompt)
    state = model.init_state(SIZE, SIZE)
    outs = []
    for image in images:
        out, state = model.step(image, cond, state, steps)
        outs.append(out)
    return outs, state


def diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


class Frames(list):  # type: ignore[type-arg]
    """Output frames that compare equal when every pixel is."""

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, list)
            and len(self) == len(other)
            and all(diff(a, b) == 0 for a, b in zip(self, other, strict=True))
        )


def on_two_threads(model: StreamModel, inputs: list[list[np.ndarray]]) -> list[Frames]:
    """Each input streamed at the same time on a thread of its own, as studio sessions."""
    outputs: list[Frames] = [Frames(), Frames()]

    def stream(i: int) -> None:
        outputs[i].extend(run(model, inputs[i])[0])

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outputs


# -- loading ---------------------------------------------------------------------
def test_sd_folder_loads_and_runs_through_the_engine(tiny: dict[str, Path]) -> None:
    assert looks_like_diffusers_spec(str(tiny["sd"]))
    model = load(tiny)
    assert model.size_multiple == 8
    engine = StreamEngine(model=model, prompt="a watercolor", device="cpu")
    out = engine.process(frames(1)[0][:60, :62])  # the engine pads to 64x64 and crops back
    assert out.shape == (60, 62, 3) and out.dtype == np.uint8


def test_sdxl_folder_loads_and_runs(tiny: dict[str, Path]) -> None:
    model = load(tiny, "sdxl", guidance="full", guidance_scale=1.5)
    cond = model.encode_prompt("a cat")
    assert cond.embeds.shape[-1] == 64 and cond.pooled is not None
    outs, _ = run(model, frames(2), steps=2)
    assert outs[-1].shape == (SIZE, SIZE, 3)
    full = load(tiny, "sdxl", vae="full")
    assert diff(run(full, frames(1), "a cat")[0][0], run(full, frames(1), "a city")[0][0]) > 2


def test_full_vae_runs(tiny: dict[str, Path]) -> None:
    outs, _ = run(load(tiny, vae="full"), frames(1))
    assert outs[0].shape == (SIZE, SIZE, 3)


def test_weights_saved_as_the_fp16_variant_only_load(tiny: dict[str, Path], tmp_path: Path) -> None:
    """`save_pretrained(variant="fp16")` writes only *.fp16.safetensors: every part reads them,
    in half precision and in full (the text encoders too; the UNet's choice is not the VAE's)."""
    from diffusers import StableDiffusionPipeline

    from mirage_lsd.models.diffusers_backend.loading import load_components

    folder = tmp_path / "fp16-only"
    StableDiffusionPipeline.from_pretrained(tiny["sd"]).save_pretrained(folder, variant="fp16")
    assert not [p for p in folder.glob("*/*.safetensors") if ".fp16" not in p.name]
    for dtype in (torch.float16, torch.float32):
        parts = load_components(str(folder), DiffusersOptions(), dtype)
        assert parts.unet.dtype == dtype and parts.text_encoders[0].dtype == dtype
    mixed = tmp_path / "mixed"  # fp16 weights for the UNet alone
    StableDiffusionPipeline.from_pretrained(tiny["sd"]).save_pretrained(mixed)
    for old in (mixed / "unet").glob("*.safetensors"):
        old.unlink()
    StableDiffusionPipeline.from_pretrained(tiny["sd"]).unet.save_pretrained(
        mixed / "unet", variant="fp16"
    )
    assert load_components(str(mixed), DiffusersOptions(), torch.float16).vae is not None


def test_a_zero_terminal_snr_schedule_runs_at_strength_one(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    """`rescale_betas_zero_snr` ends the schedule at alpha = 0: x0 = x_t / sqrt(alpha) at
    t = 999 must not divide by zero into NaN (a black frame)."""
    folder = tmp_path / "zero-snr"
    shutil.copytree(tiny["sd"], folder)
    config_file = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(config_file.read_text())
    config |= {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing"}
    config_file.write_text(json.dumps(config))
    options = DiffusersOptions.from_kwargs(vae=str(tiny["taesd"]), strength=1.0)
    model = load_diffusers_model(str(folder), LoadOptions(device="cpu"), options)
    with torch.inference_mode():
        (out,), _ = run(model, frames(1))
    assert out.std() > 1.0  # not one flat colour


def test_repositories_that_are_not_pipelines_are_refused_before_their_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A LoRA or UNet repository (no model_index.json), an SDXL refiner (no text encoder)
    and an inpainting model (9 UNet channels) are refused from their configs, before the
    weights download: one line each."""
    from mirage_lsd.models.diffusers_backend import loading

    heads = {
        "someone/a-lora": {},
        "someone/refiner": {
            "model_index.json": {
                "_class_name": "StableDiffusionXLImg2ImgPipeline",
                "text_encoder": [None, None],
            }
        },
        "someone/inpaint": {
            "model_index.json": {
                "_class_name": "StableDiffusionPipeline",
                "text_encoder": ["transformers", "CLIPTextModel"],
            },
            "unet/config.json": {"in_channels": 9},
        },
    }
    fetched: list[list[str]] = []

    def snapshot(repo_id: str, allow: list[str], ignore: list[str]) -> Path:
        fetched.append(allow)
        folder = tmp_path / repo_id
        for name, content in heads[repo_id].items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(json.dumps(content))
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    monkeypatch.setattr(loading, "hub_snapshot", snapshot)
    for repo, message in (
        ("someone/a-lora", "not a diffusers pipeline (no model_index.json)"),
        ("someone/refiner", "has no text encoder (an SDXL refiner?)"),
        ("someone/inpaint", "has a UNet of 9 input channels"),
    ):
        with pytest.raises(UserError, match=re.escape(message)):
            loading.load_components(repo, DiffusersOptions(), torch.float32)
    assert fetched == [loading.HEAD_FILES] * 3  # never the weights


def test_hub_downloads_skip_weights_never_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only what a stream reads: never SD 1.5's training copy or a single-file checkpoint;
    in half precision a folder's fp16 variant alone where it has one (its full-precision
    copy is twice the size), the full weights where it has none; in full precision, no
    fp16 files."""
    from huggingface_hub.utils import filter_repo_objects

    from mirage_lsd.models.diffusers_backend import loading

    repo = [
        "model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.non_ema.safetensors",
        "unet/diffusion_pytorch_model.fp16.safetensors", "v1-5-pruned-emaonly.safetensors",
        "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/config.json", "text_encoder/model.safetensors",
        "text_encoder/model.fp16-00001-of-00002.safetensors",
        "text_encoder/model.fp16-00002-of-00002.safetensors",
    ]  # fmt: skip

    def snapshot(repo_id: str, allow: list[str], ignore: list[str]) -> Path:
        folder = tmp_path / repo_id  # one snapshot folder per revision, as the cache
        for name in filter_repo_objects(repo, allow_patterns=allow, ignore_patterns=ignore):
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).touch()
        return folder

    monkeypatch.setattr(loading, "hub_snapshot", snapshot)
    fetched = {}
    for fp16 in (False, True):
        folder = loading.hub_weights(f"fp16-{fp16}", fp16)
        fetched[fp16] = {p.relative_to(folder).as_posix() for p in folder.rglob("*.safetensors")}
    assert fetched[False] == {
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
    }
    assert fetched[True] == {
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "vae/diffusion_pytorch_model.safetensors",  # no fp16 variant: the full weights
        "text_encoder/model.fp16-00001-of-00002.safetensors",
        "text_encoder/model.fp16-00002-of-00002.safetensors",
    }


def test_spec_detection() -> None:
    assert looks_like_diffusers_spec("stabilityai/sd-turbo")
    assert looks_like_diffusers_spec("model.safetensors")
    assert looks_like_diffusers_spec("./some/dir")
    assert not looks_like_diffusers_spec("identity")


def test_offline_and_not_cached_names_the_download_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as err:
        load_diffusers_model("mirage-test/not-a-cached-model", LoadOptions(), DiffusersOptions())
    msg = str(err.value)
    assert "`hf download mirage-test/not-a-cached-model`" in msg and "\n" not in msg


def test_bad_paths_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    cases = {
        str(tmp_path / "empty"): "not a diffusers model folder",
        str(tmp_path / "missing"): "does not exist",
        str(tmp_path / "missing.safetensors"): "does not exist",
        str(tmp_path / "junk.safetensors"): "not a safetensors checkpoint",
    }
    for spec, words in cases.items():
        with pytest.raises(UserError, match=words) as err:
            load_diffusers_model(spec, LoadOptions(), DiffusersOptions())
        assert "\n" not in str(err.value)


def test_cuda_without_cuda_is_a_user_error(tiny: dict[str, Path]) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(UserError, match="CUDA"):
        load_diffusers_model(str(tiny["sd"]), LoadOptions(device="cuda"), DiffusersOptions())


def test_size_not_divisible_by_8(tiny: dict[str, Path]) -> None:
    with pytest.raises(UserError, match="divisible by 8"):
        load(tiny).init_state(60, 64)


def test_options_validate() -> None:
    for kwargs, reason in (
        ({"guidance": "half"}, "unknown --guidance 'half'"),
        ({"strength": 0.0}, r"--strength must be in \(0, 1\]"),
        ({"t_index_list": "40,10"}, "strictly increasing"),
        ({"bank_merge": "lru"}, "unknown --bank-merge"),
        ({"latent_feedback": 1.0}, "--latent-feedback must be below 1"),
        ({"kv_downsample": 3}, "--kv-downsample must be 1, 2 or 4"),
        ({"no_such_option": 1}, "unknown diffusers option"),
        ({"strength": "0.5"}, "strength must be a number"),  # the SDK passes values as they come
        ({"t_index_list": 32}, "--t-index takes comma-separated numbers"),
        ({"bank_size": 2.5}, "bank-size must be a whole number"),
        ({"kv_downsample": 2.0}, "kv-downsample must be a whole number"),
        ({"seed": True}, "seed must be a whole number"),
        ({"loras": ["org/style:nan"]}, "scale must be a finite number"),
        ({"latent_feedback": 0.3, "batch_mode": "stream_batch"}, "needs --batch-mode latency"),
        ({"t_index_list": "20,40", "strength": 0.7}, "--strength and --t-index both pick"),
    ):
        with pytest.raises(UserError, match=reason) as err:
            DiffusersOptions.from_kwargs(**kwargs)
        assert "\n" not in str(err.value)
    assert DiffusersOptions.from_kwargs(loras="org/style").loras == (LoraSpec("org/style"),)
    assert LoraSpec.parse("org/style:0.7") == LoraSpec("org/style", 0.7)
    assert LoraSpec.parse("C:/loras/style.safetensors") == LoraSpec("C:/loras/style.safetensors")
    assert DiffusersOptions.from_kwargs(t_index_list="32,45").t_index_list == (32, 45)


# -- LoRA ------------------------------------------------------------------------
def test_lora_changes_output_and_scale_zero_does_not(tiny: dict[str, Path]) -> None:
    images = frames(1)
    base = run(load(tiny, vae="full"), images)[0][0]
    lora = run(load(tiny, vae="full", loras=[f"{tiny['lora']}:1.0"]), images)[0][0]
    zero = run(load(tiny, vae="full", loras=[f"{tiny['lora']}:0.0"]), images)[0][0]
    assert diff(base, lora) > 2
    assert diff(base, zero) <= 1


def test_a_second_lora_on_the_same_layers_is_fused_too(tiny: dict[str, Path]) -> None:
    images = frames(1)
    once = run(load(tiny, vae="full", loras=[f"{tiny['lora']}:1.0"]), images)[0][0]
    halves = [f"{tiny['lora']}:0.5", f"{tiny['lora']}:0.5"]  # the same layers twice
    twice = run(load(tiny, vae="full", loras=halves), images)[0][0]
    assert diff(once, twice) <= 1  # two halves of one LoRA fuse to the whole


def test_lora_that_does_not_fit(tiny: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not fit"):
        load(tiny, loras=[str(tiny["sdxl_unet_lora"])])
    from safetensors.torch import save_file

    sdxl_lora = tmp_path / "sdxl_lora.safetensors"
    key = "text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight"
    save_file({key: torch.zeros(4, 32)}, str(sdxl_lora))
    with pytest.raises(UserError, match="SDXL LoRA"):
        load(tiny, loras=[str(sdxl_lora)])
    with pytest.raises(UserError, match="does not exist"):
        load(tiny, loras=[str(tmp_path / "nope.safetensors")])


# -- prompts ---------------------------------------------------------------------
def test_output_changes_when_the_prompt_changes(tiny: dict[str, Path]) -> None:
    model = load(tiny, vae="full")
    image = frames(1)
    a = run(model, image, "a cat")[0][0]
    b = run(model, image, "a neon city at night")[0][0]
    again = run(model, image, "a cat")[0][0]
    assert diff(a, b) > 2
    assert diff(a, again) == 0  # fixed noise per stream: deterministic


def test_set_prompt_transition_through_the_engine(tiny: dict[str, Path]) -> None:
    model = load(tiny, vae="full")
    image = frames(1)[0]
    engine = StreamEngine(model=model, prompt="a cat", device="cpu")
    a = engine.process(image)
    engine.set_prompt("a neon city at night", transition_frames=3)
    mid = engine.process(image)  # 1/3 of the way (slerp of the cached embeddings)
    engine.process(image)
    end = engine.process(image)
    b = StreamEngine(model=model, prompt="a neon city at night", device="cpu").process(image)
    assert diff(end, b) == 0
    assert diff(mid, a) > 0 and diff(mid, b) > 0


def test_mix_prompts_is_slerp(tiny: dict[str, Path]) -> None:
    model = load(tiny)
    a, b = model.encode_prompt("a cat"), model.encode_prompt("a dog")
    assert torch.allclose(model.mix_prompts(a, b, 0.0).embeds, a.embeds, atol=1e-5)
    assert torch.allclose(model.mix_prompts(a, b, 1.0).embeds, b.embeds, atol=1e-5)
    mid = model.mix_prompts(a, b, 0.5).embeds
    lerp = (a.embeds + b.embeds) / 2
    # slerp keeps the norm where linear blending shrinks it: strictly, on the tokens
    # where the prompts differ, and the same elsewhere (the shared start token)
    differ = (a.embeds - b.embeds).norm(dim=-1) > 1e-3 * a.embeds.norm(dim=-1)
    assert differ.any()
    assert (mid.norm(dim=-1)[differ] > lerp.norm(dim=-1)[differ] + 1e-4).all()
    torch.testing.assert_close(mid[~differ], lerp[~differ], atol=1e-4, rtol=1e-4)


# -- stream batch, RCFG, similarity filter, bank, feedback ------------------------
def test_stream_batch_matches_sequential_with_lag(tiny: dict[str, Path]) -> None:
    idx = "10,25,40"  # three stages: stream batch lags by two frames
    images = frames(6)
    seq = run(load(tiny, t_index_list=idx, batch_mode="latency_first"), images)[0]
    bat = run(load(tiny, t_index_list=idx, batch_mode="stream_batch"), images)[0]
    for i in range(len(images) - 2):
        assert diff(bat[i + 2], seq[i]) <= 2, i


def test_stream_batch_lag_is_reported_and_refused_for_files(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    model = load(tiny, t_index_list="10,25,40", batch_mode="stream_batch")
    assert model.lag_frames(3) == 2 and load(tiny).lag_frames(3) == 0
    engine = StreamEngine(model, device="cpu", max_steps=3, prompt="a cat")
    with pytest.raises(UserError, match=r"2 frame.*late.*latency_first for files"):
        engine.start(MEDIA / "walk.mkv", output=tmp_path / "out.mp4", mode="offline")
    assert not (tmp_path / "out.mp4").exists()
    engine.start(MEDIA / "walk.mkv", mode="live", max_frames=4, on_frame=lambda image: None)
    assert engine.wait(timeout=60).extra["lag_frames"] == 2
    with pytest.raises(UserError, match="--flow-blend needs --batch-mode latency_first"):
        DiffusersOptions.from_kwargs(batch_mode="stream_batch", flow_blend=0.3)


@pytest.mark.parametrize("guidance", ["full", "self", "initialize"])
def test_guidance_modes_run_and_change_output(tiny: dict[str, Path], guidance: str) -> None:
    images = frames(3)
    base = run(load(tiny, vae="full", t_index_list="20,40"), images)[0]
    kw = {"guidance": guidance, "guidance_scale": 3.0}
    if guidance != "self":  # self's negative is virtual: it reads no negative prompt
        kw["negative_prompt"] = "blurry"
    guided, state = run(load(tiny, vae="full", t_index_list="20,40", **kw), images)
    assert diff(base[-1], guided[-1]) > 0
    if guidance != "full":  # the stock noise moved away from the fixed noise
        assert not torch.allclose(state.stock, state.noise)
    plain = run(
        load(tiny, vae="full", t_index_list="20,40", guidance=guidance, guidance_scale=1.0),
        images,
    )[0]
    assert diff(base[-1], plain[-1]) == 0  # guidance scale 1 is no guidance


def test_similarity_filter_skips_duplicates_but_not_forever(tiny: dict[str, Path]) -> None:
    model = load(tiny, similarity_threshold=0.98, similarity_max_skip=3)
    still = frames(1)[0]
    outs, state = run(model, [still] * 9)
    assert state.skipped_total == 6  # process, skip 3, process, skip 3, process
    assert all(np.array_equal(o, outs[0]) and o is not outs[0] for o in outs[1:4])
    # a frame the caller draws on is its own: the skipped frame after it is not touched
    model = load(tiny, similarity_threshold=0.98, similarity_max_skip=3)
    state = model.init_state(SIZE, SIZE)
    drawn, state = model.step(still, None, state, 1)
    made = drawn.copy()
    drawn[:8] = 255  # an overlay, in place
    skipped, state = model.step(still, None, state, 1)
    assert state.skipped_total == 1 and np.array_equal(skipped, made)
    moving = frames(6)
    _, state = run(load(tiny, similarity_threshold=0.999, similarity_max_skip=3), moving)
    assert state.skipped_total == 0
    # a new prompt is drawn at once, still scene or not
    model = load(tiny, similarity_threshold=0.98, similarity_max_skip=3)
    first, second = model.encode_prompt("a cat"), model.encode_prompt("a dog")
    state = model.init_state(SIZE, SIZE)
    outs = []
    for cond in (first, first, second, second):
        out, state = model.step(still, cond, state, 1)
        outs.append(out)
    assert state.skipped_total == 2  # the second frame of each prompt
    assert not np.array_equal(outs[2], outs[1]) and np.array_equal(outs[3], outs[2])
    # through the engine, whose prompt schedule hands the same conditioning each frame
    engine = StreamEngine(load(tiny, similarity_threshold=0.98, similarity_max_skip=3),
                          device="cpu", prompt="a cat")  # fmt: skip
    for _ in range(4):
        engine.process(still)
    assert engine._processor._state.skipped_total == 3


def test_feature_bank_changes_output(tiny: dict[str, Path]) -> None:
    images = frames(3)
    base = run(load(tiny, vae="full"), images)[0]
    banked, state = run(load(tiny, vae="full", bank_size=2), images)
    assert diff(base[0], banked[0]) == 0  # nothing in the bank at the first frame
    assert diff(base[-1], banked[-1]) > 0
    assert state.bank.count == 2


# -- token downsampling (ToDo) ------------------------------------------------------
def test_pooled_kv_is_exact_on_block_constant_features() -> None:
    """Keys/values pooled 2x2 give the same attention when every 2x2 block is constant.

    Attention over four copies of each key weighs each copy 1/4 as much: the same result.
    On features that vary inside blocks, the pooled result differs.
    """
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(0)
    attn = Attention(query_dim=16, heads=2, dim_head=8).eval()
    ctx = BankContext()
    ctx.latent_size = (8, 12)
    exact, pooled = BankAttnProcessor("a", ctx, 1), BankAttnProcessor("a", ctx, 2)
    blocks = torch.randn(1, 16, 4, 6).repeat_interleave(2, 2).repeat_interleave(2, 3)
    smooth = blocks.flatten(2).transpose(1, 2)  # (1, 96, 16), constant on 2x2 blocks
    rough = torch.randn(1, 96, 16)
    with torch.no_grad():
        assert torch.allclose(exact(attn, smooth), pooled(attn, smooth), atol=1e-5)
        assert not torch.allclose(exact(attn, rough), pooled(attn, rough), atol=1e-3)
        ctx.latent_size = (16, 24)  # a layer below the latent's full resolution: untouched
        assert torch.equal(exact(attn, rough), pooled(attn, rough))


def test_kv_downsample_pools_sdxl_whose_first_block_has_no_attention(
    tiny: dict[str, Path],
) -> None:
    images = frames(2)
    exact = run(load(tiny, "sdxl"), images)[0]
    pooled = run(load(tiny, "sdxl", kv_downsample=2), images)[0]
    assert diff(exact[-1], pooled[-1]) > 0  # the half-resolution attention layers pooled


def test_stream_batch_lag_follows_the_t_index_list(tiny: dict[str, Path]) -> None:
    model = load(tiny, t_index_list="20,35,45", batch_mode="stream_batch")
    assert model.lag_frames(1) == 2  # three stages run, whatever the steps asked for
    assert load(tiny, t_index_list="20,35,45").lag_frames(1) == 0


def test_strength_blends_a_lagging_output_with_its_own_input(tiny: dict[str, Path]) -> None:
    """stream_batch outputs frame i - 2 at frame i: the blend takes that frame's input."""
    images = frames(6)

    def outputs(strength: float) -> list[np.ndarray]:
        model = load(tiny, t_index_list="10,25,40", batch_mode="stream_batch")
        engine = StreamEngine(model, device="cpu", max_steps=3, prompt="a cat", strength=strength)
        return [engine.process(image) for image in images]

    full, half = outputs(1.0), outputs(0.5)
    for i in range(2, len(images)):
        expected = cv2.addWeighted(full[i], 0.5, images[i - 2], 0.5, 0.0)
        assert np.abs(half[i].astype(np.int16) - expected).max() <= 1
    assert diff(half[5], cv2.addWeighted(full[5], 0.5, images[5], 0.5, 0.0)) > 1


def test_stats_report_the_steps_the_t_index_runs(tiny: dict[str, Path]) -> None:
    model = load(tiny, t_index_list="20,35,45")
    assert model.steps_run(1) == 3 and load(tiny).steps_run(2) == 2
    engine = StreamEngine(model, device="cpu", max_steps=1, prompt="a cat")  # asks for 1
    engine.start(MEDIA / "walk.mkv", max_frames=2, on_frame=lambda image: None)
    assert engine.wait(timeout=60).steps == 3
    engine.process(np.zeros((SIZE, SIZE, 3), np.uint8))
    assert engine.stats().steps == 3


def test_unsupported_pipelines_are_refused(tiny: dict[str, Path], tmp_path: Path) -> None:
    import json
    import shutil

    other = tmp_path / "inpaint"
    shutil.copytree(tiny["sd"], other)
    index = json.loads((other / "model_index.json").read_text())
    (other / "model_index.json").write_text(
        json.dumps({**index, "_class_name": "StableDiffusionInpaintPipeline"})
    )
    with pytest.raises(UserError, match="'StableDiffusionInpaintPipeline' models are not"):
        load_diffusers_model(str(other), LoadOptions(device="cpu"), DiffusersOptions())
    (other / "model_index.json").write_text(json.dumps(index))
    from diffusers import UNet2DConditionModel

    config = UNet2DConditionModel.load_config(other / "unet")
    shutil.rmtree(other / "unet")  # an inpainting UNet: latent, mask and masked image in
    UNet2DConditionModel.from_config({**config, "in_channels": 9}).save_pretrained(other / "unet")
    with pytest.raises(UserError, match="UNet of 9 input channels"):
        load_diffusers_model(str(other), LoadOptions(device="cpu"), DiffusersOptions())


def test_kv_downsample_runs_and_shrinks_the_feature_bank(tiny: dict[str, Path]) -> None:
    images = frames(3)
    full, full_state = run(load(tiny, bank_size=2), images)
    pooled, pooled_state = run(load(tiny, bank_size=2, kv_downsample=2), images)
    assert pooled[-1].shape == full[-1].shape and diff(full[-1], pooled[-1]) > 0
    # the layers at full latent resolution keep a quarter of the keys/values
    assert pooled_state.bank.nbytes < full_state.bank.nbytes


def _bank_bounded(tiny: dict[str, Path], n: int, merge: str) -> None:
    model = load(tiny, bank_size=4, bank_merge=merge)
    cond = model.encode_prompt("a cat")
    state = model.init_state(SIZE, SIZE)
    image = frames(1)[0]
    sizes = []
    for i in range(n):
        _, state = model.step(np.roll(image, i, axis=1), cond, state, 1)
        sizes.append(state.bank.nbytes)
        assert state.bank.count == min(i + 1, 4)
    assert state.bank.seen == n
    assert max(sizes) == sizes[3] == sizes[-1]  # allocated once, never grows


def test_streams_on_several_threads_keep_their_own_feature_bank(tiny: dict[str, Path]) -> None:
    """Studio sessions share one model on their own threads: each sees only its own bank."""
    model = load(tiny, bank_size=2)
    inputs = [frames(4, seed=30), frames(4, seed=31)]
    alone = [run(model, images)[0] for images in inputs]
    assert on_two_threads(model, inputs) == alone


def test_a_compiled_cuda_model_runs_every_stream_on_its_one_graph_thread(
    tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """CUDA graph trees are per thread: with them, the frames of every stream (studio
    sessions, each on its own thread) run on one thread, each with its own bank, and give
    what they give alone. (The thread is what `_compile` makes on CUDA; set here on CPU.)"""
    from mirage_lsd.models.diffusers_backend.stream import GraphThread

    model = load(tiny, bank_size=2)
    inputs = [frames(4, seed=40), frames(4, seed=41)]
    alone = [run(model, images)[0] for images in inputs]
    model._graph_thread = GraphThread()
    ran_on: list[str] = []
    transform = model._transform

    def recording(*args: object) -> object:
        assert torch.is_inference_mode_enabled()
        ran_on.append(threading.current_thread().name)
        return transform(*args)

    monkeypatch.setattr(model, "_transform", recording)
    assert on_two_threads(model, inputs) == alone
    assert len(ran_on) == 8 and set(ran_on) == {"mirage-cuda-graphs"}


def test_feature_bank_memory_bounded_1000_frames(tiny: dict[str, Path]) -> None:
    _bank_bounded(tiny, 1000, "fifo")  # ~6 s on one core


def test_feature_bank_merge_policy_bounded_100_frames(tiny: dict[str, Path]) -> None:
    _bank_bounded(tiny, 100, "merge")


def test_feature_bank_unit() -> None:
    bank = FeatureBank(3, "fifo")
    for i in range(10):
        bank.add({"l": (torch.full((5, 2), float(i)), torch.zeros(5, 2))})
    k, _ = bank.kv("l")
    assert k.shape == (1, 15, 2)
    assert sorted(set(k.flatten().tolist())) == [7.0, 8.0, 9.0]  # the newest three


def test_latent_feedback_and_flow_blend_use_the_previous_output(tiny: dict[str, Path]) -> None:
    images = frames(3)
    base = run(load(tiny, vae="full"), images)[0]
    for kw in ({"latent_feedback": 0.5}, {"flow_blend": 0.5}):
        outs = run(load(tiny, vae="full", **kw), images)[0]
        assert diff(base[0], outs[0]) == 0, kw  # no previous output yet
        assert diff(base[-1], outs[-1]) > 0, kw


# -- sampling math against closed forms --------------------------------------------
def test_sampler_recovers_x0_with_an_oracle() -> None:
    alphas = torch.linspace(0.999, 0.01, 1000)
    sch = Schedule.build(strength_timesteps(0.6, 3), alphas)
    assert sch.timesteps.tolist() == [599, 399, 199]
    assert index_timesteps((32, 45)) == [359, 99]
    x0 = torch.randn(3, 4, 8, 8)
    eps = torch.randn(3, 4, 8, 8)
    x = add_noise(x0, eps, sch.a, sch.b)
    assert torch.allclose(predict_x0(x, eps, sch.a, sch.b), x0, atol=1e-4)
    v = sch.a.view(-1, 1, 1, 1) * eps - sch.b.view(-1, 1, 1, 1) * x0
    assert torch.allclose(to_eps(v, x, sch.a, sch.b, "v_prediction"), eps, atol=1e-4)


def test_lcm_distilled_unet_gets_its_guidance_embedding(tmp_path: Path) -> None:
    from diffusers import LatentConsistencyModelPipeline

    from mirage_lsd.models.diffusers_backend.sampler import guidance_embedding

    ref = LatentConsistencyModelPipeline.get_guidance_scale_embedding(
        None, torch.tensor([7.5]), embedding_dim=32
    )
    assert torch.allclose(guidance_embedding(8.5, 32), ref, atol=1e-5)
    folder = save_tiny_sd(tmp_path / "lcm", lcm=True)
    model = load_diffusers_model(str(folder), LoadOptions(), DiffusersOptions(vae="full"))
    outs, _ = run(model, frames(1))
    assert outs[0].shape == (SIZE, SIZE, 3)
    # without CFG, --guidance-scale is that model's own guidance, given to the embedding
    options = DiffusersOptions(vae="full", guidance_scale=1.5)
    softer = load_diffusers_model(str(folder), LoadOptions(), options)
    assert diff(outs[0], run(softer, frames(1))[0][0]) > 0
    assert torch.allclose(softer._w_embedding, guidance_embedding(1.5, 32))
    # with CFG it is the CFG scale, and the embedding keeps the LCM default
    options = DiffusersOptions(vae="full", guidance="full", guidance_scale=2.0)
    cfg = load_diffusers_model(str(folder), LoadOptions(), options)
    assert torch.allclose(cfg._w_embedding, guidance_embedding(8.5, 32))


def test_guidance_options_that_would_be_ignored_are_refused(tiny: dict[str, Path]) -> None:
    for guidance in ("none", "self"):
        with pytest.raises(UserError, match="--negative-prompt needs --guidance full or initi"):
            DiffusersOptions(guidance=guidance, negative_prompt="blurry")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="--guidance-scale needs --guidance full, self or init"):
        load(tiny, guidance_scale=3.0)  # plain SD, no guidance: the scale would do nothing
    assert load(tiny, guidance="full", guidance_scale=3.0, negative_prompt="blurry")


def test_slerp_endpoints_and_norm() -> None:
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    mid = slerp(a, b, 0.5)
    assert torch.allclose(mid.norm(), torch.tensor(1.0), atol=1e-5)
    assert torch.allclose(slerp(a, a, 0.3), a)


def test_bf16_autocast_path_runs(tiny: dict[str, Path]) -> None:
    """bf16 autocast is on only where the CPU has AMX; force it to check the path works."""
    from mirage_lsd.models.diffusers_backend.stream import cpu_has_amx

    model = load(tiny, vae="full", batch_mode="stream_batch", guidance="self", bank_size=2)
    assert model.bf16 == cpu_has_amx()
    model.bf16 = True
    outs, _ = run(model, frames(3), steps=2)
    assert outs[-1].shape == (SIZE, SIZE, 3) and outs[-1].dtype == np.uint8


# -- torch.compile ---------------------------------------------------------------
def load_compiled(tiny: dict[str, Path], **kwargs: object) -> StreamModel:
    kwargs.setdefault("vae", str(tiny["taesd"]))
    options = DiffusersOptions.from_kwargs(**kwargs)
    return load_diffusers_model(str(tiny["sd"]), LoadOptions(device="cpu", compile=True), options)


@pytest.mark.slow  # compiles a UNet and a VAE: about a minute on 2 cores with a cold cache
def test_compiled_unet_and_vae_give_the_eager_frames(tiny: dict[str, Path]) -> None:
    images = frames(3)
    eager, _ = run(load(tiny), images)
    compiled, _ = run(load_compiled(tiny), images)
    for a, b in zip(eager, compiled, strict=True):
        assert diff(a, b) <= 2


def test_compile_with_a_feature_bank_is_refused(tiny: dict[str, Path]) -> None:
    with pytest.raises(UserError, match="--compile does not go with --bank-size"):
        load_compiled(tiny, bank_size=4)


def test_compiler_failure_falls_back_to_eager(
    tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from torch._dynamo.exc import TorchDynamoException

    def broken_compile(module: torch.nn.Module, **kwargs: object) -> object:
        def fail(*args: object, **kw: object) -> None:
            raise TorchDynamoException("no C++ compiler found")

        return type("Broken", (torch.nn.Module,), {"forward": fail})()

    monkeypatch.setattr(torch, "compile", broken_compile)
    images = frames(2)
    with caplog.at_level("WARNING"):
        model = load_compiled(tiny)
        assert model.info.compile
        out, _ = run(model, images)
    assert "torch.compile failed, running uncompiled: no C++ compiler found" in caplog.text
    assert not model.info.compile  # what `bench --json` reports: it did not run compiled
    eager, _ = run(load(tiny), images)
    assert all(diff(a, b) == 0 for a, b in zip(eager, out, strict=True))
    # studio sessions share the model: a stream whose compiled call fails just after
    # another stream switched the modules back retries eagerly, it does not die
    unet = model.unet

    class SwitchedMeanwhile(torch.nn.Module):
        def __getattr__(self, name: str) -> object:  # the UNet's config, dtype, ...
            return getattr(unet, name)

        def forward(self, *args: object, **kw: object) -> None:
            model.unet = unet  # the other stream's switch, while this call was running
            raise TorchDynamoException("no C++ compiler found")

    model.unet = SwitchedMeanwhile()
    again, _ = run(model, images)
    assert all(diff(a, b) == 0 for a, b in zip(eager, again, strict=True))


@pytest.mark.gpu  # `pytest -m gpu` on a machine with CUDA
def test_cuda_fp16_compiled_stream_runs(tiny: dict[str, Path]) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    options = DiffusersOptions.from_kwargs(vae=str(tiny["taesd"]))
    opts = LoadOptions(device="cuda", dtype="float16", compile=True)
    model = load_diffusers_model(str(tiny["sd"]), opts, options)
    outs, _ = run(model, frames(4))
    eager, _ = run(load(tiny), frames(4))
    assert all(o.shape == (SIZE, SIZE, 3) and o.dtype == np.uint8 for o in outs)
    assert np.mean([diff(a, b) for a, b in zip(outs, eager, strict=True)]) < 64  # fp16 vs fp32
