"""Recorded painting sessions: the file format (round trip, every bad file one ContractError, fuzzed), the
window's recorder, the three shipped sessions, and `semdraw-bench session` replaying one on the toy."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import semdraw
from semdraw.api import BrushSpec, Composition, ContractError, StreamConfig
from semdraw.edits import SetBrush, SetSeed, Stroke, UpdateBrush, apply
from semdraw.recording import Recorder, Recording
from semdraw.tools import bench, bench_session
from semdraw.viewer.session import LiveSession

H = W = 16


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def small_recording() -> Recording:
    clock = Clock()
    recorder = Recorder(Composition(H, W), StreamConfig(layers=2, seed_step=0), model="toy", clock=clock)
    for dt, edit in ((0.5, SetBrush(BrushSpec("sky", "", np.zeros((H, W), np.uint8)))),
                     (0.25, Stroke("sky", ((0.0, 2.0), (15.0, 2.0)), 2.0)), (3.0, UpdateBrush("sky", prompt="blue sky")),
                     (0.0, SetSeed(7))):  # fmt: skip
        clock.now += dt
        recorder.record(edit)
    clock.now += 1.5
    return recorder.recording()


def test_a_recording_round_trips_and_replays_to_the_composition_its_edits_make():
    r = small_recording()
    assert [e.t for e in r.edits] == [0.5, 0.75, 3.75, 3.75] and r.duration_s == 5.25
    again = Recording.from_json(r.to_json())
    assert again == r
    expected = Composition(H, W)
    for timed in r.edits:
        expected = apply(expected, timed.edit)
    assert again.final() == expected and expected.seed == 7 and expected.brushes[0].mask[2].all()
    assert [t for t, _ in again.compositions()] == [e.t for e in r.edits]


@pytest.mark.parametrize(("change", "says"), [
    (lambda d: d.update(kind="palette"), "not a semdraw recording"),
    (lambda d: d.update(format=2), "newer than this semdraw reads"),
    (lambda d: d.update(extra=1), "unknown keys"),
    (lambda d: d["edits"][2].update(t=0.1), "never back"),
    (lambda d: d["edits"][3].update(t=99.0), "never back"),
    (lambda d: d.update(duration_s=-1.0), "finite number >= 0"),
    (lambda d: d["edits"].insert(0, {"t": 0.0, "edit": {"edit": "remove_brush", "name": "sun"}}), "does not apply"),
    (lambda d: d["edits"][0].update(edit={"edit": "paint"}), "unknown edit"),
    (lambda d: d["edits"].append([1.0]), 'with "t" and "edit"'),
])  # fmt: skip
def test_a_bad_recording_is_one_contract_error_that_says_what(change, says):
    data = json.loads(small_recording().to_json())
    change(data)
    with pytest.raises(ContractError, match=says):
        Recording.from_json(json.dumps(data))


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=20)  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values, st.sampled_from(["", "kind", "format", "duration_s", "stream", "start", "edits", "note"]))
def test_any_json_in_place_of_a_recording_or_one_of_its_values_is_read_or_one_contract_error(value, key):
    data = json.loads(small_recording().to_json())
    if key:
        data[key] = value
    else:
        data = value
    with contextlib.suppress(ContractError):
        Recording.from_json(json.dumps(data))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_any_bytes_are_a_recording_or_one_contract_error(data):
    with contextlib.suppress(ContractError):
        Recording.from_json(data)


def test_the_window_records_every_edit_it_takes_and_only_those(toy, tmp_path):
    stream = semdraw.Stream(toy, layers=2, seed=0, seed_step=0)
    s = LiveSession(stream, None, tmp_path)
    clock = Clock()
    s.recorder = Recorder(s.composition, StreamConfig(layers=2, seed_step=0), clock=clock)
    s.paint(10, 10, stroke_start=True)
    clock.now += 0.2
    s.paint(40, 10)
    s.end_stroke()
    s.begin_text("prompt")
    s.text.text = "a red circle"
    s.commit_text()
    s.undo()
    assert not s.edit(UpdateBrush("nobody", prompt="x"))  # refused: not recorded
    recording = s.recorder.recording()
    assert recording.final() == s.composition
    assert [type(e.edit).__name__ for e in recording.edits][-2:] == ["UpdateBrush", "SetMask"]  # the undo: a mask


def test_the_shipped_sessions_are_about_a_minute_each_busy_or_with_long_pauses():
    names = bench_session.shipped_sessions()
    assert names == ["landscape", "pauses", "refine"]
    for name in names:
        r = Recording.load(bench_session.resolve(name))  # checked: every edit applies
        gaps = np.diff([0.0] + [e.t for e in r.edits] + [r.duration_s])
        assert 45 <= r.duration_s <= 90 and r.note and r.model == "toy", name
        assert sum(isinstance(e.edit, Stroke) for e in r.edits) >= 100, name
        long_pauses = int((gaps >= 9.5).sum())
        assert long_pauses >= 3 if name == "pauses" else long_pauses == 0, (name, sorted(gaps)[-3:])
        assert r.final() != r.start


def test_the_session_bench_replays_the_same_frames_for_less_and_measures_latency(tmp_path, capsys):
    """The pauses session's first 9 s (still, then the start of a stroke) on the toy: the frame clock gives both
    streams the same frames (compared pixel by pixel), semdraw's with fewer denoiser rows and network
    frames; the real-time clock measures latencies."""
    out = tmp_path / "session.json"
    assert bench.main(["session", "pauses", "--limit-s", "9", "--fps", "8", "--json", str(out)]) == 0
    runs = {(r["clock"], r["stream"]): r for r in json.loads(out.read_text())["runs"]}
    lean, full = runs["frames", "semdraw"], runs["frames", "recompute"]
    assert lean["frames"] == full["frames"] == 72 and full["computed"] == 72
    assert runs["frames", "recompute"]["max_diff_vs_semdraw"] <= 1
    assert lean["computed"] < 0.6 * full["computed"] and lean["rows"] < 0.6 * full["rows"]
    # an empty brush made and named before it has paint changes nothing either stream generates
    assert lean["unseen"] == full["unseen"] >= 2
    realtime = runs["realtime", "semdraw"]
    assert 0 < realtime["first_p50_ms"] <= realtime["settled_p50_ms"] < 9_000
    assert "recompute / semdraw CPU" in capsys.readouterr().out


def test_the_session_bench_refuses_what_it_cannot_replay(tmp_path, caplog):
    assert bench.main(["session", str(tmp_path / "missing.json")]) == 2
    assert "no such recording" in caplog.text
    Recording(Composition(8, 8), duration_s=2.0).save(tmp_path / "other.json")
    caplog.clear()
    assert bench.main(["session", str(tmp_path / "other.json"), "--limit-s", "1"]) == 2
    assert "8x8" in caplog.text and "128x128" in caplog.text
    with pytest.raises(SystemExit):  # argparse's one-line usage error, before anything loads
        bench.main(["session", "pauses", "--limit-s", "0"])

