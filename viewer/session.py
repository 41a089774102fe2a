"""What the window drives, without the window: a palette being edited, a stream, and a frame thread.

The window (``live.py``) only turns mouse, keys and trackbars into calls on :class:`LiveSession` and
shows what it returns; everything here runs (and is tested) without a display.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semdraw import Stream
from semdraw.errors import PromptWarning, SemdrawError
from semdraw.masks import alpha_for_steps, steps_on

from .palette import Palette, PaletteBrush, overlay_color, unique_path
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
    """A palette under edit, mirrored into a stream: brushes with a prompt and paint occupy stream slots."""

    def __init__(self, stream: Stream, palette: Palette, save_dir: Path, palette_path: Path | None = None) -> None:
        self.stream = stream
        self.palette = palette
        self.save_dir = Path(save_dir)
        self.palette_path = palette_path or self.save_dir / "palette.json"
        self.current = "1"
        self.size = max(1, min(palette.height, palette.width) // 16)
        self.text: TextEntry | None = None
        self.message = ""
        self._slots: dict[str, int] = {}  # brush name -> stream slot
        self._notes: dict[str, tuple[str, list[str]]] = {}  # brush name -> (prompt, its prompt warnings)
        self._dirty: set[str] = set()
        self._last_point: tuple[int, int] | None = None
        self._undo: list[tuple[str, np.ndarray]] = []  # (brush, its mask before the edit), newest last
        self._redo: list[tuple[str, np.ndarray]] = []
        palette.brush(self.current)
        self.stream.set_seed(palette.seed)
        self.apply_background()
        for name in list(palette.brushes):
            self._dirty.add(name)
        self.flush_edits()

    # ------------------------------------------------------------------ painting
    @property
    def brush(self) -> PaletteBrush:
        return self.palette.brush(self.current)

    def paint(self, x: int, y: int, *, erase: bool = False, stroke_start: bool = False) -> None:
        """A stroke segment to canvas pixel (x, y) with the current size (erase: the current brush only)."""
        import cv2

        value = 0 if erase else 255
        if stroke_start or self._last_point is None:  # a new stroke: one undo step
            self._remember(self.current)
        start = (x, y) if stroke_start or self._last_point is None else self._last_point
        cv2.line(self.brush.mask, start, (x, y), value, thickness=2 * self.size - 1 if self.size > 1 else 1)
        cv2.circle(self.brush.mask, (x, y), self.size - 1, value, thickness=-1)
        self._last_point = (x, y)
        self._dirty.add(self.current)

    def end_stroke(self) -> None:
        self._last_point = None

    def resize_brush(self, delta: int) -> None:
        self.size = int(np.clip(self.size + delta, MIN_SIZE, MAX_SIZE))

    def select(self, name: str) -> None:
        self.current = name
        self.palette.brush(name)
        self._last_point = None

    def clear(self) -> None:
        self._remember(self.current)
        self.brush.mask[:] = 0
        self._dirty.add(self.current)

    # ------------------------------------------------------------------ undo / redo (strokes, erases, clears)
    def _remember(self, name: str) -> None:
        self._undo.append((name, self.palette.brush(name).mask.copy()))
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
        brush = self.palette.brush(name)
        target.append((name, brush.mask.copy()))
        brush.mask[:] = mask  # in place: the window and the palette share this array
        self._last_point = None
        self._dirty.add(name)
        self.message = ""

    def set_params(self, *, alpha: float | None = None, blur: float | None = None,
                   strength: float | None = None) -> None:  # fmt: skip
        b = self.brush
        b.alpha = b.alpha if alpha is None else float(alpha)
        b.blur = b.blur if blur is None else float(blur)
        b.strength = b.strength if strength is None else float(strength)
        self._dirty.add(self.current)

    def alpha_steps(self, alpha: float) -> int:
        """How many of the stream's steps a brush of strength ``alpha`` takes part in (the alpha slider)."""
        return steps_on(alpha, self.stream.sched.noise_level.cpu())

    def alpha_for(self, on: int) -> float:
        """The strength that makes a brush take part in the last ``on`` steps (from the alpha slider)."""
        return alpha_for_steps(on, self.stream.sched.noise_level.cpu())

    def set_seed(self, seed: int) -> None:
        self.palette.seed = int(seed)
        self.stream.set_seed(int(seed))
        self.message = f"seed {int(seed)}"

    def random_seed(self) -> int:
        seed = int(np.random.default_rng().integers(0, 2**31 - 1))
        self.set_seed(seed)
        return seed

    # ------------------------------------------------------------------ typing
    def begin_text(self, field: str) -> None:
        current = {"prompt": self.brush.prompt, "negative_prompt": self.brush.negative_prompt,
                   "background": self.palette.background_prompt, "seed": str(self.palette.seed)}[field]  # fmt: skip
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
            before = self.palette.background_prompt
            self.palette.background_prompt = entry.text.strip()
            if not self.apply_background():  # refused (no free row): the palette keeps what the stream shows
                self.palette.background_prompt = before
        else:
            setattr(self.brush, entry.field, entry.text.strip())
            if entry.field == "prompt":  # the overlay shows the colour the prompt names
                self.brush.color = overlay_color(self.brush.prompt, list(self.palette.brushes).index(self.current))
            self._dirty.add(self.current)

    # ------------------------------------------------------------------ into the stream
    def apply_background(self) -> bool:
        """Hand the palette's background to the stream; False (and the reason in the message) if refused."""
        try:
            notes = _prompt_warnings(self.stream.set_background, self.palette.background_for_semdraw())
            self.message = "; ".join(f"background: {n}" for n in notes)
            return True
        except SemdrawError as err:
            if not self.palette.background_prompt or len(self._slots) < self.stream.layers:
                self.message = str(err)
                return False
            rows = len(self._slots) + 1
            self.message = (f"background prompt not used: its row and {len(self._slots)} brushes need {rows} prompt "
                            f"rows, the stream has {self.stream.layers}; clear a brush (c) or restart with "
                            f"--layers {rows}")  # fmt: skip
            return False

    def flush_edits(self) -> None:
        """Push edited brushes into the stream (called once per window tick, not per mouse event).

        A brush that finds no free row is kept in the palette but marked ``enabled = False`` (so a written
        palette renders as the window's image), and all such brushes are named together in the message with
        the --layers that fits them all; they are tried again whenever a row frees up. Prompt warnings
        (unknown words, truncation) go to the message too."""
        dirty, self._dirty = self._dirty, set()
        refused: list[str] = []
        freed = False
        for name in sorted(dirty):
            b = self.palette.brushes.get(name)
            try:
                if b is None or not b.active:
                    slot = self._slots.pop(name, None)
                    if slot is not None:
                        self.stream.remove_brush(slot)
                        freed = True
                    continue
                slot = self._slots.get(name)
                if slot is None:
                    free = sorted(set(range(self.stream.layers)) - set(self._slots.values()))
                    if not free or len(self._slots) >= self.stream.capacity:
                        b.enabled = False
                        refused.append(name)
                        continue
                    slot = free[0]
                warned = _prompt_warnings(self.stream.set_brush, slot, b.to_brush())
                if warned or self._notes.get(name, ("", []))[0] != b.prompt:  # encoded once: keep what it said
                    self._notes[name] = (b.prompt, warned)
                self._slots[name] = slot
                b.enabled = True
                self.message = ""
            except SemdrawError as err:
                self._slots.pop(name, None)
                b.enabled = False
                self.message = str(err)
        if freed:  # a row came free: the brushes waiting for one are tried at the next tick
            self._dirty |= {n for n, b in self.palette.brushes.items() if b.active and not b.enabled}
        notes = [f"brush {n}: {w}" for n, (_, said) in sorted(self._notes.items()) if n in self._slots for w in said]
        if notes and not self.message:  # standing prompt warnings, while no newer message says more
            self.message = "; ".join(notes)
        if refused:
            rows = sum(b.active for b in self.palette.brushes.values()) + int(bool(self.palette.background_prompt))
            which = "brush " + refused[0] if len(refused) == 1 else "brushes " + ", ".join(refused)
            self.message = (f"{which} not generated: the stream has {self.stream.layers} prompt rows"
                            f"{' (one is the background prompt)' if self.palette.background_prompt else ''}; "
                            f"restart with --layers {rows} for all of them")  # fmt: skip

    def panel_state(self, fps: float) -> PanelState:
        """What the side panel shows (every brush, its settings and stream slot; seed, steps, fps, model)."""
        brushes = tuple(
            PanelBrush(name, b.color, b.prompt, b.negative_prompt, b.alpha, b.blur, b.strength, self._slots.get(name),
                       refused=not b.enabled, painted=bool(b.mask.any()), on_steps=self.alpha_steps(b.alpha))
            for name, b in sorted(self.palette.brushes.items())
        )  # fmt: skip
        return PanelState(self.stream.prompts.name, self.palette.seed, self.stream.steps, fps, self.stream.layers,
                          self.current, brushes, self.palette.background_prompt, self.stream.idle,
                          tuple(sorted(self.stream.prompts.vocabulary or ())))  # fmt: skip

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
            path = self.palette.save(self.palette_path)
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


def _prompt_warnings(call: Callable[..., object], *args: object) -> list[str]:
    """Run ``call``, returning the short form of the prompt warnings it raised (also logged for the
    terminal); other warnings pass through as usual."""
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
