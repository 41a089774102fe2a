"""Palette files: the paper's import/export of a drawing. A palette file *is* a serialised composition.

A palette is ``semdraw.Composition.to_json()`` in one self-contained file (masks as 8-bit PNG and the
background image as its own bytes, base64 inside the JSON): the window, ``semdraw-render``, the server and
the browser page read and write the same thing through the request contract (``semdraw.api``).
``enabled: false`` marks a brush that is not generated (the window's stream had no row for it): the file
keeps its paint and prompt, and ``semdraw-render`` leaves it out, as the window's image did.

Palette files of semdraw's first release (``"format": 1``: a JSON document beside a ``<stem>.masks/``
folder of PNGs, brush colours, a background image path) are migrated on read (:func:`load_palette`);
writing always gives the current format. Writing is atomic (a temporary file renamed over the old one),
so a crash leaves the old palette or the new one, never a mix. Overlay colours are the window's own and
are not stored: a brush is shown in the colour its prompt names (:func:`overlay_color`).
"""

from __future__ import annotations

import base64
import io
import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from semdraw.api import MAX_JSON_BYTES, Composition, ContractError
from semdraw.errors import SemdrawError
from semdraw.limits import check_canvas

LEGACY_FORMAT = 1  # palette files of the first release: JSON + a folder of mask PNGs

# Distinct, readable overlay colours (RGB) for brushes 1-9.
BRUSH_COLORS: tuple[tuple[int, int, int], ...] = (
    (230, 60, 60), (60, 120, 230), (60, 180, 80), (230, 180, 40), (170, 80, 210),
    (40, 200, 200), (240, 120, 40), (200, 90, 150), (130, 130, 130),
)  # fmt: skip


# Overlay colours named by prompts (RGB): a brush whose prompt names one is painted in it ("blue sky" blue).
NAMED_COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "orange": (240, 140, 30), "yellow": (235, 210, 40), "green": (50, 180, 60),
    "cyan": (30, 200, 210), "blue": (50, 90, 230), "purple": (150, 60, 200), "violet": (150, 60, 200),
    "pink": (240, 120, 190), "brown": (140, 90, 50), "gray": (128, 128, 128), "grey": (128, 128, 128),
    "black": (30, 30, 30), "white": (235, 235, 235),
}  # fmt: skip


def overlay_color(prompt: str, index: int) -> tuple[int, int, int]:
    """The overlay colour of a brush: the first colour word of its prompt, else the index-th distinct colour."""
    for word in prompt.lower().replace(",", " ").split():
        if word in NAMED_COLORS:
            return NAMED_COLORS[word]
    return BRUSH_COLORS[index % len(BRUSH_COLORS)]


class PaletteError(SemdrawError):
    """A palette file that cannot be read or written."""


# Where a drawing sits on a canvas of another size: (fraction down, fraction across) of the free space.
ANCHORS: dict[str, tuple[float, float]] = {
    "center": (0.5, 0.5), "top": (0.0, 0.5), "bottom": (1.0, 0.5), "left": (0.5, 0.0), "right": (0.5, 1.0),
    "top-left": (0.0, 0.0), "top-right": (0.0, 1.0), "bottom-left": (1.0, 0.0), "bottom-right": (1.0, 1.0),
}  # fmt: skip


def place(array: np.ndarray, height: int, width: int, anchor: str = "center", scale: bool = False,
          fill: int = 0) -> np.ndarray:  # fmt: skip
    """``array`` (HxW mask or HxWx3 image, uint8) on a ``height`` x ``width`` canvas without changing its
    shape: at its own size (cropped where the canvas is smaller), or with ``scale`` resized by one factor
    for both axes (the largest that fits), at ``anchor`` (:data:`ANCHORS`); the rest is ``fill``."""
    from PIL import Image

    fy, fx = ANCHORS[anchor]
    if scale:
        factor = min(height / array.shape[0], width / array.shape[1])
        size = (max(1, round(array.shape[1] * factor)), max(1, round(array.shape[0] * factor)))
        array = np.asarray(Image.fromarray(array).resize(size, Image.Resampling.BILINEAR))
    out = np.full((height, width, *array.shape[2:]), fill, np.uint8)
    h, w = array.shape[:2]
    oy, ox = round((height - h) * fy), round((width - w) * fx)  # negative: the drawing is cropped
    ys, xs = slice(max(oy, 0), min(oy + h, height)), slice(max(ox, 0), min(ox + w, width))
    out[ys, xs] = array[ys.start - oy : ys.stop - oy, xs.start - ox : xs.stop - ox]
    return out


def brush_colors(composition: Composition) -> dict[str, tuple[int, int, int]]:
    """Each brush's overlay colour (the colour its prompt names, else a distinct one by paint order)."""
    return {b.name: overlay_color(b.prompt, i) for i, b in enumerate(composition.brushes)}


def placed(composition: Composition, height: int, width: int, anchor: str = "center",
           scale: bool = False) -> Composition:  # fmt: skip
    """The same drawing on a ``height`` x ``width`` canvas (:func:`place`): every mask keeps its shape, and a
    background image is placed as it lay under them (the canvas around it white)."""
    from PIL import Image

    bg = composition.background
    if bg.image is not None:
        with Image.open(io.BytesIO(bg.image)) as img:
            drawn = np.asarray(img.convert("RGB").resize((composition.width, composition.height),
                                                         Image.Resampling.BILINEAR))  # fmt: skip
        out = io.BytesIO()
        Image.fromarray(place(drawn, height, width, anchor, scale, fill=255)).save(out, format="PNG")
        bg = replace(bg, image=out.getvalue())
    brushes = tuple(replace(b, mask=place(b.mask, height, width, anchor, scale)) for b in composition.brushes)
    return replace(composition, height=height, width=width, brushes=brushes, background=bg).check()


