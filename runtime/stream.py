"""The multi-prompt stream batch: a fixed-size pipeline of T images in flight (docs/architecture.md).

Each call advances every image in flight by one step in a *single* denoiser batch of L·T rows (L prompt
rows x T steps, step-major: row = k·L + i; rows with no weight at their step are left out of the batch
when the backend takes any batch size, see ``live_rows_only``), averages each step's rows under their quantized masks in
torch on the device (latent pre-averaging, as :func:`semdraw.generate`), re-noises, and decodes the image
that just finished. A fresh noise latent enters every call, so after T calls (a *flush*) each call yields
one finished image.

Where images live: a ring of T latents. The image that entered at call f sits at ring position f mod T
for its whole life; only its step changes. So no latent is ever moved between buffers: per call, the
phase p = f mod T picks precomputed index tensors (which ring position is at which step), and all
buffers are allocated once, in ``__init__``.

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

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import masks as M
from . import sampling as S
from . import step
from .backends import CudaGraphed
from .conditioning import Conditioning
from .engines import EngineSet, load_engines, load_prompt_encoder, weights_fingerprint
from .errors import ConfigError
from .families import SamplingDefaults, TileGeometry, get_family
from .generation import guidance_for, image_to_tensor, to_output
from .limits import check_seed
from .model import Model, latent_size, schedule_for
from .request import Background, Brush
from .step import SamplingOptions

log = logging.getLogger(__name__)

DEFAULT_LAYERS = 4
CFG_MODES = tuple(step.GUIDANCE_MODES)


# ------------------------------------------------------------------------------------------ networks
@dataclass
class StreamNetworks:
    """The three networks a stream calls, on device tensors, whatever backend runs them."""

    backend: str  # "torch" | "onnxruntime" | "tensorrt"
    denoise: Callable[[torch.Tensor, torch.Tensor, Conditioning], torch.Tensor]  # (x_in, t, cond) -> out
    encode: Callable[[torch.Tensor], torch.Tensor]  # pixels [B,3,H,W] in [-1,1] -> scaled latents
    decode: Callable[[torch.Tensor], torch.Tensor]  # scaled latents -> pixels in about [-1,1]
    any_batch: bool = False  # the denoiser takes any number of rows (so rows without weight can be left out)

    @staticmethod
    def from_model(model: Model) -> StreamNetworks:
        return StreamNetworks("torch", model.predict, model.encode_image, model.decode, any_batch=True)

    @staticmethod
    def from_engines(engines: EngineSet) -> StreamNetworks:
        scale, shift = engines.manifest.vae_scaling_factor, engines.manifest.vae_shift_factor

        family = get_family(engines.manifest.family)

        def denoise(x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
            return engines.denoiser(**{family.sample_input: x, family.timestep_input: t}, **cond)

        def encode(pixels: torch.Tensor) -> torch.Tensor:
            return (engines.encoder(pixels) - shift) * scale

        def decode(latents: torch.Tensor) -> torch.Tensor:
            return engines.decoder(latents / scale + shift)

        any_batch = bool(getattr(engines.denoiser, "any_batch", False))  # an ONNX file with a dynamic row axis
        return StreamNetworks(engines.backend, denoise, encode, decode, any_batch=any_batch)


@dataclass
class FrameTimes:
    """Seconds spent per section, summed over the frames since the last :meth:`Stream.reset_times`."""

    frames: int = 0
    total: float = 0.0
    denoiser: float = 0.0
    decoder: float = 0.0

    @property
    def other(self) -> float:
        return self.total - self.denoiser - self.decoder


# ------------------------------------------------------------------------------------------ state
@dataclass
class _Tables:
    """Everything a frame reads that live updates change, built on the host (CPU) by the setter.

    R = L·T rows, step-major. Copied into the device buffers of the same names at the next frame.
    """

    weights: torch.Tensor  # [T, L, 1, h, w] quantized mask of each row (0 for empty rows)
    known_weight: torch.Tensor  # [T, 1, h, w] weight of the known background (white / image); 0 with a prompt row
    known_latent: torch.Tensor  # [1, C, h, w] clean latent the known background is pinned to
    fill_on: torch.Tensor  # [R, 1, 1, 1] bool: brush row at a bootstrap step (sees the white fill outside)
    roll: torch.Tensor  # [R, h·w] gather index that centres a row's input (identity when not centred)
    unroll: torch.Tensor  # [R, h·w] its inverse
    conditioning: dict[str, torch.Tensor]  # name -> [R·(2 with CFG), ...] rows ([uncond rows; cond rows] with CFG)
    live_rows: torch.Tensor  # [R'] the rows with some weight at their step (the only ones that affect a frame)
    paste: torch.Tensor | None  # [1, 1, H, W] soft union of brush masks when inpainting over an image
    background_pixels: torch.Tensor | None  # [1, 3, H, W] in [-1, 1] when inpainting
    centred: bool  # some row is centred (else the frame skips the gathers)


@dataclass
class _Composition:
    """What the user has painted: brush slots and the background (host-side, guarded by the setter lock)."""

    brushes: dict[int, Brush] = field(default_factory=dict)
    background: Background = field(default_factory=Background)
    background_latent: torch.Tensor | None = None  # encoded background image (None: white or prompt)
    background_pixels: torch.Tensor | None = None


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
    TensorRT sets; GPU-only). ``idle_frames``: with ``seed_step=0``, once nothing has changed for as many
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
        idle_frames: bool = True,
        live_rows_only: bool = True,
    ) -> None:
        if backend not in ("auto", "torch", "onnxruntime", "tensorrt"):
            raise ConfigError(f"backend must be auto, torch, onnxruntime or tensorrt, got {backend!r}")
        asked = SamplingOptions(bootstrap_steps=bootstrap_steps, bootstrap_mix_steps=bootstrap_mix_steps,
                                centre_steps=centre_steps, mask_type=mask_type, cover_alpha=cover_alpha)  # fmt: skip
        asked.check()  # early, before engines load; resolved against the model's defaults below
        if guidance_scale is None:  # a guided mode defaults to 2
            guidance_scale = 2.0 if step.guidance_mode(cfg).guided else 1.0
        guidance = float(guidance_scale)
        mode = guidance_for(cfg, guidance)  # the same checks as generate()

        if isinstance(source, Model):
            if backend not in ("auto", "torch"):
                raise ConfigError(
                    f"backend {backend!r} runs an engine set, not a torch model: build one for this model with "
                    "build-engines (see `build-engines --help`) and pass its folder"
                )
            if device is not None and torch.device(device) != source.device:
                raise ConfigError(f"the model is on {source.device}; move it with model.to({str(device)!r}) first")
            self.model: Model | None = source
            self.engines: EngineSet | None = None
            self.networks = StreamNetworks.from_model(source)
            if cuda_graph and source.device.type != "cuda":
                raise ConfigError("cuda_graph=True needs a model on CUDA")
            if cuda_graph:  # the batch shape is fixed: capture the denoiser call once, replay it every frame
                self.networks = replace(self.networks, denoise=CudaGraphed(self.networks.denoise), any_batch=False)
            self.family, self.prompts = source.family, source.prompts
            defaults, factor = source.defaults, source.vae_scale_factor
            height, width = height or source.native_size, width or source.native_size
            self.sched = source.schedule(steps=steps, timesteps=timesteps)
            self.device, self.dtype = source.device, source.dtype
        else:
            if backend == "torch":
                raise ConfigError("backend 'torch' runs a Model; pass semdraw.load_model(...) instead of an engine set")
            engines = source if isinstance(source, EngineSet) else None
            if engines is None:
                expect = {k: v for k, v in (("height", height), ("width", width), ("layers", layers),
                                            ("cfg", cfg)) if v is not None}  # fmt: skip
                engines = load_engines(source, backend, device=device, expect=expect, text=model is None,
                                       cuda_graph=cuda_graph)  # fmt: skip
            man, req = engines.manifest, engines.manifest.request
            height, width, layers = height or req.height, width or req.width, layers or req.layers
            if (height, width, layers, cfg) != (req.height, req.width, req.layers, req.cfg):
                raise ConfigError(
                    f"the engine set was built for {req.height}x{req.width}, {req.layers} layers, cfg "
                    f"{req.cfg!r}; rebuild it with: "
                    f"{man.rebuild_line(engines.path, height=height, width=width, layers=layers, cfg=cfg)}"
                )
            self.model, self.engines = model, engines
            self.networks = StreamNetworks.from_engines(engines)
            self.family = get_family(man.family)
            # The set's own text encoders (the source model is never loaded), unless the caller passes a model.
            self.prompts = model.prompts if model is not None else engines.prompts or load_prompt_encoder(engines.path, man)
            if model is not None:
                _check_text_encoder_pairing(model, engines)
            defaults = SamplingDefaults(timesteps=req.timesteps, bootstrap_steps=man.bootstrap_steps,
                                        bootstrap_mix_steps=man.bootstrap_mix_steps)  # fmt: skip
            factor = req.height // man.latent_height
            self.sched = schedule_for(man.sampler, man.scheduler_config, defaults, self.family, steps, timesteps,
                                      man.sampler_params)  # fmt: skip
            built = tuple(float(t) for t in req.timesteps)
            if tuple(float(t) for t in self.sched.timesteps.tolist()) != built:
                raise ConfigError(f"the engine set was built for timesteps {list(built)}; rebuild with: "
                                  f"{man.rebuild_line(engines.path, timesteps=self.sched.timesteps.tolist())}")  # fmt: skip
            self.device, self.dtype = self._engine_device(), torch.float32

        self.options = opts = asked.resolved(defaults)
        self.height, self.width = height, width
        self.layers = DEFAULT_LAYERS if layers is None else int(layers)
        if self.layers < 1:
            raise ConfigError(f"layers must be >= 1, got {self.layers}")
        h, w = latent_size(self.height, self.width, factor)
        self.cfg, self.guidance_scale, self.guidance = cfg, guidance, mode

        T, L, C = self.sched.steps, self.layers, self.family.latent_channels
        R = L * T
        self.steps, self.rows = T, R
        dev, dt = self.device, self.dtype
        self.sched = self.sched.to(dev)
        self._lat = (C, h, w)

        # ---- constant index tables (built once)
        ring = torch.arange(T)
        step_of_row = torch.arange(R) // L
        # pos[p, k]: ring position of the image at step k when the phase is p
        pos = (ring[:, None] - ring[None, :]) % T
        draw = ring if self.sched.stochastic else torch.zeros(T, dtype=torch.long)  # noise draw of step k
        self._step_of_row = step_of_row.to(dev)
        self._steps = ring.to(dev)  # step index k of each of the T images (steps-order views)
        self._pos = pos.to(dev)  # [T(phase), T(step)]
        self._cur_noise = (pos * T + draw[None, :]).to(dev)  # flat index into noise [T*T] per (phase, step)
        self._next_noise = (pos[:, :-1] * T + draw[1:][None, :]).to(dev) if T > 1 else None
        self._white_share = torch.tensor([opts.white_share(k) for k in range(T)]).to(dev, dt).view(T, 1, 1, 1)
        self._t_rows = self.sched.timesteps[step_of_row.to(dev)]  # (extended by step.denoise's negative rows)
        # rows with a real negative pass (full: all; initialize: those of step 0); their negative conditioning
        # comes first in the batch, in row order
        negative = torch.tensor([mode.negative_at(int(k), T) for k in step_of_row], dtype=torch.bool)
        self._negative_rows = torch.nonzero(negative).flatten().to(dev)

        # ---- state buffers (allocated once; frames only write into them)
        self._x = torch.zeros(T, C, h, w, device=dev, dtype=dt)  # ring of latents in flight
        # RCFG: the noise part n = level_z·ε̄ of each image in flight (step.py)
        self._residual = torch.zeros(T, C, h, w, device=dev, dtype=dt) if mode.residual else None
        self._noise = torch.zeros(T, T, C, h, w, device=dev, dtype=dt)  # per ring image: its T noise draws
        # Host staging of the noise draws, one per ring image: a flush runs T - 1 steps without a sync, and a
        # non-blocking copy from a buffer the next step overwrote would deliver the next image's noise.
        self._staging = torch.zeros(T, T, C, h, w, dtype=dt, pin_memory=dev.type == "cuda")
        self._white = self.networks.encode(torch.ones(1, 3, self.height, self.width, device=dev)).to(dev, dt)
        self.buffers: dict[str, torch.Tensor] = {}
        self._generator = torch.Generator("cpu")
        self._state = _Composition()
        self._setter_lock = threading.RLock()  # serialises setters (composition + table building)
        self._handover = threading.Lock()  # guards the pending tables between setter and frame threads
        self._frame_lock = threading.Lock()  # one frame at a time
        self._pending: _Tables | None = None
        self._inpaint = self._centred = False
        self._live_rows: torch.Tensor | None = None  # rows that run (None: all; see _denoise_live_rows)
        self._live_conditioning: Conditioning | None = None
        self.rows_computed = 0  # denoiser rows run since construction, negative rows included: what skipping saves
        self.seed = int(torch.seed() % 2**31) if seed is None else check_seed(seed)
        self.seed_step = check_seed(seed_step, "seed_step")
        self._entered = 0  # images entered since the last flush / seed change: image n uses seed + n·seed_step
        self._frame = 0  # calls since the last flush: the ring phase is frame mod T
        self._needs_flush = True
        self.idle_frames = bool(idle_frames)
        self.live_rows_only = bool(live_rows_only)
        self._changed = False  # an edit the frame thread has not seen yet (seeds; tables arrive as _pending)
        self._steady = 0  # frames computed since the last edit: at T, every image in flight is the same picture
        self._last_frame: np.ndarray | None = None
        self.idle = False  # the last frame was served without running a network (see _next_frame)
        self.times = FrameTimes()
        self.last_latent: torch.Tensor | None = None
        self.profile = False  # when True, sections are timed (synchronising the device around them)
        self._publish()

    # ------------------------------------------------------------------ live updates (any thread)
    def set_brush(self, i: int, brush: Brush) -> None:
        """Put ``brush`` in slot ``i`` (0 ≤ i < layers). Only a prompt the model has not seen is encoded."""
        if not isinstance(brush, Brush):
            raise ConfigError(f"expected a semdraw.Brush, got {type(brush).__name__}")
        with self._setter_lock:
            self._check_slot(i)
            brushes = {**self._state.brushes, i: brush}
            self._check_fits(brushes, self._state.background)
            self._state.brushes = brushes
            self._publish()

    def set_mask(self, i: int, mask: Any, **changes: Any) -> None:
        """Change slot ``i``'s mask (and e.g. ``mask_strength=``, ``mask_std=``): the fast path, no encoding."""
        with self._setter_lock:
            if i not in self._state.brushes:
                raise ConfigError(f"slot {i} holds no brush; call set_brush({i}, Brush(...)) first")
            self.set_brush(i, replace(self._state.brushes[i], mask=mask, **changes))

    def remove_brush(self, i: int) -> None:
        with self._setter_lock:
            self._check_slot(i)
            self._state.brushes = {k: v for k, v in self._state.brushes.items() if k != i}
            self._publish()

    def set_background(self, background: Background) -> None:
        """Change the background: an image is encoded once here; a prompt takes one row (see module doc)."""
        if not isinstance(background, Background):
            raise ConfigError(f"expected a semdraw.Background, got {type(background).__name__}")
        with self._setter_lock:
            self._check_fits(self._state.brushes, background)
            latent = pixels = None
            if background.image is not None:
                pixels = image_to_tensor(background.image, self.height, self.width).to(self.device, self.dtype)
                latent = self.networks.encode(pixels).to(self.device, self.dtype)
            self._state = replace(self._state, background=background, background_latent=latent,
                                  background_pixels=pixels)  # fmt: skip
            self._publish()

    def set_seed(self, seed: int) -> None:
        """Images entering from the next call use ``seed``, ``seed + seed_step``, ...; those in flight finish as they
        are (call :meth:`flush` to make the very next frame the image of ``seed``)."""
        with self._handover:
            self.seed, self._entered = check_seed(seed), 0
            self._changed = True

    def flush(self) -> None:
        """Restart the pipeline: the next call runs T - 1 silent steps and returns the image of ``seed``."""
        with self._handover:
            self._needs_flush = True

    @property
    def batch_rows(self) -> int:
        """Denoiser rows per call when every row runs: L·T, plus the rows with a negative pass."""
        return self.rows + len(self._negative_rows)

    @property
    def bootstrap_steps(self) -> int:
        return int(self.options.bootstrap_steps)  # type: ignore[arg-type]

    @property
    def centre_steps(self) -> int:
        return int(self.options.centre_steps)  # type: ignore[arg-type]

    @property
    def brushes(self) -> dict[int, Brush]:
        with self._setter_lock:
            return dict(self._state.brushes)

    @property
    def background(self) -> Background:
        with self._setter_lock:
            return self._state.background

    @property
    def capacity(self) -> int:
        """How many brushes fit now (one row fewer with a background prompt)."""
        with self._setter_lock:
            return self.layers - int(self._prompt_row(self._state.background))

    def _check_slot(self, i: int) -> None:
        if not isinstance(i, int) or not 0 <= i < self.layers:
            raise ConfigError(f"brush slot must be an int in [0, {self.layers}), got {i!r}: this stream has "
                              f"{self.layers} prompt rows (layers={self.layers})")  # fmt: skip

    def _prompt_row(self, background: Background) -> bool:
        return background.image is None and bool(background.prompt)

    def _check_fits(self, brushes: dict[int, Brush], background: Background) -> None:
        rows = len(brushes) + int(self._prompt_row(background))
        if rows > self.layers:
            raise ConfigError(
                f"{len(brushes)} brushes and a background prompt need {rows} prompt rows, but this stream has "
                f"{self.layers}: remove a brush, drop the background prompt, or create the stream with "
                f"layers={rows} (engine sets: rebuild with --layers {rows})"
            )

    # ------------------------------------------------------------------ tables (setter thread)
    def _publish(self) -> None:
        """Build the per-row tables of the current composition on the host and hand them to the frame thread."""
        tables = self._build_tables(self._state)
        with self._handover:
            self._pending = tables

    def _build_tables(self, state: _Composition) -> _Tables:
        T, L, R = self.steps, self.layers, self.rows
        C, h, w = self._lat
        slots = sorted(state.brushes)
        brushes = [state.brushes[i] for i in slots]
        levels = self.sched.noise_level.cpu()
        f = self.height // h
        opts = self.options
        prepared = M.prepare_masks(brushes, levels, self.height, self.width, f, mask_type=opts.mask_type,
                                   cover_alpha=opts.cover_alpha)  # fmt: skip
        weights = torch.zeros(T, L, 1, h, w)
        fill_on = torch.zeros(T, L, 1, 1, 1, dtype=torch.bool)
        base = torch.arange(h * w).view(h, w)
        roll = base.flatten().repeat(R, 1).view(T, L, h * w)
        unroll = roll.clone()
        bg = state.background
        encode = self.prompts
        bg_cond = encode(bg.prompt)
        cfg = self.guidance.negative_steps != 0  # some step runs a real negative pass
        empty = encode("")
        cond = [bg_cond] * L
        uncond = [empty] * L
        for j, (slot, brush) in enumerate(zip(slots, brushes, strict=True)):
            weights[:, slot] = prepared.quantized[j]
            fill_on[: opts.bootstrap_steps, slot] = True
            dy, dx = M.centring_shift(prepared.soft_latent[j])
            if dy or dx:
                roll[: opts.centre_steps, slot] = M.shift(base, dy, dx).flatten()
                unroll[: opts.centre_steps, slot] = M.shift(base, -dy, -dx).flatten()
            cond[slot] = bg_cond.lerp(encode(brush.prompt), float(brush.prompt_strength))
            if cfg:
                uncond[slot] = encode(brush.negative_prompt)
        known_weight = prepared.background.clone()
        if self._prompt_row(bg):
            free = max(set(range(L)) - set(slots))
            weights[:, free] = prepared.background
            if cfg:
                uncond[free] = encode(bg.negative_prompt)
            known_weight.zero_()
        known = state.background_latent if state.background_latent is not None else self._white
        canvas = TileGeometry(self.height, self.width, 0, 0, self.height, self.width)

        def step_major(per_slot: list[Conditioning]) -> Conditioning:  # row k·L + i: slot i at step k
            return Conditioning.cat([self.family.conditioning_for(c, canvas).to("cpu") for c in per_slot] * T)

        negative_rows = self._negative_rows.cpu()
        batch = step_major(cond)
        if cfg:  # [negative conditioning of the rows with a negative pass; every row's positive conditioning]
            negatives = step_major(uncond)
            batch = Conditioning.cat([Conditioning({n: t.index_select(0, negative_rows) for n, t in negatives.items()}),
                                      batch])  # fmt: skip
        centred = bool((roll != base.flatten()).any())
        live_rows = torch.nonzero(weights.flatten(2).amax(-1).flatten() > 0).flatten()  # step-major, as rows
        paste = None
        if state.background_pixels is not None:
            paste = M.coverage(prepared.soft_pixels)
        return _Tables(
            weights=weights, known_weight=known_weight, known_latent=known.detach().to("cpu"),
            fill_on=fill_on.view(R, 1, 1, 1), roll=roll.view(R, h * w), unroll=unroll.view(R, h * w),
            conditioning=dict(batch), live_rows=live_rows, paste=paste, centred=centred,
            background_pixels=None if state.background_pixels is None else state.background_pixels.cpu(),
        )  # fmt: skip

    def _take_pending(self) -> bool:
        """Frame thread: copy freshly published tables into the device buffers (same storage every time);
        whether there were any."""
        with self._handover:
            tables, self._pending = self._pending, None
        if tables is None:
            return False
        dev, dt = self.device, self.dtype
        named = {name: getattr(tables, name) for name in ("weights", "known_weight", "known_latent", "fill_on",
                                                          "roll", "unroll", "paste", "background_pixels")}  # fmt: skip
        named.update({f"cond.{n}": t for n, t in tables.conditioning.items()})  # one buffer per name
        for name, src in named.items():
            if src is None:
                continue
            src = src.to(dt) if src.is_floating_point() else src
            buf = self.buffers.get(name)
            if buf is None or buf.shape != src.shape:
                buf = self.buffers[name] = torch.empty(src.shape, dtype=src.dtype, device=dev)
            buf.copy_(src, non_blocking=True)
        self._inpaint, self._centred = tables.paste is not None, tables.centred
        self._conditioning = Conditioning({n: self.buffers[f"cond.{n}"] for n in tables.conditioning})
        self._live_rows = self._live_conditioning = self._live_negative = None  # None: every row runs
        if self.live_rows_only and self.networks.any_batch and len(tables.live_rows) < self.rows:
            rows = tables.live_rows.to(dev)
            self._live_rows = rows
            # the negative rows are a prefix of the row order, so row r's negative conditioning is at r
            neg = torch.nonzero(torch.isin(rows, self._negative_rows)).flatten()  # positions among the live rows
            self._live_negative = neg
            m = len(self._negative_rows)
            index = torch.cat([rows.index_select(0, neg), rows + m])  # [their negatives; live positives]
            self._live_conditioning = Conditioning({n: t.index_select(0, index) for n, t in self._conditioning.items()})
        return True

    # ------------------------------------------------------------------ frames (one thread)
    @torch.no_grad()
    def __call__(self) -> np.ndarray:
        """The next frame: HxWx3 uint8 (the first call, and the first after :meth:`flush`, fills the pipeline).

        Frames are serialised (one caller at a time); edits may come from any thread meanwhile.
        """
        with self._frame_lock:
            return self._next_frame()

    def _next_frame(self) -> np.ndarray:
        started = time.perf_counter()
        with self._handover:
            flush, self._needs_flush = self._needs_flush, False
            changed, self._changed = self._changed or flush, False
            if flush:
                self._entered, self._frame = 0, 0
        if flush:
            self._take_pending()
            for _ in range(self.steps - 1):
                self._step()
        changed = self._take_pending() or changed
        self._steady = 0 if changed else self._steady
        if self.idle_frames and self.seed_step == 0 and self._steady >= self.steps and self._last_frame is not None:
            # Idle: every image in flight began after the last edit, with the same noise and tables, so each
            # would finish as the last one did. Serve that frame and run no network until the next edit.
            self.idle = True
            frame = self._last_frame.copy()
        else:
            self.idle = False
            latent = self._step()
            self.last_latent = latent  # [1, C, h, w] the frame's clean latent (before decoding)
            frame = self._decode(latent)
            self._steady += 1
            self._last_frame = frame
        if self.profile:
            self.times.frames += 1
            self.times.total += time.perf_counter() - started
        return frame

    def reset_times(self) -> None:
        self.times = FrameTimes()

    def _draw_noise(self, ring_pos: int) -> None:
        """The noises of the image entering now, drawn in generate()'s order from its own seed."""
        with self._handover:
            seed = self.seed + self._entered * self.seed_step
            self._entered += 1
        g = self._generator.manual_seed(seed)
        draws = self.steps if self.sched.stochastic else 1
        target = self._noise[ring_pos]
        if self.device.type == "cpu":
            for j in range(draws):
                torch.randn(target.shape[1:], generator=g, dtype=self.dtype, out=target[j])
        else:  # drawn on the host (the generator is a CPU one), staged in this ring image's own pinned buffer
            staging = self._staging[ring_pos]
            for j in range(draws):
                torch.randn(target.shape[1:], generator=g, dtype=self.dtype, out=staging[j])
            target[:draws].copy_(staging[:draws], non_blocking=True)

    def _step(self) -> torch.Tensor:
        """Advance every image in flight by one step; returns the clean latent of the finished one [1,C,h,w]."""
        T, R = self.steps, self.rows
        C, h, w = self._lat
        sched, b = self.sched, self.buffers
        p = self._frame % T
        self._frame += 1
        self._draw_noise(p)
        self._x[p] = self._noise[p, 0] * sched.init_noise_sigma
        if self._residual is not None:  # self: the initial noise (initialize: replaced by its negative pass)
            self._residual[p] = step.initial_residual(self._noise[p, 0], sched)

        pos = self._pos[p]
        x = self._x.index_select(0, pos)  # [T, C, h, w]: latent at each step
        noise_flat = self._noise.view(T * T, C, h, w)
        cur = noise_flat.index_select(0, self._cur_noise[p])  # the noise each step's image carries now
        steps = self._steps
        x_rows = x.index_select(0, self._step_of_row)  # [R, C, h, w]
        w_rows = b["weights"].view(R, 1, h, w)
        if self.options.bootstrap_steps:
            fill = step.bootstrap_fill(x, self._white, cur, steps, sched, self._white_share)
            fill_rows = fill.index_select(0, self._step_of_row)
            inp = torch.where(b["fill_on"], step.masked_input(x_rows, w_rows, fill_rows), x_rows)
        else:
            inp = x_rows
        n = n_rows = None
        if self._residual is not None:
            n = self._residual.index_select(0, pos)  # [T, C, h, w]: each step's image's noise part
            n_rows = n.index_select(0, self._step_of_row)
        if self._centred:
            inp, n_rows = (None if t is None else self._gather_rows(t, b["roll"]) for t in (inp, n_rows))

        d, d_n = self._denoise_live_rows(inp, n_rows)
        if self._centred:
            d, d_n = (None if t is None else self._gather_rows(t, b["unroll"]) for t in (d, d_n))

        den = b["weights"].sum(1)  # [T, 1, h, w]
        num, known_den = step.add_known(self._sum_rows(w_rows * d), den, b["known_weight"], b["known_latent"], cur,
                                        steps, sched)  # fmt: skip
        averaged = M.normalize(num, known_den, x)
        z = noise_flat.index_select(0, self._next_noise[p]) if sched.stochastic and T > 1 else None
        if d_n is not None:  # the residual's step, averaged as the latent's (a known layer: its noise part)
            num_n = step.add_known_residual(self._sum_rows(w_rows * d_n), b["known_weight"], cur, steps, sched)
            averaged_n = M.normalize(num_n, known_den, n)
            if T > 1:
                self._residual.index_copy_(0, pos[:-1], S.renoise(averaged_n[:-1], z, steps[:-1], sched))

        if T > 1:  # steps 0..T-2 move one level down with their own next noise, in place in the ring
            self._x.index_copy_(0, pos[:-1], S.renoise(averaged[:-1], z, steps[:-1], sched))
        return S.renoise(averaged[-1:], None, T - 1, sched)

    def _gather_rows(self, rows: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Each row's pixels permuted by its gather index (centring shifts and their inverses)."""
        R, C, h, w = rows.shape
        return rows.view(R, C, h * w).gather(2, index[:, None, :].expand(R, C, h * w)).view(R, C, h, w)

    def _sum_rows(self, weighted: torch.Tensor) -> torch.Tensor:
        """[R, C, h, w] step-major rows -> [T, C, h, w]: each step's rows summed, in slot order (as generate()
        adds its items one by one)."""
        T, L = self.steps, self.layers
        per_step = weighted.view(T, L, *weighted.shape[1:])
        total = per_step[:, 0].clone()
        for i in range(1, L):
            total += per_step[:, i]
        return total

    def _denoise_live_rows(self, inp: torch.Tensor, n: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """D of every row (and of its residual, RCFG). A row without weight at its step cannot change the
        frame (its D is multiplied by 0), so when the denoiser takes any batch only the live rows run and
        the others get D = 0."""
        rows, sched, g = self._live_rows, self.sched, self.guidance_scale
        if rows is None:
            self.rows_computed += self.rows + len(self._negative_rows)
            return step.denoise(self._predict, inp, self._step_of_row, sched, self._t_rows, self._conditioning, g,
                                negative_rows=self._negative_rows, residual=n)  # fmt: skip
        d = torch.zeros_like(inp)
        d_n = None if n is None else torch.zeros_like(n)
        if len(rows):
            self.rows_computed += len(rows) + len(self._live_negative)
            live, live_n = step.denoise(
                self._predict, inp.index_select(0, rows), self._step_of_row.index_select(0, rows), sched,
                self._t_rows.index_select(0, rows), self._live_conditioning, g, negative_rows=self._live_negative,
                residual=None if n is None else n.index_select(0, rows),
            )  # fmt: skip
            d.index_copy_(0, rows, live)
            if d_n is not None:
                d_n.index_copy_(0, rows, live_n)
        return d, d_n

    def _predict(self, model_in: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        return self._timed("denoiser", self.networks.denoise, model_in, t, cond)

    def _decode(self, latent: torch.Tensor) -> np.ndarray:
        pixels = self._timed("decoder", self.networks.decode, latent).to(self.device).float()
        if self._inpaint:
            pixels = M.paste(pixels, self.buffers["background_pixels"].float(), self.buffers["paste"].float())
        return to_output(pixels, "np")  # the one host synchronisation of a frame

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

    def _engine_device(self) -> torch.device:
        runner = self.engines.denoiser  # type: ignore[union-attr]
        return torch.device(getattr(runner, "device", "cpu"))

    def __repr__(self) -> str:
        return (f"Stream({self.networks.backend}, {self.height}x{self.width}, layers={self.layers}, "
                f"steps={self.steps}, cfg={self.cfg!r}, brushes={sorted(self._state.brushes)})")  # fmt: skip


def _check_text_encoder_pairing(model: Model, engines: EngineSet) -> None:
    """Warn when the text encoder is not the one the engine set was built with (same name, other weights)."""
    req = engines.manifest.request
    if req.text_encoder_weights and weights_fingerprint(*model.prompts.modules()) != req.text_encoder_weights:
        log.warning(
            "the text encoder of %s differs from the one %s was built with (a retrained or updated model, or "
            "one loaded in bfloat16); if images look wrong, rebuild it with: %s",
            model.name, engines.path, engines.manifest.rebuild_line(engines.path),
        )  # fmt: skip
