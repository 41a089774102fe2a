"""`Model`: a family description plus the diffusers components, with cached prompt encoding."""

from __future__ import annotations

import logging
import re
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch

from . import sampling
from .errors import ConfigError, SizeError
from .family import Conditioning, Family, get_family

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingDefaults:
    """A model's measured best sampling settings, used wherever a caller leaves them out.

    ``timesteps``: the default schedule (None: the family's ``default_steps`` as the scheduler picks them);
    ``bootstrap_steps``: steps with the white bootstrap fill, and (unless told otherwise) with mask centring.
    """

    timesteps: tuple[float, ...] | None = None
    bootstrap_steps: int = 1


class UnknownWordsWarning(UserWarning):
    """A prompt uses words a closed-vocabulary model (``toy``) does not know."""


class Model:
    """What generation needs from a checkpoint: encoders, denoiser, VAE and a sampler schedule source.

    Build one with :func:`semdraw.load_model` (presets, hub ids, folders, single files) or
    :meth:`Model.from_pipeline` (any diffusers SD1.5-style pipeline, e.g. tiny random test components).
    """

    PROMPT_CACHE_SIZE = 256

    def __init__(
        self,
        *,
        family: str | Family,
        tokenizer: Any,
        text_encoder: torch.nn.Module,
        unet: torch.nn.Module,
        vae: torch.nn.Module,
        scheduler: Any,
        sampler: str | None = None,
        name: str = "custom",
    ) -> None:
        self.family = get_family(family)
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder.eval().requires_grad_(False)
        self.unet = unet.eval().requires_grad_(False)
        self.vae = vae.eval().requires_grad_(False)
        self.scheduler_config = scheduler.config
        kind = sampler or sampling.SCHEDULER_CLASS_TO_KIND.get(
            type(scheduler).__name__, self.family.default_sampler
        )
        if kind not in sampling.SAMPLERS:
            raise ConfigError(f"unknown sampler {kind!r}; choose one of {sorted(sampling.SAMPLERS)}")
        self.sampler = kind
        self.name = name
        self.loras: list[tuple[str, float]] = []
        # A closed vocabulary (the toy model's): words outside it are warned about, not silently ignored.
        self.vocabulary: frozenset[str] | None = None
        self.defaults = SamplingDefaults()
        self._prompts: OrderedDict[str, Conditioning] = OrderedDict()
        self._latent_cache: dict[tuple, torch.Tensor] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_pipeline(cls, pipe: Any, family: str | Family = "sd15", *, sampler: str | None = None,
                      name: str | None = None) -> Model:  # fmt: skip
        """Wrap a diffusers SD1.5-style pipeline's components (they are shared, not copied)."""
        family = get_family(family)
        missing = [
            c
            for c in ("tokenizer", "text_encoder", "unet", "vae", "scheduler")
            if getattr(pipe, c, None) is None
        ]
        if missing:
            raise ConfigError(f"the pipeline lacks {missing}; pass an SD1.5-style pipeline")
        return cls(
            family=family, tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder, unet=pipe.unet,
            vae=pipe.vae, scheduler=pipe.scheduler, sampler=sampler,
            name=name or getattr(pipe, "name_or_path", None) or type(pipe).__name__,
        )  # fmt: skip

    # ---------------------------------------------------------------- properties
    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def native_size(self) -> int:
        """The canvas side the denoiser was trained at (pixels)."""
        sample = self.unet.config.sample_size
        sample = sample[0] if isinstance(sample, list | tuple) else sample
        return int(sample) * self.vae_scale_factor

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Model:
        for module in (self.text_encoder, self.unet, self.vae):
            kwargs: dict[str, Any] = {"device": device}
            if dtype is not None and next(module.parameters()).dtype != dtype:
                kwargs["dtype"] = dtype  # only a real cast: diffusers warns on any dtype argument, even a no-op
            module.to(**kwargs)
        with self._lock:
            self._prompts.clear()
            self._latent_cache.clear()
        return self

    def latent_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of the latent for a canvas; a clear error when the canvas does not divide evenly."""
        f = self.vae_scale_factor
        if height <= 0 or width <= 0:
            raise SizeError(f"canvas size must be positive, got {height}x{width}")
        if height % f or width % f:
            raise SizeError(
                f"canvas {height}x{width} is not divisible by the latent factor {f}; "
                f"use e.g. {height // f * f or f}x{width // f * f or f}"
            )
        return height // f, width // f

    # ---------------------------------------------------------------- encoders
    def encode_prompt(self, text: str) -> Conditioning:
        """Text → conditioning [1, N, D]; each distinct prompt is encoded once (LRU cache)."""
        with self._lock:
            cached = self._prompts.get(text)
            if cached is not None:
                self._prompts.move_to_end(text)
                return cached
        self._warn_unknown_words(text)
        cond = self._encode_clip(text)
        with self._lock:
            self._prompts[text] = cond
            while len(self._prompts) > self.PROMPT_CACHE_SIZE:
                self._prompts.popitem(last=False)
        return cond

    def _warn_unknown_words(self, text: str) -> None:
        if self.vocabulary is None:
            return
        unknown = sorted({w for w in re.findall(r"[a-z0-9']+", text.lower()) if w not in self.vocabulary})
        if unknown:
            warnings.warn(
                f"{self.name}: words outside its vocabulary have no meaning to it: {unknown}; "
                f"known words: {sorted(self.vocabulary)}",
                UnknownWordsWarning,
                stacklevel=3,
            )

    @torch.no_grad()
    def _encode_clip(self, text: str) -> Conditioning:
        """CLIP encoding exactly as diffusers' StableDiffusionPipeline.encode_prompt (no clip skip)."""
        tok = self.tokenizer
        enc = tok(
            text, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt"
        )
        ids = enc.input_ids
        full = tok(text, padding="longest", return_tensors="pt").input_ids
        if full.shape[-1] > ids.shape[-1]:
            log.warning("prompt truncated to %d tokens: %r", tok.model_max_length, text)
        te = self.text_encoder
        mask = enc.attention_mask.to(self.device) if getattr(te.config, "use_attention_mask", False) else None
        embeds = te(ids.to(te.device), attention_mask=mask)[0]
        return Conditioning(embeds.to(dtype=self.dtype, device=self.device))

    @torch.no_grad()
    def predict(self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """Denoiser output for model inputs x [B, C, h, w] at timesteps t [B] under cond (batch B)."""
        return self.unet(x.to(self.dtype), t.to(self.device), encoder_hidden_states=cond.embeds,
                         return_dict=False)[0]  # fmt: skip

    @torch.no_grad()
    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels [B, 3, H, W] in [-1, 1] → scaled latents (distribution mode, so deterministic)."""
        vae = self.vae
        out = vae.encode(pixels.to(device=self.device, dtype=vae.dtype))
        lat = out.latent_dist.mode() if hasattr(out, "latent_dist") else out.latents
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        return ((lat - shift) * vae.config.scaling_factor).to(self.dtype)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents → pixels [B, 3, H, W] in about [-1, 1]."""
        vae = self.vae
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        z = latents.to(vae.dtype) / vae.config.scaling_factor + shift
        return vae.decode(z, return_dict=False)[0]

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
        if steps is None and timesteps is None:
            timesteps = self.defaults.timesteps
            steps = self.family.default_steps if timesteps is None else None
        table = sampling.build_schedule(self.sampler, self.scheduler_config, steps=steps, timesteps=timesteps)
        return table.to(self.device)

    def __repr__(self) -> str:
        return f"Model(name={self.name!r}, family={self.family.name!r}, sampler={self.sampler!r}, device={self.device})"
