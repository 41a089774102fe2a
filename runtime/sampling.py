"""Few-step sampler math as pure, batch-vectorised functions.

Every sampler we support (LCM, DDIM with eta=0, Euler with trailing spacing, TCD, flow-matching Euler) is,
for a fixed step k, *linear* in the current latent ``x`` and the model output ``out``. So a sampler is
nothing but a table of per-step coefficients (:class:`SamplerSchedule`), and sampling is four one-line
functions that gather those coefficients per batch item. That is what lets one denoiser call carry items
at different steps (the stream batch) and what makes latent pre-averaging a one-liner.

Each step is split the way the paper needs it:

* ``deterministic_update(x, out, k)`` -> D: for LCM (and stochastic flow sampling) the clean estimate
  x̂0; for the ODE samplers (DDIM, Euler, flow Euler) the whole deterministic update to step k+1.
  Layers are averaged *here*, before any noise is added (latent pre-averaging).
* ``renoise(D, z, k)`` -> x_{k+1}: adds fresh noise z for LCM; the identity for ODE samplers.

Coefficients are built *from* a diffusers scheduler (its config and its ``set_timesteps``), never by
stepping it; ``tests/test_sampling.py`` proves every table equal to the scheduler's own ``step()``.

Notation: T steps, k = 0..T-1, ᾱ = alphas_cumprod, a = sqrt(ᾱ), s = sqrt(1 - ᾱ), σ = s / a (Euler),
σ (flow) = the flow-matching noise fraction. "Level" k is the noise level the latent at step k carries;
level T is clean.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch

from .errors import ConfigError
from .limits import check_steps

Step = int | torch.Tensor  # one step index for the whole batch, or a LongTensor[B] with one per item


@dataclass(frozen=True)
class SamplerSchedule:
    """Per-step coefficient table of one sampler with one chosen timestep schedule.

    All tensors are 1-D. Per-step tensors have length T; ``level_*`` have length T+1 (index T = clean).
    """

    kind: str
    prediction_type: str
    timesteps: torch.Tensor  # [T] value fed to the denoiser as its timestep
    noise_level: torch.Tensor  # [T] n_k in [0, 1], for mask quantization (n_k = sqrt(1-ᾱ) or flow σ)
    c_in: torch.Tensor  # [T] model input = c_in * x
    det_x: torch.Tensor  # [T] D = det_x * x + det_out * out
    det_out: torch.Tensor
    x0_x: torch.Tensor  # [T] x̂0 = x0_x * x + x0_out * out
    x0_out: torch.Tensor
    eps_x: torch.Tensor  # [T] the noise estimate ε̂ = eps_x * x + eps_out * out, where x = level_x0·x0 + level_z·ε
    eps_out: torch.Tensor
    renoise_d: torch.Tensor  # [T] x_{k+1} = renoise_d * D + renoise_z * z
    renoise_z: torch.Tensor
    level_x0: torch.Tensor  # [T+1] latent at level k for a known clean x0: level_x0 * x0 + level_z * z
    level_z: torch.Tensor
    target_x0: torch.Tensor  # [T] what D is for a perfectly known clean x0 with noise z
    target_z: torch.Tensor
    init_noise_sigma: float  # x at step 0 = init_noise_sigma * z (as diffusers pipelines start)
    stochastic: bool  # True when renoise consumes fresh noise (LCM; flow with stochastic_sampling)

    @property
    def steps(self) -> int:
        return int(self.timesteps.shape[0])

    def draws_noise(self, k: int) -> bool:
        """Whether renoising after step k consumes a fresh noise draw (never after the last step)."""
        return self.stochastic and k < self.steps - 1

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> SamplerSchedule:
        """The same table on another device / float dtype (timesteps keep their dtype)."""
        moved: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                keep_dtype = f.name == "timesteps" or dtype is None
                value = value.to(device=device, dtype=None if keep_dtype else dtype)
            moved[f.name] = value
        return SamplerSchedule(**moved)


def gather(coef: torch.Tensor, k: Step, like: torch.Tensor) -> torch.Tensor:
    """coef[k] shaped to broadcast over ``like`` ([B, C, H, W]); k is an int or LongTensor[B]."""
    if isinstance(k, int):
        return coef[k].to(like.dtype)
    return coef[k.to(coef.device)].to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


def model_input(x: torch.Tensor, k: Step, s: SamplerSchedule) -> torch.Tensor:
    """The denoiser's input for latent x at step k (Euler scales by 1/sqrt(σ²+1); others pass through)."""
    return x * gather(s.c_in, k, x)


