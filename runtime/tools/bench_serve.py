"""``semdraw-bench serve``: N painters over real WebSockets on a local Ray Serve instance, each painting
strokes, against the same N painters on an in-process host, measured in one run on the same machine:
frames per second per painter, edit-to-frame latency, and the denoiser rows per second of both."""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import secrets
import socket
import statistics
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from semdraw.tools import machine_line, torch_threads

log = logging.getLogger(__name__)


# Local serving processes by the titles Ray gives them, and what each is called in the figures.
ROLES = (("replica", "ray::ServeReplica"), ("proxy", "ray::ProxyActor"), ("store", "ray::SessionStoreActor"))
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class CpuMeter:
    """The CPU cores each serving process of a local instance used over a period (Linux's /proc): the
    replica, Ray's proxy, the session store, this process (the clients) and everything else on the machine.
    Elsewhere than Linux it measures nothing (``result`` stays empty)."""

    def __init__(self) -> None:
        self._start: tuple[float, dict[str, float]] | None = None
        self.result: dict[str, float] = {}

    def start(self) -> None:
        self._start = (time.perf_counter(), self._seconds())

    def stop(self) -> None:
        if self._start is None:
            return
        t0, before = self._start
        after, elapsed = self._seconds(), time.perf_counter() - t0
        if before and after:
            self.result = {k: round((after[k] - before[k]) / elapsed, 2) for k in after}
            self.result["other"] = round(self.result.pop("machine") - sum(self.result.values()), 2)

    @staticmethod
    def _seconds() -> dict[str, float]:
        """CPU seconds so far of each role, this process, and the whole machine (busy, all cores)."""
        proc = Path("/proc")
        if not (proc / "stat").exists():
            return {}
        seconds = {role: 0.0 for role, _ in ROLES}
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                title = (entry / "cmdline").read_bytes().split(b"\0", 1)[0].decode(errors="replace")
                role = next((r for r, prefix in ROLES if title.startswith(prefix)), None)
                if role is not None:
                    seconds[role] += _process_cpu_s(entry)
            except OSError:  # it ended meanwhile
                continue
        seconds["clients"] = _process_cpu_s(proc / "self")
        user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in (proc / "stat").read_text().split()[1:9])
        seconds["machine"] = (user + nice + system + irq + softirq + steal) / _TICK
        return seconds


