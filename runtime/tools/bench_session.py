"""``semdraw-bench session FILE``: a recorded painting session (``semdraw-live --record``) replayed against
a stream, beside the same replay on a stream that recomputes everything (every row, every frame: no idle
frames, rows without weight run too), in one run on one machine.

Two clocks:

- **frames** (as fast as possible): frame k stands for time k/fps; the edits made by then are applied
  before it. Both streams make exactly the same frames (compared pixel by pixel), so their denoiser rows
  and process CPU seconds compare like for like.
- **realtime**: the edits come at their recorded moments while the stream runs as the window's frame thread
  does (flat out while busy; an idle frame, made without a network, is followed by a short sleep). Edit→
  visible latency: from an edit's moment to the end of the first computed frame after it was applied
  (*first*: its last denoising step saw the edit) and of the T-th (*settled*: every step of that image
  saw it; T = the stream's steps). Edits that change nothing the stream generates (a stroke over paint
  already there, a prompt on a brush with no paint yet) have nothing to show: counted as *unseen*, not timed.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from semdraw.tools import machine_line, torch_threads

log = logging.getLogger(__name__)
SESSIONS_DIR = Path(__file__).parent / "sessions"
IDLE_SLEEP_S = 0.02  # what the window's frame thread sleeps after an idle frame (viewer/session.py)
STREAMS = {"semdraw": {}, "recompute": {"idle_frames": False, "live_rows_only": False}}


def shipped_sessions() -> list[str]:
    return sorted(p.stem for p in SESSIONS_DIR.glob("*.json"))


def resolve(name: str) -> Path:
    """A recording's path: a file, or the name of a shipped session."""
    path = Path(name)
    if path.is_file():
        return path
    if (SESSIONS_DIR / f"{name}.json").is_file():
        return SESSIONS_DIR / f"{name}.json"
    raise ValueError(f"{name}: no such recording (a file, or a shipped session: {', '.join(shipped_sessions())})")


@dataclass
class Replay:
    """What one stream did over one replay."""

    clock: str
    stream: str
    frames: int = 0
    computed: int = 0  # frames that ran a network (not idle)
    rows: int = 0  # denoiser rows
    unseen: int = 0  # edits that changed nothing the stream generates (a stroke over paint already there, a
    # prompt on a brush with no paint yet): nothing to wait for, so no latency
    cpu_s: float = 0.0  # process CPU seconds (every thread: torch's pool too)
    wall_s: float = 0.0
    first_ms: list[float] = field(default_factory=list)
    settled_ms: list[float] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if not k.endswith("_ms")}
        for name in ("first_ms", "settled_ms"):
            values = getattr(self, name)
            if values:
                out[name.replace("_ms", "_p50_ms")] = statistics.median(values)
                out[name.replace("_ms", "_p95_ms")] = float(np.percentile(values, 95))
        return out


def _stream(source: Any, recording: Any, kind: str, precision: str) -> tuple[Any, Any]:
    import semdraw

    options = recording.stream.stream_options(recording.start)
    stream = semdraw.Stream(source, **options, **STREAMS[kind], precision=precision)
    sync = semdraw.StreamSync(stream)
    sync.apply(recording.start)
    stream()  # the first picture (fills the pipeline): before the clock starts, as the window shows it on opening
    return stream, sync


def _due(recording: Any, index: int, now: float) -> int:
    """The index after the last edit made by ``now``."""
    while index < len(recording.edits) and recording.edits[index].t <= now:
        index += 1
    return index


def replay_frames(source: Any, recording: Any, kind: str, fps: float, until_s: float,
                  keep: list[np.ndarray] | None = None, precision: str = "fp32") -> Replay:  # fmt: skip
    """Frame k at time k/fps; ``keep``: collects every frame (to compare two streams' frames)."""
    from semdraw.edits import apply

    stream, sync = _stream(source, recording, kind, precision)
    out = Replay("frames", kind)
    composition, index = recording.start, 0
    rows0, cpu0, wall0 = stream.rows_computed, time.process_time(), time.perf_counter()
    for k in range(math.ceil(until_s * fps)):
        due = _due(recording, index, k / fps)
        for timed in recording.edits[index:due]:  # coalesced, as the window applies them once per tick
            composition = apply(composition, timed.edit)
        if due > index:
            before = stream.edits
            sync.apply(composition)
            out.unseen += (due - index) * (stream.edits == before)
            index = due
        frame = stream()
        out.frames += 1
        out.computed += not stream.idle
        if keep is not None:
            keep.append(frame)
    out.rows, out.cpu_s = stream.rows_computed - rows0, time.process_time() - cpu0
    out.wall_s = time.perf_counter() - wall0
    return out


