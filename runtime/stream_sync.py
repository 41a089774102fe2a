"""Keeping a stream equal to a composition: which brush takes which stream row, and what could not fit.

A stream has ``layers`` prompt rows; a background prompt takes one. :func:`assign_rows` decides, for a
composition, which brush occupies which row: a brush keeps its row while it stays (so an edit never
shuffles the others), a new brush takes the lowest free row, in paint order, and a brush that finds none
is *refused* (kept in the composition, not generated) and named. :class:`StreamSync` applies a whole
composition to a :class:`semdraw.Stream` by that rule, touching only what changed (a moved mask is the
fast path). Every client (the window, a server, a script) gets the same rows and the same refusals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .api import Composition
from .errors import SemdrawError


@dataclass(frozen=True)
class RowAssignment:
    """Brush name → stream row for the brushes that are generated; ``refused`` those that found no row."""

    rows: dict[str, int]
    refused: tuple[str, ...]
    background_row: bool  # the background prompt has its row

    def message(self, layers: int) -> str:
        """One line for a painter: which brushes wait for a row and the layer count that fits them all."""
        if not self.refused:
            return ""
        which = "brush " + self.refused[0] if len(self.refused) == 1 else "brushes " + ", ".join(self.refused)
        needed = len(self.rows) + len(self.refused) + int(self.background_row)
        return (f"{which} not generated: the stream has {layers} prompt rows"
                f"{' (one is the background prompt)' if self.background_row else ''}; {needed} would fit them all")


def generated(composition: Composition) -> list[str]:
    """The brushes that ask for a row: enabled, with a prompt and some paint, in paint order."""
    return [b.name for b in composition.brushes if b.enabled and b.prompt.strip() and b.mask.any()]


def assign_rows(composition: Composition, layers: int, previous: dict[str, int] | None = None) -> RowAssignment:
    """Rows for ``composition`` on a stream of ``layers`` rows, stable against ``previous``."""
    background_row = bool(composition.background.prompt) and composition.background.image is None
    capacity = layers - int(background_row)
    wanted = generated(composition)
    rows = {n: r for n, r in (previous or {}).items() if n in wanted and r < layers}
    while len(rows) > capacity:  # fewer rows than before (a background prompt came): the last painted wait
        rows.pop(max(rows, key=wanted.index))
    refused = []
    for name in wanted:
        if name in rows:
            continue
        free = sorted(set(range(layers)) - set(rows.values()))
        if len(rows) >= capacity or not free:
            refused.append(name)
            continue
        rows[name] = free[0]
    return RowAssignment(rows, tuple(refused), background_row)


@dataclass
class StreamSync:
    """Applies compositions to one stream, touching only what changed since the last one it applied."""

    stream: Any  # a semdraw.Stream
    applied: Composition | None = None
    assignment: RowAssignment = field(default_factory=lambda: RowAssignment({}, (), False))

    def apply(self, composition: Composition) -> RowAssignment:
        """Make the stream generate ``composition`` (rows by :func:`assign_rows`); returns the assignment."""
        stream, before = self.stream, self.applied
        if (composition.height, composition.width) != (stream.height, stream.width):
            raise SemdrawError(f"a {composition.height}x{composition.width} composition on a "
                               f"{stream.height}x{stream.width} stream: paint on the stream's canvas")  # fmt: skip
        new = assign_rows(composition, stream.layers, self.assignment.rows)
        specs = {b.name: b for b in composition.brushes}
        old_specs = {} if before is None else {b.name: b for b in before.brushes}
        for name, row in self.assignment.rows.items():  # rows that are freed or change hands
            if new.rows.get(name) != row:
                stream.remove_brush(row)
        if before is None or before.background != composition.background:
            stream.set_background(composition.background_for_semdraw())
        by_name = {b.name: b for b in composition.brushes_for_semdraw()}
        for name, row in new.rows.items():
            spec, old = specs[name], old_specs.get(name)
            if self.assignment.rows.get(name) != row or old is None or old != spec:
                stream.set_brush(row, by_name[name])
        if before is None or before.seed != composition.seed:
            stream.set_seed(composition.seed)
        self.applied, self.assignment = composition, new
        return new