def _process_cpu_s(entry: Path) -> float:
    """A process's user + system CPU seconds (all its threads), from /proc/PID/stat."""
    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _composition(i: int, side: int) -> Any:
    from semdraw.api import BackgroundSpec, BrushSpec, Composition

    from .bench import BENCH_PROMPTS

    bands = []
    for j in range(3):
        m = np.zeros((side, side), np.uint8)
        m[j * side // 3 : (j + 1) * side // 3] = 255
        bands.append(BrushSpec(str(j), BENCH_PROMPTS[(i + j) % len(BENCH_PROMPTS)], m))
    return Composition(side, side, tuple(bands), BackgroundSpec(), seed=100 + i)


def _stroke(k: int, side: int) -> Any:
    """Edit k of a painter: a wide stroke of the last brush (painted over by none, so never dimmed) across
    the first brush's band, painted on even k and erased on odd k: every edit changes the picture (a stroke
    that changes nothing visible would leave the stream idle and send no frames)."""
    from semdraw.edits import Stroke

    x = float((k // 2 * 5) % side)
    return Stroke("2", ((x, side * 0.05), (x, side * 0.3)), side / 12, erase=bool(k % 2))


async def _painters(url: str, token: str, n: int, side: int, seconds: float,
                    edit_hz: float, base: str, cpu: CpuMeter,
                    frame_format: str = "jpeg") -> tuple[list[dict[str, Any]], dict[str, Any]]:  # fmt: skip
    """N painters that each stroke back and forth across the canvas ``edit_hz`` times a second; with the
    server's /healthz (at ``base``) read as the measured period ends, before they leave, and ``cpu``
    metering the measured period."""
    from semdraw.api import StreamConfig
    from semdraw.serve.client import PainterClient

    clients = [PainterClient(url, token, _composition(i, side), StreamConfig(layers=3, seed_step=0),
                             frame_format=frame_format) for i in range(n)]  # fmt: skip
    tasks = [asyncio.create_task(c.run()) for c in clients]
    for c in clients:
        await c.wait_connected(120)

    async def paint(c: Any, i: int, until: float) -> None:
        k = 0
        while time.perf_counter() < until:
            await c.edit(_stroke(k, side))
            k += 1
            await asyncio.sleep(1 / edit_hz)

    warm = time.perf_counter() + 3
    await asyncio.gather(*(paint(c, i, warm) for i, c in enumerate(clients)))  # fill pipelines, warm up
    counts = [c.frames for c in clients]
    for c in clients:
        c.latencies.clear()
    before = await asyncio.to_thread(_health, base)
    cpu.start()
    started = time.perf_counter()
    await asyncio.gather(*(paint(c, i, started + seconds) for i, c in enumerate(clients)))
    elapsed = time.perf_counter() - started
    cpu.stop()
    health = await asyncio.to_thread(_health, base)
    health["measured_rows_per_s"] = _rows_between(before, health, elapsed)
    out = [{"fps": (c.frames - f0) / elapsed, "latencies": list(c.latencies), "edits_refused": c.edits_refused,
            "attempts_refused": c.attempts_refused, "reconnects": max(0, c.connections - 1)}
           for c, f0 in zip(clients, counts, strict=True)]  # fmt: skip
    for c in clients:
        await c.close()
    await asyncio.gather(*tasks)
    return out, health


@dataclass(frozen=True)
class InProcessRows:
    """Denoiser rows per second of the same N painters on an in-process host of the served networks:
    ``same_strokes`` with the served painters' strokes at their moments (``edit_hz`` a second each, in real
    time), the host ticking as a replica's tick loop does (flat out while a row is live, a short sleep after
    a tick with none): what serving them costs is the gap to the served rows; ``flat_out`` with a stroke
    per painter every tick: the host's capacity, what painters stroking faster could get at most."""

    same_strokes: float
    flat_out: float


def _in_process_rows(n: int, side: int, args: argparse.Namespace, threads: int) -> InProcessRows:
    """:class:`InProcessRows` using ``threads`` CPU threads (the replica's: the same compute)."""
    with torch_threads(threads):
        host, syncs = _open_host(n, side, args.engines, args.backend)
        flat_out = _flat_out_rows(host, syncs, side, args.ticks)
        return InProcessRows(_same_strokes_rows(host, syncs, side, args.seconds, args.edit_hz), flat_out)


def _open_host(n: int, side: int, engines: str | None, backend: str) -> tuple[Any, list[Any]]:
    """The host and its N painters (the served painters' compositions and seeds), warmed up."""
    import torch

    import semdraw

    source = engines if engines else semdraw.load_model("toy")
    host = semdraw.StreamHost(source, layers=3, seed_step=0, backend=backend)
    torch.set_num_threads(semdraw.torch_threads_beside(host.networks, torch.get_num_threads()))  # as a replica
    syncs = []
    for i in range(n):
        p = host.join(seed=100 + i)
        sync = semdraw.StreamSync(p.stream)
        sync.apply(_composition(i, side))
        syncs.append(sync)
    for _ in range(5):
        host.tick()
    return host, syncs


def _flat_out_rows(host: Any, syncs: list[Any], side: int, ticks: int) -> float:
    rows, started = 0, time.perf_counter()
    for k in range(ticks):
        for sync in syncs:
            sync.edit(_stroke(k, side))
        host.tick()
        rows += host.rows_last_tick
    return rows / (time.perf_counter() - started)


def _same_strokes_rows(host: Any, syncs: list[Any], side: int, seconds: float, edit_hz: float) -> float:
    """The served painters' run in process: 3 s of strokes to fill the pipelines, then ``seconds`` measured,
    stroke k of every painter due at k / ``edit_hz`` (the painters' clients stroke together, as here). The
    strokes due by a tick are folded into each painter's composition and the stream takes the newest one,
    as a replica's tick loop takes its sessions' newest."""
    from semdraw.edits import apply
    from semdraw.serve.ticks import IDLE_SLEEP_S

    warm, k0 = 3.0, 1_000  # strokes go on from where the flat-out run left them (each one changes the picture)
    compositions = [sync.applied for sync in syncs]
    rows, k, start = 0, 0, time.perf_counter()
    measured_from = start + warm
    while (now := time.perf_counter()) < measured_from + seconds:
        if start + k / edit_hz <= now:
            while start + k / edit_hz <= now:
                compositions = [apply(c, _stroke(k0 + k, side)) for c in compositions]
                k += 1
            for sync, composition in zip(syncs, compositions, strict=True):
                sync.apply(composition)
        began = time.perf_counter()
        host.tick()
        if began >= measured_from:
            rows += host.rows_last_tick
        if host.rows_last_tick == 0:
            time.sleep(max(0.0, IDLE_SLEEP_S - (time.perf_counter() - began)))
    return rows / (time.perf_counter() - measured_from)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a local server to bind)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _local_server(painters: int, threads: int, engines: str | None, backend: str,
                  ingress: str = "proxy") -> Iterator[tuple[str, str]]:  # fmt: skip
    """A local Ray Serve instance with one replica of the toy (or of the engine set ``engines``) using
    ``threads`` CPU threads, reached through ``ingress``, Ray's token under a temporary HOME; yields (http
    base URL, server token)."""
    import ray
    from ray import serve

    from semdraw.serve.app import APP_NAME, ServeOptions, build_app, ingress_environment

    token, port = secrets.token_urlsafe(18), free_port()
    home = tempfile.mkdtemp(prefix="semdraw-bench-ray-")  # Ray's token file goes here, not in ~/.ray
    saved_home, os.environ["HOME"] = os.environ.get("HOME", home), home
    try:
        with ingress_environment(ingress):
            try:
                ray.init(namespace="semdraw", include_dashboard=False, logging_level="ERROR", log_to_driver=False)
                serve.start(http_options={"host": "127.0.0.1", "port": port})
                options = ServeOptions(token=token, replicas=1, painters_per_replica=painters + 1, num_cpus=0,
                                       threads=threads, painters_per_address=painters + 1, engines=engines,
                                       backend=backend)  # fmt: skip
                serve.run(build_app(options), name=APP_NAME, route_prefix="/")
                yield f"http://127.0.0.1:{port}", token
            finally:
                serve.shutdown()
                ray.shutdown()
    finally:
        os.environ["HOME"] = saved_home


def _health(base: str) -> dict[str, Any]:
    return json.loads(urllib.request.urlopen(f"{base}/healthz", timeout=30).read())


def _rows_between(before: dict[str, Any], after: dict[str, Any], elapsed: float) -> float:
    """The served rows per second over the measured period: each replica's row count at its end less that
    at its start (other replicas' counts are their last heartbeat, up to a second old); the replicas' own
    recent rate (their last 50 ticks) where a replica is new or restarted meanwhile."""
    rows = 0.0
    for name, now in after["by_replica"].items():
        then = before["by_replica"].get(name, {})
        if "rows_total" in now and now["rows_total"] >= then.get("rows_total", float("inf")):
            rows += (now["rows_total"] - then["rows_total"]) / elapsed
        else:
            rows += now["rows_per_second"]
    return rows


def _in_low_priority_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a thread of its own at the lowest CPU priority (Linux: niceness is per thread): the
    painters' clients, run here beside the server, take only the CPU it leaves (Ray's workers run at
    nice 15), as if they were on other machines; the in-process host runs afterwards at normal priority."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(_lowered, fn, *args).result()


def _lowered(fn: Callable[..., Any], *args: Any) -> Any:
    with contextlib.suppress(OSError, AttributeError):  # not Linux, or not permitted: normal priority
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    return fn(*args)


def _measure(args: argparse.Namespace, base: str, token: str, local: bool) -> list[dict[str, Any]]:
    """Each painter count against the server at ``base``, then on an in-process host here; ``local``: the
    server's processes run on this machine (their CPU is metered)."""
    ws = base.replace("http://", "ws://", 1).replace("https://", "wss://", 1).rstrip("/") + "/ws"
    side = _health(base)["canvas"][0]
    results = []
    for n in args.painters:
        cpu = CpuMeter()
        painters, health = _in_low_priority_thread(asyncio.run, _painters(ws, token, n, side, args.seconds,
                                                                          args.edit_hz, base, cpu, args.frame_format))  # fmt: skip
        latencies = sorted(x for p in painters for x in p["latencies"])
        p95 = latencies[int(0.95 * (len(latencies) - 1))] * 1000 if latencies else float("nan")
        threads = [r.get("threads") for r in health["by_replica"].values()]
        in_process = _in_process_rows(n, side, args, min(t for t in threads if t) if any(threads) else 1)
        row = {"painters": n, "fps_median": statistics.median(p["fps"] for p in painters),
               "fps_min": min(p["fps"] for p in painters),
               "latency_p50_ms": latencies[len(latencies) // 2] * 1000 if latencies else float("nan"),
               "latency_p95_ms": p95, "served_rows_per_s": health["measured_rows_per_s"],
               "in_process_same_strokes_rows_per_s": in_process.same_strokes,
               "in_process_flat_out_rows_per_s": in_process.flat_out,
               "edits_refused": sum(p["edits_refused"] for p in painters),
               "attempts_refused": sum(p["attempts_refused"] for p in painters),
               "reconnects": sum(p["reconnects"] for p in painters),
               "replica_threads": threads, "replica_ticks_per_s": [r.get("ticks_per_second") for r in health["by_replica"].values()],
               "replica_tick_ms": [r.get("tick_ms") for r in health["by_replica"].values()],
               "cpu_cores": cpu.result if local else {}}  # fmt: skip
        row["rows_ratio"] = row["served_rows_per_s"] / in_process.same_strokes  # the goal's ratio
        row["rows_ratio_flat_out"] = row["served_rows_per_s"] / in_process.flat_out
        results.append(row)
        log.info("%d painters: %.1f fps each (min %.1f), edit->frame p95 %.0f ms, rows/s served %.0f vs in-process "
                 "%.0f (same strokes; %.0f flat out); refused %d edits, %d attempts; %d reconnects", n,
                 row["fps_median"], row["fps_min"], p95, row["served_rows_per_s"], in_process.same_strokes,
                 in_process.flat_out, row["edits_refused"], row["attempts_refused"], row["reconnects"])  # fmt: skip
    return results


def serve_bench(args: argparse.Namespace) -> int:
    if args.engines:  # read here too (the in-process host opens it): a wrong folder is one line, before Ray
        from semdraw.engines import read_manifest
        from semdraw.errors import SemdrawError

        try:
            read_manifest(args.engines)
        except SemdrawError as err:
            log.error("semdraw-bench serve: %s", err)
            return 2
    if args.url:
        token = args.token or os.environ.get("SEMDRAW_TOKEN")
        if not token:
            log.error("semdraw-bench serve --url needs the server's token: --token or $SEMDRAW_TOKEN")
            return 2
        where = f"the server at {args.url} (its rows/s from /healthz; the in-process host runs here)"
        try:
            results = _measure(args, args.url, token, local=False)
        except (OSError, TimeoutError) as err:
            log.error("semdraw-bench serve: %s does not answer: %s", args.url, err)
            return 2
    else:
        where = (f"a local Ray Serve instance, 1 replica, {args.replica_threads or os.cpu_count()} CPU threads, "
                 f"{args.ingress} ingress")  # fmt: skip
        with _local_server(max(args.painters), args.replica_threads or os.cpu_count() or 1, args.engines,
                           args.backend, args.ingress) as (base, token):  # fmt: skip
            results = _measure(args, base, token, local=True)
    machine = machine_line(torch_threads=False)  # the replica's threads are in `where`
    served = f"the engine set {args.engines} ({args.backend})" if args.engines else "the toy"
    print(f"\nServed: {served} on {where}; 3 brushes per painter, each painter stroking {args.edit_hz:g} times a "
          f"second, {args.frame_format.upper()} frames, {args.seconds:g} s per count; this machine: {machine}\n")  # fmt: skip
    print("| painters | fps per painter (median / min) | edit→frame p50 / p95 | served rows/s | in-process host rows/s, "
          "same strokes / flat out | served / in-process, same strokes / flat out | CPU cores: replica / proxy / "
          "store / clients / other | refused edits / attempts | reconnects |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        cores = r["cpu_cores"]
        split = " / ".join(f"{cores[k]:.2f}" for k in ("replica", "proxy", "store", "clients", "other")) if cores else "-"
        print(f"| {r['painters']} | {r['fps_median']:.1f} / {r['fps_min']:.1f} | {r['latency_p50_ms']:.0f} / "
              f"{r['latency_p95_ms']:.0f} ms | {r['served_rows_per_s']:.0f} | "
              f"{r['in_process_same_strokes_rows_per_s']:.0f} / {r['in_process_flat_out_rows_per_s']:.0f} | "
              f"{r['rows_ratio']:.2f} / {r['rows_ratio_flat_out']:.2f} | {split} | {r['edits_refused']} / {r['attempts_refused']} | {r['reconnects']} |")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "server": where, "frame_format": args.frame_format, "ingress": args.ingress,
                                             "runs": results}, indent=2) + "\n")
    return 0


