"""Stable Diffusion 3 / 3.5 (MMDiT).

``SD3Transformer2DModel`` denoises 16-channel latents (1/8 of the canvas, 2x2 patches, so canvas sides are
multiples of 16) under flow matching. A prompt goes through CLIP-L and CLIP-G (penultimate hidden states,
concatenated, zero-padded to the transformer's joint attention width) and, optionally, T5: its tokens
follow the CLIP tokens in ``encoder_hidden_states``; without T5 they are zeros, exactly as
``StableDiffusion3Pipeline`` does with ``text_encoder_3=None`` (the paper's implementation runs SD3 that
way). ``pooled_projections`` is CLIP-L's and CLIP-G's projected pooled outputs concatenated [B, 2048].
The VAE has a scaling *and* a shift factor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..conditioning import TOKEN_EMBEDDINGS, Conditioning
from . import clip
from .spec import FamilySpec, InputSpec, Preset, SamplingDefaults, builder

POOLED = "pooled_projections"
T5_TOKENS = 256  # StableDiffusion3Pipeline's default max_sequence_length

# stabilityai/stable-diffusion-3-medium-diffusers' scheduler config (FlowMatchEulerDiscreteScheduler).
SCHEDULER_CONFIG = dict(num_train_timesteps=1000, shift=3.0)


def prompt_settings(components: Mapping[str, Any]) -> dict[str, Any]:
    """What encoding needs from the transformer: the width absent T5 tokens are zero at."""
    return {"joint_attention_dim": int(components["transformer"].config.joint_attention_dim),
            "t5_tokens": T5_TOKENS}  # fmt: skip


@torch.no_grad()
def encode_prompt(components: Mapping[str, Any], text: str, *, joint_attention_dim: int,
                  t5_tokens: int = T5_TOKENS) -> dict[str, torch.Tensor]:  # fmt: skip
    """As ``StableDiffusion3Pipeline.encode_prompt`` (no clip skip): both CLIPs at the first tokenizer's
    length, then T5 (or zeros) at ``t5_tokens`` tokens."""
    tok1 = components["tokenizer"]
    h1, p1 = clip.penultimate_and_pooled(tok1, components["text_encoder"], text)
    tok2 = components["tokenizer_2"]
    if tok2.model_max_length != tok1.model_max_length:  # the pipeline pads both to the first's length
        tok2 = _with_length(tok2, tok1.model_max_length)
    h2, p2 = clip.penultimate_and_pooled(tok2, components["text_encoder_2"], text)
    clip_states = torch.cat([h1, h2.to(h1.device)], dim=-1)
    t5 = components.get("text_encoder_3")
    if t5 is None:
        t5_embeds = torch.zeros(1, t5_tokens, joint_attention_dim, dtype=clip_states.dtype, device=clip_states.device)
    else:
        ids = components["tokenizer_3"](text, padding="max_length", max_length=t5_tokens, truncation=True,
                                        add_special_tokens=True, return_tensors="pt").input_ids  # fmt: skip
        t5_embeds = t5(ids.to(t5.device))[0].to(clip_states.device)
    clip_states = torch.nn.functional.pad(clip_states, (0, t5_embeds.shape[-1] - clip_states.shape[-1]))
    return {TOKEN_EMBEDDINGS: torch.cat([clip_states, t5_embeds.to(clip_states.dtype)], dim=-2),
            POOLED: torch.cat([p1, p2.to(p1.device)], dim=-1)}  # fmt: skip


def _with_length(tokenizer: Any, length: int) -> Any:
    import copy

    tokenizer = copy.copy(tokenizer)
    tokenizer.model_max_length = length
    return tokenizer


def call_transformer(transformer: torch.nn.Module, sample: torch.Tensor, timestep: torch.Tensor,
                     cond: Conditioning) -> torch.Tensor:  # fmt: skip
    return transformer(hidden_states=sample, timestep=timestep, encoder_hidden_states=cond[TOKEN_EMBEDDINGS],
                       pooled_projections=cond[POOLED], return_dict=False)[0]  # fmt: skip


TAESD3 = "madebyollin/taesd3"
PRESETS: dict[str, Preset] = {
    # Flash-SD3's model card (jasperai/flash-sd3): a PEFT LoRA adapter of SD3-medium's transformer, 4 steps,
    # guidance_scale=0 (off), with its FlashFlowMatchEulerDiscreteScheduler: x̂0 = x − σ·v, then re-noised to the
    # next σ — here diffusers' FlowMatchEulerDiscreteScheduler with stochastic_sampling, SD3's shift 3.0.
    "sd3": Preset(
        source="stabilityai/stable-diffusion-3-medium-diffusers",
        loras=(("jasperai/flash-sd3", 1.0),),
        tiny_vae=TAESD3,
        sampler="flow",
        scheduler_overrides={"stochastic_sampling": True},
        accelerator="Flash-SD3 LoRA (jasperai/flash-sd3, a PEFT adapter): flow Euler with re-noising, 4 steps, "
        "guidance off (its model card)",
    ),
    # Stable Diffusion 3.5 Large Turbo's model card (stabilityai/stable-diffusion-3.5-large-turbo): 4 steps,
    # guidance_scale=0 (off), its own FlowMatchEulerDiscreteScheduler config (shift 3.0).
    "sd35-turbo": Preset(
        source="stabilityai/stable-diffusion-3.5-large-turbo",
        tiny_vae=TAESD3,
        sampler="flow",
        accelerator="adversarial distillation built into the checkpoint (SD3.5 Large Turbo): flow Euler, 4 steps, "
        "guidance off (its model card)",
    ),
    # SD3-medium-sized networks with random weights, built offline: for timing (semdraw-bench), never for images.
    "sd3-random": Preset(source="(random weights)", sampler="flow", build=builder("make_sd3_sized_pipeline"),
                         defaults=SamplingDefaults()),  # fmt: skip
}

SD3 = FamilySpec(
    name="sd3",
    pipeline_class="StableDiffusion3Pipeline",
    denoiser="transformer",
    text_components=("tokenizer", "text_encoder", "tokenizer_2", "text_encoder_2", "tokenizer_3", "text_encoder_3"),
    optional_components=("tokenizer_3", "text_encoder_3"),
    conditioning=(
        InputSpec(TOKEN_EMBEDDINGS, ("batch", "clip + t5 tokens", "joint width")),
        InputSpec(POOLED, ("batch", "pooled")),
    ),
    encode_prompt=encode_prompt,
    call_denoiser=call_transformer,
    latent_channels=16,
    latent_factor=8,
    default_sampler="flow",
    default_steps=4,
    default_guidance=1.0,
    scheduler_config=SCHEDULER_CONFIG,
    make_tiny=builder("make_tiny_sd3_pipeline"),
    make_sized=builder("make_sd3_sized_pipeline"),
    presets=PRESETS,
    prompt_settings=prompt_settings,
    sample_input="hidden_states",
    size_multiple=16,
    min_latent_side=lambda config: 2 * int(config["patch_size"]),  # two patches a side
)
