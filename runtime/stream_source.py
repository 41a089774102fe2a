"""What a stream runs on: a torch :class:`Model` or an engine set, resolved and checked once.

:func:`open_source` turns ``Stream``'s ``source`` argument (a model, an :class:`EngineSet` or an engine-set
folder) into a :class:`StreamSource`: the networks behind the one contract of networks.py, the family, the
prompt encoder, the sampler schedule and the canvas, with every contradiction between what was asked and
what the source can do reported as one clear error before anything runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from . import sampling as S
from .backends import CudaGraphed
from .choices import BACKENDS, DEFAULT_LAYERS
from .engines import EngineSet, load_engines, load_prompt_encoder, weights_fingerprint
from .errors import ConfigError
from .families import FamilySpec, SamplingDefaults, get_family
from .model import Model, latent_size, schedule_for
from .networks import Networks
from .precision import check_for_engine_set

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class StreamSource:
    """The resolved source of a stream."""

    networks: Networks
    family: FamilySpec
    prompts: Any  # PromptEncoder
    sched: S.SamplerSchedule
    defaults: SamplingDefaults
    height: int
    width: int
    layers: int
    latent_factor: int  # canvas pixels per latent pixel
    latent_channels: int  # the denoiser's (read from its config, or the engine set's manifest)
    device: torch.device
    dtype: torch.dtype
    model: Model | None = None
    engines: EngineSet | None = None

    @property
    def latent(self) -> tuple[int, int]:
        """(h, w) of the latent, checked: a clear error for a canvas the denoiser cannot take."""
        if self.engines is None and self.model is not None:
            return self.model.latent_size(self.height, self.width)
        return latent_size(self.height, self.width, self.latent_factor)


def open_source(source: Model | EngineSet | str | Path, *, height: int | None, width: int | None,
                layers: int | None, steps: int | None, timesteps: Any, cfg: str, backend: str,
                device: str | torch.device | None, model: Model | None, cuda_graph: bool,
                compile: bool = False, precision: str = "fp32") -> StreamSource:  # fmt: skip
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if isinstance(source, Model):
        return _from_model(source, height=height, width=width, layers=layers, steps=steps, timesteps=timesteps,
                           backend=backend, device=device, cuda_graph=cuda_graph, compile=compile,
                           precision=precision)  # fmt: skip
    if compile:
        raise ConfigError("compile=True compiles a torch model's networks; an engine set's runtime compiled its own")
    check_for_engine_set(precision)  # before the set's folder is read
    if backend == "torch":
        raise ConfigError("backend 'torch' runs a Model; pass semdraw.load_model(...) instead of an engine set")
    engines = source if isinstance(source, EngineSet) else None
    if engines is None:
        # layers and cfg are checked below, where the denoiser's row axis is known
        expect = {k: v for k, v in (("height", height), ("width", width)) if v is not None}
        engines = load_engines(source, backend, device=device, expect=expect, text=model is None, cuda_graph=cuda_graph)
    return _from_engines(engines, height=height, width=width, layers=layers, steps=steps, timesteps=timesteps,
                         cfg=cfg, model=model)  # fmt: skip


def _from_model(model: Model, *, height: int | None, width: int | None, layers: int | None, steps: int | None,
                timesteps: Any, backend: str, device: str | torch.device | None, cuda_graph: bool,
                compile: bool, precision: str) -> StreamSource:  # fmt: skip
    if backend not in ("auto", "torch"):
        raise ConfigError(
            f"backend {backend!r} runs an engine set, not a torch model: build one for this model with "
            "build-engines (see `build-engines --help`) and pass its folder"
        )
    if device is not None and torch.device(device) != model.device:
        raise ConfigError(f"the model is on {model.device}; move it with model.to({str(device)!r}) first")
    networks = Networks.from_model(model).at_precision(precision)
    if compile:
        networks = networks.compiled()
    if cuda_graph and model.device.type != "cuda":
        raise ConfigError("cuda_graph=True needs a model on CUDA")
    if cuda_graph:  # the batch shape is fixed: capture the denoiser call once, replay it every frame
        networks = replace(networks, denoise=CudaGraphed(networks.denoise), any_batch=False)
    return StreamSource(
        networks=networks, family=model.family, prompts=model.prompts, sched=model.schedule(steps=steps, timesteps=timesteps),
        defaults=model.defaults, height=model.native_size if height is None else height,
        width=model.native_size if width is None else width,
        layers=DEFAULT_LAYERS if layers is None else int(layers), latent_factor=model.vae_scale_factor,
        latent_channels=model.latent_channels,
        device=model.device, dtype=model.dtype, model=model,
    )  # fmt: skip


def _from_engines(engines: EngineSet, *, height: int | None, width: int | None, layers: int | None,
                  steps: int | None, timesteps: Any, cfg: str, model: Model | None) -> StreamSource:  # fmt: skip
    man, req = engines.manifest, engines.manifest.request
    networks = Networks.from_engines(engines)
    height = req.height if height is None else height
    width = req.width if width is None else width
    layers = req.layers if layers is None else layers
    # A denoiser with a row axis takes any number of rows (up to a TensorRT plan's range, which the runner
    # checks per call): then layers and cfg are the stream's own choice.
    asked, built = (height, width, layers, cfg), (req.height, req.width, req.layers, req.cfg)
    if networks.any_batch:
        asked, built = asked[:2], built[:2]
    if asked != built:
        raise ConfigError(
            f"the engine set was built for {req.height}x{req.width}, {req.layers} layers, cfg {req.cfg!r}; "
            f"rebuild it with: {man.rebuild_line(engines.path, height=height, width=width, layers=layers, cfg=cfg)}"
        )
    family = get_family(man.family)
    # The set's own text encoders (the source model is never loaded), unless the caller passes a model.
    prompts = model.prompts if model is not None else engines.prompts or load_prompt_encoder(engines.path, man)
    if model is not None:
        _check_text_encoder_pairing(model, engines)
    defaults = SamplingDefaults(timesteps=req.timesteps, bootstrap_steps=man.bootstrap_steps,
                                bootstrap_mix_steps=man.bootstrap_mix_steps)  # fmt: skip
    sched = schedule_for(man.sampler, man.scheduler_config, defaults, family, steps, timesteps, man.sampler_params)
    steps_built = tuple(float(t) for t in req.timesteps)
    if tuple(float(t) for t in sched.timesteps.tolist()) != steps_built:
        raise ConfigError(f"the engine set was built for timesteps {list(steps_built)}; rebuild with: "
                          f"{man.rebuild_line(engines.path, timesteps=sched.timesteps.tolist())}")  # fmt: skip
    return StreamSource(
        networks=networks, family=family, prompts=prompts, sched=sched, defaults=defaults, height=height,
        width=width, layers=int(layers), latent_factor=req.height // man.latent_height,
        latent_channels=man.latent_channels, device=networks.device,
        dtype=torch.float32, model=model, engines=engines,
    )  # fmt: skip


def _check_text_encoder_pairing(model: Model, engines: EngineSet) -> None:
    """Warn when the text encoder is not the one the engine set was built with (same name, other weights)."""
    req = engines.manifest.request
    if req.text_encoder_weights and weights_fingerprint(*model.prompts.modules()) != req.text_encoder_weights:
        log.warning(
            "the text encoder of %s differs from the one %s was built with (a retrained or updated model, or "
            "one loaded in bfloat16); if images look wrong, rebuild it with: %s",
            model.name, engines.path, engines.manifest.rebuild_line(engines.path),
        )  # fmt: skip
