"""`Model`: a family description plus the diffusers components, with cached prompt encoding."""

from __future__ import annotations

import threading
from typing import Any

import torch

from . import limits, sampling
from .conditioning import Conditioning
from .errors import ConfigError, SizeError, UnknownWordsWarning
from .families import FAMILIES, FamilySpec, SamplingDefaults, get_family
from .networks import from_latent, to_latent
from .prompts import PromptEncoder

__all__ = ["Model", "SamplingDefaults", "UnknownWordsWarning", "latent_size"]


def family_of_pipeline(pipe: Any) -> FamilySpec | None:
    """The family whose pipeline class ``pipe`` is, by class name along its bases, the longest match first
    (``StableDiffusionXLInpaintPipeline`` is SDXL, not SD1.5); None for a class no family knows."""
    stems = sorted(((f.pipeline_class.removesuffix("Pipeline"), f) for f in FAMILIES.values()),
                   key=lambda item: -len(item[0]))  # fmt: skip
    for klass in type(pipe).__mro__:
        for stem, fam in stems:
            rest = klass.__name__.removeprefix(stem)
            if rest != klass.__name__ and rest.endswith("Pipeline") and not rest[:1].isdigit() and not rest.startswith("XL"):
                return fam
    return None


def latent_size(height: int, width: int, factor: int, *, multiple: int | None = None,
                min_latent: int = 1) -> tuple[int, int]:  # fmt: skip
    """(h, w) of the latent for a canvas; a clear error for a canvas the model cannot make: not positive,
    sides not multiples of ``multiple`` (default: the latent ``factor``), or a latent side under ``min_latent``."""
    multiple = multiple or factor
    height, width = limits.check_canvas(height, width)
    if height % multiple or width % multiple:
        raise SizeError(
            f"canvas {height}x{width} is not divisible by {multiple}; "
            f"use e.g. {height // multiple * multiple or multiple}x{width // multiple * multiple or multiple}"
        )
    smallest = min_latent * factor
    if min(height, width) < smallest:
        raise SizeError(f"canvas {height}x{width} is too small for this model: sides of at least {smallest} px")
    return height // factor, width // factor


def native_side(denoiser_config: Any, factor: int) -> int:
    """The canvas side a denoiser was trained at (pixels): its config's sample size times the latent factor."""
    sample = denoiser_config["sample_size"]
    sample = sample[0] if isinstance(sample, list | tuple) else sample
    return int(sample) * factor


def family_latent_size(family: FamilySpec, denoiser_config: Any, factor: int, height: int,
                       width: int) -> tuple[int, int]:  # fmt: skip
    """:func:`latent_size` with a family's canvas rules: sides multiples of its size multiple, and at least
    its minimum latent side for this denoiser (unchecked when the config is not known: ``None``)."""
    min_latent = 1 if denoiser_config is None else family.min_latent_side(denoiser_config)
    return latent_size(height, width, factor, multiple=max(family.size_multiple, factor), min_latent=min_latent)


