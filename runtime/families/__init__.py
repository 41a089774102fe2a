"""Model families, one description module each (see :mod:`semdraw.families.spec` for the contract)."""

from __future__ import annotations

from ..errors import UnsupportedFamilyError
from .sd3 import SD3
from .sd15 import SD15
from .sdxl import SDXL
from .spec import FamilySpec, InputSpec, Preset, SamplingDefaults, TileGeometry

FAMILIES: dict[str, FamilySpec] = {f.name: f for f in (SD15, SDXL, SD3)}


def get_family(name: str | FamilySpec) -> FamilySpec:
    """The family called ``name``; a clear error for unknown or not-yet-supported families."""
    if isinstance(name, FamilySpec):
        return name
    family = FAMILIES.get(str(name).lower())
    if family is None:
        raise UnsupportedFamilyError(f"unknown model family {name!r}; known families: {sorted(FAMILIES)}")
    return family


__all__ = ["FAMILIES", "FamilySpec", "InputSpec", "Preset", "SamplingDefaults", "TileGeometry",
           "get_family"]  # fmt: skip
