"""`semdraw-demo`: the quickest honest demonstration; runs offline on a CPU in seconds.

1. The embedded `toy` model paints a scene of three semantic brushes (sky above, grass below, a red
   circle off-centre) and a panorama twice its native width; the demo scores each brush's region with
   the fidelity benchmark's strict colour metric and writes the PNGs.
2. A self-check: tiny random SD1.5-shaped components, where `generate()` must equal diffusers'
   `StableDiffusionPipeline` with the same generator (oracle 2).
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

from semdraw.quiet import quiet_libraries
from semdraw.tools import seed_arg, steps_arg

log = logging.getLogger("semdraw.demo")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="semdraw-demo",
        description=(
            "Offline CPU demonstration: the embedded toy model paints a three-brush scene and a panorama "
            "(PNGs in --out, each brush region scored), then generate() is checked against diffusers' "
            "StableDiffusionPipeline on tiny random components."
        ),
    )
    p.add_argument("--out", type=Path, default=Path("out"), help="folder for the PNGs (default: ./out)")
    p.add_argument("--seed", type=seed_arg, default=0, help="random seed for weights and sampling (default: 0)")
    p.add_argument("--steps", type=steps_arg, default=None,
                   help="LCM sampling steps (default: each model's own: toy 2, the tiny check 4)")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        return demo(argv)
    except KeyboardInterrupt:
        log.error("semdraw-demo: interrupted")
        return 130


def demo(argv: list[str] | None = None) -> int:
    """The demonstration (:func:`main` without the Ctrl-C handling)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    quiet_libraries()  # SEMDRAW_VERBOSE=1 shows the libraries' notices and load bars
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        log.error("semdraw-demo: cannot create %s: %s", args.out, err)
        return 2

    import semdraw
    from semdraw.tiny import make_tiny_pipeline
    from semdraw.toy import fidelity

    t0 = time.perf_counter()
    toy = semdraw.load_model("toy", device="cpu")
    n = toy.native_size
    scene = fidelity.Scene("demo", (
        fidelity.SceneBrush("blue sky", fidelity.rect(0, 0, 0.5, 1), "blue sky"),
        fidelity.SceneBrush("green grass", fidelity.rect(0.5, 0, 1, 1), "green grass"),
        fidelity.SceneBrush("a red circle", fidelity.disc(0.3, 0.7, 0.18), "red", is_object=True),
    ))  # fmt: skip
    brushes = [semdraw.Brush(b.prompt, b.mask) for b in scene.brushes]
    image = semdraw.generate(toy, brushes, steps=args.steps, seed=args.seed)
    image.save(args.out / "toy_scene.png")
    score = fidelity.score_image(np.asarray(image), scene)
    log.info("toy: sky above, grass below, a red circle top-right -> %s", args.out / "toy_scene.png")
    acc = score["per_brush"]
    log.info("     strict colour accuracy per region: sky %.2f, grass %.2f, red circle %.2f (%s)", acc["blue sky"],
             acc["green grass"], acc["a red circle"], "present" if score["presence"][0] else "missing")  # fmt: skip
    pano = semdraw.panorama(toy, "blue sky and green grass", height=n, width=2 * n, steps=args.steps,
                            seed=args.seed)  # fmt: skip
    pano.save(args.out / "toy_panorama.png")
    log.info("toy: panorama %dx%d in batched tiles -> %s", 2 * n, n, args.out / "toy_panorama.png")

    with tempfile.TemporaryDirectory() as tmp:
        pipe = make_tiny_pipeline(Path(tmp), seed=args.seed)
    pipe.set_progress_bar_config(disable=True)
    model = semdraw.Model.from_pipeline(pipe, name="tiny-random")

    # 1. oracle: one full-canvas brush == diffusers' pipeline with the same generator
    n, steps = model.native_size, args.steps or model.family.default_steps
    brush = semdraw.Brush("blue sky", np.ones((n, n), np.float32))
    ours = semdraw.generate(model, [brush], steps=steps, bootstrap_steps=0, output_type="np",
                            generator=torch.Generator().manual_seed(args.seed))  # fmt: skip
    ref = pipe("blue sky", num_inference_steps=steps, guidance_scale=1.0, height=n, width=n,
               generator=torch.Generator().manual_seed(args.seed), output_type="np").images[0]  # fmt: skip
    diff = int(np.abs(ours.astype(int) - (ref * 255).round().astype(int)).max())
    log.info("self-check on tiny random components: generate() vs diffusers StableDiffusionPipeline: "
             "max pixel difference %d/255 (%s)",
             diff, "OK" if diff <= 2 else "MISMATCH")  # fmt: skip

    log.info("done in %.1f s", time.perf_counter() - t0)
    return 0 if diff <= 2 else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
