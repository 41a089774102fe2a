"""One contract for the networks a sampler calls, whatever runs them (torch modules or an engine set).

:class:`Networks` is three callables on device tensors: the denoiser by named inputs (sample, timestep,
conditioning by name, any number of rows where ``any_batch``), the VAE encoder (pixels → scaled latents)
and decoder (scaled latents → pixels). :class:`DenoiserBatch` is one denoiser call's inputs as a value, so
a caller can gather the rows of several streams into one call and split the prediction back
(:class:`semdraw.StreamHost`). The latent scaling of the VAE (``(z − shift)·scale``) lives here once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from .conditioning import Conditioning
from .errors import ConfigError

if TYPE_CHECKING:
    from .engines import EngineSet
    from .model import Model

Denoise = Callable[[torch.Tensor, torch.Tensor, Conditioning], torch.Tensor]  # (sample, timestep, cond) -> out
TimingHook = Callable[[str, float, int], None]  # (network name, seconds, rows of the call) after each call


def to_latent(raw: torch.Tensor, scale: float, shift: float) -> torch.Tensor:
    """The VAE encoder's latent z → the diffusion model's latent: (z − shift)·scale."""
    return (raw - shift) * scale


def from_latent(latents: torch.Tensor, scale: float, shift: float) -> torch.Tensor:
    """The diffusion model's latent → the VAE decoder's input: latent / scale + shift."""
    return latents / scale + shift


@dataclass(frozen=True)
class DenoiserBatch:
    """One denoiser call's inputs: ``sample`` [B, C, h, w] (already scaled by c_in), ``timestep`` [B],
    ``conditioning`` (named tensors, each [B, ...])."""

    sample: torch.Tensor
    timestep: torch.Tensor
    conditioning: Conditioning

    @property
    def rows(self) -> int:
        return int(self.sample.shape[0])

    @staticmethod
    def cat(batches: Sequence[DenoiserBatch]) -> DenoiserBatch:
        """The rows of several batches in one (same conditioning names and shapes but the row count)."""
        if len(batches) == 1:
            return batches[0]
        return DenoiserBatch(torch.cat([b.sample for b in batches]), torch.cat([b.timestep for b in batches]),
                             Conditioning.cat([b.conditioning for b in batches]))  # fmt: skip

    @staticmethod
    def split(prediction: torch.Tensor, batches: Sequence[DenoiserBatch]) -> list[torch.Tensor]:
        """The prediction of :meth:`cat`'s batch, cut back into one prediction per batch."""
        return list(prediction.split([b.rows for b in batches]))


