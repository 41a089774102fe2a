"""Stable Diffusion XL.

Two CLIP text encoders: the penultimate hidden states of both, concatenated, are ``encoder_hidden_states``
[B, 77, 2048]; the projected pooled output of the second (``CLIPTextModelWithProjection``) is
``text_embeds`` [B, 1280]. The UNet also takes ``time_ids`` [B, 6] = (original height, width, crop top,
left, target height, width), built per tile (:func:`time_ids`): SDXL was trained on random crops of
larger images with exactly these numbers, so a tile of a larger canvas is told it is the crop at its
offset of an image of the canvas's size. A canvas that is one tile gets (H, W, 0, 0, H, W), which is what
``StableDiffusionXLPipeline`` passes. 4 latent channels at 1/8 of the canvas.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..conditioning import TOKEN_EMBEDDINGS, Conditioning
from . import clip
from .spec import FamilySpec, InputSpec, Preset, SamplingDefaults, TileGeometry, builder

POOLED, TIME_IDS = "text_embeds", "time_ids"

# stabilityai/stable-diffusion-xl-base-1.0's scheduler config (EulerDiscreteScheduler).
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon",
    timestep_spacing="leading", interpolation_type="linear", use_karras_sigmas=False,
)  # fmt: skip


def encode_prompt(components: Mapping[str, Any], text: str) -> dict[str, torch.Tensor]:
    h1, _ = clip.penultimate_and_pooled(components["tokenizer"], components["text_encoder"], text)
    h2, pooled = clip.penultimate_and_pooled(components["tokenizer_2"], components["text_encoder_2"], text)
    return {TOKEN_EMBEDDINGS: torch.cat([h1, h2.to(h1.device)], dim=-1), POOLED: pooled.to(h1.device)}


def time_ids(cond: Conditioning, tile: TileGeometry) -> Conditioning:
    """SDXL's size conditioning for one tile: (canvas H, W, tile top, left, tile h, w), one row per item."""
    embeds = cond[TOKEN_EMBEDDINGS]
    ids = torch.tensor([[tile.canvas_height, tile.canvas_width, tile.top, tile.left, tile.height, tile.width]],
                       dtype=embeds.dtype, device=embeds.device)  # fmt: skip
    return cond.replace(**{TIME_IDS: ids.expand(cond.batch, 6)})


def call_unet(unet: torch.nn.Module, sample: torch.Tensor, timestep: torch.Tensor, cond: Conditioning) -> torch.Tensor:
    added = {POOLED: cond[POOLED], TIME_IDS: cond[TIME_IDS]}
    return unet(sample, timestep, encoder_hidden_states=cond[TOKEN_EMBEDDINGS], added_cond_kwargs=added,
                return_dict=False)[0]  # fmt: skip


BASE = "stabilityai/stable-diffusion-xl-base-1.0"
TAESDXL = "madebyollin/taesdxl"  # the full SDXL VAE overflows in fp16; TAESDXL decodes in fp16 safely
# Four trailing-spaced steps of 1000: what EulerDiscreteScheduler / DDIMScheduler with
# timestep_spacing="trailing" pick for 4 steps, as both model cards below configure them.
FOUR_TRAILING = (999.0, 749.0, 499.0, 249.0)
PRESETS: dict[str, Preset] = {
    # SDXL-Lightning's model card (ByteDance/SDXL-Lightning): the 4-step LoRA fused at scale 1,
    # EulerDiscreteScheduler with timestep_spacing="trailing", 4 steps, guidance_scale=0 (off).
    "sdxl": Preset(
        source=BASE,
        loras=(("ByteDance/SDXL-Lightning/sdxl_lightning_4step_lora.safetensors", 1.0),),
        tiny_vae=TAESDXL,
        sampler="euler",  # our Euler kind is trailing-spaced (sampling.SAMPLERS)
        defaults=SamplingDefaults(timesteps=FOUR_TRAILING),
        accelerator="SDXL-Lightning 4-step LoRA (ByteDance/SDXL-Lightning): Euler trailing, 4 steps "
        "[999, 749, 499, 249], guidance off (its model card)",
    ),
    # Hyper-SD's model card (ByteDance/Hyper-SD): the N-step SDXL LoRA fused at scale 1, DDIMScheduler with
    # timestep_spacing="trailing", N steps, guidance_scale=0 (off); we ship the 4-step LoRA at 4 steps.
    "sdxl-hyper": Preset(
        source=BASE,
        loras=(("ByteDance/Hyper-SD/Hyper-SDXL-4steps-lora.safetensors", 1.0),),
        tiny_vae=TAESDXL,
        sampler="ddim",
        scheduler_overrides={"timestep_spacing": "trailing"},
        defaults=SamplingDefaults(timesteps=FOUR_TRAILING),
        accelerator="Hyper-SD 4-step LoRA (ByteDance/Hyper-SD): DDIM trailing, 4 steps [999, 749, 499, 249], "
        "guidance off (its model card)",
    ),
    # SDXL-sized networks with random weights, built offline: for timing (semdraw-bench), never for images.
    "sdxl-random": Preset(source="(random weights)", sampler="euler", build=builder("make_sdxl_sized_pipeline")),
}

SDXL = FamilySpec(
    name="sdxl",
    pipeline_class="StableDiffusionXLPipeline",
    denoiser="unet",
    text_components=("tokenizer", "text_encoder", "tokenizer_2", "text_encoder_2"),
    conditioning=(
        InputSpec(TOKEN_EMBEDDINGS, ("batch", "tokens", "width")),
        InputSpec(POOLED, ("batch", "pooled")),
        InputSpec(TIME_IDS, ("batch", "6")),
    ),
    encode_prompt=encode_prompt,
    call_denoiser=call_unet,
    latent_channels=4,
    latent_factor=8,
    default_sampler="euler",
    default_steps=4,
    default_guidance=1.0,
    scheduler_config=SCHEDULER_CONFIG,
    make_tiny=builder("make_tiny_sdxl_pipeline"),
    make_sized=builder("make_sdxl_sized_pipeline"),
    presets=PRESETS,
    tile_conditioning=time_ids,
)
