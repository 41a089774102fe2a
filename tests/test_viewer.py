"""The viewer: palette files, the window's session logic, semdraw-render, and semdraw-live under a real X server."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import semdraw
from semdraw.api import BackgroundSpec, BrushSpec, Composition
from semdraw.toy import fidelity
from semdraw.toy.architecture import SIZE
from semdraw.viewer import PaletteError, load_palette, save_palette
from semdraw.viewer import render as render_cli
from semdraw.viewer.live import DISPLAY_SIDE, NO_DISPLAY, display_scale, render_canvas
from semdraw.viewer.session import LiveSession

H = W = SIZE  # the toy model's native size: what semdraw-live opens with no arguments


def band(rows: slice) -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    m[rows] = 255
    return m


def painted_palette() -> Composition:
    return Composition(H, W, (BrushSpec("1", "blue sky", band(slice(0, H // 2)), blur=1.5),
                              BrushSpec("2", "green grass", band(slice(H // 2, H)), alpha=0.999)),
                       BackgroundSpec(prompt="white snow"), seed=3).check()  # fmt: skip


def by_name(composition: Composition) -> dict[str, BrushSpec]:
    return {b.name: b for b in composition.brushes}


# ---------------------------------------------------------------- palette files
def test_a_palette_file_is_one_self_contained_composition(tmp_path):
    photo = io.BytesIO()
    Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(photo, format="PNG")
    pal = replace(painted_palette(), background=BackgroundSpec(image=photo.getvalue()))
    path = save_palette(pal, tmp_path / "sub" / "drawing.json")
    assert [p.name for p in path.parent.iterdir()] == ["drawing.json"]  # one file, nothing half-written beside it
    moved = tmp_path / "moved.json"
    shutil.copy(path, moved)
    back = load_palette(moved)
    assert back == pal and back.background.image == photo.getvalue()  # masks bit for bit, the image's own bytes
    assert json.loads(path.read_text())["format"] == semdraw.api.FORMAT_VERSION
    brushes = back.brushes_for_semdraw()
    assert [b.prompt for b in brushes] == ["blue sky", "green grass"] and brushes[1].mask_strength == 0.999


def test_a_palette_written_by_the_first_release_opens_migrated(tmp_path):
    """tests/data/palette-v1 was written by the first release's Palette.save (JSON beside a masks folder,
    brush colours, a background image path, brush 2 disabled): it opens as the composition it describes."""
    source = Path(__file__).parent / "data" / "palette-v1"
    shutil.copytree(source, tmp_path / "old")
    old = load_palette(tmp_path / "old" / "drawing.json")
    doc = json.loads((source / "drawing.json").read_text())
    assert (old.height, old.width, old.seed) == (doc["height"], doc["width"], doc["seed"]) == (32, 32, 7)
    assert old.background.image == (source / "photo.png").read_bytes() and old.background.prompt == ""
    for brush, entry in zip(old.brushes, doc["brushes"], strict=True):
        assert np.array_equal(brush.mask, np.asarray(Image.open(source / entry["mask"]).convert("L")))
        assert (brush.name, brush.prompt, brush.negative_prompt, brush.alpha, brush.blur, brush.strength,
                brush.enabled) == tuple(entry[k] for k in ("name", "prompt", "negative_prompt", "alpha", "blur",
                                                           "strength", "enabled"))  # fmt: skip
    again = save_palette(old, tmp_path / "new.json")  # written back in the current format, read back equal
    assert load_palette(again) == old and "color" not in again.read_text()


def test_bad_palettes_are_clear_errors(tmp_path):
    with pytest.raises(PaletteError, match="cannot read"):
        load_palette(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(PaletteError, match="invalid JSON"):
        load_palette(bad)
    bad.write_text(json.dumps({"format": 1, "height": 64, "width": 64,
                               "brushes": [{"name": "1", "color": [1, 2, 3], "mask": "nope.png"}]}))  # fmt: skip
    with pytest.raises(PaletteError, match="cannot read mask"):
        load_palette(bad)
    bad.write_text(json.dumps({"width": 64}))
    with pytest.raises(PaletteError, match="not a valid palette"):
        load_palette(bad)


def test_canvas_shows_brushes_as_translucent_colours():
    pal = painted_palette()
    img = render_canvas(pal, "1")
    top, bottom = img[H // 4, 5].astype(int), img[3 * H // 4, 5].astype(int)
    assert np.argmax(top) == 2 and np.argmax(bottom) == 1  # the colours the prompts name: blue sky, green grass
    for side in (64, H, 300):  # small canvases are enlarged to at least DISPLAY_SIDE, never beyond 2x that
        assert DISPLAY_SIDE <= display_scale(side, side) * side < 2 * DISPLAY_SIDE
    assert display_scale(512, 512) == 1
    assert display_scale(1024, 1024) * 1024 <= 720 and display_scale(1024, 2048) * 2048 <= 720  # SDXL fits a screen
    from semdraw.viewer.panel import PANEL_WIDTH

    for h, w in ((128, 384), (128, 256), (512, 1536), (64, 2048)):  # wide canvases: the window fits 1600 px
        assert 2 * w * display_scale(h, w) + PANEL_WIDTH <= 1600, (h, w)
    assert display_scale(128, 384) == 1  # shown at its size rather than enlarged past the screen


# ---------------------------------------------------------------- the session (no window)
def test_session_mirrors_active_brushes_into_stream_slots(toy, tmp_path):
    stream = semdraw.Stream(toy, layers=2, seed=0)
    s = LiveSession(stream, None, tmp_path)
    s.size = 3
    s.paint(10, 10, stroke_start=True)
    s.paint(30, 10)
    s.end_stroke()
    mask = s.brush_named("1").mask
    assert mask[10, 10:31].min() == 255 and mask[40].max() == 0 and mask[8:13, 20].sum() == 5 * 255  # 2·3 - 1 px
    s.flush_edits()
    assert stream.brushes == {}  # painted but no prompt yet: not generated
    s.begin_text("prompt")
    s.text.text = "a red circle"
    s.commit_text()
    s.flush_edits()
    assert stream.brushes[0].prompt == "a red circle"
    assert np.array_equal(np.asarray(stream.brushes[0].mask), s.brush_named("1").mask)
    s.paint(10, 10, erase=True, stroke_start=True)
    assert np.asarray(stream.brushes[0].mask)[10, 10] == 255  # the stream holds its own copy until the push
    s.flush_edits()
    assert np.asarray(stream.brushes[0].mask)[10, 10] == 0
    for name, prompt in (("2", "green grass"), ("3", "blue sky")):
        s.select(name)
        s.paint(50, 50, stroke_start=True)
        s.begin_text("prompt")
        s.text.text = prompt
        s.commit_text()
        s.flush_edits()
    assert "--layers 3" in s.message  # a third active brush does not fit two rows: said, not raised
    s.select("1")
    s.clear()
    s.flush_edits()  # the row brush 1 leaves is taken by the brush that waited
    assert sorted(b.prompt for b in stream.brushes.values()) == ["blue sky", "green grass"]
    frame = stream()
    first, second = s.save_frame(frame), s.save_frame(frame)
    assert first != second and first.exists() and second.exists()  # never overwrites


# ---------------------------------------------------------------- semdraw-render
def test_render_image_at_a_larger_size_and_a_video(tmp_path, caplog):
    path = save_palette(painted_palette(), tmp_path / "p.json")
    out = tmp_path / "wide.png"
    assert render_cli.main([str(path), "-o", str(out), "--width", str(2 * W)]) == 0
    img = np.asarray(Image.open(out))
    assert img.shape == (H, 2 * W, 3)
    names, _ = fidelity.palette()
    idx = fidelity.nearest_palette_index(img)  # the bands keep their size, centred: sky in the middle columns
    assert np.mean(idx[H // 16 : 7 * H // 16, W // 2 + 8 : 3 * W // 2 - 8] == names.index("blue sky")) > 0.5
    video = tmp_path / "v.avi"
    assert render_cli.main([str(path), "-o", str(video), "--frames", "6"]) == 0
    import cv2

    cap = cv2.VideoCapture(str(video))
    count = 0
    while cap.read()[0]:
        count += 1
    assert count == 6
    assert render_cli.main([str(path), "-o", str(tmp_path / "x.mp4")]) == 2
    assert "--frames" in caplog.text
    assert not (tmp_path / "x.mp4").exists()


# ---------------------------------------------------------------- semdraw-live
def test_live_without_a_display_exits_2_with_advice():
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    live = Path(sys.executable).parent / "semdraw-live"
    cmd = [str(live)] if live.exists() else [sys.executable, "-m", "semdraw.viewer.live"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert NO_DISPLAY in done.stderr and "semdraw-render" in done.stderr


@pytest.fixture
def xserver():
    if not (shutil.which("Xvfb") and shutil.which("xdotool")):
        pytest.skip("needs Xvfb and xdotool (Debian: apt-get install xvfb xdotool; .ci/run installs them)")
    proc = subprocess.Popen(["Xvfb", "-displayfd", "1", "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    display = ":" + proc.stdout.readline().strip()
    yield display
    proc.terminate()
    proc.wait(timeout=10)


class X:
    """xdotool on one window, with the pauses the toolkit needs between events."""

    def __init__(self, display: str, window: str) -> None:
        self.env = {**os.environ, "DISPLAY": display}
        self.window = window

    def do(self, *args: str) -> None:
        subprocess.run(["xdotool", *args], env=self.env, check=True, timeout=30)
        time.sleep(0.05)

    def key(self, name: str) -> None:
        self.do("key", "--window", self.window, name)

    def type(self, text: str) -> None:
        # one key event per character, each its own command with a pause: `xdotool type` sends a burst that
        # a busy window can drop a key of (seen in CI: "gree grass")
        for char in text:
            self.do("key", "--window", self.window, "space" if char == " " else char)
            time.sleep(0.03)

    def drag(self, y: int, x0: int, x1: int) -> None:
        self.do("mousemove", "--window", self.window, str(x0), str(y), "mousedown", "1")
        for x in range(x0, x1 + 1, 32):
            self.do("mousemove", "--window", self.window, str(x), str(y))
        self.do("mouseup", "1")


def find_window(proc: subprocess.Popen, env: dict[str, str], timeout: float = 90.0) -> str:
    """The id of semdraw-live's window once it is shown (the process must stay alive meanwhile)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        found = subprocess.run(["xdotool", "search", "--name", "semdraw-live"], env=env, capture_output=True,
                               text=True)  # fmt: skip
        if found.stdout.split():
            time.sleep(2)  # the toolkit finishes mapping it
            return found.stdout.split()[0]
        time.sleep(0.5)
    raise AssertionError("the window never appeared")


