"""Records the painting sessions that ``semdraw-bench session`` replays (runtime/tools/sessions/*.json).

Each one is a real ``semdraw-live --record`` session on the toy, in a virtual X display (Xvfb), painted by
xdotool along a scripted gesture list at a hand's pace (about 25 pointer events a second, pauses between
strokes as a painter makes them). What the window records is what it received: the recordings are the
window's own output, not written by this script.

    python scripts/record_sessions.py                  # all three, into runtime/tools/sessions/
    python scripts/record_sessions.py --only pauses    # one

Needs Xvfb and xdotool (Debian: apt-get install xvfb xdotool) and the project installed (semdraw-live).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semdraw.api import BrushSpec, Composition
from semdraw.recording import Recording
from semdraw.viewer.live import display_scale
from semdraw.viewer.palette import save_palette

log = logging.getLogger("record_sessions")
SIDE = 128  # the toy's canvas
EVENTS_PER_SECOND = 25  # pointer events while a stroke is drawn


@dataclass(frozen=True)
class Drag:
    """A stroke through ``points`` (fractions of the canvas, x then y) drawn in ``seconds``."""

    points: tuple[tuple[float, float], ...]
    seconds: float
    erase: bool = False


@dataclass(frozen=True)
class Keys:
    """Key presses (xdotool key names), or text typed character by character when ``text``."""

    keys: tuple[str, ...] = ()
    text: str = ""


@dataclass(frozen=True)
class Pause:
    seconds: float


def zigzag(y0: float, y1: float, rows: int) -> tuple[tuple[float, float], ...]:
    """Back-and-forth horizontal passes from y0 to y1: how a painter fills a band."""
    points = []
    for k, y in enumerate(np.linspace(y0, y1, rows)):
        xs = (0.02, 0.98) if k % 2 == 0 else (0.98, 0.02)
        points += [(xs[0], float(y)), (xs[1], float(y))]
    return tuple(points)


def circle(cx: float, cy: float, r: float, turns: float = 1.0) -> tuple[tuple[float, float], ...]:
    n = int(24 * turns)
    return tuple((cx + r * math.cos(2 * math.pi * turns * k / n), cy + r * math.sin(2 * math.pi * turns * k / n))
                 for k in range(n + 1))  # fmt: skip


def prompt(brush: str, text: str) -> list:
    return [Keys((brush, "t")), Keys(text=text), Keys(("Return",))]


def band(y0: float, y1: float) -> np.ndarray:
    m = np.zeros((SIDE, SIDE), np.uint8)
    m[int(y0 * SIDE) : int(y1 * SIDE)] = 255
    return m


def disc(cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:SIDE, :SIDE]
    return (((yy - cy * SIDE) ** 2 + (xx - cx * SIDE) ** 2) < (r * SIDE) ** 2).astype(np.uint8) * 255


SKY_AND_GRASS = (BrushSpec("1", "blue sky", band(0, 0.55)), BrushSpec("2", "green grass", band(0.55, 1.0)))

# Sketching a landscape: busy, stroke after stroke, prompts typed between them.
LANDSCAPE = [
    *prompt("1", "blue sky"), Drag(zigzag(0.03, 0.45, 7), 6.0), Pause(0.8), Drag(zigzag(0.08, 0.4, 4), 3.0),
    Pause(1.2), *prompt("2", "green grass"), Drag(zigzag(0.58, 0.97, 7), 6.0), Pause(0.6),
    Drag(((0.02, 0.52), (0.3, 0.5), (0.6, 0.55), (0.98, 0.5)), 1.5), Pause(1.5),
    *prompt("3", "a yellow sun"), Drag(circle(0.75, 0.22, 0.06, 3), 4.0), Pause(1.0),
    Drag(circle(0.75, 0.22, 0.1, 1), 1.5), Pause(2.0), *prompt("4", "a red square"),
    Drag(tuple((0.15 + 0.2 * x, y) for x, y in zigzag(0.68, 0.88, 5)), 3.0), Pause(1.0),
    Keys(("bracketright", "bracketright")), Drag(((0.2, 0.9), (0.35, 0.9)), 1.0), Pause(2.5),
    Drag(zigzag(0.62, 0.7, 3), 2.5, erase=True), Pause(1.0), Keys(("z",)), Pause(1.5), Keys(("r",)), Pause(2.0),
    Keys(("1",)), Drag(zigzag(0.05, 0.2, 3), 2.5), Pause(1.0), *prompt("1", "dark night"), Pause(3.0),
    *prompt("1", "blue sky"), Pause(2.0), Keys(("2",)), Drag(zigzag(0.75, 0.95, 4), 3.0), Pause(2.0),
]  # fmt: skip

# Refining one object: the circle of an existing picture, reshaped, erased at its edge, renamed, undone.
REFINE = [
    Keys(("3",)), Drag(circle(0.5, 0.35, 0.12, 2), 4.0), Pause(0.8), Drag(circle(0.5, 0.35, 0.16, 1), 2.5),
    Pause(1.0), Drag(((0.3, 0.2), (0.7, 0.2)), 1.2, erase=True), Pause(0.7),
    Drag(((0.3, 0.5), (0.7, 0.5)), 1.2, erase=True), Pause(1.2), *prompt("3", "a pink circle"), Pause(2.0),
    Keys(("bracketleft",)), Drag(circle(0.5, 0.35, 0.1, 2), 3.0), Pause(0.8), Keys(("z",)), Pause(1.0),
    Keys(("y",)), Pause(1.0), *prompt("3", "a purple diamond"), Pause(2.5),
    Drag(((0.5, 0.15), (0.68, 0.35), (0.5, 0.55), (0.32, 0.35), (0.5, 0.15)), 3.0), Pause(1.0),
    Keys(("bracketright", "bracketright")), Drag(((0.45, 0.3), (0.55, 0.4), (0.45, 0.4), (0.55, 0.3)), 2.0),
    Pause(1.5), *prompt("3", "a red circle"), Pause(2.0), Drag(circle(0.5, 0.35, 0.08, 3), 4.0), Pause(1.0),
    Drag(((0.25, 0.35), (0.75, 0.35)), 1.5, erase=True), Pause(0.8), Keys(("z",)), Pause(1.5),
    Drag(circle(0.52, 0.36, 0.14, 1), 2.0), Pause(1.0), Keys(("e",)), Keys(text="7"), Keys(("Return",)), Pause(3.0),
]  # fmt: skip

# Long pauses between strokes: a painter who looks more than they paint.
PAUSES = [
    Keys(("3",)), *prompt("3", "a yellow sun"), Drag(circle(0.3, 0.25, 0.07, 3), 3.5), Pause(12.0),
    Keys(("bracketright",)), Drag(circle(0.3, 0.25, 0.1, 1), 1.5), Pause(14.0), *prompt("2", "beach sand"),
    Pause(10.0), Keys(("1",)), Drag(zigzag(0.05, 0.15, 3), 2.5), Pause(13.0),
]  # fmt: skip

SESSIONS = {
    "landscape": ("sketching a landscape: four brushes painted and named, busy", Composition(SIDE, SIDE), LANDSCAPE),
    "refine": ("refining one object of a picture: reshaped, erased, renamed, undone; busy",
               Composition(SIDE, SIDE, (*SKY_AND_GRASS, BrushSpec("3", "a red circle", disc(0.5, 0.35, 0.12))),
                           seed=3), REFINE),
    "pauses": ("long pauses between strokes (10-14 s): a painter looking more than painting",
               Composition(SIDE, SIDE, SKY_AND_GRASS, seed=5), PAUSES),
}  # fmt: skip


class Pointer:
    """xdotool on the window: keys and strokes in window pixels."""

    def __init__(self, display: str, window: str, scale: float) -> None:
        self.env = {**os.environ, "DISPLAY": display}
        self.window, self.scale = window, scale

    def run(self, *args: str) -> None:
        subprocess.run(["xdotool", *args], env=self.env, check=True, timeout=30)

    def at(self, fx: float, fy: float) -> tuple[str, str]:
        side = SIDE * self.scale
        return str(int(min(max(fx, 0.0), 0.999) * side)), str(int(min(max(fy, 0.0), 0.999) * side))

    def do(self, action: Drag | Keys | Pause) -> None:
        if isinstance(action, Pause):
            time.sleep(action.seconds)
        elif isinstance(action, Keys):
            for key in action.keys or ["space" if c == " " else c for c in action.text]:
                self.run("key", "--window", self.window, key)
                time.sleep(0.12)  # a typist's pace, and the window reads one key per UI tick
        else:
            self.drag(action)

    def drag(self, drag: Drag) -> None:
        points = np.asarray(drag.points, np.float64)
        lengths = np.linalg.norm(np.diff(points, axis=0), axis=1)
        along = np.concatenate([[0.0], np.cumsum(lengths)])
        n = max(2, int(drag.seconds * EVENTS_PER_SECOND))
        button = "3" if drag.erase else "1"
        started = time.monotonic()
        self.run("mousemove", "--window", self.window, *self.at(*points[0]), "mousedown", button)
        for k in range(1, n + 1):
            s = along[-1] * k / n
            x, y = np.interp(s, along, points[:, 0]), np.interp(s, along, points[:, 1])
            self.run("mousemove", "--window", self.window, *self.at(x, y))
            time.sleep(max(0.0, started + drag.seconds * k / n - time.monotonic()))
        self.run("mouseup", button)


def record(name: str, out: Path, work: Path) -> Recording:
    note, start, actions = SESSIONS[name]
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", "1", "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    display = ":" + xvfb.stdout.readline().strip()
    palette = save_palette(start, work / f"{name}-start.json")
    path = out / f"{name}.json"
    live = Path(sys.executable).parent / "semdraw-live"
    env = {**os.environ, "DISPLAY": display, "QT_QPA_PLATFORM": "xcb"}
    window_proc = subprocess.Popen([str(live), "--palette", str(palette), "--save-dir", str(work), "--record",
                                    str(path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        window = ""
        while not window and time.monotonic() < deadline:
            if window_proc.poll() is not None:
                raise RuntimeError(f"semdraw-live ended: {window_proc.stdout.read()}")
            found = subprocess.run(["xdotool", "search", "--name", "semdraw-live"], env=env, capture_output=True,
                                   text=True)  # fmt: skip
            window = (found.stdout.split() or [""])[0]
            time.sleep(0.5)
        time.sleep(3)  # the toolkit maps the window; the stream fills its pipeline
        pointer = Pointer(display, window, display_scale(SIDE, SIDE))
        began = time.monotonic()
        for action in actions:
            pointer.do(action)
        log.info("%s: %d actions in %.0f s", name, len(actions), time.monotonic() - began)
        pointer.run("key", "--window", window, "q")
        window_proc.wait(timeout=60)
    finally:
        if window_proc.poll() is None:
            window_proc.kill()
        xvfb.terminate()
        xvfb.wait(timeout=10)
    recording = Recording.load(path)
    recording = Recording(recording.start, recording.edits, recording.duration_s, recording.stream, "toy", note)
    recording.save(path)  # the note says what the session is
    return recording


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "runtime" / "tools" / "sessions")
    parser.add_argument("--only", choices=sorted(SESSIONS), default=None)
    args = parser.parse_args(argv)
    if not (shutil.which("Xvfb") and shutil.which("xdotool")):
        log.error("record_sessions: needs Xvfb and xdotool (apt-get install xvfb xdotool)")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        for name in [args.only] if args.only else list(SESSIONS):
            r = record(name, args.out, Path(work))
            log.info("%s: %d edits over %.1f s -> %s", name, len(r.edits), r.duration_s, args.out / f"{name}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
