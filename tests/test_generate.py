"""One-shot generation: oracle 2 against diffusers, region invariants, tiling, inpainting, bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import semdraw
from semdraw import masks as M
from semdraw import sampling as S
from semdraw.generation import image_to_tensor
from semdraw.tiles import plan_tiles
from semdraw.toy.fidelity import PostAveraging

from .conftest import make_tiny_pipeline


def full(h=64, w=64):
    return np.ones((h, w), np.float32)


def region(rows: slice, cols: slice, h=64, w=64):
    m = np.zeros((h, w), np.float32)
    m[rows, cols] = 1
    return m


class CallRecorder:
    """Records the batch size (and first input) of every UNet forward call."""

    def __init__(self, unet):
        self.batches: list[int] = []
        self.inputs: list[torch.Tensor] = []
        self._handle = unet.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        self.batches.append(int(args[0].shape[0]))
        self.inputs.append(args[0].detach().clone())

    def close(self):
        self._handle.remove()


@pytest.mark.parametrize("scheduler", ["lcm", "ddim", "euler"])
def test_oracle2_full_canvas_brush_equals_diffusers_pipeline(tmp_path, scheduler):
    pipe = make_tiny_pipeline(tmp_path, scheduler=scheduler)
    model = semdraw.Model.from_pipeline(pipe)
    brush = semdraw.Brush("a red circle", full())
    kwargs = dict(steps=4, bootstrap_steps=0, guidance_scale=1.0)

    ours = semdraw.generate(
        model, [brush], generator=torch.Generator().manual_seed(3), output_type="np", **kwargs
    )
    ref = pipe("a red circle", num_inference_steps=4, guidance_scale=1.0, height=64, width=64,
               generator=torch.Generator().manual_seed(3), output_type="np").images[0]  # fmt: skip
    ref = (ref * 255).round().astype(np.uint8)
    assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 2

    # the comparison is not vacuous: latents agree tightly, and another seed gives another image
    lat = semdraw.generate(model, [brush], seed=3, output_type="latent", **kwargs)
    ref_lat = pipe("a red circle", num_inference_steps=4, guidance_scale=1.0, height=64, width=64,
                   generator=torch.Generator().manual_seed(3), output_type="latent").images  # fmt: skip
    torch.testing.assert_close(lat, ref_lat, rtol=1e-4, atol=1e-4)
    other = semdraw.generate(model, [brush], seed=4, output_type="latent", **kwargs)
    assert (other - lat).abs().max() > 0.1


def test_empty_mask_brush_changes_nothing(tiny_model):
    a = semdraw.Brush("blue sky", region(slice(0, 32), slice(None)))
    empty = semdraw.Brush("green grass", np.zeros((64, 64), np.float32))
    one = semdraw.generate(tiny_model, [a], seed=1, output_type="latent")
    two = semdraw.generate(tiny_model, [a, empty], seed=1, output_type="latent")
    torch.testing.assert_close(one, two, rtol=0, atol=1e-6)


def test_disjoint_brushes_in_either_order_give_the_same_image(tiny_model):
    a = semdraw.Brush("blue sky", region(slice(0, 32), slice(None)), mask_std=2.0)
    b = semdraw.Brush("green grass", region(slice(32, 64), slice(None)), prompt_strength=0.7)
    ab = semdraw.generate(tiny_model, [a, b], seed=2, output_type="latent")
    ba = semdraw.generate(tiny_model, [b, a], seed=2, output_type="latent")
    torch.testing.assert_close(ab, ba, rtol=0, atol=1e-5)
    only_a = semdraw.generate(tiny_model, [a], seed=2, output_type="latent")
    assert (only_a - ab).abs().max() > 1e-3  # the second brush does matter


def test_prompt_strength_lerps_from_the_background_prompt(tiny_model):
    bg = semdraw.Background(prompt="snow")
    zero = semdraw.generate(tiny_model, [semdraw.Brush("night", full(), prompt_strength=0.0)], background=bg,
                            seed=5, output_type="latent", bootstrap_steps=0)  # fmt: skip
    snow = semdraw.generate(tiny_model, [semdraw.Brush("snow", full())], background=bg, seed=5,
                            output_type="latent", bootstrap_steps=0)  # fmt: skip
    torch.testing.assert_close(zero, snow, rtol=0, atol=1e-6)


def test_large_canvas_runs_in_batched_tiles(tiny_model):
    rec = CallRecorder(tiny_model.unet)
    try:
        img = semdraw.panorama(tiny_model, "blue sky", height=128, width=128, steps=4, seed=0)
        one_call_per_step = list(rec.batches)
        rec.batches.clear()
        semdraw.panorama(tiny_model, "blue sky", height=128, width=128, steps=4, seed=0, max_batch=4)
        capped = list(rec.batches)
    finally:
        rec.close()
    assert img.size == (128, 128)
    n_tiles = len(plan_tiles(16, 16, 8, 8, 2))
    assert n_tiles == 9
    assert one_call_per_step == [9, 9, 9, 9]  # every tile of a step in one denoiser call
    assert capped == [4, 4, 1] * 4


def test_tiles_cover_the_canvas_with_positive_seam_ramps():
    tiles = plan_tiles(16, 24, 8, 8, 2)
    cover = torch.zeros(16, 24)
    for t in tiles:
        assert t.ramp.min() > 0
        cover[t.y : t.y + t.h, t.x : t.x + t.w] += t.ramp
    assert cover.min() > 0.3
    assert tiles[0].ramp[0, 0] == 1 and tiles[0].ramp[-1, -1] < 1  # ramps only on seams, not canvas borders


def test_guidance_doubles_the_batch_only_above_one(tiny_model):
    brushes = [semdraw.Brush("blue sky", full(), negative_prompt="night")]
    rec = CallRecorder(tiny_model.unet)
    try:
        semdraw.generate(tiny_model, brushes, seed=0, steps=2, bootstrap_steps=0)
        no_cfg = list(rec.batches)
        rec.batches.clear()
        guided = semdraw.generate(tiny_model, brushes, seed=0, steps=2, bootstrap_steps=0, guidance_scale=3.0,
                                  output_type="latent")  # fmt: skip
        cfg = list(rec.batches)
    finally:
        rec.close()
    assert no_cfg == [1, 1] and cfg == [2, 2]
    plain = semdraw.generate(tiny_model, brushes, seed=0, steps=2, bootstrap_steps=0, output_type="latent")
    assert (guided - plain).abs().max() > 1e-3


def test_inpainting_keeps_the_background_outside_the_masks(tiny_model):
    rng = np.random.default_rng(0)
    bg = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    inside = region(slice(16, 48), slice(16, 48))
    brushes = [semdraw.Brush("a red circle", inside)]
    out = np.asarray(semdraw.generate(tiny_model, brushes, background=semdraw.Background(image=bg), seed=0))
    outside = inside == 0
    assert np.abs(out[outside].astype(int) - bg[outside].astype(int)).max() <= 1
    assert np.abs(out[inside == 1].astype(float) - bg[inside == 1]).mean() > 10  # the brush was generated

    # and in latent space, the background latent is kept exactly where no brush weighs in
    lat = semdraw.generate(
        tiny_model, brushes, background=semdraw.Background(image=bg), seed=0, output_type="latent"
    )
    bg_lat = tiny_model.encode_image(image_to_tensor(bg, 64, 64))
    torch.testing.assert_close(lat[..., :2, :], bg_lat[..., :2, :], rtol=0, atol=1e-5)
    assert (lat[..., 3:5, 3:5] - bg_lat[..., 3:5, 3:5]).abs().max() > 1e-2


def test_bootstrap_fills_with_noised_white_and_centres_the_mask(tiny_model):
    mask = region(slice(8, 24), slice(32, 56))  # small, upper right, off the edges
    brush = semdraw.Brush("a red circle", mask)
    rec = CallRecorder(tiny_model.unet)
    try:
        semdraw.generate(tiny_model, [brush], seed=7, steps=4, bootstrap_steps=1, centre_steps=1)
    finally:
        rec.close()
    sched = tiny_model.schedule(steps=4)
    noise = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(7))
    x0 = noise * sched.init_noise_sigma
    m = M.to_latent(M.quantize(torch.from_numpy(mask)[None], sched.noise_level, "discrete"), 8)[0, 0]
    fill = S.add_noise(tiny_model.white_latent(64, 64), noise, 0, sched)
    dy, dx = M.centring_shift(M.to_latent(torch.from_numpy(mask), 8))
    assert (dy, dx) == (2, -2)  # latent bbox rows 1-2, cols 4-6: centre (2, 5.5) -> (4, 4)
    expected = M.shift(m * x0 + (1 - m) * fill, dy, dx)
    # the white background item (known target) needs no call; the first call holds only the brush
    assert rec.batches[0] == 1
    torch.testing.assert_close(rec.inputs[0], expected, rtol=1e-5, atol=1e-5)
    # after the bootstrap steps the brush sees the shared latent, uncentred
    assert rec.inputs[1].shape == (1, 4, 8, 8)


def test_stabilizations_change_the_result(tiny_model):
    brushes = [semdraw.Brush("a red circle", region(slice(8, 28), slice(36, 56)), mask_std=2.0),  # off the edges
               semdraw.Brush("green grass", region(slice(32, 64), slice(None)))]  # fmt: skip
    base = dict(seed=0, output_type="latent")
    full_method = semdraw.generate(tiny_model, brushes, **base)
    variants = [
        dict(averaging=PostAveraging(), bootstrap_steps=0, mask_type="plain"),
        dict(bootstrap_steps=0),
        dict(mask_type="plain"),
        dict(centre_steps=0),
        dict(mask_type="continuous"),
    ]
    for v in variants:
        other = semdraw.generate(tiny_model, brushes, **base, **v)
        assert (other - full_method).abs().max() > 1e-3, v


def test_prompt_encoding_is_cached(tmp_path):
    model = semdraw.Model.from_pipeline(make_tiny_pipeline(tmp_path))
    calls = []
    handle = model.text_encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        brushes = [semdraw.Brush("blue sky", full()), semdraw.Brush("blue sky", full())]
        semdraw.generate(model, brushes, seed=0, steps=1)
        semdraw.generate(model, brushes, seed=1, steps=1)
    finally:
        handle.remove()
    assert len(calls) == 2  # "" (background) and "blue sky", once each


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(brushes=[semdraw.Brush("x", np.full((64, 64), np.nan, np.float32))]), semdraw.MaskError, "NaN"),
        (dict(brushes=[semdraw.Brush("x", np.zeros((2, 64, 64), np.float32))]), semdraw.MaskError, "2-D"),
        (dict(height=60), semdraw.SizeError, "divisible by 8"),
        (dict(guidance_scale=0.5), semdraw.ConfigError, "guidance_scale"),
        (dict(mask_type="binary"), semdraw.ConfigError, "mask_type"),
        (dict(steps=0), semdraw.ConfigError, "steps"),
        (dict(seed=1, generator=torch.Generator()), semdraw.ConfigError, "not both"),
        (dict(brushes=["a red circle"]), semdraw.ConfigError, "Brush objects"),
        (dict(cover_alpha=2.0), semdraw.ConfigError, "cover_alpha"),
        (dict(background=semdraw.Background(image=np.zeros((4, 4)))), semdraw.ConfigError, "HxWx3"),
    ],
)
def test_bad_generate_inputs_raise_clear_errors(tiny_model, kwargs, error, match):
    kwargs = {"brushes": [semdraw.Brush("x", full())], **kwargs}
    with pytest.raises(error, match=match):
        semdraw.generate(tiny_model, **kwargs)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: semdraw.Brush("x", full(), mask_strength=1.5), "mask_strength"),
        (lambda: semdraw.Brush("x", full(), prompt_strength=-0.1), "prompt_strength"),
        (lambda: semdraw.Brush("x", full(), mask_std=float("nan")), "mask_std"),
        (lambda: semdraw.brushes_from(["a", "b"], [full()]), "mismatched"),
        (lambda: semdraw.brushes_from(["a"], [full()], mask_strength=[1.0, 0.5]), "mismatched"),
    ],
)
def test_bad_brushes_raise_clear_errors(make, match):
    with pytest.raises(semdraw.ConfigError, match=match):
        make()


def test_an_empty_prompt_brush_is_ignored_with_a_warning(tiny_model):
    from semdraw.generation import EmptyPromptWarning

    sky = semdraw.Brush("blue sky", region(slice(0, 32), slice(None)))
    blank = semdraw.Brush("  ", region(slice(32, 64), slice(None)), name="grass")
    with pytest.warns(EmptyPromptWarning, match="grass"):
        both = semdraw.generate(tiny_model, [sky, blank], seed=1, output_type="latent")
    torch.testing.assert_close(both, semdraw.generate(tiny_model, [sky], seed=1, output_type="latent"), rtol=0, atol=0)


def test_a_mask_of_another_aspect_ratio_is_stretched_with_a_warning():
    with pytest.warns(M.MaskStretchWarning, match="32x64 mask is stretched to the 64x64"):
        M.to_mask_tensor(np.ones((32, 64), np.float32), 64, 64)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        M.to_mask_tensor(np.ones((32, 32), np.float32), 64, 64)  # same proportions: resized silently


def test_a_zero_canvas_side_is_an_error_not_the_default(tiny_model):
    with pytest.raises(semdraw.SizeError, match="positive"):
        semdraw.generate(tiny_model, [semdraw.Brush("sky", full())], height=0, width=64)


@pytest.mark.parametrize("side", [8, 16])
def test_a_canvas_too_small_for_the_unet_is_a_clear_error(toy, side):
    """toy's UNet halves the latent twice: a 1- or 2-pixel latent would reach a one-pixel level, where torch's
    group norm fails with a raw error. The size check says so first, in generate() and before any CLI load."""
    with pytest.raises(semdraw.SizeError, match="too small for this model: sides of at least 32 px"):
        semdraw.generate(toy, [semdraw.Brush("blue sky", np.ones((side, side), np.float32))], height=side, width=side)
    from semdraw.loading import check_canvas

    with pytest.raises(semdraw.SizeError, match="at least 32 px"):
        check_canvas("toy", side, None)  # read from the folder's UNet config, nothing loaded
    check_canvas("toy", 32, 32)
    with pytest.raises(semdraw.SizeError, match="positive"):
        check_canvas("toy", 0, None)
