"""semdraw.Stream: oracle 3 (a flushed stream == generate()), live updates, fixed buffers, threads, engines."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time

import numpy as np
import pytest
import torch

import semdraw
from semdraw import Background, Brush, Model, Stream
from semdraw.build_engines import BuildOptions, build
from semdraw.toy.architecture import SIZE

from .conftest import assert_streams_agree, make_tiny_pipeline

H = W = SIZE  # the toy model's native size
PIXEL_TOL = 1  # /255: frames of a flushed stream and generate() (measured: 0, rarely 1 from summation order)
LATENT_TOL = 1e-4


def halves():
    top, bottom = torch.zeros(H, W), torch.zeros(H, W)
    top[: H // 2], bottom[H // 2 :] = 1, 1
    return top, bottom


def small_square(y=5 * SIZE // 8, x=SIZE // 8, side=SIZE // 4):
    m = torch.zeros(H, W)
    m[y : y + side, x : x + side] = 1
    return m


def scene():
    top, bottom = halves()
    return [Brush("blue sky", top), Brush("green grass", bottom), Brush("a red circle", small_square(), mask_std=2.0)]


def stream_of(model, brushes, background=None, **kw):
    s = Stream(model, **kw)
    for i, b in enumerate(brushes):
        s.set_brush(i, b)
    if background is not None:
        s.set_background(background)
    return s


def assert_same_image(frame, latent, model, brushes, seed, **gen):
    ref = semdraw.generate(model, brushes, seed=seed, output_type="latent", **gen)
    torch.testing.assert_close(latent, ref, rtol=0, atol=LATENT_TOL)
    img = semdraw.generate(model, brushes, seed=seed, output_type="np", **gen)
    assert np.abs(frame.astype(int) - img.astype(int)).max() <= PIXEL_TOL


# ---------------------------------------------------------------- oracle 3
@pytest.mark.parametrize(
    "background, options",
    [
        (None, {}),
        (None, {"bootstrap_steps": 2, "centre_steps": 3, "mask_type": "continuous"}),
        (Background(prompt="white snow"), {}),
        (Background(prompt="dark night"), {"cfg": "full", "guidance_scale": 2.5}),
        (Background(prompt="dark night"), {"cfg": "self", "guidance_scale": 2.5}),
        (None, {"cfg": "initialize", "guidance_scale": 2.0}),
        (None, {"centre_steps": 0, "bootstrap_steps": 0, "cover_alpha": None}),
    ],
)
def test_first_frame_after_flush_equals_generate(toy, background, options):
    brushes = scene()
    s = stream_of(toy, brushes, background, layers=4, seed=11, **options)
    frame = s()
    gen = options  # generate() takes the same cfg modes
    assert_same_image(frame, s.last_latent, toy, brushes, 11, background=background, **gen)
    # every later frame is the next seed's image (nothing changed meanwhile)
    frame = s()
    assert_same_image(frame, s.last_latent, toy, brushes, 12, background=background, **gen)


@pytest.mark.parametrize("sampler", ["ddim", "euler"])
def test_ode_samplers_stream_equals_generate(tmp_path, sampler):
    """Deterministic samplers take the no-fresh-noise path (one draw per image; Euler scales the input)."""
    model = Model.from_pipeline(make_tiny_pipeline(tmp_path, scheduler=sampler))
    brushes = scene()
    s = stream_of(model, brushes, layers=3, steps=3, seed=5)
    assert_same_image(s(), s.last_latent, model, brushes, 5, steps=3)


def test_inpainting_over_a_background_image_equals_generate(toy):
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    brushes = scene()[:2]
    bg = Background(image=photo)
    s = stream_of(toy, brushes, bg, layers=2, seed=3)
    assert_same_image(s(), s.last_latent, toy, brushes, 3, background=bg)


def test_empty_slots_change_nothing(toy):
    brushes = scene()[:2]
    s = stream_of(toy, brushes, layers=4, seed=2)  # slots 2 and 3 empty
    assert_same_image(s(), s.last_latent, toy, brushes, 2)


def soft_scene():
    """One soft brush (alpha 0.9: below the first step's noise level, so it joins at step 2) and the sky."""
    top, _ = halves()
    return [Brush("blue sky", top), Brush("a red circle", small_square(), mask_strength=0.9)]


@pytest.mark.parametrize("options", [{}, {"cfg": "full", "guidance_scale": 2.0}, {"cfg": "self", "guidance_scale": 2.0},
                                     {"cfg": "initialize", "guidance_scale": 2.0}])
def test_rows_without_weight_are_not_computed_and_the_frame_is_the_same(toy, options):
    """Two empty slots and a brush that joins late: the torch stream runs only the live rows (counted),
    and its frames equal both the all-rows stream's and generate()'s (oracle 3)."""
    brushes = soft_scene()
    live = stream_of(toy, brushes, layers=4, seed=6, **options)
    full = stream_of(toy, brushes, layers=4, seed=6, live_rows_only=False, **options)
    T = live.steps
    frames = [(live(), full()) for _ in range(3)]
    for a, b in frames:
        assert np.abs(a.astype(int) - b.astype(int)).max() <= PIXEL_TOL
    # the first call fills the pipeline (T steps), then one step per call; all rows: L·T per step, plus the
    # negative rows (full: all of them again; initialize: the L rows of step 0; self: none)
    calls, cfg = T + 2, options.get("cfg", "none")
    negatives = {"none": 0, "self": 0, "full": 4 * T, "initialize": 4}[cfg]
    assert full.rows_computed == calls * (4 * T + negatives) == calls * full.batch_rows
    # live rows per step: the sky at every step, the soft brush from step 2: (2T - 1) of the 4T rows;
    # of the negative rows, the live ones (full: 2T - 1; initialize: the sky's at step 0)
    live_negatives = {"none": 0, "self": 0, "full": 2 * T - 1, "initialize": 1}[cfg]
    assert live.rows_computed == calls * (2 * T - 1 + live_negatives)
    gen = options
    fresh = stream_of(toy, brushes, layers=4, seed=6, **options)
    assert_same_image(fresh(), fresh.last_latent, toy, brushes, 6, **gen)


def test_a_stream_with_nothing_painted_runs_no_row(toy):
    s = Stream(toy, layers=3, seed=0)
    frame = s()
    assert s.rows_computed == 0 and frame.shape == (H, W, 3)
    assert_same_image(frame, s.last_latent, toy, [], 0)


def test_stream_is_reproducible_from_its_seed_and_flush_restarts_it(toy):
    a = stream_of(toy, scene(), layers=3, seed=9)
    b = stream_of(toy, scene(), layers=3, seed=9)
    frames_a = [a() for _ in range(5)]
    frames_b = [b() for _ in range(5)]
    assert all(np.array_equal(x, y) for x, y in zip(frames_a, frames_b, strict=True))
    assert not np.array_equal(frames_a[0], frames_a[1])  # successive images use successive seeds
    a.flush()
    assert np.array_equal(a(), frames_a[0])


def test_seed_step_zero_holds_the_picture_still(toy):
    s = stream_of(toy, scene(), layers=3, seed=6, seed_step=0)
    first, second = s(), s()
    assert np.array_equal(first, second)
    assert_same_image(second, s.last_latent, toy, scene(), 6)


def test_set_seed_takes_effect_for_new_images(toy):
    s = stream_of(toy, scene(), layers=3, seed=0)
    s()
    s.set_seed(40)
    frames = [s() for _ in range(s.steps)]  # the image of seed 40 entered at the first of these calls
    assert_same_image(frames[-1], s.last_latent, toy, scene(), 40)


# ---------------------------------------------------------------- live updates
def count_encodings(model, monkeypatch):
    calls: list[str] = []
    original = model.prompts._encode_uncached

    def counting(text):
        calls.append(text)
        return original(text)

    monkeypatch.setattr(model.prompts, "_encode_uncached", counting)
    return calls


def test_mask_change_applies_next_frame_without_encoding_or_flush(toy, monkeypatch):
    brushes = scene()
    s = stream_of(toy, brushes, layers=3, seed=21)
    before = s()
    calls = count_encodings(toy, monkeypatch)
    moved = Brush("a red circle", small_square(8, 40), mask_std=2.0)
    s.set_mask(2, moved.mask)
    after = s()
    assert calls == []  # the fast path: no text encoding
    assert not np.array_equal(before, after)  # applied at once, to the images in flight
    # images that entered after the change saw only the new mask: the T-th frame is generate() exactly
    for _ in range(s.steps - 1):
        frame = s()
    new = [*brushes[:2], moved]
    assert_same_image(frame, s.last_latent, toy, new, 21 + s.steps)  # seeds 21..24 were in flight


def test_prompt_change_encodes_only_that_prompt(toy, monkeypatch):
    s = stream_of(toy, scene(), layers=3, seed=0)
    s()
    calls = count_encodings(toy, monkeypatch)
    s.set_brush(1, Brush("yellow sand", halves()[1]))
    s()
    assert calls == ["yellow sand"]


def test_capacity_errors_are_clear(toy):
    s = stream_of(toy, scene(), layers=3)
    with pytest.raises(semdraw.ConfigError, match="slot"):
        s.set_brush(3, Brush("blue sky", halves()[0]))
    with pytest.raises(semdraw.ConfigError, match="prompt rows"):
        s.set_background(Background(prompt="white snow"))  # 3 brushes + a background prompt > 3 rows
    s.remove_brush(2)
    s.set_background(Background(prompt="white snow"))
    assert s.capacity == 2
    with pytest.raises(semdraw.ConfigError, match="layers=4"):
        s.set_brush(2, Brush("a red circle", small_square()))
    with pytest.raises(semdraw.ConfigError, match="holds no brush"):
        s.set_mask(2, small_square())
    with pytest.raises(semdraw.ConfigError, match="cfg='full'"):
        Stream(toy, guidance_scale=3.0)
    with pytest.raises(semdraw.ConfigError, match="engine set"):
        Stream(toy, backend="onnxruntime")


def test_buffers_are_allocated_once(toy):
    s = stream_of(toy, scene(), layers=3, seed=0)
    s()
    owned = {"x": s._ring.x, "noise": s._ring.noise, **s._tables.buffers}
    pointers = {k: v.data_ptr() for k, v in owned.items()}
    for i in range(3 * s.steps):
        if i % 4 == 0:
            s.set_mask(2, small_square(8 + i, 8 + i))
        s()
    assert {k: v.data_ptr() for k, v in {"x": s._ring.x, "noise": s._ring.noise, **s._tables.buffers}.items()} == pointers


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc to read the memory in use")
def test_soak_with_concurrent_edits(toy):
    """140 frames while another thread edits masks and prompts: no exception, no deadlock, memory flat."""
    s = stream_of(toy, scene(), layers=4, seed=0)
    stop = threading.Event()
    errors: list[BaseException] = []
    prompts = ["a red circle", "a blue square", "a yellow sun", "a pink diamond"]

    def editor():
        rng = np.random.default_rng(0)
        i = 0
        try:
            while not stop.is_set():
                y, x = (int(v) for v in rng.integers(0, W - 16, 2))
                s.set_mask(2, small_square(y, x), mask_std=float(rng.uniform(0, 3)))
                if i % 5 == 0:  # a 4th brush needs the background prompt's row
                    s.set_background(Background())
                    s.set_brush(3, Brush(prompts[i % len(prompts)], small_square(x, y)))
                if i % 7 == 0:
                    s.remove_brush(3)
                    s.set_background(Background(prompt="white snow"))
                i += 1
                time.sleep(0.001)
        except BaseException as err:  # reported by the main thread
            errors.append(err)

    thread = threading.Thread(target=editor, daemon=True)
    thread.start()
    try:
        for _ in range(20):
            s()
        start = rss_mb()
        for _ in range(120):
            frame = s()
            assert frame.shape == (H, W, 3) and frame.dtype == np.uint8
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive(), "the editing thread deadlocked"
    assert not errors, errors
    assert rss_mb() - start < 30, f"memory grew by {rss_mb() - start:.0f} MB over 120 frames"


# ---------------------------------------------------------------- engines
def test_onnxruntime_stream_equals_torch_stream(toy, tmp_path):
    out = tmp_path / "toy"
    build(BuildOptions(model="toy", backend="onnx", layers=3, out=out))
    ort = Stream(out, backend="onnxruntime", model=toy, seed=4)
    assert_streams_agree(ort, Stream(toy, layers=3, seed=4), scene())
    assert ort.networks.backend == "onnxruntime" and ort.networks.any_batch  # the set's ONNX has a row axis
    # live rows only on onnxruntime too: a soft brush and an empty slot, the frames of the all-rows stream
    live = Stream(out, backend="onnxruntime", model=toy, seed=4)
    full = Stream(out, backend="onnxruntime", model=toy, seed=4, live_rows_only=False)
    assert_streams_agree(live, full, soft_scene())
    assert live.rows_computed < full.rows_computed
    # the row axis is dynamic, so layers are the stream's choice, not the set's identity (built with 3)
    assert_streams_agree(Stream(out, backend="onnxruntime", model=toy, layers=4, seed=4), Stream(toy, layers=4, seed=4),
                         [*scene(), Brush("a yellow sun", small_square(8, 40))], frames=1)  # fmt: skip
    with pytest.raises(semdraw.EngineSetError, match="--height 32"):  # the canvas is part of the set
        Stream(out, backend="onnxruntime", model=toy, height=32)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU tier: needs CUDA")
def test_cuda_frames_allocate_nothing(toy):  # pragma: no cover - GPU tier
    """What is checked: after warm-up, 50 frames make no new device allocation (no cudaMalloc: the number of
    allocated segments and the reserved bytes stay flat) and leave no live tensor behind (allocated bytes
    return to the same value). A frame's temporaries (gathers, the denoiser's activations) are served from
    the caching allocator's pool; the stream's own state lives in buffers allocated once (see
    test_buffers_are_allocated_once)."""
    model = semdraw.load_model("toy", device="cuda", dtype=torch.float32)
    s = stream_of(model, scene(), layers=3, seed=0)
    for _ in range(5):
        s()
    torch.cuda.synchronize()
    before = torch.cuda.memory_stats()
    for _ in range(50):
        s()
    torch.cuda.synchronize()
    after = torch.cuda.memory_stats()
    assert after["segment.all.allocated"] == before["segment.all.allocated"]  # no cudaMalloc during frames
    assert after["reserved_bytes.all.current"] == before["reserved_bytes.all.current"]
    assert after["allocated_bytes.all.current"] == before["allocated_bytes.all.current"]  # nothing left live
    assert after["num_alloc_retries"] == before["num_alloc_retries"]


def test_bench_stream_reports_the_split_rows_and_ratios(tmp_path, capsys):
    from semdraw.tools import bench

    out = tmp_path / "toy"
    build(BuildOptions(model="toy", backend="onnx", layers=3, out=out))
    report = tmp_path / "bench.json"
    args = ["stream", "--engines", str(out), "--brushes", "2", "--soft", "0.9", "--all-rows", "--painting", "--compare", "torch",
            "--frames", "3", "--warmup", "1", "--baseline-frames", "1", "--scaling", "1,2", "--json", str(report)]  # fmt: skip
    threads = torch.get_num_threads()
    assert bench.main(args) == 0
    assert torch.get_num_threads() == threads  # one thread beside the set's own while it ran, then as before
    text = capsys.readouterr().out
    assert "| stream | onnxruntime |" in text and "vs one-shot generate()" in text and "idle frame" in text
    payload = json.loads(report.read_text())
    runs = payload["runs"]
    assert [(r["run"], r["backend"]) for r in runs] == [
        ("stream", "onnxruntime"), ("stream, painting", "onnxruntime"), ("stream, all rows", "onnxruntime"),
        ("stream", "torch"), ("one-shot generate()", "torch")]  # fmt: skip
    for r in runs + payload["scaling"]:
        assert r["fps"] > 0 and r["denoiser_ms"] > 0 and r["decoder_ms"] > 0 and 0 <= r["other_share"] < 1
        assert r["ms_per_row"] > 0 and r["cpu_ms_per_frame"] > 0
    T = len(semdraw.toy.default_timesteps())  # the engine set's steps: the toy model's default schedule
    # an empty slot and a soft brush that joins at the second step: 2T - 1 of the 3T rows run, on both backends
    assert runs[0]["rows_per_frame"] == runs[3]["rows_per_frame"] == 2 * T - 1 and runs[2]["rows_per_frame"] == 3 * T
    assert payload["idle"]["rows_per_frame"] == 0  # an idle frame runs no network
    assert [r["denoiser_rows"] for r in payload["scaling"]] == [1 * T, 2 * T]
    assert bench.main(["stream", "--brushes", "3", "--layers", "2"]) == 2  # does not fit: a clear error


def test_idle_frames_run_no_network_and_an_edit_resumes_as_before(toy):
    """seed_step=0 and nothing edited for T frames: frames are the same picture, served without a network
    call; the first frame after an edit equals a stream that never idled, and the steady frame generate()."""
    brushes = scene()
    s = stream_of(toy, brushes, layers=3, seed=3, seed_step=0)
    ref = stream_of(toy, brushes, layers=3, seed=3, seed_step=0, idle_frames=False)
    calls = []
    counting = s.networks.denoise

    def denoise(*args):
        calls.append(1)
        return counting(*args)

    s.networks = dataclasses.replace(s.networks, denoise=denoise)
    frames = [s() for _ in range(3 * s.steps)]
    for _ in range(3 * s.steps):
        ref()
    busy = len(calls)
    assert s.idle and busy <= 2 * s.steps  # a flush (T calls) and T steady frames at most, then nothing
    assert all(np.array_equal(f, frames[-1]) for f in frames[s.steps :])
    moved = Brush("a red circle", small_square(8, 40), mask_std=2.0)
    s.set_mask(2, moved.mask)
    ref.set_mask(2, moved.mask)
    after, expected = s(), ref()
    assert not s.idle and len(calls) == busy + 1  # the edit restarts the pipeline at once
    assert np.array_equal(after, expected)
    for _ in range(s.steps):
        last = s()
    assert_same_image(last, s.last_latent, toy, [*brushes[:2], moved], 3)


@pytest.mark.parametrize("cfg", ["self", "initialize"])
def test_residual_cfg_engine_sets_give_the_torch_streams_frames(toy, tmp_path, cfg):
    """An engine set built for a residual mode has its batch (L·T, or L·T + L) and streams as torch does."""
    out = tmp_path / cfg
    build(BuildOptions(model="toy", backend="onnx", layers=2, cfg=cfg, out=out))
    man = semdraw.engines.read_manifest(out)
    T = len(man.request.timesteps)
    assert man.request.batch == 2 * T + (2 if cfg == "initialize" else 0)
    brushes = scene()[:2]
    ort = Stream(out, backend="onnxruntime", model=toy, seed=3, cfg=cfg, guidance_scale=2.0)
    ref = Stream(toy, layers=2, seed=3, cfg=cfg, guidance_scale=2.0)
    assert_streams_agree(ort, ref, brushes)
    # a dynamic row axis serves the other guidance modes too (cfg is the stream's choice, not the set's)
    assert_streams_agree(Stream(out, backend="onnxruntime", model=toy, seed=3, cfg="full", guidance_scale=2.0),
                         Stream(toy, layers=2, seed=3, cfg="full", guidance_scale=2.0), brushes, frames=1)  # fmt: skip
