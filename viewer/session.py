"""What the window drives, without the window: a composition under edit, a stream, and a frame thread.

The window (``live.py``) only turns mouse, keys and trackbars into calls on :class:`LiveSession` and
shows what it returns; everything here runs (and is tested) without a display. The session's state is a
:class:`semdraw.Composition` changed only by the core's edits (``semdraw.edits``); which brush takes
which stream row, what is refused and what the prompt encoder said are the core's
(:class:`semdraw.StreamSync`), the same for every client.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from semdraw import Stream
from semdraw.api import BrushSpec, Composition, ContractError
from semdraw.edits import Edit, SetBackground, SetBrush, SetMask, SetSeed, Stroke, UpdateBrush, apply
from semdraw.errors import SemdrawError
from semdraw.masks import alpha_for_steps, steps_on
from semdraw.recording import Recorder
from semdraw.stream_sync import StreamSync

from .palette import brush_colors, save_palette, unique_path
from .panel import PanelBrush, PanelState

log = logging.getLogger("semdraw.viewer")

MIN_SIZE, MAX_SIZE = 1, 64
UNDO_BYTES = 64 << 20  # undo history bound: mask snapshots up to this many bytes (oldest dropped first)


@dataclass
class TextEntry:
    """A field being typed in the window: which field, and the text so far. It opens with the current value
    selected (as a text box does on focus): the first character typed replaces it, Backspace or Delete
    clears it; after that, typing appends and Backspace deletes one character."""

    field: str  # "prompt" | "negative_prompt" | "background" | "seed"
    text: str
    selected: bool = True

    def type(self, char: str) -> None:
        self.text = char if self.selected else self.text + char
        self.selected = False

    def backspace(self) -> None:
        self.text = "" if self.selected else self.text[:-1]
        self.selected = False

    def clear(self) -> None:
        self.text, self.selected = "", False

    @property
    def shown(self) -> str:
        """The field as the status line shows it: a selected value in brackets, else the text and a cursor."""
        return f"[{self.text}]" if self.selected and self.text else f"{self.text}_"


class FrameThread:
    """Pulls frames from the stream in its own thread, so the window never waits for the model."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.frame: np.ndarray | None = None
        self.fps = 0.0
        self.error: str | None = None
        self.paused = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="semdraw-frames", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        last = time.perf_counter()
        while not self._stop.is_set():
            if self.paused.is_set():
                time.sleep(0.02)
                last = time.perf_counter()
                continue
            try:
                frame = self.stream()
            except Exception as err:  # keep the window alive and say what went wrong in its status line
                if self.error is None:
                    log.exception("the stream failed")
                self.error = f"stream error: {err}"
                time.sleep(0.5)
                continue
            self.error = None
            if self.stream.idle:  # the same picture again, made without a network: wait for an edit, not a core
                time.sleep(0.02)
                last = time.perf_counter()
                continue
            now = time.perf_counter()
            dt, last = now - last, now
            self.fps = 1 / dt if self.fps == 0 else 0.9 * self.fps + 0.1 / max(dt, 1e-6)
            self.frame = frame


