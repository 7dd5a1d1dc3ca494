"""From a model spec to loaded components: hub id, diffusers folder or single file.

Hub ids are downloaded once into the Hugging Face cache (with its progress bar); when
the hub is offline (HF_HUB_OFFLINE, or no network) and the model is not cached, the
user gets one line with the exact `hf download` command. LoRAs are fused into the UNet
and the VAE is chosen here (TAESD by default).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mirage_lsd.errors import UserError, first_line
from mirage_lsd.models.diffusers_backend.options import DiffusersOptions, LoraSpec

log = logging.getLogger(__name__)

Family = Literal["sd", "sdxl"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_SINGLE_FILE = (".safetensors", ".ckpt")
#: TAESD for each family (madebyollin's tiny autoencoders).
TINY_VAE: dict[Family, str] = {"sd": "madebyollin/taesd", "sdxl": "madebyollin/taesdxl"}


@dataclass
class Components:
    """Loaded parts of an SD / SDXL pipeline, ready for the stream model."""

    name: str
    family: Family
    unet: Any
    vae: Any  # AutoencoderKL or AutoencoderTiny
    text_encoders: list[Any]
    tokenizers: list[Any]
    scheduler_config: dict[str, Any]
    # SDXL: an empty negative prompt is all zeros, not the encoding of "" (as diffusers does)
    zero_empty_negative: bool = True


def looks_like_diffusers_spec(spec: str) -> bool:
    """A hub id 'org/name', a path (existing or not: the loader says what is wrong) or a
    .safetensors/.ckpt file name."""
    if not isinstance(spec, str) or not spec.strip():
        return False
    if spec.lower().endswith(_SINGLE_FILE) or Path(spec).exists():
        return True
    return bool(_HUB_ID.match(spec)) or spec.startswith((".", "~", "/")) or os.sep in spec


def hub_offline() -> bool:
    """HF_HUB_OFFLINE set now (env) or when huggingface_hub was imported."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _download_hint(repo_id: str) -> str:
    return f"download it once with `hf download {repo_id}`"