def deterministic_update(x: torch.Tensor, out: torch.Tensor, k: Step, s: SamplerSchedule) -> torch.Tensor:
    """D_k(x, out): the noise-free part of step k (x̂0 for LCM; x_{k+1} for ODE samplers)."""
    return gather(s.det_x, k, x) * x + gather(s.det_out, k, x) * out


def predict_x0(x: torch.Tensor, out: torch.Tensor, k: Step, s: SamplerSchedule) -> torch.Tensor:
    """x̂0: the clean-latent estimate at step k (for previews and the bootstrap)."""
    return gather(s.x0_x, k, x) * x + gather(s.x0_out, k, x) * out


def noise_estimate(x: torch.Tensor, out: torch.Tensor, k: Step, s: SamplerSchedule) -> torch.Tensor:
    """ε̂: the noise the model sees in x at step k (x = level_x0·x0 + level_z·ε), whatever it predicts."""
    return gather(s.eps_x, k, x) * x + gather(s.eps_out, k, x) * out


def output_for_noise(x: torch.Tensor, eps: torch.Tensor, k: Step, s: SamplerSchedule) -> torch.Tensor:
    """The model output that would mean noise ``eps`` in x at step k: the inverse of :func:`noise_estimate`
    (undefined where eps_out is 0: a flow model at σ = 1)."""
    return (eps - gather(s.eps_x, k, x) * x) / gather(s.eps_out, k, x)


def renoise(d: torch.Tensor, z: torch.Tensor | None, k: Step, s: SamplerSchedule) -> torch.Tensor:
    """x_{k+1} from the (averaged) deterministic update D and fresh noise z (ignored by ODE samplers)."""
    out = gather(s.renoise_d, k, d) * d
    if z is None:
        return out
    return out + gather(s.renoise_z, k, d) * z


def add_noise(x0: torch.Tensor, z: torch.Tensor, level: Step, s: SamplerSchedule) -> torch.Tensor:
    """The forward process: a clean latent x0 noised with z to the level of step ``level`` (T = clean)."""
    return gather(s.level_x0, level, x0) * x0 + gather(s.level_z, level, x0) * z


def known_target(x0: torch.Tensor, z: torch.Tensor, k: Step, s: SamplerSchedule) -> torch.Tensor:
    """What D_k would be for a layer whose clean latent x0 is known exactly (background image, white)."""
    return gather(s.target_x0, k, x0) * x0 + gather(s.target_z, k, x0) * z


# --------------------------------------------------------------------------------------------------
# Building tables from diffusers schedulers
# --------------------------------------------------------------------------------------------------

_F64 = torch.float64


def _ddpm_x0_eps(prediction_type: str, a: torch.Tensor, s: torch.Tensor):
    """(x0_x, x0_out), (eps_x, eps_out) for a variance-preserving latent x = a·x0 + s·ε."""
    if prediction_type == "epsilon":
        return (1 / a, -s / a), (torch.zeros_like(a), torch.ones_like(a))
    if prediction_type == "v_prediction":
        return (a, -s), (s, a)
    if prediction_type == "sample":
        return (torch.zeros_like(a), torch.ones_like(a)), (1 / s, -a / s)
    raise ConfigError(
        f"prediction type {prediction_type!r} is not one of 'epsilon', 'v_prediction', 'sample'"
    )


def _check_no_clipping(config: Any) -> None:
    if getattr(config, "thresholding", False) or getattr(config, "clip_sample", False):
        raise ConfigError(
            "the scheduler config enables clip_sample or thresholding, which few-step latent samplers do not use; "
            "set clip_sample=False and thresholding=False in the scheduler config"
        )


