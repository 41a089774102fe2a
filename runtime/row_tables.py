"""What a painter's composition means row by row: compiled on the host, handed to the device.

:class:`RowCompiler` turns the brushes and background a painter has now into :class:`RowTables` (per-row
quantized masks, bootstrap flags, centring gathers, conditioning, which rows are live) on the caller's
thread, so an edit costs the frame thread only a copy. :class:`DeviceTables` holds those tables in device
buffers allocated once and picks the rows that run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from . import masks as M
from .conditioning import Conditioning
from .families import FamilySpec, TileGeometry
from .layer_prompts import background_prompt, brush_prompts
from .request import Background, Brush
from .row_layout import RowLayout
from .step import Guidance, SamplingOptions


@dataclass
class Painted:
    """What a painter has painted: brush slots and the background (with its encoded image, if any)."""

    brushes: dict[int, Brush] = field(default_factory=dict)
    background: Background = field(default_factory=Background)
    background_latent: torch.Tensor | None = None  # encoded background image (None: white or prompt)
    background_pixels: torch.Tensor | None = None

    @property
    def prompt_row(self) -> bool:
        """A background prompt takes a row (a full-canvas layer beneath the brushes)."""
        return has_prompt_row(self.background)


def has_prompt_row(background: Background) -> bool:
    return background.image is None and bool(background.prompt)


@dataclass
class RowTables:
    """Everything a frame reads that edits change; R = L·T rows, step-major (host tensors)."""

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

    BUFFERS = ("weights", "known_weight", "known_latent", "fill_on", "roll", "unroll", "paste", "background_pixels")


@dataclass(frozen=True)
class RowCompiler:
    """Compiles a :class:`Painted` composition into :class:`RowTables` for one row layout."""

    layout: RowLayout
    options: SamplingOptions
    guidance: Guidance
    family: FamilySpec
    prompts: Any  # a PromptEncoder: text -> Conditioning (cached)
    noise_levels: torch.Tensor  # [T] the schedule's noise level per step (mask quantization)
    canvas: tuple[int, int]  # (H, W)
    white: torch.Tensor  # [1, C, h, w] the white canvas latent

    def compile(self, painted: Painted) -> RowTables:
        lay, opts = self.layout, self.options
        T, L, R = lay.steps, lay.layers, lay.rows
        _, h, w = lay.latent
        H, W = self.canvas
        slots = sorted(painted.brushes)
        brushes = [painted.brushes[i] for i in slots]
        prepared = M.prepare_masks(brushes, self.noise_levels, H, W, H // h, mask_type=opts.mask_type,
                                   cover_alpha=opts.cover_alpha)  # fmt: skip
        weights = torch.zeros(T, L, 1, h, w)
        fill_on = torch.zeros(T, L, 1, 1, 1, dtype=torch.bool)
        base = torch.arange(h * w).view(h, w)
        roll = base.flatten().repeat(R, 1).view(T, L, h * w)
        unroll = roll.clone()
        bg, encode = painted.background, self.prompts
        cfg = self.guidance.negative_steps != 0  # some step runs a real negative pass
        cond, uncond = [encode(bg.prompt)] * L, [encode("")] * L  # an empty slot (its weight is 0 anyway)
        layers = brush_prompts(brushes, bg, encode, cfg)
        for j, slot in enumerate(slots):
            weights[:, slot] = prepared.quantized[j]
            fill_on[: opts.bootstrap_steps, slot] = True
            dy, dx = M.centring_shift(prepared.soft_latent[j])
            if dy or dx:
                roll[: opts.centre_steps, slot] = M.shift(base, dy, dx).flatten()
                unroll[: opts.centre_steps, slot] = M.shift(base, -dy, -dx).flatten()
            cond[slot] = layers[j].cond
            if cfg:
                uncond[slot] = layers[j].uncond
        known_weight = prepared.background.clone()
        background_layer = background_prompt(bg, encode, cfg)
        if background_layer is not None:  # the background prompt's row: the highest free slot
            free = max(set(range(L)) - set(slots))
            weights[:, free] = prepared.background
            cond[free] = background_layer.cond
            if cfg:
                uncond[free] = background_layer.uncond
            known_weight.zero_()
        known = painted.background_latent if painted.background_latent is not None else self.white
        batch = self._step_major(cond)
        if cfg:  # [negative conditioning of the rows with a negative pass; every row's positive conditioning]
            negatives, negative_rows = self._step_major(uncond), lay.negative_rows.cpu()
            batch = Conditioning.cat([Conditioning({n: t.index_select(0, negative_rows) for n, t in negatives.items()}),
                                      batch])  # fmt: skip
        return RowTables(
            weights=weights, known_weight=known_weight, known_latent=known.detach().to("cpu"),
            fill_on=fill_on.view(R, 1, 1, 1), roll=roll.view(R, h * w), unroll=unroll.view(R, h * w),
            conditioning=dict(batch), live_rows=torch.nonzero(weights.flatten(2).amax(-1).flatten() > 0).flatten(),
            paste=None if painted.background_pixels is None else M.coverage(prepared.soft_pixels),
            background_pixels=None if painted.background_pixels is None else painted.background_pixels.cpu(),
            centred=bool((roll != base.flatten()).any()),
        )  # fmt: skip

    def _step_major(self, per_slot: list[Conditioning]) -> Conditioning:
        """Row k·L + i: slot i's conditioning at step k."""
        H, W = self.canvas
        canvas = TileGeometry(H, W, 0, 0, H, W)
        return Conditioning.cat([self.family.conditioning_for(c, canvas).to("cpu") for c in per_slot] * self.layout.steps)


