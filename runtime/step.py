"""The one sampling step of region-based generation, as pure row-batched functions.

``generate()`` (items = tile × layer) and :class:`semdraw.Stream` (rows = step × slot) both run step k as:

1. **layer inputs** — during the bootstrap steps a brush row sees, outside its quantized mask M, the
   bootstrap fill b_k = r_k·q(w, z, k) + (1 − r_k)·x_k (q: the forward process, w: the white latent,
   r_k: how much white, from ``bootstrap_mix_steps``): input = M·x + (1 − M)·b_k; during the centring
   steps the input is shifted so its mask is centred (and the output shifted back);
2. **denoise** — one denoiser batch; with guidance w > 1, out = out_neg + w·(out_pos − out_neg), where
   out_neg is a real negative pass (the rows run twice, ``full``), or for the *residual* modes
   (StreamDiffusion's RCFG, ``self`` / ``initialize``) the virtual negative of the residual noise ε̄ each
   image carries: out_neg = the output meaning noise ε̄ in x (:class:`Guidance`); then the
   deterministic part D of the sampler step;
3. **aggregate** — Σ M·D (+ the known background's target under its weight, :func:`add_known`), divided
   by Σ M (:func:`semdraw.masks.normalize`; latent pre-averaging: before any noise is added);
4. **advance** — the averaged D gets the next level's noise (:func:`semdraw.sampling.renoise`). In the
   residual modes the noise part n = level_z·ε̄ of each image advances alongside: the same step applied
   to n with the guided output, D(n, out), averaged under the same masks and renoised with the same z:
   ε̄_{k+1} = renoise(avg D(n_k, out), z_{k+1}) / level_z[k+1]. For LCM with ε-prediction this is
   StreamDiffusion's update ε̄_{k+1} = z_{k+1} + (√ᾱ_{k+1}/√(1−ᾱ_{k+1}))·D_k(√(1−ᾱ_k)·ε̄_k, ε̂_k).

Only the bookkeeping differs between the two callers (tiles and the ring of images in flight); every
formula above lives here once. :class:`SamplingOptions` is the one checked set of options both take.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from . import masks as M
from . import sampling as S
from .choices import CFG_MODES
from .conditioning import Conditioning
from .errors import ConfigError
from .families import SamplingDefaults

Predict = Callable[[torch.Tensor, torch.Tensor, Conditioning], torch.Tensor]  # (model input, t, cond) -> out


@dataclass(frozen=True)
class Guidance:
    """A classifier-free guidance mode: which steps run a real negative pass, and what the others use.

    ``none``: no guidance (w = 1). ``full``: a negative pass for every row (2N rows per step). ``self``
    (StreamDiffusion's self-negative RCFG): no negative pass; the virtual negative of the residual noise,
    which starts as the image's initial noise z_0 (N rows). ``initialize`` (onetime-negative RCFG): a real
    negative pass at the first step only, which also sets the residual noise (N + rows of step 0).
    """

    name: str
    negative_steps: int | None  # the first steps with a real negative pass (None: every step)
    residual: bool  # the steps without one take the residual noise's virtual negative

    def negative_at(self, k: int, steps: int) -> bool:
        return k < (steps if self.negative_steps is None else self.negative_steps)

    @property
    def guided(self) -> bool:
        return self.residual or self.negative_steps != 0


GUIDANCE_MODES = {g.name: g for g in (
    Guidance("none", 0, False), Guidance("full", None, False), Guidance("self", 0, True), Guidance("initialize", 1, True),
)}  # fmt: skip


assert tuple(GUIDANCE_MODES) == CFG_MODES, "the guidance modes are named once, in semdraw.choices"


GUIDED_DEFAULT_SCALE = 2.0  # w of a guided mode when none is given (a distilled model wants little)


def resolve_guidance(cfg: str | None, guidance_scale: float | None,
                     default_scale: float = 1.0) -> tuple[Guidance, float]:  # fmt: skip
    """The one guidance rule of ``generate()``, the stream and the tools: the mode and scale w.

    w left out: 2 for a guided ``cfg`` (:data:`GUIDED_DEFAULT_SCALE`), 1 for ``none``, ``default_scale``
    (the family's) when ``cfg`` is left out too. ``cfg`` left out: ``full`` when w > 1, else ``none``.
    A guided mode needs w > 1 and ``none`` needs w = 1."""
    if guidance_scale is None:
        guidance_scale = default_scale if cfg is None else (GUIDED_DEFAULT_SCALE if guidance_mode(cfg).guided else 1.0)
    w = float(guidance_scale)
    if not w >= 1:
        raise ConfigError(f"guidance_scale must be >= 1 (1 = no guidance), got {guidance_scale}")
    mode = guidance_mode(cfg or ("full" if w > 1 else "none"))
    if mode.guided and not w > 1:
        raise ConfigError(f"cfg={mode.name!r} needs guidance_scale > 1, got {w}")
    if not mode.guided and w != 1:
        raise ConfigError("guidance_scale needs cfg='full', 'self' or 'initialize' (cfg='none' runs no negative pass)")
    return mode, w


def guidance_mode(name: str) -> Guidance:
    if name not in GUIDANCE_MODES:
        raise ConfigError(f"cfg must be one of {tuple(GUIDANCE_MODES)}, got {name!r}")
    return GUIDANCE_MODES[name]


@dataclass(frozen=True)
class SamplingOptions:
    """The stabilization options of the paper's method, shared by ``generate()``, the stream and the CLIs.

    ``None`` means "the model's default" (:class:`SamplingDefaults`); :meth:`resolved` fills those in and
    checks every value once.
    """

    bootstrap_steps: int | None = None  # first steps with the white bootstrap fill (default: the model's)
    bootstrap_mix_steps: float | None = None  # steps over which the fill fades to the current latent (default: the model's)
    centre_steps: int | None = None  # first steps with mask centring (default: bootstrap_steps)
    mask_type: str = "discrete"  # quantization of masks against noise levels (see semdraw.masks)
    cover_alpha: float | None = 0.3  # later brushes dim earlier ones by this factor (None: no occlusion)

    def resolved(self, defaults: SamplingDefaults) -> SamplingOptions:
        bootstrap = defaults.bootstrap_steps if self.bootstrap_steps is None else self.bootstrap_steps
        mix = defaults.bootstrap_mix_steps if self.bootstrap_mix_steps is None else self.bootstrap_mix_steps
        out = replace(self, bootstrap_steps=bootstrap, bootstrap_mix_steps=float(mix),
                      centre_steps=bootstrap if self.centre_steps is None else self.centre_steps)  # fmt: skip
        out.check()
        return out

    def check(self) -> None:
        """Clear errors for bad values (``None`` counts as unresolved and passes)."""
        for name in ("bootstrap_steps", "centre_steps"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                raise ConfigError(f"{name} must be an int >= 0, got {v!r}")
        if self.bootstrap_mix_steps is not None and not self.bootstrap_mix_steps >= 0:
            raise ConfigError(f"bootstrap_mix_steps must be >= 0, got {self.bootstrap_mix_steps}")
        if self.mask_type not in M.MASK_TYPES:
            raise ConfigError(f"mask_type must be one of {M.MASK_TYPES}, got {self.mask_type!r}")
        if self.cover_alpha is not None and not 0 <= self.cover_alpha <= 1:
            raise ConfigError(f"cover_alpha must lie in [0, 1] or be None, got {self.cover_alpha}")

    def white_share(self, k: int) -> float:
        """r_k: how much white (vs the current latent) the bootstrap fill holds at step k."""
        assert self.bootstrap_mix_steps is not None, "resolve the options against the model's defaults first"
        return min(1.0, max(0.0, self.bootstrap_mix_steps - k))


def bootstrap_fill(x: torch.Tensor, white: torch.Tensor, z: torch.Tensor, k: S.Step, sched: S.SamplerSchedule,
                   r: float | torch.Tensor) -> torch.Tensor:  # fmt: skip
    """b_k = r·q(white, z, k) + (1 − r)·x: what a brush sees outside its mask during bootstrapping."""
    return r * S.add_noise(white, z, k, sched) + (1 - r) * x


def masked_input(x: torch.Tensor, mask: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """M·x + (1 − M)·fill."""
    return mask * x + (1 - mask) * fill


def guide(negative: torch.Tensor, positive: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: out_neg + w·(out_pos − out_neg)."""
    return negative + scale * (positive - negative)


def virtual_negative(x: torch.Tensor, n: torch.Tensor, k: S.Step, sched: S.SamplerSchedule,
                     positive: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """RCFG's negative output: what the model would output if the noise in x were the residual noise
    ε̄ = n / level_z (n: the noise part the image carries). Where the noise alone fixes no output (a flow
    model at σ = 1: x is all noise, the velocity ε − x0 is unknown) it is ``positive``: no guidance there."""
    determined = S.gather(sched.eps_out, k, x) != 0
    eps_bar = n / S.gather(sched.level_z, k, n)
    return torch.where(determined, S.output_for_noise(x, eps_bar, k, sched), positive)


def initial_residual(z: torch.Tensor, sched: S.SamplerSchedule) -> torch.Tensor:
    """``self``'s residual at the first step: the noise part of the initial latent, level_z[0]·z0."""
    return S.gather(sched.level_z, 0, z) * z


def add_known_residual(num_n: torch.Tensor, weight: torch.Tensor, z: torch.Tensor, k: S.Step,
                       sched: S.SamplerSchedule) -> torch.Tensor:  # fmt: skip
    """The residual's share of a known clean background (:func:`add_known`): only its noise part, the target
    of a zero clean latent with noise z. The residual is averaged with the latent's weights (its den)."""
    return num_n + weight * S.known_target(torch.zeros_like(z), z, k, sched)


def noise_part(x: torch.Tensor, out: torch.Tensor, k: S.Step, sched: S.SamplerSchedule) -> torch.Tensor:
    """n = level_z·ε̂: the noise part of x that a model output implies (``initialize`` sets the residual so)."""
    return S.gather(sched.level_z, k, x) * S.noise_estimate(x, out, k, sched)


def _pick(k: S.Step, rows: torch.Tensor) -> S.Step:
    return k if isinstance(k, int) else k.index_select(0, rows.to(k.device))


def denoiser_inputs(x: torch.Tensor, k: S.Step, sched: S.SamplerSchedule, t: torch.Tensor,
                    negative_rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Phase 1 of :func:`denoise`: the model inputs and timesteps of rows x (before c_in) at step(s) k, the
    rows with a real negative pass first (``negative_rows``), then every row."""
    inp = S.model_input(x, k, sched)
    if negative_rows is not None and len(negative_rows):
        return torch.cat([inp.index_select(0, negative_rows), inp]), torch.cat([t.index_select(0, negative_rows), t])
    return inp, t


def denoiser_outputs(pred: torch.Tensor, x: torch.Tensor, k: S.Step, sched: S.SamplerSchedule,
                     guidance_scale: float, *, negative_rows: torch.Tensor | None = None,
                     residual: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """Phase 2 of :func:`denoise`: D of rows x from the denoiser's prediction for :func:`denoiser_inputs`, and
    with ``residual`` D(n, out), the residual's step (else None)."""
    neg = negative_rows if negative_rows is not None and len(negative_rows) else None
    pred = pred.to(device=x.device, dtype=x.dtype)
    m = 0 if neg is None else len(neg)
    out = positive = pred[m:]
    if guidance_scale > 1:
        if residual is None:  # full CFG: every row ran its negative pass
            negative = pred[:m]
        else:
            negative = virtual_negative(x, residual, k, sched, positive)
            if neg is not None:  # initialize: these rows' real negative pass sets their residual too
                negative = negative.index_copy(0, neg, pred[:m])
                residual = residual.index_copy(0, neg, noise_part(x.index_select(0, neg), pred[:m], _pick(k, neg), sched))
        out = guide(negative, positive, guidance_scale)
    d = S.deterministic_update(x, out, k, sched)
    return d, None if residual is None else S.deterministic_update(residual, out, k, sched)


def denoise(predict: Predict, x: torch.Tensor, k: S.Step, sched: S.SamplerSchedule, t: torch.Tensor,
            cond: Conditioning, guidance_scale: float, *, negative_rows: torch.Tensor | None = None,
            residual: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """D for rows x (inputs before c_in) at step(s) k with timesteps t [B], in one denoiser call; and, with
    ``residual`` (the rows' noise parts n), D(n, out), the residual's step (else None).

    ``negative_rows``: the rows that also run a real negative pass; ``cond`` then holds their negative
    conditioning first, then every row's positive one. The other rows of a guided step take the virtual
    negative of ``residual`` (RCFG); a row with a real negative pass and a residual gets its noise part
    from that pass (``initialize``). With ``guidance_scale == 1`` only positive rows run.

    Two phases (:func:`denoiser_inputs`, then :func:`denoiser_outputs`) so that a caller can gather the
    rows of several streams into one denoiser call between them (:class:`semdraw.StreamHost`).
    """
    inp, t_in = denoiser_inputs(x, k, sched, t, negative_rows)
    pred = predict(inp, t_in, cond)
    return denoiser_outputs(pred, x, k, sched, guidance_scale, negative_rows=negative_rows, residual=residual)


def add_known(num: torch.Tensor, den: torch.Tensor, weight: torch.Tensor, known: torch.Tensor, z: torch.Tensor,
              k: S.Step, sched: S.SamplerSchedule) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """A known clean background (white or an image) joins the average as the D it would have."""
    return num + weight * S.known_target(known, z, k, sched), den + weight
