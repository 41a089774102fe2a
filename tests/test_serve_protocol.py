"""semdraw-serve without Ray: the protocol values, the session order, the outbox's backpressure (fuzzed)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semdraw.api import BrushSpec, Composition, ContractError, StreamConfig
from semdraw.edits import SetSeed, Stroke, edit_to_dict
from semdraw.serve.connection import Outbox
from semdraw.serve.protocol import (
    FRAME_HEADER,
    MAX_CONTROL_BYTES,
    MAX_IN_FLIGHT,
    Hello,
    ProtocolError,
    check_sizes,
    mask_png_limit,
    pack_frame,
    parse,
    read_edit,
    unpack_frame,
)
from semdraw.serve.sessions import SessionDenied, SessionTable
from semdraw.serve.ticks import FrameGate

from .conftest import free_port

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def composition() -> Composition:
    m = np.zeros((8, 8), np.uint8)
    m[:4] = 255
    return Composition(8, 8, (BrushSpec("sky", "blue sky", m),), seed=2)


def test_frames_and_hellos_round_trip_and_say_what_is_wrong():
    data = pack_frame(7, 3, b"\x89PNG...", "png")
    assert len(data) == FRAME_HEADER.size + 7 and unpack_frame(data) == (7, 3, "png", b"\x89PNG...")
    hello = Hello("t", composition(), StreamConfig(layers=2, seed_step=0), "s", "k", "png")
    assert Hello.from_message(parse(hello.to_json())) == hello
    for spoil, says in (({"protocol": 2}, "protocol 1"), ({"frame_format": "gif"}, "frame_format"),
                        ({"token": 5}, "token must be text"), ({"composition": {"height": 8}}, "missing")):  # fmt: skip
        with pytest.raises(ContractError, match=says):
            Hello.from_message({**json.loads(hello.to_json()), **spoil})
    with pytest.raises(ProtocolError, match="bad magic"):
        unpack_frame(b"XXXX" + data[4:])
    with pytest.raises(ProtocolError, match="seq"):
        read_edit({"type": "edit", "seq": -1, "edit": edit_to_dict(SetSeed(1))})


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(
        ["type", "protocol", "token", "composition", "stream", "seq", "edit", "frame_format", "x"]), inner, max_size=5),
    max_leaves=20,
)  # fmt: skip


@FAST
@given(st.binary(max_size=200) | JSON.map(lambda v: json.dumps(v).encode()))
def test_any_client_message_is_read_or_refused_with_the_contract_error(data):
    """What a server reads from a client (fuzzed): the only exception that escapes is ContractError (of
    which ProtocolError is one), so a bad client is answered, never a crashed handler."""
    with contextlib.suppress(ContractError):
        message = parse(data)
        with contextlib.suppress(ContractError):
            Hello.from_message(message)
        read_edit(message)


def test_a_session_orders_edits_once_and_lagging_readers_catch_up_or_take_the_composition():
    table = SessionTable()
    opened = table.open(composition().to_json())
    sid, token = opened["session"], opened["token"]
    log = table.get(sid)
    stroke = edit_to_dict(Stroke("sky", ((1.0, 6.0),), 1.0))
    assert [log.submit(stroke, "a#1"), log.submit(edit_to_dict(SetSeed(9)), "b#1")] == [1, 2]
    assert [e[0] for e in log.since(0)] == [1, 2] and log.since(2) == []
    with pytest.raises(ContractError):
        log.submit({"edit": "remove_brush", "name": "nope"}, "a#2")
    assert log.seq == 2 and log.composition.seed == 9  # a refused edit takes no place in the order
    joined = table.open(composition().to_json(), sid, token)  # a joiner gets the session's composition, not its own
    assert Composition.from_json(joined["composition"]) == log.composition and joined["seq"] == 2
    with pytest.raises(SessionDenied, match="wrong session token"):
        table.open(composition().to_json(), sid, "x" * 24)
    restored = SessionTable().open(composition().to_json(), sid, token)  # a lost store: restored from the client
    assert restored["session"] == sid and Composition.from_json(restored["composition"]) == composition()
    with pytest.raises(SessionDenied):
        SessionTable().open(composition().to_json(), sid, "short")
    log.edits.clear()
    log.seq += 5
    assert log.since(1) is None  # edits no longer kept: the reader takes the composition


def test_an_outbox_keeps_only_the_newest_frame_and_waits_for_acknowledgements():
    class Socket:
        def __init__(self) -> None:
            self.sent: list = []

        async def send_text(self, text: str) -> None:
            self.sent.append(text)

        async def send_bytes(self, data: bytes) -> None:
            self.sent.append(data)

    async def run() -> list:
        box, ws = Outbox(), Socket()
        pump = asyncio.create_task(box.pump(ws))
        for i in range(10):  # a client that never acknowledges: two frames go out, the rest wait or are dropped
            box.offer(bytes([i]))
            await asyncio.sleep(0)
        box.say("status")
        await asyncio.sleep(0.01)
        assert [m for m in ws.sent if isinstance(m, bytes)] == [b"\x00", b"\x01"][:MAX_IN_FLIGHT]
        assert box.frame == b"\x09" and box.dropped == 7 and "status" in ws.sent
        box.acked()
        await asyncio.sleep(0.01)
        pump.cancel()
        return ws.sent

    sent = asyncio.run(run())
    assert sent[-1] == b"\x09"  # after an acknowledgement, the newest frame, never the stale ones


def test_a_frame_gate_labels_frames_with_the_edits_they_wholly_reflect_and_never_hides_a_newer_one():
    """A frame leaves the pipeline ``steps`` ticks after its image entered: it reflects the label of that
    tick. An unchanged picture is not sent again, unless it reflects newer edits (a client waiting for
    its edit would otherwise wait forever when an earlier, conservatively labelled frame already showed it)."""
    a, b = np.zeros((2, 2, 3), np.uint8), np.full((2, 2, 3), 9, np.uint8)
    gate, steps = FrameGate(), 3
    assert [gate.admit(None, 0, steps), gate.admit(a, 0, steps)] == [None, None]  # the pipeline fills
    assert gate.admit(a, 0, steps) == 0 and gate.frames == 1
    assert gate.admit(a, 0, steps) is None  # an idle painter: nothing new to send
    # edit 1 reached the stream during a tick that still claimed 0: its picture (b) leaves labelled 0 ...
    assert [gate.admit(b, 0, steps), gate.admit(b, 1, steps), gate.admit(b, 1, steps)] == [0, None, None]
    # ... and the same picture is sent once more when the window holds only images that entered after edit 1
    assert gate.admit(b, 1, steps) == 1 and gate.frames == 3
    assert gate.admit(b, 1, steps) is None
    assert gate.admit(a, None, steps) is None and not gate.labels  # the stream was reset: start over
    assert [gate.admit(a, 2, steps) for _ in range(3)] == [None, None, 2]


def test_the_wire_limits_count_the_json_beside_the_images_and_bound_each_mask_png_by_the_canvas():
    """64 KB of JSON beside the images; a mask PNG at most a raw mask of the canvas. A composition whose
    masks are noise (PNG compresses nothing) passes however large the message; a PNG of a larger picture,
    or padded JSON, does not."""
    rng = np.random.default_rng(0)
    noise = [BrushSpec(f"b{i}", "blue sky", rng.integers(0, 256, (128, 128), np.uint8)) for i in range(8)]
    hello = Hello("t", Composition(128, 128, tuple(noise))).to_json()
    assert len(hello) > 2 * MAX_CONTROL_BYTES  # the images are most of it
    check_sizes(parse(hello), len(hello), (128, 128))
    with pytest.raises(ProtocolError, match="larger than a raw 64x64 mask"):
        check_sizes(parse(hello), len(hello), (64, 64))  # the same PNGs, from a smaller canvas's client
    padded = json.dumps({"type": "edit", "seq": 1, "edit": {"edit": "set_seed", "seed": 1}, "pad": "x" * MAX_CONTROL_BYTES})
    with pytest.raises(ProtocolError, match="64 KB"):
        check_sizes(parse(padded), len(padded), (128, 128))
    nested = {"type": "x", "a": [{"b": {"mask": "A" * 4 * (mask_png_limit(8, 8) // 3 + 1)}}]}  # found at any depth
    with pytest.raises(ProtocolError, match="mask PNG"):
        check_sizes(nested, len(json.dumps(nested)), (8, 8))


def test_the_serve_bench_meters_each_serving_process_by_its_ray_title():
    """`semdraw-bench serve`'s CPU split (Linux /proc): a process titled as Ray titles Serve's proxy, spinning
    for the measured period, is metered as about one core of "proxy"; this process's spin as "clients"."""
    import subprocess
    import sys

    from semdraw.tools.bench_serve import CpuMeter

    if not os.path.exists("/proc/self/stat"):
        pytest.skip("needs Linux's /proc")
    spin = "import time\nend = time.time() + 4\nwhile time.time() < end: pass"
    proxy = subprocess.Popen(["bash", "-c", 'exec -a "ray::ProxyActor" "$0" -c "$1"', sys.executable, spin])
    try:
        time.sleep(0.5)  # it has started spinning
        meter = CpuMeter()
        meter.start()
        end = time.perf_counter() + 1.5
        while time.perf_counter() < end:
            pass
        meter.stop()
    finally:
        proxy.wait(timeout=30)
    cores = meter.result
    assert set(cores) == {"replica", "proxy", "store", "clients", "other"}
    assert 0.6 <= cores["proxy"] <= 1.1 and 0.6 <= cores["clients"] <= 1.1, cores
    assert cores["replica"] <= 0.05 and cores["store"] <= 0.05  # none runs here


