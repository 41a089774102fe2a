"""The GPU check: one prepared run of everything semdraw can only verify on an NVIDIA GPU.

    bash scripts/gpu_check.sh [OUT.json]          # = python -m semdraw.tools.gpu_check --out OUT.json

On a machine with a CUDA build of torch it runs, each as its own process with its own time limit and
within one overall deadline (default 450 s, so the whole check stays under 8 minutes):

1. the gpu-marked tests (``pytest -m gpu``);
2. ``semdraw-bench stream`` on torch CUDA fp16 for ``toy`` and for ``sd15-random`` at 512², each with and
   without CUDA-graph capture;
3. where onnxruntime has its CUDA provider: a toy engine set on it;
4. where TensorRT imports: toy and sd15-random (512²) TensorRT sets built and benchmarked, with and
   without CUDA graphs; where it does not, the table says so.

It prints one table (check, status, seconds, fps) and writes every figure (the benches' own JSON, return
codes, the tail of each failed command) to one JSON file. A check that no longer fits the deadline is
recorded as skipped, never silently dropped. It has not run on a GPU yet (none was lent to the sessions
that wrote it); its planning and reporting are tested on the CPU (tests/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from semdraw.quiet import quiet_libraries

log = logging.getLogger("semdraw.gpu_check")

DEADLINE_S = 450


@dataclass(frozen=True)
class Environment:
    """What the machine offers (probed once; tests pass their own)."""

    cuda: bool
    device_name: str = ""
    ort_cuda: bool = False
    tensorrt: bool = False
    versions: dict[str, str] = field(default_factory=dict)  # torch, CUDA, driver, GPU, onnxruntime, ...

    @staticmethod
    def probe() -> Environment:
        import torch

        cuda = torch.cuda.is_available()
        try:
            import onnxruntime

            ort_cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        except ImportError:
            ort_cuda = False
        from semdraw import backends

        return Environment(cuda, torch.cuda.get_device_name() if cuda else "", ort_cuda,
                           backends.tensorrt_available(), versions())  # fmt: skip


def versions() -> dict[str, str]:
    """The versions a figure depends on; "absent" for what is not installed."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import torch

    found = {"python": platform.python_version(), "torch": torch.__version__, "cuda": str(torch.version.cuda)}
    if torch.cuda.is_available():
        found["gpu"] = torch.cuda.get_device_name()
        try:  # the driver is not in torch's API: nvidia-smi reports it
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)  # fmt: skip
            found["driver"] = smi.stdout.strip().splitlines()[0] if smi.returncode == 0 and smi.stdout.strip() else "unknown"
        except (OSError, subprocess.TimeoutExpired):
            found["driver"] = "unknown (no nvidia-smi)"
    for name in ("diffusers", "transformers", "onnxruntime", "onnxruntime-gpu", "tensorrt", "triton"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "absent"
    return found


WHEELS_DIR = Path(".gpu-wheels")  # ignored by git; `run` carries it to the GPU machine
# What the GPU machine lacks of semdraw's pure-Python requirements (it has torch, transformers, peft, onnx,
# onnxruntime, safetensors, numpy and pillow, and no network): the versions installed here.
WHEELS = ("diffusers",)


def prepare_argv(dest: Path, python: str = sys.executable) -> list[str]:
    """``pip download`` of the wheels in :data:`WHEELS`, at the versions installed here, without their
    dependencies (an argument list: no shell)."""
    from importlib.metadata import version

    pins = [f"{name}=={version(name)}" for name in WHEELS]
    return [python, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", str(dest), *pins]


@dataclass(frozen=True)
class Check:
    name: str
    argv: tuple[str, ...]
    timeout_s: int
    bench_json: str | None = None  # the JSON file a bench check writes
    needs: str | None = None  # why it cannot run here (then it is reported as skipped)
    builds: str | None = None  # the engine set a build check writes
    uses: str | None = None  # the engine set a bench check reads


@dataclass
class Result:
    name: str
    status: str  # "ok" | "failed (rc N)" | "timed out" | "skipped: ..."
    seconds: float = 0.0
    fps: list[float] = field(default_factory=list)  # one per stream run in its bench JSON
    bench: dict[str, Any] | None = None
    output_tail: str = ""


MISSION = ("--model", "sd15-random", "--height", "512", "--width", "512", "--brushes", "3", "--steps", "4")


def plan(env: Environment, work: Path, python: str = sys.executable, deadline_s: int = DEADLINE_S) -> list[Check]:
    """The checks, in order, for this machine: the mission configuration first (SD1.5-sized random weights,
    512², 3 brushes, 4 steps on torch CUDA fp16: eager, then with CUDA graphs), then toy, the GPU-marked
    tests, SDXL- and SD3-sized random at their native sizes, then onnxruntime's CUDA provider and TensorRT
    where importable. Their time limits add up to at most :data:`DEADLINE_S` (tested), so the whole check
    fits one 8-minute call; an engine build comes before the benches that read its set."""

    def tool(module: str, *args: str) -> tuple[str, ...]:
        return (python, "-m", module, *args)

    def bench(name: str, *args: str, timeout: int, needs: str | None = None, uses: str | None = None) -> Check:
        out = str(work / f"{name}.json")
        engines = ("--engines", str(work / uses)) if uses else ()
        argv = tool("semdraw.tools.bench", "stream", *engines, *args, "--json", out)
        return Check(name, argv, timeout, out, needs, uses=uses)

    def build(name: str, *args: str, timeout: int, needs: str | None) -> Check:
        argv = tool("semdraw.build_engines.cli", *args, "--out", str(work / name))
        return Check(name, argv, timeout, None, needs, builds=name)

    no_cuda = None if env.cuda else "no CUDA device (torch.cuda.is_available() is False)"
    no_ort = no_cuda or (None if env.ort_cuda else "onnxruntime has no CUDAExecutionProvider (pip install onnxruntime-gpu)")
    no_trt = no_cuda or (None if env.tensorrt else "TensorRT is not importable (pip install 'semdraw[tensorrt]')")
    mission = (*MISSION, "--frames", "5", "--warmup", "2", "--device", "cuda")
    native = ("--frames", "3", "--warmup", "1", "--no-baseline", "--device", "cuda")
    checks = [
        bench("mission-sd15-512-torch-fp16", *mission, "--baseline-frames", "2", timeout=100, needs=no_cuda),
        bench("mission-sd15-512-torch-fp16-graph", *mission, "--cuda-graph", "--no-baseline", timeout=60,
              needs=no_cuda),
        bench("mission-sd15-512-torch-compile", *mission, "--compile", "--no-baseline", "--no-idle", timeout=95,
              needs=no_cuda),  # its warm-up is the compile (Triton kernels for the UNet and the decoder)
        bench("toy-torch-fp16", "--model", "toy", "--device", "cuda", "--frames", "30", timeout=30, needs=no_cuda),
        bench("toy-torch-fp16-graph", "--model", "toy", "--device", "cuda", "--frames", "30", "--cuda-graph",
              "--no-baseline", timeout=25, needs=no_cuda),
        Check("gpu-marked tests", (python, "-m", "pytest", "-q", "-m", "gpu", "tests"), 45, None, no_cuda),
        bench("sdxl-random-1024-torch-fp16", "--model", "sdxl-random", "--height", "1024", "--width", "1024", *native,
              timeout=45, needs=no_cuda),
        bench("sd3-random-1024-torch-fp16", "--model", "sd3-random", "--height", "1024", "--width", "1024", *native,
              timeout=45, needs=no_cuda),
        build("toy-onnx", "--model", "toy", "--layers", "3", "--backend", "onnx", timeout=25, needs=no_ort),
        bench("toy-onnxruntime-cuda", "--backend", "onnxruntime", "--device", "cuda", "--frames", "30",
              "--no-baseline", timeout=20, needs=no_ort, uses="toy-onnx"),
        build("toy-trt", "--model", "toy", "--layers", "3", "--backend", "all", timeout=40, needs=no_trt),
        bench("toy-tensorrt", "--backend", "tensorrt", "--frames", "30", "--no-baseline", timeout=15, needs=no_trt,
              uses="toy-trt"),
    ]  # fmt: skip
    return fitted(checks, deadline_s)


def fitted(checks: list[Check], deadline_s: int = DEADLINE_S) -> list[Check]:
    """The checks in order, those whose limit no longer fits the deadline after the ones before them
    marked skipped (so are the benches of a set that is not built): the later checks run as time allows."""
    used, skipped, out = 0, set(), []
    for c in checks:
        if not c.needs and c.uses in skipped:
            c = replace(c, needs=f"its engine set ({c.uses}) is not built in this call")
        elif not c.needs and used + c.timeout_s > deadline_s:
            c = replace(c, needs=f"no time left: the checks before it take {used} s of the {deadline_s} s")
        if c.needs and c.builds:
            skipped.add(c.builds)
        used += 0 if c.needs else c.timeout_s
        out.append(c)
    return out


def time_limits(checks: list[Check]) -> int:
    """The time limits of the checks that would run, added up (the plan keeps this within the deadline)."""
    return sum(c.timeout_s for c in checks if not c.needs)


Runner = Callable[[Check, float], tuple[int, str]]  # (check, seconds allowed) -> (return code, output)
MIN_SLOT_S = 15  # a check starts only with at least this much of the deadline left


def run_process(check: Check, timeout: float) -> tuple[int, str]:
    """The check's command as a process (an argument list, no shell); raises TimeoutExpired."""
    done = subprocess.run(list(check.argv), capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stdout + done.stderr


def run(checks: list[Check], *, deadline_s: float = DEADLINE_S, runner: Runner = run_process,
        clock: Callable[[], float] = time.monotonic) -> list[Result]:  # fmt: skip
    """Run the checks in order, each within its own limit and what is left of the deadline; one that cannot
    run here, or that finds the deadline spent, is recorded as skipped with the reason; a build that failed
    or did not run skips the benches of its set."""
    started = clock()
    failed_sets: set[str] = set()
    results = []
    for check in checks:
        if check.needs:
            results.append(Result(check.name, f"skipped: {check.needs}"))
            continue
        if check.uses in failed_sets:
            results.append(Result(check.name, f"skipped: its engine set {check.uses} was not built"))
            continue
        left = deadline_s - (clock() - started)
        if left < MIN_SLOT_S:
            results.append(Result(check.name, f"skipped: the {deadline_s:.0f} s deadline is spent"))
            if check.builds:
                failed_sets.add(check.builds)
            continue
        t0 = clock()
        try:
            rc, output = runner(check, min(check.timeout_s, left))
            status = "ok" if rc == 0 else f"failed (rc {rc})"
        except subprocess.TimeoutExpired as err:  # what it printed so far: stdout and stderr, decoded
            rc, status = -1, "timed out"
            output = _text(err.stdout if err.stdout is not None else err.output) + _text(err.stderr)
        result = Result(check.name, status, clock() - t0, output_tail="" if rc == 0 else output[-2000:])
        if check.bench_json and rc == 0 and Path(check.bench_json).exists():
            result.bench = json.loads(Path(check.bench_json).read_text())
            result.fps = [float(r["fps"]) for r in result.bench.get("runs", [])]
        if check.builds and rc != 0:
            failed_sets.add(check.builds)
        results.append(result)
    return results


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data


def table(results: list[Result], env: Environment) -> str:
    lines = [f"GPU check on {env.device_name or 'a machine without CUDA'}", "",
             "| check | status | seconds | fps (each stream run) |", "|---|---|---|---|"]  # fmt: skip
    for r in results:
        fps = ", ".join(f"{v:.3g}" for v in r.fps) or "—"
        lines.append(f"| {r.name} | {r.status} | {r.seconds:.1f} | {fps} |")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m semdraw.tools.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="the JSON file of all figures")
    p.add_argument("--work", type=Path, default=Path("engines/gpu-check"), help="where engine sets are built")
    p.add_argument("--deadline", type=float, default=DEADLINE_S, help=f"overall seconds (default {DEADLINE_S})")
    p.add_argument("--dry-run", action="store_true", help="print the plan for this machine and exit")
    p.add_argument("--assume-gpu", action="store_true",
                   help="with --dry-run: plan as on a machine with CUDA, onnxruntime-gpu and TensorRT")
    p.add_argument("--prepare", type=Path, nargs="?", const=WHEELS_DIR, default=None, metavar="DIR",
                   help=f"on a machine with network access: download the wheels the GPU machine lacks into DIR "
                        f"(default {WHEELS_DIR}) and exit; scripts/gpu_check.sh installs them there with no network")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    quiet_libraries()  # SEMDRAW_VERBOSE=1 shows the libraries' notices and load bars
    args = _parser().parse_args(argv)
    if args.deadline <= 0:
        log.error("gpu_check: --deadline must be > 0")
        return 2
    if args.prepare is not None:
        argv = prepare_argv(args.prepare)
        log.info("downloading %s into %s", ", ".join(argv[8:]), args.prepare)
        return subprocess.run(argv).returncode
    env = Environment(True, "(assumed)", True, True) if args.assume_gpu else Environment.probe()
    checks = plan(env, args.work)
    if args.dry_run:
        for c in checks:
            print(f"{c.name} ({c.timeout_s} s): {'skipped: ' + c.needs if c.needs else ' '.join(c.argv)}")
        print(f"time limits of the checks that run: {time_limits(checks)} s (deadline {args.deadline:.0f} s)")
        return 0
    if not env.cuda:
        log.warning("gpu_check: no CUDA device here; every check will be reported as skipped")
    args.work.mkdir(parents=True, exist_ok=True)
    results = run(checks, deadline_s=args.deadline)
    report = table(results, env)
    print(report)
    payload = {"environment": asdict(env), "deadline_s": args.deadline, "results": [asdict(r) for r in results]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    log.info("figures written to %s", args.out)
    ran = [r for r in results if not r.status.startswith("skipped")]
    return 0 if ran and all(r.status == "ok" for r in ran) else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
