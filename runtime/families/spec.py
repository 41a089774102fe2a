"""The family contract: everything that differs between model families, as one typed value.

A family (SD1.5, SDXL, SD3) is a :class:`FamilySpec`. The algorithm, the stream, the exporter and the
runners read these fields and never branch on a family's name; adding a family is writing one module
that builds one ``FamilySpec`` (see ``docs/architecture.md``, "Adding a family").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..conditioning import Conditioning

# The denoiser's two inputs besides the conditioning, in every family and every engine set.
SAMPLE, TIMESTEP = "sample", "timestep"


@dataclass(frozen=True)
class InputSpec:
    """One named denoiser input: its symbolic shape (documentation and manifest checks) and dtype."""

    name: str
    dims: tuple[str, ...]  # e.g. ("batch", "tokens", "width")
    dtype: str = "float32"


@dataclass(frozen=True)
class TileGeometry:
    """Where a tile lies on the canvas, in pixels: what size-dependent conditioning is built from."""

    canvas_height: int
    canvas_width: int
    top: int
    left: int
    height: int
    width: int


@dataclass(frozen=True)
class SamplingDefaults:
    """A model's measured best sampling settings, used wherever a caller leaves them out.

    ``timesteps``: the default schedule (None: the family's ``default_steps`` as the scheduler picks them);
    ``bootstrap_steps``: steps with the white bootstrap fill, and (unless told otherwise) with mask centring;
    ``bootstrap_mix_steps``: steps over which that fill fades from white to the current latent (r_k).
    """

    timesteps: tuple[float, ...] | None = None
    bootstrap_steps: int = 1
    bootstrap_mix_steps: float = 1.0


@dataclass(frozen=True)
class Preset:
    """A named, known-good model: base weights, acceleration LoRAs, VAE and sampler."""

    source: str  # hub id or folder of the base pipeline
    loras: tuple[tuple[str, float], ...] = ()
    tiny_vae: str | None = None  # hub id of a TAESD-style AutoencoderTiny replacing the VAE
    sampler: str | None = None
    closed_vocabulary: Callable[[], frozenset[str]] | None = None  # warn about words outside it
    build: Callable[[torch.dtype], Any] | None = None  # builds the pipeline in memory instead of loading
    # its sampling defaults, or a function that reads them on first use (a toy folder's defaults.json)
    defaults: SamplingDefaults | Callable[[], SamplingDefaults] = SamplingDefaults()
    scheduler_overrides: Mapping[str, Any] = field(default_factory=dict)  # e.g. {"timestep_spacing": "trailing"}
    sampler_params: Mapping[str, float] = field(default_factory=dict)  # the sampler's step arguments (TCD: eta)
    accelerator: str = ""  # what makes it few-step, and where its settings come from (docs/library.md and the README table)
    # The backend that streams it fastest on a CPU, as measured (docs/benchmarks.md): what the window's
    # --backend auto runs it on there. onnxruntime only where its engine set builds in seconds.
    cpu_backend: str = "torch"

    def sampling_defaults(self) -> SamplingDefaults:
        return self.defaults() if callable(self.defaults) else self.defaults


def builder(name: str) -> Callable[..., Any]:
    """A random-pipeline builder of semdraw.tiny, imported on first call: the families describe which
    builder makes their tiny and full-size random pipelines without importing it (tiny.py imports the
    families' scheduler configs, so the import runs one way)."""

    def build(*args: Any, **kwargs: Any) -> Any:
        from .. import tiny

        return getattr(tiny, name)(*args, **kwargs)

    build.__name__ = build.__qualname__ = name
    build.__module__ = "semdraw.tiny"  # what it runs (source fingerprints name it)
    return build


def unet_min_latent_side(config: Mapping[str, Any]) -> int:
    """The smallest latent side a UNet denoises: each downsampling level halves it, and a level with a
    single pixel leaves its group norms one value per channel (torch refuses)."""
    return 2 ** (len(config["block_out_channels"]) - 1)


def vae_scale_shift(vae_config: Any) -> tuple[float, float]:
    """(scaling_factor, shift_factor) of a VAE config: latent = (raw - shift) · scale (shift 0 if absent)."""
    return float(vae_config.scaling_factor), float(getattr(vae_config, "shift_factor", None) or 0.0)


# (components, text, **settings) -> {name: tensor [1, ...]}; settings: what encoding needs from the rest
# of the model (SD3: the transformer's joint attention width for absent T5 tokens), from ``prompt_settings``.
EncodePrompt = Callable[..., dict[str, torch.Tensor]]
CallDenoiser = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, Conditioning], torch.Tensor]
TileConditioning = Callable[[Conditioning, TileGeometry], Conditioning]


@dataclass(frozen=True)
class FamilySpec:
    """What the runtime must know about a model family (one value per family module)."""

    name: str
    pipeline_class: str  # the diffusers pipeline class these checkpoints load with
    denoiser: str  # component name of the denoiser ("unet", "transformer")
    text_components: tuple[str, ...]  # tokenizer / text-encoder component names a prompt goes through
    conditioning: tuple[InputSpec, ...]  # the denoiser's named conditioning inputs, in export order
    encode_prompt: EncodePrompt  # (components, text) -> {name: tensor [1, ...]} (size-independent part)
    call_denoiser: CallDenoiser  # (module, sample, timestep, conditioning) -> model output: the one call
    latent_channels: int
    latent_factor: int  # pixels per latent pixel
    default_sampler: str  # key of semdraw.sampling.SAMPLERS
    default_steps: int
    default_guidance: float  # few-step models run at 1 (no negative pass)
    scheduler_config: Mapping[str, Any]  # the family's training noise schedule
    make_tiny: Callable[..., Any]  # tiny random pipeline for the fast tests: (folder, scheduler=, prediction_type=, seed=)
    make_sized: Callable[[torch.dtype], Any] | None = None  # full-size random pipeline, for timing
    presets: Mapping[str, Preset] = field(default_factory=dict)
    # A model folder of a layout of the family's own (the toy's: base + LoRA + defaults) as a preset; None: not one
    folder_preset: Callable[[Path], Preset | None] | None = None
    # Size-dependent conditioning (SDXL's time ids) added per tile after the prompt cache; None: none.
    tile_conditioning: TileConditioning | None = None
    latent_scaling: Callable[[Any], tuple[float, float]] = vae_scale_shift
    optional_components: tuple[str, ...] = ()  # text components that may be absent (SD3's T5)
    prompt_settings: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None  # from the model's components
    sample_input: str = SAMPLE  # the denoiser's latent input name (SD3's transformer: hidden_states)
    timestep_input: str = TIMESTEP
    size_multiple: int = 8  # canvas sides must be multiples of this (SD3: latent factor x patch size)
    min_latent_side: Callable[[Mapping[str, Any]], int] = unet_min_latent_side  # from the denoiser's config
    load_kwargs: Mapping[str, Any] = field(default_factory=dict)  # extra from_pretrained arguments of its pipeline

    @property
    def denoiser_inputs(self) -> tuple[str, ...]:
        """Every named denoiser input, in the order engine sets record them."""
        return (self.sample_input, self.timestep_input, *(i.name for i in self.conditioning))

    def conditioning_for(self, cond: Conditioning, tile: TileGeometry) -> Conditioning:
        """The prompt's conditioning completed for one tile (identity for size-independent families)."""
        return cond if self.tile_conditioning is None else self.tile_conditioning(cond, tile)
