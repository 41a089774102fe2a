"""`semdraw-bench`: the measurements that the claims in docs/benchmarks.md come from.

Subcommands:
  fidelity   the paper's Table 5 ablation and the centring study on the `toy` model's scene set
  stream     frames per second of the multi-prompt stream, split into denoiser / decoder / everything else,
             against one-shot generation of the same image (and, on request, another backend)

Timings are medians over the timed frames, after warm-up frames; ratios come from one run, since these
machines are noisy. On CUDA the sections are timed with a device synchronisation around each.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from semdraw.choices import BACKENDS, CFG_MODES, PRECISIONS
from semdraw.loading import MODEL_HELP
from semdraw.quiet import quiet_libraries
from semdraw.tools import (
    bench_host,
    bench_serve,
    bench_session,
    canvas_side,
    frames_arg,
    machine_line,
    steps_arg,
    torch_threads,
)

log = logging.getLogger("semdraw.bench")


def _guidance_table(model: Any, args: argparse.Namespace, seeds: list[int], variants: Any, started: float) -> int:
    """`fidelity --guidance W`: the full method without guidance and with each guidance mode."""
    from tqdm.auto import tqdm

    from semdraw.toy import fidelity as F

    rows = [F.evaluate(model, v, seeds, steps=args.steps) for v in tqdm(variants, desc="guidance modes")]
    print(f"\nGuidance modes ({args.model} model, full method, {len(F.scenes())} scenes x {len(seeds)} seeds):\n")
    print(F.markdown_table(rows))
    print(f"\n{time.perf_counter() - started:.0f} s in all")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "seeds": seeds, "guidance": args.guidance,
                                               "rows": rows}, indent=2) + "\n")  # fmt: skip
    return 0


def _precision_table(model: Any, args: argparse.Namespace, seeds: list[int], started: float) -> int:
    """`fidelity --precisions fp32,bf16`: the full method in each arithmetic, on the tuning and held-out
    splits (the bounds a lower precision must keep to become a default: docs/benchmarks.md)."""
    from tqdm.auto import tqdm

    from semdraw.toy import fidelity as F

    variants = [F.Variant(p, {"precision": p}) for p in args.precisions]
    splits = (("tuning", F.scenes(), seeds), ("held-out", F.held_out_scenes(), [F.HELD_OUT_SEED0 + s for s in seeds]))
    rows = {split: [F.evaluate(model, v, split_seeds, steps=args.steps, scene_set=scene_set)
                    for v in tqdm(variants, desc=f"precisions ({split})")]
            for split, scene_set, split_seeds in splits}  # fmt: skip
    for split, table in rows.items():
        print(f"\nPrecisions ({args.model} model, full method, {split} split, {len(seeds)} seeds):\n")
        print(F.markdown_table(table))
    print(f"\n{time.perf_counter() - started:.0f} s in all")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "seeds": seeds, "precisions": args.precisions,
                                               "splits": rows}, indent=2) + "\n")  # fmt: skip
    return 0


def _engines_table(model: Any, args: argparse.Namespace, seeds: list[int], started: float) -> int:
    """`fidelity --engines A,B`: the full method on the torch model and on each engine set (an int8 set also
    with its fp32 files), both splits, the scenes of the sets' canvas only (a set paints the canvas it was
    built for)."""
    import semdraw
    from semdraw.toy import fidelity as F

    full = F.ABLATION[-1]
    sources: list[tuple[str, Any]] = [(f"{args.model} (torch)", model)]
    canvases = set()
    for folder in args.engines:
        engine_set = semdraw.load_engines(folder, "onnxruntime")
        canvases.add((engine_set.manifest.request.height, engine_set.manifest.request.width))
        sources.append((f"{folder}", engine_set))
        if any(n.onnx_int8 for n in engine_set.manifest.networks.values()):
            sources.append((f"{folder}, fp32 files", semdraw.load_engines(folder, "onnxruntime", int8=False)))
    if len(canvases) != 1:
        log.error("semdraw-bench fidelity --engines: the sets were built for different canvases %s", sorted(canvases))
        return 2
    (height, width), = canvases
    splits = (("tuning", F.scenes(), seeds), ("held-out", F.held_out_scenes(), [F.HELD_OUT_SEED0 + s for s in seeds]))
    rows = {}
    for split, scene_set, split_seeds in splits:
        chosen = [sc for sc in scene_set if (F.SIZE, sc.width) == (height, width)]
        rows[split] = {"scenes": len(chosen), "of": len(scene_set),
                       "rows": [F.evaluate(source, F.Variant(name, full.options), split_seeds, steps=args.steps,
                                           scene_set=chosen) for name, source in sources]}  # fmt: skip
    for split, result in rows.items():
        print(f"\nEngine sets (full method, {split} split: the {result['scenes']} of {result['of']} scenes at "
              f"{height}x{width}, {len(seeds)} seeds):\n")  # fmt: skip
        print(F.markdown_table(result["rows"]))
    print(f"\n{time.perf_counter() - started:.0f} s in all")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "seeds": seeds, "engines": [str(e) for e in args.engines],
                                               "splits": rows}, indent=2) + "\n")  # fmt: skip
    return 0


def fidelity(args: argparse.Namespace) -> int:
    import semdraw
    from semdraw.toy import fidelity as F

    if args.seeds < 1:
        log.error("semdraw-bench: --seeds must be >= 1")
        return 2
    seeds = list(range(args.seeds))
    if args.choose_defaults:
        return _choose_defaults(args, seeds)
    if args.sweep:
        return _sampler_sweep(args, seeds)
    model = semdraw.load_model(args.model, device="cpu")
    needed = F.scene_words()
    if model.vocabulary is None or not needed <= model.vocabulary:  # before any work: the scores need the words
        missing = sorted(needed - (model.vocabulary or frozenset()))
        log.error("semdraw-bench fidelity: %s does not have the toy vocabulary its scenes are written in "
                  "(missing: %s); score a toy-world model (default: toy)", args.model,
                  ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else ""))  # fmt: skip
        return 2
    started = time.perf_counter()
    n_scenes = len(F.scenes())
    sched = model.schedule(steps=args.steps)
    timesteps = [int(t) for t in sched.timesteps.tolist()]
    log.info("fidelity: model %s, %d scenes x %d seeds, %d steps (timesteps %s), bootstrap steps %s, fill "
             "fading over %g steps", args.model, n_scenes, len(seeds), sched.steps, timesteps,
             model.defaults.bootstrap_steps, model.defaults.bootstrap_mix_steps)  # fmt: skip
    from tqdm.auto import tqdm

    if args.guidance is not None:
        return _guidance_table(model, args, seeds, F.guidance_variants(args.guidance), started)
    if args.precisions is not None:
        return _precision_table(model, args, seeds, started)
    if args.engines is not None:
        return _engines_table(model, args, seeds, started)
    tables = {"ablation": F.ABLATION, "centring": F.centring_variants(sched.steps),
              "bootstrap_mix": F.mix_variants(sched.steps)}
    variants = [v for rows in tables.values() for v in rows]
    held_out, held_seeds = F.held_out_scenes(), [F.HELD_OUT_SEED0 + s for s in seeds]
    splits = {}
    for split, scene_set, split_seeds in (("tuning", F.scenes(), seeds), ("held-out", held_out, held_seeds)):
        rows = [F.evaluate(model, v, split_seeds, steps=args.steps, scene_set=scene_set)
                for v in tqdm(variants, desc=f"variants ({split})")]  # fmt: skip
        splits[split] = {"seeds": split_seeds, "scenes": len(scene_set)}
        for name, table in tables.items():
            splits[split][name], rows = rows[: len(table)], rows[len(table) :]
    for split, result in splits.items():
        print(f"\nTable 5 ablation, {split} split ({args.model} model, {sched.steps} steps {timesteps}, "
              f"{model.defaults.bootstrap_steps} bootstrap steps where used; {result['scenes']} scenes x seeds "
              f"{result['seeds'][0]}-{result['seeds'][-1]}):\n")  # fmt: skip
        print(F.markdown_table(result["ablation"]))
        print(f"\nCentring, {split} split: how many of the first steps are centred (bootstrap steps = max(1, centred)):\n")
        print(F.markdown_table(result["centring"]))
        print(f"\nBootstrap fill, {split} split: over how many steps it fades from white to the current latent:\n")
        print(F.markdown_table(result["bootstrap_mix"]))
    default = splits["held-out"]["ablation"][-1]
    print("\nThe defaults on the held-out split, per scene kind:\n")
    print(F.kinds_table(default["kinds"]))
    elapsed = time.perf_counter() - started
    print(f"\n{elapsed:.0f} s in all")
    if args.json:
        tuning = splits["tuning"]
        payload = {"model": args.model, "seeds": seeds, "steps": sched.steps, "timesteps": timesteps,
                   "bootstrap_steps": model.defaults.bootstrap_steps,
                   "bootstrap_mix_steps": model.defaults.bootstrap_mix_steps, "scenes": n_scenes,
                   "ablation": tuning["ablation"], "centring": tuning["centring"],
                   "bootstrap_mix": tuning["bootstrap_mix"], "held_out": splits["held-out"],
                   "seconds": elapsed}  # fmt: skip
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    return 0


def _sampler_sweep(args: argparse.Namespace, seeds: list[int]) -> int:
    from tqdm.auto import tqdm

    import semdraw
    from semdraw.toy import fidelity as F

    started = time.perf_counter()
    weights = args.weights or semdraw.toy.WEIGHTS_DIR
    rows = [F.evaluate_choice(c, seeds, weights) for c in tqdm(F.sampler_sweep(), desc="sampler choices")]
    print(f"\nSampler sweep ({weights}, full method, {len(F.scenes())} scenes x {len(seeds)} seeds):\n")
    print(F.markdown_table(rows))
    print(f"\n{time.perf_counter() - started:.0f} s in all")
    Path(args.sweep).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


def _choose_defaults(args: argparse.Namespace, seeds: list[int]) -> int:
    """Chooses a toy folder's defaults on the tuning split by the recorded rule (fidelity.pick_sampler, then
    fidelity.pick_fill under that choice) and writes them to its defaults.json, with every row measured to
    its tuning.json."""
    from tqdm.auto import tqdm

    import semdraw
    from semdraw import toy
    from semdraw.toy import fidelity as F

    weights = Path(args.weights or toy.WEIGHTS_DIR)
    if not toy.is_model_folder(weights):
        log.error("semdraw-bench fidelity: %s is not a toy model folder (base/, lcm_lora/, vocabulary.json, "
                  "defaults.json)", weights)  # fmt: skip
        return 2
    started = time.perf_counter()
    choices = F.sampler_sweep()
    sweep = [F.evaluate_choice(c, seeds, weights) for c in tqdm(choices, desc="sampler choices (tuning split)")]
    choice = F.pick_sampler(choices, sweep)
    model = semdraw.load_model(str(weights / "base"), loras=[str(weights / "lcm_lora")], device="cpu")
    timesteps = [float(t) for t in model.schedule(**choice.schedule).timesteps.tolist()]
    variants = F.mix_variants(len(timesteps))
    options = dict(timesteps=timesteps, bootstrap_steps=choice.centred, centre_steps=choice.centred)
    fill = [F.evaluate(model, F.Variant(v.name, {**options, **v.options}), seeds)
            for v in tqdm(variants, desc="bootstrap fills (tuning split)")]  # fmt: skip
    mixes = [F.mix_of(v) for v in variants]
    mix = F.pick_fill(mixes, fill)
    chosen_by = (f"semdraw-bench fidelity --choose-defaults --seeds {len(seeds)} (tuning split only, "
                 f"{len(F.scenes())} scenes): fidelity.pick_sampler chose '{choice.name}' from the sweep "
                 f"(best region accuracy + object presence among LCM-LoRA rows), fidelity.pick_fill the fill "
                 f"fading over {mix:g} steps (most objects present with region accuracy >= {F.REGION_FLOOR}); "
                 "every row is in tuning.json")  # fmt: skip
    defaults = {"timesteps": timesteps, "bootstrap_steps": choice.centred, "bootstrap_mix_steps": mix,
                "chosen_by": chosen_by}  # fmt: skip
    (weights / toy.DEFAULTS_FILE).write_text(json.dumps(defaults, indent=2) + "\n")
    toy._read_json.cache_clear()  # later loads in this process read the new file
    tuning = {"seeds": seeds, "scenes": len(F.scenes()), "sweep": sweep, "sweep_choices": [c.name for c in choices],
              "fill": fill, "fill_mixes": mixes, "chosen": {k: v for k, v in defaults.items() if k != "chosen_by"}}  # fmt: skip
    (weights / "tuning.json").write_text(json.dumps(tuning, indent=2) + "\n")
    print(f"\nSampler sweep ({weights}, tuning split, {len(seeds)} seeds):\n\n{F.markdown_table(sweep)}")
    print(f"\nBootstrap fill under '{choice.name}':\n\n{F.markdown_table(fill)}")
    print(f"\nchosen: timesteps {timesteps}, {choice.centred} centred bootstrap steps, fill over {mix:g} steps "
          f"-> {weights / toy.DEFAULTS_FILE} ({time.perf_counter() - started:.0f} s)")  # fmt: skip
    return 0


BENCH_PROMPTS = ("blue sky", "green grass", "a red circle", "yellow sand", "a blue square", "dark night",
                 "a yellow sun", "deep water")  # fmt: skip


def bench_brushes(n: int, height: int, width: int) -> list[Any]:
    """n brushes in vertical bands with a small object on each (what a user paints, roughly)."""
    import torch

    import semdraw

    brushes = []
    for i in range(n):
        mask = torch.zeros(height, width)
        x0, x1 = i * width // n, (i + 1) * width // n
        mask[:, x0:x1] = 1
        brushes.append(semdraw.Brush(BENCH_PROMPTS[i % len(BENCH_PROMPTS)], mask, mask_std=2.0))
    return brushes


def _median_ms(values: list[float]) -> float:
    return 1000 * statistics.median(values) if values else 0.0


def _row(name: str, backend: str, total: list[float], denoiser: list[float], decoder: list[float],
         rows: int, rows_per_frame: float | None = None, cpu: list[float] | None = None) -> dict[str, Any]:  # fmt: skip
    """One table row. ``rows``: the denoiser batch's full size; ``rows_per_frame``: the rows actually run
    (fewer when rows without weight are skipped); ``cpu``: process CPU seconds per frame (all threads)."""
    ms = _median_ms(total)
    other = [t - a - b for t, a, b in zip(total, denoiser, decoder, strict=True)]
    run_rows = rows if rows_per_frame is None else rows_per_frame
    den_ms = _median_ms(denoiser)
    return {"run": name, "backend": backend, "fps": 1000 / ms if ms else 0.0, "ms_per_frame": ms,
            "denoiser_ms": den_ms, "decoder_ms": _median_ms(decoder), "other_ms": _median_ms(other),
            "other_share": statistics.median(o / t for o, t in zip(other, total, strict=True)),
            "denoiser_rows": rows, "rows_per_frame": run_rows, "ms_per_row": den_ms / run_rows if run_rows else 0.0,
            "cpu_ms_per_frame": _median_ms(cpu or []), "frames": len(total)}  # fmt: skip


def painted_masks(mask: Any, frames: int) -> list[Any]:
    """The mask of a brush being painted: a disc stroke growing across it, one dab per frame."""
    import torch

    h, w = mask.shape[-2:]
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    out, current = [], mask.clone()
    for f in range(frames):
        cy, cx = h // 2, int((f + 0.5) * w / frames)
        current = torch.maximum(current, (((yy - cy) ** 2 + (xx - cx) ** 2) <= (h // 10) ** 2).float())
        out.append(current.clone())
    return out


def time_stream(stream: Any, brushes: list[Any], warmup: int, frames: int, name: str,
                painting: bool = False) -> dict[str, Any]:  # fmt: skip
    """Median timings of ``frames`` stream calls after ``warmup`` calls (the first one flushes). With
    ``painting``, the first brush's mask changes before every frame (a stroke being drawn), as in the
    window: the mask edit's host work (blur, quantization, tables) counts in each frame. Torch keeps the
    threads the stream's networks leave it (``torch_threads_beside``), as in the window."""
    import torch

    import semdraw

    with torch_threads(semdraw.torch_threads_beside(stream.networks, torch.get_num_threads())):
        return _time_stream(stream, brushes, warmup, frames, name, painting)


