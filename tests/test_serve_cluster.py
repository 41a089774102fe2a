"""semdraw-serve when a machine is lost: a Ray cluster simulated on this machine (`ray.cluster_utils.Cluster`,
a head and two worker nodes, one replica on each); the node under a painter's replica is removed and the
painter reconnects by itself to the other and sees the same picture."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="semdraw-serve needs ray[serve]: pip install -e '.[serve]'")

from semdraw.serve.client import PainterClient  # noqa: E402

from .conftest import free_port, temporary_home  # noqa: E402
from .test_serve import CONFIG, TOKEN, reconnected, run, scene, settled  # noqa: E402


@pytest.mark.slow  # ~40 s: a three-node cluster on one machine (run: pytest -m slow tests/test_serve_cluster.py)
def test_a_lost_node_loses_no_painting(tmp_path, ray_token):
    from ray import serve
    from ray.cluster_utils import Cluster

    from semdraw.serve.app import APP_NAME, ServeOptions, build_app

    with temporary_home(tmp_path):
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
        try:
            workers = [cluster.add_node(num_cpus=1, resources={"painter": 1}) for _ in range(2)]
            ray.init(address=cluster.address, namespace="semdraw", logging_level="ERROR", log_to_driver=False)
            port = free_port()
            serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
            options = ServeOptions(token=TOKEN, replicas=2, num_cpus=0.5, resources={"painter": 1})
            serve.run(build_app(options), name=APP_NAME, route_prefix="/")

            async def go():
                client = PainterClient(f"ws://127.0.0.1:{port}/ws", TOKEN, scene(8), CONFIG, backoff_s=0.1)
                task = asyncio.create_task(client.run())
                await client.wait_connected()
                before = await settled(client, 120)
                await asyncio.sleep(1.5)  # every replica has reported its node
                health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=30).read())
                node = health["by_replica"][client.replica]["node"]
                (lost,) = [w for w in workers if w.node_id == node]
                connections = client.connections
                await asyncio.to_thread(cluster.remove_node, lost)
                after = await reconnected(client, connections)
                await client.close()
                await task
                return before, after, node

            before, after, node = run(go(), 400)
            assert np.array_equal(before, after)  # the other node's replica paints the same picture
        finally:
            serve.shutdown()
            ray.shutdown()
            cluster.shutdown()


@pytest.mark.slow  # ~1-2 min: Serve's autoscaler waits 30 s before it adds a replica
def test_open_painters_scale_the_replicas_up(tmp_path, ray_token):
    """`--max-replicas`: one replica of two painters' room and a target of one open painter each; two
    painters open, Serve adds the second replica by itself, and a third painter lands on it."""
    from ray import serve

    from semdraw.serve.app import APP_NAME, ServeOptions, build_app

    with temporary_home(tmp_path):
        try:
            ray.init(namespace="semdraw", include_dashboard=False, num_cpus=4, logging_level="ERROR", log_to_driver=False)
            port = free_port()
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            options = ServeOptions(token=TOKEN, replicas=1, max_replicas=2, painters_per_replica=2, num_cpus=0.5)
            serve.run(build_app(options), name=APP_NAME, route_prefix="/")

            def replicas() -> int:
                return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=30).read())["replicas"]

            async def go():
                assert await asyncio.to_thread(replicas) == 1
                clients = [PainterClient(f"ws://127.0.0.1:{port}/ws", TOKEN, scene(k), CONFIG, backoff_s=0.2) for k in range(2)]
                tasks = [asyncio.create_task(c.run()) for c in clients]
                for c in clients:
                    await c.wait_connected()
                deadline, seen = time.monotonic() + 150, 1
                while seen < 2 and time.monotonic() < deadline:
                    await asyncio.sleep(2)
                    seen = await asyncio.to_thread(replicas)
                third = PainterClient(f"ws://127.0.0.1:{port}/ws", TOKEN, scene(5), CONFIG, backoff_s=0.2)
                tasks.append(asyncio.create_task(third.run()))
                await third.wait_connected()
                frame = await settled(third, 120)
                first_replica = {c.replica for c in clients}
                for c in [*clients, third]:
                    await c.close()
                await asyncio.gather(*tasks)
                return seen, first_replica, third.replica, frame

            seen, first_replica, third_replica, frame = run(go(), 400)
            assert seen == 2
            assert len(first_replica) == 1 and third_replica not in first_replica  # the full first replica's painters
            assert frame.shape == (128, 128, 3)
        finally:
            serve.shutdown()
            ray.shutdown()
