"""int8 networks for onnxruntime on the CPU: static quantization (QDQ, weights per channel) calibrated on the
inputs the network gets while the model makes its own images, accepted only if the images the model makes
with it stay within a pixel tolerance of those it makes with the torch network (other compositions and
seeds than the calibration's).

Each network that may be quantized is one :class:`Int8Recipe` in :data:`RECIPES`: the ops quantized, the
network's place in the sampler (its inputs captured, the int8 file swapped in) and its tolerance. On the
toy's set (AVX-512 VNNI): the decoder decodes 2.3-3.1x faster (1-2 threads) for a mean image error of
about 1/255; the denoiser's convolutions alone run 1.4x faster in a lane for a mean image error of about
6/255 (the toy's fidelity scores unchanged: docs/benchmarks.md); quantizing the denoiser's other ops too
was slower and worse (scripts/int8_probe.py)."""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .networks import Network
from .steps import BuildError

log = logging.getLogger("semdraw.build_engines")

# The compositions whose images calibrate and validate: a background prompt and one object brush, words
# every model (the toy's small vocabulary included) knows. Disjoint seeds and pairings for validation.
BACKGROUNDS = ("blue sky", "green grass", "yellow sand", "deep blue water", "dark night sky", "white snow")
OBJECTS = ("a red circle", "a yellow sun", "a pink diamond", "a purple triangle", "a gray square", "a cyan circle")
CALIBRATION_IMAGES = 8
VALIDATION_IMAGES = 4


@dataclass(frozen=True)
class Composition:
    background: str
    brush: str
    centre: tuple[float, float]  # fractions of the canvas (y, x)
    radius: float  # fraction of the shorter side
    seed: int


def compositions(count: int, first_seed: int, offset: int = 0) -> list[Composition]:
    """``count`` fixed compositions; ``offset`` shifts the pairings (validation pairs differ from calibration)."""
    rng = np.random.default_rng(first_seed)
    out = []
    for i in range(count):
        y, x = rng.uniform(0.25, 0.75, size=2)
        out.append(Composition(BACKGROUNDS[(i + offset) % len(BACKGROUNDS)], OBJECTS[(i + 2 * offset) % len(OBJECTS)],
                               (float(y), float(x)), float(rng.uniform(0.12, 0.3)), first_seed + i))  # fmt: skip
    return out