def _time_stream(stream: Any, brushes: list[Any], warmup: int, frames: int, name: str,
                 painting: bool) -> dict[str, Any]:  # fmt: skip
    from tqdm.auto import tqdm

    strokes = painted_masks(brushes[0].mask, frames) if painting else []

    for i, b in enumerate(brushes):
        stream.set_brush(i, b)
    warm = time.perf_counter()
    for _ in range(max(1, warmup)):
        stream()
    warm = time.perf_counter() - warm
    stream.profile = True
    total, den, dec, cpu = [], [], [], []
    rows_before = stream.rows_computed
    for f in tqdm(range(frames), desc=name, unit="frame", leave=False):
        before = (stream.times.denoiser, stream.times.decoder)
        c0, t0 = time.process_time(), time.perf_counter()
        if painting:
            stream.set_mask(0, strokes[f])
        stream()
        total.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        den.append(stream.times.denoiser - before[0])
        dec.append(stream.times.decoder - before[1])
    stream.profile = False
    row = _row(name, stream.networks.backend, total, den, dec, stream.batch_rows,
               (stream.rows_computed - rows_before) / frames, cpu)  # fmt: skip
    row["warmup_s"] = warm  # with torch.compile: the compile time
    return row


def time_idle(stream: Any, frames: int) -> dict[str, float]:
    """CPU and wall time of an idle frame: seed_step 0, nothing edited for longer than the pipeline is deep."""
    seed_step, stream.seed_step = stream.seed_step, 0
    stream.flush()
    for _ in range(stream.steps + 1):
        stream()
    assert stream.idle, "the stream did not go idle"
    rows_before = stream.rows_computed
    cpu, wall = [], []
    for _ in range(frames):
        c0, t0 = time.process_time(), time.perf_counter()
        stream()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - t0)
    stream.seed_step = seed_step
    return {"cpu_ms_per_frame": _median_ms(cpu), "ms_per_frame": _median_ms(wall),
            "rows_per_frame": (stream.rows_computed - rows_before) / frames}  # fmt: skip


