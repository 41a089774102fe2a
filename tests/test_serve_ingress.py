"""semdraw-serve with ``--ingress haproxy`` on a real local Ray Serve instance (Ray Serve's direct ingress
behind the HAProxy that ray[serve] installs): painters reach their replica through HAProxy and get the
frames of in-process streams, the handshake's checks and a full replica's refusal still say why, and a
killed replica's painter reconnects through HAProxy to the replica Serve starts in its place."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="semdraw-serve needs ray[serve]: pip install -e '.[serve]'")
websockets = pytest.importorskip("websockets")

from semdraw.edits import Stroke, apply  # noqa: E402
from semdraw.serve.client import PainterClient  # noqa: E402
from semdraw.serve.protocol import Close, Hello  # noqa: E402

from .conftest import SERVE_TOKEN as TOKEN  # noqa: E402
from .conftest import free_port, temporary_home  # noqa: E402
from .test_serve import CONFIG, in_process, reconnected, refusal, run, scene, settled  # noqa: E402


def haproxy_serving(port: int) -> bool:
    """Whether an HAProxy process of this machine listens on ``port`` (its config file says so): the
    painters' sockets go through it, not through Serve's proxy."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if argv and argv[0].endswith(b"haproxy") and b"-f" in argv:
                config = Path(argv[argv.index(b"-f") + 1].decode()).read_text()
                if f":{port}" in config:
                    return True
    return False


@pytest.mark.skipif(not os.path.exists("/proc/self/cmdline"), reason="finds HAProxy through Linux's /proc")
def test_painters_through_haproxy_paint_are_refused_with_reasons_and_survive_a_killed_replica(tmp_path, ray_token, toy):
    from ray import serve

    from semdraw.serve.app import APP_NAME, ServeOptions, build_app, ingress_environment

    port = free_port()
    base, ws_url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws"
    stroke = Stroke("sun", ((30.0, 30.0), (60.0, 45.0)), 6.0)
    with temporary_home(tmp_path), ingress_environment("haproxy"):
        try:
            ray.init(namespace="semdraw", include_dashboard=False, num_cpus=4, logging_level="ERROR",
                     log_to_driver=False)  # fmt: skip
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            options = ServeOptions(token=TOKEN, replicas=1, painters_per_replica=2, num_cpus=0.5)
            serve.run(build_app(options), name=APP_NAME, route_prefix="/")
            assert haproxy_serving(port)
            page = urllib.request.urlopen(f"{base}/?token={TOKEN}", timeout=30).read().decode()
            assert "<title>semdraw</title>" in page  # the page, through HAProxy

            def health() -> dict:
                return json.loads(urllib.request.urlopen(f"{base}/healthz", timeout=30).read())

            async def go():
                a = PainterClient(ws_url, TOKEN, scene(3), CONFIG, backoff_s=0.2)
                b = PainterClient(ws_url, TOKEN, scene(5), CONFIG, backoff_s=0.2)
                tasks = [asyncio.create_task(c.run()) for c in (a, b)]
                for c in (a, b):
                    await c.wait_connected(120)
                first = [await settled(c, 120) for c in (a, b)]
                full = await refusal(ws_url, Hello(TOKEN, scene(7), CONFIG).to_json())  # a third painter
                elsewhere = await refusal(ws_url, Hello(TOKEN, scene(7), CONFIG).to_json(),
                                          origin="http://evil.example")  # fmt: skip
                pid = (await asyncio.to_thread(health))["by_replica"][a.replica]["pid"]
                connections = a.connections
                await a.edit(stroke)
                os.kill(pid, signal.SIGKILL)  # mid-stroke: the replica dies with its painters' streams
                after = await reconnected(a, connections, 180)
                new_pid = (await asyncio.to_thread(health))["by_replica"][a.replica]["pid"]
                for c in (a, b):
                    await c.close()
                await asyncio.gather(*tasks)
                return first, full, elsewhere, after, a.composition, (pid, new_pid)

            first, full, elsewhere, after, composition, (pid, new_pid) = run(go(), 400)
            for frame, seed in zip(first, (3, 5), strict=True):
                assert np.abs(frame.astype(int) - in_process(toy, scene(seed)).astype(int)).max() <= 1
            assert full[0] == Close.FULL and "full" in full[1], full
            assert elsewhere[0] == Close.UNAUTHORIZED and "another site" in elsewhere[1], elsewhere
            assert pid != new_pid and composition == apply(scene(3), stroke)
            assert np.abs(after.astype(int) - in_process(toy, composition).astype(int)).max() <= 1
            began = time.monotonic()
            serve.shutdown()
            assert time.monotonic() - began < 30  # a replica drains 1 s, not Ray's 30 (semdraw-serve's Ctrl-C)
        finally:
            serve.shutdown()
            ray.shutdown()
