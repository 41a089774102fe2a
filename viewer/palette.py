"""Palette files: the paper's import/export of a drawing, as one JSON document plus one PNG per mask.

```json
{"format": 1, "height": 64, "width": 64, "seed": 0,
 "background": {"prompt": "blue sky", "negative_prompt": "", "image": null},
 "brushes": [{"name": "1", "color": [255, 80, 80], "prompt": "a red circle", "negative_prompt": "",
              "alpha": 1.0, "blur": 2.0, "strength": 1.0, "enabled": true, "mask": "drawing.masks/1.png"}]}
```

``enabled: false`` marks a brush the window could not generate (no free stream row): the file keeps its
paint and prompt, and :meth:`Palette.brushes_for_semdraw` (so ``semdraw-render``) leaves it out, as the
window's image did. The window tries every brush again when it opens a palette.

Paths (mask PNGs, the background image) are relative to the JSON file. Writing is atomic: masks go to
fresh files first, then the JSON replaces the old one in one rename, so a crash leaves the old palette
or the new one, never a mix. The window edits a :class:`Palette`; :meth:`Palette.brushes_for_semdraw`
and :meth:`Palette.background_for_semdraw` turn it into the library's request objects.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from semdraw import Background, Brush
from semdraw.api import BackgroundSpec, BrushSpec, Composition
from semdraw.errors import SemdrawError
from semdraw.limits import check_canvas

FORMAT = 1

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


@dataclass
class PaletteBrush:
    """One brush of a palette; ``mask`` is an HxW uint8 array (255 = painted) at the palette's size."""

    name: str
    color: tuple[int, int, int]
    mask: np.ndarray
    prompt: str = ""
    negative_prompt: str = ""
    alpha: float = 1.0
    blur: float = 0.0
    strength: float = 1.0
    enabled: bool = True  # False: left out of generation (the stream had no row for it when last shown)

    def to_brush(self) -> Brush:
        return Brush(self.prompt, self.mask, negative_prompt=self.negative_prompt, mask_strength=self.alpha,
                     mask_std=self.blur, prompt_strength=self.strength, name=self.name)  # fmt: skip

    @property
    def active(self) -> bool:
        """A brush takes part in generation once it has a prompt and some paint."""
        return bool(self.prompt.strip()) and bool(self.mask.any())


