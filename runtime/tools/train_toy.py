"""`semdraw-train-toy`: regenerate every weight of the embedded `toy` model from scratch, on a CPU.

Stages (each with a progress bar; everything seeded):
  1. data     the procedural shapes world (semdraw.toy.world), rendered once
  2. vae      an AutoencoderTiny (8x, 4 channels) on 64 px crops of the world plus flat blocks of
              random colours, pixel MSE + a small latent-magnitude penalty; its scaling factor is
              set to 1 / std(latents), as SD's VAE scaling factor is
  3. base     CLIP text encoder + UNet trained jointly from scratch with v-prediction on the SD1.5
              noise schedule (an epsilon model ignored the text within our CPU budget)
  4. distill  latent-consistency distillation into a LoRA on the UNet (teacher: the base model with
              classifier-free guidance, DDIM solver over a 50-step skeleton; target: an EMA copy of
              the student), as LCM-LoRA; the toy preset fuses it
  5. save     safetensors (diffusers folders), the LoRA as its own file, vocabulary.json, metrics
              (the base model is also written right after stage 3: a failed distillation loses nothing)

Not part of CI: about 90 minutes on a 2-core machine (MODEL_CARD.md has the shipped run's timings).
``--quick`` runs every stage for a few steps.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from semdraw.quiet import quiet_libraries

from .. import toy
from ..toy import architecture as A
from ..toy import world

log = logging.getLogger("semdraw.toy.train")
PACKAGE_DIR = toy.WEIGHTS_DIR  # the shipped weights: the default --out regenerates them in place
EMA_DECAY = 0.95  # of the distillation's target network (LCM's value)


def _cosine_lr(opt: torch.optim.Optimizer, base_lr: float, step: int, total: int, warmup: int = 100) -> None:
    lr = base_lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / total)))
    for group in opt.param_groups:
        group["lr"] = lr


def _optimize(
    opt: torch.optim.Optimizer, loss: torch.Tensor, params, loss_avg: float, step: int, bar, decay: float
) -> float:
    """Backward, clip to norm 1, step; returns the running loss average shown on the progress bar."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    loss_avg = decay * loss_avg + (1 - decay) * float(loss.detach()) if step else float(loss.detach())
    bar.set_postfix(loss=f"{loss_avg:.4f}")
    return loss_avg


def _pixels(images_u8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images_u8).permute(0, 3, 1, 2).float().div(127.5).sub(1)


VAE_CROP = 64  # the VAE trains on crops: it is convolutional, and crops cost a quarter of full images


