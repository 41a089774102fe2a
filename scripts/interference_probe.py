"""Probe: how much does other work on the same cores slow a host's ticks, and does its CPU priority matter?

Times a painting 4-painter StreamHost on an onnxruntime engine set (the networks on 2 threads, torch on 1,
as a served replica runs) alone, then beside two busy-wait processes that each take a fraction of a core
in short bursts (as Ray's proxy, store and daemons do beside a replica), at normal priority and at nice
19; alternated rounds, ms per tick. The measurement behind docs/benchmarks.md, "Painters over the
network" (why a replica on two shared cores cannot reach its in-process rows).

    build-engines --model toy --backend onnx --layers 3 --int8-decoder --out engines/toy-int8   # once
    python scripts/interference_probe.py engines/toy-int8
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

BURST_S = (0.010, 0.007)  # the two busy processes' periods (different, so their bursts drift apart)


def busy(duty: float, period_s: float, seconds: float) -> None:
    """Busy-wait ``duty`` of every ``period_s`` for ``seconds``."""
    end = time.time() + seconds
    while time.time() < end:
        started = time.perf_counter()
        while time.perf_counter() - started < duty * period_s:
            pass
        time.sleep(period_s * (1 - duty))


def ms_per_tick(engines: str, ticks: int) -> float:
    import torch

    import semdraw
    from semdraw.tools.bench_serve import _composition, _stroke

    torch.set_num_threads(1)
    host = semdraw.StreamHost(semdraw.load_engines(engines, "onnxruntime", threads=2), layers=3, seed_step=0)
    syncs = []
    for i in range(4):
        sync = semdraw.StreamSync(host.join(seed=100 + i).stream)
        sync.apply(_composition(i, 128))
        syncs.append(sync)
    for _ in range(5):
        host.tick()
    started = time.perf_counter()
    for k in range(ticks):
        for sync in syncs:
            sync.edit(_stroke(k, 128))
        host.tick()
    return 1000 * (time.perf_counter() - started) / ticks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("engines", help="an onnxruntime engine set of the toy")
    parser.add_argument("--duty", type=float, default=0.2, help="each busy process's share of a core (default 0.2)")
    parser.add_argument("--ticks", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--busy", nargs=2, type=float, metavar=("DUTY", "PERIOD_S"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.busy:  # a busy process of a round (this script, run again)
        busy(args.busy[0], args.busy[1], 3600)
        return 0
    results: dict[str, list[float]] = {"alone": [], "beside busy work": [], "beside busy work at nice 19": []}
    for _ in range(args.rounds):
        for name in results:
            nice = ["nice", "-n", "19"] if name.endswith("nice 19") else []
            others = [] if name == "alone" else [
                subprocess.Popen([*nice, sys.executable, __file__, args.engines, "--busy", str(args.duty), str(p)])
                for p in BURST_S]  # fmt: skip
            try:
                results[name].append(ms_per_tick(args.engines, args.ticks))
            finally:
                for p in others:
                    p.kill()
                    p.wait()
    print(f"\n4 painting painters, {args.ticks} ticks a round, {os.cpu_count()} CPUs; busy work: two processes "
          f"at {args.duty:g} of a core each\n")  # fmt: skip
    for name, ms in results.items():
        print(f"{name}: {statistics.median(ms):.1f} ms per tick (rounds: {', '.join(f'{m:.1f}' for m in ms)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
