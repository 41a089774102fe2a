"""Conditioning: the named tensors a denoiser is conditioned on, handled as one value.

Every family's denoiser takes its text conditioning under names (``encoder_hidden_states`` for all;
SDXL adds ``text_embeds`` and ``time_ids``, SD3 ``pooled_projections``). Prompt strength lerps all of
them, batching concatenates all of them, device moves move all of them: the algorithm never looks at a
name, so a family with other inputs needs no change here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch

# The token-embedding input every family has (SD1.5, SDXL and SD3 all call it this).
TOKEN_EMBEDDINGS = "encoder_hidden_states"


@dataclass(frozen=True, eq=False)
class Conditioning(Mapping[str, torch.Tensor]):
    """Named conditioning tensors of one batch, each [B, ...] with the same B."""

    tensors: Mapping[str, torch.Tensor]

    def __post_init__(self) -> None:
        sizes = {name: int(t.shape[0]) for name, t in self.tensors.items()}
        if not sizes or len(set(sizes.values())) != 1:
            raise ValueError(f"conditioning tensors need one shared batch size, got {sizes}")

    @staticmethod
    def of(**tensors: torch.Tensor) -> Conditioning:
        return Conditioning(dict(tensors))

    # Mapping: cond["time_ids"], iteration over names, len
    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)

    @property
    def embeds(self) -> torch.Tensor:
        """The token embeddings [B, N, D] (``encoder_hidden_states``)."""
        return self.tensors[TOKEN_EMBEDDINGS]

    @property
    def batch(self) -> int:
        return int(next(iter(self.tensors.values())).shape[0])

    def lerp(self, other: Conditioning, weight: float) -> Conditioning:
        """self → other by ``weight`` over every tensor (prompt strength: lerp(background, brush, s)); exact
        at 0 and 1."""
        return Conditioning({n: torch.lerp(t, other[n], weight) for n, t in self.tensors.items()})

    @staticmethod
    def cat(items: list[Conditioning]) -> Conditioning:
        """One batch from many, name by name (all items must carry the same names)."""
        return Conditioning({n: torch.cat([c[n] for c in items]) for n in items[0]})

    def replace(self, **tensors: torch.Tensor) -> Conditioning:
        """The same conditioning with some tensors added or replaced (e.g. per-tile size conditioning)."""
        return Conditioning({**self.tensors, **tensors})

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Conditioning:
        return Conditioning({n: t.to(device=device, dtype=dtype) for n, t in self.tensors.items()})
