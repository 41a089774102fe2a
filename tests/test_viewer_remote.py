"""The window as a client: `semdraw-live --server URL` against a real semdraw-serve (Ray Serve, the toy):
the session logic without a display, and the window itself under Xvfb (paint, a frame arrives, quit)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray", reason="semdraw-serve needs ray[serve]: pip install -e '.[serve]'")

import semdraw  # noqa: E402
from semdraw.api import Composition, StreamConfig  # noqa: E402
from semdraw.viewer import load_palette  # noqa: E402

from .test_serve import SIDE, TOKEN  # noqa: E402  (``server``: conftest's shared Ray Serve instance)
from .test_viewer import X, find_window, xserver  # noqa: E402, F401


def in_process(toy, composition: Composition) -> np.ndarray:
    stream = semdraw.Stream(toy, **StreamConfig(seed_step=0).stream_options(composition))
    semdraw.StreamSync(stream).apply(composition)
    stream.flush()
    return stream()


def wait_frame(session, timeout: float = 60.0) -> np.ndarray:
    """The server's frame once it reflects everything the session sent."""
    client = session.stream.client
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        f = client.frame
        if f is not None and not client.pending and f.seq >= client.seq and client.seq > 0:
            return f.image
        time.sleep(0.05)
    raise AssertionError(f"no frame: {client.errors}")


def test_a_remote_session_paints_on_the_server(server, toy, tmp_path):
    from semdraw.viewer.live import _parser, build_session

    session = build_session(_parser().parse_args(["--server", f"http://{server}/?token={TOKEN}",
                                                  "--save-dir", str(tmp_path)]))  # fmt: skip
    try:
        assert (session.stream.height, session.stream.width) == (SIDE, SIDE) and session.stream.steps == 2
        session.begin_text("prompt")
        session.text.text = "blue sky"
        session.commit_text()
        for y in range(4, SIDE // 2, 8):
            session.paint(0, y, stroke_start=True)
            session.paint(SIDE - 1, y)
            session.end_stroke()
        session.flush_edits()
        frame = wait_frame(session)
        assert session.stream.client.composition == session.composition  # the server holds what the window shows
        assert np.abs(frame.astype(int) - in_process(toy, session.composition).astype(int)).max() <= 1
        for _ in range(50):  # the status (rows) arrives once a second
            if session.sync.assignment.rows:
                break
            time.sleep(0.1)
        assert session.panel_state(0.0).brushes[0].slot == 0
        with pytest.raises(semdraw.SemdrawError, match="no semdraw-serve answers"):
            build_session(_parser().parse_args(["--server", "http://127.0.0.1:9/?token=x"]))
        with pytest.raises(semdraw.SemdrawError, match="token"):
            build_session(_parser().parse_args(["--server", f"http://{server}/"]))
    finally:
        session.stream.close()


def test_the_window_paints_against_a_server(server, toy, xserver, tmp_path):  # noqa: F811
    save = tmp_path / "out"
    live = Path(sys.executable).parent / "semdraw-live"
    env = {**os.environ, "DISPLAY": xserver, "QT_QPA_PLATFORM": "xcb"}
    proc = subprocess.Popen([str(live), "--server", f"http://{server}/?token={TOKEN}", "--save-dir", str(save)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        x = X(xserver, find_window(proc, env))
        from semdraw.viewer.live import display_scale

        scale = display_scale(SIDE, SIDE)
        x.key("1")
        for row in range(4, SIDE // 2, 8):
            x.drag(row * scale + scale // 2, 0, SIDE * scale - 1)
        x.key("t")
        x.type("blue sky")
        x.key("Return")
        time.sleep(6)  # the server's frame of it arrives
        x.key("s")
        x.key("w")
        time.sleep(1)
        x.key("q")
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    log = proc.stdout.read()
    assert "Traceback" not in log, log
    assert re.search(r"UI ticks per second", log), log
    palette = load_palette(save / "palette.json")
    (brush,) = palette.brushes
    assert brush.prompt == "blue sky" and brush.mask[: SIDE // 2].mean() > 100
    (frame,) = sorted(save.glob("frame-*.png"))
    from PIL import Image

    shown = np.asarray(Image.open(frame).convert("RGB")).astype(int)
    assert np.abs(shown - in_process(toy, palette).astype(int)).max() <= 1  # the server's frame of the palette