def colour_blocks(rng: np.random.Generator, count: int, size: int) -> np.ndarray:
    """[count, size, size, 3] uint8: flat rectangles of colours drawn uniformly from the RGB cube.

    Half of every VAE batch. World images alone left the first VAE unable to encode purple and pink
    (rare pixels: small objects of 2 colours out of 8); these teach it the whole colour cube.
    """
    out = np.empty((count, size, size, 3), np.uint8)
    for i in range(count):
        out[i] = rng.integers(0, 256, 3)
        for _ in range(int(rng.integers(1, 5))):
            y0, x0 = rng.integers(0, size - 4, 2)
            h, w = rng.integers(4, size // 2, 2)
            out[i, y0 : y0 + h, x0 : x0 + w] = rng.integers(0, 256, 3)
    return out


def train_vae(vae, images: np.ndarray, steps: int, batch: int, lr: float, rng: np.random.Generator) -> float:
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    vae.train()
    bar = tqdm(range(steps), desc="vae", unit="step")
    loss_avg = 0.0
    size = images.shape[1]
    for step in bar:
        _cosine_lr(opt, lr, step, steps)
        idx = rng.integers(0, len(images), batch // 2)
        oy, ox = rng.integers(0, size - VAE_CROP + 1, 2)
        crops = images[idx, oy : oy + VAE_CROP, ox : ox + VAE_CROP]
        x = _pixels(np.concatenate([crops, colour_blocks(rng, batch - len(idx), VAE_CROP)]))
        z = vae.encode(x).latents
        recon = vae.decode(z).sample
        loss = F.mse_loss(recon, x) + 1e-4 * z.pow(2).mean()
        loss_avg = _optimize(opt, loss, vae.parameters(), loss_avg, step, bar, decay=0.98)
    vae.eval()
    return loss_avg


@torch.no_grad()
def encode_all(vae, images: np.ndarray, batch: int = 256) -> torch.Tensor:
    out = [
        vae.encode(_pixels(images[i : i + batch])).latents
        for i in tqdm(range(0, len(images), batch), desc="encode")
    ]
    return torch.cat(out)


def _abar(scheduler) -> torch.Tensor:
    return scheduler.alphas_cumprod.float()


@dataclass
class Checkpoint:
    """Where a long stage saves its state every ``every`` steps, so that a killed run (or a session that ends)
    resumes at the last save: ``path`` holds the stage's modules, optimizer, step, running loss and the batch
    generator's state, and the ``key`` of the run it belongs to (a checkpoint of other arguments is refused)."""

    path: Path
    key: str
    every: int = 250

    def load(self, stage: str) -> dict | None:
        if not self.path.exists():
            return None
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        if state.get("key") != self.key or state.get("stage") != stage:
            raise SystemExit(f"semdraw-train-toy: {self.path} belongs to another run (other arguments or stage); "
                             "delete it or train into another --out")  # fmt: skip
        log.info("resuming %s at step %d from %s", stage, state["step"], self.path)
        return state

    def save(self, stage: str, step: int, **state) -> None:
        tmp = self.path.with_suffix(".tmp")
        torch.save({"key": self.key, "stage": stage, "step": step, **state}, tmp)
        tmp.replace(self.path)  # atomic: a kill mid-save keeps the previous checkpoint


def train_base(text_encoder, unet, latents, ids, scheduler, steps, batch, lr, gen,
               checkpoint: Checkpoint | None = None) -> float:  # fmt: skip
    """Joint text-encoder + UNet training with the v-prediction objective (resumable from ``checkpoint``)."""
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    abar = _abar(scheduler)
    unet.train()
    text_encoder.train()
    start, loss_avg = 0, 0.0
    state = checkpoint.load("base") if checkpoint else None
    if state:
        unet.load_state_dict(state["unet"])
        text_encoder.load_state_dict(state["text_encoder"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        start, loss_avg = int(state["step"]), float(state["loss_avg"])
    bar = tqdm(range(start, steps), desc="base (v-prediction)", unit="step", initial=start, total=steps)
    for step in bar:
        _cosine_lr(opt, lr, step, steps)
        idx = torch.randint(0, len(latents), (batch,), generator=gen)
        x0, tok = latents[idx], ids[idx]
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        a, s = abar[t].sqrt().view(-1, 1, 1, 1), (1 - abar[t]).sqrt().view(-1, 1, 1, 1)
        xt = a * x0 + s * eps
        v = a * eps - s * x0
        pred = unet(xt, t, encoder_hidden_states=text_encoder(tok)[0]).sample
        loss_avg = _optimize(opt, F.mse_loss(pred, v), params, loss_avg, step, bar, decay=0.99)
        if checkpoint and (step + 1) % checkpoint.every == 0 and step + 1 < steps:
            checkpoint.save("base", step + 1, unet=unet.state_dict(), text_encoder=text_encoder.state_dict(),
                            optimizer=opt.state_dict(), generator=gen.get_state(), loss_avg=loss_avg)  # fmt: skip
    unet.eval()
    text_encoder.eval()
    return loss_avg


def _lcm_scalings(t: torch.Tensor, timestep_scaling: float = 10.0) -> tuple[torch.Tensor, torch.Tensor]:
    st = t.float() * timestep_scaling
    return 0.25 / (st**2 + 0.25), st / (st**2 + 0.25).sqrt()


def distill_lcm_lora(text_encoder, teacher, latents, ids, uncond_ids, scheduler, steps, batch, lr, rank,
                     guidance: tuple[float, float], gen, ema_decay: float = EMA_DECAY):  # fmt: skip
    """Latent-consistency distillation into a LoRA on a copy of the UNet; returns the EMA target network.

    The consistency target comes from an EMA copy of the student, as in LCM: with the online student as
    its own target (our first runs) the LoRA collapsed into speckled images (MODEL_CARD.md).
    """
    from peft import LoraConfig

    student = copy.deepcopy(teacher)
    student.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=A.LORA_TARGETS,
                                   init_lora_weights="gaussian"))  # fmt: skip
    lora_params = [p for n, p in student.named_parameters() if "lora" in n]
    for n, p in student.named_parameters():
        p.requires_grad_("lora" in n)
    target_net = copy.deepcopy(student).requires_grad_(False)
    ema_pairs = [(pt, ps) for pt, ps in zip(target_net.parameters(), student.parameters(), strict=True)
                 if ps.requires_grad]  # fmt: skip
    opt = torch.optim.AdamW(lora_params, lr=lr, weight_decay=0.0)
    abar = _abar(scheduler)
    n_train = scheduler.config.num_train_timesteps
    skip = n_train // 50  # DDIM solver skeleton of 50 steps: t -> t - 20
    with torch.no_grad():  # the text encoder is frozen here
        uncond = text_encoder(uncond_ids)[0]
    bar = tqdm(range(steps), desc="distill (LCM-LoRA)", unit="step")
    loss_avg = 0.0
    for step in bar:
        _cosine_lr(opt, lr, step, steps)
        idx = torch.randint(0, len(latents), (batch,), generator=gen)
        x0 = latents[idx]
        with torch.no_grad():
            cond_all = text_encoder(ids[idx])[0]
        n = torch.randint(1, 51, (batch,), generator=gen)
        t = n * skip - 1
        t_prev = (t - skip).clamp(min=0)
        eps = torch.randn(x0.shape, generator=gen)
        a, s = abar[t].sqrt().view(-1, 1, 1, 1), (1 - abar[t]).sqrt().view(-1, 1, 1, 1)
        ap, sp = abar[t_prev].sqrt().view(-1, 1, 1, 1), (1 - abar[t_prev]).sqrt().view(-1, 1, 1, 1)
        xt = a * x0 + s * eps
        c_skip0, c_out0 = (c.view(-1, 1, 1, 1) for c in _lcm_scalings(t))
        c_skip1, c_out1 = (c.view(-1, 1, 1, 1) for c in _lcm_scalings(t_prev))

        v = student(xt, t, encoder_hidden_states=cond_all).sample
        pred = c_skip0 * xt + c_out0 * (a * xt - s * v)
        with torch.no_grad():
            w = torch.empty(batch, 1, 1, 1).uniform_(*guidance, generator=gen)
            vc = teacher(xt, t, encoder_hidden_states=cond_all).sample
            vu = teacher(xt, t, encoder_hidden_states=uncond.expand(batch, -1, -1)).sample
            vw = vu + w * (vc - vu)
            x0_t, eps_t = a * xt - s * vw, a * vw + s * xt
            x_prev = ap * x0_t + sp * eps_t  # one DDIM step of the guided teacher
            v2 = target_net(x_prev, t_prev, encoder_hidden_states=cond_all).sample
            target = c_skip1 * x_prev + c_out1 * (ap * x_prev - sp * v2)
        loss = (torch.sqrt((pred - target) ** 2 + 1e-6) - 1e-3).mean()  # pseudo-Huber
        loss_avg = _optimize(opt, loss, lora_params, loss_avg, step, bar, decay=0.99)
        with torch.no_grad():
            for pt, ps in ema_pairs:
                pt.lerp_(ps, 1 - ema_decay)
    target_net.eval()
    return target_net, loss_avg


def save_base(out: Path, tokenizer, text_encoder, unet, vae) -> None:
    """The base model as a diffusers folder ``out/base``."""
    import diffusers

    out.mkdir(parents=True, exist_ok=True)
    pipe = diffusers.StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=diffusers.LCMScheduler(**A.SCHEDULER), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )  # fmt: skip
    pipe.save_pretrained(out / "base", safe_serialization=True)


def save(out: Path, tokenizer, text_encoder, unet, vae, student, metrics: dict) -> None:
    import diffusers
    from peft.utils import get_peft_model_state_dict

    save_base(out, tokenizer, text_encoder, unet, vae)
    # PEFT-format keys throughout: converting them to diffusers' older format renames only the attention
    # keys, and a file mixing both formats loads without its attention weights.
    lora = get_peft_model_state_dict(student)
    diffusers.StableDiffusionPipeline.save_lora_weights(out / "lcm_lora", unet_lora_layers=lora)
    write_vocabulary(out)
    write_defaults(out)
    (out / "training.json").write_text(json.dumps(metrics, indent=2) + "\n")


def write_defaults(out: Path) -> None:
    """defaults.json, the sampling defaults ``load_model(out)`` applies: kept if the folder has them (a
    retrain in place), else the shipped model's, marked as not yet re-tuned for these weights."""
    target = out / toy.DEFAULTS_FILE
    if target.exists():
        return
    shipped = toy.sampling_defaults(toy.WEIGHTS_DIR)
    chosen_by = ("the shipped toy model's defaults, not re-tuned for these weights: run "
                 f"`semdraw-bench fidelity --model {out} --sweep sweep.json` and edit this file")  # fmt: skip
    target.write_text(json.dumps({**shipped, "chosen_by": chosen_by}, indent=2) + "\n")


def write_vocabulary(out: Path) -> None:
    """vocabulary.json: reference RGB of every colour word and scene phrase, the shapes, all words."""
    vocabulary = {
        "colors": {k: list(v) for k, v in world.COLORS.items()},
        "scenes": {k: list(v) for k, v in world.SCENES.items()},
        "shapes": list(world.OBJECTS),
        "words": world.vocabulary_words(),
    }
    (out / "vocabulary.json").write_text(json.dumps(vocabulary, indent=2) + "\n")


def _run_key(args: argparse.Namespace) -> str:
    """What a checkpoint or cached data set must match: every argument that changes the weights."""
    fields = {k: str(v) for k, v in sorted(vars(args).items()) if k not in ("out", "threads", "checkpoint_every")}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def _cached_latents(path: Path, key: str, encode) -> torch.Tensor:
    """The encoded data set, from ``path`` when it was written for this run (encoding 40k images takes
    minutes on 2 cores), else ``encode()``, saved there."""
    if path.exists():
        cached = torch.load(path, map_location="cpu", weights_only=True)
        if cached.get("key") == key:
            log.info("encoded data set read from %s", path)
            return cached["latents"]
    latents = encode()
    torch.save({"key": key, "latents": latents}, path)
    return latents


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="semdraw-train-toy", description=__doc__.split("\n\n")[0],
        epilog="The folder it writes loads as a toy model: `semdraw-live --model DIR`, `load_model(DIR)` (its "
               "LCM-LoRA fused, its defaults.json applied). Every stage is seeded: the same arguments give the "
               "same weights.",
    )  # fmt: skip
    p.add_argument("--out", type=Path, default=PACKAGE_DIR,
                   help=f"output folder (default: the shipped weights, {PACKAGE_DIR}, regenerated in place)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data set, initialisation and batches (default 0)")
    p.add_argument("--images", type=int, default=40000, help="size of the rendered data set (default 40000)")
    p.add_argument("--vae-steps", type=int, default=3000, help="optimizer steps of the VAE stage (default 3000)")
    p.add_argument("--base-steps", type=int, default=7000,
                   help="optimizer steps of the base text encoder + UNet stage (default 7000)")
    p.add_argument("--distill-steps", type=int, default=500,
                   help="optimizer steps of the LCM-LoRA distillation (default 500)")
    p.add_argument("--batch", type=int, default=48, help="batch size of the base and distillation stages (default 48)")
    p.add_argument("--lora-rank", type=int, default=16, help="rank of the distilled LCM-LoRA (default 16)")
    p.add_argument("--guidance", type=float, nargs=2, default=(1.5, 3.0), metavar=("MIN", "MAX"),
                   help="teacher guidance range baked into the LCM-LoRA (default 1.5 3)")
    p.add_argument("--distill-lr", type=float, default=1e-4, help="learning rate of the distillation (default 1e-4)")
    p.add_argument("--from-base", type=Path, default=None, metavar="DIR",
                   help="reuse the VAE, text encoder and UNet of this diffusers folder (a toy folder's base/) and "
                        "only redo the distillation")
    p.add_argument("--world", choices=sorted(world.RECIPES), default="extended",
                   help="generation of the shapes world to train on (default extended; `first` is the world of "
                        "the weights shipped until 2026-12-02; semdraw.toy.world describes both)")
    p.add_argument("--vae-from", type=Path, default=None, metavar="DIR",
                   help="reuse the VAE of this diffusers folder (e.g. a toy folder's base/) instead of training one: "
                        "both worlds share their colours, so a retrain of the text encoder and UNet can keep it")
    p.add_argument("--checkpoint-every", type=int, default=250, metavar="STEPS",
                   help="save the base stage's state to OUT/checkpoint.pt every STEPS steps (and the encoded data "
                        "set to OUT/latents.pt); a rerun with the same arguments resumes there (default 250)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--quick", action="store_true",
                   help="a few steps of every stage (a smoke test: the weights it writes are not useful)")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        return train(argv)
    except KeyboardInterrupt:
        log.error("semdraw-train-toy: interrupted; run the same command again to resume from the last checkpoint")
        return 130