def replay_realtime(source: Any, recording: Any, kind: str, until_s: float, precision: str = "fp32") -> Replay:
    """The edits at their recorded moments; the stream runs as the window's frame thread runs it."""
    from semdraw.edits import apply

    stream, sync = _stream(source, recording, kind, precision)
    out = Replay("realtime", kind)
    composition, index = recording.start, 0
    waiting: list[tuple[float, int]] = []  # (edit's moment, computed frames when it was applied)
    rows0, cpu0, wall0 = stream.rows_computed, time.process_time(), time.perf_counter()
    while (now := time.perf_counter() - wall0) < until_s:
        due = _due(recording, index, now)
        for timed in recording.edits[index:due]:
            composition = apply(composition, timed.edit)
        if due > index:
            before = stream.edits
            sync.apply(composition)
            if stream.edits == before:
                out.unseen += due - index
            else:
                waiting += [(timed.t, out.computed) for timed in recording.edits[index:due]]
            index = due
        stream()
        out.frames += 1
        if stream.idle:
            time.sleep(IDLE_SLEEP_S)
            continue
        out.computed += 1
        ended_ms = 1000 * (time.perf_counter() - wall0)
        still = []
        for moment, at in waiting:
            if out.computed - at == 1:
                out.first_ms.append(ended_ms - 1000 * moment)
            if out.computed - at >= stream.steps:
                out.settled_ms.append(ended_ms - 1000 * moment)
            else:
                still.append((moment, at))
        waiting = still
    out.rows, out.cpu_s = stream.rows_computed - rows0, time.process_time() - cpu0
    out.wall_s = time.perf_counter() - wall0
    return out


