"""int8 networks for onnxruntime on the CPU: static quantization (QDQ, weights per channel) calibrated on the
inputs the model itself produces, accepted only within a pixel tolerance on other such inputs.

Only the decoder is offered: on the toy's set it decoded 2.3-3.1x faster (1-2 threads; AVX-512 VNNI) for a
mean error of about 1/255, while the denoiser gained 1.2x for a larger, compounding error
(scripts/int8_probe.py; docs/engines.md)."""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .networks import Network
from .steps import BuildError

log = logging.getLogger("semdraw.build_engines")

# Acceptance of an int8 decoder against the torch fp32 decoder, in 8-bit pixel levels on held-out latents
# (the toy's measured 1.1 mean, 3.7 at the 99th percentile). A frame is JPEG-compressed after this, which
# alone errs by more than the mean bound.
INT8_MAX_MEAN_ABS_255 = 3.0
INT8_MAX_P99_ABS_255 = 16.0

# The compositions whose latents calibrate and validate: a background prompt and one object brush, words
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


def decoder_latents(model, height: int, width: int, scenes: list[Composition]) -> list[tuple[torch.Tensor, ...]]:
    """The decoder's inputs (raw latents, as its ONNX file takes them) of the model's own one-shot images."""
    import semdraw
    from semdraw.networks import Networks, from_latent

    networks = Networks.from_model(model)
    scale, shift = model.latent_scaling
    seen: list[tuple[torch.Tensor, ...]] = []

    def capture(latents: torch.Tensor) -> torch.Tensor:
        seen.append((from_latent(latents, scale, shift).float().cpu(),))
        return networks.decode(latents)

    for scene in scenes:
        brush = semdraw.Brush(scene.brush, disc(height, width, scene.centre, scene.radius))
        semdraw.generate(model, [brush], background=semdraw.Background(prompt=scene.background), height=height,
                         width=width, seed=scene.seed, output_type="np", networks=replace(networks, decode=capture))  # fmt: skip
    return seen


# Per role: the model's own inputs of that network (model, height, width, compositions) -> input tuples.
OWN_INPUTS: dict[str, Callable[..., list[tuple[torch.Tensor, ...]]]] = {"vae_decoder": decoder_latents}
INT8_ROLES = tuple(OWN_INPUTS)


def quantize(net: Network, source: Path, target: Path, calibration: list[tuple[torch.Tensor, ...]]) -> None:
    """Static int8 QDQ of every op onnxruntime quantizes (activations uint8, weights int8 per channel), ranges
    from ``calibration`` (min/max)."""
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
        with contextlib.chdir(work):  # the quantizer leaves temporary models in the working folder
            quantize_static(str(prepared), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)  # fmt: skip


def pixel_errors(got: torch.Tensor, want: torch.Tensor) -> dict[str, float]:
    """Errors of decoded images ([-1, 1]) in 8-bit levels, as a frame shows them."""

    def levels(x: torch.Tensor) -> torch.Tensor:
        return ((x.float() + 1) * 127.5).clamp(0, 255)

    diff = (levels(got) - levels(want)).abs().flatten()
    return {"finite": bool(torch.isfinite(got).all()), "mean_abs_255": float(diff.mean()),
            "p99_abs_255": float(torch.quantile(diff[:: max(1, diff.numel() // 1_000_000)], 0.99)),
            "max_abs_255": float(diff.max())}  # fmt: skip


def validate_int8(net: Network, path: Path, inputs: list[tuple[torch.Tensor, ...]]) -> dict[str, float]:
    """Accept the int8 file only within the pixel tolerance against the torch module on ``inputs``."""
    from semdraw import backends

    runner = backends.OrtRunner(path, [i.name for i in net.inputs], net.output.name, device="cpu")
    with torch.no_grad():
        want = torch.cat([net.module(*x) for x in inputs])
    got = torch.cat([runner(*x) for x in inputs])
    m = pixel_errors(got, want)
    if not m["finite"]:
        raise BuildError(f"{net.role} int8 ONNX: output contains NaN or Inf")
    if m["mean_abs_255"] > INT8_MAX_MEAN_ABS_255 or m["p99_abs_255"] > INT8_MAX_P99_ABS_255:
        raise BuildError(f"{net.role} int8 ONNX: mean error {m['mean_abs_255']:.2f}/255 (max {INT8_MAX_MEAN_ABS_255:g}), "
                         f"99th percentile {m['p99_abs_255']:.1f}/255 (max {INT8_MAX_P99_ABS_255:g}) vs torch on "
                         "held-out latents; build without --int8-decoder")  # fmt: skip
    return m


def build_int8(model, net: Network, height: int, width: int, source: Path, target: Path) -> dict[str, float]:
    """Calibrate on the model's own inputs, quantize ``source`` into ``target``, validate on other inputs;
    returns the validation figures."""
    own = OWN_INPUTS[net.role]
    log.info("%s: int8 calibration on %d of the model's own images", net.role, CALIBRATION_IMAGES)
    calibration = own(model, height, width, compositions(CALIBRATION_IMAGES, first_seed=0))
    held_out = own(model, height, width, compositions(VALIDATION_IMAGES, first_seed=100, offset=1))
    quantize(net, source, target, calibration)
    return validate_int8(net, target, held_out)
