"""Serve's health check on a real local Ray Serve instance: a replica whose networks start raising is
restarted by Serve (``Painters.check_health`` raises once ``Replica.healthy()`` reports the failures), and
its painter reconnects to the new replica, which paints the stroke the failing one could not."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
import urllib.request

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="semdraw-serve needs ray[serve]: pip install -e '.[serve]'")

from semdraw.edits import Stroke, apply  # noqa: E402
from semdraw.serve.client import PainterClient  # noqa: E402
from semdraw.serve.deployment import Painters  # noqa: E402

from .conftest import free_port, temporary_home  # noqa: E402
from .test_serve import CONFIG, TOKEN, in_process, reconnected, run, scene, settled  # noqa: E402


class FaultyPainters(Painters.func_or_class):
    """The real deployment, whose networks raise (as a GPU that lost its context does, on every call) from
    the moment ``fault`` exists, in the first replica only: the replica Serve starts in its place runs."""

    async def __init__(self, config: dict, fault: str, first: str) -> None:  # Serve's ingress wants it async
        await super().__init__(config)
        try:
            with open(first, "x") as f:  # the first replica to start claims the fault
                f.write(str(os.getpid()))
        except FileExistsError:
            return
        working = self.replica.host.networks.denoise

        def denoise(*args, **kwargs):
            if os.path.exists(fault):
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            return working(*args, **kwargs)

        self.replica.host.networks = dataclasses.replace(self.replica.host.networks, denoise=denoise)


@pytest.mark.slow  # ~1 min: Ray, a replica restart (run: pytest -m slow tests/test_serve_health.py)
def test_a_replica_whose_networks_keep_failing_is_restarted_and_its_painter_resumes(tmp_path, ray_token, toy):
    from ray import serve

    from semdraw.serve.app import APP_NAME, ServeOptions

    fault, first = tmp_path / "fault", tmp_path / "first-replica-pid"
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the replica imports no tests package
    with temporary_home(tmp_path):
        try:
            ray.init(namespace="semdraw", include_dashboard=False, num_cpus=4, logging_level="ERROR",
                     log_to_driver=False)  # fmt: skip
            port = free_port()
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            options = ServeOptions(token=TOKEN, replicas=1, painters_per_replica=2, num_cpus=0.5)
            deployment = serve.deployment(FaultyPainters, name="painters").options(**options.deployment_options())
            serve.run(deployment.bind(dataclasses.asdict(options), str(fault), str(first)), name=APP_NAME,
                      route_prefix="/")  # fmt: skip

            def health() -> dict:
                return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=30).read())

            async def go():
                client = PainterClient(f"ws://127.0.0.1:{port}/ws", TOKEN, scene(9), CONFIG, backoff_s=0.2)
                task = asyncio.create_task(client.run())
                await client.wait_connected()
                await settled(client, 120)  # painting before the fault
                pid_before = (await asyncio.to_thread(health))["by_replica"][client.replica]["pid"]
                connections = client.connections
                fault.touch()  # the networks fail from now on: the next stroke's frames cannot be made
                await client.edit(Stroke("sun", ((30.0, 30.0), (60.0, 45.0)), 6.0))
                after = await reconnected(client, connections)
                pid_after = (await asyncio.to_thread(health))["by_replica"][client.replica]["pid"]
                await client.close()
                await task
                return client.composition, after, pid_before, pid_after

            composition, after, pid_before, pid_after = run(go(), 400)
            assert int(first.read_text()) == pid_before != pid_after  # Serve replaced the failing replica
            assert composition == apply(scene(9), Stroke("sun", ((30.0, 30.0), (60.0, 45.0)), 6.0))
            # the new replica paints the stroke the failing one could not: as an in-process stream does
            assert np.abs(after.astype(int) - in_process(toy, composition).astype(int)).max() <= 1
        finally:
            serve.shutdown()
            ray.shutdown()