@dataclass(frozen=True)
class Networks:
    """The networks a sampler calls, on device tensors, whatever backend runs them."""

    backend: str  # "torch" | "onnxruntime" | "tensorrt"
    denoise: Denoise
    encode: Callable[[torch.Tensor], torch.Tensor]  # pixels [B,3,H,W] in [-1,1] -> scaled latents
    decode: Callable[[torch.Tensor], torch.Tensor]  # scaled latents -> pixels in about [-1,1]
    any_batch: bool = False  # the denoiser takes any number of rows (so rows without weight can be left out)
    device: torch.device = torch.device("cpu")
    decoder_any_batch: bool = False  # the decoder takes several images in one call
    max_rows: int | None = None  # the most rows one denoiser call takes (a TensorRT row range; None: no bound)
    parameters: int = 0  # a torch denoiser's weights (what precision "auto" weighs); 0 for an engine set
    own_cpu_threads: bool = False  # they compute on CPU threads of their own (an onnxruntime set on the CPU)
    # several images' pixels in one go where the decoder runs them side by side (onnxruntime lanes); else None
    decode_many: Callable[[Sequence[torch.Tensor]], list[torch.Tensor]] | None = None

    def run(self, batch: DenoiserBatch) -> torch.Tensor:
        """The denoiser's prediction for a batch."""
        return self.denoise(batch.sample, batch.timestep, batch.conditioning)

    def decode_each(self, latents: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Pixels of each latent [1, C, h, w]: in one decoder call where the decoder takes several images,
        side by side where it runs them so, else one call each."""
        if self.decoder_any_batch and len(latents) > 1:
            return list(self.decode(torch.cat(list(latents))).split(1))
        if self.decode_many is not None and len(latents) > 1:
            return self.decode_many(latents)
        return [self.decode(latent) for latent in latents]

    def timed(self, hook: TimingHook) -> Networks:
        """The same networks, calling ``hook(name, seconds, rows)`` after each denoiser / decoder / encoder
        call (the device synchronised around the call, so the seconds are the call's own)."""
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)

        def wrap(name: str, fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
            def call(*args: torch.Tensor) -> torch.Tensor:
                sync()
                started = time.perf_counter()
                out = fn(*args)
                sync()
                hook(name, time.perf_counter() - started, len(args[0]))  # rows, or images of decode_many
                return out

            return call

        many = None if self.decode_many is None else wrap("decoder", self.decode_many)
        return replace(self, denoise=wrap("denoiser", self.denoise), encode=wrap("encoder", self.encode),
                       decode=wrap("decoder", self.decode), decode_many=many)  # fmt: skip

    def compiled(self) -> Networks:
        """The same networks with the denoiser and the decoder through ``torch.compile`` (torch models
        only: an engine set's runtime has compiled its networks already). The first calls compile (and
        a new row count recompiles once for any count: ``dynamic`` is left to torch), which takes minutes
        on a CPU; later calls run the generated kernels. The frame is the same to float rounding."""
        if self.backend != "torch":
            raise ConfigError(f"compile=True compiles torch models; the {self.backend} backend runs an engine "
                              "set, which its runtime compiled already")  # fmt: skip
        return replace(self, denoise=torch.compile(self.denoise), decode=torch.compile(self.decode))

    def at_precision(self, precision: str) -> Networks:
        """The same networks with the denoiser and the decoder in ``precision`` (semdraw.precision: "auto",
        "fp32", "bf16"; torch models on the CPU). An engine set's precision is the one it was built in."""
        from .precision import autocast, check_for_engine_set, resolve_precision

        if self.backend != "torch":
            check_for_engine_set(precision)
            return self
        if resolve_precision(precision, self.device, parameters=self.parameters) == "fp32":
            return self
        return replace(self, denoise=autocast(self.denoise), decode=autocast(self.decode))

    @staticmethod
    def from_model(model: Model) -> Networks:
        return Networks("torch", model.predict, model.encode_image, model.decode, any_batch=True,
                        device=model.device, decoder_any_batch=True,
                        parameters=sum(p.numel() for p in model.denoiser.parameters()))  # fmt: skip

    @staticmethod
    def from_engines(engines: EngineSet) -> Networks:
        from .families import get_family

        scale, shift = engines.manifest.vae_scaling_factor, engines.manifest.vae_shift_factor
        family = get_family(engines.manifest.family)

        def denoise(x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
            return engines.denoiser(**{family.sample_input: x, family.timestep_input: t}, **cond)

        def encode(pixels: torch.Tensor) -> torch.Tensor:
            return to_latent(engines.encoder(pixels), scale, shift)

        def decode(latents: torch.Tensor) -> torch.Tensor:
            return engines.decoder(from_latent(latents, scale, shift))

        def decode_many(latents: Sequence[torch.Tensor]) -> list[torch.Tensor]:
            return engines.decoder.run_each([(from_latent(z, scale, shift),) for z in latents])

        any_batch = bool(getattr(engines.denoiser, "any_batch", False))  # an ONNX file with a dynamic row axis
        device = torch.device(getattr(engines.denoiser, "device", "cpu"))
        return Networks(engines.backend, denoise, encode, decode, any_batch=any_batch, device=device,
                        decoder_any_batch=bool(getattr(engines.decoder, "any_batch", False)),
                        max_rows=getattr(engines.denoiser, "max_rows", None),
                        own_cpu_threads=bool(getattr(engines.denoiser, "own_cpu_threads", False)),
                        decode_many=decode_many if hasattr(engines.decoder, "run_each") else None)  # fmt: skip


def torch_threads_beside(networks: Networks, threads: int) -> int:
    """The torch CPU threads for a process running ``networks`` on ``threads`` threads: all of them, unless
    the networks compute on threads of their own; then one, since torch's work between network calls (masks,
    sampler steps, frames) is small, and its idle OpenMP threads spin after each operation on the cores the
    networks' threads need (on the toy's onnxruntime set, a profiling run's 4-painter tick: 80 -> 74 ms,
    the denoiser's share 34 -> 28 ms; docs/engines.md)."""
    return 1 if networks.own_cpu_threads else threads