def time_one_shot(model: Any, brushes: list[Any], args: argparse.Namespace, frames: int) -> dict[str, Any]:
    """generate() once per frame (same brushes, steps and options), with its network calls timed."""
    from tqdm.auto import tqdm

    import semdraw

    sections = {"denoiser": 0.0, "decoder": 0.0, "encoder": 0.0}
    denoiser_rows = [0]

    def hook(name: str, seconds: float, rows: int) -> None:
        sections[name] += seconds
        denoiser_rows[0] += rows if name == "denoiser" else 0  # every step's layer rows (x2 with a negative pass)

    networks = semdraw.Networks.from_model(model).timed(hook)
    kwargs = dict(height=args.height, width=args.width, steps=args.steps, timesteps=args.timesteps,
                  output_type="np", cfg=args.cfg, guidance_scale=args.guidance_scale,  # semdraw.step's one rule
                  networks=networks)  # fmt: skip
    semdraw.generate(model, brushes, seed=0, **kwargs)  # warm-up (and the white latent's encoding)
    denoiser_rows[0] = 0
    total, den, dec, cpu = [], [], [], []
    for i in tqdm(range(frames), desc="one-shot", unit="frame", leave=False):
        before = dict(sections)
        c0, t0 = time.process_time(), time.perf_counter()
        semdraw.generate(model, brushes, seed=i, **kwargs)
        total.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        den.append(sections["denoiser"] - before["denoiser"])
        dec.append(sections["decoder"] - before["decoder"])
    per_image = denoiser_rows[0] / frames  # every step's layer rows (x2 with a negative pass)
    return _row("one-shot generate()", "torch", total, den, dec, round(per_image), per_image, cpu)


