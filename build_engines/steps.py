"""Generic build steps over any :class:`~semdraw.build_engines.networks.Network`: ONNX export, validation
against the torch module, TensorRT build. None of them knows which network it handles."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

from semdraw import backends
from semdraw.errors import SemdrawError

from .networks import Network

log = logging.getLogger("semdraw.build_engines")

OPSET = 17
EXTERNAL_DATA_THRESHOLD = 1 << 30  # models above ~1 GB are written with one consolidated external-data file
# Acceptance thresholds against the torch fp32 module on the sample inputs.
FP32_MAX_ABS = 1e-4
FP16_MAX_REL_L2 = 2e-2  # ||a - b|| / ||b||
FP16_MIN_COSINE = 0.999


class BuildError(SemdrawError):
    """A build step that failed: export error, non-finite output, or an artifact outside its tolerance."""


def export_onnx(net: Network, path: Path, *, fp16: bool = False, any_batch: bool = False) -> None:
    """Export with the legacy (TorchScript) exporter at opset 17, constants folded; static shapes, except
    a symbolic row axis 0 on every input and the output with ``any_batch`` (for onnxruntime; TensorRT's
    source stays static)."""
    module, sample = net.module, net.sample
    if fp16:
        module = _half_copy(module)
        sample = tuple(t.half() if t.is_floating_point() else t for t in sample)
    big = sum(p.numel() * p.element_size() for p in module.parameters()) > EXTERNAL_DATA_THRESHOLD
    # A large export scatters one file per tensor: do it in a private folder, then consolidate beside `path`.
    target = path.parent / f".export-{path.stem}" / path.name if big else path
    target.parent.mkdir(exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow on static shapes
        torch.onnx.export(
            module, sample, str(target), input_names=[i.name for i in net.inputs], output_names=[net.output.name],
            opset_version=OPSET, do_constant_folding=True, dynamo=False,
            dynamic_axes={n: {0: "rows"} for n in [*(i.name for i in net.inputs), net.output.name]} if any_batch else None,
        )  # fmt: skip
    if big:
        _consolidate_external_data(target, path)


def _half_copy(module: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(module).half()


def _consolidate_external_data(scattered: Path, path: Path) -> None:
    """Rewrite an export with scattered tensor files as ``path`` + one ``path.data`` file."""
    import shutil

    import onnx

    model = onnx.load(str(scattered), load_external_data=True)
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=1024)  # fmt: skip
    shutil.rmtree(scattered.parent)


def compare(got: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """Max abs error, relative L2 error and cosine similarity of got vs ref (float64)."""
    a, b = got.detach().double().cpu().flatten(), ref.detach().double().cpu().flatten()
    if not torch.isfinite(a).all():
        return {"max_abs": float("inf"), "rel_l2": float("inf"), "cosine": 0.0, "finite": False}
    rel = float((a - b).norm() / b.norm().clamp(min=1e-12))
    cos = float(torch.nn.functional.cosine_similarity(a, b, dim=0))
    return {"max_abs": float((a - b).abs().max()), "rel_l2": rel, "cosine": cos, "finite": True}


@torch.no_grad()
def reference_output(net: Network) -> torch.Tensor:
    out = net.module(*net.sample)
    if not torch.isfinite(out).all():
        raise BuildError(f"{net.role}: the torch module itself produced NaN/Inf on the sample inputs")
    return out


def validate(
    net: Network, got: torch.Tensor, ref: torch.Tensor, *, precision: str, artifact: str
) -> dict[str, float]:
    """Accept an artifact only within its tolerance: fp32 by max abs, fp16 by rel L2 and cosine."""
    m = compare(got, ref)
    if not m["finite"]:
        raise BuildError(f"{net.role} {artifact}: output contains NaN or Inf")
    if precision == "fp32" and m["max_abs"] > FP32_MAX_ABS:
        raise BuildError(
            f"{net.role} {artifact}: max abs error {m['max_abs']:.2e} > {FP32_MAX_ABS:.0e} vs torch"
        )
    if precision == "fp16" and (m["rel_l2"] > FP16_MAX_REL_L2 or m["cosine"] < FP16_MIN_COSINE):
        raise BuildError(f"{net.role} {artifact}: rel L2 {m['rel_l2']:.2e} (max {FP16_MAX_REL_L2}), cosine "
                         f"{m['cosine']:.5f} (min {FP16_MIN_COSINE}) vs torch")  # fmt: skip
    return m


def run_onnx(net: Network, path: Path, rows: slice = slice(None)) -> torch.Tensor:
    """The ONNX file's output on the sample inputs (only ``rows`` of them: a file with a row axis)."""
    runner = backends.OrtRunner(path, [i.name for i in net.inputs], net.output.name, device="cpu")
    return runner(*(t[rows] for t in net.sample))