class LiveSession:
    """A composition under edit, mirrored into a stream: brushes with a prompt and paint occupy stream rows."""

    def __init__(self, stream: Stream, composition: Composition | None, save_dir: Path,
                 palette_path: Path | None = None, sync: StreamSync | None = None) -> None:  # fmt: skip
        self.stream = stream
        self.composition = (composition or Composition(stream.height, stream.width)).check()
        self.sync = sync or StreamSync(stream)  # a remote stream brings its own (viewer/remote.py)
        self.save_dir = Path(save_dir)
        self.palette_path = palette_path or self.save_dir / "palette.json"
        self.current = "1"
        self.size = max(1, min(self.composition.height, self.composition.width) // 16)
        self.text: TextEntry | None = None
        self.message = ""
        self._said = ""  # the last message the stream's state gave (refusals, prompt warnings)
        self._last_point: tuple[int, int] | None = None
        self._undo: list[tuple[str, np.ndarray]] = []  # (brush, its mask before the edit), newest last
        self._redo: list[tuple[str, np.ndarray]] = []
        self.recorder: Recorder | None = None  # --record: every edit from now on, with its time
        self.select(self.current)
        self.flush_edits()

    # ------------------------------------------------------------------ the composition
    def edit(self, edit: Edit) -> bool:
        """Apply ``edit`` to the composition (the stream follows at the next :meth:`flush_edits`); a refused
        edit leaves everything as it was and says why in the message."""
        try:
            self.composition = apply(self.composition, edit)
        except ContractError as err:
            self.message = str(err)
            return False
        if self.recorder is not None:
            self.recorder.record(edit)
        return True

    @property
    def brush(self) -> BrushSpec:
        return self.brush_named(self.current)

    def brush_named(self, name: str) -> BrushSpec:
        return next(b for b in self.composition.brushes if b.name == name)

    @property
    def colors(self) -> dict[str, tuple[int, int, int]]:
        return brush_colors(self.composition)

    # ------------------------------------------------------------------ painting
    def paint(self, x: int, y: int, *, erase: bool = False, stroke_start: bool = False) -> None:
        """A stroke segment to canvas pixel (x, y) with the current size (erase: the current brush only)."""
        if stroke_start or self._last_point is None:  # a new stroke: one undo step
            self._remember(self.current)
        start = (x, y) if stroke_start or self._last_point is None else self._last_point
        # a round pen of diameter 2·size - 1 pixels: size 1 paints single pixels
        self.edit(Stroke(self.current, (start, (x, y)), radius=self.size - 0.5, erase=erase))
        self._last_point = (x, y)

    def end_stroke(self) -> None:
        self._last_point = None

    def resize_brush(self, delta: int) -> None:
        self.size = int(np.clip(self.size + delta, MIN_SIZE, MAX_SIZE))

    def select(self, name: str) -> None:
        """Make ``name`` the current brush (an empty one is added to the composition if new)."""
        self.current = name
        if all(b.name != name for b in self.composition.brushes):
            empty = np.zeros((self.composition.height, self.composition.width), np.uint8)
            self.edit(SetBrush(BrushSpec(name, "", empty)))
        self._last_point = None

    def clear(self) -> None:
        self._remember(self.current)
        self.edit(SetMask(self.current, np.zeros_like(self.brush.mask)))

    # ------------------------------------------------------------------ undo / redo (strokes, erases, clears)
    def _remember(self, name: str) -> None:
        self._undo.append((name, self.brush_named(name).mask))  # masks are never changed in place: no copy
        self._redo.clear()
        while sum(m.nbytes for _, m in self._undo) > UNDO_BYTES and len(self._undo) > 1:
            self._undo.pop(0)

    def undo(self) -> None:
        self._swap(self._undo, self._redo, "nothing to undo")

    def redo(self) -> None:
        self._swap(self._redo, self._undo, "nothing to redo")

    def _swap(self, source: list, target: list, empty: str) -> None:
        if not source:
            self.message = empty
            return
        name, mask = source.pop()
        target.append((name, self.brush_named(name).mask))
        self.edit(SetMask(name, mask))
        self._last_point = None
        self.message = ""

    def set_params(self, *, alpha: float | None = None, blur: float | None = None,
                   strength: float | None = None) -> None:  # fmt: skip
        self.edit(UpdateBrush(self.current, alpha=None if alpha is None else float(alpha),
                              blur=None if blur is None else float(blur),
                              strength=None if strength is None else float(strength)))  # fmt: skip

    def alpha_steps(self, alpha: float) -> int:
        """How many of the stream's steps a brush of strength ``alpha`` takes part in (the alpha slider)."""
        return steps_on(alpha, self.stream.sched.noise_level.cpu())

    def alpha_for(self, on: int) -> float:
        """The strength that makes a brush take part in the last ``on`` steps (from the alpha slider)."""
        return alpha_for_steps(on, self.stream.sched.noise_level.cpu())

    def set_seed(self, seed: int) -> None:
        if self.edit(SetSeed(int(seed))):
            self.flush_edits()
            self.message = f"seed {int(seed)}"

    def random_seed(self) -> int:
        seed = int(np.random.default_rng().integers(0, 2**31 - 1))
        self.set_seed(seed)
        return seed

    # ------------------------------------------------------------------ typing
    def begin_text(self, field: str) -> None:
        current = {"prompt": self.brush.prompt, "negative_prompt": self.brush.negative_prompt,
                   "background": self.composition.background.prompt, "seed": str(self.composition.seed)}[field]  # fmt: skip
        self.text = TextEntry(field, current)

    def commit_text(self) -> None:
        entry, self.text = self.text, None
        if entry is None:
            return
        if entry.field == "seed":
            try:
                seed = int(entry.text.strip())
            except ValueError:
                self.message = f"a seed is a whole number, not {entry.text.strip()!r}"
                return
            if not 0 <= seed < 2**31:
                self.message = f"a seed lies in [0, {2**31 - 1}], not {seed}"
                return
            self.set_seed(seed)
        elif entry.field == "background":
            self.edit(SetBackground(replace(self.composition.background, prompt=entry.text.strip())))
            self.flush_edits()
        else:
            self.edit(UpdateBrush(self.current, **{entry.field: entry.text.strip()}))
            self.flush_edits()

    # ------------------------------------------------------------------ into the stream
    def flush_edits(self) -> None:
        """Make the stream generate the composition (called once per window tick, not per mouse event).

        The core decides the rows (:class:`semdraw.StreamSync`): a brush that finds no free row stays in the
        composition, is shown as refused and written disabled (so a written palette renders as the window's
        image), and takes a row as soon as one frees up. Refusals and prompt warnings go to the message."""
        if self.sync.applied is self.composition:
            return
        try:
            self.sync.apply(self.composition)
        except SemdrawError as err:  # e.g. a background image the stream cannot read: keep what it showed
            self.message = str(err)
            if self.sync.applied is not None:
                self.composition = replace(self.composition, background=self.sync.applied.background)
            return
        said = "; ".join(self.sync.messages())
        if self.sync.assignment.refused:  # the window's own words for the fix
            said += f" (restart with --layers {self.sync.assignment.needed})"
        if said != self._said:
            if said or self.message == self._said:  # a newer message stays until the stream says something
                self.message = said
            self._said = said

    @property
    def refused(self) -> set[str]:
        return set(self.sync.assignment.refused) | set(self.sync.failed)

    def panel_state(self, fps: float) -> PanelState:
        """What the side panel shows (every brush, its settings and stream row; seed, steps, fps, model)."""
        colors, rows, refused = self.colors, self.sync.assignment.rows, self.refused
        brushes = tuple(
            PanelBrush(b.name, colors[b.name], b.prompt, b.negative_prompt, b.alpha, b.blur, b.strength,
                       rows.get(b.name), refused=b.name in refused, painted=bool(b.mask.any()),
                       on_steps=self.alpha_steps(b.alpha))
            for b in sorted(self.composition.brushes, key=lambda b: b.name)
        )  # fmt: skip
        return PanelState(self.stream.prompts.name, self.composition.seed, self.stream.steps, fps, self.stream.layers,
                          self.current, brushes, self.composition.background.prompt, self.stream.idle,
                          tuple(sorted(self.stream.prompts.vocabulary or ())))  # fmt: skip

    def shown(self) -> Composition:
        """The composition as the stream shows it: refused brushes disabled (what the palette file holds)."""
        self.flush_edits()
        return self.sync.shown() if self.sync.applied is self.composition else self.composition

    # ------------------------------------------------------------------ files
    def save_frame(self, frame: np.ndarray | None) -> Path | None:
        """Writes the frame shown to a new file in the save folder; a failure is a status message (the
        drawing is untouched and the window goes on)."""
        from PIL import Image

        if frame is None:
            self.message = "no frame yet"
            return None
        try:
            path = unique_path(self.save_dir, "frame", ".png")
            Image.fromarray(frame).save(path)
        except OSError as err:
            return self._write_failed("the frame", err)
        self.message = f"saved {path}"
        log.info("saved frame %s", path)
        return path

    def write_palette(self) -> Path | None:
        """Writes the palette (atomically); a failure is a status message, the drawing is untouched."""
        try:
            path = save_palette(self.shown(), self.palette_path)
        except OSError as err:
            return self._write_failed("the palette", err)
        self.message = f"palette written to {path}"
        log.info("palette written to %s", path)
        return path

    def _write_failed(self, what: str, err: OSError) -> None:
        where = err.filename or self.save_dir
        self.message = f"could not save {what} to {where}: {err.strerror or err} (nothing lost: fix it and retry)"
        log.error("%s", self.message)
        return None