def _stream_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| run | backend | fps | ms/frame | CPU ms/frame | denoiser ms | rows/frame (of) | ms/row | decoder ms | "
             "other ms | other share |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['run']} | {r['backend']} | {r['fps']:.3g} | {r['ms_per_frame']:.1f} | "
                     f"{r['cpu_ms_per_frame']:.1f} | {r['denoiser_ms']:.1f} | {r['rows_per_frame']:.3g} "
                     f"({r['denoiser_rows']}) | {r['ms_per_row']:.2f} | {r['decoder_ms']:.1f} | {r['other_ms']:.2f} | "
                     f"{100 * r['other_share']:.2f} % |")  # fmt: skip
    return "\n".join(lines)


def _make_stream(backend: str, args: argparse.Namespace, model: Any, layers: int, *, steps: Any = "asked",
                 live_rows_only: bool = True, compile: bool | None = None, precision: str | None = None) -> Any:  # fmt: skip
    import semdraw

    if backend == "torch":
        steps = args.steps if steps == "asked" else steps
        return semdraw.Stream(model, height=args.height, width=args.width, layers=layers, steps=steps,
                              timesteps=args.timesteps, seed=0, cfg=args.cfg, guidance_scale=args.guidance_scale,
                              cuda_graph=args.cuda_graph, compile=args.compile if compile is None else compile,
                              precision=precision or args.precision, live_rows_only=live_rows_only)  # fmt: skip
    if args.engines is None:
        raise semdraw.ConfigError(
            f"backend {backend} runs an engine set: build one for {args.model} with build-engines (see "
            "`build-engines --help`) and pass --engines FOLDER"
        )
    # The set's own text encoders: no second copy of the model in memory.
    device = None if args.device == "cpu" else args.device  # the backend's own default device otherwise
    return semdraw.Stream(args.engines, backend=backend, seed=0, cfg=args.cfg, guidance_scale=args.guidance_scale,
                          device=device,
                          cuda_graph=args.cuda_graph, live_rows_only=live_rows_only)  # fmt: skip


