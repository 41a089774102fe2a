"""Oracle 1: our coefficient tables reproduce diffusers' schedulers' ``step()`` exactly."""

from __future__ import annotations

import diffusers
import pytest
import torch

from semdraw import sampling
from semdraw.errors import ConfigError

SD_CONFIG = dict(  # the SD1.5 scheduler config
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    clip_sample=False, set_alpha_to_one=False, steps_offset=1,
)  # fmt: skip

DDPM_CASES = [
    ("lcm", "LCMScheduler", {}),
    ("ddim", "DDIMScheduler", {}),
    ("ddim", "DDIMScheduler", {"timestep_spacing": "trailing"}),
    ("euler", "EulerDiscreteScheduler", {"timestep_spacing": "trailing"}),
]


def _reference_scheduler(cls_name: str, **config):
    return getattr(diffusers, cls_name).from_config(config)


def _run_reference(ref, x, outs, noises):
    """Step the diffusers scheduler through all steps; LCM's noise is injected through a patched randn."""
    xs, draws = [x], iter(noises)
    import diffusers.schedulers.scheduling_flow_match_euler_discrete as flow_mod
    import diffusers.schedulers.scheduling_lcm as lcm_mod

    saved = lcm_mod.randn_tensor, flow_mod.randn_tensor
    lcm_mod.randn_tensor = flow_mod.randn_tensor = lambda *a, **kw: next(draws)
    try:
        for i, t in enumerate(ref.timesteps):
            if hasattr(ref, "scale_model_input"):  # Euler warns without it; our c_in is checked separately
                ref.scale_model_input(xs[-1], t)
            xs.append(ref.step(outs[i], t, xs[-1]).prev_sample)
    finally:
        lcm_mod.randn_tensor, flow_mod.randn_tensor = saved
    return xs


def _run_ours(table: sampling.SamplerSchedule, x, outs, noises):
    xs, draws = [x], iter(noises)
    for k in range(table.steps):
        d = sampling.deterministic_update(xs[-1], outs[k], k, table)
        z = next(draws) if table.draws_noise(k) else None
        xs.append(sampling.renoise(d, z, k, table))
    return xs


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize(("kind", "cls_name", "extra"), DDPM_CASES)
@pytest.mark.parametrize("steps", [1, 4, 6])
def test_table_matches_diffusers_step(kind, cls_name, extra, prediction_type, steps):
    config = {**SD_CONFIG, **extra, "prediction_type": prediction_type}
    ref = _reference_scheduler(cls_name, **config)
    ref.set_timesteps(steps)
    table = sampling.build_schedule(kind, ref, steps=steps)
    assert torch.equal(table.timesteps.float(), ref.timesteps.float())

    g = torch.Generator().manual_seed(steps)
    x = torch.randn(3, 4, 8, 8, generator=g) * ref.init_noise_sigma
    outs = [torch.randn(3, 4, 8, 8, generator=g) for _ in range(steps)]
    noises = [torch.randn(3, 4, 8, 8, generator=g) for _ in range(steps)]
    assert table.init_noise_sigma == pytest.approx(float(ref.init_noise_sigma))

    ours, theirs = _run_ours(table, x, outs, noises), _run_reference(ref, x, outs, noises)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("stochastic", [False, True])
