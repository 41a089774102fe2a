"""semdraw-serve when a machine is lost: a Ray cluster simulated on this machine (`ray.cluster_utils.Cluster`,
a head and two worker nodes, one replica on each); the node under a painter's replica is removed and the
painter reconnects by itself to the other and sees the same picture."""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="semdraw-serve needs ray[serve]: pip install -e '.[serve]'")

from semdraw.serve.client import PainterClient  # noqa: E402

from .test_serve import CONFIG, TOKEN, _free_port, run, scene, settled  # noqa: E402


@pytest.mark.slow  # ~40 s: a three-node cluster on one machine (run: pytest -m slow tests/test_serve_cluster.py)
def test_a_lost_node_loses_no_painting(tmp_path, ray_token):
    from ray import serve
    from ray.cluster_utils import Cluster

    from semdraw.serve.app import APP_NAME, ServeOptions, build_app

    saved = os.environ.get("HOME")
    os.environ["HOME"] = str(tmp_path)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    try:
        workers = [cluster.add_node(num_cpus=1, resources={"painter": 1}) for _ in range(2)]
        ray.init(address=cluster.address, namespace="semdraw", logging_level="ERROR", log_to_driver=False)
        port = _free_port()
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
            deadline = time.monotonic() + 120
            while client.connections == connections and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert client.connections > connections, client.errors
            after = await settled(client, 120, since_welcome=True)
            await client.close()
            await task
            return before, after, node

        before, after, node = run(go(), 400)
        assert np.array_equal(before, after)  # the other node's replica paints the same picture
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()
        if saved is None:
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = saved
