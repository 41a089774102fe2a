"""The browser page, in a real headless Chromium (Debian's, driven by Playwright, which never downloads a
browser) against a real semdraw-serve on the toy: paint two brushes with the pointer and type their
prompts, see the frame equal the in-process frame of the page's composition (PNG frames: exact), undo a
stroke, save the palette and render it with semdraw-render, kill the serving replica and see the page
come back by itself, share the canvas with a second page and see both converge."""

from __future__ import annotations

import json
import os
import shutil
import signal
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray", reason="semdraw-serve needs ray[serve]: pip install -e '.[serve]'")
playwright = pytest.importorskip("playwright.sync_api", reason="the page tests need playwright (the dev extra)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("needs Debian's chromium (apt-get install --no-install-recommends chromium; .ci/run does)",
                allow_module_level=True)  # fmt: skip

import semdraw  # noqa: E402
from semdraw.api import Composition, StreamConfig  # noqa: E402
from semdraw.edits import Stroke, stroked  # noqa: E402
from semdraw.viewer.palette import BRUSH_COLORS, NAMED_COLORS  # noqa: E402

from .test_serve import SIDE, TOKEN  # noqa: E402  (``server``: conftest's shared Ray Serve instance)

SCREENSHOTS = os.environ.get("SEMDRAW_SCREENSHOTS")  # a folder: the page's screenshot is copied there


def in_process(toy, composition: Composition) -> np.ndarray:
    stream = semdraw.Stream(toy, **StreamConfig(seed_step=0).stream_options(composition))
    semdraw.StreamSync(stream).apply(composition)
    stream.flush()
    return stream()


def mask_of(composition: Composition, name: str) -> np.ndarray:
    return next(b.mask for b in composition.brushes if b.name == name)


class Page:
    """One browser tab on the page, with the few actions a painter takes."""

    def __init__(self, page) -> None:
        self.page = page

    def wait(self, condition: str, timeout_s: float = 90) -> None:
        self.page.wait_for_function(f"(() => {{ const s = window.semdraw && window.semdraw.state; return !!s && ({condition}); }})",
                                    timeout=timeout_s * 1000)  # fmt: skip

    def settled(self, timeout_s: float = 90) -> None:
        """Every edit acknowledged, and a frame that wholly reflects them."""
        self.wait("s.connections > 0 && s.pending.size === 0 && s.frameSeq >= s.seq && s.ws !== null", timeout_s)

    def type_prompt(self, brush: str, text: str) -> None:
        field = self.page.locator(f'input[data-brush="{brush}"][data-field="prompt"]')
        field.fill(text)
        field.press("Tab")  # commits (change)

    def drag(self, rows: list[float], x0: float = 0.0, x1: float = 1.0) -> None:
        """Strokes across the canvas at the given heights (fractions of the canvas)."""
        box = self.page.locator("#canvas").bounding_box()
        for r in rows:
            y = box["y"] + r * box["height"]
            self.page.mouse.move(box["x"] + x0 * box["width"] + 1, y)
            self.page.mouse.down()
            for k in range(1, 9):
                self.page.mouse.move(box["x"] + (x0 + (x1 - x0) * k / 8) * box["width"] - 1, y)
            self.page.mouse.up()

    def composition(self) -> Composition:
        return Composition.from_dict(self.page.evaluate("window.semdraw.composition()"))

    def frame(self) -> np.ndarray:
        pixels = np.asarray(self.page.evaluate("window.semdraw.framePixels()"), np.uint8)
        return pixels.reshape(SIDE, SIDE, 4)[..., :3]

    def png_frame(self) -> np.ndarray:
        import base64
        import io

        from PIL import Image

        data = self.page.evaluate("btoa(String.fromCharCode(...window.semdraw.state.lastFramePng))")
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))

    def state(self, key: str):
        return self.page.evaluate(f"window.semdraw.state.{key}")


