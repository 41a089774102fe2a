"""Network descriptions: each wraps one part of a model with plain tensor I/O, names its inputs and
output with their static shapes, and makes realistic seeded sample inputs for export and validation.

The generic steps (ONNX export, validation, TensorRT build) never look inside a network.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from semdraw import sampling
from semdraw.conditioning import Conditioning
from semdraw.engines import BuildRequest, TensorSpec
from semdraw.families import SD15, FamilySpec, TileGeometry
from semdraw.model import Model


class DenoiserIO(torch.nn.Module):
    """Any family's denoiser with plain positional tensors: (sample, timestep, *conditioning in the family's
    order), called through the family's one ``call_denoiser`` (the function ``Model.predict`` uses)."""

    def __init__(self, denoiser: torch.nn.Module, family: FamilySpec = SD15) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.family = family
        self.conditioning_names = [i.name for i in family.conditioning]

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, *conditioning: torch.Tensor) -> torch.Tensor:
        cond = Conditioning(dict(zip(self.conditioning_names, conditioning, strict=True)))
        return self.family.call_denoiser(self.denoiser, sample, timestep, cond)


class VaeEncoderIO(torch.nn.Module):
    """image [B,3,H,W] in [-1,1] -> raw latent (the distribution's mode for AutoencoderKL); ``vae.encoder``."""

    def __init__(self, vae: torch.nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h = self.vae.encoder(image)
        quant = getattr(self.vae, "quant_conv", None)
        if quant is not None:
            h = quant(h)
        if h.shape[1] == 2 * self.vae.config.latent_channels:  # AutoencoderKL: [mean, logvar]; the mode is the mean
            h = h[:, : h.shape[1] // 2]
        return h


class VaeDecoderIO(torch.nn.Module):
    """raw latent -> image [B,3,H,W] in about [-1,1]; ``vae.decoder``."""

    def __init__(self, vae: torch.nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        post = getattr(self.vae, "post_quant_conv", None)
        if post is not None:
            latent = post(latent)
        return self.vae.decoder(latent)


@dataclass
class Network:
    """What the generic export / validate / build steps need to know about one network."""

    role: str  # "denoiser", "vae_encoder", "vae_decoder"
    module: torch.nn.Module
    inputs: tuple[TensorSpec, ...]
    output: TensorSpec
    sample: tuple[torch.Tensor, ...]  # realistic, seeded inputs
    fp16_safe: bool = True  # False: its TensorRT plan stays fp32 (a VAE whose config says force_upcast)
    any_batch: bool = False  # its ONNX export takes any number of rows on axis 0 (the denoiser: live rows only)


def describe(model: Model, request: BuildRequest, seed: int = 0) -> list[Network]:
    """The three networks of ``model`` for the stream-batch shape of ``request``."""
    g = torch.Generator().manual_seed(seed)
    h, w = model.latent_size(request.height, request.width)
    c = model.latent_channels
    B = request.batch
    T = len(request.timesteps)
    sched = model.schedule(timesteps=list(request.timesteps)).to("cpu")
    # Rows are step-major: row r is step r // (B / T). Latents noised to each row's level, timesteps per row.
    step_of_row = torch.arange(B) // (B // T)
    x0 = torch.randn(B, c, h, w, generator=g) * 0.8
    noise = torch.randn(B, c, h, w, generator=g)
    sample = sampling.model_input(
        sampling.add_noise(x0, noise, step_of_row, sched), step_of_row, sched
    ).float()
    timestep = sched.timesteps[step_of_row].to(
        torch.int64 if sched.timesteps.dtype == torch.int64 else torch.float32
    )
    prompts = ["blue sky", "a red circle", "green grass", ""]
    canvas = TileGeometry(request.height, request.width, 0, 0, request.height, request.width)
    fam = model.family
    cond = Conditioning.cat(
        [fam.conditioning_for(model.encode_prompt(prompts[i % len(prompts)]), canvas) for i in range(B)]
    ).to("cpu", torch.float32)
    image = torch.rand(1, 3, request.height, request.width, generator=g) * 2 - 1
    raw_latent = torch.randn(1, c, h, w, generator=g) / model.latent_scaling[0]

    def spec(name: str, t: torch.Tensor) -> TensorSpec:
        return TensorSpec(name, tuple(t.shape), str(t.dtype).removeprefix("torch."))

    denoiser = DenoiserIO(model.denoiser, fam).float().cpu()
    cond_inputs = tuple(cond[i.name] for i in fam.conditioning)
    out = torch.empty_like(sample)  # every family's denoiser predicts a tensor of its input's shape
    return [
        Network("denoiser", denoiser,
                (spec(fam.sample_input, sample), spec(fam.timestep_input, timestep),
                 *(spec(i.name, cond[i.name]) for i in fam.conditioning)),
                spec("out", out), (sample, timestep, *cond_inputs), any_batch=True),
        Network("vae_encoder", VaeEncoderIO(model.vae).float().cpu(), (spec("image", image),),
                spec("latent", raw_latent), (image,), fp16_safe=not model.vae_needs_fp32),
        Network("vae_decoder", VaeDecoderIO(model.vae).float().cpu(), (spec("latent", raw_latent),),
                spec("image", image), (raw_latent,), fp16_safe=not model.vae_needs_fp32),
    ]  # fmt: skip
