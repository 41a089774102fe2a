"""Mask math: pure functions on tensors (the paper's quantized masks, blur, occlusion, centring).

Shapes: a pixel mask is [H, W] float in [0, 1]; a stack of L masks is [L, H, W]; quantized masks are
[L, T, H, W] (one per noise level n_k); latent masks have the latent size h = H / f, w = W / f.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from .errors import MaskError

if TYPE_CHECKING:
    from .request import Brush

MaskType = Literal["discrete", "continuous", "plain"]


class MaskStretchWarning(UserWarning):
    """A mask of another aspect ratio than the canvas is stretched to fit it."""
MASK_TYPES: tuple[str, ...] = ("discrete", "continuous", "plain")


def to_mask_tensor(mask: Any, height: int, width: int) -> torch.Tensor:
    """Any supported mask -> float32 [height, width] in [0, 1] (CPU).

    Accepts HxW (or HxWx1 / 1xHxW) numpy arrays or tensors: float in [0, 1], bool, or uint8 0-255; and PIL
    images: RGBA/LA use their alpha, other modes are converted to grey, white = painted. Masks of
    another size are resized to the canvas (area averaging when shrinking, bilinear when growing).
    """
    if mask is None:
        raise MaskError("a brush needs a mask: pass an HxW array, tensor or PIL image (white/True = painted)")
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        Image = None  # type: ignore[assignment]
    if Image is not None and isinstance(mask, Image.Image):
        if mask.mode in ("RGBA", "LA", "PA"):
            arr = np.asarray(mask.getchannel("A"))
        else:
            arr = np.asarray(mask.convert("L"))
        t = torch.from_numpy(arr.astype(np.float32) / 255.0)
    else:
        if isinstance(mask, np.ndarray):
            t = torch.from_numpy(np.ascontiguousarray(mask))
        elif isinstance(mask, torch.Tensor):
            t = mask.detach().cpu()
        else:
            raise MaskError(
                f"unsupported mask type {type(mask).__name__}: pass a numpy array, torch tensor or PIL image"
            )
        if t.dim() == 3 and 1 in (t.shape[0], t.shape[-1]):
            t = t.squeeze(0) if t.shape[0] == 1 else t.squeeze(-1)
        if t.dim() != 2:
            raise MaskError(f"a mask must be 2-D (HxW), got shape {tuple(t.shape)}")
        if t.dtype == torch.bool:
            t = t.float()
        elif t.dtype == torch.uint8:
            t = t.float() / 255.0
        elif t.is_floating_point():
            t = t.float()
            if torch.isnan(t).any() or torch.isinf(t).any():
                raise MaskError("the mask contains NaN or infinite values")
            lo, hi = float(t.min()), float(t.max())
            if lo < 0 or hi > 1:
                raise MaskError(
                    f"float masks must lie in [0, 1], got values in [{lo:.3g}, {hi:.3g}]; "
                    "pass uint8 (0-255) or bool masks, or scale the float mask"
                )
        else:
            raise MaskError(f"unsupported mask dtype {t.dtype}: use float in [0, 1], bool or uint8")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise MaskError(f"a mask must not be empty, got shape {tuple(t.shape)}")
    if tuple(t.shape) != (height, width):
        h, w = t.shape
        if abs(h * width - w * height) > 0.01 * h * width:  # more than 1 % off the canvas's aspect ratio
            warnings.warn(f"a {h}x{w} mask is stretched to the {height}x{width} canvas (another aspect ratio); "
                          "paint masks at the canvas's proportions to avoid distortion", MaskStretchWarning,
                          stacklevel=3)  # fmt: skip
        t = resize(t, height, width)
    return t.contiguous()


def resize(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize an [..., H, W] mask: area averaging when shrinking (keeps thin strokes), bilinear otherwise."""
    lead = mask.shape[:-2]
    x = mask.reshape(-1, 1, *mask.shape[-2:]).float()
    shrinking = height <= x.shape[-2] and width <= x.shape[-1]
    if shrinking:
        x = F.interpolate(x, size=(height, width), mode="area")
    else:
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
    return x.clamp(0, 1).reshape(*lead, height, width)


