"""Oracle 7: a naive reference of the region maths, written from the paper's equations, against `generate()`.

Nothing of semdraw's step code is used here (no ``semdraw.masks``, ``semdraw.step``, ``semdraw.sampling``):
the reference loops over steps and regions, calls the tiny UNet once per region, turns each region's
output into its deterministic sampler result with diffusers' own scheduler (``step()``: LCM's ``denoised``,
DDIM's eta-0 ``prev_sample``, both noise-free), quantizes the masks against the noise levels by their
definition, averages the deterministic results under the masks *before* re-noising (latent pre-averaging,
re-noising with diffusers' ``add_noise``), gives the background clip(1 - Σ M), fills a brush's outside with
noised white during bootstrapping and centres its mask by translating the latent (no wrap of the region).

Conventions the paper leaves open, taken as semdraw documents them (docs/method.md):
- occlusion (cover alpha), then blur, then × alpha, then quantization, then 8×8 area averaging;
- the bounding box is that of the soft latent mask; a region painting at least half an edge latent pixel
  on both axes keeps its place (scenery), any other is centred;
- the strip a translation brings into the frame lies outside the region, so during bootstrapping it holds
  the bootstrap fill; the fill there is taken from the opposite side of the canvas (as the official code's
  roll takes it) so that the noise draws match: the reference checks that no painted pixel wraps.
The float32 tolerance is 1e-4 in latents (batched vs single-item UNet calls differ at ~1e-6).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from diffusers.utils.torch_utils import randn_tensor

import semdraw

from .conftest import make_tiny_pipeline

SIDE = 128  # pixels: a 16x16 latent, so centring moves regions by several latent pixels
COVER_ALPHA = 0.3


# ------------------------------------------------------------------------------ masks, by definition
def blur(mask: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of σ pixels (radius ceil(3σ), normalised kernel), edges replicated."""
    if sigma <= 0:
        return mask
    radius = max(1, math.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    padded = np.pad(mask.astype(np.float64), radius, mode="edge")
    h, w = mask.shape
    rows = sum(taps[i] * padded[:, i : i + w] for i in range(2 * radius + 1))  # along x
    return sum(taps[i] * rows[i : i + h, :] for i in range(2 * radius + 1))  # along y


def soft_masks(brushes: list[semdraw.Brush]) -> list[np.ndarray]:
    """m_i after cover-alpha occlusion (m_i · Π_{j>i} (1 − (1 − α)·m_j)), blur and × alpha."""
    raw = [np.asarray(b.mask, np.float64) for b in brushes]
    out = []
    for i, b in enumerate(brushes):
        m = raw[i].copy()
        for later in raw[i + 1 :]:
            m *= 1 - (1 - COVER_ALPHA) * later
        out.append(blur(m, b.mask_std) * b.mask_strength)
    return out


def quantized(m: np.ndarray, levels: list[float], k: int, kind: str) -> np.ndarray:
    """M_k: discrete [m > n_k] (and 1 where m = 1); continuous clip((m − n_{k+1}) / (n_k − n_{k+1}), 0, 1)."""
    if kind == "discrete":
        return ((m > levels[k]) | (m >= 1)).astype(np.float64)
    nxt = levels[k + 1] if k + 1 < len(levels) else 0.0
    return np.clip((m - nxt) / (levels[k] - nxt), 0, 1)


def area(m: np.ndarray, f: int) -> torch.Tensor:
    """Mean over f×f pixel blocks → [1, 1, h, w]."""
    h, w = m.shape
    return torch.tensor(m.reshape(h // f, f, w // f, f).mean(axis=(1, 3)), dtype=torch.float32)[None, None]


def centring(soft: torch.Tensor) -> tuple[int, int]:
    m = soft[0, 0]
    painted = torch.nonzero(m > 0)
    if len(painted) == 0:
        return 0, 0
    h, w = m.shape
    touches_y = max(float(m[0].max()), float(m[-1].max())) >= 0.5
    touches_x = max(float(m[:, 0].max()), float(m[:, -1].max())) >= 0.5
    if touches_y and touches_x:
        return 0, 0
    (y0, x0), (y1, x1) = painted.min(0).values.tolist(), painted.max(0).values.tolist()
    return round(h / 2 - (y0 + y1 + 1) / 2), round(w / 2 - (x0 + x1 + 1) / 2)


def translate(x: torch.Tensor, dy: int, dx: int, pad: torch.Tensor) -> torch.Tensor:
    """x moved by (dy, dx) without wrapping; ``pad`` (a full frame) fills what comes in from outside."""
    h, w = x.shape[-2:]
    out = pad.clone()
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = (
        x[..., max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)]
    )
    return out


# ------------------------------------------------------------------------------ the reference sampler
class Reference:
    def __init__(self, pipe, steps: int):
        self.pipe = pipe
        self.scheduler = copy.deepcopy(pipe.scheduler)
        self.scheduler.set_timesteps(steps)
        self.timesteps = self.scheduler.timesteps
        abar = self.scheduler.alphas_cumprod
        self.levels = [float((1 - abar[int(t)]).sqrt()) for t in self.timesteps]  # n_k
        self.f = pipe.vae_scale_factor
        self.lcm = type(self.scheduler).__name__ == "LCMScheduler"

    def embed(self, prompt: str) -> torch.Tensor:
        return self.pipe.encode_prompt(prompt, "cpu", 1, False)[0]

    def white(self) -> torch.Tensor:
        vae = self.pipe.vae
        lat = vae.encode(torch.ones(1, 3, SIDE, SIDE)).latent_dist.mode()
        return lat * vae.config.scaling_factor

    def deterministic(self, x: torch.Tensor, out: torch.Tensor, k: int) -> torch.Tensor:
        """The noise-free part of diffusers' step k: LCM's denoised x̂0, DDIM's (eta 0) x_{k+1}."""
        sched = copy.deepcopy(self.scheduler)  # step() is stateful: a fresh copy per region
        t = self.timesteps[k]
        if self.lcm:
            return sched.step(out, t, x, generator=torch.Generator().manual_seed(0)).denoised
        return sched.step(out, t, x, eta=0.0).prev_sample

    @torch.no_grad()
    def __call__(self, brushes, *, background_prompt: str = "", bootstrap_steps: int, mix_steps: float,
                 mask_type: str, seed: int) -> torch.Tensor:  # fmt: skip
        T, f = len(self.timesteps), self.f
        soft = soft_masks(brushes)
        soft_latent = [area(m, f) for m in soft]
        bg_embed = self.embed(background_prompt)
        embeds = [bg_embed + b.prompt_strength * (self.embed(b.prompt) - bg_embed) for b in brushes]
        white = self.white()
        gen = torch.Generator().manual_seed(seed)
        shape = (1, 4, SIDE // f, SIDE // f)
        noise = randn_tensor(shape, generator=gen)
        x = noise * self.scheduler.init_noise_sigma
        for k in range(T):
            t = self.timesteps[k]
            weights = [area(quantized(m, self.levels, k, mask_type), f) for m in soft]
            bg_weight = (1 - sum(weights)).clamp(0, 1)
            r = min(1.0, max(0.0, mix_steps - k))
            fill = r * self.scheduler.add_noise(white, noise, t.view(1)) + (1 - r) * x
            num, den = torch.zeros_like(x), torch.zeros_like(bg_weight)
            for i in range(len(brushes)):
                if not bool(weights[i].any()):
                    continue
                inp, (dy, dx) = x, (0, 0)
                if k < bootstrap_steps:
                    inp = weights[i] * x + (1 - weights[i]) * fill
                    dy, dx = centring(soft_latent[i])
                    assert not bool(translate(soft_latent[i], dy, dx, torch.zeros_like(soft_latent[i])).sum()
                                    < soft_latent[i].sum() - 1e-6), "a painted pixel left the frame"  # fmt: skip
                    inp = translate(inp, dy, dx, pad=torch.roll(fill, (dy, dx), (-2, -1)))
                out = self.pipe.unet(inp, t, encoder_hidden_states=embeds[i]).sample
                d = self.deterministic(inp, out, k)
                d = translate(d, -dy, -dx, pad=torch.zeros_like(d))
                num, den = num + weights[i] * d, den + weights[i]
            if background_prompt:
                out = self.pipe.unet(x, t, encoder_hidden_states=bg_embed).sample
                num, den = num + bg_weight * self.deterministic(x, out, k), den + bg_weight
            else:  # the white background is known: its result is the step of a perfect model (ε̂ = the noise)
                target = self.deterministic(self.scheduler.add_noise(white, noise, t.view(1)), noise, k)
                num, den = num + bg_weight * target, den + bg_weight
            averaged = torch.where(den > 0, num / den.clamp(min=1e-12), x)
            if self.lcm and k + 1 < T:  # re-noise only after averaging
                noise = randn_tensor(shape, generator=gen)
                x = self.scheduler.add_noise(averaged, noise, self.timesteps[k + 1].view(1))
            else:
                x = averaged
        return x


# ------------------------------------------------------------------------------ scenes
def box(y0, y1, x0, x1) -> np.ndarray:
    m = np.zeros((SIDE, SIDE), np.float32)
    m[y0:y1, x0:x1] = 1
    return m


def disc(cy, cx, r) -> np.ndarray:
    yy, xx = np.mgrid[0:SIDE, 0:SIDE] + 0.5
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.float32)


def ramp() -> np.ndarray:
    """A soft mask: fades from 1 at the left edge to 0 at the middle, rows 40-100 only."""
    m = np.zeros((SIDE, SIDE), np.float32)
    m[40:100] = np.clip(1 - np.arange(SIDE) / (SIDE / 2), 0, 1)[None]
    return m


SCENES = {
    "two hard regions": dict(brushes=[semdraw.Brush("blue sky", box(0, 64, 0, SIDE)),
                                      semdraw.Brush("a red circle", disc(90, 84, 20))],
                             bootstrap_steps=0),
    "hard, bootstrapped and centred": dict(brushes=[semdraw.Brush("blue sky", box(0, 48, 0, SIDE)),
                                                    semdraw.Brush("a red circle", disc(84, 36, 18)),
                                                    semdraw.Brush("a green square", box(70, 110, 80, 120))],
                                           bootstrap_steps=2),
    "soft masks, continuous, overlapping": dict(
        brushes=[semdraw.Brush("green grass", ramp(), mask_strength=0.9995),
                 semdraw.Brush("a yellow sun", disc(60, 60, 30), mask_std=3.0),
                 semdraw.Brush("a blue diamond", disc(70, 80, 16), mask_std=1.5)],
        bootstrap_steps=1, mask_type="continuous"),
    "regions touching the edge": dict(
        brushes=[semdraw.Brush("deep water", box(0, SIDE, 0, 24)),  # a band: edges on both axes, kept in place
                 semdraw.Brush("a pink triangle", disc(10, 90, 22))],  # cut by the top edge only: centred
        bootstrap_steps=2),
    "background prompt and prompt strength": dict(
        brushes=[semdraw.Brush("a purple circle", disc(70, 60, 26), prompt_strength=0.6),
                 semdraw.Brush("blue sky", box(0, 24, 0, SIDE))],
        background_prompt="green grass", bootstrap_steps=1),
}


@pytest.fixture(scope="module", params=["lcm", "ddim"])
def pipe_and_model(request, tmp_path_factory):
    pipe = make_tiny_pipeline(tmp_path_factory.mktemp(request.param), scheduler=request.param)
    return pipe, semdraw.Model.from_pipeline(pipe)


@pytest.mark.parametrize("name", list(SCENES))
def test_generate_equals_the_naive_reference(pipe_and_model, name):
    pipe, model = pipe_and_model
    scene = dict(SCENES[name])
    brushes, bootstrap = scene.pop("brushes"), scene.pop("bootstrap_steps")
    background_prompt, mask_type = scene.pop("background_prompt", ""), scene.pop("mask_type", "discrete")
    steps, seed = 4, 11
    ref = Reference(pipe, steps)(brushes, background_prompt=background_prompt, bootstrap_steps=bootstrap,
                                 mix_steps=1.0, mask_type=mask_type, seed=seed)  # fmt: skip
    ours = semdraw.generate(model, brushes, background=semdraw.Background(prompt=background_prompt),
                            height=SIDE, width=SIDE, tile_size=SIDE, steps=steps, seed=seed,
                            bootstrap_steps=bootstrap, bootstrap_mix_steps=1.0, centre_steps=bootstrap,
                            mask_type=mask_type, cover_alpha=COVER_ALPHA, guidance_scale=1.0,
                            output_type="latent")  # fmt: skip
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_the_reference_is_sensitive_to_what_it_checks(pipe_and_model):
    """Not vacuous: bootstrapping with centring changes the reference's result well beyond the tolerance."""
    pipe, _ = pipe_and_model
    scene = SCENES["hard, bootstrapped and centred"]
    ref = Reference(pipe, 4)
    kw = dict(mask_type="discrete", seed=11, mix_steps=1.0)
    with_bootstrap = ref(scene["brushes"], bootstrap_steps=2, **kw)
    without = ref(scene["brushes"], bootstrap_steps=0, **kw)
    assert (with_bootstrap - without).abs().max() > 1e-2
