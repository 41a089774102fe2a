"""Edits as values and the row rule: pure edits on compositions (fuzzed), their wire form, stable rows and
refusals, and a stream kept equal to a composition."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import semdraw
from semdraw.api import BackgroundSpec, BrushSpec, Composition, ContractError, SamplingSpec
from semdraw.edits import (
    MoveBrush,
    RemoveBrush,
    SetBackground,
    SetBrush,
    SetMask,
    SetSampling,
    SetSeed,
    Stroke,
    UpdateBrush,
    apply,
    edit_from_dict,
    edit_to_dict,
)
from semdraw.stream_sync import StreamSync, assign_rows

H = W = 16


def mask(y0: int, y1: int, x0: int = 0, x1: int = W, size: tuple[int, int] = (H, W)) -> np.ndarray:
    m = np.zeros(size, np.uint8)
    m[y0:y1, x0:x1] = 255
    return m


def spec(name: str, prompt: str = "blue sky", m: np.ndarray | None = None, **kw) -> BrushSpec:
    return BrushSpec(name, prompt, mask(0, 8) if m is None else m, **kw)


def test_edits_are_pure_and_keep_the_paint_order():
    start = Composition(H, W, (spec("a"), spec("b", "green grass")))
    replaced = apply(start, SetBrush(spec("a", "a red circle")))
    assert [b.name for b in replaced.brushes] == ["a", "b"] and replaced.brushes[0].prompt == "a red circle"
    assert start.brushes[0].prompt == "blue sky"  # the old value is untouched
    added = apply(replaced, SetBrush(spec("c", "a yellow sun")))
    assert [b.name for b in apply(added, MoveBrush("c", 0)).brushes] == ["c", "a", "b"]
    assert [b.name for b in apply(added, RemoveBrush("a")).brushes] == ["b", "c"]
    painted = apply(added, SetMask("b", mask(4, 12)))
    assert np.array_equal(painted.brushes[1].mask, mask(4, 12)) and painted.brushes[1].prompt == "green grass"
    assert apply(added, SetSeed(7)).seed == 7
    assert apply(added, SetBackground(BackgroundSpec(prompt="white snow"))).background.prompt == "white snow"
    with pytest.raises(ContractError, match="no brush named 'x'"):
        apply(added, RemoveBrush("x"))
    with pytest.raises(ContractError, match="places 0-2"):
        apply(added, MoveBrush("a", 5))
    with pytest.raises(ContractError, match="16x16 uint8"):
        apply(added, SetMask("a", mask(0, 4, size=(8, 8))))
    with pytest.raises(ContractError, match="seed"):
        apply(added, SetSeed(-1))


EDITS = [SetBrush(spec("a", negative_prompt="blurry", alpha=0.5)), SetMask("a", mask(2, 5)), RemoveBrush("a"),
         MoveBrush("a", 1), SetBackground(BackgroundSpec("white snow", "", b"\x89PNG")), SetSeed(3),
         Stroke("a", ((1.0, 2.0), (7.5, 3.0)), 1.5, erase=True), UpdateBrush("a", prompt="red", alpha=0.25),
         UpdateBrush("a", enabled=False), SetSampling(SamplingSpec(steps=3, cfg="self"))]  # fmt: skip


def naive_stroke(m: np.ndarray, points, radius: float, value: int) -> np.ndarray:
    """The stroke by its definition, pixel by pixel: every pixel centre within ``radius`` of the polyline."""
    out = m.copy()
    segments = list(zip(points[:-1], points[1:], strict=True)) or [(points[0], points[0])]
    for y in range(m.shape[0]):
        for x in range(m.shape[1]):
            for (ax, ay), (bx, by) in segments:
                dx, dy = bx - ax, by - ay
                length2 = dx * dx + dy * dy  # a segment too short for a float (underflow) is a point
                t = 0.0 if length2 == 0 else min(1.0, max(0.0, ((x - ax) * dx + (y - ay) * dy) / length2))
                if (x - ax - t * dx) ** 2 + (y - ay - t * dy) ** 2 <= radius * radius:
                    out[y, x] = value
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(-6, 22, allow_nan=False), st.floats(-6, 22, allow_nan=False)), min_size=1,
                max_size=4), st.floats(0.3, 6), st.booleans())  # fmt: skip
def test_a_stroke_paints_exactly_the_pixels_its_definition_names(points, radius, erase):
    start = Composition(H, W, (spec("a", m=mask(3, 9, 2, 11)),))
    after = apply(start, Stroke("a", tuple(points), radius, erase=erase))
    expected = naive_stroke(start.brushes[0].mask, points, radius, 0 if erase else 255)
    assert np.array_equal(after.brushes[0].mask, expected)
    assert np.array_equal(start.brushes[0].mask, mask(3, 9, 2, 11))  # the old value is untouched


def test_updates_change_only_what_they_name_and_bad_strokes_are_refused():
    start = Composition(H, W, (spec("a", negative_prompt="blurry", blur=2.0),))
    after = apply(start, UpdateBrush("a", prompt="a red circle", strength=0.5))
    b = after.brushes[0]
    assert (b.prompt, b.strength, b.negative_prompt, b.blur) == ("a red circle", 0.5, "blurry", 2.0)
    assert np.array_equal(b.mask, start.brushes[0].mask)
    assert apply(start, SetSampling(SamplingSpec(steps=2))).sampling.steps == 2
    for bad, says in ((UpdateBrush("a", alpha=2.0), "alpha"), (Stroke("a", (), 1.0), "1-4096 points"),
                      (Stroke("a", ((0.0, 0.0),), 0.0), "radius"), (Stroke("x", ((0.0, 0.0),), 1.0), "no brush"),
                      (Stroke("a", ((float("inf"), 0.0),), 1.0), "finite"),
                      (SetSampling(SamplingSpec(steps=0)), "steps")):  # fmt: skip
        with pytest.raises(ContractError, match=says):
            apply(start, bad)
    with pytest.raises(ContractError, match="expected 2 entries"):
        edit_from_dict({"edit": "stroke", "name": "a", "points": [[1.0, 2.0, 3.0]], "radius": 1.0})


@pytest.mark.parametrize("edit", EDITS, ids=lambda e: type(e).__name__)
def test_every_edit_travels_as_json_data_and_back(edit):
    import json

    data = json.loads(json.dumps(edit_to_dict(edit)))
    back = edit_from_dict(data)
    assert type(back) is type(edit)
    if isinstance(edit, SetMask):
        assert back.name == edit.name and np.array_equal(back.mask, edit.mask)
    else:
        assert back == edit


def test_a_bad_edit_is_one_contract_error():
    for bad in ({"edit": "paint_everything"}, {"edit": "set_seed", "seed": "7"}, {"edit": "set_seed"},
                {"edit": "remove_brush", "name": "a", "extra": 1}, [], None):  # fmt: skip
        with pytest.raises(ContractError):
            edit_from_dict(bad)


names = st.sampled_from(["a", "b", "c", "d"])
edit_values = st.one_of(
    st.builds(lambda n, p, y: SetBrush(spec(n, p, mask(y, y + 4))), names, st.sampled_from(["blue sky", "", "red"]),
              st.integers(0, 12)),
    st.builds(lambda n, y: SetMask(n, mask(y, y + 2)), names, st.integers(0, 14)),
    st.builds(RemoveBrush, names), st.builds(MoveBrush, names, st.integers(-1, 5)),
    st.builds(SetSeed, st.integers(-2, 2**63)), st.builds(lambda p: SetBackground(BackgroundSpec(p)), st.text(max_size=5)),
    st.builds(lambda n, x, r, e: Stroke(n, ((x, 2.0), (x + 3, 9.0)), r, e), names, st.floats(-4, 20), st.floats(-1, 4),
              st.booleans()),
    st.builds(UpdateBrush, names, st.none() | st.sampled_from(["green grass", ""]), st.none(), st.none() | st.floats(-1, 2),
              st.none(), st.none(), st.none() | st.booleans()),
)  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(edit_values, max_size=12), st.integers(1, 4))
def test_any_edit_sequence_gives_a_valid_composition_or_one_contract_error(edits, layers):
    """Fuzzed: every edit either yields a composition that passes every check and round-trips through JSON,
    or is refused with the contract error and leaves the composition as it was; the row rule then holds:
    no two brushes share a row, rows lie within the stream, and every brush asking for a row has one or is
    named as refused."""
    composition = Composition(H, W)
    rows: dict[str, int] = {}
    for edit in edits:
        with contextlib.suppress(ContractError):
            composition = apply(composition, edit)
        assert Composition.from_json(composition.to_json()) == composition
        assignment = assign_rows(composition, layers, rows)
        rows = assignment.rows
        used = list(rows.values()) + ([-1] if assignment.background_row else [])
        assert len(set(used)) == len(used) and all(0 <= r < layers for r in rows.values())
        assert len(rows) + int(assignment.background_row) <= layers
        asking = [b.name for b in composition.brushes if b.enabled and b.prompt.strip() and b.mask.any()]
        assert sorted(assignment.refused) == sorted(set(asking) - set(rows))


def test_rows_are_stable_and_refusals_are_named_in_paint_order():
    c = Composition(H, W, tuple(spec(n) for n in "abc"))
    first = assign_rows(c, 2)
    assert first.rows == {"a": 0, "b": 1} and first.refused == ("c",)
    assert "brush c not generated" in first.message(2) and "3 would fit them all" in first.message(2)
    without_a = apply(c, RemoveBrush("a"))
    second = assign_rows(without_a, 2, first.rows)
    assert second.rows == {"b": 1, "c": 0}  # b keeps its row; c takes the freed one
    with_prompt = apply(without_a, SetBackground(BackgroundSpec("white snow")))
    third = assign_rows(with_prompt, 2, second.rows)
    assert third.background_row and third.rows == {"b": 1} and third.refused == ("c",)  # the last painted waits


def test_a_synced_stream_makes_what_a_stream_set_by_hand_makes(toy):
    """StreamSync against the stream API used directly: the same rows, the same frames, after edits."""
    n = toy.native_size
    sky, grass, circle = (mask(0, n // 2, size=(n, n)), mask(n // 2, n, size=(n, n)),
                          mask(20, 44, 16, 40, size=(n, n)))  # fmt: skip
    composition = Composition(n, n, (BrushSpec("sky", "blue sky", sky), BrushSpec("grass", "green grass", grass),
                                     BrushSpec("sun", "a yellow sun", circle, blur=2.0)), seed=3)  # fmt: skip
    synced = semdraw.Stream(toy, layers=2, seed=0)
    sync = StreamSync(synced)
    assert sync.apply(composition).refused == ("sun",)
    composition = apply(composition, RemoveBrush("grass"))
    assert sync.apply(composition).rows == {"sky": 0, "sun": 1}
    by_hand = semdraw.Stream(toy, layers=2, seed=3)
    by_hand.set_brush(0, semdraw.Brush("blue sky", sky))
    by_hand.set_brush(1, semdraw.Brush("a yellow sun", circle, mask_std=2.0))
    assert set(synced.brushes) == {0, 1} and synced.seed == 3
    for _ in range(2):
        assert np.array_equal(synced(), by_hand())
    with pytest.raises(semdraw.SemdrawError, match="canvas"):
        sync.apply(Composition(8, 8))
    # one edit at a time, on the stream (what a host painter takes): the stroke reaches the stream's mask
    sync.edit(Stroke("sun", ((30.0, 30.0),), 3.0, erase=True))
    assert np.asarray(synced.brushes[1].mask)[30, 30] == 0 and sync.applied.brushes[1].mask[30, 30] == 0
    with pytest.raises(ContractError, match="no brush"):
        sync.edit(UpdateBrush("grass", prompt="x"))
    assert sync.applied.brushes[0].name == "sky"  # unchanged by the refused edit


def test_a_compositions_sampling_options_drive_generate_and_the_stream_alike(toy):
    """The contract's sampling options are keyword arguments both entry points take: a stream made with
    them flushes to the image generate() makes with them (oracle 3, through the contract)."""
    from semdraw.api import SamplingSpec

    n = toy.native_size
    composition = Composition(n, n, (BrushSpec("sky", "blue sky", mask(0, n // 2, size=(n, n))),
                                     BrushSpec("dot", "a red circle", mask(70, 100, 10, 40, size=(n, n)), blur=2.0)),
                              seed=4, sampling=SamplingSpec(timesteps=(999.0, 699.0, 299.0), bootstrap_steps=1,
                                                            bootstrap_mix_steps=1.0, mask_type="continuous"))  # fmt: skip
    options = composition.sampling.options()
    stream = semdraw.Stream(toy, layers=2, seed=composition.seed, **options)
    assert stream.steps == 3 and stream.bootstrap_steps == 1
    StreamSync(stream).apply(composition)
    frame = stream()
    image = semdraw.generate(toy, composition.brushes_for_semdraw(), seed=composition.seed, output_type="np", **options)
    assert np.abs(frame.astype(int) - image.astype(int)).max() <= 1


def test_an_edit_sequence_on_a_stream_gives_what_the_final_composition_gives_directly(toy):
    """Edits applied one by one to a stream (a stroke, a prompt, a brush refused for want of a row, then
    admitted when another leaves) end in the composition and the frames of that final composition applied
    to a fresh stream at once."""
    n = toy.native_size
    start = Composition(n, n, (BrushSpec("sky", "blue sky", mask(0, n // 2, size=(n, n))),), seed=4)
    edits = [SetBrush(BrushSpec("grass", "green grass", mask(n // 2, n, size=(n, n)))),
             SetBrush(BrushSpec("sun", "a red circle", mask(10, 40, 70, 100, size=(n, n)))),  # no row: refused
             Stroke("grass", ((0.0, 60.0), (127.0, 60.0)), 4.0),
             UpdateBrush("sky", prompt="white snow"),
             RemoveBrush("grass"),  # its row frees: the sun takes it
             Stroke("sun", ((20.0, 20.0), (90.0, 30.0)), 6.0)]  # fmt: skip
    stepped = semdraw.Stream(toy, layers=2, seed=0, seed_step=0)
    sync = StreamSync(stepped)
    sync.apply(start)
    refusals = []
    for e in edits:
        refusals.append(sync.edit(e).refused)
    final = start
    for e in edits:
        final = apply(final, e)
    assert sync.applied == final and refusals[1] == ("sun",) and refusals[-1] == ()
    direct = semdraw.Stream(toy, layers=2, seed=0, seed_step=0)
    StreamSync(direct).apply(final)
    stepped.flush()
    direct.flush()
    assert np.abs(stepped().astype(int) - direct().astype(int)).max() <= 1


def test_a_sampling_edit_on_a_made_stream_is_said_and_the_shown_composition_keeps_the_streams(toy):
    """A stream's steps are fixed when it is made: a SetSampling edit is not silently dropped; the painter
    reads why, and the composition written (shown) renders as the stream does."""
    n = toy.native_size
    start = Composition(n, n, (BrushSpec("sky", "blue sky", mask(0, n // 2, size=(n, n))),), seed=4)
    stream = semdraw.Stream(toy, layers=2, seed=0, seed_step=0)
    sync = StreamSync(stream)
    sync.apply(start)
    assert sync.messages() == [] and sync.sampling == start.sampling
    sync.edit(SetSampling(SamplingSpec(steps=stream.steps + 1)))
    assert sync.applied.sampling.steps == stream.steps + 1
    assert any("sampling options not applied" in m and f"{stream.steps} steps" in m for m in sync.messages())
    assert sync.shown().sampling == start.sampling
    sync.edit(SetSampling(start.sampling))  # back to the stream's own: nothing more to say
    assert sync.messages() == []


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(edit_values, max_size=8), st.lists(edit_values, max_size=8))
def test_a_diff_of_two_compositions_applied_gives_the_second(first, second):
    """Fuzzed: whatever two compositions the edits make, ``diff(a, b)`` applied to a gives b exactly."""
    from semdraw.edits import diff

    a = b = Composition(H, W)
    for edit in first:
        with contextlib.suppress(ContractError):
            a = apply(a, edit)
    b = a
    for edit in second:
        with contextlib.suppress(ContractError):
            b = apply(b, edit)
    for start, end in ((a, b), (b, a), (Composition(H, W), b)):
        out = start
        for edit in diff(start, end):
            out = apply(out, edit)
        assert out == end
    assert diff(a, a) == []