def disc(height: int, width: int, centre: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    r = radius * min(height, width)
    return (((yy - centre[0] * height) ** 2 + (xx - centre[1] * width) ** 2) <= r * r).astype(np.float32)


def images(model, networks, height: int, width: int, scenes: list[Composition], what: str) -> torch.Tensor:
    """The model's one-shot images of ``scenes`` with ``networks``, [N, H, W, 3] in 8-bit levels (float)."""
    from tqdm.auto import tqdm

    import semdraw

    out = []
    for scene in tqdm(scenes, desc=what, unit="image", leave=False):
        brush = semdraw.Brush(scene.brush, disc(height, width, scene.centre, scene.radius))
        img = semdraw.generate(model, [brush], background=semdraw.Background(prompt=scene.background),
                               height=height, width=width, seed=scene.seed, output_type="np", networks=networks)  # fmt: skip
        out.append(torch.from_numpy(np.asarray(img, dtype=np.float32)))
    return torch.stack(out)


# How each network sits in the sampler: its calls' inputs as its ONNX file takes them (in the manifest's
# order), and the sampler's networks with the ONNX runner in its place.
Capture = Callable[[Any, Any, Callable[[tuple[torch.Tensor, ...]], None]], Any]  # (networks, model, seen) -> networks
Swap = Callable[[Any, Any, Any], Any]  # (networks, model, runner) -> networks


def _capture_decoder(networks, model, seen):
    from semdraw.networks import from_latent

    scale, shift = model.latent_scaling

    def decode(latents: torch.Tensor) -> torch.Tensor:
        seen((from_latent(latents, scale, shift).float().cpu(),))
        return networks.decode(latents)

    return replace(networks, decode=decode, decode_many=None)


def _swap_decoder(networks, model, runner):
    from semdraw.networks import from_latent

    scale, shift = model.latent_scaling
    return replace(networks, decode=lambda latents: runner(from_latent(latents, scale, shift)), decode_many=None)


def _capture_denoiser(networks, model, seen):
    names = [i.name for i in model.family.conditioning]

    def denoise(x: torch.Tensor, t: torch.Tensor, cond) -> torch.Tensor:
        seen((x.float().cpu(), t.cpu(), *(cond[n].float().cpu() for n in names)))
        return networks.denoise(x, t, cond)

    return replace(networks, denoise=denoise)


def _swap_denoiser(networks, model, runner):
    family = model.family

    def denoise(x: torch.Tensor, t: torch.Tensor, cond) -> torch.Tensor:
        return runner(**{family.sample_input: x, family.timestep_input: t}, **cond)

    return replace(networks, denoise=denoise)


@dataclass(frozen=True)
class Int8Recipe:
    """How one network is quantized and what it must keep."""

    op_types: tuple[str, ...] | None  # the ops quantized (None: every op onnxruntime quantizes)
    capture: Capture
    swap: Swap
    max_mean_abs_255: float  # the images' mean error against the torch network's, 8-bit levels
    max_p99_abs_255: float  # ... at the 99th percentile


# Bounds: about 1.5x the toy's measured errors (decoder 1.1 / 4; denoiser 5.7 / 24 at the 99th percentile).
RECIPES: dict[str, Int8Recipe] = {
    "vae_decoder": Int8Recipe(None, _capture_decoder, _swap_decoder, 3.0, 16.0),
    "denoiser": Int8Recipe(("Conv",), _capture_denoiser, _swap_denoiser, 9.0, 40.0),
}


def quantize(net: Network, recipe: Int8Recipe, source: Path, target: Path,
             calibration: list[tuple[torch.Tensor, ...]]) -> None:  # fmt: skip
    """Static int8 QDQ (activations uint8, weights int8 per channel), ranges from ``calibration`` (min/max)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    names = [i.name for i in net.inputs]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self.items, None)
            return None if item is None else {n: t.numpy() for n, t in zip(names, item, strict=True)}

    source, target = source.resolve(), target.resolve()  # the quantizer runs in its own working folder
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".int8-") as work:
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        chosen = {"op_types_to_quantize": list(recipe.op_types)} if recipe.op_types else {}
        with contextlib.chdir(work):  # the quantizer leaves temporary models in the working folder
            quantize_static(str(prepared), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, **chosen)  # fmt: skip


def pixel_errors(got: torch.Tensor, want: torch.Tensor) -> dict[str, float]:
    """Errors between two sets of images in 8-bit levels, as a frame shows them."""
    diff = (got.float() - want.float()).abs().flatten()
    return {"finite": bool(torch.isfinite(got).all()), "mean_abs_255": float(diff.mean()),
            "p99_abs_255": float(torch.quantile(diff[:: max(1, diff.numel() // 1_000_000)], 0.99)),
            "max_abs_255": float(diff.max())}  # fmt: skip


def build_int8(model, net: Network, height: int, width: int, source: Path, target: Path) -> dict[str, float]:
    """Calibrate on the network's inputs while the model makes 8 images, quantize ``source`` into
    ``target``, and accept it only if 4 other images made with it stay within the recipe's tolerance of the
    same images made with the torch network; returns the measured errors."""
    from semdraw import backends
    from semdraw.networks import Networks

    recipe = RECIPES[net.role]
    networks = Networks.from_model(model)
    seen: list[tuple[torch.Tensor, ...]] = []
    log.info("%s: int8 calibration on its inputs while the model makes %d images", net.role, CALIBRATION_IMAGES)
    images(model, recipe.capture(networks, model, seen.append), height, width,
           compositions(CALIBRATION_IMAGES, first_seed=0), f"{net.role} int8: calibration")  # fmt: skip
    quantize(net, recipe, source, target, seen)
    runner = backends.OrtRunner(target, [i.name for i in net.inputs], net.output.name, device="cpu")
    held_out = compositions(VALIDATION_IMAGES, first_seed=100, offset=1)
    m = pixel_errors(images(model, recipe.swap(networks, model, runner), height, width, held_out, f"{net.role} int8: check"),
                     images(model, networks, height, width, held_out, f"{net.role} fp32: check"))  # fmt: skip
    if not m["finite"]:
        raise BuildError(f"{net.role} int8 ONNX: images contain NaN or Inf")
    if m["mean_abs_255"] > recipe.max_mean_abs_255 or m["p99_abs_255"] > recipe.max_p99_abs_255:
        raise BuildError(f"{net.role} int8 ONNX: images' mean error {m['mean_abs_255']:.2f}/255 (max "
                         f"{recipe.max_mean_abs_255:g}), 99th percentile {m['p99_abs_255']:.1f}/255 (max "
                         f"{recipe.max_p99_abs_255:g}) against the torch network's on held-out compositions; "
                         "build it without int8")  # fmt: skip
    return m
