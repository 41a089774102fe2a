"""Probe: is an int8 denoiser worth building for onnxruntime on this CPU?

Quantizes an engine set's fp32 denoiser with onnxruntime's own tools (static QDQ of every op, static QDQ
of the convolutions only, dynamic int8 weights), calibrated on the model's own denoiser inputs (the
toy's tuning scenes sampled through semdraw.generate), then reports each file's relative output error on
those inputs and its time per call, alternated in one run. semdraw builds no int8 sets: this is the
measurement behind that (docs/benchmarks.md, "Lower precision on the CPU").

    build-engines --model toy --backend onnx --layers 3 --out engines/toy-ort   # once
    python scripts/int8_probe.py engines/toy-ort
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np


def calibration_inputs(model: object, scenes: int) -> list[dict[str, np.ndarray]]:
    import torch

    import semdraw
    from semdraw.networks import Networks
    from semdraw.toy import fidelity as F

    networks = Networks.from_model(model)
    seen: list[dict[str, np.ndarray]] = []

    def capture(x: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        seen.append({"sample": x.numpy().copy(), "timestep": t.to(torch.int64).numpy().copy(),
                     "encoder_hidden_states": cond["encoder_hidden_states"].numpy().copy()})  # fmt: skip
        return networks.denoise(x, t, cond)

    for scene in F.scenes()[:scenes]:
        brushes = [semdraw.Brush(b.prompt, b.mask, mask_std=b.mask_std) for b in scene.brushes]
        semdraw.generate(model, brushes, background=semdraw.Background(prompt=scene.background_prompt), seed=0,
                         networks=replace(networks, denoise=capture), output_type="np", height=F.SIZE,
                         width=scene.width)  # fmt: skip
    return seen


def session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()  # as semdraw's runner makes them (runtime/backends.py)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.enable_cpu_mem_arena = False
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> int:
    import onnxruntime
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    import semdraw
    from semdraw.precision import cpu_name

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("engines", type=Path, help="an onnxruntime engine set of the toy (fp32 denoiser)")
    parser.add_argument("--scenes", type=int, default=12, help="tuning scenes sampled for calibration")
    parser.add_argument("--calls", type=int, default=30, help="timed calls per file and round")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    manifest = json.loads((args.engines / "manifest.json").read_text())
    source = args.engines / manifest["networks"]["denoiser"]["onnx"]
    inputs = calibration_inputs(semdraw.load_model(manifest["request"]["model"]), args.scenes)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(inputs)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        prepared = work_dir / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        files = {"fp32": source, "int8 static, all ops": work_dir / "all.onnx",
                 "int8 static, convolutions": work_dir / "conv.onnx", "int8 dynamic weights": work_dir / "dyn.onnx"}  # fmt: skip
        static = dict(quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                      weight_type=QuantType.QInt8)  # fmt: skip
        with contextlib.chdir(work_dir):  # onnxruntime's quantizer leaves temporary models in the working folder
            quantize_static(str(prepared), str(files["int8 static, all ops"]), Reader(), **static)
            quantize_static(str(prepared), str(files["int8 static, convolutions"]), Reader(),
                            op_types_to_quantize=["Conv"], **static)  # fmt: skip
            quantize_dynamic(str(prepared), str(files["int8 dynamic weights"]), weight_type=QuantType.QInt8)
        sessions = {name: session(path) for name, path in files.items()}
        reference = [sessions["fp32"].run(None, x)[0] for x in inputs]
        rows = {name: {"relative_error": float(np.mean([np.abs(s.run(None, x)[0] - r).mean() / np.abs(r).mean()
                                                        for x, r in zip(inputs, reference, strict=True)])),
                       "ms": []} for name, s in sessions.items()}  # fmt: skip
        batch = {k: np.concatenate([x[k] for x in inputs])[:6] for k in inputs[0]}  # 6 rows: 3 layers x 2 steps
        for _ in range(3):  # rounds alternate the files, so a drift of the machine's speed hits all alike
            for name, s in sessions.items():
                started = time.perf_counter()
                for _ in range(args.calls):
                    s.run(None, batch)
                rows[name]["ms"].append(1000 * (time.perf_counter() - started) / args.calls)
    fp32_ms = float(np.median(rows["fp32"]["ms"]))
    print(f"\nint8 probe: {source}, onnxruntime {onnxruntime.__version__}, {cpu_name()}; calibrated on "
          f"{len(inputs)} denoiser calls; 6 rows per timed call, median of 3 rounds\n")
    print("| denoiser | ms per call | speed vs fp32 | mean relative output error |")
    print("|---|---|---|---|")
    for name, r in rows.items():
        ms = float(np.median(r["ms"]))
        print(f"| {name} | {ms:.1f} | {fp32_ms / ms:.2f}x | {r['relative_error']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps({"onnxruntime": onnxruntime.__version__, "cpu": cpu_name(), "rows": rows},
                                        indent=2) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
