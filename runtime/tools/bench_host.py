"""``semdraw-bench host``: N painters on one StreamHost (one denoiser call per tick) against the same N
painters as separate streams called in turn, measured in one run on the same machine."""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

from semdraw.tools import frames_arg, machine_line, torch_threads

log = logging.getLogger(__name__)


def _painter_setups(n: int, brushes: int, height: int, width: int) -> list[dict[str, Any]]:
    """Painter i: ``brushes`` bands (rotated prompts), its own seed."""
    from .bench import BENCH_PROMPTS, bench_brushes

    setups = []
    for i in range(n):
        bands = bench_brushes(brushes, height, width)
        for j, b in enumerate(bands):
            bands[j] = type(b)(BENCH_PROMPTS[(i + j) % len(BENCH_PROMPTS)], b.mask, mask_std=b.mask_std)
        setups.append({"seed": 100 + i, "brushes": bands})
    return setups


def _strokes(setups: list[dict[str, Any]], frames: int) -> list[list[Any]]:
    from .bench import painted_masks

    return [painted_masks(s["brushes"][0].mask, frames) for s in setups]


def _paint(stream: Any, setup: dict[str, Any]) -> None:
    for i, b in enumerate(setup["brushes"]):
        stream.set_brush(i, b)


def _time_host(source: Any, model: Any, setups: list[dict[str, Any]], ticks: int, warmup: int, layers: int,
               painting: bool) -> dict[str, float]:  # fmt: skip
    import semdraw

    host = semdraw.StreamHost(source, model=model, layers=layers)
    painters = [host.join(seed=s["seed"]) for s in setups]
    for p, s in zip(painters, setups, strict=True):
        _paint(p.stream, s)
    for _ in range(warmup + painters[0].stream.steps):  # fill every pipeline, then warm up
        host.tick()
    strokes = _strokes(setups, ticks) if painting else None
    rows0 = sum(p.counters.rows for p in painters)
    started = time.perf_counter()
    for t in range(ticks):
        if strokes:
            for p, stroke in zip(painters, strokes, strict=True):
                p.stream.set_mask(0, stroke[t])
        host.tick()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "frames": ticks * len(painters), "rows": sum(p.counters.rows for p in painters) - rows0}


def _time_streams(source: Any, model: Any, setups: list[dict[str, Any]], ticks: int, warmup: int, layers: int,
                  painting: bool) -> dict[str, float]:  # fmt: skip
    import semdraw

    streams = [semdraw.Stream(source, model=model, layers=layers, seed=s["seed"]) for s in setups]
    for st, s in zip(streams, setups, strict=True):
        _paint(st, s)
        for _ in range(warmup + 1):
            st()
    strokes = _strokes(setups, ticks) if painting else None
    rows0 = sum(st.rows_computed for st in streams)
    started = time.perf_counter()
    for t in range(ticks):
        for i, st in enumerate(streams):
            if strokes:
                st.set_mask(0, strokes[i][t])
            st()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "frames": ticks * len(streams), "rows": sum(st.rows_computed for st in streams) - rows0}