def stream(args: argparse.Namespace) -> int:
    import torch

    import semdraw

    if args.frames < 1 or args.brushes < 1 or args.warmup < 0:
        log.error("semdraw-bench: --frames and --brushes must be >= 1, --warmup >= 0")
        return 2
    torch.set_num_threads(args.threads or torch.get_num_threads())
    if args.engines is not None:
        manifest = semdraw.engines.read_manifest(args.engines)
        args.model = manifest.request.model
        args.height, args.width = manifest.request.height, manifest.request.width
        layers = manifest.request.layers
        args.steps, args.timesteps = None, list(manifest.request.timesteps)  # every compared run samples these
        args.cfg = manifest.request.cfg
    else:
        layers, args.timesteps = args.layers or args.brushes, None
    backend = args.backend
    if backend == "auto":
        backend = "torch" if args.engines is None else ("tensorrt" if semdraw.backends.tensorrt_available()
                                                        else "onnxruntime")  # fmt: skip
    # The torch model is loaded only for the runs that need it (a torch stream, the one-shot baseline,
    # the scaling runs): an engine-set run alone holds one copy of the weights, the set's.
    needs_torch = (backend == "torch" or args.compare == "torch" or not args.no_baseline or bool(args.scaling)
                   or args.also_compiled or bool(args.also_precision))  # fmt: skip
    semdraw.loading.check_canvas(args.model, args.height, args.width)  # before any weights load
    model = semdraw.load_model(args.model, device=args.device) if needs_torch else None
    if model is not None:
        args.height, args.width = args.height or model.native_size, args.width or model.native_size
    if args.brushes > layers:
        log.error("semdraw-bench: %d brushes do not fit %d layers", args.brushes, layers)
        return 2
    brushes = bench_brushes(args.brushes, args.height, args.width)
    if args.soft is not None:
        import dataclasses

        brushes[-1] = dataclasses.replace(brushes[-1], mask_strength=args.soft)
    log.info("stream bench: %s, %dx%d, %d brushes in %d layers, backend %s, %d frames after %d warm-up",
             args.model, args.height, args.width, args.brushes, layers, backend, args.frames, args.warmup)  # fmt: skip
    main_stream = _make_stream(backend, args, model, layers)
    n_steps = main_stream.steps
    rows = [time_stream(main_stream, brushes, args.warmup, args.frames, "stream")]
    if args.painting:  # the same stream while a brush is being painted (a mask edit before every frame)
        rows.append(time_stream(main_stream, brushes, args.warmup, args.frames, "stream, painting", painting=True))
    idle = None if args.no_idle else time_idle(main_stream, args.frames)
    if args.all_rows:  # what leaving rows without weight out saves
        rows.append(time_stream(_make_stream(backend, args, model, layers, live_rows_only=False), brushes,
                                args.warmup, args.frames, "stream, all rows"))  # fmt: skip
    if args.compare:
        rows.append(time_stream(_make_stream(args.compare, args, model, layers), brushes, args.warmup,
                                args.frames, "stream"))  # fmt: skip
    if args.also_compiled:  # the torch stream through torch.compile; its warm-up is the compile time
        rows.append(time_stream(_make_stream("torch", args, model, layers, compile=True), brushes, args.warmup,
                                args.frames, "stream, torch.compile"))  # fmt: skip
    if args.also_precision:  # the torch stream in another arithmetic (semdraw.precision)
        rows.append(time_stream(_make_stream("torch", args, model, layers, precision=args.also_precision), brushes,
                                args.warmup, args.frames, f"stream, {args.also_precision}"))  # fmt: skip
    default_steps = model.schedule().steps if model is not None else n_steps
    if args.steps is not None and args.engines is None and default_steps != n_steps:  # also the model's own
        for b in [backend] + ([args.compare] if args.compare == "torch" else []):
            rows.append(time_stream(_make_stream(b, args, model, layers, steps=None), brushes, args.warmup,
                                    args.frames, "stream, the model's default steps"))  # fmt: skip
    if not args.no_baseline:
        rows.append(time_one_shot(model, brushes, args, args.baseline_frames or args.frames))
    scaling = []
    for n in args.scaling or []:
        s = _make_stream("torch", args, model, n)
        scaling.append(time_stream(s, brushes[: min(n, len(brushes))], args.warmup, args.frames,
                                   f"torch stream, layers={n}"))  # fmt: skip
    machine = machine_line()
    if torch.cuda.is_available() and main_stream.device.type == "cuda":
        machine += f", {torch.cuda.get_device_name()}"
    print(f"\nStream: {args.model} {args.height}x{args.width}, {args.brushes} brushes / {layers} layers, "
          f"{n_steps} steps, cfg {args.cfg}; {machine}\n")  # fmt: skip
    print(_stream_table(rows + scaling))
    print()
    busy = rows[0]["cpu_ms_per_frame"]
    if idle is not None:
        print(f"idle frame ({rows[0]['backend']}, seed_step 0, nothing edited): {idle['cpu_ms_per_frame']:.3f} CPU ms, "
              f"{idle['ms_per_frame']:.3f} ms, {idle['rows_per_frame']:.3g} denoiser rows; "
              f"{100 * idle['cpu_ms_per_frame'] / busy if busy else 0:.3f} % of a busy frame's CPU time")  # fmt: skip
    for r in rows:
        if "compile" in r["run"]:
            print(f"{r['run']}: warm-up ({max(1, args.warmup)} frames, the compile) took {r['warmup_s']:.1f} s")
    first = rows[0]
    for r in rows[1:]:
        print(f"{first['run']} ({first['backend']}) vs {r['run']} ({r['backend']}): "
              f"{first['fps'] / r['fps']:.2f}x the frames per second")  # fmt: skip
    if scaling:
        per_row = [r["ms_per_frame"] / r["rows_per_frame"] for r in scaling]
        print("frame ms per denoiser row run (linear scaling keeps this flat): " +
              ", ".join(f"{r['rows_per_frame']:g} rows {v:.2f}" for r, v in zip(scaling, per_row, strict=True)))  # fmt: skip
    if args.json:
        payload = {"model": args.model, "height": args.height, "width": args.width, "brushes": args.brushes,
                   "layers": layers, "steps": n_steps, "cfg": args.cfg,
                   "machine": machine, "runs": rows, "scaling": scaling, "idle": idle}  # fmt: skip
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    return 0


