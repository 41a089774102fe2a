"""Keeping a stream equal to a composition: which brush takes which stream row, and what could not fit.

A stream has ``layers`` prompt rows; a background prompt takes one. :func:`assign_rows` decides, for a
composition, which brush occupies which row: a brush keeps its row while it stays (so an edit never
shuffles the others), a new brush takes the lowest free row, in paint order, and a brush that finds none
is *refused* (kept in the composition, not generated) and named. :class:`StreamSync` applies a whole
composition to a :class:`semdraw.Stream` by that rule, touching only what changed (a moved mask is the
fast path), and keeps what the prompt encoder said about each prompt. Every client (the window, a server,
a script) gets the same rows, refusals and warnings.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from .api import Composition, SamplingSpec
from .errors import PromptWarning, SemdrawError

log = logging.getLogger("semdraw.stream_sync")


@dataclass(frozen=True)
class RowAssignment:
    """Brush name → stream row for the brushes that are generated; ``refused`` those that found no row."""

    rows: dict[str, int]
    refused: tuple[str, ...]
    background_row: bool  # the background prompt has its row

    @property
    def needed(self) -> int:
        """The prompt rows that would generate every brush that asks for one (and the background prompt)."""
        return len(self.rows) + len(self.refused) + int(self.background_row)

    def message(self, layers: int) -> str:
        """One line for a painter: which brushes wait for a row and the layer count that fits them all."""
        if not self.refused:
            return ""
        which = "brush " + self.refused[0] if len(self.refused) == 1 else "brushes " + ", ".join(self.refused)
        needed = self.needed
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
    """Applies compositions to one stream, touching only what changed since the last one it applied.

    ``notes`` holds the prompt encoder's short warnings (unknown words, truncation) per brush name, and
    under ``""`` for the background; ``failed`` the brushes the stream refused with an error (their
    message), which are not generated until they change.

    A stream's sampling options (steps, cfg, ...) are fixed when it is made: ``sampling`` is the one it
    runs (None: the first composition's). A composition asking for others is generated with the stream's,
    said in :meth:`messages` and written so by :meth:`shown`; a new stream takes them (a server makes one)."""

    stream: Any  # a semdraw.Stream
    sampling: SamplingSpec | None = None
    applied: Composition | None = None
    assignment: RowAssignment = field(default_factory=lambda: RowAssignment({}, (), False))
    notes: dict[str, list[str]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    def apply(self, composition: Composition) -> RowAssignment:
        """Make the stream generate ``composition`` (rows by :func:`assign_rows`); returns the assignment."""
        stream, before = self.stream, self.applied
        if (composition.height, composition.width) != (stream.height, stream.width):
            raise SemdrawError(f"a {composition.height}x{composition.width} composition on a "
                               f"{stream.height}x{stream.width} stream: paint on the stream's canvas")  # fmt: skip
        specs = {b.name: b for b in composition.brushes}
        old_specs = {} if before is None else {b.name: b for b in before.brushes}
        self.failed = {n: m for n, m in self.failed.items() if _same(old_specs.get(n), specs.get(n))}
        candidate = composition
        if self.failed:  # a brush the stream refused stays out until it changes
            candidate = replace(composition, brushes=tuple(replace(b, enabled=False) if b.name in self.failed else b
                                                           for b in composition.brushes))  # fmt: skip
        new = assign_rows(candidate, stream.layers, self.assignment.rows)
        for name, row in self.assignment.rows.items():  # rows that are freed or change hands
            if new.rows.get(name) != row:
                stream.remove_brush(row)
        if before is None or before.background != composition.background:
            self.notes.pop("", None)
            said = _prompt_notes(stream.set_background, composition.background_for_semdraw())
            if said:
                self.notes[""] = said
        by_name = {b.name: b for b in composition.brushes_for_semdraw()}
        rows = dict(new.rows)
        for name, row in new.rows.items():
            spec, old = specs[name], old_specs.get(name)
            if self.assignment.rows.get(name) == row and _same(old, spec):
                continue
            try:
                said = _prompt_notes(stream.set_brush, row, by_name[name])
            except SemdrawError as err:
                self.failed[name] = str(err)
                del rows[name]
                continue
            if old is None or old.prompt != spec.prompt or said:  # encoded once: keep what it said
                self.notes[name] = said
        if before is None or before.seed != composition.seed:
            stream.set_seed(composition.seed)
        self.notes = {n: s for n, s in self.notes.items() if s and (n == "" or n in rows)}
        if self.sampling is None:
            self.sampling = composition.sampling
        self.applied, self.assignment = composition, replace(new, rows=rows)
        return self.assignment

    def edit(self, edit: Any) -> RowAssignment:
        """Apply one edit (``semdraw.edits``) to the composition last applied, and that to the stream: a
        bad edit is one ContractError and changes nothing."""
        from .edits import apply

        if self.applied is None:
            raise SemdrawError("apply a composition first: an edit changes one")
        return self.apply(apply(self.applied, edit))

    def shown(self) -> Composition | None:
        """The composition the stream shows: the last applied, with the brushes that found no row (or that
        the stream refused) marked disabled, so that rendering it (``semdraw-render``) gives the stream's image."""
        if self.applied is None:
            return None
        out = set(self.assignment.refused) | set(self.failed)
        return replace(self.applied, sampling=self.sampling, brushes=tuple(replace(b, enabled=False) if b.name in out else b
                                                   for b in self.applied.brushes))  # fmt: skip

    def messages(self) -> list[str]:
        """What a painter should read: refusals, errors, then prompt warnings (one line each)."""
        lines = [self.assignment.message(self.stream.layers)] if self.assignment.refused else []
        if self.applied is not None and self.sampling is not None and self.applied.sampling != self.sampling:
            lines.append("sampling options not applied: this stream was made with others (it keeps "
                         f"{self.stream.steps} steps); a new stream takes them")
        lines += [f"brush {n}: {m}" for n, m in sorted(self.failed.items())]
        lines += [f"{'background' if n == '' else 'brush ' + n}: {w}" for n, said in sorted(self.notes.items())
                  for w in said]  # fmt: skip
        return lines


def _same(a: Any, b: Any) -> bool:
    return a is b or (a is not None and b is not None and a == b)


def _prompt_notes(call: Callable[..., object], *args: object) -> list[str]:
    """Run ``call``, returning the short form of the prompt warnings it raised (also logged); other
    warnings pass through as usual."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", PromptWarning)
        call(*args)
    notes = []
    for w in seen:
        if isinstance(w.message, PromptWarning):
            log.warning("%s", w.message)
            notes.append(w.message.short)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return notes
