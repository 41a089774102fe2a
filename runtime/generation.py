"""One-shot region-based generation: `generate()` and `panorama()`.

Per step k (paper §3; the formulas are `semdraw.step`'s, shared with the stream), on the shared latent x_k:
  1. every (tile, layer) item whose weight is non-zero gets its input: the tile's crop of x_k; during the
     first ``bootstrap_steps`` a brush sees a white/background fill outside its mask, and during the
     first ``centre_steps`` its crop is rolled so its mask's bounding box is centred;
  2. all items go through the denoiser in one batch (per-item conditioning; CFG doubles it only when
     guidance > 1);
  3. each item's deterministic update D is un-rolled and the D's are averaged under their weights
     (quantized latent masks × tile ramps; the background takes clip(1 - Σ M));
  4. only then is fresh noise added (latent pre-averaging, :class:`PreAveraging`). The ablation's naive
     MultiDiffusion (every item renoised with its own noise, then averaged) is another
     :class:`Averaging`, kept with the fidelity code (``semdraw.toy.fidelity.PostAveraging``).

``generate()`` reads as check → prepare → loop → decode; it runs on a :class:`Model` or on an engine set
(onnxruntime, whose denoiser takes any number of rows; at the set's canvas) through the one network
contract of networks.py.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor

from . import masks as M
from . import sampling as S
from . import step
from .conditioning import Conditioning
from .engines import EngineSet
from .errors import ConfigError, MaskError
from .families import TileGeometry
from .layer_prompts import background_prompt, brush_prompts
from .limits import check_seed
from .model import Model
from .networks import Networks
from .request import Background, Brush
from .step import SamplingOptions
from .stream_source import StreamSource, open_source
from .tiles import Tile, plan_tiles, uncrop_add

log = logging.getLogger(__name__)

OutputType = Literal["pil", "np", "latent"]


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
def _check_options(*, output_type, seed, generator) -> None:  # fmt: skip
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


# ------------------------------------------------------------------------------------------ averaging
class Averaging(Protocol):
    """How each step's items join the shared latent (the paper's Table 5 compares two ways)."""

    residual_ok: bool  # the residual guidance modes can run under it

    def item(self, d: torch.Tensor, k: int, sched: S.SamplerSchedule, draw: Draw) -> torch.Tensor:
        """What an item's D (un-rolled) contributes to the weighted sum at step k."""
        ...

    def known(self, num: torch.Tensor, den: torch.Tensor, weight: torch.Tensor, known: torch.Tensor,
              noise: torch.Tensor, k: int, sched: S.SamplerSchedule,
              draw: Draw) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """The known background's share of the sum under ``weight``."""
        ...

    def advance(self, averaged: torch.Tensor, k: int, sched: S.SamplerSchedule,
                draw: Draw) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
        """The next latent from the average, and the noise it was given (None: none, or per item)."""
        ...


Draw = Callable[[int, tuple[int, ...]], "torch.Tensor | None"]  # (k, shape) -> a fresh draw, or None after k


class PreAveraging:
    """Latent pre-averaging (the method): the items' deterministic updates D are averaged under their
    weights, and only then does the average get the next level's noise, one draw for the whole latent."""

    residual_ok = True

    def item(self, d: torch.Tensor, k: int, sched: S.SamplerSchedule, draw: Draw) -> torch.Tensor:
        return d

    def known(self, num: torch.Tensor, den: torch.Tensor, weight: torch.Tensor, known: torch.Tensor,
              noise: torch.Tensor, k: int, sched: S.SamplerSchedule,
              draw: Draw) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        return step.add_known(num, den, weight, known, noise, k, sched)

    def advance(self, averaged: torch.Tensor, k: int, sched: S.SamplerSchedule,
                draw: Draw) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
        z = draw(k, tuple(averaged.shape))
        return S.renoise(averaged, z, k, sched), z


# ------------------------------------------------------------------------------------------ generate
@dataclass
class _Plan:
    """A generate() call, checked and resolved: everything the loop reads but the latents."""

    source: StreamSource
    networks: Networks
    sched: S.SamplerSchedule
    options: SamplingOptions
    mode: step.Guidance
    guidance_scale: float
    canvas: tuple[int, int]  # (H, W) pixels
    latent: tuple[int, int]  # (h, w)
    tiles: list[Tile]
    max_batch: int | None
    averaging: Averaging
    white: torch.Tensor  # [1, C, h, w] the white canvas latent (bootstrap fill; the known background)


