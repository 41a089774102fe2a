"""Stable Diffusion 1.5 (and every SD1.5-shaped model, the embedded ``toy`` included).

One CLIP text encoder; the UNet takes its last hidden states as ``encoder_hidden_states`` [B, 77, 768].
4 latent channels at 1/8 of the canvas; the VAE scales by its ``scaling_factor`` (no shift).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch

from .. import toy
from ..conditioning import TOKEN_EMBEDDINGS, Conditioning
from . import clip
from .spec import FamilySpec, InputSpec, Preset, SamplingDefaults, builder

# SD1.5's training noise schedule (runwayml/stable-diffusion-v1-5's scheduler config).
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon",
    timestep_spacing="leading",
)  # fmt: skip


def encode_prompt(components: Mapping[str, Any], text: str) -> dict[str, torch.Tensor]:
    return {TOKEN_EMBEDDINGS: clip.last_hidden_states(components["tokenizer"], components["text_encoder"], text)}


def call_unet(unet: torch.nn.Module, sample: torch.Tensor, timestep: torch.Tensor, cond: Conditioning) -> torch.Tensor:
    return unet(sample, timestep, encoder_hidden_states=cond[TOKEN_EMBEDDINGS], return_dict=False)[0]


BASE = "stable-diffusion-v1-5/stable-diffusion-v1-5"
def toy_preset(folder: Path) -> Preset:
    """A toy model folder (``semdraw-train-toy --out``): its base, its LCM-LoRA fused, its defaults.json."""
    # cpu_backend: onnxruntime streams the toy 1.5-2x as fast as torch on a CPU, and its set builds in ~6 s
    return Preset(source=str(folder / "base"), loras=((str(folder / "lcm_lora"), 1.0),), sampler="lcm",
                  closed_vocabulary=partial(toy.known_words, folder), defaults=partial(toy_defaults, folder),
                  cpu_backend="onnxruntime")  # fmt: skip


def toy_defaults(folder: Path) -> SamplingDefaults:
    """A toy folder's defaults.json, read on first use (importing the families reads no file)."""
    defaults = toy.sampling_defaults(folder)
    return SamplingDefaults(timesteps=tuple(float(t) for t in defaults["timesteps"]),
                            bootstrap_steps=int(defaults["bootstrap_steps"]),
                            bootstrap_mix_steps=float(defaults.get("bootstrap_mix_steps", 1.0)))  # fmt: skip


def folder_preset(folder: Path) -> Preset | None:
    return toy_preset(folder) if toy.is_model_folder(folder) else None


PRESETS = {
    "sd15": Preset(
        source=BASE,
        loras=(("latent-consistency/lcm-lora-sdv1-5", 1.0),),
        tiny_vae="madebyollin/taesd",
        sampler="lcm",
        accelerator="LCM-LoRA (latent-consistency/lcm-lora-sdv1-5): LCMScheduler, 4 steps, guidance off "
        "(its model card: 2-8 steps, guidance 1-2)",
    ),
    # Hyper-SD's model card (ByteDance/Hyper-SD): the N-step SD1.5 LoRA, fused at scale 1, with DDIMScheduler
    # and timestep_spacing="trailing", N steps, guidance_scale=0 (off); we ship the 4-step LoRA at 4 steps.
    "sd15-hyper": Preset(
        source=BASE,
        loras=(("ByteDance/Hyper-SD/Hyper-SD15-4steps-lora.safetensors", 1.0),),
        tiny_vae="madebyollin/taesd",
        sampler="ddim",
        scheduler_overrides={"timestep_spacing": "trailing"},
        defaults=SamplingDefaults(timesteps=(999.0, 749.0, 499.0, 249.0)),
        accelerator="Hyper-SD 4-step LoRA (ByteDance/Hyper-SD): DDIM trailing, 4 steps [999, 749, 499, 249], "
        "guidance off (its model card)",
    ),
    # The embedded default: trained here (semdraw.toy), shipped in the wheel, loads offline; its LCM-distilled
    # LoRA is fused as SD1.5's is. Its defaults (two LCM steps, two centred bootstrap steps) are the best
    # region accuracy + object presence measured by `semdraw-bench fidelity --sweep` (weights/MODEL_CARD.md).
    "toy": toy_preset(toy.WEIGHTS_DIR),
    # SD1.5-sized networks with random weights, built offline: for timing (semdraw-bench), never for images.
    "sd15-random": Preset(source="(random weights)", sampler="lcm", build=builder("make_sd15_sized_pipeline")),
}

SD15 = FamilySpec(
    name="sd15",
    pipeline_class="StableDiffusionPipeline",
    denoiser="unet",
    text_components=("tokenizer", "text_encoder"),
    conditioning=(InputSpec(TOKEN_EMBEDDINGS, ("batch", "tokens", "width")),),
    encode_prompt=encode_prompt,
    call_denoiser=call_unet,
    latent_channels=4,
    latent_factor=8,
    default_sampler="lcm",
    default_steps=4,
    default_guidance=1.0,
    scheduler_config=SCHEDULER_CONFIG,
    make_tiny=builder("make_tiny_pipeline"),
    make_sized=builder("make_sd15_sized_pipeline"),
    presets=PRESETS,
    folder_preset=folder_preset,
    load_kwargs={"safety_checker": None, "requires_safety_checker": False},
)