class DeviceTables:
    """The current :class:`RowTables` in device buffers (allocated on first use, then reused), and the rows
    that run: every row, or only the live ones when the denoiser takes any batch (``live_only``)."""

    def __init__(self, layout: RowLayout, device: torch.device, dtype: torch.dtype, *, live_only: bool) -> None:
        self.layout, self.device, self.dtype, self.live_only = layout, device, dtype, live_only
        self.buffers: dict[str, torch.Tensor] = {}
        self.conditioning: Conditioning | None = None
        self.inpaint = self.centred = False
        self.live_rows: torch.Tensor | None = None  # rows that run (None: all)
        self.live_negative: torch.Tensor | None = None  # positions among the live rows with a negative pass
        self.live_conditioning: Conditioning | None = None

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.buffers[name]

    def load(self, tables: RowTables) -> None:
        """Copy freshly compiled tables into the device buffers (same storage every time)."""
        named = {name: getattr(tables, name) for name in RowTables.BUFFERS}
        named.update({f"cond.{n}": t for n, t in tables.conditioning.items()})  # one buffer per name
        for name, src in named.items():
            if src is None:
                continue
            src = src.to(self.dtype) if src.is_floating_point() else src
            buf = self.buffers.get(name)
            if buf is None or buf.shape != src.shape:
                buf = self.buffers[name] = torch.empty(src.shape, dtype=src.dtype, device=self.device)
            buf.copy_(src, non_blocking=True)
        self.inpaint, self.centred = tables.paste is not None, tables.centred
        self.conditioning = Conditioning({n: self.buffers[f"cond.{n}"] for n in tables.conditioning})
        self.live_rows = self.live_conditioning = self.live_negative = None
        if self.live_only and len(tables.live_rows) < self.layout.rows:
            rows = tables.live_rows.to(self.device)
            negative_rows = self.layout.negative_rows
            # the negative rows are a prefix of the row order, so row r's negative conditioning is at r
            neg = torch.nonzero(torch.isin(rows, negative_rows)).flatten()  # positions among the live rows
            index = torch.cat([rows.index_select(0, neg), rows + len(negative_rows)])  # [their negatives; live positives]
            self.live_rows, self.live_negative = rows, neg
            self.live_conditioning = Conditioning({n: t.index_select(0, index) for n, t in self.conditioning.items()})