@torch.no_grad()
def generate(
    model: Model | EngineSet,
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
    tile_size: int | None = None,
    tile_overlap: int | None = None,
    max_batch: int | None = None,
    output_type: OutputType = "pil",
    progress: bool = False,
    networks: Networks | None = None,
    averaging: Averaging | None = None,
    precision: str = "fp32",
) -> Any:
    """Generate one image from semantic brushes (region-based multi-prompt generation).

    ``model``: a :class:`Model`, or an :class:`EngineSet` whose denoiser takes any number of rows
    (onnxruntime; it generates at the set's canvas, in one tile). Sizes default to the model's native size;
    the schedule to the model's (``model.defaults.timesteps``, else the family's steps, timesteps as the
    model's diffusers scheduler picks them); ``guidance_scale`` and ``cfg`` follow
    :func:`semdraw.step.resolve_guidance` (1, no negative pass, unless asked; ``full`` is a negative pass
    per layer and step; ``self`` / ``initialize`` StreamDiffusion's residual CFG). A ``generator`` is
    consumed as diffusers' pipelines consume it (initial latents, then one draw per re-noising).
    ``bootstrap_steps`` and ``bootstrap_mix_steps`` default to the model's (``model.defaults``);
    ``centre_steps`` to ``bootstrap_steps``. Canvases larger than ``tile_size`` (default: the native
    size) are split into overlapping tiles whose denoiser calls are batched (``max_batch`` items at most
    per call; default all). ``networks``: the networks to run (default the model's; e.g.
    ``Networks.from_model(model).timed(hook)`` times each call); ``averaging``: how items join the latent
    (default :class:`PreAveraging`, the method); ``precision``: a torch model's arithmetic on the CPU ("fp32",
    "bf16", "auto": :mod:`semdraw.precision`). Returns a PIL image (``output_type="np"``: HxWx3 uint8,
    ``"latent"``: the final latent).
    """
    brushes = _check_brushes(brushes)
    background = background or Background()
    if not isinstance(background, Background):
        raise ConfigError(f"background must be a semdraw.Background, got {type(background).__name__}")
    _check_options(output_type=output_type, seed=seed, generator=generator)
    plan = _plan(model, height=height, width=width, steps=steps, timesteps=timesteps, guidance_scale=guidance_scale,
                 cfg=cfg, options=SamplingOptions(bootstrap_steps=bootstrap_steps, bootstrap_mix_steps=bootstrap_mix_steps,
                                                  centre_steps=centre_steps, mask_type=mask_type, cover_alpha=cover_alpha),
                 tile_size=tile_size, tile_overlap=tile_overlap, max_batch=max_batch, networks=networks,
                 averaging=averaging, precision=precision)  # fmt: skip
    layers, known, background_pixels, paste_mask = _prepare(plan, brushes, background)
    if generator is None:
        generator = torch.Generator("cpu").manual_seed(seed if seed is not None else int(torch.seed() % 2**63))
    x = _sample(plan, layers, known, generator, progress)
    if output_type == "latent":
        return x
    pixels = plan.networks.decode(x).float()
    if background_pixels is not None:  # inpainting: paste the background back outside the (soft) masks
        pixels = M.paste(pixels, background_pixels, paste_mask)
    return to_output(pixels, output_type)