class Model:
    """What generation needs from a checkpoint: encoders, denoiser, VAE and a sampler schedule source.

    ``components`` are the pipeline's parts under the family's names (for SD1.5: ``tokenizer``,
    ``text_encoder``, ``unet``, ``vae``), also readable as attributes (``model.unet``). Build one with
    :func:`semdraw.load_model` (presets, hub ids, folders, single files) or :meth:`Model.from_pipeline`
    (any diffusers pipeline of a supported family, e.g. tiny random test components).
    """

    def __init__(self, *, family: str | FamilySpec, components: dict[str, Any], scheduler: Any,
                 sampler: str | None = None, name: str = "custom") -> None:  # fmt: skip
        self.family = get_family(family)
        fam = self.family
        needed = (*fam.text_components, fam.denoiser, "vae")
        missing = [c for c in needed if components.get(c) is None and c not in fam.optional_components]
        if missing:
            raise ConfigError(f"the {fam.name} model lacks the components {missing}")
        self.components = {c: components.get(c) for c in needed}
        for c in (fam.denoiser, "vae"):
            self.components[c].eval().requires_grad_(False)
        settings = fam.prompt_settings(self.components) if fam.prompt_settings else {}
        self.prompts = PromptEncoder(fam, self.components, name=name, settings=settings)
        self.scheduler_config = scheduler.config
        kind = sampler or sampling.SCHEDULER_CLASS_TO_KIND.get(type(scheduler).__name__, fam.default_sampler)
        if kind not in sampling.SAMPLERS:
            raise ConfigError(f"unknown sampler {kind!r}; choose one of {sorted(sampling.SAMPLERS)}")
        self.sampler = kind
        self.loras: list[tuple[str, float]] = []
        self.defaults = SamplingDefaults()
        self.sampler_params: dict[str, float] = {}  # the sampler's own step arguments (TCD: eta)
        self._latent_cache: dict[tuple, torch.Tensor] = {}
        self._lock = threading.Lock()
        self.prompts.to(output=(self.device, self.dtype))

    @classmethod
    def from_pipeline(cls, pipe: Any, family: str | FamilySpec | None = None, *, sampler: str | None = None,
                      name: str | None = None) -> Model:  # fmt: skip
        """Wrap a diffusers pipeline's components (they are shared, not copied). The family is the one whose
        pipeline class ``pipe`` is (an SDXL pipeline is SDXL); ``family`` is needed only for a pipeline of
        another class, and one that contradicts the pipeline's class is an error."""
        known = family_of_pipeline(pipe)
        if family is None and known is None:
            raise ConfigError(f"cannot tell the model family of a {type(pipe).__name__}; pass family= (one of "
                              f"{', '.join(FAMILIES)})")  # fmt: skip
        fam = get_family(family if family is not None else known)  # type: ignore[arg-type]
        if known is not None and known.pipeline_class != fam.pipeline_class:  # a family of its own class may share it
            raise ConfigError(f"a {type(pipe).__name__} is a {known.name} pipeline, not {fam.name}: leave family= out")
        names = (*fam.text_components, fam.denoiser, "vae", "scheduler")
        missing = [c for c in names if getattr(pipe, c, None) is None and c not in fam.optional_components]
        if missing:
            raise ConfigError(f"the pipeline lacks {missing}; pass a {fam.pipeline_class}-style pipeline")
        return cls(
            family=fam, components={c: getattr(pipe, c, None) for c in names[:-1]}, scheduler=pipe.scheduler,
            sampler=sampler, name=name or getattr(pipe, "name_or_path", None) or type(pipe).__name__,
        )  # fmt: skip

    def __getattr__(self, name: str) -> Any:
        components = self.__dict__.get("components", {})
        if name in components:
            return components[name]
        raise AttributeError(f"{type(self).__name__!s} has no attribute or component {name!r}")

    # ---------------------------------------------------------------- properties
    @property
    def name(self) -> str:
        return self.prompts.name

    @name.setter
    def name(self, value: str) -> None:
        self.prompts.name = value

    @property
    def vocabulary(self) -> frozenset[str] | None:
        """A closed vocabulary (the toy model's): words outside it are warned about."""
        return self.prompts.vocabulary

    @vocabulary.setter
    def vocabulary(self, value: frozenset[str] | None) -> None:
        self.prompts.vocabulary = value

    @property
    def denoiser(self) -> torch.nn.Module:
        return self.components[self.family.denoiser]

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.denoiser.parameters()).dtype

    @property
    def vae_scale_factor(self) -> int:
        return self.family.latent_factor

    @property
    def latent_channels(self) -> int:
        """The denoiser's latent channels, read from its config as diffusers does (the family's usual
        count when the config does not say)."""
        config = getattr(self.denoiser, "config", None)
        channels = getattr(config, "in_channels", None)
        return int(channels) if isinstance(channels, int) else self.family.latent_channels

    @property
    def latent_scaling(self) -> tuple[float, float]:
        """(scale, shift) of this model's VAE: latent = (raw - shift) · scale."""
        return self.family.latent_scaling(self.vae.config)

    @property
    def vae_needs_fp32(self) -> bool:
        """The VAE's config asks to run in fp32 (``force_upcast``: the full SDXL VAE overflows in fp16;
        TAESD-style decoders do not ask)."""
        return bool(getattr(self.vae.config, "force_upcast", False))

    @property
    def native_size(self) -> int:
        """The canvas side the denoiser was trained at (pixels)."""
        return native_side(self.denoiser.config, self.vae_scale_factor)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Model:
        for c in (self.family.denoiser, "vae"):
            module = self.components[c]
            kwargs: dict[str, Any] = {"device": device}
            want = torch.float32 if c == "vae" and self.vae_needs_fp32 and dtype is not None else dtype
            if want is not None and next(module.parameters()).dtype != want:
                kwargs["dtype"] = want  # only a real cast: diffusers warns on any dtype argument, even a no-op
            module.to(**kwargs)
        self.prompts.to(device, dtype, output=(self.device, self.dtype))
        with self._lock:
            self._latent_cache.clear()
        return self

    def latent_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of the latent for a canvas; a clear error when the canvas does not divide evenly."""
        return family_latent_size(self.family, self.denoiser.config, self.vae_scale_factor, height, width)

    # ---------------------------------------------------------------- encoders
    def encode_prompt(self, text: str) -> Conditioning:
        """Text → conditioning [1, ...] per name; each distinct prompt is encoded once (LRU cache)."""
        return self.prompts(text)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """Denoiser output for model inputs x [B, C, h, w] at timesteps t [B] under cond (batch B)."""
        return self.family.call_denoiser(self.denoiser, x.to(self.dtype), t.to(self.device), cond)

    @torch.no_grad()
    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels [B, 3, H, W] in [-1, 1] → scaled latents (distribution mode, so deterministic)."""
        vae = self.vae
        out = vae.encode(pixels.to(device=self.device, dtype=vae.dtype))
        lat = out.latent_dist.mode() if hasattr(out, "latent_dist") else out.latents
        return to_latent(lat, *self.latent_scaling).to(self.dtype)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents → pixels [B, 3, H, W] in about [-1, 1]."""
        z = from_latent(latents.to(self.vae.dtype), *self.latent_scaling)
        return self.vae.decode(z, return_dict=False)[0]

    def white_latent(self, height: int, width: int) -> torch.Tensor:
        """The latent of a plain white canvas [1, C, h, w] (encoded once per size, then cached)."""
        key = ("white", height, width, self.device, self.dtype)
        with self._lock:
            hit = self._latent_cache.get(key)
        if hit is None:
            hit = self.encode_image(torch.ones(1, 3, height, width))
            with self._lock:
                self._latent_cache[key] = hit
        return hit

    # ---------------------------------------------------------------- sampler
    def schedule(self, steps: int | None = None, timesteps: Any = None) -> sampling.SamplerSchedule:
        """This model's sampler table for ``steps`` or explicit ``timesteps`` (default: the model's
        ``defaults.timesteps``, else the family's default steps)."""
        return schedule_for(self.sampler, self.scheduler_config, self.defaults, self.family, steps, timesteps,
                            self.sampler_params).to(self.device)  # fmt: skip

    def __repr__(self) -> str:
        return f"Model(name={self.name!r}, family={self.family.name!r}, sampler={self.sampler!r}, device={self.device})"


def schedule_for(sampler: str, scheduler_config: Any, defaults: SamplingDefaults, family: FamilySpec,
                 steps: int | None = None, timesteps: Any = None,
                 params: dict[str, float] | None = None) -> sampling.SamplerSchedule:  # fmt: skip
    """The sampler table for ``steps`` or ``timesteps``, falling back to ``defaults`` then the family's steps."""
    if steps is None and timesteps is None:
        timesteps = defaults.timesteps
        steps = family.default_steps if timesteps is None else None
    return sampling.build_schedule(sampler, scheduler_config, steps=steps, timesteps=timesteps, **(params or {}))