def test_the_serve_bench_counts_the_in_process_rows_of_the_same_strokes_apart_from_its_capacity():
    """The in-process side of `semdraw-bench serve`: with strokes once a second in real time the host idles
    between them (far fewer rows than flat out, a stroke every tick); with strokes faster than it ticks it
    is flat out too (the same rows within this machine's noise)."""
    import argparse

    from semdraw.tools.bench_serve import _in_process_rows

    def rows(edit_hz: float):
        args = argparse.Namespace(engines=None, backend="torch", ticks=20, seconds=2.0, edit_hz=edit_hz)
        return _in_process_rows(1, 128, args, threads=1)  # the toy's canvas

    slow, fast = rows(1.0), rows(1000.0)
    assert 0 < slow.same_strokes < 0.5 * slow.flat_out, slow
    assert 0.6 * fast.flat_out < fast.same_strokes < 1.5 * fast.flat_out, fast


def test_the_serve_bench_takes_the_served_rows_of_its_measured_period_from_the_replicas_counts():
    from semdraw.tools.bench_serve import _rows_between

    before = {"by_replica": {"a": {"rows_total": 1000, "rows_per_second": 7.0},
                             "b": {"rows_total": 50, "rows_per_second": 3.0}}}  # fmt: skip
    after = {"by_replica": {"a": {"rows_total": 3000, "rows_per_second": 9.0},  # 2000 rows in 10 s
                            "b": {"rows_total": 10, "rows_per_second": 4.0},  # restarted: its own rate
                            "c": {"rows_total": 500, "rows_per_second": 5.0}}}  # new: its own rate
    assert _rows_between(before, after, 10.0) == pytest.approx(200.0 + 4.0 + 5.0)


