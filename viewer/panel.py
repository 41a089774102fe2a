"""The window's side panel and overlays, drawn into the image itself (opencv-python's Qt build has no fonts
for trackbar labels, so nothing the user must read depends on Qt): every brush with its colour, prompts,
alpha, blur σ, prompt strength and stream slot; the seed, steps, fps and model; the current slider values.
Pure functions of their inputs: tested without a display."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import numpy as np

PANEL_WIDTH = 340
BACKGROUND, HIGHLIGHT, TEXT, DIM = (32, 32, 32), (70, 70, 90), (235, 235, 235), (160, 160, 160)
LINE = 16  # pixels per text line at FONT_SCALE
FONT_SCALE = 0.42


@dataclass(frozen=True)
class PanelBrush:
    name: str
    color: tuple[int, int, int]
    prompt: str
    negative_prompt: str
    alpha: float
    blur: float
    strength: float
    slot: int | None  # stream slot, None when not generated
    refused: bool = False  # not generated for want of a free stream row (the palette keeps it disabled)
    on_steps: int | None = None  # how many of the steps its alpha lets it take part in (None: not known)
    painted: bool = True

    @property
    def status(self) -> str:
        if self.slot is not None:
            return f"slot {self.slot}"
        if not self.prompt:
            return "no prompt"
        if self.refused:
            return "refused: no free row"
        return "no slot" if self.painted else "no paint yet"


@dataclass(frozen=True)
class PanelState:
    model: str
    seed: int
    steps: int
    fps: float
    layers: int
    current: str
    brushes: tuple[PanelBrush, ...]
    background: str = ""  # the background prompt the stream has ("" = white)
    idle: bool = False  # the stream repeats its last image (nothing changed): no fps to show
    vocabulary: tuple[str, ...] = ()  # a closed-vocabulary model's words (toy), shown under the brushes

    @property
    def rate(self) -> str:
        return "idle" if self.idle else f"{self.fps:.1f} fps"


def _text(img: np.ndarray, text: str, x: int, y: int, color=TEXT, scale: float = FONT_SCALE) -> None:
    import cv2

    cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)


def _clip(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 3] + "..."


def render_panel(state: PanelState, height: int) -> np.ndarray:
    """The side panel, RGB uint8 [height, PANEL_WIDTH, 3]."""
    import cv2

    img = np.full((height, PANEL_WIDTH, 3), BACKGROUND, np.uint8)
    chars = (PANEL_WIDTH - 40) // 7
    y = LINE
    _text(img, _clip(f"model {state.model}", chars + 4), 8, y)
    y += LINE
    _text(img, f"seed {state.seed}   steps {state.steps}   {state.rate}", 8, y)
    y += LINE
    _text(img, _clip(f"background: {state.background or 'white (no prompt)'}", chars + 4), 8, y)
    y += LINE
    current = next((b for b in state.brushes if b.name == state.current), None)
    if current is not None:
        on = "" if current.on_steps is None else f" on {current.on_steps}/{state.steps} steps"
        _text(img, f"alpha {current.alpha:.3f}{on}  blur {current.blur:.0f}px  str {current.strength:.2f}",
              8, y, DIM)  # fmt: skip
    y += LINE // 2
    for b in state.brushes:
        top = y + 4
        rows = 3
        if b.name == state.current:
            cv2.rectangle(img, (2, top), (PANEL_WIDTH - 3, top + rows * LINE + 4), HIGHLIGHT, -1)
        cv2.rectangle(img, (8, top + 4), (24, top + 20), tuple(int(c) for c in b.color), -1)
        slot = b.status
        _text(img, _clip(f"{b.name}  {b.prompt or '(no prompt)'}", chars), 30, top + LINE - 2)
        _text(img, _clip(f"neg: {b.negative_prompt or '-'}", chars), 30, top + 2 * LINE - 2, DIM)
        _text(img, f"a {b.alpha:.2f}  s {b.blur:.0f}px  str {b.strength:.2f}  {slot}", 30, top + 3 * LINE - 2, DIM)
        y = top + rows * LINE + 6
        if y > height - LINE:
            break
    if state.vocabulary and y + 2 * LINE < height:
        lines = textwrap.wrap("words it knows: " + " ".join(state.vocabulary), chars + 4)
        for line in lines[: (height - y - LINE) // LINE]:
            y += LINE
            _text(img, line, 8, y, DIM)
    return img


def wrap_status(text: str, width_px: int) -> list[str]:
    """A status message wrapped to the window's width (about 7 px per character at FONT_SCALE + 0.03)."""
    return textwrap.wrap(text, max(20, width_px // 7)) or [""]


def draw_help(img: np.ndarray, lines: list[str], width: int) -> None:
    """The help on an opaque dark panel over the left ``width`` pixels (the canvas and the image), its text
    sized to fit that width: readable on the toy's enlarged canvas and on a 1024² SDXL canvas alike."""
    import cv2

    longest = max(len(t) for t in lines)
    scale = float(np.clip((width - 40) / (longest * 18.5), 0.4, 0.8))  # ~18.5 px per character at scale 1
    line = int(36 * scale)
    height = line * len(lines) + 16
    cv2.rectangle(img, (8, 8), (width - 8, min(img.shape[0] - 8, 8 + height)), (15, 15, 15), -1)
    for i, text in enumerate(lines):
        cv2.putText(img, text, (20, 8 + line * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                    cv2.LINE_AA)  # fmt: skip
