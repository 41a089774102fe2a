"""Where each denoiser row of a stream sits: L prompt rows × T steps, and the ring of T images in flight.

A stream runs R = L·T rows per step, step-major: row r = k·L + i is slot i at step k. The image that
entered at call f sits at ring position f mod T for its whole life (no latent is ever moved), so per call
the phase p = f mod T picks which ring position is at which step. Everything here is an index table built
once from (T, L, the schedule, the guidance mode); frames only read it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import sampling as S
from .step import Guidance, SamplingOptions


@dataclass(frozen=True)
class RowLayout:
    """The constant index tables of a stream of ``steps`` (T) × ``layers`` (L) rows."""

    steps: int  # T
    layers: int  # L
    latent: tuple[int, int, int]  # (C, h, w)
    step_of_row: torch.Tensor  # [R] step k of each row
    ring: torch.Tensor  # [T] 0..T-1: the step index of each of the T images (steps-order views)
    position: torch.Tensor  # [T(phase), T(step)] ring position of the image at step k when the phase is p
    current_noise: torch.Tensor  # [T(phase), T(step)] flat index into the [T·T] noise draws: what step k carries
    next_noise: torch.Tensor | None  # [T(phase), T-1] the draw each step's image is re-noised with (T > 1)
    white_share: torch.Tensor  # [T, 1, 1, 1] r_k of the bootstrap fill
    timestep_of_row: torch.Tensor  # [R] the denoiser timestep of each row
    negative_rows: torch.Tensor  # rows with a real negative pass (full: all; initialize: those of step 0)

    @property
    def rows(self) -> int:
        """R = L·T prompt rows."""
        return self.steps * self.layers

    @property
    def batch_rows(self) -> int:
        """Denoiser rows per call when every row runs: R, plus the rows with a negative pass."""
        return self.rows + len(self.negative_rows)

    @staticmethod
    def build(sched: S.SamplerSchedule, layers: int, latent: tuple[int, int, int], guidance: Guidance,
              options: SamplingOptions, device: torch.device, dtype: torch.dtype) -> RowLayout:  # fmt: skip
        T, L = sched.steps, layers
        ring = torch.arange(T)
        step_of_row = torch.arange(L * T) // L
        position = (ring[:, None] - ring[None, :]) % T
        draw = ring if sched.stochastic else torch.zeros(T, dtype=torch.long)  # the noise draw of step k
        negative = torch.tensor([guidance.negative_at(int(k), T) for k in step_of_row], dtype=torch.bool)
        step_rows = step_of_row.to(sched.timesteps.device)
        return RowLayout(
            steps=T, layers=L, latent=latent, step_of_row=step_of_row.to(device), ring=ring.to(device),
            position=position.to(device), current_noise=(position * T + draw[None, :]).to(device),
            next_noise=(position[:, :-1] * T + draw[1:][None, :]).to(device) if T > 1 else None,
            white_share=torch.tensor([options.white_share(k) for k in range(T)]).to(device, dtype).view(T, 1, 1, 1),
            timestep_of_row=sched.timesteps[step_rows].to(device),
            negative_rows=torch.nonzero(negative).flatten().to(device),
        )  # fmt: skip

    def sum_rows(self, weighted: torch.Tensor) -> torch.Tensor:
        """[R, C, h, w] step-major rows -> [T, C, h, w]: each step's rows summed, in slot order (as
        generate() adds its items one by one)."""
        per_step = weighted.view(self.steps, self.layers, *weighted.shape[1:])
        total = per_step[:, 0].clone()
        for i in range(1, self.layers):
            total += per_step[:, i]
        return total


def gather_rows(rows: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Each row's pixels permuted by its gather index [R, h·w] (centring shifts and their inverses)."""
    R, C, h, w = rows.shape
    return rows.view(R, C, h * w).gather(2, index[:, None, :].expand(R, C, h * w)).view(R, C, h, w)
