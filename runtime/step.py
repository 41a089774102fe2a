"""The one sampling step of region-based generation, as pure row-batched functions.

``generate()`` (items = tile × layer) and :class:`semdraw.Stream` (rows = step × slot) both run step k as:

1. **layer inputs** — during the bootstrap steps a brush row sees, outside its quantized mask M, the
   bootstrap fill b_k = r_k·q(w, z, k) + (1 − r_k)·x_k (q: the forward process, w: the white latent,
   r_k: how much white, from ``bootstrap_mix_steps``): input = M·x + (1 − M)·b_k; during the centring
   steps the input is shifted so its mask is centred (and the output shifted back);
2. **denoise** — one denoiser batch; with guidance w > 1 the rows run twice, [negative; positive], and
   ε̂ = ε_neg + w·(ε_pos − ε_neg); then the deterministic part D of the sampler step;
3. **aggregate** — Σ M·D (+ the known background's target under its weight, :func:`add_known`), divided
   by Σ M (:func:`semdraw.masks.normalize`; latent pre-averaging: before any noise is added);
4. **advance** — the averaged D gets the next level's noise (:func:`semdraw.sampling.renoise`).

Only the bookkeeping differs between the two callers (tiles and the ring of images in flight); every
formula above lives here once. :class:`SamplingOptions` is the one checked set of options both take.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from . import masks as M
from . import sampling as S
from .conditioning import Conditioning
from .errors import ConfigError
from .families import SamplingDefaults

Predict = Callable[[torch.Tensor, torch.Tensor, Conditioning], torch.Tensor]  # (model input, t, cond) -> out


@dataclass(frozen=True)
class SamplingOptions:
    """The stabilization options of the paper's method, shared by ``generate()``, the stream and the CLIs.

    ``None`` means "the model's default" (:class:`SamplingDefaults`); :meth:`resolved` fills those in and
    checks every value once.
    """

    bootstrap_steps: int | None = None  # first steps with the white bootstrap fill (default: the model's)
    bootstrap_mix_steps: float = 1.0  # steps over which the fill fades from white to the current latent
    centre_steps: int | None = None  # first steps with mask centring (default: bootstrap_steps)
    mask_type: str = "discrete"  # quantization of masks against noise levels (see semdraw.masks)
    cover_alpha: float | None = 0.3  # later brushes dim earlier ones by this factor (None: no occlusion)

    def resolved(self, defaults: SamplingDefaults) -> SamplingOptions:
        bootstrap = defaults.bootstrap_steps if self.bootstrap_steps is None else self.bootstrap_steps
        out = replace(self, bootstrap_steps=bootstrap,
                      centre_steps=bootstrap if self.centre_steps is None else self.centre_steps)  # fmt: skip
        out.check()
        return out

    def check(self) -> None:
        """Clear errors for bad values (``None`` counts as unresolved and passes)."""
        for name in ("bootstrap_steps", "centre_steps"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                raise ConfigError(f"{name} must be an int >= 0, got {v!r}")
        if not self.bootstrap_mix_steps >= 0:
            raise ConfigError(f"bootstrap_mix_steps must be >= 0, got {self.bootstrap_mix_steps}")
        if self.mask_type not in M.MASK_TYPES:
            raise ConfigError(f"mask_type must be one of {M.MASK_TYPES}, got {self.mask_type!r}")
        if self.cover_alpha is not None and not 0 <= self.cover_alpha <= 1:
            raise ConfigError(f"cover_alpha must lie in [0, 1] or be None, got {self.cover_alpha}")

    def white_share(self, k: int) -> float:
        """r_k: how much white (vs the current latent) the bootstrap fill holds at step k."""
        return min(1.0, max(0.0, self.bootstrap_mix_steps - k))


def bootstrap_fill(x: torch.Tensor, white: torch.Tensor, z: torch.Tensor, k: S.Step, sched: S.SamplerSchedule,
                   r: float | torch.Tensor) -> torch.Tensor:  # fmt: skip
    """b_k = r·q(white, z, k) + (1 − r)·x: what a brush sees outside its mask during bootstrapping."""
    return r * S.add_noise(white, z, k, sched) + (1 - r) * x


def masked_input(x: torch.Tensor, mask: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """M·x + (1 − M)·fill."""
    return mask * x + (1 - mask) * fill


def guide(pred: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance over a [negative; positive] batch: ε_neg + w·(ε_pos − ε_neg)."""
    uncond, cond = pred.chunk(2)
    return uncond + scale * (cond - uncond)


def denoise(predict: Predict, x: torch.Tensor, k: S.Step, sched: S.SamplerSchedule, t: torch.Tensor,
            cond: Conditioning, guidance_scale: float) -> torch.Tensor:  # fmt: skip
    """D for rows x (inputs before c_in) at step(s) k with timesteps t [B]: one denoiser call.

    With ``guidance_scale > 1`` ``cond`` holds 2B rows, [negative; positive], and the batch is doubled.
    """
    inp = S.model_input(x, k, sched)
    if guidance_scale > 1:
        inp, t = torch.cat([inp, inp]), torch.cat([t, t])
    pred = predict(inp, t, cond).to(device=x.device, dtype=x.dtype)
    if guidance_scale > 1:
        pred = guide(pred, guidance_scale)
    return S.deterministic_update(x, pred, k, sched)


def add_known(num: torch.Tensor, den: torch.Tensor, weight: torch.Tensor, known: torch.Tensor, z: torch.Tensor,
              k: S.Step, sched: S.SamplerSchedule) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """A known clean background (white or an image) joins the average as the D it would have."""
    return num + weight * S.known_target(known, z, k, sched), den + weight
