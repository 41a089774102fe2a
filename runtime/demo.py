"""`semdraw-demo`: the quickest honest demonstration that runs offline on a CPU.

Until the embedded `toy` model ships, no meaningful image can be made without downloading a
checkpoint. So the demo builds tiny *random* SD1.5-shaped components and shows what is true of them:
region-based generation runs end to end, equals diffusers' own pipeline where it must (oracle 2), and
a canvas twice the native size runs in batched tiles. The PNGs it writes show structure, not meaning.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger("semdraw.demo")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="semdraw-demo",
        description=(
            "Offline CPU demonstration of semdraw on tiny random SD1.5-shaped components: checks region-based "
            "generation against diffusers' StableDiffusionPipeline and writes example PNGs. Random weights: the "
            "images show structure, not meaning."
        ),
    )
    p.add_argument("--out", type=Path, default=Path("out"), help="folder for the PNGs (default: ./out)")
    p.add_argument("--seed", type=int, default=0, help="random seed for weights and sampling (default: 0)")
    p.add_argument("--steps", type=int, default=4, help="LCM sampling steps (default: 4)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.steps < 1:
        log.error("semdraw-demo: --steps must be >= 1")
        return 2
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        log.error("semdraw-demo: cannot create %s: %s", args.out, err)
        return 2

    import semdraw
    from semdraw.tiny import make_tiny_pipeline

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        pipe = make_tiny_pipeline(Path(tmp), seed=args.seed)
    pipe.set_progress_bar_config(disable=True)
    model = semdraw.Model.from_pipeline(pipe, name="tiny-random")
    n = model.native_size
    log.info("model: tiny random SD1.5-shaped components, native %dx%d, sampler %s", n, n, model.sampler)

    # 1. oracle: one full-canvas brush == diffusers' pipeline with the same generator
    brush = semdraw.Brush("blue sky", np.ones((n, n), np.float32))
    ours = semdraw.generate(model, [brush], steps=args.steps, bootstrap_steps=0, output_type="np",
                            generator=torch.Generator().manual_seed(args.seed))  # fmt: skip
    ref = pipe("blue sky", num_inference_steps=args.steps, guidance_scale=1.0, height=n, width=n,
               generator=torch.Generator().manual_seed(args.seed), output_type="np").images[0]  # fmt: skip
    diff = int(np.abs(ours.astype(int) - (ref * 255).round().astype(int)).max())
    log.info("oracle  generate() vs diffusers StableDiffusionPipeline: max pixel difference %d/255 (%s)",
             diff, "OK" if diff <= 2 else "MISMATCH")  # fmt: skip

    # 2. two brushes, all stabilizations on
    top = np.zeros((n, n), np.float32)
    top[: n // 2] = 1
    brushes = [semdraw.Brush("blue sky", top, mask_std=2.0), semdraw.Brush("green grass", 1 - top)]
    regional = semdraw.generate(model, brushes, steps=args.steps, seed=args.seed)
    regional.save(args.out / "regional.png")

    # 3. a canvas twice the native size, in batched tiles
    pano = semdraw.panorama(model, "blue sky", height=n, width=2 * n, steps=args.steps, seed=args.seed)
    pano.save(args.out / "panorama.png")
    log.info("wrote %s and %s (%.1f s in all)", args.out / "regional.png", args.out / "panorama.png",
             time.perf_counter() - t0)  # fmt: skip
    log.info("note: random weights, so the images show structure, not meaning; "
             "real models load with semdraw.load_model('sd15') where the hub is reachable")  # fmt: skip
    return 0 if diff <= 2 else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