def _grab_window(display: str, window: str) -> np.ndarray:
    """The window's pixels on the X server, RGB."""
    from PIL import ImageGrab

    geometry = subprocess.run(["xdotool", "getwindowgeometry", "--shell", window], env={**os.environ, "DISPLAY": display},
                              capture_output=True, text=True, check=True).stdout  # fmt: skip
    g = dict(line.split("=", 1) for line in geometry.split())
    x, y, w, h = (int(g[k]) for k in ("X", "Y", "WIDTH", "HEIGHT"))
    return np.asarray(ImageGrab.grab(bbox=(x, y, x + w, y + h), xdisplay=display).convert("RGB"))


def _find_block(img: np.ndarray, color: tuple[int, int, int], side: int) -> tuple[int, int]:
    """Top-left (y, x) of the first side x side block of exactly ``color``."""
    hit = (img == np.asarray(color, np.uint8)).all(-1)
    for y, x in zip(*np.nonzero(hit), strict=True):
        if hit[y : y + side, x : x + side].all():
            return int(y), int(x)
    raise AssertionError(f"no {side}x{side} block of {color} in the window")


def test_live_window_end_to_end(xserver, tmp_path):
    """Open a palette (brush 1 with non-default sliders), paint two brushes and type their prompts in the
    window, press Ctrl+Z (OpenCV's Qt window keeps it: nothing is undone), save a frame where the save folder
    cannot be made (the window goes on), write the palette, turn the wheel and paint a wider stroke, undo a
    stroke, write again, save a frame, quit. The window's panel pixels are the panel of the session's state
    (with the alpha slider's steps); the undone stroke leaves the masks bit for bit as before."""
    from semdraw.viewer.palette import NAMED_COLORS
    from semdraw.viewer.panel import LINE, PANEL_WIDTH, PanelBrush, PanelState, render_panel

    save = tmp_path / "out"
    save.write_text("a file where the save folder should be")  # the first `s` fails
    start = Composition(H, W, (BrushSpec("1", "", np.zeros((H, W), np.uint8), alpha=0.9, blur=3.0, strength=0.9),))
    opened = save_palette(start, tmp_path / "drawing.json")
    live = Path(sys.executable).parent / "semdraw-live"
    # the window's default backend for the toy on a CPU is onnxruntime: it builds the toy's set here, once
    env = {**os.environ, "DISPLAY": xserver, "QT_QPA_PLATFORM": "xcb", "SEMDRAW_CACHE": str(tmp_path / "cache")}
    recorded = tmp_path / "session.json"
    # fp32: the saved frame is compared with generate() at 1/255 (auto would be bf16 on a CPU with AMX-BF16)
    proc = subprocess.Popen([str(live), "--save-dir", str(save), "--palette", str(opened), "--record", str(recorded),
                             "--precision", "fp32"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        window = find_window(proc, env)
        x = X(xserver, window)
        scale = display_scale(H, W)
        # Display rows of horizontal strokes; the default brush (2 * H // 16 - 1 canvas px wide) fills the gaps.
        size = H // 16
        top_rows = [round(r) * scale + scale // 2 for r in np.linspace(0, H // 2 - size, 6)]
        bottom_rows = [round(r) * scale + scale // 2 for r in np.linspace(H // 2 + size - 1, H - 1, 6)]
        for brush, rows, prompt in (("1", top_rows, "blue sky"), ("2", bottom_rows, "green grass")):
            x.key(brush)
            for y in rows:
                x.drag(y, 0, W * scale - 1)
            x.key("t")
            x.type(prompt)
            x.key("Return")
        x.key("ctrl+z")  # only the Ctrl key reaches the program: the status line says z undoes
        x.key("s")  # the save folder is a file: a status message, and the window goes on
        time.sleep(1)
        assert proc.poll() is None, proc.stdout.read()
        save.unlink()
        time.sleep(4)  # let images that entered after the last edit finish
        x.key("w")
        time.sleep(1)
        written = {b.name: b.mask for b in load_palette(opened).brushes}
        x.drag(top_rows[2], 0, W * scale - 1)  # brush 2 over the sky ...
        x.key("z")  # ... undone
        x.key("1")  # the sliders (and the panel's slider line) show brush 1's values
        x.key("w")
        time.sleep(4)  # the images that entered during the undone stroke finish
        x.key("s")
        time.sleep(1)
        window_pixels = _grab_window(xserver, window)
        if os.environ.get("SEMDRAW_SCREENSHOTS"):  # the README's picture of the window, from this real run
            Image.fromarray(window_pixels).save(Path(os.environ["SEMDRAW_SCREENSHOTS"]) / "window.png")
        # The wheel, as a real pointer turns it over the canvas: three notches up widen brush 3's next stroke.
        # (Last: OpenCV's Qt view also zooms on the wheel, which would move the panel the grab above reads.)
        geometry = subprocess.run(["xdotool", "getwindowgeometry", "--shell", window], env=env, capture_output=True,
                                  text=True, check=True).stdout  # fmt: skip
        g = dict(line.split("=", 1) for line in geometry.split())
        x.key("3")
        x.do("mousemove", str(int(g["X"]) + W * scale // 2), str(int(g["Y"]) + H * scale // 2))
        for _ in range(3):
            x.do("click", "4")
        x.drag((H // 2) * scale + scale // 2, W * scale // 4, 3 * W * scale // 4)
        x.key("w")
        time.sleep(1)
        x.key("q")
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    log = proc.stdout.read()
    assert (tmp_path / "cache" / "engines" / f"toy-{H}x{W}-4" / "manifest.json").is_file(), log  # it ran on the set
    redraws = re.search(r"\((\d+) UI ticks per second\)", log)
    assert redraws and int(redraws.group(1)) >= 30, log  # the window stays responsive while the model runs
    pal = load_palette(opened)
    # --record: the session from the opened palette, every edit with its time, ends where the window ended
    from semdraw.recording import Recording

    session = Recording.load(recorded)
    assert session.start == start and session.final() == pal and session.stream.layers == 4
    kinds = {type(e.edit).__name__ for e in session.edits}
    assert {"Stroke", "UpdateBrush", "SetMask", "SetBrush"} <= kinds, kinds  # SetMask: the undo
    assert 5 < session.duration_s < 300 and session.edits[-1].t <= session.duration_s
    sky, grass = by_name(pal)["1"], by_name(pal)["2"]
    assert (sky.prompt, grass.prompt) == ("blue sky", "green grass"), log
    assert all(np.array_equal(by_name(pal)[n].mask, m) for n, m in written.items())  # the undo, bit for bit
    assert "Traceback" not in log, log  # no callback failed (the wheel raised on every notch with opencv 5.1)
    wide = by_name(pal)["3"].mask[:, W // 2] > 0
    # the default size plus three notches: a round pen 2·size - 1 px across (21 px, where the default paints 15)
    assert wide.sum() == 2 * (H // 16 + 3) - 1, wide.sum()
    for y in top_rows:
        for xd in (0, W * scale // 3, 2 * W * scale // 3, W * scale - 1):
            assert sky.mask[y // scale, xd // scale] == 255 and grass.mask[y // scale, xd // scale] == 0
    for y in bottom_rows:
        assert grass.mask[y // scale, W // 2] == 255 and sky.mask[y // scale, W // 2] == 0
    # The panel as the window shows it: below the model / seed / fps lines, exactly the panel of this state
    # (brush list with colours, prompts, slider values and slots; brush 1's sliders; brush 1 highlighted).
    # The overlays take the colours the prompts name.
    blue, green = NAMED_COLORS["blue"], NAMED_COLORS["green"]
    levels = semdraw.load_model("toy", device="cpu").schedule().noise_level.tolist()
    on = sum(n < 0.9 for n in levels)  # brush 1's alpha 0.9 takes part where it exceeds the noise level
    state = PanelState("toy", 0, len(levels), 0.0, 4, "1", (
        PanelBrush("1", blue, "blue sky", "", 0.9, 3.0, 0.9, 0, on_steps=on),
        PanelBrush("2", green, "green grass", "", 1.0, 0.0, 1.0, 1, on_steps=len(levels))),
        background="", vocabulary=tuple(sorted(semdraw.toy.known_words())))  # fmt: skip
    swatch_top = 4 * LINE + LINE // 2 + 4 + 4  # the first brush row's colour swatch, in panel pixels
    sy, sx = _find_block(window_pixels, blue, 17)
    py, px = sy - swatch_top, sx - 8
    below_header = slice(2 * LINE + 6, swatch_top + 2 * (3 * LINE + 10))
    expected = render_panel(state, 400)[below_header]
    shown = window_pixels[py : py + 400, px : px + PANEL_WIDTH][below_header]
    assert np.array_equal(shown, expected)
    frames = sorted(save.glob("frame-*.png"))
    assert len(frames) == 1
    img = np.asarray(Image.open(frames[0]).convert("RGB"))
    # The window streams with one noise for every image (a still picture while nothing changes), so the
    # saved frame is exactly the one-shot image of the written palette at its seed (oracle 3 in the loop).
    toy = semdraw.load_model("toy", device="cpu")
    ref = semdraw.generate(toy, pal.brushes_for_semdraw(), background=pal.background_for_semdraw(), seed=pal.seed,
                           output_type="np")  # fmt: skip
    assert np.abs(img.astype(int) - ref.astype(int)).max() <= 1
    names, _ = fidelity.palette()
    idx = fidelity.nearest_palette_index(img)
    top = fidelity.erode(sky.mask > 0, 3)
    bottom = fidelity.erode(grass.mask > 0, 3)
    assert np.mean(idx[top] == names.index("blue sky")) > 0.6
    assert np.mean(idx[bottom] == names.index("green grass")) > 0.6


def test_live_session_from_an_engine_set_and_a_palette(tmp_path, monkeypatch):
    """The command line's choices (engine set, palette, background image) reach the stream; mismatches are errors."""
    from semdraw.build_engines import BuildOptions, build
    from semdraw.viewer.live import _parser, build_session

    monkeypatch.setenv("SEMDRAW_CACHE", str(tmp_path / "cache"))  # --model toy with no --backend builds its set

    engines = tmp_path / "toy"
    build(BuildOptions(model="toy", backend="onnx", layers=3, out=engines))
    palette = save_palette(painted_palette(), tmp_path / "p.json")
    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((H, W, 3), 200, np.uint8)).save(photo)
    args = _parser().parse_args(["--engines", str(engines), "--palette", str(palette), "--background", str(photo),
                                 "--save-dir", str(tmp_path / "out"), "--seed", "5"])  # fmt: skip
    session = build_session(args)
    stream = session.stream
    assert stream.networks.backend == "onnxruntime" and stream.layers == 3 and stream.seed == 5
    assert sorted(b.prompt for b in stream.brushes.values()) == ["blue sky", "green grass"]
    assert stream.background.image is not None  # the photo replaced the palette's background prompt row
    assert stream().shape == (H, W, 3)
    assert session.palette_path == palette  # w writes back to the loaded palette
    big = save_palette(Composition(2 * H, 2 * W), tmp_path / "big.json")
    with pytest.raises(semdraw.SemdrawError, match=f"{2 * H}x{2 * W}"):
        build_session(_parser().parse_args(["--palette", str(big), "--height", str(H), "--width", str(W)]))
    # --engines with --layers/--height: honoured where the set allows it (its ONNX denoiser takes any rows),
    # else one error that names the rebuild (the canvas is part of the set); never silently ignored
    more = build_session(_parser().parse_args(["--engines", str(engines), "--layers", "5"]))
    assert more.stream.layers == 5
    with pytest.raises(semdraw.SemdrawError, match=f"--height {H // 2}"):
        build_session(_parser().parse_args(["--engines", str(engines), "--height", str(H // 2)]))


def test_live_on_onnxruntime_builds_the_models_engine_set_once_and_reuses_it(tmp_path, monkeypatch, caplog):
    from semdraw.build_engines.cache import engine_cache_dir
    from semdraw.viewer.live import _parser, build_session

    monkeypatch.setenv("SEMDRAW_CACHE", str(tmp_path / "cache"))
    args = _parser().parse_args(["--backend", "onnxruntime", "--layers", "2", "--save-dir", str(tmp_path / "out")])
    session = build_session(args)
    assert session.stream.networks.backend == "onnxruntime" and session.stream.layers == 2
    asked = build_session(_parser().parse_args(["--precision", "bf16", "--save-dir", str(tmp_path / "out")]))
    assert asked.stream.networks.backend == "torch"  # bf16 is a torch model's: auto does not pick the set then
    built = engine_cache_dir() / "toy-native-2"
    assert built.parent == tmp_path / "cache" / "engines" and (built / "manifest.json").is_file()
    stamp = (built / "manifest.json").stat().st_mtime_ns
    again = build_session(args)  # the second start reuses the set (build-engines' cache hit): nothing rebuilt
    assert (built / "manifest.json").stat().st_mtime_ns == stamp and again.stream.networks.backend == "onnxruntime"
    # a cache where no set can be written: auto falls back to torch with a warning; an asked backend fails
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("SEMDRAW_CACHE", str(tmp_path / "a-file"))
    with caplog.at_level(logging.WARNING, logger="semdraw.build_engines"):
        fallback = build_session(_parser().parse_args(["--save-dir", str(tmp_path / "out")]))
    assert fallback.stream.networks.backend == "torch" and "could not be built" in caplog.text
    with pytest.raises(semdraw.SemdrawError):
        build_session(_parser().parse_args(["--backend", "onnxruntime", "--save-dir", str(tmp_path / "out")]))


def test_the_commands_auto_backend_is_the_fastest_measured_for_the_model(monkeypatch):
    """--backend auto: onnxruntime for the toy (named, or a folder semdraw-train-toy wrote) on a CPU; torch for
    models without a preset that says otherwise, for an asked backend, and where onnxruntime is missing."""
    from dataclasses import replace as replaced

    from semdraw.build_engines.cache import fastest_backend
    from semdraw.engines import ENGINE_BACKENDS
    from semdraw.toy import WEIGHTS_DIR

    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert fastest_backend("toy", "auto") == fastest_backend(str(WEIGHTS_DIR), "auto") == "onnxruntime"
    assert fastest_backend("sd15-random", "auto") == fastest_backend("/no/such/model", "auto") == "torch"
    assert fastest_backend("toy", "torch") == "torch" and fastest_backend("sd15", "onnxruntime") == "onnxruntime"
    monkeypatch.setitem(ENGINE_BACKENDS, "onnxruntime", replaced(ENGINE_BACKENDS["onnxruntime"], available=lambda: False))
    assert fastest_backend("toy", "auto") == "torch"  # not installed: torch runs it (said in the log)


# ---------------------------------------------------------------- bad starts and bad files
def test_live_with_an_unreachable_display_exits_2_before_qt(xserver):
    from semdraw.viewer.live import display_reachable

    assert display_reachable(xserver)  # a live X server answers
    unused = next(f":{n}" for n in range(90, 200) if not Path(f"/tmp/.X11-unix/X{n}").exists())
    assert not display_reachable(unused) and not display_reachable("not a display")
    live = Path(sys.executable).parent / "semdraw-live"
    run = subprocess.run([str(live)], env={**os.environ, "DISPLAY": unused}, capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert run.returncode == 2, run.stderr  # not Qt's abort (134)
    assert f"DISPLAY={unused} cannot be reached" in run.stderr and "semdraw-render" in run.stderr


def test_a_missing_background_is_one_line_before_any_model_loads(tmp_path, monkeypatch):
    from semdraw.viewer.live import _parser, build_session

    monkeypatch.setattr(semdraw, "load_model", lambda *a, **k: pytest.fail("loaded a model first"))
    with pytest.raises(semdraw.SemdrawError, match="no such image file"):
        build_session(_parser().parse_args(["--background", str(tmp_path / "missing.png")]))


def test_render_refuses_json_that_is_not_a_palette_and_makes_still_videos(tmp_path, caplog):
    import cv2

    bad = tmp_path / "list.json"
    bad.write_text("[1, 2, 3]")
    assert render_cli.main([str(bad), "-o", str(tmp_path / "x.png")]) == 2
    assert "is not a palette: its JSON is a list" in caplog.text
    path = save_palette(painted_palette(), tmp_path / "p.json")

    def frames(*extra):
        video = tmp_path / f"v{len(extra)}.avi"
        assert render_cli.main([str(path), "-o", str(video), "--frames", "3", *extra]) == 0
        cap = cv2.VideoCapture(str(video))
        out = []
        while True:
            ok, frame = cap.read()
            if not ok:
                return out
            out.append(frame.astype(int))

    still = frames()
    assert len(still) == 3 and all(np.abs(f - still[0]).max() <= 2 for f in still)  # a still palette: a still video
    moving = frames("--seed-step", "1")
    assert np.abs(moving[1] - moving[0]).max() > 20  # per-frame seeds when asked for


def test_commands_are_quiet_by_default_and_verbose_on_request(tmp_path):
    path = save_palette(painted_palette(), tmp_path / "p.json")
    render = Path(sys.executable).parent / "semdraw-render"
    env = {k: v for k, v in os.environ.items() if k not in ("SEMDRAW_VERBOSE", "TRANSFORMERS_VERBOSITY",
                                                            "DIFFUSERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS")}  # fmt: skip
    quiet = subprocess.run([str(render), str(path), "-o", str(tmp_path / "a.png"), "--steps", "1"], env=env,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert quiet.returncode == 0, quiet.stderr
    assert "Loading pipeline components" not in quiet.stderr and "requires torchvision" not in quiet.stderr
    assert "wrote" in quiet.stderr  # our own messages stay
    loud = subprocess.run([str(render), str(path), "-o", str(tmp_path / "b.png"), "--steps", "1"],
                          env={**env, "SEMDRAW_VERBOSE": "1"}, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert loud.returncode == 0 and "Loading pipeline components" in loud.stderr


def test_undo_and_redo_restore_masks_bit_for_bit_and_reach_the_stream(toy, tmp_path):
    stream = semdraw.Stream(toy, layers=2, seed=0)
    s = LiveSession(stream, None, tmp_path)
    s.begin_text("prompt")
    s.text.text = "blue sky"
    s.commit_text()
    s.paint(10, 10, stroke_start=True)
    s.paint(40, 10)
    s.end_stroke()
    one = s.brush.mask.copy()
    s.paint(60, 60, stroke_start=True)
    s.end_stroke()
    two = s.brush.mask.copy()
    s.clear()
    assert not s.brush.mask.any()
    s.undo()
    assert np.array_equal(s.brush.mask, two)  # the clear is undone
    s.undo()
    assert np.array_equal(s.brush.mask, one)  # then the second stroke
    s.flush_edits()
    assert np.array_equal(np.asarray(stream.brushes[0].mask), one)  # and the stream follows
    s.redo()
    assert np.array_equal(s.brush.mask, two)
    s.paint(5, 5, stroke_start=True)  # a new edit drops the redo history
    s.redo()
    assert s.message == "nothing to redo"


def test_seeds_are_typed_or_random_and_a_background_prompt_takes_its_row(toy, tmp_path):
    stream = semdraw.Stream(toy, layers=1, seed=0)
    s = LiveSession(stream, None, tmp_path)
    s.begin_text("seed")
    s.text.text = "123456"
    s.commit_text()
    assert s.composition.seed == 123456 and stream.seed == 123456
    s.begin_text("seed")
    s.text.text = "twelve"
    s.commit_text()
    assert s.composition.seed == 123456 and "whole number" in s.message
    assert s.random_seed() == s.composition.seed == stream.seed
    # one row, taken by a brush: a typed background prompt takes it (the core's rule), the brush waits, and
    # what `w` writes has it disabled, so it renders as what the window shows
    s.begin_text("prompt")
    s.text.text = "blue sky"
    s.commit_text()
    s.paint(20, 20, stroke_start=True)
    s.flush_edits()
    assert [b.prompt for b in stream.brushes.values()] == ["blue sky"]
    s.begin_text("background")
    s.text.text = "white snow"
    s.commit_text()
    assert stream.background.prompt == "white snow" and stream.brushes == {}
    assert "brush 1 not generated" in s.message and "--layers 2" in s.message
    assert [b.enabled for b in s.shown().brushes] == [False] and s.brush.enabled  # kept, waiting for a row


def test_the_side_panel_lists_every_brush_its_settings_and_slot(toy, tmp_path):
    """The panel is drawn into the window image (Qt's trackbar labels have no fonts here): each brush's
    colour swatch, a highlight on the active one, and text on every row; the state it draws is the
    session's (prompts, sliders, stream slots, seed, steps, model)."""
    from semdraw.viewer.panel import BACKGROUND, HIGHLIGHT, LINE, PANEL_WIDTH, render_panel, wrap_status

    stream = semdraw.Stream(toy, layers=2, seed=0)
    s = LiveSession(stream, painted_palette(), tmp_path)  # two rows: the background prompt and brush 1
    s.select("2")
    s.set_params(alpha=0.5, blur=3.0)
    state = s.panel_state(fps=12.5)
    assert state.model == "toy" and state.steps == stream.steps and state.current == "2"
    by_name = {b.name: b for b in state.brushes}
    assert by_name["1"].slot == 0 and by_name["2"].slot is None and by_name["2"].alpha == 0.5
    img = render_panel(state, 300)
    assert img.shape == (300, PANEL_WIDTH, 3)
    rows = [LINE * 4 + LINE // 2 + 4 + i * (3 * LINE + 10) for i in range(2)]  # the top of each brush row
    for top, b in zip(rows, state.brushes, strict=True):
        assert tuple(img[top + 12, 16]) == tuple(b.color)  # its colour swatch
        text = img[top : top + 3 * LINE, 30:]
        assert (np.abs(text.astype(int) - np.array(HIGHLIGHT if b.name == "2" else BACKGROUND)).sum(-1) > 100).any()
    assert tuple(img[rows[1] + 2, PANEL_WIDTH // 2]) == HIGHLIGHT and tuple(img[rows[0] + 2, PANEL_WIDTH // 2]) == BACKGROUND
    long = "x " * 200
    assert len(wrap_status(long, 500)) > 1 and all(len(line) <= 500 // 7 for line in wrap_status(long, 500))


def test_a_palette_with_more_brushes_than_rows_says_so_with_the_right_layers(toy, tmp_path):
    corner = np.zeros((H, W), np.uint8)
    corner[:10, :10] = 255
    pal = replace(painted_palette(), brushes=(*painted_palette().brushes, BrushSpec("3", "a red circle", corner)))
    stream = semdraw.Stream(toy, layers=2, seed=0)
    s = LiveSession(stream, pal, tmp_path)  # the message is there from the start (shown at the first redraw)
    assert "brushes 2, 3 not generated" in s.message and "--layers 4" in s.message
    assert sorted(b.prompt for b in stream.brushes.values()) == ["blue sky"]


def test_prompt_warnings_reach_the_status_line_and_stay_while_the_prompt_does(toy, tmp_path):
    s = LiveSession(semdraw.Stream(toy, layers=2, seed=0), None, tmp_path)
    s.begin_text("prompt")
    s.text.text = "a mountain range"
    s.commit_text()
    s.paint(20, 20, stroke_start=True)
    s.flush_edits()
    assert s.message == "brush 1: toy does not know mountain, range (read as unknown tokens)"
    s.paint(40, 40, stroke_start=True)  # more paint: the prompt is cached, its warning still stands
    s.flush_edits()
    assert "does not know mountain, range" in s.message
    s.begin_text("prompt")
    s.text.text = "blue sky"
    s.commit_text()
    s.flush_edits()
    assert s.message == ""


def test_a_refused_brush_is_kept_disabled_so_the_written_palette_renders_as_shown(toy, tmp_path):
    """Three rows asked of a two-row stream: brush 2 gets none. The palette keeps it (nothing lost) but
    marks it disabled, so semdraw-render of the written palette is the window's image; when a row frees
    up, it is generated and enabled again."""
    stream = semdraw.Stream(toy, layers=2, seed=0, seed_step=0)
    s = LiveSession(stream, painted_palette(), tmp_path)
    assert "2" in s.refused and "brush 2 not generated" in s.message
    path = s.write_palette()
    assert [b["enabled"] for b in json.loads(path.read_text())["brushes"]] == [True, False]
    back = load_palette(path)
    assert [b.prompt for b in back.brushes_for_semdraw()] == ["blue sky"]  # what the stream generates
    stream.flush()
    shown = stream()
    rendered = semdraw.generate(toy, back.brushes_for_semdraw(), background=back.background_for_semdraw(),
                                seed=back.seed, output_type="np")  # fmt: skip
    assert np.abs(shown.astype(int) - rendered.astype(int)).max() <= 1
    s.select("1")
    s.clear()  # brush 1 leaves its row: brush 2 takes it at the next tick
    s.flush_edits()
    s.flush_edits()
    assert not s.refused and [b.prompt for b in stream.brushes.values()] == ["green grass"]
    assert [b.enabled for b in s.shown().brushes] == [True, True]