def host(args: argparse.Namespace) -> int:
    import torch

    import semdraw

    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    model = semdraw.load_model(args.model)
    # (name, source, torch's threads while it runs): beside an engine set's own threads torch keeps what
    # torch_threads_beside says, as semdraw-live and semdraw-serve do
    sources: list[tuple[str, Any, int]] = [("torch", model, threads)]
    if args.engines is not None:
        engines = semdraw.load_engines(args.engines, "onnxruntime", text=False, threads=threads)
        beside = semdraw.torch_threads_beside(semdraw.Networks.from_engines(engines), threads)
        sources.append(("onnxruntime", engines, beside))
        if args.one_call:  # the arrangement before lanes: one call on all threads, torch on all of them too
            whole = semdraw.load_engines(args.engines, "onnxruntime", text=False, threads=threads, lanes=1)
            sources.append(("onnxruntime, one call", whole, threads))
        if args.fp32_files:  # a set with int8 networks (build-engines --int8-*), on its fp32 files instead
            fp32 = semdraw.load_engines(args.engines, "onnxruntime", text=False, threads=threads, int8=False)
            sources.append(("onnxruntime, fp32 files", fp32, beside))
    height = width = model.native_size
    results = []
    for n in args.painters:
        setups = _painter_setups(n, args.brushes, height, width)
        for backend, source, source_threads in sources:
            runs: dict[str, list[dict[str, float]]] = {"host": [], "separate": []}
            with torch_threads(source_threads):
                for _ in range(args.repeats):  # alternated, so a drift of the machine's speed hits both alike
                    runs["host"].append(_time_host(source, model, setups, args.ticks, args.warmup, args.brushes,
                                                   args.painting))  # fmt: skip
                    runs["separate"].append(_time_streams(source, model, setups, args.ticks, args.warmup,
                                                          args.brushes, args.painting))  # fmt: skip
            row: dict[str, Any] = {"painters": n, "backend": backend}
            for name, rs in runs.items():
                fps = statistics.median(r["frames"] / r["seconds"] for r in rs)
                rps = statistics.median(r["rows"] / r["seconds"] for r in rs)
                row.update({f"{name}_fps": fps, f"{name}_rows_per_s": rps,
                            f"{name}_rows_per_frame": rs[0]["rows"] / rs[0]["frames"]})  # fmt: skip
            row["ratio"] = row["host_fps"] / row["separate_fps"]
            results.append(row)
            log.info("%d painters (%s): host %.1f frames/s, separate streams %.1f frames/s: %.2fx", n, backend,
                     row["host_fps"], row["separate_fps"], row["ratio"])  # fmt: skip
    machine = machine_line()
    print(f"\nHost: {args.model}, {args.brushes} brushes per painter{', painting' if args.painting else ''}, "
          f"{args.ticks} ticks x {args.repeats} repeats (median); {machine}\n")  # fmt: skip
    print("| painters | backend | host frames/s | host rows/s | separate frames/s | separate rows/s | host / separate |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['painters']} | {r['backend']} | {r['host_fps']:.1f} | {r['host_rows_per_s']:.0f} | "
              f"{r['separate_fps']:.1f} | {r['separate_rows_per_s']:.0f} | {r['ratio']:.2f}x |")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "machine": machine, "runs": results}, indent=2) + "\n")
    return 0


def add_parser(sub: Any, model_help: str) -> None:
    h = sub.add_parser("host", help="N painters on one StreamHost vs the same N painters as separate streams",
                       description="Times N painters (3 brushes each by default, their own seeds and prompts) on one "
                                   "StreamHost, where one denoiser call per tick runs every painter's rows, against "
                                   "the same N painters as separate Streams called in turn; alternated repeats in one "
                                   "run, medians reported: aggregate frames/s and denoiser rows/s.")  # fmt: skip
    h.add_argument("--model", default="toy", help=model_help)
    h.add_argument("--engines", type=Path, default=None,
                   help="also run on this onnxruntime engine set (built for --model, with a row axis)")
    h.add_argument("--painters", type=lambda v: [int(x) for x in v.split(",")], default=[1, 3, 8],
                   metavar="N1,N2,..", help="painter counts to time (default 1,3,8)")
    h.add_argument("--brushes", type=int, default=3, help="brushes per painter (default 3)")
    h.add_argument("--ticks", type=frames_arg, default=40, help="timed ticks per repeat (default 40)")
    h.add_argument("--warmup", type=int, default=3, help="untimed ticks first (default 3)")
    h.add_argument("--repeats", type=int, default=3, help="alternated repeats of each run (default 3)")
    h.add_argument("--painting", action="store_true", help="every painter edits a mask before every tick")
    h.add_argument("--threads", type=int, default=None, help="CPU threads of the networks, torch and onnxruntime alike (default: torch's)")
    h.add_argument("--one-call", action="store_true",
                   help="also run --engines with each denoiser call on all threads (no lanes) and torch on all "
                        "threads too, to compare with the default lanes")  # fmt: skip
    h.add_argument("--fp32-files", action="store_true",
                   help="also run --engines (built with --int8-decoder / --int8-denoiser) on its fp32 files, to "
                        "compare with the int8 networks it runs by default")  # fmt: skip
    h.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    h.set_defaults(run=host)
