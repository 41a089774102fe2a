"""`semdraw-live`: draw semantic brushes with the mouse while images stream from the model.

One OpenCV window (``WINDOW_GUI_NORMAL | WINDOW_AUTOSIZE``: image pixels are window pixels): the canvas on
the left (background + each brush's mask as a translucent colour), the streamed frame on the right, a
status line below, trackbars for the current brush. The model runs in its own thread
(:class:`FrameThread`); this loop ticks at ~60-75 Hz, hands edits to the stream once per tick and redraws
when something shown changed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from semdraw.api import BackgroundSpec, Composition, StreamConfig
from semdraw.build_engines.cache import engine_set_for, fastest_backend
from semdraw.choices import BACKENDS, DEFAULT_LAYERS, PRECISIONS
from semdraw.errors import SemdrawError
from semdraw.loading import MODEL_HELP
from semdraw.precision import ENGINE_SET_PRECISIONS
from semdraw.quiet import quiet_libraries
from semdraw.recording import Recorder
from semdraw.tools import canvas_side, seed_arg

from .palette import brush_colors, load_palette
from .panel import PANEL_WIDTH, draw_help, render_panel, wrap_status
from .session import FrameThread, LiveSession

log = logging.getLogger("semdraw.viewer")

TITLE = "semdraw-live"
# The alpha slider counts the steps a brush takes part in (its strength, read through the noise levels): a
# 0-100 % slider's top 1 % held every step that mattered, and one click silently removed a brush.
ALPHA_BAR = "alpha: steps on"
STATUS_LINES = 3  # the status area wraps messages over this many lines
STATUS_HEIGHT = 12 + 16 * STATUS_LINES
DISPLAY_SIDE = 448  # small canvases are enlarged to at least this (the toy model's 128 px is shown 4x)
MAX_DISPLAY_SIDE = 720  # larger canvases are shown at most this big (1024² at 0.7x: two panels in 1440 px)
MAX_WINDOW_WIDTH = 1600  # the whole window (canvas, image, panel) fits a screen this wide
NO_DISPLAY = ("semdraw-live: no display (DISPLAY is not set). Render a palette without a window with "
              "`semdraw-render PALETTE.json -o out.png`, or run under a virtual display: `xvfb-run semdraw-live`")  # fmt: skip

HELP = """left drag: paint   right drag: erase   wheel or [ ]: brush size
1-9: select brush   t: type prompt   n: negative prompt   b: background prompt
c: clear brush   z / Ctrl+Z: undo   y / Ctrl+Y: redo   r: random seed   e: type a seed
space: pause/resume   s: save frame   w: write palette
h: this help   q / Esc: quit      (typing: Enter commits, Esc cancels)"""

KEY_ENTER, KEY_ESC, KEY_BACKSPACE = (10, 13), 27, (8, 127)
KEY_CTRL_Z, KEY_CTRL_Y = 26, 25  # what a GTK build of OpenCV reports; its Qt build never reports Ctrl+key
KEY_CTRL = (0xFFE3, 0xFFE4)  # Control_L / Control_R keysyms: all OpenCV's Qt window reports of Ctrl+Z
KEY_DELETE = (0xFFFF, 0x2E0000, 0x1000007)  # X11 keysym, Windows virtual key, Qt key code


def display_scale(height: int, width: int, max_window_width: int = MAX_WINDOW_WIDTH) -> float:
    """How much the window scales the canvas: small canvases are enlarged by a whole factor to at least
    DISPLAY_SIDE pixels on their longer side; canvases beyond MAX_DISPLAY_SIDE (SDXL's 1024², panoramas)
    are shown smaller; and never so large that the window (canvas, image, panel) is wider than
    ``max_window_width`` (a wide canvas: the enlargement drops, then the canvas is shown smaller)."""
    side = max(height, width)
    scale = MAX_DISPLAY_SIDE / side if side > MAX_DISPLAY_SIDE else max(1, -(-DISPLAY_SIDE // side))
    room = (max_window_width - PANEL_WIDTH) / (2 * width)  # the largest scale that fits the screen
    if scale > room:
        scale = float(int(room)) if room >= 1 else room
    return scale


def render_canvas(composition: Composition, current: str, background: np.ndarray | None = None) -> np.ndarray:
    """The canvas as RGB uint8 at its size: background (image or light grey) + translucent brush colours."""
    h, w = composition.height, composition.width
    canvas = np.full((h, w, 3), 235, np.float32) if background is None else background.astype(np.float32)
    for b, color in zip(composition.brushes, brush_colors(composition).values(), strict=True):
        a = (b.mask.astype(np.float32) / 255)[..., None] * (0.6 if b.name == current else 0.4)
        canvas = canvas * (1 - a) + np.asarray(color, np.float32) * a
    return canvas.clip(0, 255).astype(np.uint8)


class Window:
    """Mouse, keys, trackbars and drawing; every decision is a call on the session."""

    def __init__(self, session: LiveSession, frames: FrameThread) -> None:
        import cv2

        self.cv2 = cv2
        self.session, self.frames = session, frames
        pal = session.composition
        self.scale = display_scale(pal.height, pal.width)
        self.side_w, self.side_h = round(pal.width * self.scale), round(pal.height * self.scale)
        self.show_help = False
        self._inputs = 0  # input events seen: a change the window must show
        self._cursor: tuple[int, int] | None = None  # mouse position on the canvas (window pixels)
        self._button: int | None = None
        self._background_of = session.composition.background
        self._background = self._load_background()
        cv2.namedWindow(TITLE, cv2.WINDOW_GUI_NORMAL | cv2.WINDOW_AUTOSIZE)
        cv2.setMouseCallback(TITLE, self._on_mouse)
        # Trackbar positions the window itself set: Qt may deliver a value change queued, after the code that
        # set it returned, so a callback whose value is the position we set is our own echo, not an edit.
        self._positions: dict[str, int] = {}
        b = session.brush
        for name, value, top, edit in (
            (ALPHA_BAR, session.alpha_steps(b.alpha), session.stream.steps,
             lambda v: session.set_params(alpha=session.alpha_for(v))),
            ("blur px", round(b.blur), 32, lambda v: session.set_params(blur=float(v))),
            ("strength %", round(b.strength * 100), 100, lambda v: session.set_params(strength=v / 100)),
            ("seed", pal.seed % 1000, 999, session.set_seed),
        ):  # created at the values they show: nothing to echo
            self._positions[name] = value
            cv2.createTrackbar(name, TITLE, value, top, lambda v, name=name, edit=edit: self._on_trackbar(name, v, edit))

    def _load_background(self) -> np.ndarray | None:
        pal = self.session.composition
        self._background_of = pal.background
        image = pal.background_for_semdraw().image
        return None if image is None else np.asarray(image.resize((pal.width, pal.height)))

    # ------------------------------------------------------------------ input
    def _on_mouse(self, event: int, x: int, y: int, flags: int, _param: object) -> None:
        cv2, s = self.cv2, self.session
        self._inputs += 1  # the window shows input at the next tick
        self._cursor = (x, y) if 0 <= x < self.side_w and 0 <= y < self.side_h else None
        if event == cv2.EVENT_MOUSEWHEEL:
            s.resize_brush(1 if wheel_delta(flags) > 0 else -1)
            return
        down = {cv2.EVENT_LBUTTONDOWN: 1, cv2.EVENT_RBUTTONDOWN: 2}.get(event)
        if down is not None:
            self._button = down
        if event in (cv2.EVENT_LBUTTONUP, cv2.EVENT_RBUTTONUP):
            self._button = None
            s.end_stroke()
            return
        if self._button is None or not (0 <= x < self.side_w and 0 <= y < self.side_h):
            return
        if event in (cv2.EVENT_MOUSEMOVE, cv2.EVENT_LBUTTONDOWN, cv2.EVENT_RBUTTONDOWN):
            s.paint(int(x / self.scale), int(y / self.scale), erase=self._button == 2, stroke_start=down is not None)

    def _on_trackbar(self, name: str, value: int, edit: Callable[[int], object]) -> None:
        if self._positions.get(name) != value:  # the user moved it
            self._positions[name] = value
            edit(value)

    def _set_trackbar(self, name: str, value: int) -> None:
        if self._positions.get(name) != value:
            self._positions[name] = value
            self.cv2.setTrackbarPos(name, TITLE, value)

    def _sync_seed(self) -> None:
        """The seed trackbar follows a typed or random seed (it shows seed mod 1000), without feeding back."""
        self._set_trackbar("seed", self.session.composition.seed % 1000)

    def _sync_trackbars(self) -> None:
        """Show the current brush's values (without feeding them back as edits)."""
        b = self.session.brush
        self._set_trackbar(ALPHA_BAR, self.session.alpha_steps(b.alpha))
        self._set_trackbar("blur px", round(b.blur))
        self._set_trackbar("strength %", round(b.strength * 100))

    def handle_key(self, key: int) -> bool:
        """One key press; False to quit."""
        s = self.session
        if key < 0:
            return True
        if s.text is not None:  # typing a prompt
            code = key & 0xFF
            if code in KEY_ENTER:
                s.commit_text()
                self._sync_seed()
            elif code == KEY_ESC:
                s.text = None
            elif code in KEY_BACKSPACE:
                s.text.backspace()
            elif key in KEY_DELETE:
                s.text.clear()
            elif key > 0xFFFF and 32 <= code < 127:  # a printable key with modifier bits (GTK): its character
                s.text.type(chr(code))
            elif 32 <= key < 0xFE00 and chr(key).isprintable():  # any letter, accented ones too (0xFE00-0xFFFF:
                s.text.type(chr(key))  # X11 keysyms of arrows, function keys and the like, never characters)
            else:
                s.message = "that key types no character: ignored (Delete clears the field, Esc cancels)"
            return True
        if key in KEY_CTRL:  # OpenCV's Qt window keeps Ctrl+key for its own zoom and pan (measured under Xvfb)
            s.message = "Ctrl shortcuts belong to OpenCV's window: undo is z, redo is y"
            return True
        ch = chr(key & 0xFF) if 0 <= key & 0xFF < 128 else ""
        if ch in ("q",) or key & 0xFF == KEY_ESC:
            return False
        if ch.isdigit() and ch != "0":
            s.select(ch)
            self._sync_trackbars()
        elif ch in "tnb" and ch:
            s.begin_text({"t": "prompt", "n": "negative_prompt", "b": "background"}[ch])
        elif ch == "c":
            s.clear()
        elif ch == "z" or key & 0xFF == KEY_CTRL_Z:
            s.undo()
        elif ch == "y" or key & 0xFF == KEY_CTRL_Y:
            s.redo()
        elif ch == "r":
            s.random_seed()
            self._sync_seed()
        elif ch == "e":
            s.begin_text("seed")
        elif ch == " ":
            if self.frames.paused.is_set():
                self.frames.paused.clear()
            else:
                self.frames.paused.set()
        elif ch == "s":
            s.save_frame(self.frames.frame)
        elif ch == "w":
            s.write_palette()
        elif ch == "h":
            self.show_help = not self.show_help
        elif ch == "[":
            s.resize_brush(-1)
        elif ch == "]":
            s.resize_brush(1)
        return True

    # ------------------------------------------------------------------ drawing
    def compose(self) -> np.ndarray:
        """The whole window image (BGR)."""
        cv2, s = self.cv2, self.session
        pal = s.composition
        if pal.background is not self._background_of:  # a new background image: decoded once
            self._background = self._load_background()
        canvas = render_canvas(pal, s.current, self._background)
        frame = self.frames.frame
        if frame is None or frame.shape[:2] != (pal.height, pal.width):
            frame = np.zeros((pal.height, pal.width, 3), np.uint8)
        both = np.concatenate([canvas, frame], axis=1)
        shrink = self.scale < 1  # averaging when shrinking; pixels stay crisp when enlarging
        both = cv2.resize(both, (2 * self.side_w, self.side_h),
                          interpolation=cv2.INTER_AREA if shrink else cv2.INTER_NEAREST)  # fmt: skip
        if self._cursor is not None:  # the brush: a circle of its size where the mouse is on the canvas
            radius = max(1, round(s.size * self.scale))
            cv2.circle(both, self._cursor, radius, (255, 255, 255), 1, cv2.LINE_AA)
            cv2.circle(both, self._cursor, radius + 1, (0, 0, 0), 1, cv2.LINE_AA)
        status = np.full((STATUS_HEIGHT, both.shape[1], 3), 30, np.uint8)
        left = np.concatenate([both, status], axis=0)
        panel = render_panel(s.panel_state(self.frames.fps), left.shape[0])
        img = cv2.cvtColor(np.concatenate([left, panel], axis=1), cv2.COLOR_RGB2BGR)
        for i, line in enumerate(wrap_status(self.status_line(), both.shape[1])[-STATUS_LINES:]):
            cv2.putText(img, line, (6, self.side_h + 19 + 16 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                        (235, 235, 235), 1, cv2.LINE_AA)  # fmt: skip
        if self.show_help:
            draw_help(img, HELP.splitlines(), left.shape[1])
        return img

    def status_line(self) -> str:
        s = self.session
        if s.text is not None:
            label = {"prompt": "prompt", "negative_prompt": "negative prompt", "background": "background prompt",
                     "seed": "seed"}  # fmt: skip
            return (f"brush {s.current} {label[s.text.field]}: {s.text.shown}   (type to replace; Enter: commit, "
                    "Delete: clear, Esc: cancel)")  # fmt: skip
        state = "paused" if self.frames.paused.is_set() else "idle" if s.stream.idle else f"{self.frames.fps:4.1f} fps"
        note = s.message or self.frames.error or "h: help"
        return f"brush {s.current}: '{s.brush.prompt}'  size {s.size}  {state}  | {note}"

    def run(self) -> float:
        """The UI loop until quit; returns its ticks per second (each tick takes input and pushes edits).

        The window image is composed and shown only when something it shows changed (a new frame, input,
        a message, the fps readout), so an idle window (an idle stream runs no network) costs almost nothing.
        """
        cv2, s = self.cv2, self.session
        ticks, started, shown = 0, time.perf_counter(), None
        while True:
            s.flush_edits()
            state = (id(self.frames.frame), self._inputs, s.message, self.frames.error, round(self.frames.fps, 1),
                     self.frames.paused.is_set(), self.show_help)  # fmt: skip
            if state != shown:
                cv2.imshow(TITLE, self.compose())
                shown = state
            ticks += 1
            key = cv2.waitKeyEx(10)
            if key >= 0:
                self._inputs += 1
            if not self.handle_key(key):
                break
            if cv2.getWindowProperty(TITLE, cv2.WND_PROP_VISIBLE) < 1:  # closed with the title-bar button
                break
        cv2.destroyAllWindows()
        return ticks / max(time.perf_counter() - started, 1e-9)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="semdraw-live", description="Draw with semantic brushes while images stream. "
                                "With no arguments: the embedded toy model on the CPU. Press h in the window for keys.",
                                epilog=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", default="toy", help=MODEL_HELP)
    src.add_argument("--engines", type=Path, default=None, help="an engine set folder from build-engines")
    src.add_argument("--server", default=None, help="paint here, generate on a semdraw-serve server: the URL it printed "
                     "(http://host:port/?token=...); the canvas is the server's")  # fmt: skip
    p.add_argument("--token", default=None, help="with --server: the server's token (default: the URL's, else "
                   "$SEMDRAW_TOKEN)")  # fmt: skip
    p.add_argument("--height", type=canvas_side, default=None, help="canvas height (default: palette's, else native)")
    p.add_argument("--width", type=canvas_side, default=None, help="canvas width (default: palette's, else native)")
    p.add_argument("--layers", type=int, default=None,
                   help="stream prompt rows: brushes painted at once (default 4; with --engines the set's, and "
                        "another count only where the set's denoiser has a row axis: onnxruntime sets)")
    p.add_argument("--background", type=Path, default=None, help="a background image to paint over (inpainting)")
    p.add_argument("--palette", type=Path, default=None, help="load this palette (w writes it back)")
    p.add_argument("--save-dir", type=Path, default=Path("semdraw-out"), help="where s and w write (default semdraw-out)")
    p.add_argument("--seed", type=seed_arg, default=None, help="noise seed (default: the palette's, else 0)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="the torch model's arithmetic on the CPU: auto (bf16 for an SD-sized model on a CPU with "
                        "bf16 in hardware, AMX or AVX-512 BF16, where it is faster; else fp32), fp32 or bf16")  # fmt: skip
    p.add_argument("--record", type=Path, default=None, metavar="FILE",
                   help="record the session (every edit with its time) to FILE when the window closes: "
                        "semdraw-bench session FILE replays it")  # fmt: skip
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="auto: for --model the backend that streams it fastest here (on a CPU: onnxruntime for "
                        "the toy, 1.5-2x torch's speed; torch for other models and on a GPU), for --engines "
                        "TensorRT else onnxruntime. onnxruntime or tensorrt with --model build its engine set "
                        "once (about 6 s for the toy; cached in $SEMDRAW_CACHE, else ~/.cache/semdraw) and run it")  # fmt: skip
    return p


def build_session(args: argparse.Namespace) -> LiveSession:
    """Model or engine set, stream and palette, from the command line (no window involved)."""
    import semdraw

    if args.background is not None and not args.background.is_file():  # said before any model loads
        raise SemdrawError(f"--background {args.background}: no such image file")
    if args.background is not None:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(args.background) as image:
                image.verify()  # reads the header and checks the file: no model loaded yet
        except (OSError, UnidentifiedImageError, SyntaxError) as err:
            raise SemdrawError(f"--background {args.background}: not an image PIL can read ({err})") from None
    palette = load_palette(args.palette) if args.palette else None
    if args.server is not None:
        return _remote_session(args, palette)
    engines, backend = args.engines, args.backend
    if engines is None:  # a model: its canvas is checked before any weights load or any set is built
        height = args.height or (palette.height if palette else None)
        width = args.width or (palette.width if palette else None)
        semdraw.loading.check_canvas(args.model, height, width)
        if args.precision in ENGINE_SET_PRECISIONS:  # else a torch model's arithmetic: torch runs it
            backend = fastest_backend(args.model, backend)
        # on an engine backend: the model's set, built once, then reused (None: the model runs on --backend's
        # torch, also where auto's choice could not be built)
        engines = engine_set_for(args.model, height, width, args.layers or DEFAULT_LAYERS, backend, args.backend)
    if engines is not None:
        # The set's own text encoders: the source model is not loaded. An asked canvas or layer count is
        # honoured where the set allows it, else refused in one line that says how to rebuild it.
        stream = semdraw.Stream(engines, backend=backend, seed_step=0, height=args.height, width=args.width,
                                layers=args.layers, precision=args.precision)  # fmt: skip
    else:
        model = semdraw.load_model(args.model)
        # seed_step=0: every image gets the same noise, so the picture holds still while nothing is edited.
        stream = semdraw.Stream(model, height=height, width=width, layers=args.layers or DEFAULT_LAYERS, backend=args.backend,
                                seed_step=0, precision=args.precision)  # fmt: skip
    if palette is None:
        palette = Composition(stream.height, stream.width)
    elif (palette.height, palette.width) != (stream.height, stream.width):
        raise SemdrawError(f"the palette is {palette.height}x{palette.width} but the stream is "
                           f"{stream.height}x{stream.width}; pass matching --height/--width or another engine set")  # fmt: skip
    if args.seed is not None:
        palette = replace(palette, seed=args.seed)
    if args.background is not None:  # the photo replaces a background prompt
        palette = replace(palette, background=BackgroundSpec(image=args.background.read_bytes()))
    return LiveSession(stream, palette, args.save_dir, args.palette)


def _remote_session(args: argparse.Namespace, palette: Composition | None) -> LiveSession:
    """The window as a client of ``--server``: its frames, our composition (sent as edits)."""
    from .remote import RemoteStream, RemoteSync, parse_server, server_canvas

    base, ws_url, token = parse_server(args.server, args.token or os.environ.get("SEMDRAW_TOKEN"))
    height, width = server_canvas(base)
    if palette is None:
        palette = Composition(height, width)
    elif (palette.height, palette.width) != (height, width):
        raise SemdrawError(f"the palette is {palette.height}x{palette.width} but the server paints {height}x{width}")
    if args.seed is not None:
        palette = replace(palette, seed=args.seed)
    if args.background is not None:
        palette = replace(palette, background=BackgroundSpec(image=args.background.read_bytes()))
    # seed_step 0, as the local window: the picture holds still while nothing is edited
    stream = RemoteStream(base, ws_url, token, palette, StreamConfig(layers=args.layers, seed_step=0))
    return LiveSession(stream, palette, args.save_dir, args.palette, sync=RemoteSync(stream))


def _point_qt_at_system_fonts() -> None:
    """opencv-python's Qt ships no fonts (trackbar labels would be blank); use the system's if Qt has none."""
    if os.environ.get("QT_QPA_FONTDIR"):
        return
    for folder in ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/TTF", "/usr/share/fonts/truetype",
                   "/usr/share/fonts"):  # fmt: skip
        if Path(folder).is_dir() and any(Path(folder).rglob("*.ttf")):
            os.environ["QT_QPA_FONTDIR"] = folder
            return


