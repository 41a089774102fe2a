"""Model families, one description module each (see :mod:`semdraw.families.spec` for the contract)."""

from __future__ import annotations

from ..errors import UnsupportedFamilyError
from .sd3 import SD3
from .sd15 import SD15
from .sdxl import SDXL
from .spec import FamilySpec, InputSpec, Preset, SamplingDefaults, TileGeometry

FAMILIES: dict[str, FamilySpec] = {f.name: f for f in (SD15, SDXL, SD3)}
# Families whose sampler math exists but whose description module does not yet: named, so the error says so.
RESERVED: tuple[str, ...] = ()


def get_family(name: str | FamilySpec) -> FamilySpec:
    """The family called ``name``; a clear error for unknown or not-yet-supported families."""
    if isinstance(name, FamilySpec):
        return name
    key = str(name).lower()
    if key in RESERVED:
        raise UnsupportedFamilyError(
            f"the {key!r} family is reserved but not supported yet; supported families: {sorted(FAMILIES)}"
        )
    family = FAMILIES.get(key)
    if family is None:
        raise UnsupportedFamilyError(f"unknown model family {name!r}; known families: {sorted(FAMILIES)}")
    return family


__all__ = ["FAMILIES", "RESERVED", "FamilySpec", "InputSpec", "Preset", "SamplingDefaults", "TileGeometry",
           "get_family"]  # fmt: skip