def occlude(masks: torch.Tensor, cover_alpha: float | None) -> torch.Tensor:
    """Cover-alpha occlusion of an [L, H, W] stack: each later layer dims the earlier ones beneath it.

    m'_i = m_i · Π_{j>i} (1 - (1 - cover_alpha) · m_j). ``cover_alpha`` = 1 (or None) means no occlusion;
    0 means a later brush fully hides earlier ones where it is painted.
    """
    if cover_alpha is None or cover_alpha >= 1.0 or masks.shape[0] < 2:
        return masks
    keep = 1 - (1 - cover_alpha) * masks  # [L, H, W] how much of what lies beneath each layer survives
    # suffix product over later layers: cover[i] = Π_{j>i} keep[j]
    rev = torch.flip(keep, dims=[0])
    cover = torch.flip(torch.cumprod(rev, dim=0), dims=[0])
    cover = torch.cat([cover[1:], torch.ones_like(cover[:1])], dim=0)
    return masks * cover


def gaussian_kernel1d(sigma: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Normalised 1-D Gaussian of standard deviation ``sigma`` pixels, radius ceil(3σ)."""
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).to(dtype)


def gaussian_blur(mask: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of an [..., H, W] mask by σ pixels (σ = 0: unchanged).

    Edges are replicated, so a mask touching the canvas border stays full there.
    """
    if sigma <= 0:
        return mask
    k = gaussian_kernel1d(sigma, mask.dtype).to(mask.device)
    r = (k.numel() - 1) // 2
    lead = mask.shape[:-2]
    x = mask.reshape(-1, 1, *mask.shape[-2:])
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
    return x.reshape(*lead, *mask.shape[-2:])


def quantize(masks: torch.Tensor, noise_levels: torch.Tensor, mask_type: MaskType) -> torch.Tensor:
    """Quantize [L, H, W] soft masks against the noise levels n_0 > ... > n_{T-1}: -> [L, T, H, W].

    discrete:   M_k = [m > n_k], and always 1 where m = 1 (flow-matching schedules start at n_0 = 1
                exactly, where a full-strength brush must still join the first step)
    continuous: M_k = clip((m - n_{k+1}) / (n_k - n_{k+1}), 0, 1), with n_T = 0
    plain:      M_k = m (no quantization: naive MultiDiffusion)
    Masks grow as noise falls, so soft (blurred) edges join late and harmonise with their surroundings.
    """
    n = noise_levels.to(masks.device, masks.dtype).view(1, -1, 1, 1)
    m = masks.unsqueeze(1)
    if mask_type == "discrete":
        return ((m > n) | (m >= 1)).to(masks.dtype)
    if mask_type == "continuous":
        n_next = torch.cat([n[:, 1:], torch.zeros_like(n[:, :1])], dim=1)
        return ((m - n_next) / (n - n_next)).clamp(0, 1)
    if mask_type == "plain":
        return m.expand(-1, n.shape[1], -1, -1).clone()
    raise MaskError(f"unknown mask type {mask_type!r}; choose one of {MASK_TYPES}")


def steps_on(alpha: float, noise_levels: Sequence[float] | torch.Tensor) -> int:
    """How many of the T steps a fully painted region of strength ``alpha`` takes part in under discrete
    quantization (M_k = 1 where alpha > n_k, and at every step where alpha = 1). With few-step schedules
    n_0 is ~0.998: an alpha of 0.99 already leaves out the first step."""
    levels = [float(n) for n in noise_levels]
    return len(levels) if alpha >= 1 else sum(alpha > n for n in levels)


def alpha_for_steps(on: int, noise_levels: Sequence[float] | torch.Tensor) -> float:
    """The strength that makes a fully painted region take part in the last ``on`` of the T steps (the
    inverse of :func:`steps_on`): 1 for all of them, 0 for none, else halfway between the noise level of
    the first step it joins and that of the step before, so it joins exactly there."""
    levels = [float(n) for n in noise_levels]
    if on >= len(levels):
        return 1.0
    if on <= 0:
        return 0.0
    first = len(levels) - on
    return (levels[first] + levels[first - 1]) / 2


def to_latent(masks: torch.Tensor, factor: int) -> torch.Tensor:
    """Reduce [..., H, W] masks to latent size by area averaging (nearest would drop thin strokes)."""
    if factor == 1:
        return masks
    lead = masks.shape[:-2]
    x = masks.reshape(-1, 1, *masks.shape[-2:])
    x = F.avg_pool2d(x, kernel_size=factor, stride=factor)
    return x.reshape(*lead, *x.shape[-2:])


def background_weight(masks: torch.Tensor) -> torch.Tensor:
    """Weight of the background under an [L, ...] mask stack: clip(1 - Σ_i M_i, 0, 1)."""
    return (1 - masks.sum(dim=0)).clamp(0, 1)


def normalize(num: torch.Tensor, den: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """The masked average Σ_i w_i v_i / Σ_i w_i from its accumulated numerator and denominator;
    ``fallback`` (the current latent) where no weight covers a pixel (Σ_i w_i = 0)."""
    return torch.where(den > 0, num / den.clamp(min=1e-12), fallback)


def coverage(soft_pixels: torch.Tensor) -> torch.Tensor:
    """How much the [L, H, W] pixel masks cover each pixel, clip(Σ_i M_i, 0, 1), as [1, 1, H, W]."""
    return soft_pixels.sum(0).clamp(0, 1)[None, None]


def paste(pixels: torch.Tensor, background: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Inpainting's last step: generated ``pixels`` where the masks cover (``keep``), the photo elsewhere."""
    return keep * pixels + (1 - keep) * background


EDGE_TOUCH = 0.5  # mask value at the border from which a region counts as touching the canvas edge


def centring_shift(mask: torch.Tensor) -> tuple[int, int]:
    """(dy, dx) that moves the centre of the mask's bounding box (pixels > 0) to the frame centre, unless the
    region touches the frame's edges on both axes (``EDGE_TOUCH``).

    A region cut by edges on both axes is scenery (a band, a corner, a full-canvas backdrop): shifted, its
    cut sides would sit inside the frame beside the bootstrap fill and the model would paint them as
    boundaries (a stripe at the canvas border once shifted back), so it keeps its place. Any other region
    is centred, one cut by a single edge too (an object against the border: the model draws it whole in
    the centre, and shifting back crops it at the edge). A centred box fits the frame, so what the roll
    brings in lies outside the region; in the bootstrap steps that strip holds the fill, as padding would.
    An empty mask needs no shift: (0, 0).
    """
    ys, xs = torch.nonzero(mask > 0, as_tuple=True)
    if ys.numel() == 0:
        return 0, 0
    h, w = mask.shape[-2:]
    m = mask.reshape(h, w)
    # touching: at least half of an edge latent pixel painted (a brush that merely comes near the edge, whose
    # area-averaged latent mask grazes the border, does not count)
    touch_y = bool(m[0].max() >= EDGE_TOUCH or m[-1].max() >= EDGE_TOUCH)
    touch_x = bool(m[:, 0].max() >= EDGE_TOUCH or m[:, -1].max() >= EDGE_TOUCH)
    if touch_y and touch_x:
        return 0, 0

    def along(lo: int, hi: int, size: int) -> int:  # hi exclusive
        return int(round(size / 2 - (lo + hi) / 2))

    return along(int(ys.min()), int(ys.max()) + 1, h), along(int(xs.min()), int(xs.max()) + 1, w)


def shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Circularly shift the last two axes by (dy, dx); ``shift(shift(x, dy, dx), -dy, -dx) == x``."""
    if dy == 0 and dx == 0:
        return x
    return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))


@dataclass
class PreparedMasks:
    """Masks of all brushes, from pixels to per-step latent weights."""

    soft_pixels: torch.Tensor  # [L, H, W] after occlusion, blur and alpha
    soft_latent: torch.Tensor  # [L, h, w]
    quantized: torch.Tensor  # [L, T, 1, h, w]
    background: torch.Tensor  # [T, 1, h, w]


def prepare_masks(
    brushes: Sequence[Brush],
    noise_levels: torch.Tensor,
    height: int,
    width: int,
    factor: int,
    *,
    mask_type: str,
    cover_alpha: float | None,
) -> PreparedMasks:
    """The fast path of a mask change: occlude → blur → × alpha → quantize → area-reduce (one call for all
    brushes, in their order; used by generate() and by the stream's setters)."""
    T = int(noise_levels.shape[0])
    h, w = height // factor, width // factor
    if not brushes:
        empty = torch.zeros(0, height, width)
        return PreparedMasks(empty, torch.zeros(0, h, w), torch.zeros(0, T, 1, h, w), torch.ones(T, 1, h, w))
    stack = torch.stack([to_mask_tensor(b.mask, height, width) for b in brushes])
    stack = occlude(stack, cover_alpha)
    soft = torch.stack(
        [
            gaussian_blur(m, float(b.mask_std)) * float(b.mask_strength)
            for m, b in zip(stack, brushes, strict=True)
        ]
    )
    quantized = to_latent(quantize(soft, noise_levels.cpu().float(), mask_type), factor).unsqueeze(2)
    return PreparedMasks(soft, to_latent(soft, factor), quantized, background_weight(quantized))
