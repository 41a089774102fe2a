"""The multi-prompt stream batch: a fixed-size pipeline of T images in flight (docs/architecture.md).

Each call advances every image in flight by one step in a *single* denoiser batch of L·T rows (L prompt
rows x T steps, step-major: row = k·L + i; rows with no weight at their step are left out of the batch
when the backend takes any batch size, see ``live_rows_only``), averages each step's rows under their quantized masks in
torch on the device (latent pre-averaging, as :func:`semdraw.generate`), re-noises, and decodes the image
that just finished. A fresh noise latent enters every call, so after T calls (a *flush*) each call yields
one finished image.

The parts, each in its own module: the source it runs on (stream_source.py: networks, schedule, canvas),
the row layout (row_layout.py), the compiled per-row tables (row_tables.py), the images in flight and the
two-phase step (image_ring.py), and when a step yields a frame (frame_policy.py). :class:`Stream` is the
thread-safe facade over them; :class:`semdraw.StreamHost` drives many streams' steps in one denoiser call.

Image n after a flush is made from seed ``seed + n·seed_step`` with exactly the noise draws ``generate()``
makes (initial latent, then one draw per re-noising), so the first frame after a flush equals
``generate(..., seed=seed)`` (oracle 3) and the stream is reproducible from its seed. ``seed_step=0``
gives every image the same noise: frames then change only where the drawing changes (what a drawing
window wants; each frame equals ``generate(..., seed=seed)`` of the brushes it was made under).

Live updates (``set_brush``, ``set_mask``, ``set_background``, ...) may come from any thread. They build
the new per-row tables on the caller's thread (masks: blur, quantization, centring shifts; prompts: the
cached encoder) and hand them over under a short lock; the next call copies them into the device buffers
before it runs. A mask change therefore costs no flush and no text encoding.

Rows and the background: ``layers`` counts prompt rows per step. A background *prompt* is generated as a
full-canvas layer beneath the brushes (weight clip(1 - Σ M)), so it takes one of the L rows: with a
background prompt a stream holds at most L - 1 brushes. A white or image background costs no row.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import step
from .engines import EngineSet
from .errors import ConfigError
from .frame_policy import FramePolicy, FrameTimes
from .generation import image_to_tensor, to_output
from .image_ring import ImageRing, StepInFlight
from .limits import check_seed
from .masks import paste
from .model import Model
from .request import Background, Brush
from .row_layout import RowLayout
from .row_tables import DeviceTables, Painted, RowCompiler, RowTables, has_prompt_row
from .step import SamplingOptions
from .stream_source import open_source

__all__ = ["FrameTimes", "Stream"]


class Stream:
    """A fixed-capacity multi-prompt stream: ``frame = stream()`` returns the next HxWx3 uint8 image.

    ``source``: a :class:`Model` (torch backend), an :class:`EngineSet`, or the path of an engine-set folder
    (onnxruntime / TensorRT; the set's own text encoders encode the prompts, or ``model``'s when one is given:
    the source model is never loaded). Sizes, ``layers`` (prompt rows per step, default 4) and ``steps``/``timesteps`` default to
    the engine set's or the model's. ``cfg``: "none" (guidance 1, the few-step default), "full" (negative
    prompts, batch doubled), or StreamDiffusion's residual CFG: "self" (no negative pass: L·T rows) and
    "initialize" (a negative pass at the first step only: L·T + L rows); ``guidance_scale`` > 1 for
    the guided modes, default 2 (:class:`semdraw.step.Guidance`). ``seed_step``: image n uses seed + n·seed_step
    (0: the same noise for every image, so an unchanged drawing gives a still image). ``bootstrap_steps``, ``bootstrap_mix_steps``,
    ``centre_steps``, ``mask_type`` and ``cover_alpha`` mean exactly what they mean in :func:`generate`
    (defaults: the model's); centring applies per slot to the first ``centre_steps`` steps (default: the
    bootstrap steps). ``cuda_graph``: capture the denoiser call as a CUDA graph (torch models on CUDA,
    TensorRT sets; GPU-only). ``compile``: run a torch model's denoiser and decoder through ``torch.compile``
    (:meth:`Networks.compiled`; the first frames compile, minutes on a CPU). ``precision``: a torch model's
    arithmetic on the CPU, "fp32" (default: exact against the oracles), "bf16" (``torch.autocast``) or "auto"
    (bf16 where the CPU multiplies bf16 natively and the denoiser is large enough to gain:
    :mod:`semdraw.precision`). ``idle_frames``: with ``seed_step=0``, once nothing has changed for as many
    frames as the pipeline is deep (T), every image in flight is the same still picture, so frames are
    served from the last one without running a network until the next edit (``stream.idle`` says so).
    ``live_rows_only``: run only the rows with some weight at their step (empty slots; a soft brush before
    the step it joins; the background row under brushes that cover the canvas) when the denoiser takes any
    batch (torch; engine sets whose ONNX has a row axis); the frame is the same (``rows_computed`` counts).
    """

    def __init__(
        self,
        source: Model | EngineSet | str | Path,
        *,
        height: int | None = None,
        width: int | None = None,
        layers: int | None = None,
        steps: int | None = None,
        timesteps: Any = None,
        seed: int | None = None,
        seed_step: int = 1,
        cfg: str = "none",
        guidance_scale: float | None = None,
        backend: str = "auto",
        device: str | torch.device | None = None,
        model: Model | None = None,
        bootstrap_steps: int | None = None,
        bootstrap_mix_steps: float | None = None,
        centre_steps: int | None = None,
        mask_type: str = "discrete",
        cover_alpha: float | None = 0.3,
        cuda_graph: bool = False,
        compile: bool = False,
        precision: str = "fp32",
        idle_frames: bool = True,
        live_rows_only: bool = True,
    ) -> None:
        asked = SamplingOptions(bootstrap_steps=bootstrap_steps, bootstrap_mix_steps=bootstrap_mix_steps,
                                centre_steps=centre_steps, mask_type=mask_type, cover_alpha=cover_alpha)  # fmt: skip
        asked.check()  # early, before engines load; resolved against the model's defaults below
        self.cfg = cfg
        self.guidance, self.guidance_scale = step.resolve_guidance(cfg, guidance_scale)  # generate()'s rule
        src = open_source(source, height=height, width=width, layers=layers, steps=steps, timesteps=timesteps,
                          cfg=cfg, backend=backend, device=device, model=model, cuda_graph=cuda_graph,
                          compile=compile, precision=precision)  # fmt: skip
        self.source, self.networks = src, src.networks
        self.model, self.engines, self.family, self.prompts = src.model, src.engines, src.family, src.prompts
        self.device, self.dtype = src.device, src.dtype
        self.height, self.width, self.layers = src.height, src.width, src.layers
        if self.layers < 1:
            raise ConfigError(f"layers must be >= 1, got {self.layers}")
        self.options = opts = asked.resolved(src.defaults)
        h, w = src.latent
        self.sched = src.sched.to(self.device)
        self.steps = self.sched.steps
        self.layout = RowLayout.build(self.sched, self.layers, (src.latent_channels, h, w), self.guidance, opts,
                                      self.device, self.dtype)  # fmt: skip
        self.rows = self.layout.rows
        white = self.networks.encode(torch.ones(1, 3, self.height, self.width, device=self.device))
        white = white.to(self.device, self.dtype)
        self._compiler = RowCompiler(self.layout, opts, self.guidance, self.family, self.prompts,
                                     self.sched.noise_level.cpu(), (self.height, self.width), white)  # fmt: skip
        self.live_rows_only = bool(live_rows_only)
        self._tables = DeviceTables(self.layout, self.device, self.dtype,
                                    live_only=self.live_rows_only and self.networks.any_batch)  # fmt: skip
        self._ring = ImageRing(self.layout, self.sched, white, guidance_scale=self.guidance_scale,
                               residual=self.guidance.residual, bootstrap=bool(opts.bootstrap_steps),
                               seed=int(torch.seed() % 2**31) if seed is None else check_seed(seed),
                               seed_step=seed_step, device=self.device, dtype=self.dtype)  # fmt: skip
        self._frames = FramePolicy(self.steps, idle_frames=idle_frames)
        self._painted = Painted()
        self._setter_lock = threading.RLock()  # serialises setters (composition + table compiling)
        self._handover = threading.Lock()  # guards the pending tables between setter and frame threads
        self.frame_lock = threading.Lock()  # one step at a time (a host holds it across a step's two phases)
        self._pending: RowTables | None = None
        self.rows_computed = 0  # denoiser rows run since construction, negative rows included: what skipping saves
        self.edits = 0  # changes to what the stream generates (brushes, background, seed) since construction
        self.times = FrameTimes()
        self.last_latent: torch.Tensor | None = None
        self.profile = False  # when True, sections are timed (synchronising the device around them)
        self._publish(edit=False)

    # ------------------------------------------------------------------ live updates (any thread)
    def set_brush(self, i: int, brush: Brush) -> None:
        """Put ``brush`` in slot ``i`` (0 ≤ i < layers). Only a prompt the model has not seen is encoded."""
        if not isinstance(brush, Brush):
            raise ConfigError(f"expected a semdraw.Brush, got {type(brush).__name__}")
        with self._setter_lock:
            self._check_slot(i)
            brushes = {**self._painted.brushes, i: brush}
            self._check_fits(brushes, self._painted.background)
            self._painted.brushes = brushes
            self._publish()

    def set_mask(self, i: int, mask: Any, **changes: Any) -> None:
        """Change slot ``i``'s mask (and e.g. ``mask_strength=``, ``mask_std=``): the fast path, no encoding."""
        with self._setter_lock:
            if i not in self._painted.brushes:
                raise ConfigError(f"slot {i} holds no brush; call set_brush({i}, Brush(...)) first")
            self.set_brush(i, replace(self._painted.brushes[i], mask=mask, **changes))

    def remove_brush(self, i: int) -> None:
        with self._setter_lock:
            self._check_slot(i)
            self._painted.brushes = {k: v for k, v in self._painted.brushes.items() if k != i}
            self._publish()

    def set_background(self, background: Background) -> None:
        """Change the background: an image is encoded once here; a prompt takes one row (see module doc)."""
        if not isinstance(background, Background):
            raise ConfigError(f"expected a semdraw.Background, got {type(background).__name__}")
        with self._setter_lock:
            self._check_fits(self._painted.brushes, background)
            latent = pixels = None
            if background.image is not None:
                pixels = image_to_tensor(background.image, self.height, self.width).to(self.device, self.dtype)
                latent = self.networks.encode(pixels).to(self.device, self.dtype)
            self._painted = replace(self._painted, background=background, background_latent=latent,
                                    background_pixels=pixels)  # fmt: skip
            self._publish()

    def set_seed(self, seed: int) -> None:
        """Images entering from the next call use ``seed``, ``seed + seed_step``, ...; those in flight finish as they
        are (call :meth:`flush` to make the very next frame the image of ``seed``)."""
        self._ring.set_seed(seed)
        self._frames.edited()
        self.edits += 1

    def flush(self) -> None:
        """Restart the pipeline: the next call runs T - 1 silent steps and returns the image of ``seed``."""
        self._frames.flush()

    @property
    def seed(self) -> int:
        return self._ring.seed

    @property
    def seed_step(self) -> int:
        return self._ring.seed_step

    @seed_step.setter
    def seed_step(self, value: int) -> None:
        self._ring.seed_step = check_seed(value, "seed_step")

    @property
    def idle(self) -> bool:
        """The last frame was served without running a network (see frame_policy.py)."""
        return self._frames.idle

    @property
    def idle_frames(self) -> bool:
        return self._frames.idle_frames

    @idle_frames.setter
    def idle_frames(self, value: bool) -> None:
        self._frames.idle_frames = bool(value)

    @property
    def batch_rows(self) -> int:
        """Denoiser rows per call when every row runs: L·T, plus the rows with a negative pass."""
        return self.layout.batch_rows

    @property
    def bootstrap_steps(self) -> int:
        return int(self.options.bootstrap_steps)  # type: ignore[arg-type]

    @property
    def centre_steps(self) -> int:
        return int(self.options.centre_steps)  # type: ignore[arg-type]

    @property
    def brushes(self) -> dict[int, Brush]:
        with self._setter_lock:
            return dict(self._painted.brushes)

    @property
    def background(self) -> Background:
        with self._setter_lock:
            return self._painted.background

    @property
    def capacity(self) -> int:
        """How many brushes fit now (one row fewer with a background prompt)."""
        with self._setter_lock:
            return self.layers - int(self._painted.prompt_row)

    def _check_slot(self, i: int) -> None:
        if not isinstance(i, int) or not 0 <= i < self.layers:
            raise ConfigError(f"brush slot must be an int in [0, {self.layers}), got {i!r}: this stream has "
                              f"{self.layers} prompt rows (layers={self.layers})")  # fmt: skip

    def _check_fits(self, brushes: dict[int, Brush], background: Background) -> None:
        rows = len(brushes) + int(has_prompt_row(background))
        if rows > self.layers:
            raise ConfigError(
                f"{len(brushes)} brushes and a background prompt need {rows} prompt rows, but this stream has "
                f"{self.layers}: remove a brush, drop the background prompt, or create the stream with "
                f"layers={rows} (engine sets: rebuild with --layers {rows})"
            )

    def _publish(self, edit: bool = True) -> None:
        """Compile the current composition's tables on this (the setter's) thread and hand them over."""
        tables = self._compiler.compile(self._painted)
        with self._handover:
            self._pending = tables
        self.edits += edit

    def _load_pending(self) -> bool:
        """Frame thread: copy freshly compiled tables into the device buffers; whether there were any."""
        with self._handover:
            tables, self._pending = self._pending, None
        if tables is not None:
            self._tables.load(tables)
        return tables is not None

    # ------------------------------------------------------------------ steps (the frame thread, or a host)
    def begin_step(self) -> StepInFlight | None:
        """Phase 1 of the next step (hold ``frame_lock`` across both phases): the rows' denoiser batch, or
        None when the frame is idle (:meth:`idle_frame`; no network runs)."""
        if self._frames.take_flush():
            self._ring.restart()
        loaded = self._load_pending()
        if self._frames.begin(loaded, same_noise=self.seed_step == 0):
            return None
        flight = self._ring.prepare(self._tables)
        self.rows_computed += flight.rows
        return flight

    def complete_step(self, flight: StepInFlight, prediction: torch.Tensor) -> torch.Tensor | None:
        """Phase 2: the clean latent of the finished image [1, C, h, w], or None while the pipeline fills."""
        latent = self._ring.complete(flight, prediction, self._tables)
        return latent if self._frames.stepped() else None

    def finish_frame(self, latent: torch.Tensor, pixels: torch.Tensor) -> np.ndarray:
        """The frame from the decoded finished image (pasted over an image background when inpainting)."""
        pixels = pixels.to(self.device).float()
        if self._tables.inpaint:
            pixels = paste(pixels, self._tables["background_pixels"].float(), self._tables["paste"].float())
        frame = to_output(pixels, "np")  # the one host synchronisation of a frame
        self.last_latent = latent  # [1, C, h, w] the frame's clean latent (before decoding)
        self._frames.shown(frame)
        return frame

    def idle_frame(self) -> np.ndarray:
        return self._frames.last_frame.copy()  # type: ignore[union-attr]

    @torch.no_grad()
    def __call__(self) -> np.ndarray:
        """The next frame: HxWx3 uint8 (the first call, and the first after :meth:`flush`, fills the pipeline).

        Frames are serialised (one caller at a time); edits may come from any thread meanwhile.
        """
        started = time.perf_counter()
        with self.frame_lock:
            while True:
                flight = self.begin_step()
                if flight is None:
                    frame = self.idle_frame()
                    break
                latent = self.complete_step(flight, self._predict(flight))
                if latent is not None:
                    frame = self.finish_frame(latent, self._timed("decoder", self.networks.decode, latent))
                    break
        if self.profile:
            self.times.frames += 1
            self.times.total += time.perf_counter() - started
        return frame

    def _predict(self, flight: StepInFlight) -> torch.Tensor:
        if not flight.rows:  # nothing live: no call (the prediction of zero rows)
            return flight.batch.sample
        return self._timed("denoiser", self.networks.run, flight.batch)

    def reset_times(self) -> None:
        self.times = FrameTimes()

    def _timed(self, section: str, fn: Callable[..., torch.Tensor], *args: Any) -> torch.Tensor:
        if not self.profile:
            return fn(*args)
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        out = fn(*args)
        sync()
        setattr(self.times, section, getattr(self.times, section) + time.perf_counter() - t0)
        return out

    def __repr__(self) -> str:
        return (f"Stream({self.networks.backend}, {self.height}x{self.width}, layers={self.layers}, "
                f"steps={self.steps}, cfg={self.cfg!r}, brushes={sorted(self._painted.brushes)})")  # fmt: skip
