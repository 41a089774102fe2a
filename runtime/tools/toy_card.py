"""Write weights/MODEL_CARD.md from training.json and `semdraw-bench fidelity --json` outputs.

    semdraw-bench fidelity --json toy.json
    semdraw-bench fidelity --sweep alternatives.json
    python -m semdraw.tools.toy_card --fidelity toy.json --comparison alternatives.json

``--comparison`` holds the sweep's rows (``fidelity.evaluate()`` of each sampler / LoRA alternative).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..toy import WEIGHTS_DIR, architecture, world
from ..toy.fidelity import kinds_table, markdown_table

TEMPLATE = Path(architecture.__file__).resolve().parent / "card_template.md"


def fidelity_tables(fid: dict) -> str:
    def split_tables(result: dict, split: str) -> str:
        text = (f"{markdown_table(result['ablation'])}\n\nCentring the first N steps, {split} split (bootstrap "
                f"steps = max(1, N)):\n\n{markdown_table(result['centring'])}")  # fmt: skip
        if "bootstrap_mix" in result:
            text += (f"\n\nBootstrap fill, {split} split: over how many steps it fades from white to the current "
                     f"latent:\n\n{markdown_table(result['bootstrap_mix'])}")  # fmt: skip
        return text

    text = f"Table 5 ablation, tuning split ({fid['scenes']} scenes × {len(fid['seeds'])} seeds):\n\n"
    text += split_tables(fid, "tuning")
    held = fid.get("held_out")
    if held:
        seeds = f"seeds {held['seeds'][0]}-{held['seeds'][-1]}"
        text += (f"\n\nTable 5 ablation, held-out split ({held['scenes']} other scenes × {seeds}):\n\n"
                 f"{split_tables(held, 'held-out')}\n\n"
                 f"The defaults on the held-out split, per scene kind:\n\n{kinds_table(held['ablation'][-1]['kinds'])}")  # fmt: skip
    return text


FIRST_WORLD = """| caption | share | image |
|---|---|---|
| `{scene}` | 28 % | the whole image is the scene, with gentle low-frequency texture (waves on water, blades on grass) |
| `{scene1} and {scene2}` | 14 % | two scenes: a wavy horizon split, or a rectangle of one inside the other |
| `a {colour} {shape}` | 24 % | an object on plain white |
| `a {colour} {shape} in {scene}` | 20 % | an object on a scene |
| `a {colour} sun in {scene}` | 7 % | a sun (disc with rays), mostly on a scene |
| empty | 7 % | any of the above (the unconditional prompt for guidance) |