class _TqdmProgress:
    """A TensorRT IProgressMonitor that drives one tqdm bar per top-level phase."""

    def __new__(cls, trt):
        from tqdm.auto import tqdm

        class Monitor(trt.IProgressMonitor):
            def __init__(self) -> None:
                trt.IProgressMonitor.__init__(self)
                self.bars: dict[str, tqdm] = {}

            def phase_start(self, phase_name, parent_phase, num_steps):
                if parent_phase is None:
                    self.bars[phase_name] = tqdm(total=num_steps, desc=f"tensorrt: {phase_name}", leave=False)

            def step_complete(self, phase_name, step):
                bar = self.bars.get(phase_name)
                if bar is not None:
                    bar.n = step + 1
                    bar.refresh()
                return True  # never cancel

            def phase_finish(self, phase_name):
                bar = self.bars.pop(phase_name, None)
                if bar is not None:
                    bar.close()

        return Monitor()


def row_profile(shape: tuple[int, ...], rows: tuple[int, int, int]) -> tuple[tuple[int, ...], ...]:
    """(min, opt, max) shapes of an input whose axis 0 is the row axis, over the row range (min, opt, max)."""
    return tuple((r, *shape[1:]) for r in rows)


def build_tensorrt(onnx_path: Path, plan_path: Path, cache_path: Path, *, workspace_gb: float = 8.0,
                   rows: tuple[int, int, int] | None = None) -> None:  # fmt: skip
    """Build a TensorRT 10/11 plan from an ONNX file (fp16, or fp32 for a VAE that needs it) as a strongly
    typed network, with TF32 off: an fp32 plan is validated at fp32 tolerances (1e-4), which TF32 math
    does not meet (3.4e-3 on the tiny AutoencoderKL halves, emulated).

    ``rows`` (min, opt, max): the ONNX file has a symbolic row axis and the plan gets one optimisation
    profile over it, so it takes any row count in the range (tuned for ``opt``).

    The timing cache at ``cache_path`` (its name carries the TensorRT version and GPU: :func:`timing_cache`)
    is read if present and written back, so rebuilds are fast. GPU-only: not exercised in this project's CI.
    """
    trt = backends.import_tensorrt()
    logger = backends.tensorrt_logger()
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BuildError(f"TensorRT could not parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    config.clear_flag(trt.BuilderFlag.TF32)
    if rows is not None:
        profile = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            profile.set_shape(tensor.name, *row_profile(tuple(tensor.shape), rows))
        config.add_optimization_profile(profile)
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.exists() else b"")
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        raise BuildError(f"TensorRT refused the timing cache {cache_path}: delete it and build again")
    config.progress_monitor = _TqdmProgress(trt)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BuildError(f"TensorRT failed to build {onnx_path.name} (see the TensorRT log above)")
    plan_path.write_bytes(bytes(plan))
    cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))


def run_tensorrt(net: Network, plan: Path) -> torch.Tensor:
    runner = backends.TensorRTRunner(plan, [i.name for i in net.inputs], net.output.name, device="cuda")
    return runner(*(t.cuda() for t in net.sample)).float().cpu()


def timing_cache(folder: Path) -> Path:
    """The timing cache for this TensorRT version and GPU in ``folder`` (one shared file would be read by
    other versions and GPUs, which TensorRT refuses)."""
    return folder / f".timing-cache-{tensorrt_tag()}"


def tensorrt_tag() -> str:
    """'trt<version>-sm<cc>': TensorRT plans only run on the TensorRT version and GPU that built them."""
    trt = backends.import_tensorrt()
    major, minor = torch.cuda.get_device_capability()
    return f"trt{trt.__version__}-sm{major}{minor}"