def train(argv: list[str] | None = None) -> int:
    """The whole run (:func:`main` without the Ctrl-C handling)."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    quiet_libraries()  # SEMDRAW_VERBOSE=1 shows the libraries' notices and load bars
    if args.quick:
        args.images, args.vae_steps, args.base_steps, args.distill_steps, args.batch = 256, 3, 3, 3, 8
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    started = time.time()
    timings: dict[str, float] = {}

    args.out.mkdir(parents=True, exist_ok=True)
    run_key = _run_key(args)
    t0 = time.time()
    images, captions = world.dataset(args.seed, args.images, A.SIZE, world.RECIPES[args.world])
    timings["data_s"] = time.time() - t0
    log.info("data: %d images of %dx%d in %.0f s", len(images), A.SIZE, A.SIZE, timings["data_s"])

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = A.make_tokenizer(Path(tmp))
    text_encoder, unet, vae = A.make_components(tokenizer)
    ids = tokenizer(captions, padding="max_length", max_length=A.MAX_TOKENS, truncation=True,
                    return_tensors="pt").input_ids  # fmt: skip
    uncond_ids = tokenizer([""], padding="max_length", max_length=A.MAX_TOKENS, return_tensors="pt").input_ids

    import diffusers

    scheduler = diffusers.DDPMScheduler.from_config(A.SCHEDULER)
    previous: dict = {}
    if args.from_base:
        pipe = diffusers.StableDiffusionPipeline.from_pretrained(str(args.from_base), safety_checker=None,
                                                                 requires_safety_checker=False)  # fmt: skip
        text_encoder, unet, vae = pipe.text_encoder, pipe.unet, pipe.vae
        scale = float(vae.config.scaling_factor)
        latents = encode_all(vae, images) * scale
        old = args.out / "training.json"
        previous = json.loads(old.read_text()) if old.exists() else {}
        vae_loss = previous.get("final_losses", {}).get("vae", float("nan"))
        base_loss = previous.get("final_losses", {}).get("base_v", float("nan"))
        timings.update({k: v for k, v in previous.get("timings_s", {}).items() if k in ("vae_s", "base_s")})
        log.info("reusing the VAE, text encoder and UNet of %s", args.from_base)
    else:
        t0 = time.time()
        if args.vae_from:
            vae = diffusers.AutoencoderTiny.from_pretrained(str(args.vae_from / "vae"))
            scale = float(vae.config.scaling_factor)
            latents = _cached_latents(args.out / "latents.pt", run_key, lambda: encode_all(vae, images) * scale)
            vae_loss = None  # trained elsewhere
            log.info("reusing the VAE of %s (scaling factor %.4f)", args.vae_from, scale)
        else:
            vae_loss = train_vae(vae, images, args.vae_steps, 16, 2e-3, np.random.default_rng(args.seed))
            raw = encode_all(vae, images)
            scale = float(1.0 / raw.std())
            vae.register_to_config(scaling_factor=scale)
            latents = raw * scale
            log.info("vae: loss %.4f, latent std %.3f -> scaling factor %.4f", vae_loss, 1 / scale, scale)
        timings["vae_s"] = time.time() - t0
        t0 = time.time()
        checkpoint = Checkpoint(args.out / "checkpoint.pt", run_key, args.checkpoint_every)
        base_loss = train_base(
            text_encoder, unet, latents, ids, scheduler, args.base_steps, args.batch, 1e-3, gen, checkpoint
        )
        timings["base_s"] = time.time() - t0
        save_base(args.out, tokenizer, text_encoder, unet, vae)  # nothing lost if the distillation fails
    for prm in list(unet.parameters()) + list(text_encoder.parameters()):
        prm.requires_grad_(False)

    t0 = time.time()
    student, distill_loss = distill_lcm_lora(text_encoder, unet, latents, ids, uncond_ids, scheduler,
                                             args.distill_steps, args.batch, args.distill_lr, args.lora_rank,
                                             tuple(args.guidance), gen)  # fmt: skip
    timings["distill_s"] = time.time() - t0
    timings["total_s"] = time.time() - started
    if args.from_base:  # a from-scratch run costs the reused stages too
        timings["total_s"] += sum(v for k, v in timings.items() if k in ("vae_s", "base_s"))
    metrics = {
        "command": "semdraw-train-toy " + " ".join(sys.argv[1:] if argv is None else argv),
        "world": args.world, "vae_from": str(args.vae_from) if args.vae_from else None,
        "seed": args.seed, "images": args.images, "size": A.SIZE, "vae_crop": VAE_CROP, "batch": args.batch,
        "vae_steps": args.vae_steps, "base_steps": args.base_steps, "distill_steps": args.distill_steps,
        "lora_rank": args.lora_rank, "teacher_guidance": list(args.guidance), "distill_lr": args.distill_lr, "distill_ema_decay": EMA_DECAY, "vae_scaling_factor": scale,
        "final_losses": {"vae": vae_loss, "base_v": base_loss, "distill": distill_loss},
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "distilled_from": str(args.from_base) if args.from_base else "this run", "torch_threads": torch.get_num_threads(),
        "params": {"unet": sum(q.numel() for q in unet.parameters()),
                   "text_encoder": sum(q.numel() for q in text_encoder.parameters()),
                   "vae": sum(q.numel() for q in vae.parameters())},
    }  # fmt: skip
    if args.from_base:
        metrics = {**previous, **{k: v for k, v in metrics.items() if k not in ("vae_steps", "base_steps")}}
    save(args.out, tokenizer, text_encoder, unet, vae, student, metrics)
    for leftover in ("checkpoint.pt", "latents.pt"):  # the run is complete: its resume state goes
        (args.out / leftover).unlink(missing_ok=True)
    log.info("saved to %s in %.1f min in all", args.out, timings["total_s"] / 60)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