@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_flow_table_matches_diffusers_step(stochastic, shift):
    ref = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift, stochastic_sampling=stochastic)
    ref.set_timesteps(4)
    table = sampling.build_schedule("flow", ref, steps=4)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 8, 8, generator=g)
    outs = [torch.randn_like(x) for _ in range(4)]
    noises = [torch.randn_like(x) for _ in range(4)]
    for a, b in zip(_run_ours(table, x, outs, noises), _run_reference(ref, x, outs, noises), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_euler_model_input_scaling_matches_scale_model_input():
    ref = _reference_scheduler("EulerDiscreteScheduler", **SD_CONFIG, timestep_spacing="trailing")
    ref.set_timesteps(4)
    table = sampling.build_schedule("euler", ref, steps=4)
    x = torch.randn(1, 4, 4, 4)
    for k, t in enumerate(ref.timesteps):
        torch.testing.assert_close(sampling.model_input(x, k, table), ref.scale_model_input(x, t))
        ref._step_index = None  # scale_model_input looks the step up from t each time


def test_per_item_steps_equal_per_step_calls():
    """One batch carrying items at different steps (the stream batch) == separate per-step calls."""
    table = sampling.build_schedule("lcm", diffusers.LCMScheduler(**SD_CONFIG), steps=4)
    x, out, z = torch.randn(4, 4, 6, 6), torch.randn(4, 4, 6, 6), torch.randn(4, 4, 6, 6)
    k = torch.tensor([0, 1, 2, 3])
    d = sampling.deterministic_update(x, out, k, table)
    nxt = sampling.renoise(d, z, k, table)
    for i in range(4):
        di = sampling.deterministic_update(x[i : i + 1], out[i : i + 1], i, table)
        torch.testing.assert_close(d[i : i + 1], di)
        torch.testing.assert_close(nxt[i : i + 1], sampling.renoise(di, z[i : i + 1], i, table))


@pytest.mark.parametrize("kind", ["lcm", "ddim", "euler", "flow"])
def test_known_target_is_exact_for_a_perfect_model(kind):
    """If the model predicted a known x0 perfectly, D equals ``known_target`` (used for fixed backgrounds)."""
    cls_name = sampling.SAMPLERS[kind].scheduler_class
    config = SD_CONFIG if kind != "flow" else {}
    table = sampling.build_schedule(kind, _reference_scheduler(cls_name, **config), steps=4)
    x0, z = torch.randn(1, 4, 4, 4), torch.randn(1, 4, 4, 4)
    for k in range(4):
        x = sampling.add_noise(x0, z, k, table)
        # the perfect model output for this prediction type: solve x̂0(x, out) = x0 for out
        out = (x0 - table.x0_x[k] * x) / table.x0_out[k]
        torch.testing.assert_close(sampling.predict_x0(x, out, k, table), x0, rtol=1e-4, atol=1e-4)
        if kind != "lcm":  # LCM's c_skip makes D differ from x̂0 by design; its target is x̂0 itself
            d = sampling.deterministic_update(x, out, k, table)
            torch.testing.assert_close(d, sampling.known_target(x0, z, k, table), rtol=1e-4, atol=1e-4)


def test_noise_levels_decrease_and_lie_in_unit_interval():
    for kind in sampling.SAMPLERS:
        cls_name = sampling.SAMPLERS[kind].scheduler_class
        table = sampling.build_schedule(
            kind, _reference_scheduler(cls_name, **(SD_CONFIG if kind != "flow" else {})), steps=4
        )
        n = table.noise_level
        assert torch.all(n[:-1] > n[1:]) and n.max() <= 1 and n.min() > 0, kind


def test_custom_timesteps_and_bad_requests():
    table = sampling.build_schedule("lcm", SD_CONFIG, timesteps=[999, 919, 759, 499, 259])
    assert table.timesteps.tolist() == [999, 919, 759, 499, 259]
    with pytest.raises(ConfigError, match="exactly one"):
        sampling.build_schedule("lcm", SD_CONFIG)
    with pytest.raises(ConfigError, match="strictly decreasing"):
        sampling.build_schedule("lcm", SD_CONFIG, timesteps=[259, 999])
    with pytest.raises(ConfigError, match="unknown sampler"):
        sampling.build_schedule("dpm++", SD_CONFIG, steps=4)
    with pytest.raises(ConfigError, match="clip_sample"):
        sampling.build_schedule("ddim", {**SD_CONFIG, "clip_sample": True}, steps=4)


def test_sampling_options_resolve_against_the_model_defaults_and_check_once():
    from semdraw.families import SamplingDefaults
    from semdraw.step import SamplingOptions

    opts = SamplingOptions().resolved(SamplingDefaults(bootstrap_steps=2))
    assert (opts.bootstrap_steps, opts.centre_steps) == (2, 2)  # centring follows the bootstrap steps
    assert SamplingOptions(centre_steps=0).resolved(SamplingDefaults()).centre_steps == 0
    assert opts.bootstrap_mix_steps == 1.0  # the family default: white at the first step only
    mixed = SamplingDefaults(bootstrap_steps=2, bootstrap_mix_steps=2.0)
    assert [SamplingOptions().resolved(mixed).white_share(k) for k in range(3)] == [1.0, 1.0, 0.0]
    assert SamplingOptions(bootstrap_mix_steps=0.5).resolved(mixed).bootstrap_mix_steps == 0.5  # asked wins
    assert [SamplingOptions(bootstrap_mix_steps=1.5).white_share(k) for k in range(3)] == [1.0, 0.5, 0.0]
    for bad, match in (({"bootstrap_steps": -1}, "bootstrap_steps"), ({"centre_steps": 1.5}, "centre_steps"),
                       ({"mask_type": "soft"}, "mask_type"), ({"cover_alpha": 2}, "cover_alpha"),
                       ({"bootstrap_mix_steps": float("nan")}, "bootstrap_mix_steps")):  # fmt: skip
        with pytest.raises(ConfigError, match=match):
            SamplingOptions(**bad).resolved(SamplingDefaults())


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("eta", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("steps", [1, 4])
def test_tcd_table_matches_diffusers_step(prediction_type, eta, steps):
    """TCD (Hyper-SD's unified LoRA): diffusers' TCDScheduler.step(eta=...) with its own noise draws."""
    import diffusers.schedulers.scheduling_tcd as tcd_mod

    ref = diffusers.TCDScheduler.from_config({**SD_CONFIG, "prediction_type": prediction_type})
    ref.set_timesteps(steps)
    table = sampling.build_schedule("tcd", ref, steps=steps, eta=eta)
    assert torch.equal(table.timesteps.float(), ref.timesteps.float()) and table.stochastic == (eta > 0 and steps > 1)
    g = torch.Generator().manual_seed(steps)
    x = torch.randn(2, 4, 8, 8, generator=g)
    outs = [torch.randn(2, 4, 8, 8, generator=g) for _ in range(steps)]
    noises = [torch.randn(2, 4, 8, 8, generator=g) for _ in range(steps)]
    draws = iter(noises)
    saved = tcd_mod.randn_tensor
    tcd_mod.randn_tensor = lambda *a, **kw: next(draws)
    try:
        theirs = [x]
        for i, t in enumerate(ref.timesteps):
            theirs.append(ref.step(outs[i], t, theirs[-1], eta=eta).prev_sample)
    finally:
        tcd_mod.randn_tensor = saved
    ours = _run_ours(table, x, outs, noises)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("kind", "prediction_type"),  # flow models predict the velocity only
                         [(k, p) for k in ("lcm", "ddim", "euler", "tcd") for p in ("epsilon", "v_prediction", "sample")]
                         + [("flow", "velocity")])  # fmt: skip
def test_noise_estimate_is_the_noise_of_a_perfect_model(kind, prediction_type):
    """ε̂(x, out) recovers the noise z of x = level_x0·x0 + level_z·z when out is the perfect output for
    (x0, z), and output_for_noise inverts it (RCFG's virtual negative). The perfect output comes from the
    prediction type's definition (VP tables) or from the x̂0 tables proven against diffusers above."""
    cls_name = sampling.SAMPLERS[kind].scheduler_class
    config = {} if kind == "flow" else {**SD_CONFIG, "prediction_type": prediction_type}
    if kind == "euler":
        config["timestep_spacing"] = "trailing"
    table = sampling.build_schedule(kind, _reference_scheduler(cls_name, **config), steps=4)
    g = torch.Generator().manual_seed(1)
    x0, z = torch.randn(1, 4, 4, 4, generator=g), torch.randn(1, 4, 4, 4, generator=g)
    for k in range(4):
        x = sampling.add_noise(x0, z, k, table)
        a, s = table.level_x0[k], table.level_z[k]
        if kind in ("lcm", "tcd"):  # variance-preserving; their x̂0 tables hold LCM's / TCD's D instead
            out = {"epsilon": z, "v_prediction": a * z - s * x0, "sample": x0}[prediction_type]
        elif kind == "flow":
            out = z - x0  # the velocity
        else:
            out = (x0 - table.x0_x[k] * x) / table.x0_out[k]
        torch.testing.assert_close(sampling.noise_estimate(x, out, k, table), z, rtol=1e-4, atol=1e-4)
        if table.eps_out[k] == 0:  # flow at σ = 1: x is all noise, so no output follows from the noise alone
            from semdraw import step

            assert kind == "flow" and k == 0
            positive = torch.randn_like(x)
            torch.testing.assert_close(step.virtual_negative(x, z, k, table, positive), positive)
            continue
        torch.testing.assert_close(sampling.output_for_noise(x, z, k, table), out, rtol=1e-4, atol=1e-3)


def test_residual_cfg_is_streamdiffusions_update_for_lcm_with_epsilon():
    """The residual's step (step.py) written out as StreamDiffusion defines it for LCM and ε-prediction:
    ε̂ = ε̄ + w·(ε_c − ε̄); x̂0 = (x − √β·ε̂)/√α, D = c_out·x̂0 + c_skip·x;
    ε̄' = z' + (√α'/√β')·(c_out·(√β·ε̄ − √β·ε̂)/√α + c_skip·√β·ε̄)   (α = ᾱ_t, β = 1 − ᾱ_t; ' the next step)."""
    from semdraw import step

    ref = diffusers.LCMScheduler(**SD_CONFIG)
    ref.set_timesteps(4)
    table = sampling.build_schedule("lcm", ref, steps=4)
    g = torch.Generator().manual_seed(2)
    x, eps_bar, eps_c, z = (torch.randn(1, 4, 4, 4, generator=g) for _ in range(4))
    w = 2.5
    for k, t in enumerate(ref.timesteps[:-1]):
        abar = ref.alphas_cumprod[t].double()
        abar_next = ref.alphas_cumprod[ref.timesteps[k + 1]].double()
        c_skip, c_out = ref.get_scalings_for_boundary_condition_discrete(t)
        sa, sb, sa_n, sb_n = abar.sqrt(), (1 - abar).sqrt(), abar_next.sqrt(), (1 - abar_next).sqrt()
        eps_hat = eps_bar + w * (eps_c - eps_bar)
        d_expected = c_out * (x - sb * eps_hat) / sa + c_skip * x
        next_expected = z + sa_n / sb_n * (c_out * (sb * eps_bar - sb * eps_hat) / sa + c_skip * sb * eps_bar)

        n = sb.float() * eps_bar  # the noise part the image carries
        d, d_n = step.denoise(lambda inp, t_, cond: eps_c, x, k, table, t.expand(1), {}, w, residual=n)
        torch.testing.assert_close(d, d_expected.float(), rtol=1e-4, atol=1e-4)
        n_next = sampling.renoise(d_n, z, k, table)
        torch.testing.assert_close(n_next / table.level_z[k + 1], next_expected.float(), rtol=1e-4, atol=1e-4)


def test_initialize_takes_its_residual_from_the_real_negative_pass():
    """cfg="initialize" at its first step: a row with a real negative pass is guided by it (full CFG) and its
    residual becomes that pass's noise part, level_z·ε̂_neg."""
    from semdraw import step

    table = sampling.build_schedule("lcm", diffusers.LCMScheduler(**SD_CONFIG), steps=4)
    g = torch.Generator().manual_seed(3)
    x, eps_neg, eps_pos, n = (torch.randn(2, 4, 4, 4, generator=g) for _ in range(4))
    k = torch.tensor([0, 1])  # row 0 at the first step (negative pass), row 1 later (virtual negative)

    def predict(inp, t, cond):  # [negative rows; positive rows]
        assert inp.shape[0] == 3
        return torch.cat([eps_neg[:1], eps_pos])

    d, d_n = step.denoise(predict, x, k, table, torch.zeros(2), {}, 2.0, negative_rows=torch.tensor([0]), residual=n)

    # Expected values from the definitions, with LCM's coefficients from diffusers' scheduler:
    # guided ε̂ = ε_neg + w·(ε_pos − ε_neg); x̂0 = (x − √β·ε̂)/√α; D = c_out·x̂0 + c_skip·x.
    ref = diffusers.LCMScheduler(**SD_CONFIG)
    ref.set_timesteps(4)

    def lcm_d(x_, eps, step_index):
        t = ref.timesteps[step_index]
        abar = ref.alphas_cumprod[t].double()
        c_skip, c_out = ref.get_scalings_for_boundary_condition_discrete(t)
        return (c_out * (x_.double() - (1 - abar).sqrt() * eps.double()) / abar.sqrt() + c_skip * x_.double()).float()

    def sqrt_beta(step_index):
        return (1 - ref.alphas_cumprod[ref.timesteps[step_index]].double()).sqrt().float()

    full = eps_neg[:1] + 2.0 * (eps_pos[:1] - eps_neg[:1])
    torch.testing.assert_close(d[:1], lcm_d(x[:1], full, 0), rtol=1e-4, atol=1e-4)
    # the residual of row 0 becomes the real negative's noise part √β·ε_neg, and takes the same step
    torch.testing.assert_close(d_n[:1], lcm_d(sqrt_beta(0) * eps_neg[:1], full, 0), rtol=1e-4, atol=1e-4)
    # row 1's negative is virtual: the residual noise ε̄ = n/√β itself (ε-prediction)
    virtual = n[1:] / sqrt_beta(1) + 2.0 * (eps_pos[1:] - n[1:] / sqrt_beta(1))
    torch.testing.assert_close(d[1:], lcm_d(x[1:], virtual, 1), rtol=1e-4, atol=1e-4)
