"""`build-engines`: export a model's denoiser (LoRAs fused) and VAE halves to ONNX and TensorRT engine sets."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from semdraw import backends, engines
from semdraw.choices import CFG_MODES, DEFAULT_LAYERS
from semdraw.engines import MANIFEST, BuildRequest, Manifest, NetworkEntry, sha256_file
from semdraw.errors import SemdrawError
from semdraw.loading import MODEL_HELP
from semdraw.quiet import quiet_libraries
from semdraw.tools import canvas_side, steps_arg

from . import quantize, steps
from .networks import describe

log = logging.getLogger("semdraw.build_engines")


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
        help=MODEL_HELP,
    )
    p.add_argument(
        "--family",
        default=None,
        help="the model's family when its files do not say (e.g. a single .safetensors checkpoint); "
        "default: from the preset or the folder's pipeline class, else sd15",
    )
    p.add_argument(
        "--lora",
        action="append",
        default=[],
        metavar="ID_OR_PATH[:SCALE]",
        help="extra LoRA to fuse (repeatable); presets already fuse their acceleration LoRA",
    )
    p.add_argument(
        "--height", type=canvas_side, default=None, help="canvas height in pixels (default: the model's native size)"
    )
    p.add_argument(
        "--width", type=canvas_side, default=None, help="canvas width in pixels (default: the model's native size)"
    )
    p.add_argument(
        "--layers",
        type=int,
        default=DEFAULT_LAYERS,
        help=f"prompt rows L per step in the stream batch: the brushes painted at once, plus one if you use a "
        f"background prompt (default: {DEFAULT_LAYERS})",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--steps", type=steps_arg, default=None, help="sampling steps T (default: the model's)")
    g.add_argument("--timesteps", default=None, help="explicit timesteps, e.g. 999,759,499,259")
    p.add_argument(
        "--cfg",
        choices=CFG_MODES,
        default="none",
        help="none: guidance 1 (few-step models); full: negative prompts, batch doubled (2·L·T rows); self / "
             "initialize: StreamDiffusion's residual CFG, L·T rows / L·T + L rows (a negative pass at the first "
             "step only)",
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
    p.add_argument(
        "--max-rows", type=int, default=0,
        help="TensorRT: build the denoiser plan for any row count from 1 to this (an optimisation profile, tuned "
             "for the stream batch), so one set serves a StreamHost's varying rows and any --layers/--cfg up to "
             "it (default 0: the fixed stream batch; ONNX files always take any row count)",
    )  # fmt: skip
    p.add_argument(
        "--int8-decoder", action="store_true",
        help="also write an int8 decoder for onnxruntime on the CPU (2-3x faster per frame on the toy, images "
             "~1/255 off), calibrated while the model makes its own images and accepted only if the images it "
             "makes stay within a pixel tolerance; onnxruntime on the CPU then runs it (load_engines(int8=False): "
             "the fp32 file)",
    )  # fmt: skip
    p.add_argument(
        "--int8-denoiser", action="store_true",
        help="the same for the denoiser's convolutions (1.4x faster per row on the toy, images ~6/255 off)",
    )
    p.add_argument("--out", type=Path, default=None, help="output folder (default: engines/<model name>)")
    p.add_argument(
        "--workspace-gb", type=float, default=8.0, help="TensorRT builder workspace cap in GB (default 8)"
    )
    return p


def onnxruntime_version() -> str:
    """The installed onnxruntime's version, whichever distribution brought it (``onnxruntime`` or
    ``onnxruntime-gpu``: both install the same module), without importing it."""
    from importlib.metadata import PackageNotFoundError, version

    for distribution in ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino"):
        try:
            return version(distribution)
        except PackageNotFoundError:
            continue
    raise SemdrawError("onnxruntime is not installed: pip install onnxruntime (or onnxruntime-gpu)")


def _tools(with_tensorrt: bool) -> dict[str, str]:
    from importlib.metadata import version  # installed versions, without importing the libraries

    tools = {"torch": torch.__version__, "diffusers": version("diffusers"), "onnx": version("onnx"),
             "onnxruntime": onnxruntime_version(), "opset": str(steps.OPSET)}  # fmt: skip
    if with_tensorrt:
        tools["tensorrt_target"] = steps.tensorrt_tag()
    return tools


# The request's int8 networks, each by the destination of the flag that asks for it.
_INT8_DEST = {"denoiser": "int8_denoiser", "vae_decoder": "int8_decoder"}
# Request fields and the argparse destinations that set them (the field is "loras", the flag --lora).
_FIELD_DEST = {"model": "model", "family": "family", "loras": "lora", "height": "height", "width": "width", "layers": "layers",
               "timesteps": "timesteps", "cfg": "cfg", "backend": "backend", "precision": "precision",
               "out": "out", "workspace_gb": "workspace_gb", "max_rows": "max_rows"}  # fmt: skip


def rebuild_command(request: BuildRequest, out: Path, workspace_gb: float) -> engines.RebuildCommand:
    """The command line that builds exactly ``request`` into ``out``, from this tool's own parser (so a
    renamed flag can never leave a stale hint), with the flag of each request field."""
    flags = {a.dest: a.option_strings[-1] for a in _parser()._actions if a.option_strings}
    by_field = {field: flags[dest] for field, dest in _FIELD_DEST.items()}
    argv = ["build-engines", by_field["model"], request.model]
    if request.family:
        argv += [by_field["family"], request.family]
    for src, scale in request.loras:
        argv += [by_field["loras"], f"{src}:{scale:g}"]
    values = {"height": request.height, "width": request.width, "layers": request.layers,
              "timesteps": ",".join(f"{t:g}" for t in request.timesteps), "cfg": request.cfg,
              "backend": request.backend, "precision": request.precision, "out": out}  # fmt: skip
    for field, value in values.items():
        argv += [by_field[field], str(value)]
    if request.backend != "onnx":
        argv += [by_field["workspace_gb"], f"{workspace_gb:g}"]
    if request.max_rows:
        argv += [by_field["max_rows"], str(request.max_rows)]
    argv += [flags[_INT8_DEST[role]] for role in request.int8]
    return engines.RebuildCommand(tuple(argv), by_field)


def _source_key(options: BuildOptions, backend: str, tools: dict[str, str], source: str) -> str:
    """A cache key known before loading anything: the request as given, the source files, the tools."""
    asked = {**asdict(options), "backend": backend, "out": None, "workspace_gb": None,
             "max_rows": options.max_rows if backend != "onnx" else 0}  # fmt: skip
    blob = json.dumps({"asked": asked, "source": source, "tools": tools, "format": engines.FORMAT_VERSION},
                      sort_keys=True)  # fmt: skip
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


class OutputError(SemdrawError):
    """An output path that cannot be written, or that holds something other than an engine set."""


def check_output(out: Path) -> None:
    """Refuses, before any work, an ``--out`` that would destroy or hide a user's file: an existing file, a
    folder that is neither empty nor an engine set (by its manifest), a path through a file."""
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise OutputError(f"--out {out}: {parent} is a file, not a folder")
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is an existing file; give a folder path for the engine set")
    existing = next(p for p in (out, *out.parents) if p.exists())
    try:  # a real write probe (permissions, read-only file systems), before any model loads
        tempfile.TemporaryDirectory(dir=existing, prefix=".semdraw-probe-").cleanup()
    except OSError as err:
        raise OutputError(f"--out {out}: cannot write in {existing} ({err.strerror or err})") from None
    if not out.exists():
        return
    if not (out / MANIFEST).exists() and any(out.iterdir()):
        raise OutputError(f"--out {out} exists and is not an engine set (no {MANIFEST}); refusing to replace "
                          "its contents: choose another folder")  # fmt: skip


def remove_stale_builds(parent: Path, name: str) -> None:
    """Deletes the ``.NAME.building-PID`` / ``.NAME.old-PID`` folders of builds whose process is gone (killed
    builds leave multi-GB folders behind)."""
    if not parent.is_dir():
        return
    for folder in parent.glob(f".{name}.*-*"):
        kind, _, pid = folder.name.rpartition("-")
        if not kind.endswith((".building", ".old")) or not pid.isdigit() or _alive(int(pid)):
            continue
        log.info("removing %s, left by an interrupted build", folder)
        shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # somebody else's process
        return True
    return True


def _cached(out: Path, source_key: str) -> bool:
    """Whether ``out`` already holds a complete set for this source key (no model loaded to decide)."""
    if not source_key or not (out / MANIFEST).exists():
        return False
    try:
        old = engines.read_manifest(out)
        if old.source_key != source_key:
            return False
        engines.verify_files(out, old)
    except engines.EngineSetError as err:
        log.info("rebuilding %s: %s", out, err)
        return False
    return True


@dataclass(frozen=True)
class BuildOptions:
    """What to build: the library's way to ask for an engine set (``build-engines``' flags are the same
    fields). ``loras``: "ID_OR_PATH[:SCALE]" entries; ``timesteps`` overrides ``steps``; ``max_rows``: a
    TensorRT row range (0: the fixed stream batch)."""

    model: str = "toy"
    family: str | None = None
    loras: tuple[str, ...] = ()
    height: int | None = None
    width: int | None = None
    layers: int = DEFAULT_LAYERS
    steps: int | None = None
    timesteps: tuple[float, ...] | None = None
    cfg: str = "none"
    backend: str = "all"  # "onnx" | "tensorrt" | "all" (TensorRT where it and CUDA exist)
    precision: str = "fp16"
    out: Path | None = None  # default: engines/<model name>
    workspace_gb: float = 8.0
    max_rows: int = 0
    int8_decoder: bool = False  # also an int8 decoder for onnxruntime on the CPU (build_engines.quantize)
    int8_denoiser: bool = False  # ... and an int8 denoiser

    @property
    def int8(self) -> tuple[str, ...]:
        """The networks that also get an int8 file."""
        asked = {"denoiser": self.int8_denoiser, "vae_decoder": self.int8_decoder}
        return tuple(role for role in quantize.RECIPES if asked[role])

    @staticmethod
    def from_args(args: argparse.Namespace) -> BuildOptions:
        timesteps = tuple(float(t) for t in args.timesteps.split(",")) if args.timesteps else None
        return BuildOptions(model=args.model, family=args.family, loras=tuple(args.lora), height=args.height,
                            width=args.width, layers=args.layers, steps=args.steps, timesteps=timesteps,
                            cfg=args.cfg, backend=args.backend, precision=args.precision, out=args.out,
                            workspace_gb=args.workspace_gb, max_rows=args.max_rows,
                            int8_decoder=args.int8_decoder, int8_denoiser=args.int8_denoiser)  # fmt: skip


def build(options: BuildOptions) -> Path:
    """Build (or reuse, when nothing changed) the engine set ``options`` describes; returns its folder.
    Errors are :class:`semdraw.SemdrawError` with one line that says what to do (``BuildError`` when an
    artifact fails its validation); nothing half-written is left, and an existing set is replaced only by a
    complete one."""
    import semdraw
    from semdraw.loading import check_canvas, source_fingerprint

    if options.layers < 1:
        raise SemdrawError(f"--layers must be >= 1, got {options.layers}")
    if options.workspace_gb <= 0:
        raise SemdrawError(f"--workspace-gb must be > 0, got {options.workspace_gb}")
    if options.max_rows < 0:
        raise SemdrawError(f"--max-rows must be >= 0 (0: the fixed stream batch), got {options.max_rows}")
    started = time.perf_counter()
    want_trt = options.backend in ("tensorrt", "all")
    trt_ok = want_trt and backends.tensorrt_available()
    if want_trt and not trt_ok:
        try:
            backends.import_tensorrt()
            why = "no CUDA device"
        except backends.BackendError:
            why = "tensorrt is not installed"
        log.info("TensorRT skipped (%s); building ONNX only", why)
    backend = options.backend if trt_ok else "onnx"
    check_canvas(options.model, options.height, options.width, family=options.family)  # before any weights load
    tools = _tools(trt_ok)
    out = options.out or Path("engines") / Path(options.model.rstrip("/")).name.removesuffix(".safetensors")
    check_output(out)
    source = source_fingerprint(options.model, options.loras)
    source_key = _source_key(options, backend, tools, source) if source is not None else ""
    if _cached(out, source_key):
        log.info("cache hit: %s is up to date (source key %s); nothing loaded or rebuilt", out, source_key)
        return out

    model = semdraw.load_model(options.model, loras=options.loras, device="cpu", dtype=torch.float32, family=options.family)
    height, width = options.height or model.native_size, options.width or model.native_size
    model.latent_size(height, width)  # what only the loaded model knows (a hub model's denoiser config)
    timesteps = [float(t) for t in options.timesteps] if options.timesteps else None
    sched = model.schedule(steps=options.steps, timesteps=timesteps)
    request = BuildRequest(
        model=options.model, family=options.family or "", loras=tuple(semdraw.parse_lora(x) for x in options.loras),
        height=height, width=width,
        layers=options.layers, timesteps=tuple(float(t) for t in sched.timesteps.tolist()), cfg=options.cfg,
        backend=backend, precision=options.precision, max_rows=options.max_rows if backend != "onnx" else 0,
        int8=options.int8,
        networks_weights=engines.weights_fingerprint(model.denoiser, model.vae),
        text_encoder_weights=engines.weights_fingerprint(*model.prompts.modules()),
    )  # fmt: skip
    if request.max_rows and request.max_rows < request.batch:
        raise SemdrawError(f"--max-rows {request.max_rows} is below the stream batch of {request.batch} rows "
                           f"({request.layers} layers x {len(request.timesteps)} steps, cfg {request.cfg})")
    key = request.key(tools)
    if (out / MANIFEST).exists():
        try:
            old = engines.read_manifest(out)
            if old.key == key:
                engines.verify_files(out, old)
                log.info("cache hit: %s is up to date (key %s); nothing rebuilt", out, key)
                return out
        except engines.EngineSetError as err:
            log.info("rebuilding %s: %s", out, err)

    check_output(out)  # again: the folder may have changed while the model loaded
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_builds(out.parent, out.name)
    tmp = out.parent / f".{out.name}.building-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        entries = _build_networks(model, request, tmp, trt_ok, options.workspace_gb)
        text = _save_text(model, tmp)
        scale, shift = model.latent_scaling
        manifest = Manifest(
            request=request, key=key, family=model.family.name, sampler=model.sampler,
            scheduler_config=dict(model.scheduler_config), latent_channels=model.latent_channels,
            latent_height=height // model.vae_scale_factor, latent_width=width // model.vae_scale_factor,
            vae_scaling_factor=scale, vae_shift_factor=shift, tools=tools, networks=entries,
            rebuild=rebuild_command(request, out, options.workspace_gb), text=text,
            bootstrap_steps=model.defaults.bootstrap_steps, source_key=source_key, fused_loras=tuple(model.loras),
            sampler_params=dict(model.sampler_params), bootstrap_mix_steps=model.defaults.bootstrap_mix_steps,
        )  # fmt: skip
        (tmp / MANIFEST).write_text(manifest.to_json())
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("engine set %s built in %.0f s (key %s)", out, time.perf_counter() - started, key)
    return out


def _save_text(model, folder: Path) -> engines.TextEntry:
    """The text half of the set: each tokenizer / text encoder (LoRAs fused) saved as the library saves it
    (safetensors weights), reloaded and checked to encode exactly as the model does."""
    from semdraw.prompts import PromptEncoder

    text_dir = folder / engines.TEXT_FOLDER
    classes = {}
    for name, component in model.prompts.components.items():
        if component is None:  # an absent optional encoder (SD3 without T5) stays absent
            continue
        component.save_pretrained(str(text_dir / name))
        classes[name] = type(component).__name__
    settings = model.prompts.settings
    reloaded = PromptEncoder(model.family, engines.load_text_components(text_dir, classes), settings=settings)
    for prompt in ("blue sky", "a red circle", ""):
        want, got = model.encode_prompt(prompt), reloaded(prompt)
        for n in want:
            err = steps.compare(got[n], want[n])["max_abs"]
            if err > steps.FP32_MAX_ABS:
                raise steps.BuildError(f"the saved text encoder's {n} differs from the model's by {err:.2e}")
    files = sorted(p for p in text_dir.rglob("*") if p.is_file())
    vocab = model.vocabulary
    return engines.TextEntry(classes, {str(p.relative_to(folder)): sha256_file(p) for p in files},
                             None if vocab is None else tuple(sorted(vocab)), dict(settings),
                             {str(p.relative_to(folder)): p.stat().st_size for p in files})  # fmt: skip


def row_range(request: BuildRequest) -> tuple[int, int, int] | None:
    """The denoiser plan's (min, opt, max) rows: 1 to ``--max-rows``, tuned for the stream batch (None: a
    fixed batch)."""
    if not request.max_rows:
        return None
    return 1, request.batch, request.max_rows


def _build_networks(model, request: BuildRequest, folder: Path, trt_ok: bool,
                    workspace_gb: float) -> dict[str, NetworkEntry]:  # fmt: skip
    from tqdm.auto import tqdm

    entries = {}
    nets = describe(model, request)
    for net in tqdm(nets, desc="networks", unit="net"):
        ref = steps.reference_output(net)
        onnx_file = f"{net.role}.onnx"
        steps.export_onnx(net, folder / onnx_file, any_batch=net.any_batch)
        validation = {"onnx_fp32": steps.validate(net, steps.run_onnx(net, folder / onnx_file), ref,
                                                  precision="fp32", artifact="fp32 ONNX")}  # fmt: skip
        if net.any_batch:  # the row axis really is free: a part of the batch gives those rows' outputs
            part = slice(0, max(1, ref.shape[0] // 2))
            validation["onnx_fp32_rows"] = steps.validate(net, steps.run_onnx(net, folder / onnx_file, part), ref[part],
                                                          precision="fp32", artifact="fp32 ONNX on part of the rows")  # fmt: skip
        int8_file = None
        if net.role in request.int8:
            int8_file = f"{net.role}.int8.onnx"
            validation["onnx_int8"] = quantize.build_int8(model, net, request.height, request.width,
                                                          folder / onnx_file, folder / int8_file)  # fmt: skip
            log.info("%s: int8 ONNX: images' mean error vs torch %.2f/255 (99th percentile %.1f)", net.role,
                     validation["onnx_int8"]["mean_abs_255"], validation["onnx_int8"]["p99_abs_255"])  # fmt: skip
        fp16_file = plan_file = rows = None
        if trt_ok:
            # A network that is not fp16-safe (the full SDXL VAE overflows) keeps an fp32 plan.
            precision = request.precision if net.fp16_safe else "fp32"
            # the TensorRT source, named by its precision (an fp32 plan's source is not "fp16")
            fp16_file, plan_file = f"{net.role}.{precision}.onnx", f"{net.role}.{steps.tensorrt_tag()}.plan"
            rows = row_range(request) if net.any_batch else None
            steps.export_onnx(net, folder / fp16_file, fp16=precision == "fp16", any_batch=rows is not None)
            steps.build_tensorrt(folder / fp16_file, folder / plan_file, steps.timing_cache(folder.parent),
                                 workspace_gb=workspace_gb, rows=rows)
            validation["tensorrt"] = steps.validate(net, steps.run_tensorrt(net, folder / plan_file), ref,
                                                    precision=precision, artifact="TensorRT plan")  # fmt: skip
        files = [f for f in (onnx_file, int8_file, fp16_file, plan_file) if f] + [
            p.name for p in folder.iterdir() if p.name.startswith(f"{net.role}.") and p.name.endswith(".data")
        ]
        entries[net.role] = NetworkEntry(
            inputs=net.inputs, output=net.output, onnx=onnx_file, onnx_fp16=fp16_file, tensorrt=plan_file, onnx_int8=int8_file,
            sha256={f: sha256_file(folder / f) for f in files}, validation=validation,
            sizes={f: (folder / f).stat().st_size for f in files},
            rows=dict(zip(("min", "opt", "max"), rows, strict=True)) if trt_ok and rows else None,
        )  # fmt: skip
        log.info("%s: fp32 ONNX max abs error vs torch %.1e", net.role, validation["onnx_fp32"]["max_abs"])
    return entries


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Replace ``out`` (absent, empty, or an engine set: :func:`check_output`) by the finished ``tmp``
    folder; a crash leaves either the old or the new set."""
    check_output(out)
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists() and not any(out.iterdir()):
        out.rmdir()
    elif out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    quiet_libraries()  # SEMDRAW_VERBOSE=1 shows the libraries' notices and load bars
    args = _parser().parse_args(argv)
    try:
        build(BuildOptions.from_args(args))
    except SemdrawError as err:
        log.error("build-engines: %s", err)
        return 2 if not isinstance(err, steps.BuildError) else 1
    except OSError as err:  # permissions, a full disk: nothing half-written is left (build() cleans up)
        log.error("build-engines: cannot write %s: %s", err.filename or "the engine set", err.strerror or err)
        return 2
    except KeyboardInterrupt:
        log.error("build-engines: interrupted; nothing was written (an existing set is unchanged)")
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
