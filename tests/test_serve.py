"""semdraw-serve on a real local Ray Serve instance, with real WebSockets (oracle 8): a served painter gets
the frames of an in-process Stream of the same composition; two clients share a canvas; bad handshakes
and a full host are refused with a reason; a killed replica's painter reconnects and its frames resume."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import threading
import time
import urllib.request

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="semdraw-serve needs ray[serve]: pip install -e '.[serve]'")
websockets = pytest.importorskip("websockets")

import semdraw  # noqa: E402
from semdraw.api import BackgroundSpec, BrushSpec, Composition, SamplingSpec, StreamConfig  # noqa: E402
from semdraw.edits import SetSampling, SetSeed, Stroke, UpdateBrush, apply  # noqa: E402
from semdraw.serve.client import PainterClient  # noqa: E402
from semdraw.serve.protocol import Close, Hello, parse  # noqa: E402

from .conftest import SERVE_TOKEN as TOKEN  # noqa: E402
from .conftest import free_port  # noqa: E402

SIDE = 128  # the toy's native canvas
CONFIG = StreamConfig(layers=3, seed_step=0)


def scene(seed: int = 4) -> Composition:
    sky = np.zeros((SIDE, SIDE), np.uint8)
    sky[: SIDE // 2] = 255
    disc = np.zeros((SIDE, SIDE), np.uint8)
    yy, xx = np.mgrid[:SIDE, :SIDE]
    disc[(yy - 90) ** 2 + (xx - 64) ** 2 < 20**2] = 255
    return Composition(SIDE, SIDE, (BrushSpec("sky", "blue sky", sky), BrushSpec("sun", "a red circle", disc)),
                       BackgroundSpec("green grass"), seed=seed).check()  # fmt: skip


def in_process(toy, composition: Composition) -> np.ndarray:
    """The frame an in-process Stream shows for ``composition`` once its pipeline holds only it."""
    stream = semdraw.Stream(toy, **CONFIG.stream_options(composition))
    semdraw.StreamSync(stream).apply(composition)
    stream.flush()
    return stream()


async def settled(client: PainterClient, timeout: float = 60.0, since_welcome: bool = False) -> np.ndarray:
    """The first frame made wholly after every edit the client has seen (its seq), no edit pending (and,
    with ``since_welcome``, received on the current connection)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        f = client.frame
        fresh = not since_welcome or (f is not None and f.received > client.welcomed_at)
        if f is not None and not client.pending and f.seq >= client.seq and fresh:
            return f.image
        await asyncio.sleep(0.05)
    raise AssertionError(f"no settled frame: seq {client.seq}, frame {client.frame and client.frame.seq}, "
                         f"pending {list(client.pending)}, errors {client.errors}")  # fmt: skip


async def reconnected(client: PainterClient, connections: int, timeout: float = 120.0) -> np.ndarray:
    """Once the client has connected again (more than ``connections`` times): its first settled frame on
    the new connection."""
    deadline = time.monotonic() + timeout
    while client.connections <= connections and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert client.connections > connections, client.errors
    return await settled(client, 120, since_welcome=True)


async def edit(client: PainterClient, e) -> None:
    await client.edit(e)


def run(coroutine, timeout: float = 240.0):
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


async def refusal(url: str, hello_text: str, **headers) -> tuple[int | None, str]:
    """The close code a handshake gets and why: its error message, else the close's reason."""
    said = ""
    async with websockets.connect(url, **headers) as ws:
        with contextlib.suppress(websockets.exceptions.ConnectionClosed):  # a refusal may close before the hello
            await ws.send(hello_text)
        with contextlib.suppress(websockets.exceptions.ConnectionClosed):
            async for data in ws:  # what came before the close is still read
                if isinstance(data, str) and parse(data)["type"] == "error":
                    said = parse(data)["message"]
    return ws.close_code, said or ws.close_reason or ""


