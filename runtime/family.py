"""Model families: what differs between SD1.5, SDXL and SD3, described as data.

The algorithm (masks, sampler math, aggregation) never branches on the family; it only sees a
:class:`Conditioning` to lerp and batch, and a denoiser call. Adding SDXL or SD3 means adding a
``Family`` entry and a conditioner (prompt encoding + denoiser keyword arguments), nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .errors import UnsupportedFamilyError


@dataclass(frozen=True)
class Family:
    """What the runtime must know about a model family."""

    name: str
    latent_channels: int
    native_size: int  # default canvas side in pixels
    default_sampler: str  # key of semdraw.sampling.SAMPLERS
    default_steps: int
    default_guidance: float  # few-step models run at 1 (no negative pass)
    text_encoders: int  # how many CLIP-style text encoders the prompt goes through
    pooled: bool  # whether the denoiser also takes a pooled text embedding
    supported: bool = True


FAMILIES: dict[str, Family] = {
    "sd15": Family("sd15", latent_channels=4, native_size=512, default_sampler="lcm", default_steps=4,
                   default_guidance=1.0, text_encoders=1, pooled=False),
    # Reserved: their sampler math exists (Euler trailing, flow Euler); encoders and exports come later.
    "sdxl": Family("sdxl", latent_channels=4, native_size=1024, default_sampler="euler", default_steps=4,
                   default_guidance=1.0, text_encoders=2, pooled=True, supported=False),
    "sd3": Family("sd3", latent_channels=16, native_size=1024, default_sampler="flow", default_steps=4,
                  default_guidance=1.0, text_encoders=3, pooled=True, supported=False),
}  # fmt: skip


def get_family(name: str | Family) -> Family:
    """The family called ``name``; a clear error for unknown or not-yet-supported families."""
    if isinstance(name, Family):
        return name
    family = FAMILIES.get(str(name).lower())
    if family is None:
        raise UnsupportedFamilyError(f"unknown model family {name!r}; known families: {sorted(FAMILIES)}")
    if not family.supported:
        raise UnsupportedFamilyError(
            f"the {family.name!r} family is reserved but not supported yet; use an SD1.5-family model ('sd15')"
        )
    return family


@dataclass(frozen=True)
class Conditioning:
    """Text conditioning for a batch: token embeddings [B, N, D] and, for SDXL/SD3, pooled [B, P]."""

    embeds: torch.Tensor
    pooled: torch.Tensor | None = None

    @property
    def batch(self) -> int:
        return int(self.embeds.shape[0])

    def lerp(self, other: Conditioning, weight: float) -> Conditioning:
        """self → other by ``weight`` (prompt strength: lerp(background, brush, s)); exact at 0 and 1."""
        pooled = None if self.pooled is None else torch.lerp(self.pooled, other.pooled, weight)
        return Conditioning(torch.lerp(self.embeds, other.embeds, weight), pooled)

    @staticmethod
    def cat(items: list[Conditioning]) -> Conditioning:
        pooled = None if items[0].pooled is None else torch.cat([c.pooled for c in items])
        return Conditioning(torch.cat([c.embeds for c in items]), pooled)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Conditioning:
        pooled = None if self.pooled is None else self.pooled.to(device=device, dtype=dtype)
        return replace(self, embeds=self.embeds.to(device=device, dtype=dtype), pooled=pooled)
