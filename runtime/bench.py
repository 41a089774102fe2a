"""`semdraw-bench`: measurements that claims in the README come from.

Subcommands:
  fidelity   the paper's Table 5 ablation and the centring study on the `toy` model's scene set
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("semdraw.bench")


def _markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| variant | per-region accuracy | object presence | small off-centre objects present |",
             "|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['variant']} | {r['region_accuracy']:.3f} | {r['object_presence']:.3f} | "
                     f"{r['off_centre_presence']:.3f} |")  # fmt: skip
    return "\n".join(lines)


def fidelity(args: argparse.Namespace) -> int:
    import semdraw
    from semdraw.toy import fidelity as F

    if args.seeds < 1:
        log.error("semdraw-bench: --seeds must be >= 1")
        return 2
    model = semdraw.load_model(args.model, device="cpu")
    seeds = list(range(args.seeds))
    started = time.perf_counter()
    n_scenes = len(F.scenes())
    log.info("fidelity: model %s, %d scenes x %d seeds, steps %s", args.model, n_scenes, len(seeds),
             args.steps or model.family.default_steps)  # fmt: skip
    from tqdm.auto import tqdm

    variants = list(F.ABLATION) + list(F.CENTRING)
    rows = [F.evaluate(model, v, seeds, steps=args.steps) for v in tqdm(variants, desc="variants")]
    ablation, centring = rows[: len(F.ABLATION)], rows[len(F.ABLATION) :]
    print("\nTable 5 ablation (toy model):\n")
    print(_markdown_table(ablation))
    print("\nCentring: how many of the first steps are centred (bootstrap steps = max(1, centred)):\n")
    print(_markdown_table(centring))
    elapsed = time.perf_counter() - started
    print(f"\n{n_scenes} scenes x {len(seeds)} seeds per row; {elapsed:.0f} s in all")
    if args.json:
        payload = {"model": args.model, "seeds": seeds, "steps": args.steps, "scenes": n_scenes,
                   "ablation": ablation, "centring": centring, "seconds": elapsed}  # fmt: skip
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="semdraw-bench", description="Benchmarks behind semdraw's published figures."
    )
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fidelity", help="per-region colour accuracy and object presence on the toy scene set",
                       description="Scores every ablation variant of region-based generation on the toy model's "
                                   "fixed scene set (strict nearest-reference-colour accuracy per brush region).")  # fmt: skip
    f.add_argument("--model", default="toy", help="a model with the toy vocabulary (default: toy)")
    f.add_argument("--seeds", type=int, default=4, help="seeds per scene (default: 4)")
    f.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    f.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    f.set_defaults(run=fidelity)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except ValueError as err:  # semdraw's own errors say what to do
        log.error("semdraw-bench: %s", err)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
