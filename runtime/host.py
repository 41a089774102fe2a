"""Many painters next to one set of networks: every painter's live rows in one denoiser call per tick.

A GPU is efficient only at large batches, and one painter is a few dozen rows at most. A
:class:`StreamHost` holds many painters' streams (one :class:`semdraw.Stream` each, with its own brushes,
seed and options) over one set of networks, and per :meth:`~StreamHost.tick` runs phase 1 of every
painter's step, all their rows in **one** denoiser call, phase 2 of every step, and every finished image in
**one** decoder call (where the decoder takes several images: torch; engine sets' decoders take one, so
one call each), then hands each painter its frame. A painter's frames are those of its own
``Stream`` with the same composition and seed: the step is the same two-phase step (image_ring.py), only the
denoiser call is shared.

Painters join, leave and edit (through their stream's setters) from any thread between ticks. Painters on
one host share the canvas size (their rows are concatenated into one batch); a different size needs another
host. A host has a capacity in rows per call: a painter is refused when its largest batch would not fit.
Idle painters (nothing edited, seed fixed: see frame_policy.py) cost no rows.
"""

from __future__ import annotations

import itertools
import threading
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .engines import EngineSet, load_engines
from .errors import ConfigError, SemdrawError
from .model import Model
from .networks import DenoiserBatch, Networks
from .stream import Stream

# Options a painter may choose for itself; the canvas, the networks and the device belong to the host.
HOST_OWNED = ("height", "width", "backend", "device", "model", "cuda_graph", "compile", "precision")


class HostFullError(SemdrawError):
    """The host has no room for another painter's rows (or the painter's id is taken)."""


@dataclass
class PainterCounters:
    """What one painter has cost and received since it joined."""

    ticks: int = 0  # ticks it took part in (advanced once each)
    frames: int = 0  # frames it received (computed or idle)
    idle: int = 0  # frames served without running a network
    rows: int = 0  # denoiser rows it put into the shared calls


@dataclass
class Painter:
    """One painter on a host: its id, its stream (edit it with the stream's setters), its counters and
    latest frame."""

    id: str
    stream: Stream
    counters: PainterCounters = field(default_factory=PainterCounters)
    frame: np.ndarray | None = None