def test_served_painters_get_the_frames_of_in_process_streams(server, toy):
    """Three painters with different compositions at once (one replica's host batches those that land on
    it): each one's PNG frames are those of an in-process Stream of its composition, before and after edits."""
    scenes = [scene(4), apply(scene(9), UpdateBrush("sun", prompt="a yellow sun")),
              apply(scene(2), SetSeed(13))]  # fmt: skip
    strokes = [Stroke("sun", ((20.0, 20.0), (60.0, 30.0)), 8.0), UpdateBrush("sky", prompt="white snow"),
               Stroke("sky", ((0.0, 90.0), (127.0, 90.0)), 5.0)]  # fmt: skip

    async def go():
        clients = [PainterClient(f"ws://{server}/ws", TOKEN, c, CONFIG) for c in scenes]
        tasks = [asyncio.create_task(c.run()) for c in clients]
        for c in clients:
            await c.wait_connected()
        firsts = [await settled(c) for c in clients]
        for c, e in zip(clients, strokes, strict=True):
            await edit(c, e)
        seconds = [await settled(c) for c in clients]
        for _ in range(100):  # a status comes once a second
            if clients[0].status.get("rows") == {"sky": 0, "sun": 1}:
                break
            await asyncio.sleep(0.1)
        status, after_strokes = clients[0].status, [(c.composition, c.seq) for c in clients]
        # other sampling options: the replica makes the painter a new stream with them
        await edit(clients[2], SetSampling(SamplingSpec(steps=3)))
        resampled = await settled(clients[2])
        for _ in range(100):
            if clients[2].status.get("steps") == 3:
                break
            await asyncio.sleep(0.1)
        for c in clients:
            await c.close()
        await asyncio.gather(*tasks)
        return clients, firsts, seconds, status, resampled, after_strokes

    clients, firsts, seconds, status, resampled, after_strokes = run(go())
    assert clients[2].composition.sampling.steps == 3 and clients[2].seq == 2
    assert clients[2].status.get("steps") == 3 and not clients[2].status.get("messages")
    assert np.abs(resampled.astype(int) - in_process(toy, clients[2].composition).astype(int)).max() <= 1
    two_steps = apply(clients[2].composition, SetSampling(SamplingSpec()))
    assert np.abs(resampled.astype(int) - in_process(toy, two_steps).astype(int)).max() > 8  # it changed
    for composition, e, first, second, (after, seq) in zip(scenes, strokes, firsts, seconds, after_strokes, strict=True):
        assert np.abs(first.astype(int) - in_process(toy, composition).astype(int)).max() <= 1
        assert after == apply(composition, e) and seq == 1
        assert np.abs(second.astype(int) - in_process(toy, after).astype(int)).max() <= 1
    assert status.get("rows") == {"sky": 0, "sun": 1} and status.get("refused") == []


def test_a_full_server_refuses_the_next_painter_with_the_reason(server):
    """Two replicas of 24 rows each and painters of 12 rows: four painters fill both (a painter that lands
    on a full replica is refused with 4002 and retries by itself); the fifth is refused, with the reason."""
    wide = StreamConfig(layers=6, seed_step=0)  # 6 layers x 2 steps = 12 rows

    async def go():
        clients = [PainterClient(f"ws://{server}/ws", TOKEN, scene(k), wide, backoff_s=0.1) for k in range(4)]
        tasks = [asyncio.create_task(c.run()) for c in clients]
        for c in clients:
            await c.wait_connected(120)
        async with websockets.connect(f"ws://{server}/ws") as ws:
            await ws.send(Hello(TOKEN, scene(7), wide).to_json())
            said = ""
            with contextlib.suppress(websockets.exceptions.ConnectionClosed):
                async for data in ws:
                    if isinstance(data, str) and parse(data)["type"] == "error":
                        said = parse(data)["message"]
            code = ws.close_code
        for c in clients:
            await c.close()
        await asyncio.gather(*tasks)
        return code, said, {c.replica for c in clients}

    code, said, replicas = run(go())
    assert code == Close.FULL and "full" in said and "rows" in said, said
    assert len(replicas) == 2  # both replicas took painters


