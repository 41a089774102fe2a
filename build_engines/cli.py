"""`build-engines`: export a model's denoiser (LoRAs fused) and VAE halves to ONNX and TensorRT engine sets."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import torch

from semdraw import backends, engines
from semdraw.engines import MANIFEST, BuildRequest, Manifest, NetworkEntry, sha256_file
from semdraw.errors import SemdrawError

from . import steps
from .networks import describe

log = logging.getLogger("semdraw.build_engines")
DEFAULT_LAYERS = 4


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="build-engines",
        description="Export a model for the semdraw stream: the denoiser with its LoRAs fused, at a static "
        "stream-batch shape (layers x steps rows, step-major), and the Tiny AutoEncoder's encoder and decoder, "
        "to ONNX (fp32: the CPU path and the reference) and, where TensorRT and a CUDA GPU exist, to TensorRT "
        "plans built from an fp16 ONNX. Every artifact is validated against the torch module before it is "
        "accepted; the set is written to a temporary folder and renamed into place only when complete.",
    )
    p.add_argument(
        "--model",
        default="toy",
        help="toy (default), sd15, a hub id, a diffusers folder, or a .safetensors file",
    )
    p.add_argument(
        "--lora",
        action="append",
        default=[],
        metavar="ID_OR_PATH[:SCALE]",
        help="extra LoRA to fuse (repeatable); presets already fuse their acceleration LoRA",
    )
    p.add_argument(
        "--height", type=int, default=None, help="canvas height in pixels (default: the model's native size)"
    )
    p.add_argument(
        "--width", type=int, default=None, help="canvas width in pixels (default: the model's native size)"
    )
    p.add_argument(
        "--layers",
        type=int,
        default=DEFAULT_LAYERS,
        help=f"prompt rows L per step in the stream batch: the brushes painted at once, plus one if you use a "
        f"background prompt (default: {DEFAULT_LAYERS})",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--steps", type=int, default=None, help="sampling steps T (default: the model's)")
    g.add_argument("--timesteps", default=None, help="explicit timesteps, e.g. 999,759,499,259")
    p.add_argument(
        "--cfg",
        choices=("none", "full"),
        default="none",
        help="none: guidance 1 (few-step models); full: negative prompts, batch doubled",
    )
    p.add_argument(
        "--backend",
        choices=("onnx", "tensorrt", "all"),
        default="all",
        help="onnx: ONNX only; tensorrt/all: also TensorRT plans where TensorRT and CUDA exist",
    )
    p.add_argument(
        "--precision", choices=("fp16", "fp32"), default="fp16", help="TensorRT precision (default fp16)"
    )
    p.add_argument("--out", type=Path, default=None, help="output folder (default: engines/<model name>)")
    p.add_argument(
        "--workspace-gb", type=float, default=8.0, help="TensorRT builder workspace cap in GB (default 8)"
    )
    return p


def _tools(with_tensorrt: bool) -> dict[str, str]:
    import diffusers
    import onnx
    import onnxruntime

    tools = {"torch": torch.__version__, "diffusers": diffusers.__version__, "onnx": onnx.__version__,
             "onnxruntime": onnxruntime.__version__, "opset": str(steps.OPSET)}  # fmt: skip
    if with_tensorrt:
        tools["tensorrt_target"] = steps.tensorrt_tag()
    return tools


def build(args: argparse.Namespace) -> Path:
    import semdraw

    if args.layers < 1:
        raise SemdrawError(f"--layers must be >= 1, got {args.layers}")
    started = time.perf_counter()
    model = semdraw.load_model(args.model, loras=args.lora, device="cpu", dtype=torch.float32)
    height, width = args.height or model.native_size, args.width or model.native_size
    model.latent_size(height, width)  # clear error for sizes that do not divide
    timesteps = [float(t) for t in args.timesteps.split(",")] if args.timesteps else None
    sched = model.schedule(steps=args.steps, timesteps=timesteps)
    want_trt = args.backend in ("tensorrt", "all")
    trt_ok = want_trt and backends.tensorrt_available()
    if want_trt and not trt_ok:
        try:
            backends.import_tensorrt()
            why = "no CUDA device"
        except backends.BackendError:
            why = "tensorrt is not installed"
        log.info("TensorRT skipped (%s); building ONNX only", why)
    request = BuildRequest(
        model=args.model, loras=tuple(semdraw.parse_lora(x) for x in args.lora), height=height, width=width,
        layers=args.layers, timesteps=tuple(float(t) for t in sched.timesteps.tolist()), cfg=args.cfg,
        backend=args.backend if trt_ok else "onnx", precision=args.precision,
        networks_weights=engines.weights_fingerprint(model.denoiser, model.vae),
        text_encoder_weights=engines.weights_fingerprint(*model.prompts.modules()),
    )  # fmt: skip
    tools = _tools(trt_ok)
    key = request.key(tools)
    out = args.out or Path("engines") / Path(args.model.rstrip("/")).name.removesuffix(".safetensors")
    if (out / MANIFEST).exists():
        try:
            old = engines.read_manifest(out)
            if old.key == key:
                engines.verify_files(out, old)
                log.info("cache hit: %s is up to date (key %s); nothing rebuilt", out, key)
                return out
        except engines.EngineSetError as err:
            log.info("rebuilding %s: %s", out, err)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.building-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        entries = _build_networks(model, request, tmp, trt_ok, args.workspace_gb)
        manifest = Manifest(
            request=request, key=key, family=model.family.name, sampler=model.sampler,
            scheduler_config=dict(model.scheduler_config), latent_channels=model.latent_channels,
            latent_height=height // model.vae_scale_factor, latent_width=width // model.vae_scale_factor,
            vae_scaling_factor=model.latent_scaling[0], vae_shift_factor=model.latent_scaling[1],
            tools=tools, networks=entries, fused_loras=tuple(model.loras),
        )  # fmt: skip
        (tmp / MANIFEST).write_text(manifest.to_json())
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("engine set %s built in %.0f s (key %s)", out, time.perf_counter() - started, key)
    return out


def _build_networks(model, request: BuildRequest, folder: Path, trt_ok: bool,
                    workspace_gb: float) -> dict[str, NetworkEntry]:  # fmt: skip
    from tqdm.auto import tqdm

    entries = {}
    nets = describe(model, request)
    for net in tqdm(nets, desc="networks", unit="net"):
        ref = steps.reference_output(net)
        onnx_file = f"{net.role}.onnx"
        steps.export_onnx(net, folder / onnx_file)
        validation = {"onnx_fp32": steps.validate(net, steps.run_onnx(net, folder / onnx_file), ref,
                                                  precision="fp32", artifact="fp32 ONNX")}  # fmt: skip
        fp16_file = plan_file = None
        if trt_ok:
            fp16_file, plan_file = f"{net.role}.fp16.onnx", f"{net.role}.{steps.tensorrt_tag()}.plan"
            steps.export_onnx(net, folder / fp16_file, fp16=request.precision == "fp16")
            steps.build_tensorrt(folder / fp16_file, folder / plan_file, folder.parent / ".timing-cache",
                                 workspace_gb=workspace_gb)
            validation["tensorrt"] = steps.validate(net, steps.run_tensorrt(net, folder / plan_file), ref,
                                                    precision=request.precision, artifact="TensorRT plan")  # fmt: skip
        files = [f for f in (onnx_file, fp16_file, plan_file) if f] + [
            p.name for p in folder.iterdir() if p.name.startswith(f"{net.role}.") and p.name.endswith(".data")
        ]
        entries[net.role] = NetworkEntry(
            inputs=net.inputs, output=net.output, onnx=onnx_file, onnx_fp16=fp16_file, tensorrt=plan_file,
            sha256={f: sha256_file(folder / f) for f in files}, validation=validation,
        )  # fmt: skip
        log.info("%s: fp32 ONNX max abs error vs torch %.1e", net.role, validation["onnx_fp32"]["max_abs"])
    return entries


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Replace ``out`` by the finished ``tmp`` folder; a crash leaves either the old or the new set."""
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = _parser().parse_args(argv)
    try:
        build(args)
    except SemdrawError as err:
        log.error("build-engines: %s", err)
        return 2 if not isinstance(err, steps.BuildError) else 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