def wheel_delta(flags: int) -> int:
    """The wheel's delta from a mouse callback's ``flags`` (its high 16 bits, signed): what
    ``cv2.getMouseWheelDelta`` returned, which opencv-python 5.1 no longer has."""
    flags &= 0xFFFFFFFF
    return (flags - (1 << 32) if flags >= 1 << 31 else flags) >> 16


def display_reachable(display: str, timeout: float = 1.0) -> bool:
    """Whether an X server answers at ``display`` (``:N[.S]`` or ``host:N[.S]``), checked before Qt is
    touched: Qt aborts the whole process (rc 134) on a display it cannot open."""
    import re
    import socket

    match = re.fullmatch(r"(?:unix/)?([^:]*):(\d+)(?:\.\d+)?", display)
    if match is None:
        return False
    host, number = match.group(1), int(match.group(2))
    if host in ("", "unix"):
        for address in (f"/tmp/.X11-unix/X{number}", f"\0/tmp/.X11-unix/X{number}"):  # file, abstract socket
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                try:
                    sock.connect(address)
                    return True
                except OSError:
                    continue
        return False
    try:
        with socket.create_connection((host, 6000 + number), timeout=timeout):
            return True
    except OSError:
        return False


def _write_recording(recorder: Recorder, path: Path) -> None:
    recording = recorder.recording()
    try:
        recording.save(path)
    except OSError as err:
        log.error("semdraw-live: the recording could not be written to %s: %s", path, err)
        return
    log.info("semdraw-live: recorded %d edits over %.0f s to %s (replay: semdraw-bench session %s)",
             len(recording.edits), recording.duration_s, path, path)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    quiet_libraries()  # SEMDRAW_VERBOSE=1 shows the libraries' notices and load bars
    args = _parser().parse_args(argv)
    display = os.environ.get("DISPLAY")
    if not display or not display_reachable(display):  # OpenCV aborts the process without a reachable display
        log.error(NO_DISPLAY if not display else NO_DISPLAY.replace("DISPLAY is not set", f"DISPLAY={display} "
                                                                    "cannot be reached"))  # fmt: skip
        return 2
    _point_qt_at_system_fonts()
    try:
        import cv2  # noqa: F401
    except ImportError:
        log.error("semdraw-live needs OpenCV: pip install 'semdraw[viewer]'")
        return 2
    if args.record is not None and not args.record.parent.is_dir():  # said before any model loads
        log.error("semdraw-live: --record %s: no folder %s to write it in", args.record, args.record.parent)
        return 2
    try:
        session = build_session(args)
    except SemdrawError as err:
        log.error("semdraw-live: %s", err)
        return 2
    except KeyboardInterrupt:
        log.error("semdraw-live: interrupted while loading")
        return 130
    networks = getattr(session.stream, "networks", None)
    if networks is not None:  # a local stream: torch keeps what its networks' own threads leave it
        import torch

        from semdraw.networks import torch_threads_beside

        torch.set_num_threads(torch_threads_beside(networks, torch.get_num_threads()))
    if args.record is not None:
        session.recorder = Recorder(session.composition, StreamConfig(layers=session.stream.layers, seed_step=0),
                                    model=str(args.server or args.engines or args.model))  # fmt: skip
    frames = FrameThread(session.stream)
    frames.start()
    started = time.perf_counter()
    try:
        window = Window(session, frames)
        log.info("semdraw-live: window ready (%dx%d canvas shown at %gx); press h for help",
                 session.composition.width, session.composition.height, window.scale)  # fmt: skip
        redraw_rate = window.run()
    except KeyboardInterrupt:  # Ctrl-C in the terminal: the window closes; what was written stays written
        log.error("semdraw-live: interrupted (the palette is as last written with w)")
        return 130
    finally:
        frames.stop()
        if hasattr(session.stream, "close"):  # a server's stream: the connection closes cleanly
            session.stream.close()
        if session.recorder is not None:  # written however the window closed
            _write_recording(session.recorder, args.record)
    log.info("semdraw-live: closed after %.0f s (%.0f UI ticks per second)", time.perf_counter() - started,
             redraw_rate)  # fmt: skip
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