def test_malformed_oversized_and_flooding_clients_are_refused_and_others_keep_painting(server, toy):
    async def go():
        calm = PainterClient(f"ws://{server}/ws", TOKEN, scene(3), CONFIG)
        calm_task = asyncio.create_task(calm.run())
        await calm.wait_connected()
        await settled(calm)
        closes, answers, texts = [], [], []
        big = json.dumps({"type": "edit", "seq": 0, "note": "x" * (65 << 10)})  # control JSON over 64 KB
        for payloads in (["not json"] * 3 + [big, '{"type": "edit", "seq": 1, "edit": {"edit": "set_seed", "seed": 4}}'],
                         ["not json"] * 12, ["x" * (17 << 20)]):  # fmt: skip
            # after a welcome: a few messages not of the protocol (answered; the connection stays usable), a
            # stream of them (closed), one too large (closed by uvicorn)
            async with websockets.connect(f"ws://{server}/ws", max_size=None) as ws:
                await ws.send(Hello(TOKEN, scene(5), CONFIG).to_json())
                await ws.recv()  # welcome
                said = []
                with contextlib.suppress(websockets.exceptions.ConnectionClosed):
                    for payload in payloads:
                        await ws.send(payload)
                    async for data in ws:
                        if isinstance(data, str):
                            said.append(parse(data)["type"])
                            texts.append(parse(data).get("message", ""))
                            if "ack" in said:
                                break
                closes.append(ws.close_code if "ack" not in said else None)
                answers.append(said)
        flood = PainterClient(f"ws://{server}/ws", TOKEN, scene(6), CONFIG)
        flood_task = asyncio.create_task(flood.run())
        await flood.wait_connected()
        for k in range(600):  # an edit flood: far beyond the budget (20 a second, bursts of 40)
            await flood.edit(SetSeed(k))
        await edit(calm, Stroke("sun", ((10.0, 10.0),), 5.0))  # meanwhile the calm painter paints on
        calm_frame = await settled(calm, 120)
        for _ in range(1200):  # each edit ordered or refused: at most a minute on a slow host
            if not flood.pending:
                break
            await asyncio.sleep(0.05)
        for c in (calm, flood):
            await c.close()
        await asyncio.gather(calm_task, flood_task)
        return closes, answers, texts, flood, calm, calm_frame

    closes, answers, texts, flood, calm, calm_frame = run(go(), 300)
    assert closes == [None, Close.BAD_MESSAGE, 1009]  # uvicorn's own limit (16 MiB) closes with "message too big"
    assert answers[0][:4] == ["error"] * 4 and "ack" in answers[0]  # answered, then the edit was taken
    assert "64 KB" in texts[3], texts
    refused = [m for m in flood.errors if "too many edits" in m]
    assert refused and flood.seq + len(refused) == 600 and not flood.pending  # each edit: ordered or refused
    assert np.abs(calm_frame.astype(int) - in_process(toy, calm.composition).astype(int)).max() <= 1


def test_two_clients_share_a_canvas_and_converge(server, toy):
    async def go():
        a = PainterClient(f"ws://{server}/ws", TOKEN, scene(7), CONFIG)
        ta = asyncio.create_task(a.run())
        await a.wait_connected()
        b = PainterClient(f"ws://{server}/ws", TOKEN, Composition(SIDE, SIDE), CONFIG, session=a.session,
                          session_token=a.session_token)  # fmt: skip
        tb = asyncio.create_task(b.run())
        await b.wait_connected()
        assert b.composition == a.composition  # the joiner takes the session's composition
        await asyncio.gather(edit(a, Stroke("sky", ((0.0, 100.0), (127.0, 100.0)), 5.0)),
                             edit(b, Stroke("sun", ((100.0, 20.0),), 12.0)), edit(b, SetSeed(11)))  # fmt: skip
        for _ in range(100):  # each has heard of the other's edits
            if a.seq == b.seq == 3:
                break
            await asyncio.sleep(0.05)
        fa, fb = await settled(a), await settled(b)
        await a.close()
        await b.close()
        await asyncio.gather(ta, tb)
        return a, b, fa, fb

    a, b, fa, fb = run(go())
    assert a.composition == b.composition and a.seq == b.seq == 3 and a.composition.seed == 11
    assert np.abs(fa.astype(int) - fb.astype(int)).max() <= 1
    assert np.abs(fa.astype(int) - in_process(toy, a.composition).astype(int)).max() <= 1


