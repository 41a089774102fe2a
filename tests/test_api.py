"""The request contract: compositions round-trip exactly, and no input makes a decoder fail any other way
than with its one documented error (property-based: hypothesis)."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semdraw.api import BackgroundSpec, BrushSpec, Composition, ContractError, StreamConfig

FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TEXT = st.text(max_size=40)
UNIT = st.floats(0, 1, allow_nan=False)


@st.composite
def compositions(draw) -> Composition:
    h, w = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    names = draw(st.lists(st.text(min_size=1, max_size=8), max_size=4, unique=True))
    brushes = tuple(
        BrushSpec(name, draw(TEXT), np.frombuffer(draw(st.binary(min_size=h * w, max_size=h * w)), np.uint8).reshape(h, w),
                  draw(TEXT), draw(UNIT), draw(st.floats(0, 512, allow_nan=False)), draw(UNIT), draw(st.booleans()))
        for name in names
    )  # fmt: skip
    image = draw(st.none() | st.binary(max_size=64))
    return Composition(h, w, brushes, BackgroundSpec(draw(TEXT), draw(TEXT), image), draw(st.integers(0, 2**63 - 1)))


@FAST
@given(compositions())
def test_a_valid_composition_round_trips_exactly(composition):
    decoded = Composition.from_json(composition.to_json())
    assert decoded == composition
    for a, b in zip(decoded.brushes, composition.brushes, strict=True):
        assert a.mask.dtype == np.uint8 and np.array_equal(a.mask, b.mask)  # bit for bit through PNG


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@FAST
@given(JSON)
def test_arbitrary_json_values_are_refused_with_the_contract_error(value):
    with contextlib.suppress(ContractError):
        Composition.from_dict(value)


@FAST
@given(st.binary(max_size=200))
def test_arbitrary_bytes_are_refused_with_the_contract_error(data):
    with pytest.raises(ContractError):
        Composition.from_json(data)


@FAST
@given(compositions(), st.data())
def test_a_valid_composition_with_one_value_replaced_decodes_or_is_refused_cleanly(composition, data):
    doc = composition.to_dict()
    path = [doc]
    node = doc
    while isinstance(node, dict | list) and node and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(list(node) if isinstance(node, dict) else list(range(len(node)))))
        path.append(key)
        node = node[key]
    parent = doc
    for key in path[1:-1]:
        parent = parent[key]
    if len(path) > 1:
        parent[path[-1]] = data.draw(JSON)
    with contextlib.suppress(ContractError):
        Composition.from_dict(json.loads(json.dumps(doc)))


def _valid() -> dict:
    mask = np.zeros((4, 6), np.uint8)
    mask[1:3, 2:5] = 255
    return Composition(4, 6, (BrushSpec("sky", "blue sky", mask, alpha=0.5),), BackgroundSpec("green grass"), 7).to_dict()


def _edit(change) -> str:
    doc = _valid()
    change(doc)
    return json.dumps(doc)


BAD = [  # (how the valid document is spoiled, what the one error says)
    (lambda d: d.update(colour="red"), "unknown key 'colour'"),
    (lambda d: d["brushes"][0].update(alpha="high"), "brushes[0].alpha: expected a finite number"),
    (lambda d: d["brushes"][0].update(alpha=2.0), "alpha must lie in [0, 1]"),
    (lambda d: d.update(seed=True), "seed: expected a whole number"),
    (lambda d: d.update(seed=-1), "seed must lie in"),
    (lambda d: d.update(height=5), "the mask must be 5x6 uint8"),
    (lambda d: d.update(format=99), "format 99 is newer"),
    (lambda d: d["brushes"][0].update(mask="not base64!"), "not valid base64"),
    (lambda d: d["brushes"][0].update(mask="aGVsbG8="), "not a readable PNG"),
    (lambda d: d.update(brushes=[d["brushes"][0], d["brushes"][0]]), "brush names must be unique"),
    (lambda d: d.update(width=100000, height=100000), "outside the limits"),
    (lambda d: d["background"].update(prompt=None), "background.prompt: expected text"),
]


@pytest.mark.parametrize("spoil, says", BAD, ids=[b[1] for b in BAD])
def test_each_way_a_composition_can_be_wrong_is_one_clear_error(spoil, says):
    with pytest.raises(ContractError, match=None) as err:
        Composition.from_json(_edit(spoil))
    assert says in str(err.value) and "\n" not in str(err.value)


def test_nan_and_oversized_payloads_are_refused():
    with pytest.raises(ContractError, match="NaN is not a number"):
        Composition.from_json(_edit(lambda d: None).replace('"alpha": 0.5', '"alpha": NaN'))
    with pytest.raises(ContractError, match="over the 64 MiB limit"):
        Composition.from_json(" " * (65 << 20))


def test_a_composition_gives_the_library_its_enabled_painted_brushes():
    composition = Composition.from_json(_edit(lambda d: None))
    (brush,) = composition.brushes_for_semdraw()
    assert (brush.prompt, brush.mask_strength, brush.name) == ("blue sky", 0.5, "sky")
    assert composition.background_for_semdraw().prompt == "green grass"
    off = Composition(4, 6, (BrushSpec("sky", "blue sky", composition.brushes[0].mask, enabled=False),))
    assert off.brushes_for_semdraw() == []


def test_one_composition_gives_one_image_through_the_library_a_palette_file_and_a_stream(tmp_path):
    """A composition made in the library, saved as the window saves palettes, rendered by semdraw-render
    (from the palette file and from the composition's own JSON) and streamed by a Stream: the same image
    as generate() of it (within 1/255)."""
    from PIL import Image

    import semdraw
    from semdraw.toy import fidelity
    from semdraw.viewer import load_palette, save_palette
    from semdraw.viewer import render as render_cli

    side = 128
    sky = (fidelity.rect(0, 0, 0.5, 1) * 255).astype(np.uint8)
    circle = (fidelity.disc(0.7, 0.35, 0.15) * 255).astype(np.uint8)
    composition = Composition(side, side, (BrushSpec("sky", "blue sky", sky, blur=1.5),
                                           BrushSpec("sun", "a red circle", circle)),
                              BackgroundSpec("green grass"), seed=5).check()  # fmt: skip
    toy = semdraw.load_model("toy", device="cpu")
    reference = semdraw.generate(toy, composition.brushes_for_semdraw(), background=composition.background_for_semdraw(),
                                 seed=composition.seed, output_type="np").astype(int)  # fmt: skip
    palette_file = save_palette(composition, tmp_path / "drawing.json")
    assert load_palette(palette_file) == composition  # the palette file holds it all
    (tmp_path / "c.json").write_text(composition.to_json())
    for source, out in ((palette_file, "from-palette.png"), (tmp_path / "c.json", "from-json.png")):
        assert render_cli.main([str(source), "-o", str(tmp_path / out)]) == 0
        assert np.abs(np.asarray(Image.open(tmp_path / out)).astype(int) - reference).max() <= 1, out
    stream = semdraw.Stream(toy, **StreamConfig(layers=3, seed_step=0).stream_options(composition))
    semdraw.StreamSync(stream).apply(composition)
    stream.flush()
    assert np.abs(stream().astype(int) - reference).max() <= 1


def test_sampling_options_travel_with_the_composition_and_are_checked():
    """Format 2 carries the sampling options; a format-1 file (none) reads as the defaults; a bad option is
    one contract error that names the field's rule."""
    from semdraw.api import SamplingSpec

    sampling = SamplingSpec(timesteps=(999.0, 499.0), cfg="self", guidance_scale=1.2, bootstrap_steps=1,
                            bootstrap_mix_steps=0.5, centre_steps=1, mask_type="continuous", cover_alpha=None)  # fmt: skip
    c = Composition(8, 8, sampling=sampling)
    data = json.loads(c.to_json())
    assert data["format"] == 2 and Composition.from_dict(data) == c
    old = {"format": 1, "height": 8, "width": 8}
    assert Composition.from_dict(old).sampling == SamplingSpec()
    for bad, match in (({"cfg": "loud"}, "cfg must be one of"), ({"cfg": "full", "guidance_scale": 1.0}, "> 1"),
                       ({"mask_type": "fuzzy"}, "mask_type"), ({"steps": 0}, "steps must lie"),
                       ({"steps": 2, "timesteps": [999.0]}, "not both"), ({"cover_alpha": 2.0}, "cover_alpha")):  # fmt: skip
        with pytest.raises(ContractError, match=match):
            Composition.from_dict({**old, "sampling": bad})
    options = sampling.options()
    assert options["timesteps"] == [999.0, 499.0] and options["cfg"] == "self" and options["cover_alpha"] is None


# ---------------------------------------------------------------- palette files are compositions: fuzzed too
def _palette_decoders(tmp_path_factory):
    from semdraw.viewer import PaletteError, load_palette

    folder = tmp_path_factory.mktemp("fuzz")
    return folder, PaletteError, load_palette


@FAST
@given(st.binary(max_size=300) | JSON.map(lambda v: json.dumps(v).encode()))
def test_any_palette_file_opens_or_is_one_palette_error(tmp_path_factory, data):
    """Arbitrary bytes and JSON as a palette file, including first-release shapes (mask file names): only
    the documented PaletteError escapes."""
    folder, PaletteError, load_palette = _palette_decoders(tmp_path_factory)
    path = folder / "p.json"
    path.write_bytes(data)
    with contextlib.suppress(PaletteError):
        assert isinstance(load_palette(path), Composition)


LEGACY = st.fixed_dictionaries({"format": st.just(1), "height": st.integers(-2, 40) | st.text(max_size=3),
                                "width": st.integers(-2, 40), "seed": st.integers(-1, 3) | st.none(),
                                "background": st.none() | st.fixed_dictionaries({"image": st.sampled_from(
                                    [None, "photo.png", "../x.png", "missing.jpg"])}),
                                "brushes": st.lists(st.fixed_dictionaries(
                                    {"name": st.text(max_size=3), "color": st.just([1, 2, 3]),
                                     "mask": st.sampled_from(["m.png", "photo.png", "nope.png", "p.json", 7])},
                                    optional={"alpha": st.floats() | st.text(max_size=2), "prompt": TEXT,
                                              "enabled": st.booleans() | st.integers()}), max_size=3)})  # fmt: skip


@FAST
@given(LEGACY)
def test_fuzzed_first_release_palettes_migrate_or_are_one_palette_error(tmp_path_factory, doc):
    from PIL import Image

    folder, PaletteError, load_palette = _palette_decoders(tmp_path_factory)
    Image.new("L", (16, 16), 255).save(folder / "m.png")
    Image.new("RGB", (8, 8), (10, 20, 30)).save(folder / "photo.png")
    path = folder / "p.json"
    path.write_text(json.dumps(doc))
    with contextlib.suppress(PaletteError):
        migrated = load_palette(path)
        assert Composition.from_json(migrated.to_json()) == migrated


def test_a_stream_config_is_checked_and_drives_a_stream(toy):
    import semdraw

    for bad in ({"layers": 0}, {"seed_step": -1}, {"layers": 2, "extra": 1}, {"layers": "2"}):
        with pytest.raises(ContractError):
            StreamConfig.from_dict(bad)
    config = StreamConfig.from_dict({"layers": 2, "seed_step": 0})
    composition = Composition(64, 96, seed=9, sampling=semdraw.api.SamplingSpec(steps=3))
    stream = semdraw.Stream(toy, **config.stream_options(composition))
    assert (stream.height, stream.width, stream.layers, stream.seed, stream.seed_step, stream.steps) == (64, 96, 2, 9, 0, 3)
