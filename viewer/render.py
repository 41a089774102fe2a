"""`semdraw-render`: generate a palette without a window: one image at any size, or N stream frames as a video."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from semdraw.api import Composition, StreamConfig
from semdraw.errors import SemdrawError
from semdraw.loading import MODEL_HELP
from semdraw.quiet import quiet_libraries
from semdraw.stream_sync import StreamSync
from semdraw.tools import canvas_side, fps_arg, frames_arg, seed_arg, steps_arg

from .palette import ANCHORS, _umask, load_palette, placed

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
    p.add_argument("--steps", type=steps_arg, default=None, help="sampling steps (default: the palette's options, else the model's)")
    p.add_argument("--frames", type=frames_arg, default=None, help="stream this many frames into a video")
    p.add_argument("--fps", type=fps_arg, default=8.0, help="video frame rate (default 8)")
    p.add_argument("--seed-step", type=seed_arg, default=0,
                   help="with --frames: frame n uses seed + n x this (default 0: a still palette gives a still "
                        "video; 1: a new image every frame)")
    return p


def render(args: argparse.Namespace) -> Path:
    import semdraw

    composition = load_palette(args.palette)
    suffix = args.out.suffix.lower()
    video = args.frames is not None
    if video and suffix not in VIDEO_SUFFIXES:
        raise SemdrawError(f"--frames writes a video: name the output .mp4 or .avi, not {args.out.name}")
    if not video and suffix not in IMAGE_SUFFIXES:
        raise SemdrawError(f"name the output {'/'.join(IMAGE_SUFFIXES)} (or pass --frames N for a video)")
    if video and args.frames < 1:
        raise SemdrawError(f"--frames must be >= 1, got {args.frames}")
    height, width = args.height or composition.height, args.width or composition.width
    if (height, width) != (composition.height, composition.width):
        composition = placed(composition, height, width, args.anchor, args.scale)
    if args.seed is not None:
        composition = replace(composition, seed=args.seed)
    if args.steps is not None:
        composition = replace(composition, sampling=replace(composition.sampling, steps=args.steps, timesteps=None))
    brushes = composition.brushes_for_semdraw()
    if not brushes:
        log.warning("the palette has no brush with both a prompt and paint: only the background is rendered")
    semdraw.loading.check_canvas(args.model, height, width)  # before any weights load
    model = semdraw.load_model(args.model)
    background = composition.background_for_semdraw()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkstemp(dir=args.out.parent, prefix=f".{args.out.stem}.", suffix=suffix)[1])
    try:
        if video:
            _write_video(model, composition, args, tmp)
        else:
            image = semdraw.generate(model, brushes, background=background, height=height, width=width,
                                     seed=composition.seed, progress=True, **composition.sampling.options())  # fmt: skip
            image.save(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, args.out)  # nothing half-written is ever left under the output name
    finally:
        tmp.unlink(missing_ok=True)
    log.info("wrote %s (%dx%d)", args.out, width, height)
    return args.out


def _write_video(model, composition: Composition, args: argparse.Namespace, path: Path) -> None:
    import cv2
    from tqdm.auto import tqdm

    import semdraw

    # seed_step 0 (default): every frame the same noise, so a still palette is a still video
    rows = len(composition.brushes_for_semdraw()) + bool(composition.background.prompt)
    config = StreamConfig(layers=max(1, rows), seed_step=args.seed_step).check()
    stream = semdraw.Stream(model, **config.stream_options(composition))
    StreamSync(stream).apply(composition)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*VIDEO_SUFFIXES[path.suffix.lower()]), args.fps,
                             (composition.width, composition.height))  # fmt: skip
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
