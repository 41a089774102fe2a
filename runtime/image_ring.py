"""The T images a stream has in flight, and one stream step in two phases.

Phase 1 (:meth:`ImageRing.prepare`) lets a fresh image enter, builds every row's input (bootstrap fill,
centring) and returns the denoiser batch of the rows that run, as named inputs; phase 2
(:meth:`ImageRing.complete`) takes the prediction for exactly those rows, guides, aggregates under the
quantized masks, re-noises in place and returns the clean latent of the image that finished. Between the
two, a caller may run the batches of many rings in one denoiser call (:class:`semdraw.StreamHost`). The
formulas are step.py's; this module only keeps the books.

Image n after a flush is made from seed ``seed + n·seed_step`` with exactly the noise draws ``generate()``
makes (initial latent, then one draw per re-noising).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch

from . import masks as M
from . import sampling as S
from . import step
from .limits import check_seed
from .networks import DenoiserBatch
from .row_layout import RowLayout, gather_rows
from .row_tables import DeviceTables


@dataclass
class StepInFlight:
    """A step between its two phases: the batch that went to the denoiser and what phase 2 needs."""

    batch: DenoiserBatch
    phase: int  # p = ring phase of this step
    x: torch.Tensor  # [T, C, h, w] latent at each step
    inputs: torch.Tensor  # [R, C, h, w] each row's input (after fill and centring)
    residual: torch.Tensor | None  # [T, C, h, w] the noise part of each step's image (RCFG)
    residual_rows: torch.Tensor | None  # [R, C, h, w] the same per row (centred like the inputs)
    current_noise: torch.Tensor  # [T, C, h, w] the noise each step's image carries now

    @property
    def rows(self) -> int:
        return self.batch.rows


class ImageRing:
    """Latents, noise draws and (RCFG) residual noise of the T images in flight; buffers allocated once."""

    def __init__(self, layout: RowLayout, sched: S.SamplerSchedule, white: torch.Tensor, *, guidance_scale: float,
                 residual: bool, bootstrap: bool, seed: int, seed_step: int, device: torch.device,
                 dtype: torch.dtype) -> None:  # fmt: skip
        T, (C, h, w) = layout.steps, layout.latent
        self.layout, self.sched, self.white, self.guidance_scale = layout, sched, white, guidance_scale
        self.device, self.dtype, self.bootstrap = device, dtype, bootstrap  # bootstrap: some step has the fill
        self.x = torch.zeros(T, C, h, w, device=device, dtype=dtype)
        # RCFG: the noise part n = level_z·ε̄ of each image in flight (step.py)
        self.residual = torch.zeros(T, C, h, w, device=device, dtype=dtype) if residual else None
        self.noise = torch.zeros(T, T, C, h, w, device=device, dtype=dtype)  # per ring image: its T noise draws
        # Host staging of the noise draws, one per ring image: a flush runs T - 1 steps without a sync, and a
        # non-blocking copy from a buffer the next step overwrote would deliver the next image's noise.
        self.staging = torch.zeros(T, T, C, h, w, dtype=dtype, pin_memory=device.type == "cuda")
        self._generator = torch.Generator("cpu")
        self._seed_lock = threading.Lock()
        self.seed, self.seed_step = check_seed(seed), check_seed(seed_step, "seed_step")
        self.entered = 0  # images entered since the last restart / seed change: image n uses seed + n·seed_step
        self.calls = 0  # steps since the last restart: the ring phase is calls mod T

    def set_seed(self, seed: int) -> None:
        with self._seed_lock:
            self.seed, self.entered = check_seed(seed), 0

    def restart(self) -> None:
        """The next image to enter is image 0 of the seed, at phase 0."""
        with self._seed_lock:
            self.entered = 0
        self.calls = 0

    def _draw_noise(self, ring_pos: int) -> None:
        """The noises of the image entering now, drawn in generate()'s order from its own seed."""
        with self._seed_lock:
            seed = self.seed + self.entered * self.seed_step
            self.entered += 1
        g = self._generator.manual_seed(seed)
        draws = self.layout.steps if self.sched.stochastic else 1
        target = self.noise[ring_pos]
        if self.device.type == "cpu":
            for j in range(draws):
                torch.randn(target.shape[1:], generator=g, dtype=self.dtype, out=target[j])
        else:  # drawn on the host (the generator is a CPU one), staged in this ring image's own pinned buffer
            staging = self.staging[ring_pos]
            for j in range(draws):
                torch.randn(target.shape[1:], generator=g, dtype=self.dtype, out=staging[j])
            target[:draws].copy_(staging[:draws], non_blocking=True)

    # ------------------------------------------------------------------ phase 1
    def prepare(self, tables: DeviceTables) -> StepInFlight:
        """A fresh image enters; every row's input is built; the batch of the rows that run is returned."""
        lay, sched = self.layout, self.sched
        T, R, (C, h, w) = lay.steps, lay.rows, lay.latent
        p = self.calls % T
        self.calls += 1
        self._draw_noise(p)
        self.x[p] = self.noise[p, 0] * sched.init_noise_sigma
        if self.residual is not None:  # self: the initial noise (initialize: replaced by its negative pass)
            self.residual[p] = step.initial_residual(self.noise[p, 0], sched)
        pos = lay.position[p]
        x = self.x.index_select(0, pos)  # [T, C, h, w]: latent at each step
        cur = self.noise.view(T * T, C, h, w).index_select(0, lay.current_noise[p])
        x_rows = x.index_select(0, lay.step_of_row)  # [R, C, h, w]
        inputs = x_rows
        if self.bootstrap:
            fill = step.bootstrap_fill(x, self.white, cur, lay.ring, sched, lay.white_share)
            fill_rows = fill.index_select(0, lay.step_of_row)
            w_rows = tables["weights"].view(R, 1, h, w)
            inputs = torch.where(tables["fill_on"], step.masked_input(x_rows, w_rows, fill_rows), x_rows)
        n = n_rows = None
        if self.residual is not None:
            n = self.residual.index_select(0, pos)
            n_rows = n.index_select(0, lay.step_of_row)
        if tables.centred:
            inputs = gather_rows(inputs, tables["roll"])
            n_rows = None if n_rows is None else gather_rows(n_rows, tables["roll"])
        return StepInFlight(self._batch(tables, inputs), p, x, inputs, n, n_rows, cur)

    def _batch(self, tables: DeviceTables, inputs: torch.Tensor) -> DenoiserBatch:
        lay, rows = self.layout, tables.live_rows
        if rows is None:
            sample, t = step.denoiser_inputs(inputs, lay.step_of_row, self.sched, lay.timestep_of_row,
                                             lay.negative_rows)  # fmt: skip
            return DenoiserBatch(sample, t, tables.conditioning)
        sample, t = step.denoiser_inputs(inputs.index_select(0, rows), lay.step_of_row.index_select(0, rows),
                                         self.sched, lay.timestep_of_row.index_select(0, rows),
                                         tables.live_negative)  # fmt: skip
        return DenoiserBatch(sample, t, tables.live_conditioning)

    # ------------------------------------------------------------------ phase 2
    def complete(self, flight: StepInFlight, prediction: torch.Tensor, tables: DeviceTables) -> torch.Tensor:
        """The step's second half from the denoiser's prediction for ``flight.batch``: aggregate, re-noise
        the images still in flight in place; returns the clean latent of the finished image [1, C, h, w]."""
        lay, sched = self.layout, self.sched
        T, R, (C, h, w) = lay.steps, lay.rows, lay.latent
        d, d_n = self._outputs(flight, prediction, tables)
        if tables.centred:
            d = gather_rows(d, tables["unroll"])
            d_n = None if d_n is None else gather_rows(d_n, tables["unroll"])
        w_rows, steps, cur = tables["weights"].view(R, 1, h, w), lay.ring, flight.current_noise
        den = tables["weights"].sum(1)  # [T, 1, h, w]
        num, known_den = step.add_known(lay.sum_rows(w_rows * d), den, tables["known_weight"], tables["known_latent"],
                                        cur, steps, sched)  # fmt: skip
        averaged = M.normalize(num, known_den, flight.x)
        pos = lay.position[flight.phase]
        z = None
        if sched.stochastic and T > 1:
            z = self.noise.view(T * T, C, h, w).index_select(0, lay.next_noise[flight.phase])  # type: ignore[index]
        if d_n is not None:  # the residual's step, averaged as the latent's (a known layer: its noise part)
            num_n = step.add_known_residual(lay.sum_rows(w_rows * d_n), tables["known_weight"], cur, steps, sched)
            averaged_n = M.normalize(num_n, known_den, flight.residual)
            if T > 1:
                self.residual.index_copy_(0, pos[:-1], S.renoise(averaged_n[:-1], z, steps[:-1], sched))  # type: ignore[union-attr]
        if T > 1:  # steps 0..T-2 move one level down with their own next noise, in place in the ring
            self.x.index_copy_(0, pos[:-1], S.renoise(averaged[:-1], z, steps[:-1], sched))
        return S.renoise(averaged[-1:], None, T - 1, sched)

    def _outputs(self, flight: StepInFlight, prediction: torch.Tensor,
                 tables: DeviceTables) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
        """D of every row (and of its residual). A row without weight at its step cannot change the frame (its
        D is multiplied by 0): the rows that did not run get D = 0."""
        lay, rows, g = self.layout, tables.live_rows, self.guidance_scale
        inputs, n_rows = flight.inputs, flight.residual_rows
        if rows is None:
            return step.denoiser_outputs(prediction, inputs, lay.step_of_row, self.sched, g,
                                         negative_rows=lay.negative_rows, residual=n_rows)  # fmt: skip
        d = torch.zeros_like(inputs)
        d_n = None if n_rows is None else torch.zeros_like(n_rows)
        if len(rows):
            live, live_n = step.denoiser_outputs(
                prediction, inputs.index_select(0, rows), lay.step_of_row.index_select(0, rows), self.sched, g,
                negative_rows=tables.live_negative, residual=None if n_rows is None else n_rows.index_select(0, rows),
            )  # fmt: skip
            d.index_copy_(0, rows, live)
            if d_n is not None:
                d_n.index_copy_(0, rows, live_n)
        return d, d_n