def test_painting_in_the_browser(server, toy, tmp_path):
    from playwright.sync_api import sync_playwright

    from semdraw.viewer import render as render_cli

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 720}, accept_downloads=True)
            one = Page(context.new_page())
            sent: list[dict] = []  # what the page really sends (the socket's frames, as Chromium saw them)
            one.page.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent.append(json.loads(payload))))
            one.page.goto(f"http://{server}/?token={TOKEN}&format=png")
            one.wait("s.connections >= 1")
            # the page colours brushes as the window does (its table, served at /colors.json)
            assert one.page.evaluate("window.semdraw.brushColor('a Blue, sky', 3)") == list(NAMED_COLORS["blue"])
            assert one.page.evaluate("window.semdraw.brushColor('a sky', 10)") == list(BRUSH_COLORS[10 % len(BRUSH_COLORS)])
            # paint two brushes with the pointer and type their prompts
            one.type_prompt("1", "blue sky")
            one.drag([0.05, 0.15, 0.25, 0.35, 0.45])
            one.page.click("#add-brush")
            one.type_prompt("2", "green grass")
            one.drag([0.6, 0.7, 0.8, 0.9])
            one.settled()
            painted = one.composition()
            assert [b.prompt for b in painted.brushes] == ["blue sky", "green grass"]
            assert painted.brushes[0].mask[: SIDE // 2].mean() > 100 and painted.brushes[1].mask[SIDE // 2 :].mean() > 100
            # the page shows the server's PNG pixels exactly; those are the in-process stream's within 1/255
            # (the host's one batched call for all painters rounds a little differently from a lone stream)
            assert np.array_equal(one.frame(), one.png_frame())
            assert np.abs(one.frame().astype(int) - in_process(toy, painted).astype(int)).max() <= 1
            # undo a stroke (Ctrl+Z): the masks come back bit for bit
            one.drag([0.3], 0.2, 0.8)  # brush 2 over the sky ...
            one.settled()
            assert one.composition() != painted
            one.page.locator("#canvas").focus()
            one.page.keyboard.press("Control+z")  # ... undone
            one.settled()
            assert one.composition() == painted
            # save the palette; semdraw-render makes the page's frame from it
            with one.page.expect_download() as download:
                one.page.click("#save-palette")
            palette = tmp_path / "palette.json"
            download.value.save_as(palette)
            out = tmp_path / "rendered.png"
            assert render_cli.main([str(palette), "-o", str(out)]) == 0
            from PIL import Image

            rendered = np.asarray(Image.open(out).convert("RGB")).astype(int)
            assert np.abs(rendered - one.frame().astype(int)).max() <= 1
            shot = tmp_path / "page.png"
            one.page.evaluate("window.scrollTo(0, 0)")
            one.page.screenshot(path=str(shot))
            # usable at 1280x720: both pictures and the pen controls are in view without scrolling
            for selector in ("#canvas", "#frame", "#undo", "#add-brush"):
                box = one.page.locator(selector).bounding_box()
                assert box["y"] + box["height"] <= 720 and box["x"] + box["width"] <= 1280, selector
            if SCREENSHOTS:
                shutil.copy(shot, Path(SCREENSHOTS) / "page.png")
            # kill the serving replica: the page comes back by itself and shows the same picture
            before = one.frame()
            health = json.loads(urllib.request.urlopen(f"http://{server}/healthz", timeout=30).read())
            pid = health["by_replica"][one.state("replica")]["pid"]
            connections = one.state("connections")
            os.kill(pid, signal.SIGKILL)
            one.wait(f"s.connections > {connections}", 120)
            one.page.evaluate("window.semdraw.state.lastFrame = null, window.semdraw.state.frameSeq = -1")
            one.settled(120)
            assert np.array_equal(one.frame(), before) and one.composition() == painted
            # share: a second page on the link sees the same canvas; both paint; both converge
            one.page.click("#share")
            link = one.page.locator("#share-link").input_value()
            assert "session=" in link and "key=" in link
            two = Page(context.new_page())
            two.page.goto(link)
            two.wait("s.connections >= 1")
            two.settled()
            assert two.composition() == painted
            two.drag([0.55], 0.1, 0.5)  # the second page paints its current brush (1) ...
            one.page.bring_to_front()
            one.page.click("#brushes li:nth-child(2) button")  # ... and the first page brush 2
            one.drag([0.2], 0.5, 0.9)
            for page in (one, two):
                page.settled()
            one.wait(f"s.seq === {two.state('seq')}")
            both = one.composition()
            assert both == two.composition() and both != painted
            assert np.array_equal(one.frame(), two.frame())
            # a narrow (tablet) width: one column, every control still reachable and labelled
            narrow = Page(context.new_page())
            narrow.page.set_viewport_size({"width": 600, "height": 900})
            narrow.page.goto(link)
            narrow.wait("s.connections >= 1")
            assert narrow.page.locator("#canvas").bounding_box()["width"] <= 600
            unlabelled = narrow.page.evaluate("""[...document.querySelectorAll('input')].filter(i =>
                !i.closest('label') && !i.getAttribute('aria-label')).map(i => i.id)""")
            assert unlabelled == []
            # other steps: the server makes the painter a new stream, whose frames are the in-process ones
            one.page.bring_to_front()
            steps = one.page.locator("#steps")
            assert steps.input_value() == "2"
            steps.fill("3")
            steps.press("Tab")
            one.settled()
            one.wait("s.status.steps === 3")
            resampled = one.composition()
            assert resampled.sampling.steps == 3
            assert np.abs(one.frame().astype(int) - in_process(toy, resampled).astype(int)).max() <= 1
            # a stroke of 50 pointer moves within one moment travels as one edit (its polyline), and the
            # server's mask is the core's pen painted segment by segment along it
            before_stroke, first_sent = one.composition(), len(sent)
            one.page.evaluate("""(() => { const c = document.getElementById("canvas"), b = c.getBoundingClientRect();
                const at = (type, x) => c.dispatchEvent(new PointerEvent(type, { bubbles: true, pointerId: 7, buttons: 1,
                    pointerType: "mouse", clientX: b.left + x * b.width, clientY: b.top + 0.5 * b.height }));
                at("pointerdown", 0.1); for (let k = 1; k <= 50; k++) at("pointermove", 0.1 + 0.8 * k / 50); at("pointerup", 0.9);
            })()""")  # fmt: skip
            one.settled()
            strokes = [m["edit"] for m in sent[first_sent:] if m["type"] == "edit"]
            assert len(strokes) == 1 and len(strokes[0]["points"]) == 52  # the first point twice: a dot
            stroke = strokes[0]
            mask = mask_of(before_stroke, stroke["name"])
            for a, b in zip(stroke["points"][:-1], stroke["points"][1:], strict=True):
                mask = stroked(mask, Stroke(stroke["name"], (tuple(a), tuple(b)), stroke["radius"], stroke["erase"]))
            after_stroke = one.composition()
            assert np.array_equal(mask_of(after_stroke, stroke["name"]), mask)
            assert not np.array_equal(mask, mask_of(before_stroke, stroke["name"]))
            assert np.abs(one.frame().astype(int) - in_process(toy, after_stroke).astype(int)).max() <= 1
        finally:
            browser.close()
