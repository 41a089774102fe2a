"""A replica without Ray (its tick loop over a real host of the toy): health reporting when the networks fail."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import numpy as np

import semdraw
from semdraw.api import BrushSpec, Composition
from semdraw.serve.replica import Replica


def test_a_replica_whose_networks_keep_failing_says_why_and_is_healthy_again_once_they_run(toy):
    """What Serve's health check reads (``Painters.check_health`` raises it, and Serve restarts the
    replica): None while ticks succeed, the networks' error after three failed ticks in a row."""
    host = semdraw.StreamHost(toy, layers=3, seed_step=1)  # new noise every image: never idle
    mask = np.zeros((host.height, host.width), np.uint8)
    mask[: host.height // 2] = 255
    painter = host.join("p")
    semdraw.StreamSync(painter.stream).apply(Composition(host.height, host.width, (BrushSpec("sky", "blue sky", mask),)))

    def broken(*_args, **_kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    async def until(condition, seconds: float = 60.0) -> None:
        deadline = time.monotonic() + seconds
        while not condition() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def go():
        replica = Replica(host, store=None, token="t")  # no store: its heartbeat is skipped
        replica.start()
        try:
            await until(lambda: host.ticks >= 2)
            healthy_before = replica.healthy()
            working, host.networks = host.networks, dataclasses.replace(host.networks, denoise=broken)
            await until(lambda: replica.healthy() is not None)  # every tick's denoiser call raises
            failing = replica.healthy()
            host.networks = working  # the networks run again
            await until(lambda: replica.healthy() is None)
            return healthy_before, failing, replica.healthy(), painter.counters.frames
        finally:
            replica.stop()

    before, failing, after, frames_before_stop = asyncio.run(go())
    assert before is None and after is None
    assert failing is not None and "illegal memory access" in failing and failing.startswith("RuntimeError")
    assert frames_before_stop > 0


def test_tick_stats_report_the_networks_error_only_after_three_failed_ticks_in_a_row():
    from semdraw.serve.ticks import TickStats

    stats = TickStats()
    for _ in range(2):
        stats.failed(RuntimeError("CUDA error: device lost"))
    assert stats.problem() is None  # a tick or two may fail (a transient error): not yet unhealthy
    stats.failed(RuntimeError("CUDA error: device lost"))
    assert stats.problem() == "RuntimeError: CUDA error: device lost"
    stats.ran(rows=6, seconds=0.1)
    stats.ran(rows=6, seconds=0.3)
    assert stats.problem() is None and stats.tick_ms == 200.0 and stats.rows_per_second > 0