def _precisions(text: str) -> list[str]:
    values = text.split(",")
    if any(v not in PRECISIONS or v == "auto" for v in values):
        raise argparse.ArgumentTypeError(f"precisions are fp32 and/or bf16, comma-separated: not {text!r}")
    return values


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="semdraw-bench", description="Benchmarks behind semdraw's published figures."
    )
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fidelity", help="per-region colour accuracy and object presence on the toy scene set",
                       description="Scores every ablation variant of region-based generation on the toy model's "
                                   "fixed scene set (strict nearest-reference-colour accuracy per brush region).")  # fmt: skip
    f.add_argument("--model", default="toy", help="a model with the toy vocabulary (default: toy)")
    f.add_argument("--seeds", type=int, default=8, help="seeds per scene (default: 8)")
    f.add_argument("--steps", type=steps_arg, default=None, help="sampling steps (default: the model's)")
    f.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    f.add_argument("--guidance", type=float, default=None, metavar="W",
                   help="instead: score the full method without guidance and with guidance scale W in each mode "
                        "(full CFG, residual self, residual initialize)")
    f.add_argument("--precisions", type=_precisions, default=None, metavar="P1,P2",
                   help="instead: score the full method in each arithmetic (fp32, bf16) on both splits")
    f.add_argument("--engines", type=lambda v: [Path(x) for x in v.split(",")], default=None, metavar="DIR1,DIR2",
                   help="instead: score the full method on each engine set of the toy (one with int8 networks also "
                        "with its fp32 files) beside the torch model, on both splits' scenes at the sets' canvas")  # fmt: skip
    f.add_argument("--choose-defaults", action="store_true",
                   help="choose the defaults of a toy folder (--weights, default: the shipped one) on the tuning "
                        "split by the recorded rule and write its defaults.json and tuning.json")
    f.add_argument("--sweep", type=Path, default=None,
                   help="instead: score the full method under each sampler / LoRA alternative of the toy model "
                        "(the model card's table) and write the rows to this JSON file")  # fmt: skip
    f.add_argument("--weights", type=Path, default=None,
                   help="with --sweep or --choose-defaults: a toy weights folder (default: the shipped one)")
    f.set_defaults(run=fidelity)

    st = sub.add_parser("stream", help="frames per second of the stream vs one-shot generation",
                        description="Runs the multi-prompt stream for a model (torch) or an engine set (onnxruntime / "
                                    "TensorRT) and prints frames per second, ms per frame and its split into "
                                    "denoiser, decoder and everything else (masking, averaging, noise, copies), "
                                    "with one-shot generate() of the same image as the baseline.")  # fmt: skip
    st.add_argument("--model", default="toy", help=MODEL_HELP + " (sd15-random, sdxl-random: real sizes, "
                                                                 "random weights, offline: for timing)")  # fmt: skip
    st.add_argument("--engines", type=Path, default=None, help="an engine set (from build-engines); sets model, "
                                                               "size, layers, steps and cfg")  # fmt: skip
    st.add_argument("--backend", choices=BACKENDS, default="auto",
                    help="auto: torch for --model, TensorRT (else onnxruntime) for --engines")  # fmt: skip
    st.add_argument("--compare", choices=("torch", "onnxruntime", "tensorrt"), default=None,
                    help="also time the stream on this backend, in the same run")  # fmt: skip
    st.add_argument("--height", type=canvas_side, default=None, help="canvas height (default: native)")
    st.add_argument("--width", type=canvas_side, default=None, help="canvas width (default: native)")
    st.add_argument("--brushes", type=int, default=3, help="painted brushes (default 3)")
    st.add_argument("--layers", type=int, default=None, help="prompt rows of the stream (default: --brushes; "
                                                             "more than that times empty slots)")  # fmt: skip
    st.add_argument("--steps", type=steps_arg, default=None, help="sampling steps (default: the model's)")
    st.add_argument("--guidance-scale", type=float, default=None,
                    help="guidance scale of the guided --cfg modes (default 2)")
    st.add_argument("--cfg", choices=CFG_MODES, default="none",
                    help="classifier-free guidance mode (self / initialize: residual CFG; with --model only, or an "
                         "engine set built for it)")
    st.add_argument("--frames", type=frames_arg, default=20, help="timed frames (default 20; fewer for big models)")
    st.add_argument("--warmup", type=int, default=3, help="untimed frames first (default 3)")
    st.add_argument("--baseline-frames", type=int, default=None, help="timed one-shot images (default: --frames)")
    st.add_argument("--no-baseline", action="store_true", help="skip the one-shot generate() baseline")
    st.add_argument("--painting", action="store_true",
                    help="also time the stream while the first brush is painted (its mask edited before every frame)")
    st.add_argument("--no-idle", action="store_true",
                    help="skip timing the idle frame (it costs T + 1 busy frames first: minutes on big models)")
    st.add_argument("--all-rows", action="store_true",
                    help="also time the stream computing every row, those without weight included (what skipping "
                         "them saves; it matters with --layers above --brushes or soft brushes)")
    st.add_argument("--soft", type=float, default=None, metavar="ALPHA",
                    help="give the last brush this mask alpha (e.g. 0.9: it joins after the first step)")
    st.add_argument("--scaling", type=lambda v: [int(x) for x in v.split(",")], default=None, metavar="L1,L2,..",
                    help="also time torch streams with these layer counts (linearity in L x T)")  # fmt: skip
    st.add_argument("--device", default="cpu", help="torch device for the model, or for an onnxruntime engine set "
                                                    "(cuda: its CUDA provider) (default cpu)")  # fmt: skip
    st.add_argument("--cuda-graph", action="store_true",
                    help="capture the denoiser call as a CUDA graph (torch on CUDA, TensorRT sets)")
    st.add_argument("--compile", action="store_true",
                    help="run the torch stream's denoiser and decoder through torch.compile (the warm-up compiles: "
                         "minutes on a CPU)")
    st.add_argument("--also-compiled", action="store_true",
                    help="also time the torch stream through torch.compile, in the same run (its warm-up time, "
                         "the compile, is printed)")
    st.add_argument("--precision", choices=PRECISIONS, default="fp32",
                    help="a torch stream's arithmetic on the CPU (auto: bf16 for an SD-sized denoiser on a CPU with "
                         "bf16 in hardware, AMX or AVX-512 BF16, else fp32; default fp32)")  # fmt: skip
    st.add_argument("--also-precision", choices=[p for p in PRECISIONS if p != "auto"], default=None,
                    help="also time the torch stream in this arithmetic, in the same run")
    st.add_argument("--threads", type=int, default=None, help="CPU threads of the networks, torch and onnxruntime alike (default: torch's)")
    st.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    st.set_defaults(run=stream)
    bench_host.add_parser(sub, MODEL_HELP)
    bench_serve.add_parser(sub)  # its Ray imports wait until it runs
    bench_session.add_parser(sub, MODEL_HELP)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    quiet_libraries()  # SEMDRAW_VERBOSE=1 shows the libraries' notices and load bars
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except ValueError as err:  # semdraw's own errors say what to do
        log.error("semdraw-bench: %s", err)
        return 2
    except KeyboardInterrupt:
        log.error("semdraw-bench: interrupted; no figures written")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
