"""A painter's edits as values: what a window, a page or a script sends instead of mutating state.

Each edit is a frozen dataclass of the request contract (api.py) and :func:`apply` is a pure function
``Composition × Edit → Composition``, checked like any composition, so the same edit means the same thing
in the library, in a palette file's history and on the wire. Edits travel as ``{"edit": kind, ...}``
through api.py's one generic serialiser (:func:`edit_to_dict`, :func:`edit_from_dict`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .api import BackgroundSpec, BrushSpec, Composition, ContractError, from_dict, to_dict


@dataclass(frozen=True)
class SetBrush:
    """Add a brush, or replace the one of the same name (keeping its place in the paint order)."""

    brush: BrushSpec


@dataclass(frozen=True)
class SetMask:
    """Change only a brush's mask: the fast path of painting (no prompt changes, no text encoding)."""

    name: str
    mask: np.ndarray = field(compare=False, repr=False)


@dataclass(frozen=True)
class RemoveBrush:
    name: str


@dataclass(frozen=True)
class MoveBrush:
    """Move a brush to ``index`` in the paint order (later brushes paint over earlier ones)."""

    name: str
    index: int


@dataclass(frozen=True)
class SetBackground:
    background: BackgroundSpec


@dataclass(frozen=True)
class SetSeed:
    seed: int


Edit = SetBrush | SetMask | RemoveBrush | MoveBrush | SetBackground | SetSeed
EDIT_KINDS: dict[str, type] = {"set_brush": SetBrush, "set_mask": SetMask, "remove_brush": RemoveBrush,
                               "move_brush": MoveBrush, "set_background": SetBackground, "set_seed": SetSeed}  # fmt: skip
_KIND_OF = {cls: kind for kind, cls in EDIT_KINDS.items()}


def _index(composition: Composition, name: str) -> int:
    for i, b in enumerate(composition.brushes):
        if b.name == name:
            return i
    raise ContractError(f"no brush named {name!r} (brushes: {[b.name for b in composition.brushes]})")


def apply(composition: Composition, edit: Edit) -> Composition:
    """The composition after ``edit`` (a new value; ``composition`` is unchanged), checked."""
    brushes = list(composition.brushes)
    if isinstance(edit, SetBrush):
        names = [b.name for b in brushes]
        if edit.brush.name in names:
            brushes[names.index(edit.brush.name)] = edit.brush
        else:
            brushes.append(edit.brush)
    elif isinstance(edit, SetMask):
        i = _index(composition, edit.name)
        brushes[i] = replace(brushes[i], mask=edit.mask)
    elif isinstance(edit, RemoveBrush):
        del brushes[_index(composition, edit.name)]
    elif isinstance(edit, MoveBrush):
        moved = brushes.pop(_index(composition, edit.name))
        if not 0 <= edit.index <= len(brushes):
            raise ContractError(f"move {edit.name!r} to {edit.index}: the paint order has places 0-{len(brushes)}")
        brushes.insert(edit.index, moved)
    elif isinstance(edit, SetBackground):
        return replace(composition, background=edit.background).check()
    elif isinstance(edit, SetSeed):
        return replace(composition, seed=edit.seed).check()
    else:
        raise ContractError(f"not an edit: {type(edit).__name__}")
    return replace(composition, brushes=tuple(brushes)).check()


def edit_to_dict(edit: Edit) -> dict[str, Any]:
    return {"edit": _KIND_OF[type(edit)], **to_dict(edit)}


def edit_from_dict(data: Any) -> Edit:
    """An edit from JSON-ready data; an unknown kind or a bad field is one :class:`ContractError`."""
    if not isinstance(data, dict):
        raise ContractError(f"an edit is a JSON object, got {type(data).__name__}")
    data = dict(data)
    kind = data.pop("edit", None)
    if kind not in EDIT_KINDS:
        raise ContractError(f"unknown edit {kind!r} (known: {', '.join(EDIT_KINDS)})")
    return from_dict(EDIT_KINDS[kind], data, kind)