def test_the_serve_bench_measures_a_running_server(server, tmp_path):
    """`semdraw-bench serve --url`: painters over the real server, then the in-process host, in one JSON."""
    from semdraw.tools.bench import main

    out = tmp_path / "serve.json"
    assert main(["serve", "--url", f"http://{server}", "--token", TOKEN, "--painters", "1", "--seconds", "3",
                 "--ticks", "3", "--json", str(out)]) == 0  # fmt: skip
    figures = json.loads(out.read_text())
    (row,) = figures["runs"]
    assert figures["frame_format"] == "jpeg"  # what the browser page asks for
    assert row["painters"] == 1 and row["fps_median"] > 0 and row["latency_p95_ms"] > 0
    assert row["served_rows_per_s"] > 0 and row["in_process_same_strokes_rows_per_s"] > 0
    assert row["in_process_flat_out_rows_per_s"] > 0 and row["rows_ratio"] > 0
    assert (row["edits_refused"], row["attempts_refused"], row["reconnects"]) == (0, 0, 0)


def test_bad_handshakes_and_a_full_host_are_refused_with_a_reason(server):
    def attempt(hello_text: str, **headers):
        return refusal(f"ws://{server}/ws", hello_text, **headers)

    hello = json.loads(Hello(TOKEN, scene(), CONFIG).to_json())
    cases = [({**hello, "token": "nope"}, Close.UNAUTHORIZED, "token"),
             ({**hello, "protocol": 99}, Close.BAD_HELLO, "protocol 1"),
             ({**hello, "composition": Composition(64, 64).to_dict()}, Close.BAD_HELLO, "128x128"),
             ({**hello, "session": "made-up", "session_token": "short"}, Close.UNAUTHORIZED, "unknown session"),
             ({**hello, "stream": {"layers": 16}}, Close.FULL, "full")]  # 32 rows > the host's 24  # fmt: skip
    for doc, code, says in cases:
        got, said = run(attempt(json.dumps(doc)), 60)
        assert got == code and says in said, (doc.get("stream"), got, said)
    got, said = run(attempt("not json"), 60)
    assert got == Close.BAD_HELLO and "JSON" in said
    got, said = run(attempt(json.dumps(hello), origin="http://evil.example"), 60)  # a page on another site
    assert got == Close.UNAUTHORIZED and "another site" in said

    async def refused_client():
        client = PainterClient(f"ws://{server}/ws", "wrong", scene(), CONFIG)
        await client.run()  # returns: a wrong token is not retried
        return client

    assert "4001" in run(refused_client(), 60).refused
    health = json.loads(urllib.request.urlopen(f"http://{server}/healthz", timeout=30).read())
    assert health["canvas"] == [SIDE, SIDE] and health["replicas"] >= 1 and "rows_per_second" in health


def test_a_killed_replica_loses_no_painting(server, toy):
    """Kill the painter's replica process mid-stroke: the client reconnects by itself (to another replica or
    the restarted one), re-sends its composition and its unacknowledged edits, and the frames resume as
    the in-process stream of that composition makes them."""

    async def go():
        client = PainterClient(f"ws://{server}/ws", TOKEN, scene(5), CONFIG, backoff_s=0.1)
        task = asyncio.create_task(client.run())
        await client.wait_connected()
        await settled(client)
        await asyncio.sleep(1.5)  # every replica has reported (pid included) to the session store
        health = json.loads(urllib.request.urlopen(f"http://{server}/healthz", timeout=30).read())
        before = client.connections
        await edit(client, Stroke("sun", ((30.0, 30.0), (50.0, 40.0)), 6.0))
        os.kill(health["by_replica"][client.replica]["pid"], signal.SIGKILL)
        await edit(client, Stroke("sun", ((50.0, 40.0), (70.0, 50.0)), 6.0))  # mid-stroke, the replica gone
        frame = await reconnected(client, before, 90)
        await client.close()
        await task
        return client, frame

    client, frame = run(go(), 300)
    stroke = apply(apply(scene(5), Stroke("sun", ((30.0, 30.0), (50.0, 40.0)), 6.0)),
                   Stroke("sun", ((50.0, 40.0), (70.0, 50.0)), 6.0))  # fmt: skip
    assert client.composition == stroke
    assert np.abs(frame.astype(int) - in_process(toy, stroke).astype(int)).max() <= 1