# ------------------------------------------------------------------------------------------ files
def save_palette(composition: Composition, path: str | Path) -> Path:
    """Write ``composition`` to ``path`` as a palette file (atomically); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = composition.check().to_json()
    _atomic_write(path, lambda f: f.write((text + "\n").encode()))
    return path


def load_palette(path: str | Path) -> Composition:
    """A palette file (or any composition JSON) as a composition; a first-release palette is migrated.
    Every failure is one :class:`PaletteError` that names the file."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise PaletteError(f"{path} is over the {MAX_JSON_BYTES >> 20} MiB limit of a palette")
        text = path.read_bytes()
    except OSError as err:
        raise PaletteError(f"cannot read palette {path}: {err.strerror}") from err
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise PaletteError(f"{path} is not a palette (invalid JSON: {str(err).splitlines()[0][:200]})") from None
    if not isinstance(doc, dict):
        raise PaletteError(f"{path} is not a palette: its JSON is a {type(doc).__name__}, not an object with "
                           "height, width and brushes")  # fmt: skip
    try:
        if _is_legacy(doc):
            return _migrate_legacy(doc, path)
        return Composition.from_json(text)
    except ContractError as err:
        raise PaletteError(f"{path} is not a valid palette: {err}") from None


def _is_legacy(doc: dict) -> bool:
    """A first-release palette: brush colours, or masks and a background image named by file (a file name
    has a dot; base64 has none)."""
    if doc.get("format", LEGACY_FORMAT) != LEGACY_FORMAT:
        return False
    brushes = doc.get("brushes")
    named = [b for b in brushes if isinstance(b, dict)] if isinstance(brushes, list) else []
    bg = doc.get("background")
    image = bg.get("image") if isinstance(bg, dict) else None
    return any("color" in b or (isinstance(b.get("mask"), str) and "." in b["mask"]) for b in named) or (
        isinstance(image, str) and "." in image
    )


def _migrate_legacy(doc: dict, path: Path) -> Composition:
    """A first-release palette (JSON + mask PNGs + an image path) read into a composition. Masks of another
    size but the same shape are resized to the canvas, as that release did."""
    from PIL import Image

    def fail(why: str) -> PaletteError:
        return PaletteError(f"{path} is not a valid palette: {why}")

    try:
        height, width = int(doc["height"]), int(doc["width"])
    except (KeyError, TypeError, ValueError) as err:
        raise fail(f"height and width must be whole numbers ({type(err).__name__}: {err})") from None
    try:
        check_canvas(height, width)  # before any mask is decoded: a huge palette fails in milliseconds
    except SemdrawError as err:
        raise PaletteError(f"{path}: {err}") from None
    bg = doc.get("background") or {}
    if not isinstance(bg, dict):
        raise fail("background must be an object")
    image = None
    if bg.get("image"):
        image_file = path.parent / str(bg["image"])
        try:
            image = image_file.read_bytes()
        except OSError as err:
            raise PaletteError(f"{path}: cannot read the background image {image_file}: {err.strerror}") from None
    data: dict[str, Any] = {"height": height, "width": width, "seed": doc.get("seed", 0), "brushes": [],
                            "background": {"prompt": bg.get("prompt", ""), "negative_prompt": bg.get("negative_prompt", ""),
                                           "image": None if image is None else base64.b64encode(image).decode()}}  # fmt: skip
    entries = doc.get("brushes", [])
    if not isinstance(entries, list):
        raise fail("brushes must be a list")
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("mask"), str):
            raise fail("each brush is an object with a mask file")
        mask_file = path.parent / entry["mask"]
        try:
            with Image.open(mask_file) as img:
                if img.width * img.height > 4 * height * width:
                    raise fail(f"mask {mask_file.name} is {img.width}x{img.height}, far larger than the canvas")
                mask = img.convert("L")
                if mask.size != (width, height):
                    w, h = mask.size
                    if abs(h * width - w * height) > 0.01 * h * width:
                        raise PaletteError(f"{path}: mask {mask_file.name} is {w}x{h}, the canvas {width}x{height} "
                                           "(another shape): repaint it or fix the file")  # fmt: skip
                    mask = mask.resize((width, height), Image.Resampling.BILINEAR)
                png = io.BytesIO()
                mask.save(png, format="PNG")
        except PaletteError:
            raise
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            raise PaletteError(f"{path}: cannot read mask {mask_file}: {err}") from None
        brush = {k: v for k, v in entry.items() if k not in ("color", "mask")}
        brush["name"] = str(brush.get("name", len(data["brushes"]) + 1))
        brush.setdefault("prompt", "")
        brush["mask"] = base64.b64encode(png.getvalue()).decode()
        data["brushes"].append(brush)
    return Composition.from_dict(data)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "brush"


def _atomic_write(path: Path, write: Any) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes owner-only files; keep the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def unique_path(folder: str | Path, stem: str, suffix: str) -> Path:
    """``folder/stem-0001.suffix``, the first number not taken (never overwrites)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n = 1
    while (folder / f"{stem}-{n:04d}{suffix}").exists():
        n += 1
    return folder / f"{stem}-{n:04d}{suffix}"
