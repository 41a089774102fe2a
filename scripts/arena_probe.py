"""Probe: onnxruntime's CPU memory arena on or off for an engine set's denoiser (semdraw runs it off).

Each setting runs in its own process (so each peak resident memory is its own): the denoiser is loaded as
semdraw's runner loads it, called on a batch of the set's own shape, and timed; the processes alternate
over rounds, so a drift of the machine's speed hits both alike. Reports ms per call and peak memory.

    python scripts/arena_probe.py engines/toy-ort
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def child(engines: Path, arena: bool, calls: int) -> dict[str, float]:
    import onnxruntime as ort

    manifest = json.loads((engines / "manifest.json").read_text())
    denoiser = manifest["networks"]["denoiser"]
    options = ort.SessionOptions()  # as runtime/backends.py makes them, but for the arena
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.enable_cpu_mem_arena = arena
    session = ort.InferenceSession(str(engines / denoiser["onnx"]), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {}
    for spec in denoiser["inputs"]:
        shape = [6 if isinstance(d, str) else d for d in spec["shape"]]
        feeds[spec["name"]] = (rng.integers(0, 999, shape) if spec["dtype"] == "int64"
                               else rng.standard_normal(shape)).astype(spec["dtype"])  # fmt: skip
    session.run(None, feeds)  # warm-up
    started = time.perf_counter()
    for _ in range(calls):
        session.run(None, feeds)
    return {"ms": 1000 * (time.perf_counter() - started) / calls,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("engines", type=Path)
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", choices=("on", "off"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.engines, args.child == "on", args.calls)))
        return 0
    runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    for _ in range(args.rounds):
        for setting in runs:
            done = subprocess.run([sys.executable, __file__, str(args.engines), "--calls", str(args.calls), "--child",
                                   setting], capture_output=True, text=True, check=True)  # fmt: skip
            runs[setting].append(json.loads(done.stdout.strip().splitlines()[-1]))
    from semdraw.precision import cpu_name

    print(f"\nonnxruntime CPU arena: {args.engines} denoiser, {cpu_name()}, median of {args.rounds} processes each\n")
    print("| arena | ms per call | peak resident MB |")
    print("|---|---|---|")
    for setting, rs in runs.items():
        print(f"| {setting} | {statistics.median(r['ms'] for r in rs):.1f} | "
              f"{statistics.median(r['peak_mb'] for r in rs):.0f} |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_name(), "runs": runs}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
