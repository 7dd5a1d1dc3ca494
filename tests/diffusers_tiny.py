"""Tiny diffusers pipelines built from configs with a fixed seed (no hub access).

`save_tiny_sd(dir)` / `save_tiny_sdxl(dir)` write a diffusers-format model folder
(model_index.json, unet, vae, text encoder(s), tokenizer(s), scheduler) that loads
through the same path a user's `--model DIR` takes. `save_tiny_taesd(dir)` writes a
tiny AutoencoderTiny, `save_tiny_lora(dir, unet_dir)` a diffusers-format LoRA made
with peft. Weights are random: outputs are noise, but every code path runs for real.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

SEED = 0
#: Text encoders' hidden size; SDXL concatenates two of them.
TEXT_DIM = 32
#: Four VAE blocks: latents are 1/8 of the frame side, as in real SD models.
VAE_CHANNELS = (8, 8, 8, 8)


def _byte_chars() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for bytes (GPT-2 / CLIP)."""
    keep = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars, extra = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def write_tokenizer(folder: Path) -> None:
    """A CLIP tokenizer whose vocabulary is single characters (no merges), saved to `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = _byte_chars()
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer(
        vocab={t: i for i, t in enumerate(tokens)}, merges=[], model_max_length=77
    )
    tokenizer.save_pretrained(folder)


def _text_encoder(projection: bool) -> torch.nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        bos_token_id=512,
        eos_token_id=513,
        pad_token_id=513,
        hidden_size=TEXT_DIM,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=520,
        max_position_embeddings=77,
        projection_dim=TEXT_DIM,
        hidden_act="gelu",
    )
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


def _vae() -> torch.nn.Module:
    from diffusers import AutoencoderKL

    n = len(VAE_CHANNELS)
    return AutoencoderKL(
        block_out_channels=VAE_CHANNELS,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
        sample_size=64,
    )


def scheduler_config() -> dict[str, object]:
    return {
        "_class_name": "LCMScheduler",
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "prediction_type": "epsilon",
        "timestep_spacing": "leading",
        "steps_offset": 1,
    }


def write_index(folder: Path, cls: str, parts: dict[str, tuple[str, str]]) -> None:
    index: dict[str, object] = {"_class_name": cls, "_diffusers_version": "0.30.0"}
    index.update({k: list(v) for k, v in parts.items()})
    (folder / "model_index.json").write_text(json.dumps(index, indent=1))
    sched = folder / "scheduler"
    sched.mkdir(parents=True, exist_ok=True)
    (sched / "scheduler_config.json").write_text(json.dumps(scheduler_config(), indent=1))


def write_sd_index(folder: Path) -> None:
    """model_index.json and scheduler of an SD 1.5/2.1 folder (unet, vae, one text encoder)."""
    write_index(
        folder,
        "StableDiffusionPipeline",
        {
            "unet": ("diffusers", "UNet2DConditionModel"),
            "vae": ("diffusers", "AutoencoderKL"),
            "text_encoder": ("transformers", "CLIPTextModel"),
            "tokenizer": ("transformers", "CLIPTokenizer"),
            "scheduler": ("diffusers", "LCMScheduler"),
            "safety_checker": (None, None),  # type: ignore[dict-item]
            "feature_extractor": (None, None),  # type: ignore[dict-item]
        },
    )


def save_tiny_sd(folder: Path, lcm: bool = False) -> Path:
    """An SD 1.5/2.1-shaped pipeline folder with random weights (seed 0); `lcm` adds the
    guidance-embedding input of LCM-distilled UNets (time_cond_proj_dim)."""
    from diffusers import UNet2DConditionModel

    folder = Path(folder)
    torch.manual_seed(SEED)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=8,
        norm_num_groups=8,
        time_cond_proj_dim=32 if lcm else None,
    )
    unet.save_pretrained(folder / "unet")
    _vae().save_pretrained(folder / "vae")
    _text_encoder(projection=False).save_pretrained(folder / "text_encoder")
    write_tokenizer(folder / "tokenizer")
    write_sd_index(folder)
    return folder


def save_tiny_sdxl(folder: Path) -> Path:
    """An SDXL-shaped pipeline folder: two text encoders, pooled embeds, time ids."""
    from diffusers import UNet2DConditionModel

    folder = Path(folder)
    torch.manual_seed(SEED)
    time_dim = 8
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_dim,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * time_dim + TEXT_DIM,
        cross_attention_dim=2 * TEXT_DIM,
        norm_num_groups=8,
    )
    unet.save_pretrained(folder / "unet")
    _vae().save_pretrained(folder / "vae")
    _text_encoder(projection=False).save_pretrained(folder / "text_encoder")
    _text_encoder(projection=True).save_pretrained(folder / "text_encoder_2")
    write_tokenizer(folder / "tokenizer")
    write_tokenizer(folder / "tokenizer_2")
    write_index(
        folder,
        "StableDiffusionXLPipeline",
        {
            "unet": ("diffusers", "UNet2DConditionModel"),
            "vae": ("diffusers", "AutoencoderKL"),
            "text_encoder": ("transformers", "CLIPTextModel"),
            "text_encoder_2": ("transformers", "CLIPTextModelWithProjection"),
            "tokenizer": ("transformers", "CLIPTokenizer"),
            "tokenizer_2": ("transformers", "CLIPTokenizer"),
            "scheduler": ("diffusers", "LCMScheduler"),
        },
    )
    return folder


def save_tiny_taesd(folder: Path) -> Path:
    """A tiny AutoencoderTiny (TAESD-shaped, 1/8 latents) with random weights."""
    from diffusers import AutoencoderTiny

    folder = Path(folder)
    torch.manual_seed(SEED)
    AutoencoderTiny(
        in_channels=3,
        out_channels=3,
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
        latent_channels=4,
    ).save_pretrained(folder)
    return folder


def save_tiny_lora(folder: Path, model_dir: Path, rank: int = 4) -> Path:
    """A LoRA on the tiny UNet's attention projections, in diffusers' LoRA file format."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig, get_peft_model_state_dict

    folder = Path(folder)
    torch.manual_seed(SEED + 1)
    unet = UNet2DConditionModel.from_pretrained(Path(model_dir) / "unet")
    unet.add_adapter(
        LoraConfig(r=rank, lora_alpha=rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    )
    with torch.no_grad():  # peft starts B at zero: make the LoRA actually change outputs
        for name, p in unet.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.5)
    StableDiffusionPipeline.save_lora_weights(
        folder, unet_lora_layers=get_peft_model_state_dict(unet), safe_serialization=True
    )
    return folder
