"""One-shot region-based generation: `generate()` and `panorama()`.

Per step k (paper §3; the formulas are `semdraw.step`'s, shared with the stream), on the shared latent x_k:
  1. every (tile, layer) item whose weight is non-zero gets its input: the tile's crop of x_k; during the
     first ``bootstrap_steps`` a brush sees a white/background fill outside its mask, and during the
     first ``centre_steps`` its crop is rolled so its mask's bounding box is centred;
  2. all items go through the denoiser in one batch (per-item conditioning; CFG doubles it only when
     guidance > 1);
  3. each item's deterministic update D is un-rolled and the D's are averaged under their weights
     (quantized latent masks × tile ramps; the background takes clip(1 - Σ M));
  4. only then is fresh noise added (latent pre-averaging). ``latent_averaging="post"`` instead renoises
     every item with its own noise and averages afterwards: naive MultiDiffusion, for the ablation.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor

from . import masks as M
from . import sampling as S
from . import step
from .conditioning import Conditioning
from .errors import ConfigError, MaskError
from .families import TileGeometry
from .limits import check_seed
from .model import Model
from .request import Background, Brush
from .step import SamplingOptions

log = logging.getLogger(__name__)

OutputType = Literal["pil", "np", "latent"]


# ------------------------------------------------------------------------------------------ tiles
@dataclass(frozen=True)
class Tile:
    """A window of the latent canvas (latent pixels) with its seam-ramp weight [h, w]."""

    y: int
    x: int
    h: int
    w: int
    ramp: torch.Tensor

    def crop(self, t: torch.Tensor) -> torch.Tensor:
        return t[..., self.y : self.y + self.h, self.x : self.x + self.w]


def _axis_positions(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    stride = tile - overlap
    pos = list(range(0, size - tile, stride))
    return pos + [size - tile]


def _ramp(n: int, length: int, start_seam: bool, end_seam: bool) -> torch.Tensor:
    """1-D weights: linear ramps of ``length`` on sides facing a neighbour tile, 1 elsewhere (never 0)."""
    w = torch.ones(n, dtype=torch.float64)
    r = torch.arange(1, length + 1, dtype=torch.float64) / (length + 1)
    if start_seam and length:
        w[:length] = torch.minimum(w[:length], r)
    if end_seam and length:
        w[-length:] = torch.minimum(w[-length:], r.flip(0))
    return w


def plan_tiles(h: int, w: int, tile_h: int, tile_w: int, overlap: int) -> list[Tile]:
    """Overlapping tiles covering an h x w latent, weights ramping across the seams."""
    ys, xs = _axis_positions(h, tile_h, overlap), _axis_positions(w, tile_w, overlap)
    th, tw = min(tile_h, h), min(tile_w, w)
    tiles = []
    for y in ys:
        for x in xs:
            ry = _ramp(th, overlap, y > 0, y + th < h)
            rx = _ramp(tw, overlap, x > 0, x + tw < w)
            tiles.append(Tile(y, x, th, tw, (ry[:, None] * rx[None, :]).float()))
    return tiles


def _uncrop_add(acc: torch.Tensor, tile: Tile, value: torch.Tensor) -> None:
    acc[..., tile.y : tile.y + tile.h, tile.x : tile.x + tile.w] += value


# ------------------------------------------------------------------------------------------ layers
@dataclass
class Layer:
    """One prompt layer prepared for sampling: conditioning, per-step latent weights, centring mask."""

    cond: Conditioning
    uncond: Conditioning | None
    weights: torch.Tensor  # [T, 1, h, w] quantized latent mask (brush) or background weight
    soft: torch.Tensor | None  # [h, w] soft latent mask for centring; None for the background layer


def brushes_from(prompts: Sequence[str], masks: Sequence[Any], **per_brush: Sequence[Any]) -> list[Brush]:
    """Brushes from parallel lists (prompts, masks, and e.g. mask_strength=[...]); lengths must match."""
    n = len(prompts)
    lengths = {"prompts": n, "masks": len(masks), **{k: len(v) for k, v in per_brush.items()}}
    if len(set(lengths.values())) != 1:
        raise ConfigError(f"mismatched list lengths: {lengths}; give one entry per brush")
    return [
        Brush(p, m, **{k: v[i] for k, v in per_brush.items()})
        for i, (p, m) in enumerate(zip(prompts, masks, strict=True))
    ]


def image_to_tensor(image: Any, height: int, width: int) -> torch.Tensor:
    """PIL image / HxWx3 uint8 array / [3,H,W] or [1,3,H,W] float tensor in [0,1] → [1, 3, H, W] in [-1, 1]."""
    from PIL import Image

    if isinstance(image, Image.Image):
        image = np.array(image.convert("RGB"))  # a writable copy (torch refuses read-only arrays)
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ConfigError(f"a background image array must be HxWx3, got shape {image.shape}")
        t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
        t = t / 255.0 if image.dtype == np.uint8 else t
    elif isinstance(image, torch.Tensor):
        t = image.detach().float().cpu()
        t = t[0] if t.dim() == 4 and t.shape[0] == 1 else t
        if t.dim() != 3 or t.shape[0] != 3:
            raise ConfigError(f"a background image tensor must be [3, H, W], got {tuple(image.shape)}")
    else:
        raise ConfigError(f"unsupported background image type {type(image).__name__}")
    if not torch.isfinite(t).all():
        raise ConfigError("the background image contains NaN or infinite values")
    t = t.clamp(0, 1)[None]
    if t.shape[-2:] != (height, width):
        t = torch.nn.functional.interpolate(t, size=(height, width), mode="bilinear", antialias=True,
                                            align_corners=False)  # fmt: skip
    return t * 2 - 1


def to_output(pixels: torch.Tensor, output_type: OutputType) -> Any:
    """[1, 3, H, W] in [-1, 1] → PIL image or HxWx3 uint8 array (rounded as diffusers does)."""
    from PIL import Image

    # Quantized where the pixels are, so only the uint8 frame crosses to the host (the stream's one sync).
    frame = ((pixels[0].float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0)
    arr = frame.cpu().numpy()
    return Image.fromarray(arr) if output_type == "pil" else arr


# ------------------------------------------------------------------------------------------ checks
def _check_options(*, guidance_scale, latent_averaging, output_type, seed, generator) -> None:  # fmt: skip
    if latent_averaging not in ("pre", "post"):
        raise ConfigError(f"latent_averaging must be 'pre' or 'post', got {latent_averaging!r}")
    if output_type not in ("pil", "np", "latent"):
        raise ConfigError(f"output_type must be 'pil', 'np' or 'latent', got {output_type!r}")
    if seed is not None and generator is not None:
        raise ConfigError("pass seed or generator, not both")
    if seed is not None:
        check_seed(seed)


class EmptyPromptWarning(UserWarning):
    """A brush without a prompt is ignored (as the window and palettes ignore it)."""


def _check_brushes(brushes: Any) -> list[Brush]:
    if isinstance(brushes, Brush):
        brushes = [brushes]
    brushes = list(brushes)
    bad = [type(b).__name__ for b in brushes if not isinstance(b, Brush)]
    if bad:
        raise ConfigError(f"brushes must be semdraw.Brush objects, got {bad}")
    empty = [b.name or f"#{i}" for i, b in enumerate(brushes) if not b.prompt.strip()]
    if empty:
        warnings.warn(f"brushes without a prompt are ignored: {empty} (give each brush a prompt)",
                      EmptyPromptWarning, stacklevel=3)  # fmt: skip
    return [b for b in brushes if b.prompt.strip()]


# ------------------------------------------------------------------------------------------ generate
@torch.no_grad()
def generate(
    model: Model,
    brushes: Sequence[Brush] | Brush,
    *,
    background: Background | None = None,
    height: int | None = None,
    width: int | None = None,
    steps: int | None = None,
    timesteps: Sequence[float] | None = None,
    guidance_scale: float | None = None,
    cfg: str | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    bootstrap_steps: int | None = None,
    bootstrap_mix_steps: float | None = None,
    centre_steps: int | None = None,
    mask_type: str = "discrete",
    cover_alpha: float | None = 0.3,
    latent_averaging: str = "pre",
    tile_size: int | None = None,
    tile_overlap: int | None = None,
    max_batch: int | None = None,
    output_type: OutputType = "pil",
    progress: bool = False,
) -> Any:
    """Generate one image from semantic brushes (region-based multi-prompt generation).

    Sizes default to the model's native size; the schedule to the model's (``model.defaults.timesteps``,
    else the family's steps, timesteps as the model's diffusers scheduler picks them); ``guidance_scale``
    to the family's (1: no negative pass); ``cfg`` picks how guidance gets its negative output (``full``,
    the default when guidance_scale > 1: a negative pass per layer and step; ``self`` / ``initialize``:
    StreamDiffusion's residual CFG, :class:`semdraw.step.Guidance`). A ``generator`` is consumed as diffusers' pipelines consume it
    (initial latents, then one draw per re-noising). ``bootstrap_steps`` defaults to the model's
    (``model.defaults``), as does ``bootstrap_mix_steps``; ``centre_steps`` to ``bootstrap_steps``. Canvases larger than ``tile_size``
    (default: the native size) are split into overlapping tiles whose denoiser calls are batched
    (``max_batch`` items at most per call; default all). Returns a PIL image (``output_type="np"``: HxWx3
    uint8, ``"latent"``: the final latent).
    """
    brushes = _check_brushes(brushes)
    background = background or Background()
    if not isinstance(background, Background):
        raise ConfigError(f"background must be a semdraw.Background, got {type(background).__name__}")
    height = model.native_size if height is None else height  # 0 is an error, not "the default"
    width = model.native_size if width is None else width
    mode, guidance_scale = step.resolve_guidance(cfg, guidance_scale, model.family.default_guidance)
    opts = SamplingOptions(bootstrap_steps=bootstrap_steps, bootstrap_mix_steps=bootstrap_mix_steps,
                           centre_steps=centre_steps, mask_type=mask_type,
                           cover_alpha=cover_alpha).resolved(model.defaults)  # fmt: skip
    _check_options(guidance_scale=guidance_scale, latent_averaging=latent_averaging, output_type=output_type,
                   seed=seed, generator=generator)  # fmt: skip
    if mode.residual and latent_averaging == "post":
        raise ConfigError("residual guidance (cfg='self' / 'initialize') needs latent_averaging='pre'")
    h, w = model.latent_size(height, width)
    f = model.vae_scale_factor
    tile_px = tile_size or model.native_size
    if tile_px % f:
        raise ConfigError(f"tile_size must be divisible by {f}, got {tile_px}")
    tile_lat = tile_px // f
    overlap = (tile_lat // 4) if tile_overlap is None else tile_overlap // f
    if not 0 <= overlap < tile_lat:
        raise ConfigError(f"tile_overlap must lie in [0, tile_size), got {tile_overlap}")
    if max_batch is not None and max_batch < 1:
        raise ConfigError(f"max_batch must be >= 1, got {max_batch}")

    sched = model.schedule(steps=steps, timesteps=timesteps)
    dev, dt = model.device, model.dtype
    prepared = M.prepare_masks(brushes, sched.noise_level, height, width, f, mask_type=opts.mask_type,
                               cover_alpha=opts.cover_alpha)  # fmt: skip

    # ---- conditioning (slow path: cached per prompt) and layers
    negatives = mode.negative_steps != 0  # some step runs a real negative pass
    bg_cond = model.encode_prompt(background.prompt)
    layers: list[Layer] = []
    for i, b in enumerate(brushes):
        cond = bg_cond.lerp(model.encode_prompt(b.prompt), float(b.prompt_strength))
        uncond = model.encode_prompt(b.negative_prompt) if negatives else None
        layers.append(Layer(cond, uncond, prepared.quantized[i].to(dev, dt), prepared.soft_latent[i].to(dev)))
    known_bg: torch.Tensor | None = None  # a clean latent the background is pinned to
    bg_pixels = None
    if background.image is not None:
        bg_pixels = image_to_tensor(background.image, height, width).to(dev)
        known_bg = model.encode_image(bg_pixels)
    elif background.prompt:
        uncond = model.encode_prompt(background.negative_prompt) if negatives else None
        layers.insert(0, Layer(bg_cond, uncond, prepared.background.to(dev, dt), None))
    else:
        known_bg = model.white_latent(height, width)
    white = model.white_latent(height, width)

    tiles = [
        Tile(t.y, t.x, t.h, t.w, t.ramp.to(dev, dt)) for t in plan_tiles(h, w, tile_lat, tile_lat, overlap)
    ]
    coverage = torch.zeros(1, 1, h, w, device=dev, dtype=dt)
    for tile in tiles:
        _uncrop_add(coverage, tile, tile.ramp)

    if generator is None:
        generator = torch.Generator("cpu").manual_seed(
            seed if seed is not None else int(torch.seed() % 2**63)
        )
    shape = (1, model.latent_channels, h, w)
    noise = randn_tensor(shape, generator=generator, device=dev, dtype=dt)
    x = noise * sched.init_noise_sigma
    # RCFG: the noise part n = level_z·ε̄ the image carries; self: the initial noise (initialize: set at step 0)
    residual = step.initial_residual(noise, sched) if mode.residual else None

    background_weight = prepared.background.to(dev, dt)  # [T, 1, h, w], moved once
    post = latent_averaging == "post"

    def fresh_noise(k: int, like: tuple[int, ...]) -> torch.Tensor | None:
        """One generator draw when renoising after step k consumes noise (diffusers' order), else None."""
        return randn_tensor(like, generator=generator, device=dev, dtype=dt) if sched.draws_noise(k) else None

    steps_iter = range(sched.steps)
    if progress:
        from tqdm.auto import tqdm

        steps_iter = tqdm(steps_iter, desc="generate", unit="step")
    for k in steps_iter:
        items = _step_items(layers, tiles, x, noise, white, k, sched, opts, residual)
        d_items = _denoise_items(model, items, k, sched, guidance_scale, mode.negative_at(k, sched.steps),
                                 max_batch, (height, width))  # fmt: skip
        num = torch.zeros_like(x)
        num_n = torch.zeros_like(x) if residual is not None else None
        den = torch.zeros(1, 1, h, w, device=dev, dtype=dt)
        for item, (d, d_n) in zip(items, d_items, strict=True):
            d = M.shift(d, -item.dy, -item.dx)
            if post:  # naive MultiDiffusion: each view takes its own step, noise included
                d = S.renoise(d, fresh_noise(k, d.shape), k, sched)
            _uncrop_add(num, item.tile, item.weight * d)
            _uncrop_add(den, item.tile, item.weight)
            if num_n is not None:
                _uncrop_add(num_n, item.tile, item.weight * M.shift(d_n, -item.dy, -item.dx))
        if num_n is not None:  # the residual's step, averaged as the latent's (a known layer: its noise part)
            wn = coverage * background_weight[k] if known_bg is not None else torch.zeros_like(den)
            num_n = step.add_known_residual(num_n, wn, noise, k, sched)
            averaged_n = M.normalize(num_n, den + wn, residual)
        if known_bg is not None:
            wb = coverage * background_weight[k]
            if post:
                target = S.renoise(S.known_target(known_bg, noise, k, sched), fresh_noise(k, shape), k, sched)
                num, den = num + wb * target, den + wb
            else:
                num, den = step.add_known(num, den, wb, known_bg, noise, k, sched)
        averaged = M.normalize(num, den, x)
        if post:
            x = averaged
        else:
            z = fresh_noise(k, shape)
            if z is not None:
                noise = z  # the noise of the next level (bootstrap fill and known targets use it)
            x = S.renoise(averaged, z, k, sched)
            if residual is not None:
                residual = S.renoise(averaged_n, z, k, sched)

    if output_type == "latent":
        return x
    pixels = model.decode(x).float()
    if bg_pixels is not None:  # inpainting: paste the background back outside the (soft) masks
        pixels = M.paste(pixels, bg_pixels, M.coverage(prepared.soft_pixels).to(dev))
    return to_output(pixels, output_type)


@dataclass
class _Item:
    tile: Tile
    layer: Layer
    x: torch.Tensor  # [1, C, th, tw] denoiser input latent (before c_in), possibly rolled
    residual: torch.Tensor | None  # [1, C, th, tw] its noise part (RCFG), rolled as x
    weight: torch.Tensor  # [1, 1, th, tw]
    dy: int
    dx: int


def _step_items(layers, tiles, x, noise, white, k, sched, opts: SamplingOptions, residual=None) -> list[_Item]:
    """All (tile, layer) items with non-zero weight at step k, with bootstrap fill and centring applied."""
    fill = None
    if k < opts.bootstrap_steps:
        fill = step.bootstrap_fill(x, white, noise, k, sched, opts.white_share(k))
    items = []
    for tile in tiles:
        xt = tile.crop(x)
        for layer in layers:
            weight = tile.crop(layer.weights[k]) * tile.ramp
            if not bool(weight.any()):
                continue  # contributes nothing: skip its denoiser call
            inp, dy, dx = xt, 0, 0
            n = None if residual is None else tile.crop(residual)
            if layer.soft is not None:
                if fill is not None:
                    inp = step.masked_input(xt, tile.crop(layer.weights[k]), tile.crop(fill))
                if k < opts.centre_steps:
                    dy, dx = M.centring_shift(tile.crop(layer.soft))
                    inp = M.shift(inp, dy, dx)
                    n = None if n is None else M.shift(n, dy, dx)
            items.append(_Item(tile, layer, inp, n, weight[None], dy, dx))
    return items


def _denoise_items(model: Model, items: list[_Item], k: int, sched, guidance: float, negative: bool,
                   max_batch: int | None, canvas: tuple[int, int]):  # fmt: skip
    """(D, D of the residual or None) for all items, in as few denoiser calls as ``max_batch`` allows.

    Items of one tile size share a call; with ``negative`` (a real negative pass at this step) each item
    also runs its negative prompt. Each item's conditioning is completed for its tile (size-dependent
    conditioning, e.g. SDXL's crop offsets).
    """
    f = model.vae_scale_factor

    def tile_cond(cond: Conditioning, tile: Tile) -> Conditioning:
        geometry = TileGeometry(canvas[0], canvas[1], tile.y * f, tile.x * f, tile.h * f, tile.w * f)
        return model.family.conditioning_for(cond, geometry)

    out: list[tuple[torch.Tensor, torch.Tensor | None] | None] = [None] * len(items)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault((it.tile.h, it.tile.w), []).append(i)
    per_call = max_batch or len(items) or 1
    per_call = max(1, per_call // 2) if negative and max_batch else per_call
    for idx in groups.values():
        for start in range(0, len(idx), per_call):
            chunk = idx[start : start + per_call]
            xs = torch.cat([items[i].x for i in chunk])
            residual = torch.cat([items[i].residual for i in chunk]) if items[chunk[0]].residual is not None else None
            conds = [tile_cond(items[i].layer.cond, items[i].tile) for i in chunk]
            rows = None
            if negative:
                conds = [tile_cond(items[i].layer.uncond, items[i].tile) for i in chunk] + conds
                rows = torch.arange(len(chunk), device=xs.device)
            t = sched.timesteps[k].expand(xs.shape[0])
            d, d_n = step.denoise(model.predict, xs, k, sched, t, Conditioning.cat(conds), guidance,
                                  negative_rows=rows, residual=residual)  # fmt: skip
            for j, i in enumerate(chunk):
                out[i] = (d[j : j + 1], None if d_n is None else d_n[j : j + 1])
    return out


def panorama(
    model: Model, prompt: str, *, height: int, width: int, negative_prompt: str = "", **kwargs: Any
) -> Any:
    """One prompt over a large canvas: a full-canvas brush generated in overlapping, batched tiles."""
    if not prompt:
        raise MaskError("panorama needs a prompt")
    brush = Brush(prompt, torch.ones(height, width), negative_prompt=negative_prompt)
    kwargs.setdefault("bootstrap_steps", 0)
    return generate(model, [brush], height=height, width=width, **kwargs)