def _plan(source: Model | EngineSet, *, height, width, steps, timesteps, guidance_scale, cfg, options,
          tile_size, tile_overlap, max_batch, networks, averaging, precision) -> _Plan:  # fmt: skip
    """Check every option once and resolve it against the source (a clear error before any work)."""
    default = source.family.default_guidance if isinstance(source, Model) else 1.0
    mode, guidance_scale = step.resolve_guidance(cfg, guidance_scale, default)
    src = open_source(source, height=height, width=width, layers=None, steps=steps, timesteps=timesteps,
                      cfg=mode.name, backend="auto", device=None, model=None, cuda_graph=False, compile=False,
                      precision=precision)  # fmt: skip
    net = src.networks if networks is None else networks.at_precision(precision)
    if not net.any_batch:
        raise ConfigError("generate() batches a varying number of items, but this engine set's denoiser has a "
                          "fixed batch (TensorRT); use an onnxruntime set or the model")  # fmt: skip
    averaging = averaging or PreAveraging()
    if mode.residual and not averaging.residual_ok:
        raise ConfigError(f"residual guidance (cfg={mode.name!r}) needs latent pre-averaging")
    if max_batch is not None and max_batch < 1:
        raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
    (h, w), f = src.latent, src.latent_factor
    if src.engines is not None:  # the set's networks have its canvas's shape: one tile, the canvas
        if tile_size is not None and (tile_size, tile_size) != (src.height, src.width):
            raise ConfigError(f"an engine set generates its own canvas ({src.height}x{src.width}) in one tile")
        tile_h, tile_w, overlap = h, w, 0
    else:
        tile_px = tile_size or src.model.native_size  # type: ignore[union-attr]
        if tile_px % f:
            raise ConfigError(f"tile_size must be divisible by {f}, got {tile_px}")
        tile_h = tile_w = tile_px // f
        overlap = (tile_h // 4) if tile_overlap is None else tile_overlap // f
        if not 0 <= overlap < tile_h:
            raise ConfigError(f"tile_overlap must lie in [0, tile_size), got {tile_overlap}")
    dev, dt = src.device, src.dtype
    tiles = [Tile(t.y, t.x, t.h, t.w, t.ramp.to(dev, dt)) for t in plan_tiles(h, w, tile_h, tile_w, overlap)]
    return _Plan(source=src, networks=net, sched=src.sched, options=options.resolved(src.defaults), mode=mode,
                 guidance_scale=guidance_scale, canvas=(src.height, src.width), latent=(h, w), tiles=tiles,
                 max_batch=max_batch, averaging=averaging, white=_white(src, net))  # fmt: skip


def _prepare(plan: _Plan, brushes: list[Brush], background: Background):  # type: ignore[no-untyped-def]
    """The layers (conditioning, quantized weights, centring masks), the known background latent (white, an
    image, or None under a background prompt) and, when inpainting, the pixels and mask to paste."""
    src, opts, (H, W) = plan.source, plan.options, plan.canvas
    dev, dt = src.device, src.dtype
    prepared = M.prepare_masks(brushes, plan.sched.noise_level, H, W, src.latent_factor, mask_type=opts.mask_type,
                               cover_alpha=opts.cover_alpha)  # fmt: skip
    negatives = plan.mode.negative_steps != 0  # some step runs a real negative pass
    layers = [Layer(p.cond, p.uncond, prepared.quantized[i].to(dev, dt), prepared.soft_latent[i].to(dev))
              for i, p in enumerate(brush_prompts(brushes, background, src.prompts, negatives))]  # fmt: skip
    under = background_prompt(background, src.prompts, negatives)
    if under is not None:
        layers.insert(0, Layer(under.cond, under.uncond, prepared.background.to(dev, dt), None))
    known = pixels = paste_mask = None
    if background.image is not None:
        pixels = image_to_tensor(background.image, H, W).to(dev)
        known = plan.networks.encode(pixels).to(dev, dt)
        paste_mask = M.coverage(prepared.soft_pixels).to(dev)
    elif under is None:
        known = plan.white
    known_weight = prepared.background.to(dev, dt)  # [T, 1, h, w]
    return layers, (known, known_weight), pixels, paste_mask


def _white(src: StreamSource, networks: Networks) -> torch.Tensor:
    """The white canvas latent, encoded once per call (a model caches it per size)."""
    H, W = src.height, src.width
    if src.engines is None and networks is src.networks:
        return src.model.white_latent(H, W)  # type: ignore[union-attr]
    return networks.encode(torch.ones(1, 3, H, W, device=src.device)).to(src.device, src.dtype)


def _sample(plan: _Plan, layers: list[Layer], known: tuple[torch.Tensor | None, torch.Tensor],
            generator: torch.Generator, progress: bool) -> torch.Tensor:  # fmt: skip
    """The denoising loop over the steps: items → one batched denoise → averaging → the next level."""
    src, sched, opts, avg = plan.source, plan.sched, plan.options, plan.averaging
    (h, w), dev, dt = plan.latent, src.device, src.dtype
    known_latent, known_weight = known
    shape = (1, src.latent_channels, h, w)

    def draw(k: int, like: tuple[int, ...]) -> torch.Tensor | None:
        """One generator draw when renoising after step k consumes noise (diffusers' order), else None."""
        return randn_tensor(like, generator=generator, device=dev, dtype=dt) if sched.draws_noise(k) else None

    coverage = torch.zeros(1, 1, h, w, device=dev, dtype=dt)
    for tile in plan.tiles:
        uncrop_add(coverage, tile, tile.ramp)
    noise = randn_tensor(shape, generator=generator, device=dev, dtype=dt)
    x = noise * sched.init_noise_sigma
    # RCFG: the noise part n = level_z·ε̄ the image carries; self: the initial noise (initialize: set at step 0)
    residual = step.initial_residual(noise, sched) if plan.mode.residual else None
    white = plan.white
    steps_iter: Any = range(sched.steps)
    if progress:
        from tqdm.auto import tqdm

        steps_iter = tqdm(steps_iter, desc="generate", unit="step")
    for k in steps_iter:
        items = _step_items(layers, plan.tiles, x, noise, white, k, sched, opts, residual)
        d_items = _denoise_items(plan, items, k)
        num, den = torch.zeros_like(x), torch.zeros(1, 1, h, w, device=dev, dtype=dt)
        num_n = torch.zeros_like(x) if residual is not None else None
        for item, (d, d_n) in zip(items, d_items, strict=True):
            d = avg.item(M.shift(d, -item.dy, -item.dx), k, sched, draw)
            uncrop_add(num, item.tile, item.weight * d)
            uncrop_add(den, item.tile, item.weight)
            if num_n is not None:
                uncrop_add(num_n, item.tile, item.weight * M.shift(d_n, -item.dy, -item.dx))
        wb = coverage * known_weight[k] if known_latent is not None else torch.zeros_like(den)
        if num_n is not None:  # the residual's step, averaged as the latent's (a known layer: its noise part)
            averaged_n = M.normalize(step.add_known_residual(num_n, wb, noise, k, sched), den + wb, residual)
        if known_latent is not None:
            num, den = avg.known(num, den, wb, known_latent, noise, k, sched, draw)
        x, z = avg.advance(M.normalize(num, den, x), k, sched, draw)
        if z is not None:
            noise = z  # the noise of the next level (bootstrap fill and known targets use it)
        if residual is not None:
            residual = S.renoise(averaged_n, z, k, sched)
    return x


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


def _denoise_items(plan: _Plan, items: list[_Item], k: int) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """(D, D of the residual or None) for all items, in as few denoiser calls as ``max_batch`` allows.

    Items of one tile size share a call; with ``negative`` (a real negative pass at this step) each item
    also runs its negative prompt. Each item's conditioning is completed for its tile (size-dependent
    conditioning, e.g. SDXL's crop offsets).
    """
    f, family, (H, W), sched = plan.source.latent_factor, plan.source.family, plan.canvas, plan.sched
    negative, max_batch = plan.mode.negative_at(k, sched.steps), plan.max_batch

    def tile_cond(cond: Conditioning, tile: Tile) -> Conditioning:
        return family.conditioning_for(cond, TileGeometry(H, W, tile.y * f, tile.x * f, tile.h * f, tile.w * f))

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
            d, d_n = step.denoise(plan.networks.denoise, xs, k, sched, t, Conditioning.cat(conds),
                                  plan.guidance_scale, negative_rows=rows, residual=residual)  # fmt: skip
            for j, i in enumerate(chunk):
                out[i] = (d[j : j + 1], None if d_n is None else d_n[j : j + 1])
    return out  # type: ignore[return-value]


def panorama(
    model: Model | EngineSet, prompt: str, *, height: int, width: int, negative_prompt: str = "", **kwargs: Any
) -> Any:
    """One prompt over a large canvas: a full-canvas brush generated in overlapping, batched tiles."""
    if not prompt:
        raise MaskError("panorama needs a prompt")
    brush = Brush(prompt, torch.ones(height, width), negative_prompt=negative_prompt)
    kwargs.setdefault("bootstrap_steps", 0)
    return generate(model, [brush], height=height, width=width, **kwargs)
