"""semdraw.StreamHost: many painters, one denoiser call per tick; each painter gets its own Stream's frames."""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time

import numpy as np
import pytest
import torch

import semdraw
from semdraw import Background, Brush, Stream, StreamHost
from semdraw.build_engines import BuildOptions, build
from semdraw.toy.architecture import SIZE

from .test_stream import rss_mb

H = W = SIZE


def square(y: int, x: int, side: int = SIZE // 4) -> torch.Tensor:
    m = torch.zeros(H, W)
    m[y : y + side, x : x + side] = 1
    return m


def halves() -> tuple[torch.Tensor, torch.Tensor]:
    top, bottom = torch.zeros(H, W), torch.zeros(H, W)
    top[: H // 2], bottom[H // 2 :] = 1, 1
    return top, bottom


# Three painters: different brushes, prompts, seeds and options. "b" never edits with seed_step 0 (it goes
# idle), "c" joins mid-stream, "a" leaves before the end.
PAINTERS = {
    "a": dict(options=dict(layers=3, seed=1), brushes=[Brush("blue sky", halves()[0]), Brush("green grass", halves()[1]),
                                                      Brush("a red circle", square(40, 8), mask_std=2.0)]),
    "b": dict(options=dict(layers=2, seed=7, seed_step=0), brushes=[Brush("a yellow sun", square(8, 36))],
              background=Background(prompt="white snow")),
    "c": dict(options=dict(layers=2, seed=11), brushes=[Brush("a blue square", square(20, 20, 24))]),
}  # fmt: skip
JOIN = {"a": 0, "b": 0, "c": 3}
LEAVE = {"a": 10}
TICKS = 14


def set_up(stream: Stream, spec: dict) -> None:
    for i, brush in enumerate(spec["brushes"]):
        stream.set_brush(i, brush)
    if "background" in spec:
        stream.set_background(spec["background"])


def edit(stream: Stream, tick: int) -> None:
    """The painters' edits after their pipelines filled: a moved mask, a new prompt."""
    stream.set_mask(0, square(4 + tick, 4 + 2 * tick)) if tick % 3 == 0 else None
    if tick == 7:
        stream.set_brush(stream.layers - 1, Brush("a pink diamond", square(30, 30)))


class CountingNetworks:
    """Counts the rows of every denoiser call the host makes (outside the host's own counters)."""

    def __init__(self, host: StreamHost) -> None:
        self.calls: list[int] = []
        run = host.networks.denoise

        def denoise(x, t, cond):
            self.calls.append(int(x.shape[0]))
            return run(x, t, cond)

        host.networks = dataclasses.replace(host.networks, denoise=denoise)


def run_painters_against_own_streams(source, model) -> StreamHost:
    """Drive the host through JOIN / LEAVE and the edits; beside it, each painter's own Stream gets the same
    edits. Each painter's frames must be its stream's (<= 1/255); the host's one call per tick must hold
    exactly the rows its painters' own streams ran (counted at the denoiser)."""
    host = StreamHost(source, model=model)
    counting = CountingNetworks(host)
    own: dict[str, Stream] = {}
    joined: dict[str, int] = {}
    for tick in range(TICKS):
        for pid in [p for p, at in JOIN.items() if at == tick]:
            spec = PAINTERS[pid]
            set_up(host.join(pid, **spec["options"]).stream, spec)
            own[pid] = Stream(source, model=model, **spec["options"])
            set_up(own[pid], spec)
            joined[pid] = tick
        for pid in [p for p, at in LEAVE.items() if at == tick]:
            host.leave(pid)
            del own[pid]
        T = next(iter(own.values())).steps
        for pid, stream in own.items():  # edits after the fill, to the painter and to its own stream alike
            if pid != "b" and tick - joined[pid] >= T:
                edit(host.painters[pid].stream, tick)
                edit(stream, tick)
        calls_before = len(counting.calls)
        frames = host.tick()
        assert len(counting.calls) - calls_before <= 1, "one denoiser call per tick"
        assert set(frames) == set(own), "every painter advances once per tick"
        own_rows, steady = 0, True
        for pid, stream in own.items():
            age = tick - joined[pid]
            if age < T - 1:
                assert frames[pid] is None, (pid, tick)  # its pipeline is filling
                steady = False
                continue
            steady = steady and age > T - 1  # a first frame: its own stream ran T steps in that one call
            before = stream.rows_computed
            reference = stream()
            own_rows += stream.rows_computed - before
            assert frames[pid] is not None, (pid, tick)
            assert np.abs(frames[pid].astype(int) - reference.astype(int)).max() <= 1, (pid, tick)
        if steady:
            assert sum(counting.calls[calls_before:]) == own_rows, tick
    assert host.painters["b"].counters.idle > 0, "the painter that never edits went idle"
    return host


def test_each_painter_gets_its_own_streams_frames_torch(toy):
    host = run_painters_against_own_streams(toy, None)
    assert set(host.painters) == {"b", "c"}
    assert host.painters["c"].counters.ticks == TICKS - JOIN["c"]


def test_each_painter_gets_its_own_streams_frames_onnxruntime(toy, tmp_path):
    out = tmp_path / "toy"
    build(BuildOptions(model="toy", backend="onnx", layers=3, out=out))
    engines = semdraw.load_engines(out, "onnxruntime", text=False)
    host = run_painters_against_own_streams(engines, toy)
    assert host.networks.backend == "onnxruntime"


def test_capacity_and_canvas_belong_to_the_host(toy):
    host = StreamHost(toy, capacity_rows=13, layers=3)
    first = host.join()
    assert first.stream.batch_rows == 3 * first.stream.steps == 6, "the capacity below assumes the toy's 2 steps"
    host.join()
    with pytest.raises(semdraw.HostFullError, match="12 of 13 rows"):
        host.join()
    assert host.join(layers=1, steps=1).stream.batch_rows == 1  # a smaller painter still fits
    with pytest.raises(semdraw.HostFullError, match="already"):
        host.join(first.id)
    with pytest.raises(semdraw.ConfigError, match="belong to the host"):
        host.join(height=32)
    with pytest.raises(semdraw.ConfigError, match="no painter"):
        host.leave("nobody")


def test_painters_join_and_leave_from_another_thread_between_ticks(toy):
    """A thread that keeps joining and leaving painters while ticks run: every tick serves the steady
    painter and only painters that joined, and no tick or join fails or waits forever."""
    host = StreamHost(toy, layers=2, seed_step=0)
    set_up(host.join("a", seed=1).stream, {"brushes": [Brush("blue sky", halves()[0])]})
    stop, errors, joins = threading.Event(), [], [0]

    def churn() -> None:
        try:
            while not stop.is_set():
                painter = host.join(f"p{joins[0]}", seed=joins[0])
                painter.stream.set_brush(0, Brush("a red circle", square(8, 8)))
                joins[0] += 1
                time.sleep(0.005)
                host.leave(painter)
        except BaseException as err:  # reported by the main thread
            errors.append(err)

    thread = threading.Thread(target=churn, daemon=True)
    thread.start()
    try:
        for _ in range(40):
            frames = host.tick()
            assert "a" in frames and set(frames) <= {"a"} | {f"p{i}" for i in range(joins[0] + 1)}
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive() and not errors, errors
    assert joins[0] > 3 and host.painters["a"].counters.ticks == 40


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc to read the memory in use")
def test_host_soak_with_concurrent_edits(toy):
    """10,000 ticks of 3 painters while two other threads edit their masks and seeds: no error, no
    deadlock, resident memory flat after warm-up (the curve is printed every 1000 ticks)."""
    host = StreamHost(toy)
    for pid in "abc":
        set_up(host.join(pid, **PAINTERS[pid]["options"]).stream, PAINTERS[pid])
    stop = threading.Event()
    errors: list[BaseException] = []

    def editor(pid: str, seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            while not stop.is_set():
                stream = host.painters[pid].stream
                y, x = (int(v) for v in rng.integers(0, W - 16, 2))
                stream.set_mask(0, square(y, x), mask_std=float(rng.uniform(0, 3)))
                if rng.random() < 0.1:
                    stream.set_seed(int(rng.integers(0, 1000)))
                time.sleep(0.01)  # a painter's stroke sends an edit every few ms; the window, once a tick
        except BaseException as err:  # reported by the main thread
            errors.append(err)

    threads = [threading.Thread(target=editor, args=(p, i), daemon=True) for i, p in enumerate("ac")]
    for t in threads:
        t.start()
    curve = []
    try:
        for tick in range(10_000):
            frames = host.tick()
            assert set(frames) == set("abc")
            if tick % 1000 == 999:
                curve.append(round(rss_mb()))
                print(f"tick {tick + 1}: {curve[-1]} MB resident", file=sys.stderr, flush=True)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
    assert not any(t.is_alive() for t in threads), "an editing thread deadlocked"
    assert not errors, errors
    print(f"resident memory (MB) every 1000 ticks: {curve}")
    assert curve[-1] - curve[1] < 50, f"memory grew from {curve[1]} to {curve[-1]} MB"


def test_generate_runs_on_an_engine_set_through_the_same_network_contract(toy, tmp_path):
    """One network contract: generate() on an onnxruntime engine set gives the torch model's image, and the
    timing hook sees every network call (what semdraw-bench times with, instead of patching the model)."""
    out = tmp_path / "toy"
    build(BuildOptions(model="toy", backend="onnx", layers=2, out=out))
    engines = semdraw.load_engines(out, "onnxruntime")
    top, bottom = halves()
    brushes = [Brush("blue sky", top), Brush("a red circle", square(36, 8), mask_std=2.0)]
    on_set = semdraw.generate(engines, brushes, seed=5, output_type="latent")
    on_torch = semdraw.generate(toy, brushes, seed=5, output_type="latent")
    torch.testing.assert_close(on_set, on_torch, rtol=0, atol=1e-3)
    calls: list[tuple[str, int]] = []
    timed = semdraw.Networks.from_model(toy).timed(lambda name, seconds, rows: calls.append((name, rows)))
    image = semdraw.generate(toy, brushes, seed=5, output_type="np", networks=timed)
    steps = toy.schedule().steps
    assert [c for c in calls if c[0] == "denoiser"] == [("denoiser", 2)] * steps  # two brushes, one call a step
    assert calls[-1] == ("decoder", 1) and image.shape == (H, W, 3)
    with pytest.raises(semdraw.ConfigError, match="one tile"):
        semdraw.generate(engines, brushes, tile_size=32)