Objects sit near the centre 70 % of the time (as in real photo data sets, so mask-centring has
something to fix) and anywhere otherwise."""


def data_grammar(world_name: str, images: int, size: int) -> str:
    """The card's data section for the world generation a run trained on (training.json's ``world``)."""
    recipe = world.RECIPES[world_name]
    if recipe is world.FIRST:
        text = FIRST_WORLD
    else:
        objects = 1 - recipe.scene_share - recipe.two_scene_share
        text = (f"The `{recipe.name}` world (`semdraw.toy.world.{recipe.name.upper()}`): a whole-image scene "
                f"{recipe.scene_share:.0%} of the time, two scenes {recipe.two_scene_share:.0%}, object images "
                f"{objects:.0%}. An object image has a white background, one scene or (in "
                f"{recipe.two_scenes_under_object:.0%} of the scene backgrounds) two; its caption names a scene "
                f"background {recipe.background_named:.0%} of the time (`a {{colour}} {{shape}} in {{scene}}`, else "
                f"just `a {{colour}} {{shape}}`, as a region brush's own prompt never names its surroundings); a "
                f"second object (`... and a {{colour}} {{shape}}`) joins {recipe.second_object:.0%} of them; "
                f"{recipe.edge_share:.1%} of objects lie against or are cut by an image edge, the rest near the "
                f"centre (70 %) or anywhere. Suns are {recipe.sun_share:.0%} of objects; "
                f"{recipe.empty_caption:.0%} of captions are empty (the unconditional prompt for guidance).")
    return f"{text} {images} images of {size}×{size} were rendered for training."


def _token_count(weights: Path) -> int:
    tok = json.loads((weights / "base" / "tokenizer" / "tokenizer.json").read_text())
    return len(tok["model"]["vocab"])


def _chosen_choice(weights: Path) -> str | None:
    """The sweep row the defaults' rule picks from the folder's tuning.json (None without one)."""
    from ..toy import fidelity

    tuning_file = weights / "tuning.json"
    if not tuning_file.exists():
        return None
    tuning = json.loads(tuning_file.read_text())
    by_name = {c.name: c for c in fidelity.sampler_sweep()}
    return fidelity.pick_sampler(tuple(by_name[n] for n in tuning["sweep_choices"]), tuning["sweep"]).name


def _vae_loss(weights: Path, t: dict) -> str:
    loss = t["final_losses"].get("vae")
    if loss is None and (weights / "previous.json").exists():  # reused: the loss of the run that trained it
        loss = json.loads((weights / "previous.json").read_text()).get("vae_final_mse")
    return "-" if loss is None else f"{loss:.4f}"


def render(weights: Path, fid: dict, comparison: list[dict]) -> str:
    t = json.loads((weights / "training.json").read_text())
    vocab = json.loads((weights / "vocabulary.json").read_text())
    size_mb = sum(p.stat().st_size for p in weights.rglob("*") if p.is_file()) / 2**20
    colors = "\n".join(
        ["| colour | RGB |", "|---|---|"] + [f"| {k} | {tuple(v)} |" for k, v in world.COLORS.items()]
    )
    scenes = "\n".join(
        ["| scene | RGB |", "|---|---|"] + [f"| {k} | {tuple(v)} |" for k, v in world.SCENES.items()]
    )
    chosen = _chosen_choice(weights)
    comparison = [{**r, "variant": f"**{r['variant']} (default)**"} if r["variant"] == chosen else r
                  for r in comparison or []]  # fmt: skip
    distill = markdown_table(comparison) if comparison else "(not measured)"
    held = fid.get("held_out") or {}
    timings = ", ".join(f"{k.removesuffix('_s')} {v / 60:.1f} min" for k, v in t["timings_s"].items())
    return TEMPLATE.read_text().format(
        data_grammar=data_grammar(t.get("world", "first"), t["images"], t["size"]),
        size_mb=f"{size_mb:.1f}", colors_table=colors, scenes_table=scenes, shapes=", ".join(vocab["shapes"]),
        images=t["images"], size=t["size"], latent=t["size"] // 8, vocab=_token_count(weights),
        tokens=architecture.MAX_TOKENS, te_params=f"{t['params']['text_encoder']:,}",
        unet_params=f"{t['params']['unet']:,}", vae_params=f"{t['params']['vae']:,}", scale=t["vae_scaling_factor"],
        seed=t["seed"], threads=t["torch_threads"], vae_steps=t["vae_steps"], vae_loss=_vae_loss(weights, t),
        vae_origin="reused unchanged from the previous weights (`--vae-from`), which trained it: " if t.get("vae_from")
        else "",
        vae_crop=t.get("vae_crop", t["size"]),
        base_steps=t["base_steps"], batch=t["batch"], base_loss=t["final_losses"]["base_v"], rank=t["lora_rank"],
        distill_steps=t["distill_steps"], distill_loss=t["final_losses"]["distill"], timings=timings,
        guidance=f"[{t['teacher_guidance'][0]:g}, {t['teacher_guidance'][1]:g}]", distill_lr=f"{t['distill_lr']:g}",
        ema=t.get("distill_ema_decay", "none (the online student)"),
        distilled_from="distilled in the same run" if t.get("distilled_from", "this run") == "this run"
        else "distilled with `--from-base` from the base weights of the run above",
        distill_table=distill, bench_seeds=len(fid["seeds"]), fidelity_tables=fidelity_tables(fid),
        bench_scenes=fid["scenes"], held_scenes=held.get("scenes", "-"),
        held_seeds=f"{held['seeds'][0]}-{held['seeds'][-1]}" if held else "-",
        defaults_sentence=f"{fid['steps']} LCM steps {fid.get('timesteps', '')} with {fid.get('bootstrap_steps', 1)} "
                          f"centred bootstrap steps and a bootstrap fill fading over "
                          f"{fid.get('bootstrap_mix_steps', 1):g} steps",
        fill_steps=f"{fid.get('bootstrap_mix_steps', 1):g}", previous_section=previous_section(weights, fid),
        bench_schedule=f"{fid['steps']} LCM steps {fid.get('timesteps', '')}, {fid.get('bootstrap_steps', 1)} bootstrap "
                       f"steps, the fill fading over {fid.get('bootstrap_mix_steps', 1):g} steps",
    )  # fmt: skip


def previous_section(weights: Path, fid: dict) -> str:
    """The figures of the weights these replaced (``previous.json``, transcribed from their card) beside
    this run's, on the same splits and seeds."""
    file = weights / "previous.json"
    if not file.exists():
        return ""
    prev = json.loads(file.read_text())
    now, held = fid["ablation"][-1], (fid.get("held_out") or {}).get("ablation", [{}])[-1]

    def cells(row: dict) -> str:
        return " | ".join("-" if row.get(k) is None else f"{row[k]:.3f}"
                          for k in ("region_accuracy", "object_presence", "off_centre_presence"))  # fmt: skip

    rows = ["| weights | split | per-region accuracy | object presence | small off-centre objects present |",
            "|---|---|---|---|---|",
            f"| previous ({prev['world']} world; {prev['defaults']}) | tuning | {cells(prev['tuning'])} |",
            f"| these ({fid.get('bootstrap_mix_steps', 1):g}-step fill defaults above) | tuning | {cells(now)} |",
            f"| previous | held-out | {cells(prev['held_out'])} |", f"| these | held-out | {cells(held)} |"]  # fmt: skip
    kinds = held.get("kinds", {})
    per_kind = ["| scene kind (held-out) | previous: regions / objects | these: regions / objects |", "|---|---|---|"]
    for kind, old in prev.get("held_out_kinds", {}).items():
        new = kinds.get(kind, {})

        def pair(r: dict) -> str:
            return " / ".join("-" if r.get(k) is None else f"{r[k]:.3f}" for k in ("region_accuracy", "object_presence"))

        per_kind.append(f"| {kind} | {pair(old)} | {pair(new)} |")
    return ("## Compared with the previous weights\n\n" + f"{prev['what']}.\n\n" + "\n".join(rows) + "\n\n"
            + "\n".join(per_kind))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m semdraw.tools.toy_card", description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", type=Path, default=WEIGHTS_DIR)
    p.add_argument(
        "--fidelity", type=Path, required=True, help="semdraw-bench fidelity --json output for toy"
    )
    p.add_argument(
        "--comparison",
        type=Path,
        default=None,
        help="JSON list of fidelity.evaluate() rows (sampler / LoRA alternatives) for the distillation table "
        "(default: the sweep rows of the folder's tuning.json, written by semdraw-bench fidelity --choose-defaults)",
    )
    args = p.parse_args(argv)
    fid = json.loads(args.fidelity.read_text())
    tuning = args.weights / "tuning.json"
    if args.comparison:
        comparison = json.loads(args.comparison.read_text())
    else:
        comparison = json.loads(tuning.read_text())["sweep"] if tuning.exists() else []
    (args.weights / "MODEL_CARD.md").write_text(render(args.weights, fid, comparison))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