class StreamHost:
    """Painters' streams over one set of networks; ``tick()`` advances every painter once.

    ``source``: a :class:`Model`, an :class:`EngineSet` or an engine-set folder (loaded once here) whose
    denoiser takes any number of rows (torch; onnxruntime sets with a row axis). ``height``/``width``: the
    canvas every painter shares (default: the source's). ``capacity_rows``: the most denoiser rows of one
    call (default: unbounded); a painter whose largest batch (``Stream.batch_rows``) would not fit beside
    the painters already here is refused with :class:`HostFullError`. ``painter_defaults``: Stream options
    every painter gets unless it asks otherwise (e.g. ``layers=3, seed_step=0``).
    """

    def __init__(self, source: Model | EngineSet | str | Path, *, height: int | None = None, width: int | None = None,
                 capacity_rows: int | None = None, backend: str = "auto", device: str | torch.device | None = None,
                 model: Model | None = None, compile: bool = False, precision: str = "fp32",
                 **painter_defaults: Any) -> None:  # fmt: skip
        if isinstance(source, (str, Path)):
            source = load_engines(source, backend, device=device, text=model is None)
            backend = "auto"
        owned = sorted(set(painter_defaults) & set(HOST_OWNED))
        if owned:
            raise ConfigError(f"{', '.join(owned)}: set on the host itself, not as painter defaults")
        if capacity_rows is not None and capacity_rows < 1:
            raise ConfigError(f"capacity_rows must be >= 1, got {capacity_rows}")
        self._source, self.capacity_rows, self._defaults = source, capacity_rows, painter_defaults
        self._shared = {"height": height, "width": width, "backend": backend, "device": device, "model": model,
                        "compile": compile, "precision": precision}  # fmt: skip
        probe = self._stream()  # resolves the canvas and checks the source once, before any painter joins
        self.height, self.width, self.device = probe.height, probe.width, probe.device
        self._shared.update(height=self.height, width=self.width)
        self.networks: Networks = probe.networks
        bound = self.networks.max_rows  # a TensorRT plan's row range
        if bound is not None and (capacity_rows or bound) > bound:
            raise ConfigError(f"capacity_rows {capacity_rows} exceeds the plan's row range (at most {bound} rows)")
        self.capacity_rows = capacity_rows if capacity_rows is not None else bound
        if not self.networks.any_batch:
            raise ConfigError(
                "a host gathers a varying number of rows into one denoiser call, but this denoiser has a fixed "
                "batch; use a torch model, an onnxruntime engine set, or a TensorRT set built with --max-rows"
            )  # fmt: skip
        self._painters: dict[str, Painter] = {}
        self._lock = threading.Lock()  # guards the painter table (join / leave / tick's snapshot)
        self._tick_lock = threading.Lock()  # one tick at a time
        self._ids = itertools.count()
        self.ticks = 0
        self.rows_last_tick = 0  # denoiser rows of the last tick's one call (0: no call)

    def _stream(self, **options: Any) -> Stream:
        return Stream(self._source, **{**self._defaults, **options, **self._shared})

    # ------------------------------------------------------------------ painters (any thread)
    def join(self, painter_id: str | None = None, **options: Any) -> Painter:
        """A new painter with its own stream (``options``: Stream options such as layers, seed, seed_step,
        cfg, steps); it takes part from the next tick, its first frame after the pipeline fills (T ticks)."""
        owned = sorted(set(options) & set(HOST_OWNED))
        if owned:
            raise ConfigError(f"{', '.join(owned)} belong to the host (every painter on a host shares its "
                              f"canvas {self.height}x{self.width} and networks): open another host for another")  # fmt: skip
        stream = self._stream(**options)
        with self._lock:
            pid = str(next(self._ids)) if painter_id is None else str(painter_id)
            if pid in self._painters:
                raise HostFullError(f"a painter with id {pid!r} is already on this host")
            used = sum(p.stream.batch_rows for p in self._painters.values())
            if self.capacity_rows is not None and used + stream.batch_rows > self.capacity_rows:
                raise HostFullError(
                    f"this host is full: its painters may use {used} of {self.capacity_rows} rows per call and a "
                    f"painter with these options needs up to {stream.batch_rows}; try another host, or fewer "
                    "layers or steps"
                )  # fmt: skip
            painter = self._painters[pid] = Painter(pid, stream)
        return painter

    def leave(self, painter: Painter | str) -> None:
        """Remove a painter (from the next tick on); an unknown one is an error."""
        pid = painter.id if isinstance(painter, Painter) else str(painter)
        with self._lock:
            if self._painters.pop(pid, None) is None:
                raise ConfigError(f"no painter {pid!r} on this host")

    @property
    def painters(self) -> dict[str, Painter]:
        with self._lock:
            return dict(self._painters)

    @property
    def rows_in_use(self) -> int:
        """The rows the painters here may use per call at most (what capacity is checked against)."""
        with self._lock:
            return sum(p.stream.batch_rows for p in self._painters.values())

    # ------------------------------------------------------------------ ticks (one thread)
    @torch.no_grad()
    def tick(self) -> dict[str, np.ndarray | None]:
        """Advance every painter once: their live rows in one denoiser call, their finished images in one
        decoder call. Returns each painter's frame (None while its pipeline fills after joining or a flush)."""
        with self._tick_lock, ExitStack() as held:
            painters = list(self.painters.values())
            for p in painters:  # a painter's step is atomic against its own direct calls
                held.enter_context(p.stream.frame_lock)
            frames: dict[str, np.ndarray | None] = {}
            flights = []
            for p in painters:
                p.counters.ticks += 1
                flight = p.stream.begin_step()
                if flight is None:
                    frames[p.id] = p.stream.idle_frame()
                    p.counters.idle += 1
                else:
                    flights.append((p, flight))
                    p.counters.rows += flight.rows
            running = [f.batch for _, f in flights if f.rows]
            predictions = iter(DenoiserBatch.split(self.networks.run(DenoiserBatch.cat(running)), running)
                               if running else [])  # fmt: skip
            self.rows_last_tick = sum(b.rows for b in running)
            finished = []
            for p, flight in flights:
                prediction = next(predictions) if flight.rows else flight.batch.sample
                latent = p.stream.complete_step(flight, prediction)
                if latent is None:
                    frames[p.id] = None
                else:
                    finished.append((p, latent))
            decoded = self.networks.decode_each([latent for _, latent in finished])
            for (p, latent), pixels in zip(finished, decoded, strict=True):
                frames[p.id] = p.stream.finish_frame(latent, pixels)
            for p in painters:
                p.frame = frames[p.id] if frames[p.id] is not None else p.frame
                p.counters.frames += frames[p.id] is not None
            self.ticks += 1
            return frames

    def __repr__(self) -> str:
        return (f"StreamHost({self.networks.backend}, {self.height}x{self.width}, painters={len(self.painters)}, "
                f"capacity_rows={self.capacity_rows})")  # fmt: skip