@dataclass
class Palette:
    height: int
    width: int
    seed: int = 0
    background_prompt: str = ""
    background_negative_prompt: str = ""
    background_image: str | None = None  # a path (absolute, or relative to the palette file when loaded)
    brushes: dict[str, PaletteBrush] = field(default_factory=dict)
    background_data: bytes | None = field(default=None, repr=False)  # an image not yet in a file (a composition's)
    # set by placed(): (anchor, scale, drawn height, drawn width), so the background image is placed alike
    placement: tuple[str, bool, int, int] | None = field(default=None, repr=False)

    def brush(self, name: str) -> PaletteBrush:
        """The brush called ``name``, created empty (with the next overlay colour) if new."""
        if name not in self.brushes:
            color = BRUSH_COLORS[len(self.brushes) % len(BRUSH_COLORS)]
            self.brushes[name] = PaletteBrush(name, color, np.zeros((self.height, self.width), np.uint8))
        return self.brushes[name]

    def placed(self, height: int, width: int, anchor: str = "center", scale: bool = False) -> Palette:
        """The same drawing on a ``height`` x ``width`` canvas (:func:`place`): every mask keeps its shape;
        the canvas around it holds the background."""
        out = Palette(height, width, self.seed, self.background_prompt, self.background_negative_prompt,
                      self.background_image, background_data=self.background_data)  # fmt: skip
        for name, b in self.brushes.items():
            out.brushes[name] = PaletteBrush(b.name, b.color, place(b.mask, height, width, anchor, scale), b.prompt,
                                             b.negative_prompt, b.alpha, b.blur, b.strength, b.enabled)  # fmt: skip
        out.placement = (anchor, scale, self.height, self.width)
        return out

    # ------------------------------------------------------------------ the request contract
    def to_composition(self) -> Composition:
        """The palette as the library's request contract (overlay colours are the window's own: dropped;
        a background image file is read into the composition's bytes)."""
        image = Path(self.background_image).read_bytes() if self.background_image else self.background_data
        brushes = tuple(BrushSpec(b.name, b.prompt, b.mask.copy(), b.negative_prompt, float(b.alpha), float(b.blur),
                                  float(b.strength), bool(b.enabled)) for b in self.brushes.values())  # fmt: skip
        return Composition(self.height, self.width, brushes,
                           BackgroundSpec(self.background_prompt, self.background_negative_prompt, image),
                           int(self.seed)).check()  # fmt: skip

    @staticmethod
    def from_composition(composition: Composition) -> Palette:
        """A palette for the window from a composition (its background image kept as bytes until saved)."""
        composition.check()
        bg = composition.background
        pal = Palette(composition.height, composition.width, composition.seed, bg.prompt, bg.negative_prompt,
                      background_data=bg.image)  # fmt: skip
        for i, b in enumerate(composition.brushes):
            pal.brushes[b.name] = PaletteBrush(b.name, overlay_color(b.prompt, i), b.mask.copy(), b.prompt,
                                               b.negative_prompt, b.alpha, b.blur, b.strength, b.enabled)  # fmt: skip
        return pal

    def brushes_for_semdraw(self) -> list[Brush]:
        return [b.to_brush() for b in self.brushes.values() if b.active and b.enabled]

    def background_for_semdraw(self) -> Background:
        image = None
        if self.background_image or self.background_data:
            import io

            from PIL import Image

            source = self.background_image or io.BytesIO(self.background_data)
            try:
                image = Image.open(source).convert("RGB")
            except OSError as err:
                raise PaletteError(f"cannot read the background image {self.background_image or '(bytes)'}: {err}") from err
            if self.placement is not None:  # as it was drawn under the masks, then placed as they are
                anchor, scale, drawn_h, drawn_w = self.placement
                drawn = np.asarray(image.resize((drawn_w, drawn_h), Image.Resampling.BILINEAR))
                image = place(drawn, self.height, self.width, anchor, scale, fill=255)
        return Background(prompt=self.background_prompt, image=image,
                          negative_prompt=self.background_negative_prompt)  # fmt: skip

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> Path:
        """Write the palette atomically: ``path`` (JSON) and ``<stem>.masks/<name>.png``."""
        from PIL import Image

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        mask_dir = path.parent / f"{path.stem}.masks"
        mask_dir.mkdir(exist_ok=True)
        brushes = []
        for b in self.brushes.values():
            png = mask_dir / f"{_safe(b.name)}.png"
            _atomic_write(png, lambda f, b=b: Image.fromarray(b.mask).save(f, format="PNG"))
            entry = {k: v for k, v in asdict(b).items() if k != "mask"}
            entry["color"] = list(b.color)
            entry["mask"] = png.relative_to(path.parent).as_posix()
            brushes.append(entry)
        image = self.background_image
        if image is None and self.background_data is not None:  # a composition's image becomes a file beside it
            image = str(path.parent / f"{path.stem}.background")
            _atomic_write(Path(image), lambda f: f.write(self.background_data))
        if image is not None:
            image = os.path.relpath(Path(image).resolve(), path.parent.resolve())
        doc = {"format": FORMAT, "height": self.height, "width": self.width, "seed": self.seed,
               "background": {"prompt": self.background_prompt, "negative_prompt": self.background_negative_prompt,
                              "image": image},
               "brushes": brushes}  # fmt: skip
        _atomic_write(path, lambda f: f.write((json.dumps(doc, indent=2) + "\n").encode()))
        return path

    @staticmethod
    def load(path: str | Path) -> Palette:
        """Read a palette; masks of another size are resized to the palette's canvas."""
        from PIL import Image

        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except OSError as err:
            raise PaletteError(f"cannot read palette {path}: {err.strerror}") from err
        except json.JSONDecodeError as err:
            raise PaletteError(f"{path} is not a palette (invalid JSON: {err})") from err
        if not isinstance(doc, dict):
            raise PaletteError(f"{path} is not a palette: its JSON is a {type(doc).__name__}, not an object with "
                               "height, width and brushes")  # fmt: skip
        try:
            if doc.get("format", FORMAT) > FORMAT:
                raise PaletteError(f"{path} has palette format {doc['format']}; this semdraw reads {FORMAT}")
            height, width = int(doc["height"]), int(doc["width"])
            try:
                check_canvas(height, width)  # before any mask is decoded: a huge palette fails in milliseconds
            except SemdrawError as err:
                raise PaletteError(f"{path}: {err}") from None
            bg = doc.get("background") or {}
            image = bg.get("image")
            pal = Palette(height, width, int(doc.get("seed", 0)), bg.get("prompt", ""), bg.get("negative_prompt", ""),
                          str(path.parent / image) if image else None)  # fmt: skip
            for entry in doc.get("brushes", []):
                mask_file = path.parent / entry["mask"]
                try:
                    img = Image.open(mask_file).convert("L")
                except OSError as err:
                    raise PaletteError(f"{path}: cannot read mask {mask_file}: {err}") from err
                if img.size != (width, height):
                    w, h = img.size
                    if abs(h * width - w * height) > 0.01 * h * width:
                        raise PaletteError(f"{path}: mask {mask_file.name} is {w}x{h}, the canvas {width}x{height} "
                                           "(another shape): repaint it or fix the file")  # fmt: skip
                    img = img.resize((width, height), Image.Resampling.BILINEAR)
                name = str(entry["name"])
                pal.brushes[name] = PaletteBrush(
                    name, tuple(int(c) for c in entry.get("color", BRUSH_COLORS[len(pal.brushes) % 9])),
                    np.asarray(img, np.uint8).copy(), entry.get("prompt", ""), entry.get("negative_prompt", ""),
                    float(entry.get("alpha", 1.0)), float(entry.get("blur", 0.0)), float(entry.get("strength", 1.0)),
                    bool(entry.get("enabled", True)),
                )  # fmt: skip
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, PaletteError):
                raise
            raise PaletteError(f"{path} is not a valid palette: {type(err).__name__}: {err}") from err
        return pal


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
