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

from .api import BackgroundSpec, BrushSpec, Composition, ContractError, SamplingSpec, from_dict, to_dict
from .limits import MAX_SIDE

MAX_STROKE_POINTS = 4096  # one edit's polyline; a longer stroke travels as several edits


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
class Stroke:
    """Paint (or, with ``erase``, clear) a brush's mask along a polyline of canvas pixels ``points``
    ((x, y), ...) with a round pen of ``radius`` pixels: every pixel whose centre lies within ``radius`` of
    the polyline. A few numbers instead of a mask: what a window sends per mouse move."""

    name: str
    points: tuple[tuple[float, float], ...]
    radius: float
    erase: bool = False


@dataclass(frozen=True)
class UpdateBrush:
    """Change some of a brush's settings (``None``: keep); the mask is left alone."""

    name: str
    prompt: str | None = None
    negative_prompt: str | None = None
    alpha: float | None = None
    blur: float | None = None
    strength: float | None = None
    enabled: bool | None = None


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


@dataclass(frozen=True)
class SetSampling:
    sampling: SamplingSpec


Edit = SetBrush | SetMask | Stroke | UpdateBrush | RemoveBrush | MoveBrush | SetBackground | SetSeed | SetSampling
EDIT_KINDS: dict[str, type] = {"set_brush": SetBrush, "set_mask": SetMask, "stroke": Stroke, "update_brush": UpdateBrush,
                               "remove_brush": RemoveBrush, "move_brush": MoveBrush, "set_background": SetBackground,
                               "set_seed": SetSeed, "set_sampling": SetSampling}  # fmt: skip
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
    elif isinstance(edit, Stroke):
        i = _index(composition, edit.name)
        brushes[i] = replace(brushes[i], mask=stroked(brushes[i].mask, edit))
    elif isinstance(edit, UpdateBrush):
        i = _index(composition, edit.name)
        changes = {k: getattr(edit, k) for k in _UPDATABLE if getattr(edit, k) is not None}
        brushes[i] = replace(brushes[i], **changes)
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
    elif isinstance(edit, SetSampling):
        return replace(composition, sampling=edit.sampling).check()
    else:
        raise ContractError(f"not an edit: {type(edit).__name__}")
    return replace(composition, brushes=tuple(brushes)).check()


_UPDATABLE = ("prompt", "negative_prompt", "alpha", "blur", "strength", "enabled")


def stroked(mask: np.ndarray, stroke: Stroke) -> np.ndarray:
    """``mask`` (HxW uint8) with ``stroke`` painted (255) or erased (0): a new array, ``mask`` untouched."""
    points = np.asarray(stroke.points, np.float64).reshape(-1, 2)
    if not 1 <= len(points) <= MAX_STROKE_POINTS:
        raise ContractError(f"stroke {stroke.name!r}: 1-{MAX_STROKE_POINTS} points, got {len(points)}")
    if not (np.isfinite(points).all() and np.abs(points).max() <= 4 * MAX_SIDE):
        raise ContractError(f"stroke {stroke.name!r}: points must be finite canvas coordinates")
    if not 0.0 < stroke.radius <= MAX_SIDE:
        raise ContractError(f"stroke {stroke.name!r}: the radius must lie in (0, {MAX_SIDE}] pixels, got {stroke.radius}")
    out = mask.copy()
    h, w = out.shape
    r = stroke.radius
    ends = np.concatenate([points[:1], points]) if len(points) == 1 else points
    for a, b in zip(ends[:-1], ends[1:], strict=True):  # a capsule per segment, within its bounding box
        x0, x1 = max(int(np.floor(min(a[0], b[0]) - r)), 0), min(int(np.ceil(max(a[0], b[0]) + r)) + 1, w)
        y0, y1 = max(int(np.floor(min(a[1], b[1]) - r)), 0), min(int(np.ceil(max(a[1], b[1]) + r)) + 1, h)
        if x0 >= x1 or y0 >= y1:
            continue
        ys, xs = np.mgrid[y0:y1, x0:x1]
        d = b - a
        length2 = float(d @ d)
        t = 0.0 if length2 == 0 else np.clip(((xs - a[0]) * d[0] + (ys - a[1]) * d[1]) / length2, 0.0, 1.0)
        inside = (xs - a[0] - t * d[0]) ** 2 + (ys - a[1] - t * d[1]) ** 2 <= r * r
        out[y0:y1, x0:x1][inside] = 0 if stroke.erase else 255
    return out


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



def diff(before: Composition, after: Composition) -> list[Edit]:
    """Edits that turn ``before`` into ``after`` (``apply`` them in order): what a client that keeps whole
    compositions (the window) sends to a server that takes edits. Unchanged brushes cost nothing; a
    changed mask travels whole (``SetMask``), changed settings as one ``UpdateBrush``."""
    if (before.height, before.width) != (after.height, after.width):
        raise ContractError(f"a {before.height}x{before.width} composition cannot become {after.height}x{after.width}")
    edits: list[Edit] = []
    old = {b.name: b for b in before.brushes}
    new_names = [b.name for b in after.brushes]
    order = [b.name for b in before.brushes if b.name in new_names]
    for name in [b.name for b in before.brushes if b.name not in new_names]:
        edits.append(RemoveBrush(name))
    for b in after.brushes:
        was = old.get(b.name)
        if was is None:
            edits.append(SetBrush(b))
            order.append(b.name)
            continue
        if not np.array_equal(was.mask, b.mask):
            edits.append(SetMask(b.name, b.mask))
        changes = {k: getattr(b, k) for k in _UPDATABLE if getattr(b, k) != getattr(was, k)}
        if changes:
            edits.append(UpdateBrush(b.name, **changes))
    for index, name in enumerate(new_names):  # the paint order, one move at a time
        if order[index] != name:
            order.remove(name)
            order.insert(index, name)
            edits.append(MoveBrush(name, index))
    if before.background != after.background:
        edits.append(SetBackground(after.background))
    if before.seed != after.seed:
        edits.append(SetSeed(after.seed))
    if before.sampling != after.sampling:
        edits.append(SetSampling(after.sampling))
    return edits