def _alphas(scheduler: Any, timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    abar = scheduler.alphas_cumprod.to(_F64)[timesteps.long()]
    return abar.sqrt(), (1 - abar).sqrt()


def _finish(kind: str, prediction_type: str, **coefs: Any) -> SamplerSchedule:
    tensors = {
        k: (v.to(torch.float32) if isinstance(v, torch.Tensor) and k != "timesteps" else v)
        for k, v in coefs.items()
    }
    return SamplerSchedule(kind=kind, prediction_type=prediction_type, **tensors)


def _lcm_table(scheduler: Any) -> SamplerSchedule:
    cfg = scheduler.config
    _check_no_clipping(cfg)
    ts = scheduler.timesteps.clone()
    T = len(ts)
    a, s = _alphas(scheduler, ts)
    (x0x, x0o), (ex, eo) = _ddpm_x0_eps(cfg.prediction_type, a, s)
    # Boundary-condition scalings of consistency models: D = c_out·x̂0 + c_skip·x.
    scaled_t = ts.to(_F64) * cfg.timestep_scaling
    sigma_data = 0.5
    c_skip = sigma_data**2 / (scaled_t**2 + sigma_data**2)
    c_out = scaled_t / (scaled_t**2 + sigma_data**2).sqrt()
    det_x, det_out = c_out * x0x + c_skip, c_out * x0o
    a_next = torch.cat([a[1:], torch.ones(1, dtype=_F64)])
    s_next = torch.cat([s[1:], torch.zeros(1, dtype=_F64)])
    ones, zeros = torch.ones(T, dtype=_F64), torch.zeros(T, dtype=_F64)
    return _finish(
        "lcm", cfg.prediction_type, timesteps=ts, noise_level=s, c_in=ones,
        det_x=det_x, det_out=det_out, x0_x=det_x, x0_out=det_out, eps_x=ex, eps_out=eo,
        renoise_d=a_next, renoise_z=s_next,
        level_x0=torch.cat([a, torch.ones(1, dtype=_F64)]), level_z=torch.cat([s, torch.zeros(1, dtype=_F64)]),
        target_x0=ones, target_z=zeros, init_noise_sigma=float(scheduler.init_noise_sigma), stochastic=True,
    )  # fmt: skip


def _ddim_table(scheduler: Any) -> SamplerSchedule:
    cfg = scheduler.config
    _check_no_clipping(cfg)
    ts = scheduler.timesteps.clone()
    T = len(ts)
    a, s = _alphas(scheduler, ts)
    (x0x, x0o), (ex, eo) = _ddpm_x0_eps(cfg.prediction_type, a, s)
    # diffusers' DDIM steps to t - N_train // N (below 0: final_alpha_cumprod). That is the next timestep of
    # its own spacings, but not of a custom list, where we step to the next listed timestep instead.
    final = float(scheduler.final_alpha_cumprod)
    if getattr(scheduler, "semdraw_custom_timesteps", False):
        prev = torch.cat([ts[1:], torch.tensor([-1])])
    else:
        prev = ts - cfg.num_train_timesteps // T
    abar = scheduler.alphas_cumprod.to(_F64)
    abar_next = torch.where(prev >= 0, abar[prev.clamp(min=0)], torch.tensor(final, dtype=_F64))
    a_n, s_n = abar_next.sqrt(), (1 - abar_next).sqrt()
    ones, zeros = torch.ones(T, dtype=_F64), torch.zeros(T, dtype=_F64)
    return _finish(
        "ddim", cfg.prediction_type, timesteps=ts, noise_level=s, c_in=ones,
        det_x=a_n * x0x + s_n * ex, det_out=a_n * x0o + s_n * eo, x0_x=x0x, x0_out=x0o, eps_x=ex, eps_out=eo,
        renoise_d=ones, renoise_z=zeros,
        level_x0=torch.cat([a, a_n[-1:]]), level_z=torch.cat([s, s_n[-1:]]),
        target_x0=a_n, target_z=s_n, init_noise_sigma=float(scheduler.init_noise_sigma), stochastic=False,
    )  # fmt: skip


def _euler_table(scheduler: Any) -> SamplerSchedule:
    """Euler discrete in σ-space (x = x0 + σ·ε, model sees x / sqrt(σ²+1)); s_churn = 0."""
    cfg = scheduler.config
    ts = scheduler.timesteps.clone()
    T = len(ts)
    sig = scheduler.sigmas.to(_F64)  # [T+1], last = 0
    sigma, sigma_next = sig[:-1], sig[1:]
    if cfg.prediction_type == "epsilon":
        x0x, x0o = torch.ones(T, dtype=_F64), -sigma
    elif cfg.prediction_type == "v_prediction":
        x0x, x0o = 1 / (sigma**2 + 1), -sigma / (sigma**2 + 1).sqrt()
    elif cfg.prediction_type == "sample":
        x0x, x0o = torch.zeros(T, dtype=_F64), torch.ones(T, dtype=_F64)
    else:
        raise ConfigError(f"prediction type {cfg.prediction_type!r} is not supported by Euler")
    dt_over_sigma = (sigma_next - sigma) / sigma  # derivative = (x - x̂0) / σ
    ones, zeros = torch.ones(T, dtype=_F64), torch.zeros(T, dtype=_F64)
    return _finish(
        "euler", cfg.prediction_type, timesteps=ts, noise_level=sigma / (sigma**2 + 1).sqrt(),
        c_in=1 / (sigma**2 + 1).sqrt(),
        det_x=1 + dt_over_sigma * (1 - x0x), det_out=-dt_over_sigma * x0o, x0_x=x0x, x0_out=x0o,
        eps_x=(1 - x0x) / sigma, eps_out=-x0o / sigma,  # ε = (x - x̂0) / σ in σ-space
        renoise_d=ones, renoise_z=zeros,
        level_x0=torch.ones(T + 1, dtype=_F64), level_z=sig,
        target_x0=ones, target_z=sigma_next, init_noise_sigma=float(scheduler.init_noise_sigma), stochastic=False,
    )  # fmt: skip


def _flow_table(scheduler: Any) -> SamplerSchedule:
    """Flow-matching Euler: x = (1-σ)·x0 + σ·ε, the model predicts the velocity v = ε - x0."""
    cfg = scheduler.config
    ts = scheduler.timesteps.clone()
    T = len(ts)
    sig = scheduler.sigmas.to(_F64)
    sigma, sigma_next = sig[:-1], sig[1:]
    ones, zeros = torch.ones(T, dtype=_F64), torch.zeros(T, dtype=_F64)
    x0x, x0o = ones, -sigma
    if cfg.stochastic_sampling:  # D = x̂0, then renoise to σ_next with fresh noise (as diffusers does)
        det = dict(det_x=x0x, det_out=x0o, renoise_d=1 - sigma_next, renoise_z=sigma_next,
                   target_x0=ones, target_z=zeros)  # fmt: skip
    else:
        det = dict(det_x=ones, det_out=sigma_next - sigma, renoise_d=ones, renoise_z=zeros,
                   target_x0=1 - sigma_next, target_z=sigma_next)  # fmt: skip
    return _finish(
        "flow", "flow", timesteps=ts, noise_level=sigma, c_in=ones, x0_x=x0x, x0_out=x0o,
        eps_x=ones, eps_out=1 - sigma,  # ε = x + (1 - σ)·v
        level_x0=1 - sig, level_z=sig, init_noise_sigma=1.0,
        stochastic=bool(cfg.stochastic_sampling), **det,
    )  # fmt: skip


def _tcd_table(scheduler: Any, eta: float = 0.3) -> SamplerSchedule:
    """TCD (Hyper-SD's unified LoRA, TCD LoRAs): step to the noised estimate at s = ⌊(1 − η)·t_prev⌋,
    D = sqrt(ᾱ_s)·x̂0 + sqrt(1 − ᾱ_s)·ε̂, then (η > 0, not the last step) renoise to t_prev:
    x = sqrt(ᾱ_prev / ᾱ_s)·D + sqrt(1 − ᾱ_prev / ᾱ_s)·z. η is diffusers' ``step(eta=...)`` (γ in the paper)."""
    cfg = scheduler.config
    _check_no_clipping(cfg)
    if not 0 <= eta <= 1:
        raise ConfigError(f"TCD's eta (gamma) must lie in [0, 1], got {eta}")
    ts = scheduler.timesteps.clone()
    T = len(ts)
    a, s = _alphas(scheduler, ts)
    (x0x, x0o), (ex, eo) = _ddpm_x0_eps(cfg.prediction_type, a, s)
    prev = torch.cat([ts[1:], torch.zeros(1, dtype=ts.dtype)]).long()  # diffusers: 0 after the last step
    abar = scheduler.alphas_cumprod.to(_F64)
    ab_s, ab_prev = abar[torch.floor((1 - eta) * prev.to(_F64)).long()], abar[prev]
    a_s, s_s = ab_s.sqrt(), (1 - ab_s).sqrt()
    stochastic = eta > 0 and T > 1
    last = torch.arange(T) == T - 1
    ratio = torch.where(last | (not stochastic), torch.ones(T, dtype=_F64), ab_prev / ab_s)
    return _finish(
        "tcd", cfg.prediction_type, timesteps=ts, noise_level=s, c_in=torch.ones(T, dtype=_F64),
        det_x=a_s * x0x + s_s * ex, det_out=a_s * x0o + s_s * eo, x0_x=x0x, x0_out=x0o, eps_x=ex, eps_out=eo,
        renoise_d=ratio.sqrt(), renoise_z=(1 - ratio).sqrt(),
        level_x0=torch.cat([a, a_s[-1:]]), level_z=torch.cat([s, s_s[-1:]]),
        target_x0=a_s, target_z=s_s, init_noise_sigma=float(scheduler.init_noise_sigma), stochastic=stochastic,
    )  # fmt: skip


@dataclass(frozen=True)
class SamplerKind:
    """How to get a timestep schedule from diffusers and turn it into our coefficient table."""

    scheduler_class: str  # the diffusers class whose config and set_timesteps define the schedule
    table: Callable[..., SamplerSchedule]  # (scheduler, **sampler params) -> table
    config_overrides: dict[str, Any]
    sigma_timesteps: bool = False  # timesteps are σ·N_train in [0, N_train] (flow), not indices in [0, N_train)


SAMPLERS: dict[str, SamplerKind] = {
    "lcm": SamplerKind("LCMScheduler", _lcm_table, {}),
    "ddim": SamplerKind("DDIMScheduler", _ddim_table, {}),
    "euler": SamplerKind("EulerDiscreteScheduler", _euler_table, {"timestep_spacing": "trailing"}),
    "flow": SamplerKind("FlowMatchEulerDiscreteScheduler", _flow_table, {}, sigma_timesteps=True),
    "tcd": SamplerKind("TCDScheduler", _tcd_table, {}),
}

SCHEDULER_CLASS_TO_KIND = {v.scheduler_class: k for k, v in SAMPLERS.items()}


def make_scheduler(kind: str, config: Any) -> Any:
    """A diffusers scheduler of the given sampler kind from any compatible scheduler config."""
    import diffusers

    if kind not in SAMPLERS:
        raise ConfigError(f"unknown sampler {kind!r}; choose one of {sorted(SAMPLERS)}")
    spec = SAMPLERS[kind]
    cls = getattr(diffusers, spec.scheduler_class)
    return cls.from_config(config, **spec.config_overrides)


def build_schedule(
    kind: str,
    scheduler_or_config: Any,
    *,
    steps: int | None = None,
    timesteps: Sequence[float] | None = None,
    **params: float,
) -> SamplerSchedule:
    """Coefficient table for ``kind`` from a diffusers scheduler (or its config) and a step choice.

    ``steps=N`` uses exactly the timesteps the diffusers scheduler picks in ``set_timesteps(N)``;
    ``timesteps=[...]`` overrides them (e.g. the official 5-step [999, 919, 759, 499, 259]). ``params``: the
    sampler's own step arguments (TCD: ``eta``).
    """
    if (steps is None) == (timesteps is None):
        raise ConfigError("pass exactly one of steps=N or timesteps=[...]")
    config = getattr(scheduler_or_config, "config", scheduler_or_config)
    if steps is not None:
        steps = check_steps(steps, int(config["num_train_timesteps"]))
    scheduler = make_scheduler(kind, config)
    if timesteps is not None:
        ts = [float(t) for t in timesteps]
        if not ts or any(b >= a for a, b in zip(ts, ts[1:], strict=False)):
            raise ConfigError(
                f"timesteps must be a non-empty, strictly decreasing list, got {list(timesteps)}"
            )
        n_train = scheduler.config.num_train_timesteps
        if ts[0] > n_train or (ts[0] == n_train and not SAMPLERS[kind].sigma_timesteps) or ts[-1] < 0:
            bound = f"[0, {n_train}]" if SAMPLERS[kind].sigma_timesteps else f"[0, {n_train})"
            raise ConfigError(f"timesteps must lie in {bound}, got {list(timesteps)}")
        if kind == "ddim":  # DDIMScheduler.set_timesteps takes no list: set it the way it would be set
            scheduler.set_timesteps(len(ts))
            scheduler.timesteps = torch.tensor([int(t) for t in ts], dtype=torch.long)
            scheduler.semdraw_custom_timesteps = True
        elif kind == "flow":  # it shifts the σ it is given: hand it the unshifted σ of each timestep
            shift = float(scheduler.config.shift)
            wanted = [t / n_train for t in ts]
            scheduler.set_timesteps(sigmas=[w / (shift - (shift - 1) * w) for w in wanted])
        else:
            with _quiet(scheduler):  # it warns on schedules not starting at 999: a choice, checked above
                scheduler.set_timesteps(timesteps=[int(t) for t in ts] if kind in ("lcm", "tcd") else ts)
    else:
        try:
            scheduler.set_timesteps(steps)
        except ValueError as err:  # e.g. LCM: no more steps than its original_inference_steps
            raise ConfigError(f"{steps} steps do not fit this sampler ({kind}): {err}") from None
    return SAMPLERS[kind].table(scheduler, **params)


@contextlib.contextmanager
def _quiet(scheduler: Any) -> Iterator[None]:
    """Silence the warnings of a diffusers scheduler's module logger for the duration."""
    logger = logging.getLogger(type(scheduler).__module__)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
