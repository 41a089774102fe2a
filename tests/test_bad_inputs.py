"""Nothing destroyed, nothing lost: bad inputs to the commands are one-line errors, and user files survive."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from semdraw.build_engines import cli as build_cli


def _build(out: Path, *extra: str) -> int:
    return build_cli.main(["--model", "toy", "--backend", "onnx", "--layers", "2", "--out", str(out), *extra])


@pytest.mark.parametrize(
    "setup, match",
    [
        ("folder with a user file", "is not an engine set"),
        ("existing file", "is an existing file"),
        ("path through a file", "is a file, not a folder"),
        ("unwritable place", "cannot write"),
    ],
)
def test_build_engines_never_replaces_what_is_not_an_engine_set(tmp_path, caplog, setup, match):
    thesis = tmp_path / "work" / "thesis.txt"
    thesis.parent.mkdir()
    thesis.write_text("three years of work")
    out = {
        "folder with a user file": thesis.parent,
        "existing file": thesis,
        "path through a file": thesis / "set",
        "unwritable place": Path("/sys/semdraw-test-set"),
    }[setup]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert _build(out) == 2
    assert match in caplog.text and "Traceback" not in caplog.text
    assert thesis.read_text() == "three years of work"
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing hidden, moved or added


def test_build_engines_replaces_an_engine_set_and_cleans_stale_builds(tmp_path):
    out = tmp_path / "sets" / "toy"
    out.mkdir(parents=True)  # an empty folder is fine to fill
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / "sets" / f".toy.building-{int(dead.stdout)}"
    stale.mkdir()
    (stale / "denoiser.onnx").write_bytes(b"half a network")
    mine = tmp_path / "sets" / f".toy.building-{os.getpid()}-other"  # not a build folder name: kept
    mine.mkdir()
    assert _build(out) == 0
    assert (out / "manifest.json").exists() and not stale.exists() and mine.exists()
    first = (out / "manifest.json").stat().st_mtime_ns
    assert _build(out, "--steps", "3") == 0  # a different set replaces the old one in place
    assert (out / "manifest.json").stat().st_mtime_ns != first
    assert sorted(p.name for p in (tmp_path / "sets").iterdir()) == sorted([".toy.building-" + f"{os.getpid()}-other", "toy"])


def test_build_engines_errors_are_one_line_on_stderr(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    run = subprocess.run([sys.executable, "-m", "semdraw.build_engines.cli", "--model", "toy", "--out", str(folder)],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 2
    errors = [line for line in run.stderr.splitlines() if line.startswith("build-engines:")]
    assert len(errors) == 1 and "not an engine set" in errors[0] and "Traceback" not in run.stderr
    assert (folder / "notes.txt").read_text() == "keep me"


# ------------------------------------------------------------------------------ the window's files
def test_a_failed_save_is_a_status_message_and_the_drawing_stays(toy, tmp_path):
    import numpy as np

    import semdraw
    from semdraw.viewer.session import LiveSession

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    session = LiveSession(semdraw.Stream(toy, layers=2, seed=0), None, blocker / "saves",
                          blocker / "palette.json")  # fmt: skip
    session.paint(40, 40, stroke_start=True)
    session.end_stroke()
    drawn = session.brush.mask.copy()
    assert session.save_frame(np.zeros((128, 128, 3), np.uint8)) is None
    assert session.message.startswith("could not save the frame")
    assert session.write_palette() is None and session.message.startswith("could not save the palette")
    np.testing.assert_array_equal(session.brush.mask, drawn)
    assert blocker.read_text() == "not a folder"


# ------------------------------------------------------------------------------ rendering bigger
def test_rendering_twice_as_wide_keeps_the_circle_round(tmp_path):
    """The toy's red circle, drawn on 128², rendered at 128x256: placed (centred, same size) it is scored as
    present where it now lies; --scale at 256x256 doubles it, round. Stretched, it would be an oval."""
    import numpy as np
    from PIL import Image

    from semdraw.api import BackgroundSpec, BrushSpec, Composition
    from semdraw.toy import fidelity
    from semdraw.viewer import render as render_cli
    from semdraw.viewer import save_palette
    from semdraw.viewer.palette import place

    circle = BrushSpec("1", "a red circle", (fidelity.disc(0.5, 0.5, 0.25) * 255).astype(np.uint8))
    path = save_palette(Composition(128, 128, (circle,), BackgroundSpec("green grass"), seed=1), tmp_path / "p.json")
    out = tmp_path / "wide.png"
    assert render_cli.main([str(path), "-o", str(out), "--width", "256"]) == 0
    image = np.asarray(Image.open(out))
    placed = place(circle.mask, 128, 256) > 0
    assert placed[:, :64].sum() == 0 and (placed.sum(1) > 0).sum() == (placed.sum(0) > 0).sum()  # round, centred
    scene = fidelity.Scene("wide", (fidelity.SceneBrush("a red circle", placed, "red", is_object=True),),
                           background_prompt="green grass", width=256)  # fmt: skip
    score = fidelity.score_image(image, scene)
    assert score["presence"] == [1.0] and score["per_brush"]["a red circle"] > 0.5
    scaled = place(circle.mask, 256, 256, scale=True) > 0
    ys, xs = np.nonzero(scaled)
    assert abs((ys.max() - ys.min()) - (xs.max() - xs.min())) <= 1 and ys.max() - ys.min() > 120


# ------------------------------------------------------------------------------ one-line errors, table-driven
def _palette_file(tmp_path, height=128, width=128, mask_size=(128, 128)):
    import json

    from PIL import Image

    (tmp_path / "p.masks").mkdir(exist_ok=True)
    Image.new("L", mask_size, 255).save(tmp_path / "p.masks" / "1.png")
    doc = {"format": 1, "height": height, "width": width, "seed": 0,
           "brushes": [{"name": "1", "prompt": "a red circle", "mask": "p.masks/1.png"}]}  # fmt: skip
    (tmp_path / "p.json").write_text(json.dumps(doc))
    return tmp_path / "p.json"


RENDER_CASES = [  # (extra arguments, palette kwargs, what the one error line says)
    (["--steps", "2.5"], {}, "whole number"),
    (["--steps", "0"], {}, "steps must lie in"),
    (["--steps", "1000"], {}, "do not fit this sampler"),
    (["--seed", "99999999999999999999"], {}, "seed must lie in"),
    (["--seed", "abc"], {}, "not a whole number"),
    (["--fps", "0", "--frames", "2"], {}, "frame rate"),
    (["--frames", "0"], {}, "frames must lie in"),
    (["--width", "0"], {}, "must be positive"),
    ([], {"height": 100000, "width": 100000}, "too large"),
    ([], {"mask_size": (40, 200)}, "another shape"),
    (["-o", "{tmp}/x.png/y.png"], {}, "cannot write"),
]


@pytest.mark.parametrize("extra, palette, says", RENDER_CASES, ids=[" ".join(c[0]) or str(c[1]) for c in RENDER_CASES])
def test_semdraw_render_bad_inputs_are_one_line_errors(tmp_path, capsys, caplog, extra, palette, says):
    import time

    from semdraw.viewer import render as render_cli

    path = _palette_file(tmp_path, **palette)
    (tmp_path / "x.png").write_text("a file in the way")
    out = ["-o", str(tmp_path / "out.png")] if "-o" not in extra else []
    extra = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    started = time.perf_counter()
    try:
        rc = render_cli.main([str(path), *out, *extra])
    except SystemExit as exit_:  # argparse's usage error
        rc = exit_.code
    said = capsys.readouterr().err + caplog.text
    assert rc == 2 and says in said and "Traceback" not in said
    assert len([line for line in said.splitlines() if "error" in line.lower()]) == 1
    assert time.perf_counter() - started < 30  # refused before any long work
    assert not (tmp_path / "out.png").exists()


LIBRARY_CASES = [  # (generate() keyword arguments, error type, message)
    (dict(seed=2**70), "ConfigError", "seed must lie in"),
    (dict(seed="abc"), "ConfigError", "whole number"),
    (dict(seed=True), "ConfigError", "whole number"),
    (dict(steps=2.5), "ConfigError", "whole number"),
    (dict(steps=5000), "ConfigError", "steps must lie in"),
    (dict(height=100000, width=100000), "SizeError", "too large"),
]


@pytest.mark.parametrize("kwargs, error, says", LIBRARY_CASES, ids=[str(c[0]) for c in LIBRARY_CASES])
def test_library_bad_inputs_are_semdraws_errors(toy, kwargs, error, says):
    import numpy as np

    import semdraw

    with pytest.raises(getattr(semdraw.errors, error), match=says):
        semdraw.generate(toy, [semdraw.Brush("a red circle", np.ones((128, 128), np.float32))], **kwargs)


@pytest.mark.parametrize("value", [1e6, float("nan"), -1, "wide"])
def test_a_blur_beyond_any_canvas_is_refused_at_once(value):
    import numpy as np

    import semdraw

    with pytest.raises(semdraw.errors.ConfigError, match="mask_std"):
        semdraw.Brush("a red circle", np.ones((8, 8), np.float32), mask_std=value)


# ------------------------------------------------------------------------------ a quiet library
LOAD = ("import semdraw, diffusers.utils.logging as d, transformers.utils.logging as t; "
        "before = (d.get_verbosity(), t.get_verbosity()); semdraw.load_model('toy'); "
        "assert (d.get_verbosity(), t.get_verbosity()) == before, 'the libraries settings were not restored'")


@pytest.mark.parametrize("verbose", ["", "1"])
def test_the_library_loads_quietly_unless_asked(verbose):
    """load_model() prints none of diffusers' or transformers' notices and load bars (an application embedding
    semdraw sees a clean terminal) and restores their settings; SEMDRAW_VERBOSE=1 shows them."""
    env = {**os.environ, "SEMDRAW_VERBOSE": verbose}
    env.pop("TRANSFORMERS_VERBOSITY", None), env.pop("DIFFUSERS_VERBOSITY", None)
    run = subprocess.run([sys.executable, "-c", LOAD], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert ("Loading pipeline components" in run.stderr) == bool(verbose), run.stderr[-2000:]
    if not verbose:
        assert run.stderr.strip() == ""


# ------------------------------------------------------------------------------ the window tells the truth
def test_the_wheel_delta_is_read_from_the_flags_on_every_opencv():
    from semdraw.viewer.live import wheel_delta

    assert wheel_delta(120 << 16) == 120 and wheel_delta((120 << 16) | 8) == 120  # up, Ctrl held
    assert wheel_delta(-120 << 16) == -120  # down, as a negative Python int
    assert wheel_delta(((-120 << 16) & 0xFFFFFFFF) | 1) == -120  # down, as the unsigned 32 bits


@pytest.mark.parametrize("prompt, expected", [("blue sky", "blue"), ("green grass", "green"),
                                              ("a red circle", "red"), ("A Purple, shiny diamond", "purple")])
def test_overlays_take_the_colour_their_prompt_names(prompt, expected):
    from semdraw.viewer.palette import BRUSH_COLORS, NAMED_COLORS, overlay_color

    assert overlay_color(prompt, 0) == NAMED_COLORS[expected]
    assert overlay_color("beach sand", 4) == BRUSH_COLORS[4]  # no colour word: the distinct palette


def test_the_panel_tells_refused_from_unpainted_and_shows_the_background_and_idle(toy, tmp_path):
    import semdraw
    from semdraw.api import BackgroundSpec, Composition
    from semdraw.viewer.panel import PanelBrush, PanelState
    from semdraw.viewer.session import LiveSession

    assert PanelBrush("1", (0, 0, 0), "a red circle", "", 1, 0, 1, None, refused=True).status == "refused: no free row"
    assert PanelBrush("1", (0, 0, 0), "a red circle", "", 1, 0, 1, None, painted=False).status == "no paint yet"
    assert PanelBrush("1", (0, 0, 0), "", "", 1, 0, 1, None).status == "no prompt"
    assert PanelBrush("1", (0, 0, 0), "blue sky", "", 1, 0, 1, 2).status == "slot 2"
    assert PanelState("toy", 0, 2, 31.0, 4, "1", (), idle=True).rate == "idle"
    pal = Composition(128, 128, background=BackgroundSpec("white snow"))
    session = LiveSession(semdraw.Stream(toy, layers=2, seed=0), pal, tmp_path)
    state = session.panel_state(0.0)
    assert state.background == "white snow"
    assert {"sky", "circle", "purple"} <= set(state.vocabulary)  # the toy's closed vocabulary, in the panel


def test_typed_fields_open_selected_and_accept_every_letter(toy, tmp_path):
    """The seed field opens with the seed selected: typing replaces it (it used to append: "1611430230abc");
    Delete clears; accented letters are typed, keys that type nothing say so instead of vanishing."""
    import semdraw
    from semdraw.api import Composition
    from semdraw.viewer.live import KEY_DELETE, Window
    from semdraw.viewer.session import LiveSession

    session = LiveSession(semdraw.Stream(toy, layers=2, seed=0), Composition(128, 128, seed=1611430230), tmp_path)
    window = Window.__new__(Window)  # the key handling alone: no OpenCV window is opened
    window.session = session
    window._sync_seed = lambda: None
    session.begin_text("seed")
    for ch in "42":
        window.handle_key(ord(ch))
    window.handle_key(13)
    assert session.composition.seed == 42
    session.begin_text("prompt")
    window.handle_key(ord("x"))
    window.handle_key(KEY_DELETE[1])
    for ch in "café":
        window.handle_key(ord(ch))
    window.handle_key(0xFF52)  # an arrow key's keysym: no character
    assert session.text.text == "café" and "types no character" in session.message
    window.handle_key(13)
    assert session.brush.prompt == "café"


def test_a_ctrl_press_says_which_keys_undo_and_redo(toy, tmp_path):
    """OpenCV's Qt window reports Ctrl+Z only as the Ctrl key (0xffe3, seen under Xvfb): the status line
    says what to press instead of nothing happening."""
    import semdraw
    from semdraw.viewer.live import Window
    from semdraw.viewer.session import LiveSession

    session = LiveSession(semdraw.Stream(toy, layers=2, seed=0), None, tmp_path)
    window = Window.__new__(Window)
    window.session = session
    assert window.handle_key(0xFFE3) and "undo is z" in session.message


def test_a_wheel_event_resizes_the_brush_on_this_opencv(toy, tmp_path):
    """The mouse callback with a real wheel event's flags (as opencv-python 5.1 delivers them: delta in the
    high 16 bits) changes the brush size; it used to raise AttributeError on every wheel event."""
    import cv2

    import semdraw
    from semdraw.viewer.live import Window
    from semdraw.viewer.session import LiveSession

    session = LiveSession(semdraw.Stream(toy, layers=2, seed=0), None, tmp_path)
    window = Window.__new__(Window)
    window.session, window.cv2, window._inputs, window.side_w, window.side_h = session, cv2, 0, 512, 512
    size = session.size
    window._on_mouse(cv2.EVENT_MOUSEWHEEL, 100, 100, 7864322, None)  # flags seen under Xvfb: wheel up
    assert session.size > size
    window._on_mouse(cv2.EVENT_MOUSEWHEEL, 100, 100, -7864318, None)  # wheel down
    window._on_mouse(cv2.EVENT_MOUSEWHEEL, 100, 100, -7864318, None)
    assert session.size < size


COMMAND_CASES = [  # (command module, arguments, what its one error line says): options refused before any work
    ("semdraw.build_engines.cli", ["--model", "toy", "--steps", "0"], "steps must lie in"),
    ("semdraw.build_engines.cli", ["--model", "toy", "--layers", "0"], "--layers must be >= 1"),
    ("semdraw.build_engines.cli", ["--model", "toy", "--height", "-8"], "must be positive"),
    ("semdraw.viewer.live", ["--seed", "-1"], "seed must lie in"),
    ("semdraw.viewer.live", ["--seed", "1.5"], "not a whole number"),
    ("semdraw.tools.bench", ["fidelity", "--steps", "x"], "not a whole number"),
    ("semdraw.tools.bench", ["stream", "--frames", "0"], "frames must lie in"),
    ("semdraw.tools.demo", ["--seed", "99999999999999999999"], "seed must lie in"),
]


@pytest.mark.parametrize("module, args, says", COMMAND_CASES, ids=[f"{c[0].split('.')[-1]} {' '.join(c[1])}" for c in COMMAND_CASES])
def test_command_options_out_of_range_are_one_line_errors(capsys, caplog, module, args, says):
    import importlib

    main = importlib.import_module(module).main
    try:
        rc = main(args)
    except SystemExit as exit_:  # argparse's usage error
        rc = exit_.code
    said = capsys.readouterr().err + caplog.text
    assert rc == 2 and says in said and "Traceback" not in said, said[-500:]


def test_build_engines_reads_the_onnxruntime_version_of_either_distribution(monkeypatch):
    """With only onnxruntime-gpu installed, `version("onnxruntime")` raised and build-engines crashed."""
    import importlib.metadata as metadata

    from semdraw.build_engines import cli as build_cli

    real = metadata.version

    def only_gpu(name: str) -> str:
        if name == "onnxruntime":
            raise metadata.PackageNotFoundError(name)
        return "1.31.0-gpu" if name == "onnxruntime-gpu" else real(name)

    monkeypatch.setattr(metadata, "version", only_gpu)
    assert build_cli.onnxruntime_version() == "1.31.0-gpu"
    monkeypatch.setattr(metadata, "version", lambda name: (_ for _ in ()).throw(metadata.PackageNotFoundError(name)))
    with pytest.raises(build_cli.SemdrawError, match="onnxruntime is not installed"):
        build_cli.onnxruntime_version()


def test_a_manifest_naming_tensors_a_network_lacks_is_one_clear_error():
    from semdraw.backends import BackendError, check_io

    check_io("denoiser.plan", ["sample", "timestep", "encoder_hidden_states", "out"], ["sample", "timestep", "out"])
    with pytest.raises(BackendError, match="has no tensor text_embeds .* rebuild the set"):
        check_io("denoiser.plan", ["sample", "timestep", "out"], ["sample", "text_embeds", "out"])