@pytest.mark.parametrize("args, says", [
    (["--model", "no-such-model"], "is not a preset"),
    (["--model", "weights.ckpt"], "pickled checkpoints are refused"),
    (["--model", "semdraw-tests/no-such-model"], "could not load"),  # a hub id: neither cached nor reachable
    (["--engines", "/nonexistent/set"], "is not an engine set"),
    (["--model", "toy", "--height", "100"], "not divisible by 8"),
])  # fmt: skip
def test_the_command_refuses_a_model_or_engine_set_it_cannot_serve_in_one_line_before_ray_starts(args, says, caplog):
    ray = pytest.importorskip("ray")
    from semdraw.serve import cli

    started = time.monotonic()
    assert cli.main([*args, "--port", str(free_port())]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and says in errors[0] and "\n" not in errors[0], errors
    assert not ray.is_initialized() and time.monotonic() - started < 30  # no Ray instance was started for it


def test_the_command_refuses_a_port_something_else_listens_on_before_ray_starts(caplog):
    import socket

    ray = pytest.importorskip("ray")
    from semdraw.serve import cli

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli.main(["--port", str(port)]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and f"cannot listen on 127.0.0.1:{port}" in errors[0], errors
    assert not ray.is_initialized()


def test_the_command_refuses_an_haproxy_port_something_else_listens_on_before_ray_starts(caplog, monkeypatch):
    """--ingress haproxy also listens on HAProxy's statistics and metrics ports, on every interface."""
    import socket

    ray = pytest.importorskip("ray")
    from semdraw.serve import cli

    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("RAY_SERVE_HAPROXY_METRICS_PORT", str(port))
        assert cli.main(["--ingress", "haproxy", "--port", str(free_port())]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and f"cannot listen on port {port}" in errors[0], errors
    assert "RAY_SERVE_HAPROXY_METRICS_PORT" in errors[0] and not ray.is_initialized()


def test_the_serve_bench_refuses_a_folder_that_is_no_engine_set_before_ray_starts(tmp_path, caplog):
    ray = pytest.importorskip("ray")
    from semdraw.tools import bench

    assert bench.main(["serve", "--engines", str(tmp_path / "no-set"), "--painters", "1"]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "is not an engine set" in errors[0], errors
    assert not ray.is_initialized()


def test_the_command_refuses_a_max_replicas_below_replicas(capsys):
    pytest.importorskip("ray")
    from semdraw.serve import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(["--replicas", "2", "--max-replicas", "1"])
    assert exit_.value.code == 2 and "--max-replicas 1 is below --replicas 2" in capsys.readouterr().err
