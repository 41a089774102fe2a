"""Overlapping tiles of a latent canvas, weighted by ramps across their seams (panoramas, wide canvases)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Tile:
    """A window of the latent canvas (latent pixels) with its seam-ramp weight [h, w]."""

    y: int
    x: int
    h: int
    w: int
    ramp: torch.Tensor

    def crop(self, t: torch.Tensor) -> torch.Tensor:
        return t[..., self.y : self.y + self.h, self.x : self.x + self.w]


def _axis_positions(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    stride = tile - overlap
    pos = list(range(0, size - tile, stride))
    return pos + [size - tile]


def _ramp(n: int, length: int, start_seam: bool, end_seam: bool) -> torch.Tensor:
    """1-D weights: linear ramps of ``length`` on sides facing a neighbour tile, 1 elsewhere (never 0)."""
    w = torch.ones(n, dtype=torch.float64)
    r = torch.arange(1, length + 1, dtype=torch.float64) / (length + 1)
    if start_seam and length:
        w[:length] = torch.minimum(w[:length], r)
    if end_seam and length:
        w[-length:] = torch.minimum(w[-length:], r.flip(0))
    return w


def plan_tiles(h: int, w: int, tile_h: int, tile_w: int, overlap: int) -> list[Tile]:
    """Overlapping tiles covering an h x w latent, weights ramping across the seams."""
    ys, xs = _axis_positions(h, tile_h, overlap), _axis_positions(w, tile_w, overlap)
    th, tw = min(tile_h, h), min(tile_w, w)
    tiles = []
    for y in ys:
        for x in xs:
            ry = _ramp(th, overlap, y > 0, y + th < h)
            rx = _ramp(tw, overlap, x > 0, x + tw < w)
            tiles.append(Tile(y, x, th, tw, (ry[:, None] * rx[None, :]).float()))
    return tiles


def uncrop_add(acc: torch.Tensor, tile: Tile, value: torch.Tensor) -> None:
    acc[..., tile.y : tile.y + tile.h, tile.x : tile.x + tile.w] += value
