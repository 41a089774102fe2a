"""`semdraw-render`: generate a palette without a window: one image at any size, or N stream frames as a video."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

from semdraw.errors import SemdrawError
from semdraw.loading import MODEL_HELP
from semdraw.quiet import quiet_libraries
from semdraw.tools import canvas_side, fps_arg, frames_arg, seed_arg, steps_arg

from .palette import ANCHORS, Palette, _umask

log = logging.getLogger("semdraw.viewer")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
VIDEO_SUFFIXES = {".mp4": "mp4v", ".avi": "MJPG"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="semdraw-render",
        description="Render a palette written by semdraw-live (key w). One image: one-shot generation at any "
        "size (canvases larger than the model's native size are generated in overlapping tiles, so panoramas "
        "work). With --frames N and a .mp4/.avi output: N frames of the stream, as a video.",
    )
    p.add_argument("palette", type=Path, help="palette JSON (from semdraw-live's w key)")
    p.add_argument("-o", "--out", type=Path, required=True, help="output .png/.jpg/.webp, or .mp4/.avi with --frames")
    p.add_argument("--model", default="toy", help=MODEL_HELP)
    p.add_argument("--height", type=canvas_side, default=None, help="output height (default: the palette's)")
    p.add_argument("--width", type=canvas_side, default=None, help="output width (default: the palette's)")
    p.add_argument("--anchor", choices=tuple(ANCHORS), default="center",
                   help="where the drawing sits when --height/--width differ from the palette's canvas (default "
                        "center); the masks keep their size and shape, the rest of the canvas is background")
    p.add_argument("--scale", action="store_true",
                   help="with another canvas size: scale the drawing by one factor (the largest that fits, aspect "
                        "kept) instead of keeping its size")
    p.add_argument("--seed", type=seed_arg, default=None, help="noise seed (default: the palette's)")
    p.add_argument("--steps", type=steps_arg, default=None, help="sampling steps (default: the model's)")
    p.add_argument("--frames", type=frames_arg, default=None, help="stream this many frames into a video")
    p.add_argument("--fps", type=fps_arg, default=8.0, help="video frame rate (default 8)")
    p.add_argument("--seed-step", type=seed_arg, default=0,
                   help="with --frames: frame n uses seed + n x this (default 0: a still palette gives a still "
                        "video; 1: a new image every frame)")
    return p


def load_request(path: Path) -> Palette:
    """A palette file, or a composition JSON (``semdraw.Composition.to_json()``) as one."""
    from semdraw.api import MAX_JSON_BYTES, Composition

    try:
        text = path.read_bytes()
        doc = json.loads(text) if len(text) <= MAX_JSON_BYTES else None
    except OSError as err:
        raise SemdrawError(f"cannot read {path}: {err.strerror}") from None
    except ValueError:
        doc = None  # Palette.load says what is wrong with it
    brushes = doc.get("brushes") if isinstance(doc, dict) else None
    inline = isinstance(brushes, list) and brushes and all(
        isinstance(b, dict) and "color" not in b and not str(b.get("mask", "")).lower().endswith(".png") for b in brushes
    )  # fmt: skip
    if inline:  # masks inside the file: a composition (semdraw.Composition.to_json())
        return Palette.from_composition(Composition.from_json(text))
    return Palette.load(path)


def render(args: argparse.Namespace) -> Path:
    import semdraw

    palette = load_request(args.palette)
    suffix = args.out.suffix.lower()
    video = args.frames is not None
    if video and suffix not in VIDEO_SUFFIXES:
        raise SemdrawError(f"--frames writes a video: name the output .mp4 or .avi, not {args.out.name}")
    if not video and suffix not in IMAGE_SUFFIXES:
        raise SemdrawError(f"name the output {'/'.join(IMAGE_SUFFIXES)} (or pass --frames N for a video)")
    if video and args.frames < 1:
        raise SemdrawError(f"--frames must be >= 1, got {args.frames}")
    brushes = palette.brushes_for_semdraw()
    if not brushes:
        log.warning("the palette has no brush with both a prompt and paint: only the background is rendered")
    height, width = args.height or palette.height, args.width or palette.width
    if (height, width) != (palette.height, palette.width):
        palette = palette.placed(height, width, args.anchor, args.scale)
        brushes = palette.brushes_for_semdraw()
    seed = palette.seed if args.seed is None else args.seed
    semdraw.loading.check_canvas(args.model, height, width)  # before any weights load
    model = semdraw.load_model(args.model)
    background = palette.background_for_semdraw()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkstemp(dir=args.out.parent, prefix=f".{args.out.stem}.", suffix=suffix)[1])
    try:
        if video:
            _write_video(model, brushes, background, height, width, seed, args, tmp)
        else:
            image = semdraw.generate(model, brushes, background=background, height=height, width=width, seed=seed,
                                     steps=args.steps, progress=True)  # fmt: skip
            image.save(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, args.out)  # nothing half-written is ever left under the output name
    finally:
        tmp.unlink(missing_ok=True)
    log.info("wrote %s (%dx%d)", args.out, width, height)
    return args.out


def _write_video(model, brushes, background, height, width, seed, args, path: Path) -> None:
    import cv2
    from tqdm.auto import tqdm

    import semdraw

    # seed_step 0 (default): every frame the same noise, so a still palette is a still video
    stream = semdraw.Stream(model, height=height, width=width, layers=max(1, len(brushes)) + bool(background.prompt),
                            steps=args.steps, seed=seed, seed_step=args.seed_step)  # fmt: skip
    for i, b in enumerate(brushes):
        stream.set_brush(i, b)
    stream.set_background(background)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*VIDEO_SUFFIXES[path.suffix.lower()]), args.fps,
                             (width, height))  # fmt: skip
    if not writer.isOpened():
        raise SemdrawError(f"OpenCV cannot write {path.suffix} video here; try .avi")
    try:
        for _ in tqdm(range(args.frames), desc="frames", unit="frame"):
            writer.write(cv2.cvtColor(stream(), cv2.COLOR_RGB2BGR))
    finally:
        writer.release()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    quiet_libraries()  # SEMDRAW_VERBOSE=1 shows the libraries' notices and load bars
    args = _parser().parse_args(argv)
    try:
        render(args)
    except SemdrawError as err:
        log.error("semdraw-render: %s", err)
        return 2
    except OSError as err:  # the output's folder: permissions, a path through a file, a full disk
        log.error("semdraw-render: cannot write %s: %s", err.filename or args.out, err.strerror or err)
        return 2
    except KeyboardInterrupt:
        log.error("semdraw-render: interrupted; nothing was written")
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