def hub_snapshot(
    repo_id: str, *, allow: list[str] | None = None, ignore: list[str] | None = None
) -> Path:
    """The local folder of a hub repo: from the cache, else downloaded (with progress)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    # 1. cached already: no network at all
    try:
        return Path(
            snapshot_download(
                repo_id, allow_patterns=allow, ignore_patterns=ignore, local_files_only=True
            )
        )
    except LocalEntryNotFoundError:
        pass  # not cached, or only partly (IncompleteSnapshotError)
    # 2. offline: say what to run
    if hub_offline():
        raise UserError(
            f"'{repo_id}' is not in the Hugging Face cache and the hub is offline "
            f"(HF_HUB_OFFLINE): {_download_hint(repo_id)}"
        ) from None
    # 3. download (huggingface_hub draws the progress bar)
    log.info("downloading %s into the Hugging Face cache", repo_id)
    try:
        return Path(snapshot_download(repo_id, allow_patterns=allow, ignore_patterns=ignore))
    except GatedRepoError:
        raise UserError(
            f"'{repo_id}' is gated: accept its license on huggingface.co, run `hf auth login`, "
            f"then {_download_hint(repo_id)}"
        ) from None
    except RepositoryNotFoundError:
        raise UserError(
            f"no model '{repo_id}' on the Hugging Face hub (or it is private): check the name"
        ) from None
    except Exception as exc:  # connection refused, DNS, timeouts, proxies: all the same fix
        raise UserError(
            f"could not download '{repo_id}' from the Hugging Face hub ({type(exc).__name__}): "
            f"check the network, or {_download_hint(repo_id)} where the hub is reachable"
        ) from None


# -- the model -------------------------------------------------------------------
#: What says whether a hub model can run, fetched before its weights.
HEAD_FILES = ["model_index.json", "unet/config.json"]


#: The folders whose weights a stream reads.
WEIGHT_FOLDERS = ("unet", "vae", "text_encoder", "text_encoder_2")
_CONFIGS = [
    "model_index.json",
    "scheduler/*",
    "tokenizer/*",
    "tokenizer_2/*",
    "*/config.json",
    "*/*.safetensors.index*.json",
]
_NEVER_READ = ["*non_ema*"]  # SD 1.5's training copy of its UNet: 3.4 GB
_HALF = ["*.fp16.*", "*.fp16-*"]  # the fp16 variant's files (single or sharded)


def hub_weights(repo_id: str, fp16: bool) -> Path:
    """A hub pipeline's configs and the weights a stream reads, and no others.

    In half precision a folder's fp16 variant is read when the repo has one, so only it
    is fetched, and the full-precision weights (twice its size) only for folders without
    one. Both passes read the cache first, so this works offline too once the model is
    there.
    """
    plain = [f"{folder}/*.safetensors" for folder in WEIGHT_FOLDERS]
    if not fp16:
        return hub_snapshot(repo_id, allow=_CONFIGS + plain, ignore=_NEVER_READ + _HALF)
    halves = [f"{folder}/*.fp16*.safetensors" for folder in WEIGHT_FOLDERS]
    snapshot = hub_snapshot(repo_id, allow=_CONFIGS + halves, ignore=_NEVER_READ)
    missing = [
        folder
        for folder in WEIGHT_FOLDERS
        if (snapshot / folder / "config.json").is_file()
        and not any((snapshot / folder).glob("*.safetensors"))
    ]
    if not missing:
        return snapshot
    rest = [f"{folder}/*.safetensors" for folder in missing]
    return hub_snapshot(repo_id, allow=_CONFIGS + rest, ignore=_NEVER_READ + _HALF)


#: Pipelines whose UNet takes a plain 4-channel latent (no inpainting mask, no depth or
#: image channels), by family.
SUPPORTED_PIPELINES: dict[str, Family] = {
    "StableDiffusionPipeline": "sd",
    "StableDiffusionImg2ImgPipeline": "sd",
    "LatentConsistencyModelPipeline": "sd",
    "LatentConsistencyModelImg2ImgPipeline": "sd",
    "StableDiffusionXLPipeline": "sdxl",
    "StableDiffusionXLImg2ImgPipeline": "sdxl",
}


def _family_of(class_name: str) -> Family:
    family = SUPPORTED_PIPELINES.get(class_name)
    if family is None:
        raise UserError(
            f"'{class_name or 'unknown'}' models are not supported: use a text-to-image or "
            "image-to-image SD 1.5, SD 2.1, SDXL or LCM pipeline"
        )
    return family


def _check_unet(unet: Any, spec: str) -> None:
    """Refuse UNets that take more than a latent (inpainting, depth, instruct-pix2pix)."""
    _check_channels(int(getattr(unet.config, "in_channels", 4)), spec)


def _check_channels(channels: int, spec: str) -> None:
    if channels != 4:
        raise UserError(
            f"'{spec}' has a UNet of {channels} input channels (an inpainting, depth or "
            "instruction model): use a text-to-image or image-to-image model"
        )


def _check_pipeline(folder: Path, spec: str) -> tuple[Family, dict[str, Any]]:
    """The pipeline's family and model_index.json, checked with its UNet config alone: a
    hub model that cannot run is refused before gigabytes of its weights download."""
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        raise UserError(
            f"'{spec}' is not a diffusers pipeline (no model_index.json): a LoRA, UNet or "
            "VAE repository cannot run alone; give the pipeline it belongs to"
        )
    try:
        index = json.loads(index_file.read_text())
        unet_file = folder / "unet" / "config.json"
        unet = json.loads(unet_file.read_text()) if unet_file.is_file() else {}
    except (OSError, ValueError) as exc:
        raise UserError(f"'{spec}' has an unreadable config: {first_line(exc)}") from None
    family = _family_of(str(index.get("_class_name", "")))
    encoder = index.get("text_encoder")
    if not isinstance(encoder, list) or not encoder or encoder[0] is None:  # SDXL refiner
        raise UserError(
            f"'{spec}' has no text encoder (an SDXL refiner?): use a text-to-image or "
            "image-to-image model"
        )
    _check_channels(int(unet.get("in_channels", 4)), spec)
    return family, index


def load_components(spec: str, options: DiffusersOptions, dtype: Any) -> Components:
    """Resolve `spec` and load UNet, VAE, text encoders and tokenizers (on CPU, `dtype`)."""
    # 1. where the weights are
    path = Path(os.path.expanduser(spec))
    fp16 = str(dtype).endswith("float16")
    if spec.lower().endswith(_SINGLE_FILE):
        if not path.is_file():
            raise UserError(f"model file '{spec}' does not exist: check the path")
        parts = _load_single_file(path, dtype)
    elif path.exists():
        if not path.is_dir() or not (path / "model_index.json").is_file():
            raise UserError(
                f"'{spec}' is not a diffusers model folder (no model_index.json): give a "
                "folder saved with save_pretrained, a .safetensors file or a hub id"
            )
        parts = _load_folder(path, spec, dtype, fp16)
    elif _HUB_ID.match(spec) and not spec.startswith((".", "~")):
        _check_pipeline(hub_snapshot(spec, allow=HEAD_FILES, ignore=[]), spec)  # KBs first
        parts = _load_folder(hub_weights(spec, fp16), spec, dtype, fp16)
    else:
        raise UserError(f"model path '{spec}' does not exist: check the path, or give a hub id")
    _check_unet(parts.unet, spec)
    # 2. LoRAs fused into the UNet (and text encoders), then the VAE choice
    if options.loras:
        apply_loras(parts, options.loras)
    return parts


def _load_folder(folder: Path, spec: str, dtype: Any, fp16: bool) -> Components:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    family, index = _check_pipeline(folder, spec)
    try:
        unet = UNet2DConditionModel.from_pretrained(
            folder, subfolder="unet", torch_dtype=dtype, variant=_variant(folder / "unet", fp16)
        )
        vae = AutoencoderKL.from_pretrained(
            folder, subfolder="vae", torch_dtype=dtype, variant=_variant(folder / "vae", fp16)
        )
        text = folder / "text_encoder"
        encoders: list[Any] = [
            CLIPTextModel.from_pretrained(text, dtype=dtype, variant=_variant(text, fp16))
        ]
        tokenizers = [CLIPTokenizer.from_pretrained(folder / "tokenizer")]
        if family == "sdxl":
            text = folder / "text_encoder_2"
            encoders.append(
                CLIPTextModelWithProjection.from_pretrained(
                    text, dtype=dtype, variant=_variant(text, fp16)
                )
            )
            tokenizers.append(CLIPTokenizer.from_pretrained(folder / "tokenizer_2"))
        sched = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        hint = f"; {_download_hint(spec)}" if _HUB_ID.match(spec) else ""
        raise UserError(
            f"'{spec}' is not a complete diffusers model ({_reason(exc)}){hint}"
        ) from None
    zero = bool(index.get("force_zeros_for_empty_prompt", True))
    return Components(spec, family, unet, vae, encoders, tokenizers, sched, zero)


def _variant(part: Path, fp16: bool) -> str | None:
    """ "fp16" where that part's fp16 weights are to be read: asked for half precision, or
    the only ones there (a folder saved with `save_pretrained(variant="fp16")`). Chosen
    per part: a repo may have fp16 files for the UNet and not for the VAE."""
    files = [p.name for p in part.glob("*.safetensors")]
    halves = [n for n in files if ".fp16" in n]
    plain = [n for n in files if ".fp16" not in n and "non_ema" not in n]
    return "fp16" if halves and (fp16 or not plain) else None


def _load_single_file(path: Path, dtype: Any) -> Components:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from safetensors import safe_open

    # 1. which family: SDXL checkpoints carry a second text encoder
    family: Family = "sd"
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), "pt") as f:
                keys = list(f.keys())
        except Exception:
            raise UserError(f"'{path}' is not a safetensors checkpoint: check the file") from None
        if any(k.startswith("conditioner.embedders.1") for k in keys):
            family = "sdxl"
        elif not any(k.startswith("model.diffusion_model.") for k in keys):
            raise UserError(
                f"'{path}' is not an SD / SDXL checkpoint (no UNet weights): check the file"
            )
    cls = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    # 2. diffusers maps the checkpoint with configs from the hub (cached after once)
    try:
        pipe = cls.from_single_file(str(path), torch_dtype=dtype, local_files_only=hub_offline())
    except Exception as exc:
        raise UserError(
            f"could not load '{path}' as a single-file checkpoint ({_reason(exc)}): the first load "
            "needs the network for its configs, or give a diffusers folder"
        ) from None
    encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if family == "sdxl" else [])
    tokenizers = [pipe.tokenizer] + ([pipe.tokenizer_2] if family == "sdxl" else [])
    return Components(
        str(path), family, pipe.unet, pipe.vae, encoders, tokenizers, dict(pipe.scheduler.config)
    )


# -- LoRA ------------------------------------------------------------------------
def _lora_file(source: str) -> Path:
    path = Path(os.path.expanduser(source))
    if path.exists():
        return path
    if _HUB_ID.match(source):
        return hub_snapshot(source, allow=["*.safetensors", "*.json"])
    raise UserError(f"LoRA '{source}' does not exist: give a .safetensors file, folder or hub id")


def _lora_keys(path: Path) -> list[str]:
    from safetensors import safe_open

    files = [path] if path.is_file() else sorted(path.glob("*.safetensors"))
    if not files:
        raise UserError(f"LoRA '{path}' has no .safetensors weights: check the path")
    try:
        with safe_open(str(files[0]), "pt") as f:
            return list(f.keys())
    except Exception:
        raise UserError(f"LoRA '{path}' is not a safetensors file: check the path") from None


def apply_loras(parts: Components, loras: tuple[LoraSpec, ...]) -> None:
    """Load each LoRA as a peft adapter with its scale, fuse them, drop the adapters."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    pipe: Any
    if parts.family == "sdxl":
        pipe = StableDiffusionXLPipeline(
            vae=parts.vae,
            text_encoder=parts.text_encoders[0],
            text_encoder_2=parts.text_encoders[1],
            tokenizer=parts.tokenizers[0],
            tokenizer_2=parts.tokenizers[1],
            unet=parts.unet,
            scheduler=_scheduler(parts.scheduler_config),
        )
    else:
        pipe = StableDiffusionPipeline(
            vae=parts.vae,
            text_encoder=parts.text_encoders[0],
            tokenizer=parts.tokenizers[0],
            unet=parts.unet,
            scheduler=_scheduler(parts.scheduler_config),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    names = []
    for i, lora in enumerate(loras):
        path = _lora_file(lora.source)
        keys = _lora_keys(path)
        sdxl_lora = any("text_encoder_2" in k or "lora_te2" in k for k in keys)
        if sdxl_lora and parts.family != "sdxl":
            raise UserError(
                f"LoRA '{lora.source}' is an SDXL LoRA but '{parts.name}' is an SD 1.5/2.1 "
                "model: use a LoRA made for this model"
            )
        name = f"lora{i}"
        try:
            with _quiet("diffusers"):  # it logs the whole state-dict error before raising
                pipe.load_lora_weights(str(path), adapter_name=name)
        except Exception as exc:
            raise UserError(
                f"LoRA '{lora.source}' does not fit model '{parts.name}' ({_reason(exc)}): "
                "use a LoRA made for this model family"
            ) from None
        if not _lora_layer_count(parts.unet, name) and not sdxl_lora:
            raise UserError(
                f"LoRA '{lora.source}' does not fit model '{parts.name}' (none of its layers "
                "match the UNet): use a LoRA made for this model family"
            )
        names.append(name)
    pipe.set_adapters(names, adapter_weights=[lora.scale for lora in loras])
    pipe.fuse_lora(adapter_names=names, lora_scale=1.0)
    pipe.unload_lora_weights()


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _reason(exc: Exception) -> str:
    """The most telling line of a long error (a shape mismatch if there is one)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "mismatch" in line:
            return line[:200]
    return lines[0][:200] if lines else type(exc).__name__


def _lora_layer_count(unet: Any, adapter: str) -> int:
    """UNet layers that adapter `adapter` adds to (peft keeps one `lora_A` container per
    layer, holding every adapter loaded on it: count this adapter's own entries)."""
    return sum(1 for n, _ in unet.named_modules() if n.endswith(f"lora_A.{adapter}"))


def _scheduler(config: dict[str, Any]) -> Any:
    from diffusers import LCMScheduler

    return LCMScheduler.from_config(config)


# -- VAE -------------------------------------------------------------------------
def load_vae(choice: str, parts: Components, device: str, dtype: Any) -> Any:
    """'auto' (TAESD on CPU; on CUDA TAESD when it can be had, else the full VAE),
    'tiny', 'full', or a hub id / folder / .safetensors of a VAE."""
    from diffusers import AutoencoderKL, AutoencoderTiny

    if choice == "full":
        return parts.vae
    if choice in ("auto", "tiny"):
        repo = TINY_VAE[parts.family]
        allow = ["*.json", "*.safetensors"]
        if choice == "auto" and device.startswith("cuda"):
            try:
                folder = hub_snapshot(repo, allow=allow)
            except UserError as exc:
                log.warning("using the full VAE: %s", exc)
                return parts.vae
        else:
            folder = hub_snapshot(repo, allow=allow)
        return AutoencoderTiny.from_pretrained(folder, torch_dtype=dtype)
    path = Path(os.path.expanduser(choice))
    if path.is_file():
        try:
            vae = AutoencoderKL.from_single_file(str(path), torch_dtype=dtype)
        except Exception as exc:
            raise UserError(
                f"--vae '{choice}' is not a VAE checkpoint ({exc}): check the file"
            ) from None
        # a bare VAE file does not say its family: diffusers assumes SD 1.5's latent
        # scale, which would wash out an SDXL model's frames; the model's own VAE knows
        if parts.vae is not None:
            vae.register_to_config(scaling_factor=parts.vae.config.scaling_factor)
        return vae
    if not path.exists() and not _HUB_ID.match(choice):
        raise UserError(
            f"--vae '{choice}' does not exist: use auto, tiny, full, a folder or hub id"
        )
    folder = path if path.exists() else hub_snapshot(choice)
    config = folder / "config.json"
    if not config.is_file():
        raise UserError(f"--vae '{choice}' is not a diffusers VAE folder (no config.json)")
    cls_name = json.loads(config.read_text()).get("_class_name", "")
    cls = {"AutoencoderTiny": AutoencoderTiny, "AutoencoderKL": AutoencoderKL}.get(cls_name)
    if cls is None:
        raise UserError(f"--vae '{choice}' is a {cls_name or 'unknown'} model, not a VAE")
    return cls.from_pretrained(folder, torch_dtype=dtype)