def add_parser(sub: Any) -> None:
    from semdraw.serve.app import INGRESSES

    s = sub.add_parser("serve", help="N painters over WebSockets on a local semdraw-serve vs an in-process host",
                       description="Starts a local Ray Serve instance with one replica of the toy (or measures --url), connects N "
                                   "painters over real WebSockets, each stroking a mask several times a second, and "
                                   "measures frames per second per painter, edit-to-frame latency (send to the first "
                                   "frame that reflects the edit) and the replica's denoiser rows per second; then "
                                   "times the same N painters on an in-process host in the same run: with the same "
                                   "strokes at their moments (what serving costs) and flat out (its capacity).")  # fmt: skip
    s.add_argument("--painters", type=lambda v: [int(x) for x in v.split(",")], default=[1, 2, 4, 8],
                   metavar="N1,N2,..", help="painter counts (default 1,2,4,8)")
    s.add_argument("--seconds", type=float, default=10.0, help="measured seconds per count (default 10)")
    s.add_argument("--edit-hz", type=float, default=10.0, help="strokes per second per painter (default 10)")
    s.add_argument("--ticks", type=int, default=40, help="in-process host ticks per count flat out (default 40)")
    s.add_argument("--url", default=None, help="measure the semdraw-serve at this address (http://host:port) instead "
                   "of starting one; its token from --token or $SEMDRAW_TOKEN")  # fmt: skip
    s.add_argument("--token", default=None, help="the server token for --url")
    s.add_argument("--replica-threads", type=int, default=None,
                   help="CPU threads of the local server's replica's networks (default: this machine's cores; the "
                   "in-process host uses the same)")  # fmt: skip
    s.add_argument("--engines", default=None, metavar="DIR",
                   help="serve this engine set of the toy (build-engines --model toy) instead of the toy's torch "
                   "modules; the in-process host opens it too. With --url: the set the server serves")  # fmt: skip
    s.add_argument("--backend", default="auto", help="the engine set's backend (default auto)")
    s.add_argument("--frame-format", choices=("jpeg", "png"), default="jpeg",
                   help="the frames the painters ask for (default jpeg, as the browser page does; png: lossless, "
                        "as the window and the tests ask)")  # fmt: skip
    s.add_argument("--ingress", choices=tuple(INGRESSES), default="proxy",
                   help="how the local server's painters reach its replica (semdraw-serve --ingress; default proxy)")
    s.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    s.set_defaults(run=serve_bench)