def test_a_graceful_shutdown_tells_painters_to_reconnect_and_they_resume(server, toy):
    """Redeploy the application (every replica is stopped gracefully and replaced): the painter reconnects
    by itself and its frames resume as they were. Last of the served tests: it redeploys the shared server."""
    from ray import serve

    from semdraw.serve.app import APP_NAME, ServeOptions, build_app

    async def go():
        client = PainterClient(f"ws://{server}/ws", TOKEN, scene(6), CONFIG, backoff_s=0.1)
        task = asyncio.create_task(client.run())
        await client.wait_connected()
        before = await settled(client)
        options = ServeOptions(token=TOKEN, replicas=1, painters_per_replica=2, capacity_rows=24, num_cpus=0.5,
                               edits_per_second=20, painters_per_address=2)  # the next tests' limits
        await asyncio.to_thread(serve.run, build_app(options), name=APP_NAME, route_prefix="/")
        after = await reconnected(client, 1, 90)  # (a replica still draining may take it first)
        await client.close()
        await task
        return client, before, after

    client, before, after = run(go(), 300)
    assert np.array_equal(before, after)  # same composition, same seed: the same picture


def test_one_address_holds_only_so_many_painters(server):
    """The redeployed server (previous test: one replica, two painters per address) refuses a third
    painter from this machine with 4005 and the reason; once one closes, a new one is taken."""

    async def go():
        clients = [PainterClient(f"ws://{server}/ws", TOKEN, scene(k), CONFIG) for k in range(2)]
        tasks = [asyncio.create_task(c.run()) for c in clients]
        for c in clients:
            await c.wait_connected(120)
        third = PainterClient(f"ws://{server}/ws", TOKEN, scene(3), CONFIG)
        await asyncio.wait_for(third.run(), 60)  # refused for good: run() returns
        await clients[0].close()
        await tasks[0]
        fourth = PainterClient(f"ws://{server}/ws", TOKEN, scene(4), CONFIG)
        fourth_task = asyncio.create_task(fourth.run())
        await fourth.wait_connected(120)
        for c in (clients[1], fourth):
            await c.close()
        await asyncio.gather(tasks[1], fourth_task)
        return third

    third = run(go())
    assert third.connections == 0 and any("at most 2" in e for e in third.errors), third.errors


def test_a_replica_full_of_painters_refuses_the_next_with_the_reason(server):
    """The redeployed server (one replica that paints for two clients): two painters fill it, and a third,
    from another address (so that the per-address limit is not what refuses it), is told why with 4002
    (Serve would send it one socket more; beyond that Serve itself refuses the handshake, without a reason)."""

    async def go():
        clients = [PainterClient(f"ws://{server}/ws", TOKEN, scene(k), CONFIG) for k in range(2)]
        tasks = [asyncio.create_task(c.run()) for c in clients]
        for c in clients:
            await c.wait_connected(120)
        said = ""
        async with websockets.connect(f"ws://{server}/ws", local_addr=("127.0.0.2", 0)) as ws:
            await ws.send(Hello(TOKEN, scene(7), CONFIG).to_json())
            with contextlib.suppress(websockets.exceptions.ConnectionClosed):
                async for data in ws:
                    if isinstance(data, str) and parse(data)["type"] in ("error", "welcome"):
                        said = parse(data).get("message", "welcome")
                        if said == "welcome":
                            break  # taken: the replica did not refuse it
            code = ws.close_code
        painting = [c.connections for c in clients]
        for c in clients:
            await c.close()
        await asyncio.gather(*tasks)
        return code, said, painting

    code, said, painting = run(go())
    assert code == Close.FULL and "full" in said and "2 clients" in said, (code, said)
    assert painting == [1, 1]  # the two painters kept their sockets


def test_the_example_config_is_a_valid_serve_config_that_builds_the_app():
    """serve/config.example.yaml is what `serve deploy` reads: Ray's own schema accepts it, and its args
    build the application (on the toy here; sd15 needs its weights)."""
    from pathlib import Path

    import yaml
    from ray.serve.schema import ServeDeploySchema

    from semdraw.serve.app import ServeOptions, app_builder

    doc = yaml.safe_load((Path(__file__).parents[1] / "serve" / "config.example.yaml").read_text())
    ServeDeploySchema.model_validate(doc)
    (spec,) = doc["applications"]
    module, name = spec["import_path"].split(":")
    assert (module, name) == ("semdraw.serve.app", "app_builder")
    options = ServeOptions(**spec["args"])
    assert options.deployment_options()["ray_actor_options"]["num_gpus"] == 1
    assert options.deployment_options()["autoscaling_config"]["max_replicas"] == 8
    assert app_builder({**spec["args"], "model": "toy", "num_gpus": 0}) is not None