def _replay_all(recordings: dict[str, Any], source: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every recording replayed on every clock and stream kind asked."""
    results: list[dict[str, Any]] = []
    for name, recording in recordings.items():
        if (recording.start.height, recording.start.width) != (source_canvas := _canvas(source)):
            raise ValueError(f"{name} was painted on {recording.start.height}x{recording.start.width}, "
                             f"the source makes {source_canvas[0]}x{source_canvas[1]}")  # fmt: skip
        until = min(recording.duration_s, args.limit_s or recording.duration_s)
        log.info("%s: %d edits over %.0f s (%s)", name, len(recording.edits), until, recording.note or "no note")
        if "frames" in args.clocks:
            kept: dict[str, list[np.ndarray]] = {}
            for kind in STREAMS:
                kept[kind] = []
                r = replay_frames(source, recording, kind, args.fps, until, kept[kind], args.precision)
                results.append({"session": name, **r.row()})
                log.info("  frames   %-9s %5d frames (%d computed), %6d rows, %6.1f CPU s", kind, r.frames,
                         r.computed, r.rows, r.cpu_s)  # fmt: skip
            diff = max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(*kept.values(), strict=True))
            results[-1]["max_diff_vs_semdraw"] = diff
            del kept
        if "realtime" in args.clocks:
            for kind in STREAMS:
                r = replay_realtime(source, recording, kind, until, args.precision)
                results.append({"session": name, **r.row()})
                log.info("  realtime %-9s %5d frames (%d computed), %6d rows, %6.1f CPU s", kind, r.frames,
                         r.computed, r.rows, r.cpu_s)  # fmt: skip
    return results


def session(args: argparse.Namespace) -> int:
    import torch

    import semdraw
    from semdraw.recording import Recording

    if args.threads:
        torch.set_num_threads(args.threads)
    paths = [resolve(n) for n in (args.recordings or shipped_sessions())]
    recordings = {p.stem: Recording.load(p) for p in paths}  # every file checked before any model loads
    source = semdraw.load_engines(args.engines, "onnxruntime") if args.engines else semdraw.load_model(args.model)
    threads = torch.get_num_threads()
    if args.engines:  # as the window runs a set: torch keeps what the set's own threads leave it
        threads = semdraw.torch_threads_beside(semdraw.Networks.from_engines(source), threads)
    with torch_threads(threads):
        results = _replay_all(recordings, source, args)
    from semdraw.networks import Networks
    from semdraw.precision import resolve_precision

    weights = Networks.from_model(source).parameters if isinstance(source, semdraw.Model) else 0
    machine = (f"{machine_line()}, precision {args.precision} = "
               f"{resolve_precision(args.precision, torch.device('cpu'), parameters=weights)}")  # fmt: skip
    _print(results, args, machine)
    if args.json:
        payload = {"model": str(args.engines or args.model), "fps": args.fps, "machine": machine,
                   "precision": args.precision, "runs": results}  # fmt: skip
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    return 0


def _canvas(source: Any) -> tuple[int, int]:
    """The canvas a model (its native size) or an engine set (what it was built for) makes."""
    if hasattr(source, "native_size"):
        return source.native_size, source.native_size
    return source.manifest.request.height, source.manifest.request.width


def cpu_ratios(results: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    """(session, clock) -> recompute CPU seconds / semdraw CPU seconds."""
    by = {(r["session"], r["clock"], r["stream"]): r for r in results}
    return {(s, c): by[s, c, "recompute"]["cpu_s"] / max(by[s, c, "semdraw"]["cpu_s"], 1e-9)
            for s, c, k in by if k == "semdraw" and (s, c, "recompute") in by}  # fmt: skip


def _print(results: list[dict[str, Any]], args: argparse.Namespace, machine: str) -> None:
    ratios = cpu_ratios(results)
    print(f"\nSessions replayed on {args.engines or args.model} (frame clock {args.fps:g} fps); {machine}\n")
    print("| session | clock | stream | frames | computed | denoiser rows | CPU s | edits unseen | first p50/p95 ms | "
          "settled p50/p95 ms | recompute / semdraw CPU |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        lat = [f"{r[f'{k}_p50_ms']:.0f} / {r[f'{k}_p95_ms']:.0f}" if f"{k}_p50_ms" in r else "–" for k in ("first", "settled")]
        ratio = f"{ratios[r['session'], r['clock']]:.2f}x" if r["stream"] == "semdraw" else ""
        print(f"| {r['session']} | {r['clock']} | {r['stream']} | {r['frames']} | {r['computed']} | {r['rows']} | "
              f"{r['cpu_s']:.1f} | {r['unseen']} | {lat[0]} | {lat[1]} | {ratio} |")  # fmt: skip
    diffs = [r for r in results if "max_diff_vs_semdraw" in r]
    if diffs:
        print("\nframe clock, every frame compared: " + ", ".join(
            f"{r['session']} max |semdraw - recompute| {r['max_diff_vs_semdraw']}/255" for r in diffs))


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number of seconds, not {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"seconds must be a positive number, got {text}")
    return value


def _clocks(text: str) -> list[str]:
    clocks = text.split(",")
    if not clocks or any(c not in ("frames", "realtime") for c in clocks):
        raise argparse.ArgumentTypeError(f"clocks are frames and/or realtime, comma-separated: not {text!r}")
    return clocks


def add_parser(sub: Any, model_help: str) -> None:
    from semdraw.choices import PRECISIONS
    from semdraw.tools import fps_arg

    s = sub.add_parser("session", help="replay recorded painting sessions against a stream and a recompute-"
                                       "everything stream",
                       description="Replays recordings from semdraw-live --record (default: the three shipped sessions) against "
                       "a stream and against one that recomputes every row of every frame, in one run: frames, "
                       "denoiser rows, process CPU seconds, and (real time) edit-to-visible latency. The whole default run "
                       "takes about 25 minutes on a 2-core CPU (the recompute stream is the slow part).")  # fmt: skip
    s.add_argument("recordings", nargs="*", metavar="FILE",
                   help="recording files or shipped session names (default: all shipped: "
                        f"{', '.join(shipped_sessions()) or 'none'})")  # fmt: skip
    s.add_argument("--model", default="toy", help=model_help)
    s.add_argument("--engines", type=Path, default=None, help="an onnxruntime engine set instead of --model")
    s.add_argument("--clocks", type=_clocks, default=["frames", "realtime"], metavar="C1,C2",
                   help="frames (as fast as possible, a frame per 1/fps of the session), realtime, or both "
                        "(default frames,realtime)")  # fmt: skip
    s.add_argument("--fps", type=fps_arg, default=30.0, help="the frame clock's rate (default 30)")
    s.add_argument("--limit-s", type=_seconds, default=None, help="replay only the first seconds of each session")
    s.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="a torch model's arithmetic on the CPU, as the window's (default auto)")
    s.add_argument("--threads", type=int, default=None, help="CPU threads of the networks, torch and onnxruntime alike (default: torch's)")
    s.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    s.set_defaults(run=session)
