"""Mask math: input formats, occlusion, blur, quantization, latent reduction, centring."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from semdraw import masks
from semdraw.errors import MaskError


def test_accepts_float_bool_uint8_and_squeezes_channel():
    ref = torch.zeros(16, 16)
    ref[4:8, 2:10] = 1
    as_bool = ref.bool().numpy()
    as_u8 = (ref.numpy() * 255).astype(np.uint8)
    for m in (ref, ref.numpy(), as_bool, as_u8, as_u8[..., None], ref[None]):
        torch.testing.assert_close(masks.to_mask_tensor(m, 16, 16), ref)


def test_pil_rgba_uses_alpha_and_rgb_uses_white():
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., :3] = 255  # white everywhere, but only the alpha says where it is painted
    rgba[2:4, 2:4, 3] = 255
    got = masks.to_mask_tensor(Image.fromarray(rgba, "RGBA"), 8, 8)
    assert got.sum() == 4 and got[2, 2] == 1
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[5:, :] = 255
    got = masks.to_mask_tensor(Image.fromarray(rgb, "RGB"), 8, 8)
    assert got[5:].min() == 1 and got[:5].max() == 0


def test_resizes_to_canvas():
    m = np.zeros((4, 4), np.float32)
    m[:2] = 1  # top half
    got = masks.to_mask_tensor(m, 16, 32)
    assert got.shape == (16, 32)
    assert got[:6].min() > 0.99 and got[10:].max() < 0.01
    big = np.zeros((64, 64), bool)
    big[:, 31] = True  # a 1-px line survives shrinking as a partial value (area averaging)
    assert masks.to_mask_tensor(big, 16, 16).max() > 0


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.full((4, 4), np.nan, np.float32), "NaN"),
        (np.zeros((2, 4, 4), np.float32), "2-D"),
        (np.zeros(4, np.float32), "2-D"),
        (np.full((4, 4), 2.0, np.float32), r"\[0, 1\]"),
        ("mask.png", "unsupported mask type"),
        (None, "needs a mask"),
        (np.zeros((4, 4), np.int64), "dtype"),
    ],
)
def test_bad_masks_raise_clear_errors(bad, match):
    with pytest.raises(MaskError, match=match):
        masks.to_mask_tensor(bad, 4, 4)


def test_occlusion_dims_earlier_layers_only_where_later_ones_paint():
    m = torch.zeros(2, 4, 4)
    m[0] = 1
    m[1, :2] = 1
    got = masks.occlude(m, 0.3)
    assert torch.allclose(got[0, :2], torch.full((2, 4), 0.3))
    assert torch.equal(got[0, 2:], torch.ones(2, 4))
    assert torch.equal(got[1], m[1])  # the top layer is never dimmed
    assert torch.equal(masks.occlude(m, None), m)


def test_blur_is_separable_gaussian_preserving_mass_and_full_canvas():
    m = torch.zeros(33, 33)
    m[16, 16] = 1
    b = masks.gaussian_blur(m, 2.0)
    assert b.sum().item() == pytest.approx(1.0, abs=1e-5)
    ys = torch.arange(33.0) - 16
    expected = torch.exp(-0.5 * (ys / 2) ** 2)
    row = b[16] / b[16].max()
    torch.testing.assert_close(row[10:23], (expected / expected.max())[10:23], atol=1e-5, rtol=0)  # radius 3σ
    assert row[:10].sum() == 0  # truncated beyond 3σ
    full = masks.gaussian_blur(torch.ones(10, 10), 3.0)
    torch.testing.assert_close(full, torch.ones(10, 10))  # replicate padding: no fading at borders
    assert masks.gaussian_blur(m, 0) is m


def test_quantization_discrete_and_continuous():
    n = torch.tensor([0.99, 0.7, 0.3])
    m = torch.tensor([1.0, 0.8, 0.5, 0.1]).view(1, 1, 4)
    d = masks.quantize(m, n, "discrete")[0, :, 0]
    assert d.tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0]]
    c = masks.quantize(m, n, "continuous")[0, :, 0]
    # step 0 ramps between n_1=0.7 and n_0=0.99; the last step between n_T=0 and n_{T-1}=0.3
    torch.testing.assert_close(c[0], ((m.flatten() - 0.7) / 0.29).clamp(0, 1))
    torch.testing.assert_close(c[2], (m.flatten() / 0.3).clamp(0, 1))
    # masks only grow as the noise level falls
    assert torch.all(c[1:] >= c[:-1]) and torch.all(d[1:] >= d[:-1])
    plain = masks.quantize(m, n, "plain")[0, :, 0]
    assert torch.equal(plain, m.flatten().expand(3, 4))
    with pytest.raises(MaskError):
        masks.quantize(m, n, "binary")


def test_thin_stroke_survives_latent_reduction():
    m = torch.zeros(64, 64)
    m[:, 13] = 1  # a one-pixel vertical stroke
    lat = masks.to_latent(m, 8)
    assert lat.shape == (8, 8)
    assert torch.all(lat[:, 1] == 1 / 8) and lat.sum() == 1  # area is preserved: 64 px / 64 px per cell
    nearest = torch.nn.functional.interpolate(m[None, None], size=(8, 8), mode="nearest")[0, 0]
    assert nearest.sum() == 0  # what nearest-neighbour reduction would have done


def test_background_weight_and_normalized_average():
    m = torch.zeros(2, 1, 2, 2)
    m[0, 0, 0] = 1
    m[1, 0, :, 0] = 1  # overlaps layer 0 at (0, 0)
    bg = masks.background_weight(m)
    assert bg[0].tolist() == [[0, 0], [0, 1]]
    vals = torch.stack([torch.full((3, 2, 2), 2.0), torch.full((3, 2, 2), 4.0)])
    avg = masks.normalize((vals * m).sum(0), m.sum(0), fallback=torch.full((3, 2, 2), 7.0))
    assert avg[0, 0, 0] == 3 and avg[0, 0, 1] == 2 and avg[0, 1, 0] == 4
    assert avg[0, 1, 1] == 7  # no weight covers it: the fallback


def test_coverage_and_paste():
    soft = torch.zeros(2, 2, 2)
    soft[0, 0] = 0.75
    soft[1, :, 0] = 0.5  # (0, 0) is covered 1.25 -> clipped to 1
    keep = masks.coverage(soft)
    assert keep.shape == (1, 1, 2, 2) and keep[0, 0].tolist() == [[1.0, 0.75], [0.5, 0.0]]
    out = masks.paste(torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2), keep)
    assert torch.equal(out[0, 0], keep[0, 0])


def test_centring_shift_and_inverse():
    m = torch.zeros(8, 8)
    m[1:3, 4:7] = 1  # bbox centre (2, 5.5) -> frame centre (4, 4)
    dy, dx = masks.centring_shift(m)
    assert (dy, dx) == (2, -2)
    moved = masks.shift(m, dy, dx)
    ys, xs = torch.nonzero(moved, as_tuple=True)
    assert (ys.min() + ys.max() + 1) / 2 == 4 and abs((xs.min() + xs.max() + 1) / 2 - 4) <= 0.5
    x = torch.randn(1, 4, 8, 8)
    torch.testing.assert_close(masks.shift(masks.shift(x, dy, dx), -dy, -dx), x)
    assert masks.centring_shift(torch.zeros(8, 8)) == (0, 0)


def test_centring_keeps_scenery_in_place_and_centres_objects_cut_by_one_edge():
    """A region touching edges on both axes (band, corner, backdrop) is not shifted: its cut sides would
    land inside the frame and be painted as boundaries. A region cut by one edge only (an object against
    the border) is centred like any other, and a centred box never wraps."""
    band = torch.zeros(8, 8)
    band[:, :3] = 1  # a left band spanning the height: touches three edges
    assert masks.centring_shift(band) == (0, 0)
    corner = torch.zeros(8, 8)
    corner[:4, 4:] = 1  # the top-right quadrant
    assert masks.centring_shift(corner) == (0, 0)
    top = torch.zeros(8, 8)
    top[0:2, 1:3] = 1  # against the top edge only: centred on both axes
    assert masks.centring_shift(top) == (3, 2)
    right = torch.zeros(8, 8)
    right[3:5, 6:] = 1  # against the right edge only
    assert masks.centring_shift(right) == (0, -3)
    near = torch.zeros(8, 8)
    near[0:3, 1:5] = 1.0
    near[0, 1:5] = 0.3  # near the top edge: its area-averaged rim grazes the border, under half a pixel
    near[3:8, 2:4] = 0.3  # and a faint tail down to the bottom edge: still touching no edge
    assert masks.centring_shift(near) == (0, 1)
    for y0, y1, x0, x1 in [(1, 4, 2, 7), (3, 7, 1, 2), (1, 7, 1, 7), (0, 3, 2, 5), (2, 5, 5, 8)]:
        box = torch.zeros(8, 8)  # off every edge, or against one: centred, never wrapped
        box[y0:y1, x0:x1] = 1
        moved = masks.shift(box, *masks.centring_shift(box))
        ys, xs = torch.nonzero(moved, as_tuple=True)
        assert int(ys.max() - ys.min()) == y1 - y0 - 1 and int(xs.max() - xs.min()) == x1 - x0 - 1


def test_a_brush_owns_its_mask():
    import numpy as np

    from semdraw import Brush

    for source in (np.zeros((8, 8), np.uint8), torch.zeros(8, 8)):
        brush = Brush("blue sky", source)
        source[2, 2] = 255 if isinstance(source, np.ndarray) else 1.0
        assert float(brush.mask[2, 2]) == 0  # later strokes into the caller's array do not reach the brush


def test_the_alpha_slider_counts_the_steps_a_brush_takes_part_in():
    """steps_on / alpha_for_steps against the definition of discrete quantization: a hard mask of strength
    alpha is on at step k exactly where quantize() gives it weight (alpha > n_k, or alpha = 1)."""
    from semdraw.masks import alpha_for_steps, quantize, steps_on

    levels = torch.tensor([0.9977, 0.9, 0.85, 0.5])  # n_0 > ... > n_3
    for alpha in (1.0, 0.999, 0.99, 0.88, 0.6, 0.3):
        by_definition = int(quantize(torch.full((1, 2, 2), alpha), levels, "discrete")[0, :, 0, 0].sum())
        assert steps_on(alpha, levels) == by_definition
    for on in range(len(levels) + 1):
        alpha = alpha_for_steps(on, levels)
        weights = quantize(torch.full((1, 2, 2), alpha), levels, "discrete")[0, :, 0, 0]
        assert weights.tolist() == [0.0] * (len(levels) - on) + [1.0] * on  # the last `on` steps, none before
    assert alpha_for_steps(4, levels) == 1.0 and alpha_for_steps(0, levels) == 0.0
    assert steps_on(0.99, [0.998, 0.85]) == 1  # why the window's old 0-100 % slider lost brushes at one click