class CommandOutput:
    """Everything a command prints, read as it comes by a thread of its own (a command that writes to a
    pipe no one reads would block once the pipe is full: Ray forwards its workers' logs to the driver)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in iter(stream.readline, ""):
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def finished(self, timeout: float = 10.0) -> str:
        """All of it, once the command has closed its output."""
        self._thread.join(timeout)
        return self.text


def serve_command(port: int, env: dict[str, str], *args: str) -> tuple[subprocess.Popen, CommandOutput]:
    """`semdraw-serve --port PORT ARGS` started (its token TOKEN), once it prints the URL to open; returns
    the process and its output (still being read)."""
    import sys
    from pathlib import Path

    command = str(Path(sys.executable).parent / "semdraw-serve")
    # Started with Ctrl-C's default meaning: a test run started in the background of a script inherits
    # SIGINT ignored (POSIX), and a Python started so never raises KeyboardInterrupt.
    with_ctrl_c = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"
    proc = subprocess.Popen([sys.executable, "-c", with_ctrl_c, command, "--port", str(port), *args],
                            env={**os.environ, "SEMDRAW_TOKEN": TOKEN, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    output = CommandOutput(proc)
    deadline = time.monotonic() + 180
    while "open http://" not in output.text:
        if proc.poll() is not None:
            raise AssertionError("semdraw-serve ended before it served:\n" + output.finished())
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("semdraw-serve did not serve within 180 s:\n" + output.finished())
        time.sleep(0.2)
    return proc, output


def stopped_by_ctrl_c(proc: subprocess.Popen, output: CommandOutput) -> int:
    """Ctrl-C, then the command's exit code (a command that has not stopped within 90 s fails the test with
    everything it printed)."""
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("semdraw-serve did not stop within 90 s of Ctrl-C:\n" + output.finished()) from None


def test_the_command_serves_and_stops_cleanly_on_ctrl_c(tmp_path, ray_token):
    port = free_port()
    proc, output = serve_command(port, {"HOME": str(tmp_path)})
    try:
        assert f"http://127.0.0.1:{port}/?token={TOKEN}" in output.text, output.text
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30).read().decode()
        assert "semdraw" in page
        # with no arguments, on a CPU: the toy from its onnxruntime set, built before Ray started
        (built,) = (tmp_path / ".cache" / "semdraw" / "engines").iterdir()
        assert (built / "manifest.json").is_file() and built.name.startswith("toy-")
        assert stopped_by_ctrl_c(proc, output) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    log = output.finished()
    assert "Traceback" not in log, log
    with pytest.raises(OSError):  # nothing is left listening
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)


@pytest.mark.slow  # ~45 s: its own Ray instance and an engine-set build (run: pytest -m slow tests/test_serve.py)
def test_the_command_serves_a_models_engine_set_built_once(tmp_path, ray_token):
    """`semdraw-serve --backend onnxruntime` with a model: the command builds the model's engine set (in
    $SEMDRAW_CACHE) before Ray starts and serves it; a painter's frame is an in-process stream's of that set."""
    port, cache = free_port(), tmp_path / "cache"
    proc, output = serve_command(port, {"HOME": str(tmp_path), "SEMDRAW_CACHE": str(cache)}, "--backend", "onnxruntime")
    try:
        (built,) = (cache / "engines").iterdir()  # the toy's set, built by the command
        assert (built / "manifest.json").is_file()

        async def go():
            client = PainterClient(f"ws://127.0.0.1:{port}/ws", TOKEN, scene(3), CONFIG)
            task = asyncio.create_task(client.run())
            await client.wait_connected()
            frame = await settled(client, 120)
            await client.close()
            await task
            return frame

        frame = run(go())
        assert stopped_by_ctrl_c(proc, output) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    stream = semdraw.Stream(built, backend="onnxruntime", **CONFIG.stream_options(scene(3)))
    semdraw.StreamSync(stream).apply(scene(3))
    stream.flush()
    assert np.abs(frame.astype(int) - stream().astype(int)).max() <= 1
    assert "Traceback" not in output.finished()
